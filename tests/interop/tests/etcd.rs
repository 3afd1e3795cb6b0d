//! The Go peer on etcd: go-micro-style JSON calls to user-srv (with an
//! Authorization header as metadata), and `micro call` and the rpc handler
//! reaching a Go greeter that serves no reflection, registered as go-micro
//! registers.

use interop_tests::{Live, scenario};
use micro_registry_etcd::testing::EtcdCluster;

#[test]
fn go_peer_on_etcd() {
    // The Go peer first: without Go the test fails naming the packages.
    interop_tests::go_peer();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = runtime
        .block_on(EtcdCluster::single())
        .expect("an etcd member");
    let registry = runtime.block_on(cluster.registry());
    let etcd = Live {
        flags: vec![
            "--registry=etcd".into(),
            format!("--registry_address={}", cluster.addresses()),
        ],
        registry,
        runtime,
        name: "etcd",
    };
    scenario(&etcd);
    drop(etcd);
    drop(cluster);
}
