//! An instance that crashes mid-run costs no failed calls, and leaves the
//! rotation.

use std::sync::Arc;

use micro::registry::memory::MemoryRegistry;
use micro::{Client, ClientOptions};
use micro_testing::TestServer;
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use tokio::time::Instant;

const SERVICE: &str = "go.micro.srv.greeter";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_fails_no_idempotent_call() {
    let registry = Arc::new(MemoryRegistry::new());
    let mut servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 3);
    let client = Client::new(registry.clone(), ClientOptions::default());
    // TestServer::start returns once registered: the first lookup sees all.
    assert_eq!(client.nodes(SERVICE).await.len(), 3);

    let channel = client.service(SERVICE).idempotent();
    let set = channel.node_set().clone();
    let mut greeter = GreeterClient::new(channel);
    let mut failed = Vec::new();
    let mut killed: Option<(String, Instant, u64)> = None;
    let victim_hits = servers[1].greeter.clone();
    for i in 0..600 {
        if i == 200 {
            // Crash: no deregistration, connections dropped.
            let victim = servers.remove(1);
            let id = victim.node_id.clone();
            let attempts_before = attempts_to(&set, &id);
            victim.kill();
            killed = Some((id, Instant::now(), attempts_before));
        }
        if let Err(status) = greeter
            .hello(Request {
                name: format!("{i}"),
            })
            .await
        {
            failed.push((i, status));
        }
    }
    let (victim, killed_at, attempts_before) = killed.expect("killed");
    let attempts_after = attempts_to(&set, &victim) - attempts_before;
    eprintln!(
        "failover: 600 idempotent calls, 1 of 3 instances killed at call 200: {} failed; \
         {attempts_after} attempt(s) reached the dead node after the kill, over {:?}",
        failed.len(),
        killed_at.elapsed()
    );
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    // The first attempt after the crash finds it dead; then it sits out its
    // backoff (1 s, longer than this whole run after the kill would need).
    assert!(
        attempts_after <= 2,
        "dead node kept receiving attempts: {attempts_after}"
    );
    // Calls are sequential, so none was in flight at the crash: every call
    // ran exactly once somewhere.
    let served: usize =
        servers.iter().map(|s| s.greeter.hits()).sum::<usize>() + victim_hits.hits();
    assert_eq!(served, 600);
    for server in servers {
        server.stop();
    }
}

fn attempts_to(set: &micro::client::NodeSet, node_id: &str) -> u64 {
    set.stats()
        .iter()
        .find(|s| s.node.id == node_id)
        .map_or(0, |s| s.attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_calls_are_retried_only_when_never_sent() {
    let registry = Arc::new(MemoryRegistry::new());
    let servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 2);
    let client = Client::new(registry.clone(), ClientOptions::default());
    assert_eq!(client.nodes(SERVICE).await.len(), 2);

    // The handler fails with Internal: the work may have happened, so a plain
    // call is not repeated...
    let mut plain = GreeterClient::new(client.service(SERVICE));
    let err = plain
        .hello(Request {
            name: "fail".into(),
        })
        .await
        .expect_err("fails");
    assert_eq!(err.code(), tonic::Code::Internal);
    let hits: usize = servers.iter().map(|s| s.greeter.hits()).sum();
    assert_eq!(hits, 1, "a non-idempotent call ran {hits} times");

    // ...but an idempotent one goes to the other node (which fails too here).
    let mut retried = GreeterClient::new(client.service(SERVICE));
    let mut request = tonic::Request::new(Request {
        name: "fail".into(),
    });
    request.extensions_mut().insert(micro::Idempotent);
    let err = retried.hello(request).await.expect_err("fails");
    assert_eq!(err.code(), tonic::Code::Internal);
    let per_node: Vec<usize> = servers.iter().map(|s| s.greeter.hits()).collect();
    assert_eq!(per_node.iter().sum::<usize>(), 3, "{per_node:?}");
    assert!(
        per_node.iter().all(|&h| h >= 1),
        "retry went to the same node: {per_node:?}"
    );
    for server in servers {
        server.stop();
    }
}
