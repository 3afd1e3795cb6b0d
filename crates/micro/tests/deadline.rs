//! Every call has a deadline: the client enforces it and sends it to the
//! server as `grpc-timeout`.

use std::sync::Arc;
use std::time::Duration;

use micro::registry::memory::MemoryRegistry;
use micro::{Client, ClientOptions};
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use micro_testing::{TestGreeter, TestServer, loopback_options};
use tokio::time::Instant;

const SERVICE: &str = "go.micro.srv.greeter";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_yields_deadline_exceeded_at_the_client_timeout() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("slow").with_delay(Duration::from_secs(3)),
        loopback_options(),
    );
    let timeout = Duration::from_millis(300);
    let client = Client::new(
        registry.clone(),
        ClientOptions {
            request_timeout: timeout,
            ..ClientOptions::default()
        },
    );
    // Wait for the node so the deadline measures the call, not the lookup.
    assert_eq!(client.nodes(SERVICE).await.len(), 1);

    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let started = Instant::now();
    let err = greeter
        .hello(Request {
            name: "huohuo".into(),
            ..Default::default()
        })
        .await
        .expect_err("times out");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(took >= timeout, "gave up early: {took:?}");
    assert!(
        took < timeout + Duration::from_secs(2),
        "gave up late: {took:?}"
    );
    assert!(err.message().contains(SERVICE), "{}", err.message());

    // The server got the deadline with the request.
    let seen = server.greeter.deadlines.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let header = seen[0].clone().expect("grpc-timeout header sent");
    let micros: u64 = header.trim_end_matches('u').parse().expect("microseconds");
    assert!(
        micros <= timeout.as_micros() as u64 && micros > 0,
        "server saw grpc-timeout {header}"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_own_timeout_wins() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("slow").with_delay(Duration::from_secs(3)),
        loopback_options(),
    );
    let client = Client::new(registry.clone(), ClientOptions::default());
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let mut request = tonic::Request::new(Request {
        name: "x".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = greeter.hello(request).await.expect_err("times out");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.kill();
}
