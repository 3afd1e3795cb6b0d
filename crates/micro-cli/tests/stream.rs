//! `micro stream` against a toolkit greeter: in-process through
//! [`stream_with`] (registry, `--address`, metadata, stdin lines, errors),
//! and the `micro` binary itself with its stdin and exit codes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use micro::{Client, ClientOptions};
use micro_cli::{CliError, StreamArgs, stream_with};
use micro_registry::memory::MemoryRegistry;
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";
const MICRO: &str = env!("CARGO_BIN_EXE_micro");

/// Stdin lines for [`stream_with`].
fn lines(lines: &[&str]) -> futures::stream::Iter<std::vec::IntoIter<Result<String, String>>> {
    let lines: Vec<_> = lines.iter().map(|l| Ok(l.to_string())).collect();
    futures::stream::iter(lines)
}

async fn stream(
    client: &Client,
    args: &StreamArgs,
    input: &[&str],
) -> (String, Result<(), CliError>) {
    let mut out = Vec::new();
    let result = stream_with(client, args, lines(input), &mut out).await;
    (String::from_utf8(out).expect("utf-8"), result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_print_one_line_per_message_and_end_with_the_status() {
    let registry = Arc::new(MemoryRegistry::new());
    let greeter = TestGreeter::new("rust");
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        greeter.clone(),
        loopback_options(),
    );
    let client = Client::new(registry.clone(), ClientOptions::default());

    // Server-streaming through the registry, with metadata.
    let mut args = StreamArgs::new(SERVICE, "Greeter.Stream", r#"{"name": "John", "count": 3}"#);
    args.metadata = vec!["Authorization=Bearer t0ken".into()];
    let (out, end) = stream(&client, &args, &[]).await;
    end.expect("normal end");
    assert_eq!(
        out,
        "{\"msg\":\"Hello John 1\"}\n{\"msg\":\"Hello John 2\"}\n{\"msg\":\"Hello John 3\"}\n"
    );
    let metadata = greeter.last_metadata().expect("metadata").into_headers();
    assert_eq!(metadata["authorization"], "Bearer t0ken");

    // Bidi, by address: the argument then each stdin line; blank lines skipped.
    let mut args = StreamArgs::new(SERVICE, "Greeter.PingPong", r#"{"name": "a"}"#);
    args.address = Some(server.address.to_string());
    let (out, end) = stream(&client, &args, &[r#"{"name":"b"}"#, "", r#"{"name":"c"}"#]).await;
    end.expect("normal end at end of input");
    assert_eq!(
        out,
        "{\"msg\":\"pong a\"}\n{\"msg\":\"pong b\"}\n{\"msg\":\"pong c\"}\n"
    );

    // The service's error after one message: the message, then the status.
    let args = StreamArgs::new(SERVICE, "Greeter.Stream", r#"{"name": "fail"}"#);
    let (out, end) = stream(&client, &args, &[]).await;
    assert_eq!(out, "{\"msg\":\"Hello fail 1\"}\n");
    let CliError::Failed(message) = end.expect_err("service error") else {
        panic!("not a failure");
    };
    assert!(
        message.contains(
            "error streaming go.micro.srv.greeter Greeter.Stream: rust failed on purpose"
        ),
        "{message}"
    );
    assert!(message.contains("500"), "{message}");

    // A bad stdin line stops the stream as a usage error.
    let args = StreamArgs::new(SERVICE, "Greeter.PingPong", r#"{"name": "a"}"#);
    let (_, end) = stream(&client, &args, &["{not json"]).await;
    let err = end.expect_err("bad line");
    assert!(
        matches!(&err, CliError::Usage(m) if m.contains("stdin line 1 is not JSON")),
        "{err:?}"
    );

    // Bad arguments are usage errors; an unknown service is a failure.
    for args in [
        StreamArgs::new(SERVICE, "Stream", "{}"),
        StreamArgs::new(SERVICE, "Greeter.Stream", "{bad"),
    ] {
        let (_, end) = stream(&client, &args, &[]).await;
        assert!(matches!(end, Err(CliError::Usage(_))), "{args:?}: {end:?}");
    }
    let args = StreamArgs::new("go.micro.srv.nobody", "Greeter.Stream", "{}");
    let (_, end) = stream(&client, &args, &[]).await;
    assert!(
        matches!(&end, Err(CliError::Failed(m)) if m.contains("not found")),
        "{end:?}"
    );
    server.stop();
}

/// The client's attempt timeout bounds the wait for a node's answer, not
/// the stream: a PingPong lasting longer than it runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_attempt_timeout() {
    use futures::StreamExt;
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("rust"),
        loopback_options(),
    );
    let attempt_timeout = std::time::Duration::from_millis(200);
    let client = Client::new(
        registry.clone(),
        ClientOptions {
            attempt_timeout,
            ..ClientOptions::default()
        },
    );
    // The one wait in this test is the point of it: time passing
    // mid-stream, with nothing to signal.
    let late = futures::stream::once(async move {
        tokio::time::sleep(attempt_timeout * 3).await;
        Ok::<_, String>(r#"{"name":"late"}"#.to_string())
    })
    .boxed();
    let args = StreamArgs::new(SERVICE, "Greeter.PingPong", r#"{"name": "early"}"#);
    let mut out = Vec::new();
    stream_with(&client, &args, late, &mut out)
        .await
        .expect("normal end");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "{\"msg\":\"pong early\"}\n{\"msg\":\"pong late\"}\n"
    );
    server.stop();
}

/// The binary: stdout lines, stdin as further messages, exit codes.
#[test]
fn the_binary_streams_reads_stdin_and_exits_with_the_status() {
    let server = TestServer::start(
        Arc::new(MemoryRegistry::new()),
        SERVICE,
        TestGreeter::new("rust"),
        loopback_options(),
    );
    let address = server.address.to_string();
    let run = |endpoint: &str, request: &str, stdin: &str| {
        let mut child = Command::new(MICRO)
            .args(["stream", "--address", &address, SERVICE, endpoint, request])
            .env_remove("MICRO_REGISTRY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run micro");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        // End of input: the sending side ends.
        drop(input);
        let output = child.wait_with_output().expect("micro ends");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, out, err) = run("Greeter.Stream", r#"{"name":"x","count":3}"#, "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            r#"{"msg":"Hello x 1"}"#,
            r#"{"msg":"Hello x 2"}"#,
            r#"{"msg":"Hello x 3"}"#
        ]
    );

    let (code, out, err) = run(
        "Greeter.PingPong",
        r#"{"name":"a"}"#,
        "{\"name\":\"b\"}\n{\"name\":\"c\"}\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            r#"{"msg":"pong a"}"#,
            r#"{"msg":"pong b"}"#,
            r#"{"msg":"pong c"}"#
        ]
    );

    let (code, out, err) = run("Greeter.Stream", r#"{"name":"fail"}"#, "");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "{\"msg\":\"Hello fail 1\"}\n");
    assert!(
        err.starts_with(
            "micro: error streaming go.micro.srv.greeter Greeter.Stream: rust failed on purpose"
        ),
        "{err}"
    );

    let (code, _, err) = run("Greeter.Stream", r#"{"name":"x","count":-1}"#, "");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("count must be between 0 and"), "{err}");
    server.stop();
}
