//! Issue 26, rolling restarts on etcd: `micro api` → user-api → 3 × user-srv,
//! eight callers GETting through the gateway without pause.
//!
//! 1. Each user-srv in turn is replaced as a deploy does it: a new instance
//!    starts, the roll waits for its readiness (`/health/ready` on its admin
//!    listener: registered, store checked), then the old one gets SIGTERM and
//!    must exit 0 (it turns unready, deregisters, then drains). Each new one
//!    has served 20 calls before the next step (callers know it).
//! 2. Two gateways behind a TCP balancer (round robin, a refused connect
//!    skipped, never a retry once a gateway took the connection; curl with no
//!    retries), each replaced the same way (the new one added to the
//!    balancer once ready, and sent 20 connections before the old one stops).
//!
//! No call may fail in either. The figures (calls, failed, p50/p99/max) are
//! printed; timing goals are micro-bench's.

use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::balancer::Balancer;
use topology_tests::rolling::{Fleet, chain_answers, every_instance_reached, roll_user_srvs};
use topology_tests::steady_gets;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_on_etcd_fail_no_call() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let registry = vec![
        "--registry=etcd".to_string(),
        format!("--registry_address={}", cluster.addresses()),
        "--server_address=127.0.0.1:0".to_string(),
    ];
    let data = tempfile::tempdir().expect("tmp");

    tokio::task::spawn_blocking(move || {
        let fleet = Fleet::new(registry, data.path());
        let mut srvs: Vec<_> = (0..3)
            .map(|i| fleet.user_srv(&format!("user-srv-{i}")))
            .collect();
        let api = fleet.user_api();
        let gateways: Vec<_> = (0..2)
            .map(|i| fleet.gateway(&format!("micro api {i}")))
            .collect();
        let balancer = Balancer::start(&gateways.iter().map(|g| g.address).collect::<Vec<_>>());
        for gateway in &gateways {
            gateway.wait_ready();
        }
        let hello = chain_answers(&balancer.base());
        every_instance_reached(&hello, &srvs);

        // 1. user-srv, one at a time.
        let steady = roll_user_srvs(&fleet, &mut srvs, &hello);
        eprintln!("rolling restart of 3 user-srv (etcd): {}", steady.figures());
        assert!(
            steady.failed.is_empty(),
            "failed calls: {:?}",
            steady.failed
        );
        assert!(steady.served >= 8, "only {} calls answered", steady.served);
        // The new instances serve.
        every_instance_reached(&hello, &srvs);

        // 2. The gateways, one at a time, behind the balancer.
        let mut gateways = gateways;
        let steady = steady_gets(&hello, 8, || {
            for (i, old) in gateways.iter_mut().enumerate() {
                let new = fleet.gateway(&format!("micro api {i}'"));
                new.wait_ready();
                balancer.add(new.address);
                topology_tests::eventually(
                    "the new gateway in the rotation",
                    std::time::Duration::from_secs(60),
                    || (balancer.placed(new.address) >= 20).then_some(()),
                );
                old.stop_gracefully();
                balancer.remove(old.address);
                *old = new;
            }
        });
        eprintln!(
            "rolling restart of 2 gateways behind a TCP balancer (etcd): {}",
            steady.figures()
        );
        assert!(
            steady.failed.is_empty(),
            "failed calls: {:?}",
            steady.failed
        );
        assert!(steady.served >= 8, "only {} calls answered", steady.served);
        drop(balancer);
        for mut instance in gateways.into_iter().chain([api]).chain(srvs) {
            instance.stop_gracefully();
        }
    })
    .await
    .expect("test thread");
    drop(cluster);
}
