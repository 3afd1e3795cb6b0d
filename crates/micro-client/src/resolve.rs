//! Resolution: service name → live node set.
//!
//! A [`NodeSet`] lists the service once, then follows a registry watch. When
//! the watch fails or ends (registry restart, compaction, lag) it lists again:
//! the stale set keeps serving calls meanwhile, as go-micro's cache did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use micro_registry::{Action, Event, Node, Service, SharedRegistry, WatchOptions};
use micro_selector::Selector;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::ClientOptions;

/// Where the first lookup of a service stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// No registry answer yet.
    Pending,
    /// The registry answered (possibly: no such service).
    Resolved,
    /// The registry could not be asked; the message says why.
    Failed(String),
}

/// One node and the connection to it.
#[derive(Debug)]
pub(crate) struct NodeEntry {
    pub(crate) node: Node,
    pub(crate) channel: Channel,
    /// Set when a re-listing after a registry outage no longer showed the
    /// node: it stays usable until then, unless the registry confirms it.
    stale_until: Option<Instant>,
    /// Shared by the copies of an entry (same node, same connection).
    health: Arc<Mutex<Health>>,
    attempts: AtomicU64,
    failures: AtomicU64,
}

/// What one client has seen of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStats {
    pub node: Node,
    /// Calls (attempts) sent to the node.
    pub attempts: u64,
    /// Attempts that failed at the connection level.
    pub failures: u64,
    /// Whether the node is out of the rotation now (it refused a connection
    /// and no probe has reached it since).
    pub backing_off: bool,
}

#[derive(Debug, Default)]
struct Health {
    /// Outages in a row (reset when a call is answered): sets the probe period.
    refusals: u32,
    /// Out of the rotation until a connection probe succeeds.
    down: bool,
    /// A probe task is running for this node.
    probing: bool,
}

impl NodeEntry {
    fn new(node: Node, options: &ClientOptions) -> Result<NodeEntry, String> {
        let channel = channel_for(&node.address, options)?;
        Ok(NodeEntry {
            node,
            channel,
            stale_until: None,
            health: Arc::default(),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        lock(&self.health)
    }

    /// Whether the node is out of the rotation, waiting for a probe to
    /// connect to it again.
    pub(crate) fn is_down(&self) -> bool {
        self.health().down
    }

    /// The same node and connection, with new metadata or staleness.
    fn copy(&self, node: Node, stale_until: Option<Instant>) -> NodeEntry {
        NodeEntry {
            node,
            channel: self.channel.clone(),
            stale_until,
            health: self.health.clone(),
            attempts: AtomicU64::new(self.attempts.load(Ordering::Relaxed)),
            failures: AtomicU64::new(self.failures.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn count_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> NodeStats {
        NodeStats {
            node: self.node.clone(),
            attempts: self.attempts.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            backing_off: self.is_down(),
        }
    }

    /// The connection to the node failed: out of the rotation until a probe
    /// (a plain TCP connect, first after `backoff_min`, then doubling per
    /// failed probe and per outage in a row, up to `backoff_max`) reaches it
    /// again. No call is sent to a node that is down while another node is
    /// up, so a crashed node costs each client one failed attempt.
    pub(crate) fn mark_refused(&self, options: &ClientOptions) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health();
        // Calls in flight when the node failed all fail together: one
        // outage, one probe (not one per call).
        if health.down {
            return;
        }
        let exponent = health.refusals.min(16);
        health.refusals = health.refusals.saturating_add(1);
        health.down = true;
        let period = options
            .backoff_min
            .saturating_mul(1u32 << exponent)
            .min(options.backoff_max);
        tracing::debug!(node = %self.node.id, address = %self.node.address, ?period, "node refused a connection; out of the rotation until it accepts one");
        if !health.probing {
            health.probing = true;
            tokio::spawn(probe(
                Arc::downgrade(&self.health),
                self.node.address.clone(),
                period,
                options.backoff_max,
                options.dial_timeout,
            ));
        }
    }

    /// The node answered: back in the rotation.
    pub(crate) fn mark_answered(&self) {
        let mut health = self.health();
        if health.refusals != 0 || health.down {
            health.refusals = 0;
            health.down = false;
        }
    }
}

fn lock(health: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    health
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tries to connect to a node that is down, every `period` (doubling up to
/// `max`), until it accepts a connection (it is back in the rotation), a
/// call answered meanwhile, or the node left the set (no entry holds its
/// health any more).
async fn probe(
    health: Weak<Mutex<Health>>,
    address: String,
    mut period: Duration,
    max: Duration,
    dial_timeout: Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = health.upgrade() else {
            return;
        };
        if !lock(&shared).down {
            lock(&shared).probing = false;
            return;
        }
        drop(shared);
        let reachable = matches!(
            tokio::time::timeout(
                dial_timeout,
                tokio::net::TcpStream::connect(address.as_str())
            )
            .await,
            Ok(Ok(_))
        );
        let Some(shared) = health.upgrade() else {
            return;
        };
        let mut state = lock(&shared);
        if reachable || !state.down {
            tracing::debug!(%address, "node accepts connections again; back in the rotation");
            state.down = false;
            state.probing = false;
            return;
        }
        period = period.saturating_mul(2).min(max);
    }
}

/// Checks a registered address and makes a lazily connecting channel for it.
/// Only addresses of registered nodes are ever dialled.
fn channel_for(address: &str, options: &ClientOptions) -> Result<Channel, String> {
    let uri: http::Uri = format!("http://{address}")
        .parse()
        .map_err(|e| format!("bad node address {address:?}: {e}"))?;
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    let port_ok = uri.port_u16().is_some_and(|p| p != 0);
    if !host_ok || !port_ok || uri.path() != "/" {
        return Err(format!(
            "bad node address {address:?}: expected host:port with a non-zero port"
        ));
    }
    let endpoint = Endpoint::from(uri)
        .connect_timeout(options.dial_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect_lazy())
}

/// The live nodes of one service, as one client sees them.
#[derive(Debug)]
pub struct NodeSet {
    name: String,
    registry: SharedRegistry,
    options: Arc<ClientOptions>,
    pub(crate) selector: Selector,
    nodes: ArcSwap<Vec<Arc<NodeEntry>>>,
    resolution: watch::Sender<Resolution>,
    task: OnceLock<AbortHandle>,
}

impl Drop for NodeSet {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl NodeSet {
    pub(crate) fn spawn(
        name: String,
        registry: SharedRegistry,
        options: Arc<ClientOptions>,
    ) -> Arc<NodeSet> {
        let set = Arc::new(NodeSet {
            selector: Selector::new(options.selector),
            name,
            registry,
            options,
            nodes: ArcSwap::from_pointee(Vec::new()),
            resolution: watch::channel(Resolution::Pending).0,
            task: OnceLock::new(),
        });
        let task = tokio::spawn(follow(Arc::downgrade(&set)));
        let _ = set.task.set(task.abort_handle());
        set
    }

    pub fn service(&self) -> &str {
        &self.name
    }

    pub fn registry_name(&self) -> &str {
        self.registry.name()
    }

    /// The nodes known now.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.load().iter().map(|e| e.node.clone()).collect()
    }

    /// Per-node counters and backoff state, as this client sees them.
    pub fn stats(&self) -> Vec<NodeStats> {
        self.nodes.load().iter().map(|e| e.stats()).collect()
    }

    pub(crate) fn entries(&self) -> Arc<Vec<Arc<NodeEntry>>> {
        self.nodes.load_full()
    }

    /// Waits until the registry answered once (or failed to).
    pub(crate) async fn ready(&self) -> Resolution {
        let mut rx = self.resolution.subscribe();
        let result = rx
            .wait_for(|r| *r != Resolution::Pending)
            .await
            .map(|r| r.clone());
        result.unwrap_or_else(|_| Resolution::Failed("resolver stopped".into()))
    }

    /// The current resolution, without waiting.
    pub(crate) fn resolution(&self) -> Resolution {
        self.resolution.borrow().clone()
    }

    /// Whether the registry has not answered yet (no clone of the state).
    pub(crate) fn is_pending(&self) -> bool {
        *self.resolution.borrow() == Resolution::Pending
    }

    /// Replaces the node list with a fresh listing. With `grace`, nodes the
    /// listing lacks are kept (marked stale) for that long: after a registry
    /// outage, an empty or partial listing may only mean that services have
    /// not registered again yet, and they do within about a second.
    fn reset(&self, services: &[Service], grace: Option<Duration>) {
        let current = self.nodes.load();
        let now = Instant::now();
        let mut next: Vec<Arc<NodeEntry>> = Vec::new();
        for node in services.iter().flat_map(|s| &s.nodes) {
            if next.iter().any(|e| e.node.id == node.id) {
                continue;
            }
            if let Some(entry) = self.reuse_or_create(&current, node) {
                next.push(entry);
            }
        }
        if let Some(grace) = grace {
            for entry in current.iter() {
                if next.iter().any(|e| e.node.id == entry.node.id) {
                    continue;
                }
                match entry.stale_until {
                    Some(until) if until <= now => {}
                    Some(_) => next.push(entry.clone()),
                    None => next.push(Arc::new(entry.copy(entry.node.clone(), Some(now + grace)))),
                }
            }
        }
        next.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        self.nodes.store(Arc::new(next));
    }

    /// When the earliest stale node lapses, if any.
    fn next_stale_deadline(&self) -> Option<Instant> {
        self.nodes.load().iter().filter_map(|e| e.stale_until).min()
    }

    /// Drops stale nodes whose grace period is over.
    fn prune_stale(&self) {
        let now = Instant::now();
        let current = self.nodes.load();
        if !current
            .iter()
            .any(|e| e.stale_until.is_some_and(|t| t <= now))
        {
            return;
        }
        let next: Vec<Arc<NodeEntry>> = current
            .iter()
            .filter(|e| e.stale_until.is_none_or(|t| t > now))
            .cloned()
            .collect();
        self.nodes.store(Arc::new(next));
    }

    fn apply(&self, event: &Event) {
        let current = self.nodes.load();
        let mut next: Vec<Arc<NodeEntry>> = current.iter().cloned().collect();
        match event.action {
            Action::Create | Action::Update => {
                for node in &event.service.nodes {
                    let Some(entry) = self.reuse_or_create(&current, node) else {
                        continue;
                    };
                    match next.iter_mut().find(|e| e.node.id == node.id) {
                        Some(slot) => *slot = entry,
                        None => next.push(entry),
                    }
                }
            }
            Action::Delete => {
                next.retain(|e| !event.service.nodes.iter().any(|n| n.id == e.node.id));
            }
        }
        next.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        self.nodes.store(Arc::new(next));
    }

    /// The entry for `node`: the existing one (keeping its connection) when the
    /// address is unchanged, else a new one; `None` for an unusable address.
    fn reuse_or_create(&self, current: &[Arc<NodeEntry>], node: &Node) -> Option<Arc<NodeEntry>> {
        if let Some(existing) = current
            .iter()
            .find(|e| e.node.id == node.id && e.node.address == node.address)
        {
            if existing.node == *node && existing.stale_until.is_none() {
                return Some(existing.clone());
            }
            return Some(Arc::new(existing.copy(node.clone(), None)));
        }
        match NodeEntry::new(node.clone(), &self.options) {
            Ok(entry) => Some(Arc::new(entry)),
            Err(reason) => {
                tracing::warn!(service = %self.name, node = %node.id, "ignoring node: {reason}");
                None
            }
        }
    }
}

/// Lists, then follows the watch; on any watch failure, lists again after a
/// backoff. Stops when the node set is dropped.
async fn follow(set: Weak<NodeSet>) {
    const RETRY_MIN: Duration = Duration::from_millis(100);
    const RETRY_MAX: Duration = Duration::from_secs(10);
    /// How long nodes missing from a re-listing stay usable.
    const RELIST_GRACE: Duration = Duration::from_secs(10);
    let mut retry = RETRY_MIN;
    let mut first = true;
    loop {
        let Some(strong) = set.upgrade() else { return };
        let registry = strong.registry.clone();
        let name = strong.name.clone();
        drop(strong);

        // Watch before listing, so nothing between the two is missed.
        let watcher = registry.watch(WatchOptions::service(&name)).await;
        let listing = registry.get_service(&name).await;
        {
            let Some(strong) = set.upgrade() else { return };
            match listing {
                Ok(services) => {
                    strong.reset(&services, (!first).then_some(RELIST_GRACE));
                    strong.resolution.send_replace(Resolution::Resolved);
                }
                Err(e) if e.is_not_found() => {
                    strong.reset(&[], (!first).then_some(RELIST_GRACE));
                    strong.resolution.send_replace(Resolution::Resolved);
                }
                Err(e) => {
                    // Keep serving the nodes we knew.
                    tracing::warn!(service = %name, "registry lookup failed, using cached nodes: {e}");
                    if strong.resolution() != Resolution::Resolved {
                        strong
                            .resolution
                            .send_replace(Resolution::Failed(e.to_string()));
                    }
                }
            }
        }

        match watcher {
            Ok(mut watcher) => {
                let started = Instant::now();
                loop {
                    let stale_deadline = set.upgrade().and_then(|s| s.next_stale_deadline());
                    let next = match stale_deadline {
                        Some(deadline) => tokio::select! {
                            next = watcher.next() => Some(next),
                            () = tokio::time::sleep_until(deadline) => None,
                        },
                        None => Some(watcher.next().await),
                    };
                    let Some(strong) = set.upgrade() else { return };
                    let Some(next) = next else {
                        strong.prune_stale();
                        continue;
                    };
                    match next {
                        Some(Ok(event)) => strong.apply(&event),
                        Some(Err(e)) => {
                            tracing::debug!(service = %name, "registry watch interrupted, listing again: {e}");
                            break;
                        }
                        None => {
                            tracing::debug!(service = %name, "registry watch ended, listing again");
                            break;
                        }
                    }
                }
                if started.elapsed() > RETRY_MAX {
                    retry = RETRY_MIN;
                }
            }
            Err(e) => {
                tracing::warn!(service = %name, "registry watch failed: {e}");
            }
        }
        first = false;
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}
