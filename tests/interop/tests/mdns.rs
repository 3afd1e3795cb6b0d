//! The Go peer on mDNS, in a private network namespace (nothing leaves the
//! machine): the same exchange as on etcd, the Go greeter announced by an
//! mDNS registry in this process as go-micro announces its nodes.

use interop_tests::{Live, scenario};
use micro_registry_mdns::testing::enter_private_netns;
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};

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
    let mdns = Live {
        // mDNS is the default registry.
        flags: Vec::new(),
        registry,
        runtime,
        name: "mdns",
    };
    scenario(&mdns);
}
