//! An instance that crashes mid-run costs no failed calls, and leaves the
//! rotation.

use std::sync::Arc;
use std::time::Duration;

use micro::registry::memory::MemoryRegistry;
use micro::{Client, ClientOptions};
use micro_testing::TestServer;
use micro_testing::greeter::greeter_server::GreeterServer;
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
                ..Default::default()
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
    // The first attempt after the crash finds it dead; then it is out of the
    // rotation until a probe connects to it again (never, here).
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
            ..Default::default()
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
        ..Default::default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_gets_no_calls_until_it_accepts_connections_again() {
    let registry = Arc::new(MemoryRegistry::new());
    let mut servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 2);
    let options = ClientOptions {
        // Round robin, so the revived node's share below is exact.
        selector: micro::selector::Strategy::RoundRobin,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..ClientOptions::default()
    };
    let client = Client::new(registry.clone(), options);
    assert_eq!(client.nodes(SERVICE).await.len(), 2);
    let channel = client.service(SERVICE);
    let set = channel.node_set().clone();
    let mut greeter = GreeterClient::new(channel);

    // Crash one: its registration stays, its port refuses connections.
    let victim = servers.remove(1);
    let (id, address) = (victim.node_id.clone(), victim.address);
    victim.kill();
    let before = attempts_to(&set, &id);
    // Several probe periods long: the node must stay out all along.
    let until = Instant::now() + Duration::from_millis(1000);
    let mut calls = 0;
    while Instant::now() < until && calls < 10_000 {
        greeter
            .hello(Request {
                name: format!("{calls}"),
                ..Default::default()
            })
            .await
            .expect("a refused connection is retried on the live node");
        calls += 1;
    }
    let after = attempts_to(&set, &id) - before;
    eprintln!("{calls} calls over 1 s after the crash: {after} attempt(s) reached the dead node");
    assert_eq!(
        after, 1,
        "only the first call after the crash finds it dead"
    );
    assert!(node_down(&set, &id), "the dead node is out of the rotation");

    // The same address serves again (no new registration): a probe finds
    // it and it gets its share of the calls.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("the crashed node's port is free again");
    let revived = micro_testing::TestGreeter::new("revived");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(revived.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while node_down(&set, &id) {
        assert!(Instant::now() < until, "no probe reached the revived node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..10 {
        greeter
            .hello(Request {
                name: format!("{i}"),
                ..Default::default()
            })
            .await
            .expect("call answers");
    }
    assert_eq!(revived.hits(), 5, "round robin includes the revived node");
    server.abort();
    for server in servers {
        server.stop();
    }
}

fn node_down(set: &micro::client::NodeSet, node_id: &str) -> bool {
    set.stats()
        .iter()
        .find(|s| s.node.id == node_id)
        .is_some_and(|s| s.backing_off)
}
