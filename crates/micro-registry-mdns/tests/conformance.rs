//! The registry conformance suite on mDNS: writer and reader are two
//! registries (two responders sharing port 5353) in a private network
//! namespace of the test's own thread, so every case has a network to itself.

use std::sync::Arc;
use std::time::Duration;

use micro_registry_conformance::{Options, Setup, registry_conformance_tests};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry, testing};

async fn setup() -> Setup {
    testing::enter_private_netns().expect("private network namespace");
    let writer = MdnsRegistry::new(MdnsOptions::default()).expect("writer");
    let reader = MdnsRegistry::new(MdnsOptions::default()).expect("reader");
    Setup::new(Arc::new(writer), Arc::new(reader))
}

fn options() -> Options {
    Options {
        // Passive discovery waits for the first announcement (~0.75 s after
        // three probes); a cold lookup waits one 1 s window. Room for a
        // loaded 2-core machine on top.
        propagation: Duration::from_secs(5),
        // Registrations with a TTL say goodbye when not renewed.
        ttl: Duration::from_secs(1),
    }
}

registry_conformance_tests!(setup(), options());
