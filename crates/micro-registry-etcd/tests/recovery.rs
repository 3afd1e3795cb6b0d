//! Outages: etcd unreachable, restarted on empty data, a key deleted by
//! hand, a watch whose etcd goes away; registrations reach a watcher.
//!
//! Bounds here only tell "recovered" (or "delivered") from "never": how fast
//! is measured by `micro-bench --only r14` (p50/p99 of register → watch and
//! of etcd back → registered again).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use micro_registry::{Action, Error, Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_registry_etcd::testing::EtcdCluster;
use micro_registry_etcd::{EtcdOptions, EtcdRegistry, node_key};
use tokio::time::{Instant, timeout};

fn service(name: &str, id: &str, port: u16) -> Service {
    Service::new(name, "latest").with_node(Node::new(id, format!("127.0.0.1:{port}")))
}

async fn key_lease(etcd: &EtcdCluster, key: &str) -> Option<i64> {
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("raw client");
    let response = client.get(key, None).await.expect("raw get");
    response.kvs().first().map(|kv| kv.lease())
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_fails_register_fast_with_a_clear_message() {
    let port = dead_port();
    let options = EtcdOptions::from_addresses(&format!("http://127.0.0.1:{port}"))
        .expect("address")
        .with_request_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let registry = EtcdRegistry::connect(options)
        .await
        .expect("connect does not need etcd");
    assert!(started.elapsed() < Duration::from_millis(500));

    let service = service("unreachable", "unreachable-1", 4242);
    let started = Instant::now();
    let error = registry
        .register(&service, RegisterOptions::with_ttl(Duration::from_secs(10)))
        .await
        .expect_err("no etcd");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "register took {took:?}");
    let message = error.to_string();
    eprintln!("register error after {took:?}: {message}");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(
        message.contains(&format!("http://127.0.0.1:{port}")),
        "{message}"
    );
    assert!(message.contains("unreachable-1"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains("%!"), "{message}");

    // Lookups fail as unavailable, not as "not found".
    let lookup = registry.get_service("unreachable").await;
    assert!(
        matches!(lookup, Err(Error::Unavailable { .. })),
        "{lookup:?}"
    );
    assert!(registry.watch(WatchOptions::default()).await.is_err());
}

/// etcd stopped, then started again on an empty data dir (the same ports):
/// the lease is gone, and the next register (the server's heartbeat) grants
/// a new one and puts the entry back. Meanwhile register fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_is_granted_again_after_etcd_restarts_empty() {
    let mut etcd = EtcdCluster::single().await.expect("start etcd");
    let options = etcd.options().with_request_timeout(Duration::from_secs(2));
    let registry = EtcdRegistry::connect(options).await.expect("connect");
    let reader = etcd.registry().await;
    let service = service("restarted", "restarted-1", 4242);
    let ttl = RegisterOptions::with_ttl(Duration::from_secs(30));
    registry.register(&service, ttl).await.expect("register");
    let key = node_key("restarted", "restarted-1");
    let first_lease = key_lease(&etcd, &key).await.expect("registered");

    etcd.kill(0);
    let error = registry
        .register(&service, ttl)
        .await
        .expect_err("etcd is down");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");

    etcd.restart(0, true).await.expect("restart on empty data");
    let answering = Instant::now();
    assert!(
        reader.get_service("restarted").await.is_err(),
        "etcd came back empty"
    );
    // The heartbeat: at most a few attempts (each bounded by the 2 s
    // request timeout) while the client reconnects; never recovering fails.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match registry.register(&service, ttl).await {
            Ok(()) => break,
            Err(e) if attempts < 5 => eprintln!("heartbeat {attempts}: {e}"),
            Err(e) => panic!("not re-registered after {attempts} heartbeats: {e}"),
        }
    }
    eprintln!(
        "etcd answering -> re-registered: {:?} ({attempts} heartbeat(s))",
        answering.elapsed()
    );
    let lease = key_lease(&etcd, &key).await.expect("registered again");
    assert_ne!(lease, 0);
    assert_ne!(lease, first_lease, "a new lease");
    let got = reader
        .get_service("restarted")
        .await
        .expect("visible again");
    assert_eq!(got[0].nodes, service.nodes);
}

/// A key deleted by hand (etcdctl del) while its lease lives is back after
/// the next register, on the same lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_deleted_by_hand_is_put_back() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let registry = etcd.registry().await;
    let service = service("deleted", "deleted-1", 4242);
    let ttl = RegisterOptions::with_ttl(Duration::from_secs(30));
    registry.register(&service, ttl).await.expect("register");
    let key = node_key("deleted", "deleted-1");
    let lease = key_lease(&etcd, &key).await.expect("registered");

    // An unchanged heartbeat writes nothing (no watch event).
    let mut watcher = registry
        .watch(WatchOptions::service("deleted"))
        .await
        .expect("watch");
    registry.register(&service, ttl).await.expect("heartbeat");

    let output = etcd.etcdctl(&["del", &key]).expect("etcdctl del");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
    let deleted = timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("event")
        .expect("open")
        .expect("ok");
    assert_eq!(
        deleted.action,
        Action::Delete,
        "heartbeat wrote nothing: {deleted:?}"
    );
    assert!(registry.get_service("deleted").await.is_err());

    registry.register(&service, ttl).await.expect("heartbeat");
    assert_eq!(key_lease(&etcd, &key).await, Some(lease), "same lease");
    let created = timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("event")
        .expect("open")
        .expect("ok");
    assert_eq!(created.action, Action::Create);
    assert!(registry.get_service("deleted").await.is_ok());
}

/// A watch whose etcd dies ends with an error instead of stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_a_dead_etcd() {
    let mut etcd = EtcdCluster::single().await.expect("start etcd");
    let registry = etcd.registry().await;
    let mut watcher = registry
        .watch(WatchOptions::default())
        .await
        .expect("watch");
    etcd.kill(0);
    let ended = timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("the watcher notices within 10 s");
    match ended {
        None | Some(Err(_)) => {}
        Some(Ok(event)) => panic!("unexpected event {event:?}"),
    }
}

/// Register → visible in another client's watch, node by node: each
/// registration is delivered, as itself, within 5 s (far beyond the
/// milliseconds it takes; its p99 is `micro-bench --only r14`'s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reaches_a_watcher() {
    const TRIALS: usize = 20;
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let writer = etcd.registry().await;
    let reader = etcd.registry().await;
    let mut watcher = reader
        .watch(WatchOptions::service("latency"))
        .await
        .expect("watch");
    let ttl = RegisterOptions::with_ttl(Duration::from_secs(30));
    for i in 0..TRIALS {
        let service = service("latency", &format!("latency-{i}"), 5000 + i as u16);
        writer.register(&service, ttl).await.expect("register");
        let event = timeout(Duration::from_secs(5), watcher.next())
            .await
            .unwrap_or_else(|_| panic!("trial {i}: no event within 5 s"))
            .expect("open")
            .expect("ok");
        assert_eq!(event.action, Action::Create, "{event:?}");
        assert_eq!(event.service.nodes[0].id, service.nodes[0].id);
    }
}
