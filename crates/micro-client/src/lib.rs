//! Call a service by name.
//!
//! The pipeline, per call: service name → [`NodeSet`](resolve) (a cached node
//! list kept live by a registry watch, so no registry round trip per call) →
//! [`Selector`](micro_selector::Selector) (round robin by default) → a tonic
//! `Channel` per node → the response, or a retry on another node.
//!
//! [`Client::service`] returns a [`ServiceChannel`]: a `tower::Service` like
//! tonic's `Channel`, so tonic-generated clients work on top of it unchanged:
//!
//! ```no_run
//! # mod greeter { pub mod greeter_client { pub type GreeterClient<T> = T; } }
//! use micro_client::{Client, ClientOptions};
//! use micro_registry::memory::MemoryRegistry;
//! use std::sync::Arc;
//!
//! # async fn demo() {
//! let client = Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default());
//! let channel = client.service("go.micro.srv.greeter");
//! // let mut greeter = GreeterClient::new(channel);
//! // greeter.hello(Request { name: "huohuo".into() }).await?;
//! # let _ = channel;
//! # }
//! ```
//!
//! # Timeouts and retries
//! Every call has a deadline (`request_timeout`, 5 s by default, or the
//! caller's own `grpc-timeout`), sent to the server as `grpc-timeout` and
//! enforced here across all attempts. A call is retried, up to `retries` times
//! and always on a node not tried yet in this call, when it cannot have been
//! processed: the connection was refused or failed before the request was sent,
//! or the server answered `Unavailable`. Calls marked [`Idempotent`] are also
//! retried after failures where the server may have started work
//! (connection reset mid-call, `Internal`, `Unknown`, `DeadlineExceeded` of one
//! attempt, `ResourceExhausted`, `Aborted`).
//!
//! A node whose connection fails (refused, reset) leaves the rotation until a
//! probe connects to it again (a TCP connect after 1 s, doubling up to 30 s
//! while it refuses) or the registry drops it: while another node is up, no
//! call is sent to a crashed node after the first that found it dead. After a registry outage, nodes missing
//! from the fresh listing stay usable for 10 s, the time services take to
//! register again.
//! When no node is known the call fails at once with `Unavailable`, naming the
//! service and the registry.

mod body;
mod channel;
mod resolve;
mod timeout;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_registry::{Node, SharedRegistry};
use micro_selector::Strategy;

pub use channel::{Idempotent, ServiceChannel};
pub use resolve::{NodeSet, NodeStats};

/// Node sets kept before empty, unused ones are forgotten.
const MAX_SERVICES: usize = 1024;

/// A type-erased error, as returned by [`ServiceChannel`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Client behaviour; see the crate docs for what each knob means.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of a whole call, retries included, unless the caller sets one.
    pub request_timeout: Duration,
    /// Extra attempts after the first, each on a different node.
    pub retries: u32,
    /// How to choose a node.
    pub selector: Strategy,
    /// TCP connect timeout per node.
    pub dial_timeout: Duration,
    /// First probe period of a node that refused a connection.
    pub backoff_min: Duration,
    /// Longest probe period.
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retries: 1,
            selector: Strategy::RoundRobin,
            dial_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Finds services in a registry and calls them. Cheap to clone: clones share
/// the node sets (one registry watch per service, however many callers).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    registry: SharedRegistry,
    options: Arc<ClientOptions>,
    services: Mutex<HashMap<String, Arc<NodeSet>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("registry", &self.inner.registry.name())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(registry: SharedRegistry, options: ClientOptions) -> Self {
        Client {
            inner: Arc::new(ClientInner {
                registry,
                options: Arc::new(options),
                services: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// A channel to `service`, for tonic-generated clients. The first call
    /// starts watching the service; later ones reuse the live node set.
    ///
    /// Must be called inside a tokio runtime.
    pub fn service(&self, service: &str) -> ServiceChannel {
        ServiceChannel::new(self.node_set(service), self.inner.options.clone())
    }

    /// The nodes of `service` this client currently knows, waiting for the
    /// first registry answer if the service was never asked for.
    pub async fn nodes(&self, service: &str) -> Vec<Node> {
        let set = self.node_set(service);
        set.ready().await;
        set.nodes()
    }

    /// How many services this client keeps a node set for.
    pub fn known_services(&self) -> usize {
        self.inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    fn node_set(&self, service: &str) -> Arc<NodeSet> {
        let mut services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Names that never resolved to a node (typos, probes) must not pile
        // up: past a bound, forget the empty sets nobody holds.
        if services.len() >= MAX_SERVICES && !services.contains_key(service) {
            services.retain(|_, set| Arc::strong_count(set) > 1 || !set.nodes().is_empty());
        }
        services
            .entry(service.to_string())
            .or_insert_with(|| {
                NodeSet::spawn(
                    service.to_string(),
                    self.inner.registry.clone(),
                    self.inner.options.clone(),
                )
            })
            .clone()
    }
}
