//! Calling a service nobody registered fails at once, saying so.

use std::sync::Arc;
use std::time::Duration;

use micro::registry::memory::MemoryRegistry;
use micro::{Client, ClientOptions};
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use tokio::time::Instant;

#[tokio::test]
async fn unknown_service_is_an_immediate_clear_error() {
    let client = Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default());
    let mut greeter = GreeterClient::new(client.service("go.micro.srv.nobody"));
    let started = Instant::now();
    let err = greeter
        .hello(Request {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("no nodes");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("go.micro.srv.nobody"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("registry [memory]"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn unusable_registered_addresses_are_never_dialled() {
    use micro::registry::{Node, RegisterOptions, Registry, Service};
    let registry = Arc::new(MemoryRegistry::new());
    for (id, address) in [
        ("bad-1", ""),
        ("bad-2", "127.0.0.1:0"),
        ("bad-3", "no port"),
        ("bad-4", "http://x:1/path"),
    ] {
        registry
            .register(
                &Service::new("go.micro.srv.poisoned", "latest").with_node(Node::new(id, address)),
                RegisterOptions::default(),
            )
            .await
            .expect("register");
    }
    let client = Client::new(registry.clone(), ClientOptions::default());
    assert!(client.nodes("go.micro.srv.poisoned").await.is_empty());
    let mut greeter = GreeterClient::new(client.service("go.micro.srv.poisoned"));
    let err = greeter
        .hello(Request {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("no usable nodes");
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn asking_for_many_unknown_services_does_not_grow_without_bound() {
    let client = Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default());
    for i in 0..5000 {
        let name = format!("go.micro.srv.nobody{i}");
        assert!(client.nodes(&name).await.is_empty());
    }
    assert!(
        client.known_services() <= 1024,
        "{}",
        client.known_services()
    );
}

/// A registry that accepts every request and never answers.
#[derive(Debug)]
struct Silent;

#[async_trait::async_trait]
impl micro::registry::Registry for Silent {
    fn name(&self) -> &str {
        "silent"
    }
    async fn register(
        &self,
        _: &micro::registry::Service,
        _: micro::registry::RegisterOptions,
    ) -> Result<(), micro::registry::Error> {
        std::future::pending().await
    }
    async fn deregister(&self, _: &micro::registry::Service) -> Result<(), micro::registry::Error> {
        std::future::pending().await
    }
    async fn get_service(
        &self,
        _: &str,
    ) -> Result<Vec<micro::registry::Service>, micro::registry::Error> {
        std::future::pending().await
    }
    async fn list_services(&self) -> Result<Vec<micro::registry::Service>, micro::registry::Error> {
        std::future::pending().await
    }
    async fn watch(
        &self,
        _: micro::registry::WatchOptions,
    ) -> Result<micro::registry::Watcher, micro::registry::Error> {
        std::future::pending().await
    }
}

/// The channel is not ready until the registry answers; when it has not
/// answered within `request_timeout`, the call fails with a deadline error
/// naming the registry (not a hang, not "no nodes").
#[tokio::test(start_paused = true)]
async fn a_registry_that_never_answers_is_a_timeout_naming_it() {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let client = Client::new(Arc::new(Silent), options);
    let mut greeter = GreeterClient::new(client.service("go.micro.srv.greeter"));
    let started = Instant::now();
    let err = greeter
        .hello(Request {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("the registry never answered");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message()
            .contains("service go.micro.srv.greeter: registry [silent] did not answer within 2s"),
        "{}",
        err.message()
    );
}

/// The race a running client had with its own registry watch: a service
/// registered a moment ago, not yet delivered by the watch. On a
/// current-thread runtime the watch cannot run between the registration and
/// the call, so the race is there every time.
#[tokio::test]
async fn a_service_registered_a_moment_ago_is_called_not_answered_no_node() {
    use micro_testing::{TestGreeter, TestServer, loopback_options};
    const SERVICE: &str = "go.micro.srv.late";
    let registry = Arc::new(MemoryRegistry::new());
    let client = Client::new(registry.clone(), ClientOptions::default());
    let channel = client.service(SERVICE);
    let mut greeter = GreeterClient::new(channel.clone());
    let err = greeter
        .hello(Request {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("nobody yet");
    assert_eq!(err.code(), tonic::Code::Unavailable);

    // Blocks this thread until registered: the watch has not run since.
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("late"),
        loopback_options(),
    );
    assert!(channel.node_set().is_empty(), "the race is set up");
    let reply = greeter
        .hello(Request {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect("the new node is called");
    assert_eq!(reply.into_inner().msg, "Hello x from late");
    server.stop();
}

/// The same on a multi-thread runtime with every core busy, as the race was
/// first seen (11 failures in 25 before the fix).
#[test]
fn under_load_no_call_after_a_registration_is_answered_no_node() {
    use micro_testing::{TestGreeter, TestServer, loopback_options};
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let until = std::time::Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let failures = runtime.block_on(async {
        let mut failures = Vec::new();
        for round in 0..25 {
            let service = format!("go.micro.srv.late{round}");
            let registry = Arc::new(MemoryRegistry::new());
            let client = Client::new(registry.clone(), ClientOptions::default());
            let mut greeter = GreeterClient::new(client.service(&service));
            greeter
                .hello(Request {
                    name: "x".into(),
                    ..Default::default()
                })
                .await
                .expect_err("nobody yet");
            let name = service.clone();
            let server = tokio::task::spawn_blocking(move || {
                TestServer::start(
                    registry,
                    &name,
                    TestGreeter::new("late"),
                    loopback_options(),
                )
            })
            .await
            .expect("started");
            if let Err(status) = greeter
                .hello(Request {
                    name: "x".into(),
                    ..Default::default()
                })
                .await
            {
                failures.push(format!("round {round}: {status}"));
            }
            tokio::task::spawn_blocking(move || server.stop())
                .await
                .expect("stopped");
        }
        failures
    });
    stop.store(true, Ordering::Relaxed);
    for thread in busy {
        thread.join().expect("busy loop");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
