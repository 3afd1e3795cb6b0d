//! The attempt stage alone, against real sockets on loopback: a refused
//! connection is a failure before anything was sent and takes the node out
//! of the rotation; a node that accepts and never answers costs the attempt
//! its attempt timeout, not the call's deadline.

mod support;

use std::sync::Arc;
use std::time::Duration;

use micro_client::attempt::Attempt;
use micro_client::call::AttemptContext;
use micro_client::outcome::{Outcome, Sent};
use micro_client::{Client, ClientOptions, NodeEntry, NodeFailure, NodeState};
use micro_registry::Node;
use micro_registry::memory::MemoryRegistry;
use support::{SERVICE, request};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

fn entry(address: String) -> Arc<NodeEntry> {
    let node = Node {
        id: "n".into(),
        address,
        metadata: Default::default(),
    };
    Arc::new(NodeEntry::new(node, &ClientOptions::default()).expect("a valid address"))
}

fn stage(timeout: Duration) -> Attempt {
    let client = Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default());
    let set = client.service(SERVICE).node_set().clone();
    Attempt::new(set, timeout, false)
}

fn on(node: &Arc<NodeEntry>, deadline: Duration) -> http::Request<tonic::body::Body> {
    let mut request = request();
    let mut context = AttemptContext::single(Instant::now() + deadline);
    context.node = Some(node.clone());
    request.extensions_mut().insert(context);
    request
}

#[tokio::test]
async fn a_refused_connection_is_not_sent_and_takes_the_node_out() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let node = entry(closed.to_string());
    let mut attempt = stage(Duration::from_secs(5));
    let Ok(outcome) = attempt
        .ready()
        .await
        .expect("ready")
        .call(on(&node, Duration::from_secs(5)))
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                failure: NodeFailure::Connect(_),
                sent: Sent::No
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(node.state(), NodeState::Down);
    assert_eq!(node.stats().attempts, 1);
}

#[tokio::test]
async fn a_node_that_never_answers_costs_the_attempt_timeout() {
    // Accepts connections and never answers (a frozen process).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let node = entry(address.to_string());
    let timeout = Duration::from_millis(300);
    let mut attempt = stage(timeout);
    let started = std::time::Instant::now();
    let Ok(outcome) = attempt
        .ready()
        .await
        .expect("ready")
        .call(on(&node, Duration::from_secs(30)))
        .await;
    let took = started.elapsed();
    held.abort();
    assert!(
        matches!(
            outcome,
            Outcome::Failed { failure: NodeFailure::Timeout(t), sent: Sent::Maybe } if t == timeout
        ),
        "{outcome:?}"
    );
    assert!(took >= timeout, "{took:?}");
    assert!(
        took < Duration::from_secs(10),
        "not the call's deadline: {took:?}"
    );
    assert_eq!(node.state(), NodeState::Up, "one timeout does not eject");
}

#[tokio::test]
async fn without_a_node_the_attempt_fails_before_sending() {
    let mut attempt = stage(Duration::from_secs(1));
    let Ok(outcome) = attempt.ready().await.expect("ready").call(request()).await;
    assert!(
        matches!(outcome, Outcome::Failed { sent: Sent::No, .. }),
        "{outcome:?}"
    );
}
