//! The registry conformance suite on a real etcd: writer and reader are two
//! separate clients of one etcd member.

use std::sync::Arc;
use std::time::Duration;

use micro_registry_conformance::{Options, Setup};
use micro_registry_etcd::testing::EtcdCluster;

async fn setup() -> Setup {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let writer = Arc::new(etcd.registry().await);
    let reader = Arc::new(etcd.registry().await);
    Setup::new(writer, reader).with_guard(etcd)
}

fn options() -> Options {
    Options {
        propagation: Duration::from_secs(5),
        // etcd's shortest lease with its default election timeout (1 s).
        ttl: Duration::from_secs(2),
    }
}

micro_registry_conformance::registry_conformance_tests!(setup(), options());
