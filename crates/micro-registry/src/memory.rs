//! An in-process registry.
//!
//! Every clone of a [`MemoryRegistry`] shares one table, so a server and a
//! client in the same process (or a test) find each other. TTLs are honoured
//! on the tokio clock: with paused time, expiry is deterministic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::{
    Action, Error, Event, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher, validate,
};

/// Buffered events per watcher before it is told it lagged.
const WATCH_BUFFER: usize = 1024;

/// An in-process registry. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Mutex<Table>,
    events: broadcast::Sender<Event>,
    /// Wakes the expiry task when a deadline may have moved earlier.
    rescheduled: Notify,
}

#[derive(Debug, Default)]
struct Table {
    /// name → version → entry.
    services: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The expiry task, while some node has a TTL. It may die with the
    /// runtime that spawned it; a later registration then starts another.
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Entry {
    /// Name, version, metadata and endpoints; `nodes` is kept empty.
    service: Service,
    nodes: BTreeMap<String, (Node, Option<Instant>)>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        MemoryRegistry {
            inner: Arc::new(Inner {
                table: Mutex::new(Table::default()),
                events,
                rescheduled: Notify::new(),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.inner.table)
    }

    fn ensure_sweeper(&self, table: &mut Table) {
        if table
            .sweeper
            .as_ref()
            .is_some_and(|task| !task.is_finished())
        {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            table.sweeper = Some(tokio::spawn(sweep(Arc::downgrade(&self.inner))));
        }
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic while holding the lock cannot leave the table half-updated in a
    // way that matters more than losing the registry; keep serving.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    fn name(&self) -> &str {
        "memory"
    }

    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        validate(service)?;
        let expires = options.ttl.map(|ttl| Instant::now() + ttl);
        let mut events = Vec::new();
        {
            let mut table = self.table();
            let versions = table.services.entry(service.name.clone()).or_default();
            let entry = versions
                .entry(service.version.clone())
                .or_insert_with(|| Entry {
                    service: Service {
                        nodes: Vec::new(),
                        ..service.clone()
                    },
                    nodes: BTreeMap::new(),
                });
            entry.service.metadata = service.metadata.clone();
            entry.service.endpoints = service.endpoints.clone();
            for node in &service.nodes {
                let previous = entry.nodes.insert(node.id.clone(), (node.clone(), expires));
                let action = match previous {
                    None => Action::Create,
                    Some(_) => Action::Update,
                };
                events.push(Event {
                    action,
                    service: service.for_node(node),
                });
            }
            if expires.is_some() {
                self.ensure_sweeper(&mut table);
            }
        }
        if expires.is_some() {
            self.inner.rescheduled.notify_one();
        }
        for event in events {
            // No receiver is not an error: nobody watches.
            let _ = self.inner.events.send(event);
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        let mut events = Vec::new();
        {
            let mut table = self.table();
            if let Some(versions) = table.services.get_mut(&service.name) {
                if let Some(entry) = versions.get_mut(&service.version) {
                    for node in &service.nodes {
                        if let Some((removed, _)) = entry.nodes.remove(&node.id) {
                            events.push(Event {
                                action: Action::Delete,
                                service: entry.service.for_node(&removed),
                            });
                        }
                    }
                    if entry.nodes.is_empty() {
                        versions.remove(&service.version);
                    }
                }
                if versions.is_empty() {
                    table.services.remove(&service.name);
                }
            }
        }
        for event in events {
            let _ = self.inner.events.send(event);
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let now = Instant::now();
        let table = self.table();
        let services: Vec<Service> = table
            .services
            .get(name)
            .into_iter()
            .flat_map(|versions| versions.values())
            .filter_map(|entry| {
                let nodes: Vec<Node> = entry
                    .nodes
                    .values()
                    .filter(|(_, expires)| expires.is_none_or(|at| at > now))
                    .map(|(node, _)| node.clone())
                    .collect();
                (!nodes.is_empty()).then(|| Service {
                    nodes,
                    ..entry.service.clone()
                })
            })
            .collect();
        if services.is_empty() {
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(services)
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        let table = self.table();
        Ok(table
            .services
            .values()
            .flat_map(|versions| versions.values())
            .map(|entry| entry.service.clone())
            .collect())
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        let receiver = self.inner.events.subscribe();
        let filter = options.service;
        let stream = BroadcastStream::new(receiver).filter_map(move |item| match item {
            Ok(event) => match &filter {
                Some(name) if *name != event.service.name => None,
                _ => Some(Ok(event)),
            },
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Error::Lagged(missed))),
        });
        Ok(Watcher::new(stream))
    }
}

/// Removes nodes whose TTL lapsed, announcing each as a delete event. Runs
/// while some node has a TTL; `ensure_sweeper` starts it again when needed.
async fn sweep(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut table = lock(&inner.table);
            for versions in table.services.values_mut() {
                for entry in versions.values_mut() {
                    entry.nodes.retain(|_, (node, expires)| match expires {
                        Some(at) if *at <= now => {
                            expired.push(entry.service.for_node(node));
                            false
                        }
                        Some(at) => {
                            next = Some(next.map_or(*at, |n| n.min(*at)));
                            true
                        }
                        None => true,
                    });
                }
                versions.retain(|_, entry| !entry.nodes.is_empty());
            }
            table.services.retain(|_, versions| !versions.is_empty());
            if next.is_none() {
                // Decided under the lock, so a concurrent TTL registration
                // either is seen above or starts a new sweeper.
                table.sweeper = None;
            }
        }
        for service in expired {
            tracing::debug!(service = %service.name, "Registry [memory] TTL expired");
            let _ = inner.events.send(Event {
                action: Action::Delete,
                service,
            });
        }
        let Some(next) = next else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = inner.rescheduled.notified() => {}
        }
    }
}
