//! The frozen-instance scenario of issue 12: `micro api` → user-api → 3 ×
//! user-srv on etcd, eight callers GETting through the gateway, one user-srv
//! frozen (SIGSTOP) for 10 s. It accepts connections and never answers; the
//! client's attempt timeout moves each stuck call to another instance, so no
//! idempotent request fails. Timing is only bounded generously (a slow
//! machine must pass).

use std::time::Duration;

use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::{Topology, curl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_fails_no_idempotent_request() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let address = format!("--registry_address={}", cluster.addresses());
    let data = tempfile::tempdir().expect("tmp");

    let (failed, served, slowest) = tokio::task::spawn_blocking(move || {
        let mut topology = Topology::start_on_etcd(&address, data.path());
        let figures = topology.exercise_frozen();
        topology.stop();
        figures
    })
    .await
    .expect("topology");
    eprintln!(
        "frozen instance: {served} GETs by 8 callers while 1 of 3 user-srv was frozen 10 s: \
         {} failed, slowest {slowest:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(served >= 8, "only {served} requests answered");
    drop(cluster);
}

trait Frozen {
    /// (failed requests, answered requests, slowest answer).
    fn exercise_frozen(&mut self) -> (Vec<String>, usize, Duration);
}

impl Frozen for Topology {
    fn exercise_frozen(&mut self) -> (Vec<String>, usize, Duration) {
        let base = self.base.clone();
        // The chain answers, and the user exists.
        let hello = topology_tests::rolling::chain_answers(&base);
        // Every instance takes calls before the freeze.
        let calls = |t: &Topology| -> Vec<usize> {
            t.srvs
                .iter()
                .map(|s| s.count("User.QueryUserByName"))
                .collect()
        };
        let start = calls(self);
        topology_tests::eventually("every user-srv reached", Duration::from_secs(30), || {
            let _ = curl(&hello, None);
            calls(self)
                .iter()
                .zip(&start)
                .all(|(n, s)| n > s)
                .then_some(())
        });

        let steady = topology_tests::steady_gets(&hello, 8, || {
            topology_tests::freeze_for(&self.srvs[0], Duration::from_secs(10))
        });
        let (failed, served, slowest) = (steady.failed, steady.served, steady.slowest);
        // The gateway's answers never name a node.
        for failure in &failed {
            assert!(!failure.contains("127.0.0.1"), "{failure}");
        }
        (failed, served, slowest)
    }
}
