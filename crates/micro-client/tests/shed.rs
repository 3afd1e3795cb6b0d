//! A call a server sheds (admission control: over `--server_max_concurrent`)
//! goes to another node, idempotent or not, and the node is avoided while
//! it sheds; against real servers on loopback.
//!
//! The busy node has a limit of one call and holds one call for the whole
//! test (its greeter answers after a minute), so every later call it gets is
//! over the limit whatever the machine's speed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_client::{AttemptResult, CallEnd, CallObserver, Client, ClientOptions, NodeSet};
use micro_registry::memory::MemoryRegistry;
use micro_server::{ConcurrencyLimit, PUSHBACK, ServerOptions};
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";
/// Bound on waiting for something that must happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// Every attempt result the client reports.
#[derive(Debug, Default)]
struct Attempts(Arc<Mutex<Vec<AttemptResult>>>);

struct AttemptsOfCall(Arc<Mutex<Vec<AttemptResult>>>);

impl CallObserver for Attempts {
    fn start(&self, _: &NodeSet, _: &str, _: &mut http::HeaderMap) -> Arc<dyn CallEnd> {
        Arc::new(AttemptsOfCall(self.0.clone()))
    }
}

impl CallEnd for AttemptsOfCall {
    fn attempt(&self, result: AttemptResult) {
        self.0.lock().expect("not poisoned").push(result);
    }
}

/// A node that takes one call at a time, busy with one for the whole test.
async fn busy_node(registry: &Arc<MemoryRegistry>) -> TestServer {
    let greeter = TestGreeter::new("busy").with_delay(Duration::from_secs(60));
    let options = ServerOptions {
        max_concurrent: ConcurrencyLimit::Fixed(1),
        ..loopback_options()
    };
    let busy = TestServer::start(registry.clone(), SERVICE, greeter, options);
    let address = format!("http://{}", busy.address);
    tokio::spawn(async move {
        if let Ok(mut direct) = GreeterClient::connect(address).await {
            let _ = direct.hello(Request::default()).await;
        }
    });
    tokio::time::timeout(PATIENCE, busy.greeter.call_started())
        .await
        .expect("the busy node's one call started");
    busy
}

fn hello() -> Request {
    Request {
        name: "huohuo".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_call_goes_to_another_node_and_the_busy_node_is_avoided() {
    let registry = Arc::new(MemoryRegistry::new());
    let busy = busy_node(&registry).await;
    let free = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("free"),
        loopback_options(),
    );
    let attempts = Attempts::default();
    let seen = attempts.0.clone();
    let client = Client::with_observer(
        registry.clone(),
        ClientOptions::default(),
        Arc::new(attempts),
    );
    assert_eq!(client.nodes(SERVICE).await.len(), 2);
    // Not marked idempotent: only a shed (not executed) may be retried.
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    for i in 0..10 {
        let reply = tokio::time::timeout(PATIENCE, greeter.hello(hello()))
            .await
            .expect("answered within the patience bound")
            .unwrap_or_else(|status| panic!("call {i} failed: {status:?}"));
        assert_eq!(reply.into_inner().msg, "Hello huohuo from free");
    }
    let results = seen.lock().expect("not poisoned").clone();
    let shed = results
        .iter()
        .filter(|r| **r == AttemptResult::Shed)
        .count();
    // A new node is tried by the next call: the busy one is tried, sheds,
    // and then costs more than the free one.
    assert!(shed >= 1, "the busy node was tried: {results:?}");
    assert!(
        shed <= 3,
        "the busy node is avoided after shedding: {results:?}"
    );
    assert_eq!(busy.greeter.hits(), 1, "nothing shed was executed");
    assert_eq!(free.greeter.hits(), 10);
    busy.kill();
    free.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_other_node_the_refusal_is_the_answer() {
    let registry = Arc::new(MemoryRegistry::new());
    let busy = busy_node(&registry).await;
    let client = Client::new(registry.clone(), ClientOptions::default());
    assert_eq!(client.nodes(SERVICE).await.len(), 1);
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let status = tokio::time::timeout(PATIENCE, greeter.hello(hello()))
        .await
        .expect("answered at once, not queued")
        .expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.metadata().get(PUSHBACK.as_str()).is_some(),
        "the shed mark reaches the caller: {status:?}"
    );
    assert_eq!(busy.greeter.hits(), 1, "not executed");
    busy.kill();
}
