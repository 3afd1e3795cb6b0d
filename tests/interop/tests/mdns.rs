//! The Go peer on mDNS, in a private network namespace (nothing leaves the
//! machine): the same exchange as on etcd, the Go greeter announced by an
//! mDNS registry in this process as go-micro announces its nodes.

use std::time::Duration;

use interop_tests::{Registry, scenario};
use micro_registry::{RegisterOptions, Registry as _, Service};
use micro_registry_mdns::testing::enter_private_netns;
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};

struct Mdns {
    runtime: tokio::runtime::Runtime,
    registry: MdnsRegistry,
}

impl Registry for Mdns {
    fn flags(&self) -> Vec<String> {
        // mDNS is the default registry.
        Vec::new()
    }

    fn register(&self, service: &Service) {
        self.runtime
            .block_on(
                self.registry
                    .register(service, RegisterOptions::with_ttl(Duration::from_secs(60))),
            )
            .expect("announce the Go greeter");
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
        "mdns"
    }
}

#[test]
fn go_peer_on_mdns() {
    // The Go peer first: without Go the test fails naming the packages.
    interop_tests::go_peer();
    // This thread, the runtime's worker it starts and every process it
    // starts live in a namespace with only loopback.
    enter_private_netns().expect("a private network namespace (needs root or CAP_SYS_ADMIN)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = {
        let _guard = runtime.enter();
        MdnsRegistry::new(MdnsOptions::default()).expect("mDNS registry")
    };
    let mdns = Mdns { runtime, registry };
    scenario(&mdns);
}
