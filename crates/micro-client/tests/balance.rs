//! The balance stage alone, over a node pool fed by an in-memory registry
//! and an innermost stage that records which node each attempt was given.

mod support;

use std::sync::Arc;
use std::time::Duration;

use micro_client::balance::BalanceLayer;
use micro_client::call::AttemptContext;
use micro_client::outcome::Picked;
use micro_client::{Client, ClientError, ClientOptions, NodeSet, Strategy};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_selector::Selector;
use support::{Recorder, SERVICE, request};
use tokio::time::Instant;
use tower::{Layer, Service as _, ServiceExt};

async fn pool(ids: &[&str]) -> Arc<NodeSet> {
    let registry = Arc::new(MemoryRegistry::new());
    if !ids.is_empty() {
        let service = Service {
            name: SERVICE.into(),
            version: "latest".into(),
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, id)| Node {
                    id: (*id).into(),
                    address: format!("127.0.0.1:{}", 1 + i),
                    metadata: Default::default(),
                })
                .collect(),
            ..Default::default()
        };
        registry
            .register(&service, RegisterOptions::default())
            .await
            .expect("registered");
    }
    let client = Client::new(registry, ClientOptions::default());
    let picker = client
        .node_set_ready(SERVICE, Instant::now() + Duration::from_secs(5))
        .await
        .expect("the registry answered");
    picker.node_set().clone()
}

fn balance(set: Arc<NodeSet>, strategy: Strategy) -> BalanceLayer {
    BalanceLayer::new(
        set,
        Arc::new(Selector::new(strategy)),
        Duration::from_secs(1),
    )
}

#[tokio::test]
async fn an_attempt_goes_to_a_node_its_call_has_not_tried() {
    let set = pool(&["a", "b", "c"]).await;
    let entries = set.stats();
    assert_eq!(entries.len(), 3);
    let recorder = Recorder::default();
    let mut stage = balance(set.clone(), Strategy::Random).layer(recorder.clone());
    for _ in 0..20 {
        // The call tried a and b: only c is left.
        let mut attempt = request();
        let mut context = AttemptContext::single(Instant::now() + Duration::from_secs(1));
        let tried: Vec<_> = ["a", "b"].iter().map(|id| support::node(id)).collect();
        context.tried = tried;
        attempt.extensions_mut().insert(context);
        let future = stage.ready().await.expect("ready").call(attempt);
        assert_eq!(future.node().expect("a node").node.id, "c");
        future.await.expect("attempted");
    }
    assert!(
        recorder
            .nodes
            .lock()
            .expect("not poisoned")
            .iter()
            .all(|n| n == "c")
    );
}

#[tokio::test]
async fn round_robin_spreads_attempts_over_every_node() {
    let set = pool(&["a", "b", "c"]).await;
    let recorder = Recorder::default();
    let mut stage = balance(set, Strategy::RoundRobin).layer(recorder.clone());
    for _ in 0..6 {
        let attempted = stage
            .ready()
            .await
            .expect("ready")
            .call(request())
            .await
            .expect("attempted");
        let recorded = recorder.nodes.lock().expect("not poisoned");
        assert_eq!(
            recorded.last(),
            Some(&attempted.node.node.id),
            "the node named is the node given"
        );
    }
    let mut recorded = recorder.nodes.lock().expect("not poisoned").clone();
    recorded.sort();
    assert_eq!(recorded, ["a", "a", "b", "b", "c", "c"]);
}

#[tokio::test]
async fn with_no_node_the_attempt_fails_before_it_runs_naming_the_service() {
    let set = pool(&[]).await;
    let recorder = Recorder::default();
    let mut stage = balance(set, Strategy::P2c).layer(recorder.clone());
    let future = stage.ready().await.expect("ready").call(request());
    let Err(ClientError::NoNode { service, .. }) = future.node() else {
        panic!("no node expected");
    };
    assert_eq!(service, SERVICE);
    let error = future.await.expect_err("no node");
    assert!(matches!(error, ClientError::NoNode { .. }), "{error:?}");
    assert!(recorder.nodes.lock().expect("not poisoned").is_empty());
}
