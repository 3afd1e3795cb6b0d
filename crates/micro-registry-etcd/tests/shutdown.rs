//! Stopping with etcd down: a node registered while etcd was up, whose etcd
//! then went away (stopped by PID), deregisters in at most
//! `DEREGISTER_WHEN_UNREACHABLE` (1 s) instead of the request timeout (5 s),
//! with one clear line, and the server stops as quickly.

use std::sync::Arc;
use std::time::Duration;

use micro_registry::{Error, Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_registry_etcd::DEREGISTER_WHEN_UNREACHABLE;
use micro_registry_etcd::testing::EtcdCluster;
use micro_server::{Server, ServerOptions};
use tokio::time::Instant;

/// Deregistering ends within the bound, plus scheduling slack on a busy
/// machine: 3 s in all, still well short of the 5 s request timeout it
/// replaces, so the two stay told apart.
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_gives_up_quickly_once_etcd_is_known_unreachable() {
    let mut etcd = EtcdCluster::single().await.expect("start etcd");
    let registry = etcd.registry().await;
    assert_eq!(
        registry.options().request_timeout,
        Duration::from_secs(5),
        "the timeout a deregistration used to wait"
    );
    let service =
        Service::new("stopping", "latest").with_node(Node::new("stopping-1", "127.0.0.1:4242"));
    registry
        .register(&service, RegisterOptions::with_ttl(Duration::from_secs(30)))
        .await
        .expect("register");
    let mut watcher = registry
        .watch(WatchOptions::default())
        .await
        .expect("watch");
    assert_eq!(registry.unreachable_for(), None);

    etcd.kill(0);
    // The watch breaking is the signal that etcd is gone.
    let broken = tokio::time::timeout(Duration::from_secs(30), watcher.next())
        .await
        .expect("the watch notices etcd is gone");
    assert!(
        matches!(broken, Some(Err(Error::Unavailable { .. }))),
        "{broken:?}"
    );
    assert!(registry.unreachable_for().is_some());

    let started = Instant::now();
    let error = registry
        .deregister(&service)
        .await
        .expect_err("etcd is gone");
    let took = started.elapsed();
    eprintln!("deregister with etcd down: {took:?}: {error}");
    assert!(took <= DEREGISTER_WHEN_UNREACHABLE + SLACK, "took {took:?}");
    let message = error.to_string();
    assert!(message.contains("etcd unreachable for"), "{message}");
    assert!(
        message.contains("stays listed until its lease"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stops_within_a_second_when_its_etcd_is_gone() {
    let mut etcd = EtcdCluster::single().await.expect("start etcd");
    let registry = Arc::new(etcd.registry().await);
    let options = ServerOptions {
        address: "127.0.0.1:0".into(),
        register_ttl: Duration::from_secs(30),
        register_interval: Duration::from_secs(10),
        ..ServerOptions::default()
    };
    assert_eq!(options.deregister_timeout, Duration::from_secs(5));
    let server = Server::builder("go.micro.srv.stopping")
        .registry(registry.clone())
        .options(options)
        .bind()
        .await
        .expect("bind");
    let mut registered = server.registered();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done, finished) = tokio::sync::oneshot::channel::<Instant>();
    let running = tokio::spawn(async move {
        let result = server
            .run_until(async {
                let _ = stopped.await;
            })
            .await;
        let _ = done.send(Instant::now());
        result
    });
    tokio::time::timeout(Duration::from_secs(30), registered.wait_for(|r| *r))
        .await
        .expect("registered in time")
        .expect("registration state");

    etcd.kill(0);
    // The server's own watch breaks when etcd goes; nothing to wait on but
    // the registry's view of it (bounded poll).
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.unreachable_for().is_none() {
        assert!(Instant::now() < deadline, "etcd never seen unreachable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let signalled = Instant::now();
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the server stops")
        .expect("stop time");
    let took = ended - signalled;
    eprintln!("server stop with etcd down: {took:?}");
    running
        .await
        .expect("server task")
        .expect("a clean stop despite the registry");
    assert!(
        took <= DEREGISTER_WHEN_UNREACHABLE + SLACK,
        "stop took {took:?}"
    );
}
