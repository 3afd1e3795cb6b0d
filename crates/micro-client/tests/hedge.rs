//! Hedging (`hedge_after`) against real servers on loopback.
//!
//! Every node here holds each call until the test releases it, and reports
//! when a call starts and when one is cancelled before it answered: the test
//! decides which attempt answers first, so nothing depends on how fast the
//! machine is. Only "no hedge was sent" is an absence, checked by waiting a
//! few hedge delays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_client::{
    AttemptResult, BudgetOptions, CallEnd, CallObserver, Client, ClientError, ClientOptions,
    NodeSet, ServiceChannel,
};
use micro_registry::memory::MemoryRegistry;
use micro_testing::greeter::greeter_client::GreeterClient;
use micro_testing::greeter::greeter_server::{Greeter, GreeterServer};
use micro_testing::greeter::{Request, Response};
use micro_testing::{Crashable, FILE_DESCRIPTOR_SET, loopback_options};
use tokio::sync::{Semaphore, mpsc};

const SERVICE: &str = "go.micro.srv.greeter";
const HEDGE: Duration = Duration::from_millis(150);
/// Bound on waiting for something that must happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the nodes report.
#[derive(Debug)]
enum Event {
    Started { node: String, at: Instant },
    Cancelled { node: String },
}

/// A greeter that holds every call until released.
#[derive(Clone)]
struct Gated {
    name: String,
    release: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    /// Answer this error instead of a greeting once released.
    fail: Option<tonic::Code>,
}

/// Reports a call dropped before it answered.
struct CancelGuard {
    node: String,
    answered: bool,
    events: mpsc::UnboundedSender<Event>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.events.send(Event::Cancelled {
                node: self.node.clone(),
            });
        }
    }
}

#[tonic::async_trait]
impl Greeter for Gated {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, tonic::Status> {
        let _ = self.events.send(Event::Started {
            node: self.name.clone(),
            at: Instant::now(),
        });
        let mut guard = CancelGuard {
            node: self.name.clone(),
            answered: false,
            events: self.events.clone(),
        };
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
        guard.answered = true;
        if let Some(code) = self.fail {
            return Err(tonic::Status::new(code, format!("{} failed", self.name)));
        }
        Ok(tonic::Response::new(Response {
            msg: format!("Hello {} from {}", request.into_inner().name, self.name),
        }))
    }

    micro_testing::greeter_streams!();
}

/// Gated greeters `a`, `b`, … registered as one service.
struct Fleet {
    registry: Arc<MemoryRegistry>,
    gates: HashMap<String, Arc<Semaphore>>,
    events: mpsc::UnboundedReceiver<Event>,
    servers: Vec<Option<Crashable>>,
}

impl Fleet {
    fn start(n: usize) -> Fleet {
        Self::answering(n, None)
    }

    /// Nodes that answer `fail` (an error status) when released.
    fn answering(n: usize, fail: Option<tonic::Code>) -> Fleet {
        let registry = Arc::new(MemoryRegistry::new());
        let (tx, events) = mpsc::unbounded_channel();
        let mut gates = HashMap::new();
        let mut servers = Vec::new();
        for name in ["a", "b", "c"].into_iter().take(n) {
            let release = Arc::new(Semaphore::new(0));
            gates.insert(name.to_string(), release.clone());
            let greeter = Gated {
                name: name.to_string(),
                release,
                events: tx.clone(),
                fail,
            };
            servers.push(Some(Crashable::start(
                registry.clone(),
                SERVICE,
                loopback_options(),
                move |builder| {
                    builder
                        .file_descriptor_set(FILE_DESCRIPTOR_SET)
                        .add_service(GreeterServer::new(greeter))
                },
            )));
        }
        Fleet {
            registry,
            gates,
            events,
            servers,
        }
    }

    async fn client(&self, options: ClientOptions) -> Client {
        let client = Client::new(self.registry.clone(), options);
        assert_eq!(client.nodes(SERVICE).await.len(), self.servers.len());
        client
    }

    /// A client whose attempts `observer` sees.
    async fn observed_client(&self, options: ClientOptions, observer: Arc<Attempts>) -> Client {
        let client = Client::with_observer(self.registry.clone(), options, observer);
        assert_eq!(client.nodes(SERVICE).await.len(), self.servers.len());
        client
    }

    /// Crashes `node` (its connections drop, as with `kill -9`).
    fn kill(&mut self, node: &str) {
        let index = usize::from(node.as_bytes()[0] - b'a');
        let server = self.servers[index].take().expect("a running node");
        tokio::task::block_in_place(|| server.kill());
    }

    /// Lets `n` calls of `node` answer.
    fn release(&self, node: &str, n: usize) {
        self.gates[node].add_permits(n);
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("a node reports within the patience bound")
            .expect("nodes report")
    }

    async fn started(&mut self) -> (String, Instant) {
        match self.next().await {
            Event::Started { node, at } => (node, at),
            other => panic!("expected a call to start, got {other:?}"),
        }
    }

    async fn cancelled(&mut self) -> String {
        match self.next().await {
            Event::Cancelled { node } => node,
            other => panic!("expected a cancelled call, got {other:?}"),
        }
    }

    /// Asserts that no call starts for `wait` (no hedge was sent).
    async fn no_start_within(&mut self, wait: Duration) {
        if let Ok(event) = tokio::time::timeout(wait, self.events.recv()).await {
            panic!("expected no other attempt, got {event:?}");
        }
    }

    fn stop(self) {
        for server in self.servers.into_iter().flatten() {
            server.stop();
        }
    }
}

/// Records every attempt the client reports, in order, and signals each.
#[derive(Debug, Default)]
struct Attempts(Arc<Recorded>);

#[derive(Debug, Default)]
struct Recorded {
    results: Mutex<Vec<AttemptResult>>,
    reported: tokio::sync::Notify,
}

struct AttemptsOfCall(Arc<Recorded>);

impl CallObserver for Attempts {
    fn start(&self, _: &NodeSet, _: &str, _: &mut http::HeaderMap) -> Arc<dyn CallEnd> {
        Arc::new(AttemptsOfCall(self.0.clone()))
    }
}

impl CallEnd for AttemptsOfCall {
    fn attempt(&self, result: AttemptResult) {
        self.0.results.lock().expect("not poisoned").push(result);
        self.0.reported.notify_one();
    }
}

impl Attempts {
    fn take(&self) -> Vec<AttemptResult> {
        std::mem::take(&mut *self.0.results.lock().expect("not poisoned"))
    }

    /// Waits for the next attempt to be reported.
    async fn reported(&self) {
        tokio::time::timeout(PATIENCE, self.0.reported.notified())
            .await
            .expect("an attempt is reported within the patience bound");
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        hedge_after: Some(HEDGE),
        request_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    }
}

type Call = tokio::task::JoinHandle<Result<tonic::Response<Response>, tonic::Status>>;

fn call(channel: &ServiceChannel, name: &str) -> Call {
    let mut greeter = GreeterClient::new(channel.clone());
    let name = name.to_string();
    tokio::spawn(async move {
        greeter
            .hello(Request {
                name,
                ..Default::default()
            })
            .await
    })
}

async fn answer(call: Call) -> String {
    tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call ends within the patience bound")
        .expect("the call task")
        .expect("the call succeeds")
        .into_inner()
        .msg
}

fn attempts(set: &NodeSet) -> u64 {
    set.stats().iter().map(|s| s.attempts).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_is_hedged_on_another_node_and_the_first_answer_wins() {
    let mut fleet = Fleet::start(2);
    let client = fleet.client(options()).await;
    let channel = client.service(SERVICE).idempotent();

    // Either attempt may answer first: the hedge, then (next call) the first.
    for hedge_wins in [true, false] {
        let sent = Instant::now();
        let call = call(&channel, "x");
        let (first, _) = fleet.started().await;
        let (hedge, hedged_at) = fleet.started().await;
        assert_ne!(first, hedge, "the hedge goes to another node");
        let waited = hedged_at - sent;
        assert!(waited >= HEDGE, "hedged after {waited:?}, before {HEDGE:?}");

        let (winner, loser) = if hedge_wins {
            (hedge, first)
        } else {
            (first, hedge)
        };
        fleet.release(&winner, 1);
        assert_eq!(answer(call).await, format!("Hello x from {winner}"));
        // The losing attempt is cancelled: its node sees the call dropped,
        // and nothing is left to answer.
        assert_eq!(fleet.cancelled().await, loser);
    }
    assert_eq!(attempts(channel.node_set()), 4);
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_are_not_idempotent_are_never_hedged() {
    let mut fleet = Fleet::start(2);
    let client = fleet.client(options()).await;
    let channel = client.service(SERVICE);

    let call = call(&channel, "x");
    let (first, _) = fleet.started().await;
    fleet.no_start_within(HEDGE * 4).await;
    fleet.release(&first, 1);
    assert_eq!(answer(call).await, format!("Hello x from {first}"));
    assert_eq!(attempts(channel.node_set()), 1);
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_are_paid_from_the_retry_budget() {
    let mut fleet = Fleet::start(2);
    // One retry per two calls, no floor: the first call may hedge, the
    // second finds the budget spent, the third may again.
    let client = fleet
        .client(ClientOptions {
            retry_budget: BudgetOptions {
                ratio: 0.5,
                min_per_second: 0,
            },
            ..options()
        })
        .await;
    let channel = client.service(SERVICE).idempotent();

    for (n, hedged) in [(1, true), (2, false), (3, true)] {
        let name = n.to_string();
        let call = call(&channel, &name);
        let (first, _) = fleet.started().await;
        if hedged {
            let (hedge, _) = fleet.started().await;
            fleet.release(&hedge, 1);
            assert_eq!(answer(call).await, format!("Hello {n} from {hedge}"));
            assert_eq!(fleet.cancelled().await, first);
        } else {
            fleet.no_start_within(HEDGE * 4).await;
            fleet.release(&first, 1);
            assert_eq!(answer(call).await, format!("Hello {n} from {first}"));
        }
    }
    assert_eq!(attempts(channel.node_set()), 5);
    fleet.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hedge_when_the_answer_comes_before_the_delay() {
    let mut fleet = Fleet::start(2);
    let client = fleet
        .client(ClientOptions {
            // Far longer than a call on loopback takes, even on a busy machine.
            hedge_after: Some(Duration::from_secs(5)),
            ..options()
        })
        .await;
    let channel = client.service(SERVICE).idempotent();
    fleet.release("a", 1000);
    fleet.release("b", 1000);

    for n in 0..20 {
        answer(call(&channel, &n.to_string())).await;
    }
    assert_eq!(attempts(channel.node_set()), 20, "one attempt per call");
    let mut started = 0;
    while let Ok(event) = fleet.events.try_recv() {
        assert!(matches!(event, Event::Started { .. }), "{event:?}");
        started += 1;
    }
    assert_eq!(started, 20);
    fleet.stop();
}

/// With one node there is nothing to hedge to: the call behaves as without
/// hedging, and is not cut short by the attempt timeout (which only makes
/// sense when another node could take the call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_given_the_whole_deadline() {
    let mut fleet = Fleet::start(1);
    let attempt_timeout = Duration::from_millis(300);
    let client = fleet
        .client(ClientOptions {
            attempt_timeout,
            ..options()
        })
        .await;
    let channel = client.service(SERVICE).idempotent();

    let sent = Instant::now();
    let call = call(&channel, "x");
    let (node, _) = fleet.started().await;
    // Answer only once the attempt timeout has passed.
    tokio::time::sleep(attempt_timeout * 2).await;
    fleet.release(&node, 1);
    let reply = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("bounded")
        .expect("task");
    match reply {
        Ok(reply) => assert_eq!(reply.into_inner().msg, "Hello x from a"),
        Err(status) => panic!(
            "failed after {:?}: {:?}",
            sent.elapsed(),
            ClientError::from_status(&status)
        ),
    }
    assert_eq!(attempts(channel.node_set()), 1);
    fleet.stop();
}

/// The observer sees both attempts of a hedged call: the one that answered,
/// and the one dropped when the other answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sees_the_hedge_as_an_attempt() {
    let mut fleet = Fleet::start(2);
    let observer = Arc::new(Attempts::default());
    let client = fleet.observed_client(options(), observer.clone()).await;
    let channel = client.service(SERVICE).idempotent();

    let call = call(&channel, "x");
    let (_first, _) = fleet.started().await;
    let (hedge, _) = fleet.started().await;
    fleet.release(&hedge, 1);
    assert_eq!(answer(call).await, format!("Hello x from {hedge}"));
    assert_eq!(
        observer.take(),
        [AttemptResult::Answered, AttemptResult::Cancelled]
    );
    assert_eq!(attempts(channel.node_set()), 2);
    fleet.stop();
}

/// The first node answers an error (it processed the request), then the
/// hedge's node fails: the caller gets the first node's answer, not the
/// hedge's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hedge_does_not_hide_the_first_answer() {
    let mut fleet = Fleet::answering(2, Some(tonic::Code::Internal));
    let observer = Arc::new(Attempts::default());
    let client = fleet.observed_client(options(), observer.clone()).await;
    let channel = client.service(SERVICE).idempotent();

    let call = call(&channel, "x");
    let (first, _) = fleet.started().await;
    let (hedge, _) = fleet.started().await;
    fleet.release(&first, 1);
    // Only once the client has the first answer does the hedge's node crash.
    observer.reported().await;
    fleet.kill(&hedge);
    let status = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call ends within the patience bound")
        .expect("the call task")
        .expect_err("the node answered an error");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(status.message(), format!("{first} failed"));
    assert_eq!(
        observer.take(),
        [AttemptResult::Answered, AttemptResult::ConnectionFailed]
    );
    fleet.stop();
}
