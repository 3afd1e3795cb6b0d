//! Service registry: the go-micro v2 data model and the [`Registry`] trait every
//! backend implements.
//!
//! A registry maps a service name to the nodes that serve it. Servers
//! [`register`](Registry::register) themselves with a TTL and refresh it; clients
//! [`get_service`](Registry::get_service) once and then follow a
//! [`watch`](Registry::watch) to keep a live node set.
//!
//! Followers of the registry do not write that loop themselves: a
//! [`Resolution`] lists, watches, reconnects with the shared [`Backoff`] and
//! keeps nodes through a registry outage, as a sequence of [`Update`]s.
//! Registered processes do not write theirs either: [`keep::keep_registered`]
//! registers a node, renews it, and registers it again at once when the
//! registry loses it.
//!
//! Backends live in their own modules or crates: [`memory`] here (in-process,
//! for tests and single-process programs); mDNS and etcd in
//! `micro-registry-mdns` and `micro-registry-etcd`. Every backend runs the
//! shared conformance suite in `micro-registry-conformance`.
//!
//! Backends report entries they skip as unusable to [`skipped`], which
//! whoever exports metrics reads; they need no metrics library of their own.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), micro_registry::Error> {
//! use micro_registry::{memory::MemoryRegistry, Node, RegisterOptions, Registry, Service};
//!
//! let registry = MemoryRegistry::new();
//! let service = Service::new("go.micro.srv.greeter", "latest")
//!     .with_node(Node::new("go.micro.srv.greeter-1", "127.0.0.1:4242"));
//! registry.register(&service, RegisterOptions::default()).await?;
//!
//! let found = registry.get_service("go.micro.srv.greeter").await?;
//! assert_eq!(found[0].nodes[0].address, "127.0.0.1:4242");
//! # Ok(())
//! # }
//! ```

mod backoff;
mod error;
pub mod keep;
mod model;
pub mod resolve;
pub mod skipped;
mod watch;

#[cfg(feature = "memory")]
pub mod memory;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use backoff::Backoff;
pub use error::{BoxError, Error};
pub use model::{Endpoint, Metadata, Node, Service, Value, group_by_version};
pub use resolve::{Resolution, ResolveOptions, Update};
pub use watch::{Action, Event, Watcher};

/// Options for [`Registry::register`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How long the entry lives unless registered again. `None`: until deregistered.
    pub ttl: Option<Duration>,
}

impl RegisterOptions {
    pub fn with_ttl(ttl: Duration) -> Self {
        RegisterOptions { ttl: Some(ttl) }
    }
}

/// How much of each entry a listing or a watch must describe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Detail {
    /// Everything: version, metadata, endpoints, nodes with their metadata.
    #[default]
    Full,
    /// Enough to know which nodes exist: the service's name and version, and
    /// each node's id and address. A backend may leave the rest out (and
    /// skip decoding it), or give everything: a consumer asking for `Nodes`
    /// reads nothing else. Followers of every service that only need names
    /// (the gateway's catalog) ask for this, so what they hold and spend per
    /// event does not grow with the size of each service's description.
    Nodes,
}

/// Options for [`Registry::watch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Only events of this service; `None`: every service.
    pub service: Option<String>,
    /// How much each event's service must describe.
    pub detail: Detail,
}

impl WatchOptions {
    pub fn service(name: impl Into<String>) -> Self {
        WatchOptions {
            service: Some(name.into()),
            detail: Detail::Full,
        }
    }

    /// Events described only as much as `detail` asks.
    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = detail;
        self
    }
}

/// A service registry backend.
///
/// Semantics every backend keeps (checked by the conformance suite):
/// - `register` stores each node of `service` as its own entry (with the
///   service's version, metadata and endpoints); registering an existing node
///   again refreshes its TTL and replaces its entry.
/// - `deregister` removes the nodes of `service` that are listed; the service
///   disappears with its last node.
/// - `get_service` returns one [`Service`] per version, with all live nodes, or
///   [`Error::NotFound`].
/// - `watch` yields an [`Event`] per change; the event's service carries the
///   nodes that changed. A watcher that ends or yields an error may have missed
///   events: the consumer lists again.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + fmt::Debug + 'static {
    /// Short backend name used in logs: `memory`, `mdns`, `etcd`.
    fn name(&self) -> &str;

    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error>;

    async fn deregister(&self, service: &Service) -> Result<(), Error>;

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error>;

    async fn list_services(&self) -> Result<Vec<Service>, Error>;

    /// Every service, described as much as `detail` asks; with
    /// [`Detail::Nodes`], with their nodes where the backend knows them
    /// (`list_services` may list names only, as go-micro's mDNS registry
    /// does). The default is [`list_services`](Self::list_services).
    async fn list_services_with(&self, detail: Detail) -> Result<Vec<Service>, Error> {
        let _ = detail;
        self.list_services().await
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error>;

    /// Releases what the registry holds (sockets, sessions), after sending
    /// whatever goodbyes its protocol has. Called once, at process exit; the
    /// default does nothing.
    async fn close(&self) {}
}

/// A registry shared between a server, its clients and background tasks.
pub type SharedRegistry = Arc<dyn Registry>;

/// Checks what every backend requires of a service before storing it.
pub fn validate(service: &Service) -> Result<(), Error> {
    if service.name.trim().is_empty() {
        return Err(Error::Invalid("service name is empty".into()));
    }
    if service.nodes.is_empty() {
        return Err(Error::Invalid(format!(
            "service {} has no nodes to register",
            service.name
        )));
    }
    for node in &service.nodes {
        if node.id.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "service {}: a node has an empty id",
                service.name
            )));
        }
    }
    Ok(())
}
