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
        .hello(Request { name: "x".into() })
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
        .hello(Request { name: "x".into() })
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
        .hello(Request { name: "x".into() })
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
