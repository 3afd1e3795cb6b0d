//! Streams through the balanced client, against real greeter servers:
//! placed on one node and counted in its load while open, another node
//! only when the first cannot be reached, nothing run twice, no attempt
//! timeout, and the optional stream deadline.

use std::sync::Arc;
use std::time::Duration;

use micro_client::{Client, ClientOptions, Streaming};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Service, SharedRegistry};
use micro_testing::greeter::greeter_client::GreeterClient;
use micro_testing::greeter::{Request, Response};
use micro_testing::{TestGreeter, TestServer, loopback_options};
use tokio::sync::mpsc;

const SERVICE: &str = "go.micro.srv.greeter";

/// `message` marked as a stream (what the toolkit's own stream callers do).
fn streaming<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(Streaming);
    request
}

/// Requests sent on `rx`, as a stream.
fn pings(rx: mpsc::Receiver<Request>) -> impl futures::Stream<Item = Request> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

fn name(name: &str) -> Request {
    Request {
        name: name.into(),
        count: 0,
    }
}

async fn next(replies: &mut tonic::Streaming<Response>) -> Result<Option<String>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(20), replies.message())
        .await
        .expect("a reply in time")
        .map(|reply| reply.map(|r| r.msg))
}

/// One greeter server, `instance`, on a registry of its own.
fn one_greeter(instance: &str) -> (SharedRegistry, TestServer) {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new(instance),
        loopback_options(),
    );
    (registry, server)
}

/// Client options with a short `attempt_timeout` (the request timeout
/// twice that) and `stream_timeout`.
fn short_attempts(attempt_timeout: Duration, stream_timeout: Option<Duration>) -> ClientOptions {
    ClientOptions {
        attempt_timeout,
        request_timeout: attempt_timeout * 2,
        stream_timeout,
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_stream_is_counted_in_its_nodes_load_until_it_ends() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let servers = TestServer::start_many(registry.clone(), SERVICE, 2);
    let client = Client::new(registry, ClientOptions::default());
    let channel = client.service(SERVICE);
    let mut greeter = GreeterClient::new(channel.clone());
    let (tx, rx) = mpsc::channel(4);
    tx.send(name("a")).await.expect("send");
    let mut replies = greeter
        .ping_pong(streaming(pings(rx)))
        .await
        .expect("open")
        .into_inner();
    assert_eq!(
        next(&mut replies).await.expect("pong"),
        Some("pong a".into())
    );
    let in_flight = || -> u32 { channel.node_set().stats().iter().map(|s| s.in_flight).sum() };
    // Open: one node counts it.
    assert_eq!(in_flight(), 1);
    let hits: Vec<usize> = servers.iter().map(|s| s.greeter.hits()).collect();
    assert_eq!(hits.iter().sum::<usize>(), 1, "{hits:?}");
    // Every message of the stream went to that node.
    tx.send(name("b")).await.expect("send");
    assert_eq!(
        next(&mut replies).await.expect("pong"),
        Some("pong b".into())
    );
    let again: Vec<usize> = servers.iter().map(|s| s.greeter.hits()).collect();
    assert_eq!(hits, again);
    // Ended: counted out.
    drop(tx);
    assert_eq!(next(&mut replies).await.expect("end"), None);
    drop(replies);
    assert_eq!(in_flight(), 0);
    for server in servers {
        server.stop();
    }
}

#[tokio::test]
async fn a_node_that_cannot_be_reached_is_replaced_before_the_stream_starts() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("live"),
        loopback_options(),
    );
    // A node nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    registry
        .register(
            &Service {
                name: SERVICE.into(),
                version: "latest".into(),
                nodes: vec![Node::new("dead", dead.to_string())],
                ..Service::default()
            },
            RegisterOptions::default(),
        )
        .await
        .expect("register");
    let client = Client::new(registry, ClientOptions::default());
    let channel = client.service(SERVICE);
    let mut greeter = GreeterClient::new(channel.clone());
    for i in 0..10 {
        let request = Request {
            name: format!("s{i}"),
            count: 2,
        };
        let mut replies = greeter
            .stream(streaming(request))
            .await
            .unwrap_or_else(|e| panic!("stream {i}: {e}"))
            .into_inner();
        assert_eq!(
            next(&mut replies).await.expect("1"),
            Some(format!("Hello s{i} 1"))
        );
        assert_eq!(
            next(&mut replies).await.expect("2"),
            Some(format!("Hello s{i} 2"))
        );
        assert_eq!(next(&mut replies).await.expect("end"), None);
    }
    assert_eq!(server.greeter.hits(), 10);
    server.stop();
}

#[tokio::test]
async fn nothing_is_run_twice_once_the_stream_started() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let servers = TestServer::start_many(registry.clone(), SERVICE, 2);
    let client = Client::new(registry, ClientOptions::default());
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let request = Request {
        name: "fail".into(),
        count: 3,
    };
    let mut replies = greeter
        .stream(streaming(request))
        .await
        .expect("open")
        .into_inner();
    assert_eq!(
        next(&mut replies).await.expect("1"),
        Some("Hello fail 1".into())
    );
    let failed = next(&mut replies).await.expect_err("the service's error");
    assert_eq!(failed.code(), tonic::Code::Internal);
    let hits: usize = servers.iter().map(|s| s.greeter.hits()).sum();
    assert_eq!(hits, 1, "the stream ran once");
    for server in servers {
        server.stop();
    }
}

#[tokio::test]
async fn streams_outlive_the_attempt_timeout_and_end_at_the_stream_timeout() {
    let (registry, server) = one_greeter("t");
    let attempt_timeout = Duration::from_millis(200);
    let open_for = |stream_timeout| short_attempts(attempt_timeout, stream_timeout);

    // No stream deadline: a stream idle far past the attempt (and request)
    // timeout still answers.
    let client = Client::new(registry.clone(), open_for(None));
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let (tx, rx) = mpsc::channel(4);
    let mut replies = greeter
        .ping_pong(streaming(pings(rx)))
        .await
        .expect("open")
        .into_inner();
    tokio::time::sleep(attempt_timeout * 4).await;
    tx.send(name("late")).await.expect("send");
    assert_eq!(
        next(&mut replies).await.expect("pong"),
        Some("pong late".into())
    );
    drop(tx);
    assert_eq!(next(&mut replies).await.expect("end"), None);

    // --client_stream_timeout: the stream ends with DeadlineExceeded.
    let client = Client::new(registry, open_for(Some(Duration::from_millis(300))));
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let (tx, rx) = mpsc::channel(4);
    let mut replies = greeter
        .ping_pong(streaming(pings(rx)))
        .await
        .expect("open")
        .into_inner();
    tx.send(name("in time")).await.expect("send");
    assert_eq!(
        next(&mut replies).await.expect("pong"),
        Some("pong in time".into())
    );
    let ended = next(&mut replies).await.expect_err("the deadline");
    assert_eq!(ended.code(), tonic::Code::DeadlineExceeded, "{ended:?}");
    drop(tx);
    server.stop();
}

/// A tonic-generated client calling a streaming method through the client,
/// with no [`Streaming`] mark: the registry lists the method as a stream
/// (`"stream": "true"`, registered by the server from its descriptors), so
/// the call is one: no `grpc-timeout` goes out (grpc-go servers would end
/// the stream with it), the stream outlives the attempt and request
/// timeouts, and its node's load counts it while open. A unary call to the
/// same service still gets its attempt timeout.
#[tokio::test]
async fn a_generated_clients_stream_is_a_stream_without_the_mark() {
    let (registry, server) = one_greeter("typed");
    let attempt_timeout = Duration::from_millis(200);
    let client = Client::new(registry, short_attempts(attempt_timeout, None));
    let channel = client.service(SERVICE);
    let mut greeter = GreeterClient::new(channel.clone());

    let (tx, rx) = mpsc::channel(4);
    tx.send(name("a")).await.expect("send");
    let mut replies = greeter
        .ping_pong(pings(rx))
        .await
        .expect("open")
        .into_inner();
    assert_eq!(
        next(&mut replies).await.expect("pong"),
        Some("pong a".into())
    );
    let sent = server
        .greeter
        .last_metadata()
        .expect("the stream's metadata");
    assert_eq!(
        sent.get("grpc-timeout"),
        None,
        "a stream sends no grpc-timeout: {sent:?}"
    );
    let in_flight = || -> u32 { channel.node_set().stats().iter().map(|s| s.in_flight).sum() };
    assert_eq!(in_flight(), 1, "the open stream counts in its node's load");
    // Idle well past the attempt and request timeouts (no timer of the
    // client may end it).
    tokio::time::sleep(attempt_timeout * 4).await;
    tx.send(name("late")).await.expect("send");
    assert_eq!(
        next(&mut replies).await.expect("pong"),
        Some("pong late".into())
    );
    drop(tx);
    assert_eq!(next(&mut replies).await.expect("end"), None);
    drop(replies);
    assert_eq!(in_flight(), 0);

    // Server-streaming too.
    let mut replies = greeter
        .stream(Request {
            name: "s".into(),
            count: 1,
        })
        .await
        .expect("open")
        .into_inner();
    assert_eq!(
        next(&mut replies).await.expect("1"),
        Some("Hello s 1".into())
    );
    assert_eq!(next(&mut replies).await.expect("end"), None);
    let sent = server
        .greeter
        .last_metadata()
        .expect("the stream's metadata");
    assert_eq!(sent.get("grpc-timeout"), None, "{sent:?}");

    // A unary call is not taken for one.
    greeter.hello(name("unary")).await.expect("hello");
    let sent = server.greeter.last_metadata().expect("the call's metadata");
    let timeout = sent
        .get("grpc-timeout")
        .expect("a unary call's grpc-timeout");
    let text = timeout.to_str().expect("ASCII");
    let (value, unit) = text.split_at(text.len() - 1);
    let value: u64 = value.parse().expect("grpc-timeout's digits");
    let sent = match unit {
        "u" => Duration::from_micros(value),
        "m" => Duration::from_millis(value),
        other => panic!("unexpected unit {other} in {text}"),
    };
    assert!(
        sent <= attempt_timeout,
        "bounded by the attempt timeout: {text}"
    );
    server.stop();
}
