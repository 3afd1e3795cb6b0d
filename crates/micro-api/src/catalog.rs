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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use micro_registry::{Action, SharedRegistry, WatchOptions};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long a failed lookup is remembered.
const MISS_TTL: Duration = Duration::from_secs(2);
/// At most this many remembered misses.
const MAX_MISSES: usize = 1024;
/// Registry lookups of unknown names in flight at once.
const MAX_LOOKUPS: usize = 8;
/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole list is fetched again this often, to heal missed events.
const REFRESH: Duration = Duration::from_secs(60);

/// Names of the registered services.
#[derive(Debug)]
pub struct Catalog {
    registry: SharedRegistry,
    names: RwLock<HashSet<String>>,
    ready: watch::Sender<bool>,
    misses: Mutex<HashMap<String, Instant>>,
    lookups: Semaphore,
    task: OnceLock<AbortHandle>,
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
            registry,
            names: RwLock::new(HashSet::new()),
            ready: watch::channel(false).0,
            misses: Mutex::new(HashMap::new()),
            lookups: Semaphore::new(MAX_LOOKUPS),
            task: OnceLock::new(),
        });
        let task = tokio::spawn(follow(Arc::downgrade(&catalog)));
        let _ = catalog.task.set(task.abort_handle());
        catalog
    }

    /// The registered service names known now, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().iter().cloned().collect();
        names.sort();
        names
    }

    /// Whether `name` is registered, waiting at most `budget` (for the first
    /// listing, or a lookup of a name not seen yet).
    pub async fn contains(&self, name: &str, budget: Duration) -> bool {
        let deadline = Instant::now() + budget;
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout_at(deadline, ready.wait_for(|r| *r)).await;
        if self.read().contains(name) {
            return true;
        }
        {
            let misses = self.misses.lock().await;
            if misses.get(name).is_some_and(|at| at.elapsed() < MISS_TTL) {
                return false;
            }
        }
        let Ok(_permit) = self.lookups.try_acquire() else {
            return false;
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
        } else {
            let mut misses = self.misses.lock().await;
            if misses.len() >= MAX_MISSES {
                misses.retain(|_, at| at.elapsed() < MISS_TTL);
            }
            if misses.len() < MAX_MISSES {
                misses.insert(name.to_string(), Instant::now());
            }
        }
        found
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<String>> {
        self.names.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.names.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Watch, list, follow; list again on any watch failure and every `REFRESH`.
async fn follow(catalog: Weak<Catalog>) {
    const RETRY_MIN: Duration = Duration::from_millis(100);
    const RETRY_MAX: Duration = Duration::from_secs(10);
    let mut retry = RETRY_MIN;
    loop {
        let Some(strong) = catalog.upgrade() else {
            return;
        };
        let registry = strong.registry.clone();
        drop(strong);

        let watcher = registry.watch(WatchOptions::default()).await;
        let listing = registry.list_services().await;
        {
            let Some(strong) = catalog.upgrade() else {
                return;
            };
            match listing {
                Ok(services) => {
                    let names = services.into_iter().map(|s| s.name).collect();
                    *strong.write() = names;
                }
                Err(e) => tracing::warn!(
                    "Registry [{}] list services failed: {e}; keeping the services known",
                    registry.name()
                ),
            }
            strong.ready.send_replace(true);
        }

        if let Ok(mut watcher) = watcher {
            let refresh = tokio::time::sleep(REFRESH);
            tokio::pin!(refresh);
            loop {
                let event = tokio::select! {
                    event = watcher.next() => event,
                    () = &mut refresh => break,
                };
                let Some(strong) = catalog.upgrade() else {
                    return;
                };
                match event {
                    Some(Ok(event)) => match event.action {
                        Action::Create | Action::Update => {
                            strong.write().insert(event.service.name);
                        }
                        Action::Delete => {
                            // Other nodes may remain: ask.
                            let name = event.service.name;
                            let remains = matches!(
                                tokio::time::timeout(LOOKUP_TIMEOUT, registry.get_service(&name)).await,
                                Ok(Ok(services)) if services.iter().any(|s| !s.nodes.is_empty())
                            );
                            if !remains {
                                strong.write().remove(&name);
                            }
                        }
                    },
                    Some(Err(e)) => {
                        tracing::debug!("registry watch interrupted, listing again: {e}");
                        break;
                    }
                    None => break,
                }
                retry = RETRY_MIN;
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}
