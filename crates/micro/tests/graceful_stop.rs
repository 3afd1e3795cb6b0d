//! A graceful stop deregisters first, while still accepting, and lets
//! in-flight calls finish.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use micro::registry::memory::MemoryRegistry;
use micro::registry::{Error, RegisterOptions, Registry, Service, WatchOptions, Watcher};
use micro::{Client, ClientOptions};
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";

/// A memory registry that, at the moment of deregistration, checks whether
/// the server still accepts connections.
#[derive(Debug, Default)]
struct ProbingRegistry {
    inner: MemoryRegistry,
    server: OnceLock<SocketAddr>,
    accepting_at_deregister: Mutex<Option<bool>>,
}

#[async_trait::async_trait]
impl Registry for ProbingRegistry {
    fn name(&self) -> &str {
        "memory"
    }
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        self.inner.register(service, options).await
    }
    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        if let Some(address) = self.server.get() {
            let accepting = tokio::net::TcpStream::connect(address).await.is_ok();
            *self.accepting_at_deregister.lock().expect("lock") = Some(accepting);
        }
        self.inner.deregister(service).await
    }
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.inner.get_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.inner.list_services().await
    }
    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        self.inner.watch(options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregisters_before_it_stops_accepting_and_drains_in_flight_calls() {
    let registry = Arc::new(ProbingRegistry::default());
    let greeter = TestGreeter::new("draining").with_delay(Duration::from_millis(500));
    let mut server = TestServer::start(
        registry.clone(),
        SERVICE,
        greeter.clone(),
        loopback_options(),
    );
    registry.server.set(server.address).expect("set once");

    let client = Client::new(registry.clone(), ClientOptions::default());
    let mut watcher = registry
        .watch(WatchOptions::service(SERVICE))
        .await
        .expect("watch");
    let mut greeter_client = GreeterClient::new(client.service(SERVICE));
    let in_flight = tokio::spawn(async move {
        greeter_client
            .hello(Request {
                name: "in-flight".into(),
                ..Default::default()
            })
            .await
    });
    greeter.call_started().await;

    server.begin_stop();
    // The delete event comes while the call is still running.
    let deleted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watcher.next().await {
                Some(Ok(event)) if event.action == micro::registry::Action::Delete => break event,
                Some(Ok(_)) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("deregistered within 5 s");
    assert_eq!(deleted.service.nodes[0].id, server.node_id);
    assert_eq!(
        greeter.completed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "call finished before deregistration"
    );

    let reply = in_flight
        .await
        .expect("join")
        .expect("in-flight call completes");
    assert_eq!(reply.get_ref().msg, "Hello in-flight from draining");
    tokio::task::spawn_blocking(move || server.join())
        .await
        .expect("join");

    assert_eq!(
        *registry.accepting_at_deregister.lock().expect("lock"),
        Some(true),
        "server had stopped accepting before it deregistered"
    );
    assert!(
        registry.get_service(SERVICE).await.is_err(),
        "still registered"
    );
    let address = *registry.server.get().expect("address");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after stop"
    );
}
