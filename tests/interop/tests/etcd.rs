//! The Go peer on etcd: go-micro-style JSON calls to user-srv (with an
//! Authorization header as metadata), and `micro call` and the rpc handler
//! reaching a Go greeter that serves no reflection, registered as go-micro
//! registers.

use std::time::Duration;

use interop_tests::{Registry, scenario};
use micro_registry::{RegisterOptions, Registry as _, Service};
use micro_registry_etcd::EtcdRegistry;
use micro_registry_etcd::testing::EtcdCluster;

struct Etcd {
    runtime: tokio::runtime::Runtime,
    registry: EtcdRegistry,
    address: String,
}

impl Registry for Etcd {
    fn flags(&self) -> Vec<String> {
        vec![
            "--registry=etcd".into(),
            format!("--registry_address={}", self.address),
        ]
    }

    fn register(&self, service: &Service) {
        self.runtime
            .block_on(
                self.registry
                    .register(service, RegisterOptions::with_ttl(Duration::from_secs(60))),
            )
            .expect("register the Go greeter in etcd");
    }

    fn address_of(&self, service: &str) -> Option<String> {
        let found = self
            .runtime
            .block_on(self.registry.get_service(service))
            .ok()?;
        found
            .into_iter()
            .flat_map(|s| s.nodes)
            .next()
            .map(|n| n.address)
    }

    fn name(&self) -> &'static str {
        "etcd"
    }
}

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
    let etcd = Etcd {
        address: cluster.addresses(),
        registry,
        runtime,
    };
    scenario(&etcd);
    drop(etcd);
    drop(cluster);
}
