//! etcd outages, end to end with a real etcd: a server stays registered
//! through an etcd restart on empty data, and clients keep calling from their
//! cache meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use micro::registry::Registry;
use micro::{Client, ClientOptions, ServerOptions, SharedRegistry};
use micro_registry_etcd::testing::EtcdCluster;
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use micro_testing::{TestGreeter, TestServer};
use tokio::time::Instant;

const SERVICE: &str = "go.micro.srv.greeter";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregisters_within_2s_of_an_empty_etcd_answering_and_calls_never_fail() {
    let mut etcd = EtcdCluster::single().await.expect("etcd");
    let registry: SharedRegistry = Arc::new(etcd.registry().await);
    let ttl = Duration::from_secs(3);
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("a"),
        ServerOptions {
            address: "127.0.0.1:0".into(),
            register_ttl: ttl,
            register_interval: Duration::from_secs(1),
            ..ServerOptions::default()
        },
    );

    let client = Client::new(registry.clone(), ClientOptions::default());
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    greeter
        .hello(Request {
            name: "warm".into(),
            ..Default::default()
        })
        .await
        .expect("first call");

    // Callers keep calling through the whole outage.
    let running = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (running, calls, failures) = (running.clone(), calls.clone(), failures.clone());
        let mut greeter = greeter.clone();
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                calls.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = greeter
                    .hello(Request {
                        name: "x".into(),
                        ..Default::default()
                    })
                    .await
                {
                    eprintln!("failed call: {e:?}");
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    etcd.kill(0);
    // An outage longer than the TTL: the lease is gone for good.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    etcd.restart(0, true).await.expect("etcd back, empty");
    let answering = Instant::now();

    let observer = etcd.registry().await;
    let mut reregistered = None;
    for _ in 0..200 {
        if observer.get_service(SERVICE).await.is_ok_and(|s| {
            s.iter()
                .any(|s| s.nodes.iter().any(|n| n.id == server.node_id))
        }) {
            reregistered = Some(answering.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reregistered = reregistered.expect("registered again within 5 s");
    running.store(false, Ordering::SeqCst);
    caller.await.expect("caller");
    eprintln!(
        "etcd restarted empty: node registered again {reregistered:?} after etcd answered; \
         {} calls during the outage, {} failed",
        calls.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst)
    );
    assert!(
        reregistered < Duration::from_secs(2),
        "took {reregistered:?}"
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    server.stop();
}
