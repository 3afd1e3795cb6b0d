//! Streams both ways with the Go peer, on loopback, no registry:
//! - go-micro v2's client shape (grpc-go with go-micro's json codec, every
//!   stream bidirectional, a server-streaming request never half-closed)
//!   against the example `greeter-server`;
//! - `micro stream --address` against the Go greeter (grpc-go, go-micro's
//!   json codec, no reflection);
//! - a tonic-generated client through the toolkit's client against the Go
//!   greeter, its stream known from go-micro's registration alone.

use std::sync::Arc;
use std::time::Duration;

use interop_tests::{GoGreeter, Process, go_peer, go_stream, micro_with_stdin};
use micro_client::{Client, ClientOptions};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{RegisterOptions, SharedRegistry};
use micro_testing::greeter::greeter_client::GreeterClient;
use micro_testing::greeter::{Request, Response};

const STREAM: &str = "/go.micro.srv.greeter.Greeter/Stream";
const PING_PONG: &str = "/go.micro.srv.greeter.Greeter/PingPong";

#[test]
fn go_micro_client_streams_from_the_rust_greeter() {
    let peer = go_peer();
    let server = Process::start(
        "greeter-server",
        "greeter-server",
        &["--registry=memory", "--server_address=127.0.0.1:0"],
        &[],
    );
    let listening = "Server [grpc] Listening on ";
    server.wait_for_log(listening, Duration::from_secs(30));
    let log = server.log();
    let address = log
        .lines()
        .find_map(|line| Some(line.split_once(listening)?.1.trim().to_string()))
        .expect("address");

    // Server-streaming, the request never half-closed (as go-micro's client).
    let stream = go_stream(
        peer,
        &address,
        STREAM,
        r#"{"name":"x","count":3}"#,
        &[],
        false,
    );
    assert!(stream.ok, "{stream:?}");
    assert_eq!(
        stream.stdout,
        "{\"msg\":\"Hello x 1\"}\n{\"msg\":\"Hello x 2\"}\n{\"msg\":\"Hello x 3\"}\nEND OK\n"
    );
    // go-micro's path form reaches it too.
    let other = go_stream(
        peer,
        &address,
        "/go.micro.api.greeter.Greeter/Stream",
        r#"{"name":"y","count":1}"#,
        &[],
        false,
    );
    assert_eq!(
        other.stdout, "{\"msg\":\"Hello y 1\"}\nEND OK\n",
        "{other:?}"
    );

    // Bidi until the half-close.
    let ping = go_stream(
        peer,
        &address,
        PING_PONG,
        r#"{"name":"a"}"#,
        &[r#"{"name":"b"}"#],
        true,
    );
    assert!(ping.ok, "{ping:?}");
    assert_eq!(
        ping.stdout,
        "{\"msg\":\"pong a\"}\n{\"msg\":\"pong b\"}\nEND OK\n"
    );

    // The service's error status reaches the Go client.
    let bad = go_stream(
        peer,
        &address,
        STREAM,
        r#"{"name":"x","count":-1}"#,
        &[],
        false,
    );
    assert!(!bad.ok, "{bad:?}");
    assert!(
        bad.stdout
            .starts_with("ERROR InvalidArgument count must be between 0 and"),
        "{bad:?}"
    );
}

#[test]
fn micro_stream_reaches_the_go_greeter() {
    let peer = go_peer();
    let greeter = GoGreeter::start(peer);
    let address = greeter.address.clone();
    let base = [
        "stream",
        "--address",
        address.as_str(),
        "go.micro.srv.greeter",
    ];

    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["Greeter.Stream", r#"{"name":"go","count":3}"#])
        .collect();
    let (code, out, err) = micro_with_stdin(&args, "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "{\"msg\":\"Hello go 1\"}\n{\"msg\":\"Hello go 2\"}\n{\"msg\":\"Hello go 3\"}\n"
    );

    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["Greeter.PingPong", r#"{"name":"a"}"#])
        .collect();
    let (code, out, err) = micro_with_stdin(&args, "{\"name\":\"b\"}\n{\"name\":\"c\"}\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "{\"msg\":\"pong a\"}\n{\"msg\":\"pong b\"}\n{\"msg\":\"pong c\"}\n"
    );

    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["Greeter.Stream", r#"{"name":"go","count":-1}"#])
        .collect();
    let (code, out, err) = micro_with_stdin(&args, "");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains(
            "error streaming go.micro.srv.greeter Greeter.Stream: count must be between 0 and 10000"
        ),
        "{err}"
    );
    drop(greeter);
}

/// A tonic-generated client calling the Go greeter's `PingPong` through the
/// toolkit's client, the request not marked as a stream: the registry
/// record (go-micro's, `"stream": "true"` on the streaming methods) makes it
/// one, so no `grpc-timeout` goes out. grpc-go applies a `grpc-timeout` to
/// the whole stream: were the attempt timeout sent, the Go server would end
/// this stream with `DeadlineExceeded` once it passed.
#[test]
fn a_generated_clients_stream_to_the_go_greeter_outlives_the_attempt_timeout() {
    let peer = go_peer();
    let go = GoGreeter::start(peer);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
        registry
            .register(
                &go.streaming_registration("memory"),
                RegisterOptions::default(),
            )
            .await
            .expect("register the Go greeter");
        let attempt_timeout = Duration::from_millis(300);
        let client = Client::new(
            registry,
            ClientOptions {
                attempt_timeout,
                request_timeout: attempt_timeout * 2,
                ..ClientOptions::default()
            },
        );
        let mut greeter = GreeterClient::new(client.service("go.micro.srv.greeter"));
        let (tx, rx) = tokio::sync::mpsc::channel::<Request>(4);
        let requests =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let ping = |name: &str| Request {
            name: name.into(),
            count: 0,
        };
        tx.send(ping("a")).await.expect("send");
        let mut replies = greeter
            .ping_pong(requests)
            .await
            .expect("open")
            .into_inner();
        assert_eq!(next(&mut replies).await, Ok(Some("pong a".into())));
        // Real time: the Go server's clock is the one that would end it.
        tokio::time::sleep(attempt_timeout * 4).await;
        // A stream the server ended refuses the message; its status says why.
        let _ = tx.send(ping("late")).await;
        assert_eq!(next(&mut replies).await, Ok(Some("pong late".into())));
        drop(tx);
        assert_eq!(next(&mut replies).await, Ok(None));
    });
    drop(go);
}

/// The next reply's text, within a bound; the status's code and message on
/// an error.
async fn next(
    replies: &mut tonic::Streaming<Response>,
) -> Result<Option<String>, (tonic::Code, String)> {
    tokio::time::timeout(Duration::from_secs(20), replies.message())
        .await
        .expect("a reply in time")
        .map(|reply| reply.map(|r| r.msg))
        .map_err(|status| (status.code(), status.message().to_string()))
}
