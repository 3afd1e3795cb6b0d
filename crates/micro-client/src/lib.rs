//! Call a service by name.
//!
//! The pipeline, per call: service name → [`NodeSet`] (the node pool: a
//! cached node list kept live by a registry watch, so no registry round trip
//! per call) → a stack of tower services, each in its own module with one
//! job and its own `Layer`, generic over the service below it:
//! [`observe`] (telemetry) → [`deadline`] (which calls are streams, and
//! each call's deadline) → [`retry`] (policy, budget,
//! hedging) → [`balance`] ([`micro_selector::Selector`], p2c by
//! default) → [`attempt`] (attempt timeout, node health and load) → a tonic
//! `Channel` per node. What a call carries from stage to stage travels in
//! the request's extensions ([`call`]); what an attempt tells the stages
//! above it is an [`outcome`]. No stage imports another, so a stage can be
//! tested, moved or replaced alone. See [`ServiceChannel`] for the stack.
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
//! // greeter.hello(Request { name: "huohuo".into(), ..Default::default() }).await?;
//! # let _ = channel;
//! # }
//! ```
//!
//! # Timeouts, retries, balancing
//! Every call has a deadline (`request_timeout`, 5 s by default, or the
//! caller's own `grpc-timeout`), enforced here across all attempts, and each
//! attempt has its own, shorter one (`attempt_timeout`, 2 s): a node that
//! accepts a call and never answers costs one attempt, not the call.
//!
//! A failed attempt is retried, up to `retries` times and always on a node
//! not tried yet in this call, when it cannot have been processed (the
//! connection was refused, or the server answered `Unavailable`). Calls marked
//! [`Idempotent`] are also retried after failures where the server may have
//! started work (connection lost mid-call, the attempt timeout, `Internal`,
//! `Unknown`, `DeadlineExceeded`, `ResourceExhausted`, `Aborted`); other calls
//! fail at once with a [`ClientError`] saying why. Retries are bounded by a
//! budget per service: 20 % of calls plus 10 per second. Idempotent calls
//! can also be hedged (`hedge_after`, off by default): a slow first attempt
//! gets a second one on another node, and the first answer wins.
//!
//! Streams (server-, client- or bidi-streaming calls) are [`Streaming`]
//! calls: no attempt timeout and no deadline but the caller's
//! `grpc-timeout` or `stream_timeout` (off by default, as go-micro's). A
//! call is one when its endpoint is registered with `"stream": "true"` (as
//! go-micro's servers and ours register every streaming method), so a
//! tonic-generated client's streams are, unmarked; a caller can also mark
//! one itself (the extension in the request), for a service that registers
//! no endpoints. A stream
//! stays on its node, is counted in that node's load while open, goes to
//! another node only when the first cannot be reached, and is never run
//! twice.
//!
//! Nodes are chosen by the [`Selector`]: `p2c` by
//! default (the less loaded of two random nodes, load = peak-EWMA latency ×
//! calls in flight, so a slow or stuck node gets few calls), or `roundrobin`
//! and `random`.
//!
//! A node whose connection fails (refused, reset) leaves the rotation until a
//! probe connects to it again (a TCP connect after 1 s, doubling up to 30 s
//! while it refuses) or the registry drops it: while another node is up, no
//! call is sent to a crashed node after the first that found it dead. A node
//! that fails 5 attempts in a row (timeouts, `Unavailable`) is ejected for
//! 10 s, twice as long each time up to 5 min, never more than half the set.
//! After a registry outage, nodes missing from the fresh listing stay usable
//! for 10 s, the time services take to register again.
//! When no node is known, the registry is asked once whether it lists the
//! service now (a node registered a moment ago that the watch has not
//! brought yet); if it does, the call waits for the watch, within
//! `request_timeout`. Otherwise the call fails at once with `Unavailable`,
//! naming the service and the registry. The lookup never writes the node
//! set (only the watch does), so it cannot bring back a node the watch
//! removed.
//!
//! # TLS
//! With [`ClientOptions::tls`] set ([`ClientTls`]: `--client_tls_ca`, and a
//! certificate and key for mutual TLS), every node is dialled over TLS and
//! its certificate checked against the node's registered address (or
//! `--client_tls_server_name`); without it, a node registered `secure=true`
//! is refused at once, naming the flag. TLS failures are
//! [`NodeFailure::Tls`], with rustls's reason. The CA and certificate are
//! read again on SIGHUP; connections made after that use the new ones. See
//! [`tls`].

pub mod attempt;
pub mod balance;
mod body;
pub mod call;
mod channel;
mod connection;
pub mod deadline;
mod endpoint;
mod error;
mod load;
pub mod observe;
pub mod observer;
mod options;
pub mod outcome;
mod pick;
mod pool;
pub mod retry;
mod timeout;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

pub use call::{Idempotent, Streaming};
pub use channel::{ServiceChannel, ServiceLayers};
pub use endpoint::{NodeEndpoint, NodeEntry, NodeState, NodeStats, endpoint_for};
pub use error::{ClientError, NodeFailure, error_chain, find_rustls};
use micro_registry::{Node, SharedRegistry};
use micro_selector::Selector;
pub use micro_selector::Strategy;
pub use observer::{AttemptResult, CallEnd, CallObserver};
pub use options::ClientOptions;
pub use pick::{Pick, PickOutcome, Picker};
pub use pool::{Health, NodeSet, NodeStates};
pub use retry::{Budget, BudgetOptions};
pub use tls::ClientTls;

/// Node sets kept before empty, unused ones are forgotten.
const MAX_SERVICES: usize = 1024;

/// A type-erased error, as returned by [`ServiceChannel`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Finds services in a registry and calls them. Cheap to clone: clones share
/// the node sets (one registry watch per service, however many callers).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    registry: SharedRegistry,
    options: Arc<ClientOptions>,
    observer: Option<Arc<dyn CallObserver>>,
    services: Mutex<HashMap<String, Service>>,
}

/// What every channel to one service shares: its nodes, the selector's
/// state (the round-robin position) and its retry budget; and the channel
/// itself, built once (callers such as the gateway ask for one per request).
#[derive(Clone, Debug)]
struct Service {
    picker: Picker,
    budget: Arc<Budget>,
    layers: ServiceLayers,
    channel: ServiceChannel,
    /// References to the node set held by this entry alone: more means a
    /// caller holds a channel or picker.
    own: usize,
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
        Self::build(registry, options, None)
    }

    /// A client whose calls `observer` sees (metrics, trace context): see
    /// [`CallObserver`].
    pub fn with_observer(
        registry: SharedRegistry,
        options: ClientOptions,
        observer: Arc<dyn CallObserver>,
    ) -> Self {
        Self::build(registry, options, Some(observer))
    }

    fn build(
        registry: SharedRegistry,
        options: ClientOptions,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Self {
        Client {
            inner: Arc::new(ClientInner {
                registry,
                options: Arc::new(options),
                observer,
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
        self.with_service(service, |s| s.channel.clone())
    }

    /// The retry and balance stages of `service`, for another transport's
    /// attempt stage to go under (see [`ServiceLayers`]).
    pub fn layers(&self, service: &str) -> ServiceLayers {
        self.with_service(service, |s| s.layers.clone())
    }

    /// The retry budget of `service`, shared by every channel (and proxy)
    /// that calls it through this client.
    pub fn budget(&self, service: &str) -> Arc<Budget> {
        self.with_service(service, |s| s.budget.clone())
    }

    /// Node counts per state for every service this client follows, sorted
    /// by service (for a `micro_client_nodes{service,state}` gauge).
    pub fn node_states(&self) -> Vec<(String, NodeStates)> {
        let sets: Vec<Arc<NodeSet>> = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|s| s.picker.set.clone())
            .collect();
        let mut states: Vec<(String, NodeStates)> = sets
            .iter()
            .map(|set| (set.service().to_string(), set.states()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// The nodes of `service` and their selector, waiting at most until
    /// `deadline` for the first registry answer: for callers that balance
    /// something other than gRPC over them (the gateway's HTTP proxy), with
    /// [`Picker::pick_node`].
    pub async fn node_set_ready(
        &self,
        service: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Picker> {
        let picker = self.with_service(service, |s| s.picker.clone());
        if picker.set.is_pending() {
            tokio::time::timeout_at(deadline, picker.set.ready())
                .await
                .ok()?;
        }
        picker
            .set
            .catch_up(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        Some(picker)
    }

    /// The nodes of `service` this client currently knows, waiting for the
    /// first registry answer if the service was never asked for.
    pub async fn nodes(&self, service: &str) -> Vec<Node> {
        let set = self.with_service(service, |s| s.picker.set.clone());
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

    /// `f` of `service`'s entry, made on first use. (Only what `f` takes is
    /// cloned, and a known name costs no allocation: the gateway asks on
    /// every request.)
    fn with_service<R>(&self, service: &str, f: impl FnOnce(&Service) -> R) -> R {
        let mut services = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = services.get(service) {
            return f(known);
        }
        // Names that never resolved to a node (typos, probes) must not pile
        // up: past a bound, forget the empty sets nobody holds.
        if services.len() >= MAX_SERVICES {
            services.retain(|_, s| {
                Arc::strong_count(&s.picker.set) > s.own || !s.picker.set.nodes().is_empty()
            });
        }
        let options = &self.inner.options;
        let entry = services.entry(service.to_string()).or_insert_with(|| {
            let picker = Picker {
                set: NodeSet::spawn(
                    service.to_string(),
                    self.inner.registry.clone(),
                    options.clone(),
                ),
                selector: Arc::new(Selector::new(options.selector)),
            };
            let budget = Arc::new(Budget::new(options.retry_budget));
            let layers = ServiceLayers::new(&picker, budget.clone(), options);
            let channel = ServiceChannel::new(&layers, options, self.inner.observer.clone());
            let own = Arc::strong_count(&picker.set);
            Service {
                picker,
                budget,
                layers,
                channel,
                own,
            }
        });
        f(entry)
    }
}

/// Tonic's channels are `Send + Sync + Clone`; handlers keep clients built on
/// a [`ServiceChannel`] in shared state, so it must be too.
#[allow(dead_code)]
fn _assert_channel_is_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<ServiceChannel>();
    check::<Client>();
}
