//! The services the registry knows, kept live by a watch.
//!
//! The gateway asks the catalog before it calls anything, so a path naming
//! a service nobody registered answers 404 at once, and the client never
//! starts following (and keeping) a node set for a made-up name: what the
//! gateway holds is bounded by what is registered, whatever paths arrive.
//!
//! A name the watch has not reported yet gets one registry lookup; misses are
//! remembered briefly (a bounded set) and lookups run a few at a time, so a
//! flood of unknown names costs the registry little.
//!
//! The catalog keeps what routing needs and nothing more: the names, and
//! (in its registry resolution) each node's id and address. It follows the
//! registry with [`Detail::Nodes`], so a backend that can (etcd) skips
//! decoding endpoint descriptions, and a node leaving is settled from the
//! nodes it knows, without asking the registry.
//!
//! One rule on every registry: a name never seen registered is unknown (the
//! gateway answers 404); a name that was registered and has no live node now
//! is gone (503: the service exists and is down). Both come from the same
//! registry [`Resolution`] the clients use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use micro_registry::{Detail, Resolution, ResolveOptions, SharedRegistry, Update};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long a failed lookup is remembered.
const MISS_TTL: Duration = Duration::from_secs(2);
/// At most this many remembered misses.
const MAX_MISSES: usize = 1024;
/// At most this many names of services that were registered and are gone.
const MAX_GONE: usize = 4096;
/// Registry lookups of unknown names in flight at once.
const MAX_LOOKUPS: usize = 8;
/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole list is fetched again this often, to heal missed events.
const REFRESH: Duration = Duration::from_secs(60);

/// What the catalog knows of a service name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Registered, with live nodes.
    Live,
    /// Seen registered since the gateway started, no live node now: a 503
    /// (the service exists and is down), not a 404.
    Gone,
    /// Never seen: a 404.
    Unknown,
}

/// How the catalog's view of the registry stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// No answer from the registry yet.
    Waiting,
    /// The last listing succeeded; the watch follows it.
    Listed,
    /// The registry does not answer (why); the names known stay in use.
    Unreachable(String),
}

/// Names of the registered services.
#[derive(Debug)]
pub struct Catalog {
    registry: SharedRegistry,
    names: RwLock<Names>,
    view: watch::Sender<View>,
    misses: Mutex<HashMap<String, Instant>>,
    lookups: Semaphore,
    task: OnceLock<AbortHandle>,
}

#[derive(Debug, Default)]
struct Names {
    live: HashSet<String>,
    /// Registered once, no node now (bounded).
    gone: HashSet<String>,
}

impl Names {
    fn insert(&mut self, name: String) {
        self.gone.remove(&name);
        self.live.insert(name);
    }

    fn remove(&mut self, name: &str) {
        if self.live.remove(name) && self.gone.len() < MAX_GONE {
            self.gone.insert(name.to_string());
        }
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Catalog {
    /// Lists the registry and follows its watch until dropped.
    /// Must be called inside a tokio runtime.
    pub fn spawn(registry: SharedRegistry) -> Arc<Catalog> {
        let catalog = Arc::new(Catalog {
            registry: registry.clone(),
            names: RwLock::new(Names::default()),
            view: watch::channel(View::Waiting).0,
            misses: Mutex::new(HashMap::new()),
            lookups: Semaphore::new(MAX_LOOKUPS),
            task: OnceLock::new(),
        });
        let resolution = Resolution::all(
            registry,
            ResolveOptions {
                grace: None,
                refresh: Some(REFRESH),
                detail: Detail::Nodes,
                ..ResolveOptions::default()
            },
        );
        let task = tokio::spawn(follow(Arc::downgrade(&catalog), resolution));
        let _ = catalog.task.set(task.abort_handle());
        catalog
    }

    /// Follows how the view of the registry stands (readiness uses it).
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// The registered service names known now, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().live.iter().cloned().collect();
        names.sort();
        names
    }

    /// Whether `name` is registered, waiting at most `budget` (for the first
    /// listing, or a lookup of a name not seen yet).
    pub async fn contains(&self, name: &str, budget: Duration) -> bool {
        self.presence(name, budget).await == Presence::Live
    }

    /// What is known of `name`, waiting at most `budget` (for the first
    /// listing, or a lookup of a name not seen live yet).
    pub async fn presence(&self, name: &str, budget: Duration) -> Presence {
        let deadline = Instant::now() + budget;
        // Once listed, no wait (and no timer) on the per-request path.
        if *self.view.borrow() == View::Waiting {
            let mut view = self.view.subscribe();
            let _ = tokio::time::timeout_at(deadline, view.wait_for(|v| *v != View::Waiting)).await;
        }
        let known = {
            let names = self.read();
            if names.live.contains(name) {
                return Presence::Live;
            }
            if names.gone.contains(name) {
                Presence::Gone
            } else {
                Presence::Unknown
            }
        };
        {
            let misses = self.misses.lock().await;
            if misses.get(name).is_some_and(|at| at.elapsed() < MISS_TTL) {
                return known;
            }
        }
        let Ok(_permit) = self.lookups.try_acquire() else {
            return known;
        };
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(LOOKUP_TIMEOUT);
        let found = matches!(
            tokio::time::timeout(timeout, self.registry.get_service(name)).await,
            Ok(Ok(services)) if services.iter().any(|s| !s.nodes.is_empty())
        );
        if found {
            self.write().insert(name.to_string());
            return Presence::Live;
        }
        let mut misses = self.misses.lock().await;
        if misses.len() >= MAX_MISSES {
            misses.retain(|_, at| at.elapsed() < MISS_TTL);
        }
        if misses.len() < MAX_MISSES {
            misses.insert(name.to_string(), Instant::now());
        }
        known
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.names.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Names> {
        self.names.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies the registry resolution (list, watch, reconnect, re-list every
/// `REFRESH`) to the names until the catalog is dropped.
async fn follow(catalog: Weak<Catalog>, mut resolution: Resolution) {
    // Names the last listing gave without their nodes (mDNS lists names
    // only, as go-micro's does): whether a node leaving was the last one is
    // asked of the registry for these; the others are settled locally.
    let mut nodes_unknown: HashSet<String> = HashSet::new();
    loop {
        let update = resolution.next().await;
        let Some(strong) = catalog.upgrade() else {
            return;
        };
        match update {
            Update::Reset(services) => {
                nodes_unknown.clear();
                let mut listed: HashSet<String> = HashSet::with_capacity(services.len());
                for service in services {
                    if service.nodes.is_empty() {
                        nodes_unknown.insert(service.name.clone());
                    }
                    listed.insert(service.name);
                }
                let mut names = strong.write();
                let vanished: Vec<String> = names
                    .live
                    .iter()
                    .filter(|n| !listed.contains(*n))
                    .cloned()
                    .collect();
                for name in vanished {
                    names.remove(&name);
                }
                for name in listed {
                    names.insert(name);
                }
                drop(names);
                strong.view.send_replace(View::Listed);
            }
            Update::Add(service) => {
                let mut names = strong.write();
                if !names.live.contains(&service.name) {
                    names.insert(service.name);
                }
            }
            Update::Remove(service) => {
                let name = service.name;
                if resolution.has_nodes(&name) {
                    continue;
                }
                if !nodes_unknown.contains(&name) {
                    strong.write().remove(&name);
                    continue;
                }
                // Other nodes may remain that the listing did not name: ask.
                let registry = resolution.registry().clone();
                drop(strong);
                let remains = matches!(
                    tokio::time::timeout(LOOKUP_TIMEOUT, registry.get_service(&name)).await,
                    Ok(Ok(services)) if services.iter().any(|s| !s.nodes.is_empty())
                );
                let Some(strong) = catalog.upgrade() else {
                    return;
                };
                if !remains {
                    strong.write().remove(&name);
                }
            }
            Update::Unavailable(e) => {
                tracing::warn!(
                    "Registry [{}] list services failed: {e}; keeping the services known",
                    resolution.registry().name()
                );
                // Answer from what is known rather than wait for the registry.
                strong.view.send_replace(View::Unreachable(e.to_string()));
            }
        }
    }
}
