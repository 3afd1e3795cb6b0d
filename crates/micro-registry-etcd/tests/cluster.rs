//! A 3-member cluster: kill -9 the leader while clients call; nothing fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use micro_registry::{Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_registry_etcd::testing::EtcdCluster;
use tokio::time::{Instant, timeout};

fn service(id: &str, port: u16) -> Service {
    Service::new("clustered", "latest").with_node(Node::new(id, format!("127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_fails_no_call() {
    let mut etcd = EtcdCluster::start(3)
        .await
        .expect("start a 3-member cluster");
    let writer = etcd.registry().await;
    let reader = Arc::new(etcd.registry().await);
    let ttl = RegisterOptions::with_ttl(Duration::from_secs(10));
    let first = service("clustered-1", 4001);
    writer.register(&first, ttl).await.expect("register");

    // A client looking the service up all along.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let lookups = {
        let (reader, stop, ok, slowest) =
            (reader.clone(), stop.clone(), ok.clone(), slowest.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match reader.get_service("clustered").await {
                    Ok(found) if !found[0].nodes.is_empty() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
                let took = started.elapsed().as_millis() as u64;
                slowest.fetch_max(took, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failures
        })
    };

    let leader = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(leader) = etcd.leader().await {
                break leader;
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let pid = etcd.pid(leader).expect("leader runs");
    eprintln!("killing leader etcd{:02} (pid {pid})", leader + 1);
    let killed = Instant::now();
    etcd.kill(leader);

    // Heartbeats and a new registration go through the other members.
    let second = service("clustered-2", 4002);
    writer
        .register(&second, ttl)
        .await
        .expect("register during failover");
    let mut heartbeats = 0;
    while killed.elapsed() < Duration::from_secs(3) {
        writer
            .register(&first, ttl)
            .await
            .expect("heartbeat during failover");
        heartbeats += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_leader = etcd.leader().await;
    eprintln!("new leader: {new_leader:?}");
    assert!(new_leader.is_some_and(|l| l != leader));

    // A new watch works on the surviving members.
    let mut watcher = reader
        .watch(WatchOptions::service("clustered"))
        .await
        .expect("watch after failover");
    let third = service("clustered-3", 4003);
    writer
        .register(&third, ttl)
        .await
        .expect("register after failover");
    let event = timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("ok");
    assert_eq!(event.service.nodes[0].id, "clustered-3");

    stop.store(true, Ordering::Relaxed);
    let failures = lookups.await.expect("lookup task");
    let found = reader.get_service("clustered").await.expect("get");
    let mut ids: Vec<&str> = found[0].nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["clustered-1", "clustered-2", "clustered-3"]);
    eprintln!(
        "leader killed: {} lookups ok, {} failed, slowest {} ms; {heartbeats} heartbeats ok",
        ok.load(Ordering::Relaxed),
        failures.len(),
        slowest.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "failed lookups: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) > 10);
}
