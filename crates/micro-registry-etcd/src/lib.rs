//! etcd registry backend for micro, wire-compatible with go-micro v2.
//!
//! [`EtcdRegistry`] stores each node of a service under
//! `/micro/registry/<service>/<node id>` as the JSON go-micro v2 writes, on a
//! lease of the registration TTL: a go-micro service and a micro service on
//! the same etcd cluster find each other. Unlike go-micro it also
//! - accepts `http://` and `https://` addresses (see [`parse_addresses`]),
//! - puts a key back that was deleted while its lease lives, and registers
//!   again with a new lease after etcd lost it (restart on empty data, wipe,
//!   long partition),
//! - skips and counts bad entries instead of handing them to clients,
//! - bounds every request by a timeout and retries across endpoints, so one
//!   member of a cluster being down does not fail anything,
//! - reports failures as one line naming the endpoints and the cause.
//!
//! ```no_run
//! # async fn run() -> Result<(), micro_registry::Error> {
//! use micro_registry::Registry;
//! use micro_registry_etcd::{EtcdOptions, EtcdRegistry};
//!
//! let registry =
//!     EtcdRegistry::connect(EtcdOptions::from_addresses("http://127.0.0.1:2379")?).await?;
//! let greeters = registry.get_service("go.micro.srv.greeter").await?;
//! # Ok(())
//! # }
//! ```
//!
//! Features: `tls` (default) enables TLS to etcd; `testing` adds the
//! `testing` module, a harness that runs real etcd processes for tests.

mod entry;
mod options;
mod reachability;
mod registry;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

pub use entry::{PREFIX, node_key, service_prefix};
pub use options::{
    DEFAULT_ADDRESS, DEFAULT_MAX_VALUE_BYTES, DEFAULT_PORT, EtcdOptions, EtcdTls, parse_addresses,
};
pub use registry::{DEREGISTER_WHEN_UNREACHABLE, EtcdRegistry};
