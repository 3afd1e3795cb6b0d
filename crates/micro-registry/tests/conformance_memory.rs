//! The registry conformance suite on the memory registry.

use std::sync::Arc;
use std::time::Duration;

use micro_registry::memory::MemoryRegistry;
use micro_registry_conformance::{Options, Setup, registry_conformance_tests};

async fn setup() -> Setup {
    let registry = Arc::new(MemoryRegistry::new());
    Setup::new(registry.clone(), registry)
}

fn options() -> Options {
    Options {
        propagation: Duration::from_secs(1),
        ttl: Duration::from_millis(200),
    }
}

registry_conformance_tests!(setup(), options());
