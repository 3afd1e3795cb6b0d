//! The node pool: service name → live node set.
//!
//! A [`NodeSet`] applies the updates of a registry
//! [`Resolution`](micro_registry::Resolution) (list, then follow the watch,
//! reconnect with backoff, keep missing nodes for a grace period after an
//! outage) to a list of [`NodeEntry`]s: the stale set keeps serving calls
//! while the registry is away, as go-micro's cache did. It knows nodes and
//! their health; which node a call takes is the balance stage's business,
//! how often a call may retry the retry stage's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use micro_registry::{Node, ResolveOptions, Service, SharedRegistry, Update};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::endpoint::{NodeEntry, NodeState, NodeStats, endpoint_for};
use crate::error::ClientError;
use crate::options::ClientOptions;

/// How many nodes of a service are in each [`NodeState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStates {
    pub up: usize,
    pub down: usize,
    pub ejected: usize,
}

/// What an attempt on a node showed of the node's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// The node answered (any answer but `Unavailable`).
    Answered,
    /// The connection to the node failed: it is down until a probe reaches
    /// it.
    Refused,
    /// The node failed the attempt (timeout, `Unavailable`, a refused
    /// certificate): reachable, but an outlier if it goes on.
    Failed,
}

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

/// The live nodes of one service, as one client sees them, with what the
/// client has learnt about each (health, load).
#[derive(Debug)]
pub struct NodeSet {
    name: String,
    registry: SharedRegistry,
    /// The node settings: dialling, TLS, probes, ejection.
    options: Arc<ClientOptions>,
    nodes: ArcSwap<Vec<Arc<NodeEntry>>>,
    /// The service's endpoints the registry marks `"stream": "true"`, by
    /// the tail of their gRPC path (see [`NodeSet::is_stream`]).
    streams: ArcSwap<HashSet<Box<str>>>,
    /// Whether `streams` has any: most services have none, and their calls
    /// then skip the look-up.
    has_streams: AtomicBool,
    resolution: watch::Sender<Resolution>,
    /// Whether `resolution` left `Pending` (it never goes back): read on
    /// every call, without the watch's lock.
    answered: AtomicBool,
    task: OnceLock<AbortHandle>,
    /// How many nodes the pool holds, for callers waiting for the first.
    count: watch::Sender<usize>,
    /// The registry lookup of an empty pool in flight, shared by the calls
    /// that wait on it (see [`NodeSet::catch_up`]).
    lookup: Mutex<Option<Lookup>>,
}

/// How long a call with no node waits for the registry's answer to "is the
/// service registered?" (see [`NodeSet::catch_up`]).
const LOOKUP_BUDGET: Duration = Duration::from_secs(1);

/// Whether the registry lists a usable node of the service.
type Lookup = Shared<BoxFuture<'static, bool>>;

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
            name,
            registry,
            options,
            nodes: ArcSwap::from_pointee(Vec::new()),
            streams: ArcSwap::from_pointee(HashSet::new()),
            has_streams: AtomicBool::new(false),
            resolution: watch::channel(Resolution::Pending).0,
            answered: AtomicBool::new(false),
            task: OnceLock::new(),
            count: watch::channel(0).0,
            lookup: Mutex::new(None),
        });
        let resolution = micro_registry::Resolution::service(
            set.registry.clone(),
            &set.name,
            ResolveOptions::default(),
        );
        let task = tokio::spawn(follow(Arc::downgrade(&set), resolution));
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

    /// How many nodes are known now.
    pub fn len(&self) -> usize {
        self.nodes.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the gRPC `path` (`/package.Handler/Method`) calls an
    /// endpoint the registry marks `"stream": "true"` (as go-micro's servers
    /// and ours register every server-, client- and bidi-streaming method),
    /// so that a generated client's stream is a [`Streaming`](crate::Streaming)
    /// call without the caller marking it. No allocation; for a service
    /// without stream endpoints, one atomic load.
    pub fn is_stream(&self, path: &str) -> bool {
        if !self.has_streams.load(Ordering::Relaxed) {
            return false;
        }
        stream_key(path).is_some_and(|key| self.streams.load().contains(key))
    }

    /// Per-node counters, health and load, as this client sees them.
    pub fn stats(&self) -> Vec<NodeStats> {
        self.nodes.load().iter().map(|e| e.stats()).collect()
    }

    /// How many nodes are up, down and ejected now.
    pub fn states(&self) -> NodeStates {
        let mut states = NodeStates::default();
        for entry in self.nodes.load().iter() {
            match entry.state() {
                NodeState::Up => states.up += 1,
                NodeState::Down => states.down += 1,
                NodeState::Ejected => states.ejected += 1,
            }
        }
        states
    }

    pub(crate) fn entries(&self) -> Arc<Vec<Arc<NodeEntry>>> {
        self.nodes.load_full()
    }

    /// Credits `entry` with what an attempt on it showed.
    pub fn credit(&self, entry: &NodeEntry, health: Health) {
        match health {
            Health::Answered => entry.mark_answered(),
            Health::Refused => entry.mark_refused(&self.options),
            Health::Failed => {
                if entry.mark_failed(&self.options) {
                    self.try_eject(entry);
                }
            }
        }
    }

    /// The error of a call that finds no node to try.
    pub fn no_node(&self) -> ClientError {
        ClientError::NoNode {
            service: self.name.clone(),
            registry: self.registry.name().to_string(),
            registry_error: match self.resolution() {
                Resolution::Failed(reason) => Some(reason),
                _ => None,
            },
        }
    }

    /// For an empty pool whose registry answered before: asks the registry
    /// once whether it lists the service now, and if it does, waits for the
    /// watch to deliver a node; all within `wait`, and the lookup within
    /// [`LOOKUP_BUDGET`] (a registry that is down delays a call that finds
    /// no node by a second at most). A service registered a moment ago is
    /// then called instead of answered `NoNode` (go-micro's cache looks the
    /// registry up whenever it holds no node).
    ///
    /// The lookup only decides whether to wait: the pool is written by the
    /// watch alone, so a lookup answered after the watch removed a node
    /// cannot bring it back. Calls waiting at once share one lookup.
    pub(crate) async fn catch_up(&self, wait: Duration) {
        if self.is_pending() || !self.is_empty() {
            return;
        }
        // A registry that could not be asked at all will not answer now.
        if let Resolution::Failed(_) = self.resolution() {
            return;
        }
        let deadline = Instant::now() + wait;
        // A registry that is down must not hold up calls that would fail
        // anyway: the lookup gets a second at most.
        let asked = (Instant::now() + LOOKUP_BUDGET).min(deadline);
        let listed = tokio::time::timeout_at(asked, self.lookup()).await;
        if listed != Ok(true) {
            return;
        }
        let mut count = self.count.subscribe();
        let waited = tokio::time::timeout_at(deadline, count.wait_for(|n| *n > 0)).await;
        if waited.is_err() {
            tracing::debug!(service = %self.name, ?wait, "the registry lists the service, but its watch brought no node in time");
        }
    }

    /// The registry lookup in flight, or a new one.
    fn lookup(&self) -> Lookup {
        let mut slot = self.lookup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lookup) = slot.as_ref()
            && lookup.peek().is_none()
        {
            return lookup.clone();
        }
        let registry = self.registry.clone();
        let name = self.name.clone();
        let options = self.options.clone();
        let lookup = async move {
            registry.get_service(&name).await.is_ok_and(|services| {
                services
                    .iter()
                    .flat_map(|s| &s.nodes)
                    .any(|n| endpoint_for(&n.address, &options).is_ok())
            })
        }
        .boxed()
        .shared();
        *slot = Some(lookup.clone());
        lookup
    }

    /// Ejects `entry` unless that would leave less than half the set in.
    fn try_eject(&self, entry: &NodeEntry) -> bool {
        let entries = self.nodes.load();
        let out = entries
            .iter()
            .filter(|e| e.state() == NodeState::Ejected)
            .count();
        if (out + 1) * 2 > entries.len() {
            tracing::debug!(service = %self.name, node = %entry.node.id, "node fails calls in a row, but ejecting it would leave less than half the nodes");
            return false;
        }
        entry.eject();
        true
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
        !self.answered.load(Ordering::Acquire)
    }

    /// Takes in the stream endpoints of `services`: they replace what was
    /// known on a reset, and add to it otherwise (a version whose nodes are
    /// gone may leave its endpoints until the next reset: a method is
    /// either a stream in every version or a mistake).
    fn learn_streams<'a>(&self, services: impl IntoIterator<Item = &'a Service>, reset: bool) {
        let mut keys: HashSet<Box<str>> = services
            .into_iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.metadata.get("stream").is_some_and(|v| v == "true"))
            .filter_map(|e| {
                let (handler, method) = e.name.rsplit_once('.')?;
                Some(format!("{handler}/{method}").into_boxed_str())
            })
            .collect();
        let current = self.streams.load();
        if !reset {
            if keys.iter().all(|k| current.contains(k)) {
                return;
            }
            keys.extend(current.iter().cloned());
        } else if keys == **current {
            return;
        }
        let any = !keys.is_empty();
        self.streams.store(Arc::new(keys));
        self.has_streams.store(any, Ordering::Relaxed);
    }

    fn apply(&self, update: Update) {
        match &update {
            Update::Reset(services) => self.learn_streams(services, true),
            Update::Add(service) => self.learn_streams([service], false),
            Update::Remove(_) | Update::Unavailable(_) => {}
        }
        let current = self.nodes.load();
        let reset = matches!(update, Update::Reset(_));
        let mut next: Vec<Arc<NodeEntry>> = match &update {
            Update::Reset(_) => Vec::new(),
            _ => current.iter().cloned().collect(),
        };
        match update {
            Update::Reset(services) => {
                for node in services.iter().flat_map(|s| &s.nodes) {
                    if next.iter().any(|e| e.node.id == node.id) {
                        continue;
                    }
                    if let Some(entry) = self.reuse_or_create(&current, node) {
                        next.push(entry);
                    }
                }
            }
            Update::Add(Service { nodes, .. }) => {
                for node in &nodes {
                    let Some(entry) = self.reuse_or_create(&current, node) else {
                        continue;
                    };
                    match next.iter_mut().find(|e| e.node.id == node.id) {
                        Some(slot) => *slot = entry,
                        None => next.push(entry),
                    }
                }
            }
            Update::Remove(Service { nodes, .. }) => {
                next.retain(|e| !nodes.iter().any(|n| n.id == e.node.id));
            }
            Update::Unavailable(e) => {
                // Keep serving the nodes we knew.
                if self.resolution() != Resolution::Resolved {
                    // Before the watch: whoever it wakes sees the flag.
                    self.answered.store(true, Ordering::Release);
                    self.resolution
                        .send_replace(Resolution::Failed(e.to_string()));
                }
                return;
            }
        }
        next.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        let count = next.len();
        self.nodes.store(Arc::new(next));
        self.count
            .send_if_modified(|n| std::mem::replace(n, count) != count);
        // Only now: whoever waits for the first answer sees its nodes.
        if reset {
            // Before the watch: whoever it wakes sees the flag.
            self.answered.store(true, Ordering::Release);
            self.resolution.send_replace(Resolution::Resolved);
        }
    }

    /// The entry for `node`: the existing one (keeping its connection and
    /// what was learnt about it) when the address is unchanged, else a new
    /// one; `None` for an unusable address.
    fn reuse_or_create(&self, current: &[Arc<NodeEntry>], node: &Node) -> Option<Arc<NodeEntry>> {
        if let Some(existing) = current
            .iter()
            .find(|e| e.node.id == node.id && e.node.address == node.address)
        {
            if existing.node == *node {
                return Some(existing.clone());
            }
            return Some(Arc::new(existing.with_node(node.clone(), &self.options)));
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

/// The part of a gRPC path `/package.Handler/Method` that names its
/// go-micro endpoint `Handler.Method`: `Handler/Method`, a slice of the path.
fn stream_key(path: &str) -> Option<&str> {
    let path = path.strip_prefix('/')?;
    let (service, _method) = path.rsplit_once('/')?;
    let handler = service.rfind('.').map_or(0, |dot| dot + 1);
    Some(&path[handler..])
}

/// Applies the resolution's updates until the node set is dropped.
async fn follow(set: Weak<NodeSet>, mut resolution: micro_registry::Resolution) {
    loop {
        let update = resolution.next().await;
        let Some(strong) = set.upgrade() else { return };
        strong.apply(update);
    }
}

#[cfg(test)]
mod tests {
    use super::stream_key;

    #[test]
    fn a_grpc_path_names_its_go_micro_endpoint() {
        assert_eq!(
            stream_key("/go.micro.srv.greeter.Greeter/Stream"),
            Some("Greeter/Stream")
        );
        assert_eq!(stream_key("/Greeter/Stream"), Some("Greeter/Stream"));
        assert_eq!(stream_key("/Greeter"), None);
        assert_eq!(stream_key("Greeter/Stream"), None);
        assert_eq!(stream_key("/"), None);
    }
}
