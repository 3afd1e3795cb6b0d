//! What the registry holds now, kept live by its watch.
//!
//! One task follows a registry [`Resolution`] over every service (list,
//! watch, reconnect, re-list every minute), asks the registry for each name
//! that changed, and publishes an immutable [`Snapshot`] on a
//! [`watch`](tokio::sync::watch) channel. Readers (the JSON API, each SSE
//! stream) only ever see the latest snapshot: a slow reader skips the ones
//! it missed instead of queueing them, so nothing buffers per client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use micro_registry::{Resolution, ResolveOptions, Service, SharedRegistry, Update};
use tokio::sync::watch;

/// Longest wait for one registry lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole list is fetched again this often, to heal missed events.
const REFRESH: Duration = Duration::from_secs(60);
/// At most this many services are shown (the rest are counted).
pub const MAX_SERVICES: usize = 2000;

/// One registered service: its versions (one [`Service`] each, with nodes
/// and endpoints) and a revision that changes whenever they do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub versions: Vec<Service>,
    pub rev: u64,
}

/// The registry as last seen.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Services with at least one node, by name.
    pub services: BTreeMap<String, Entry>,
    /// Changes so far (0: not listed yet).
    pub seq: u64,
    /// Why the registry could not be asked last time, if it could not.
    pub registry_error: Option<String>,
    /// Services left out past [`MAX_SERVICES`].
    pub omitted: usize,
}

/// Follows `registry` until every receiver of the returned channel is
/// gone (or the task is aborted).
pub(crate) fn spawn(
    registry: SharedRegistry,
) -> (watch::Receiver<Arc<Snapshot>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let resolution = Resolution::all(
        registry,
        ResolveOptions {
            grace: None,
            refresh: Some(REFRESH),
            ..ResolveOptions::default()
        },
    );
    let task = tokio::spawn(follow(tx, resolution));
    (rx, task)
}

async fn follow(tx: watch::Sender<Arc<Snapshot>>, mut resolution: Resolution) {
    let mut state = Snapshot::default();
    loop {
        let update = tokio::select! {
            update = resolution.next() => update,
            () = tx.closed() => return,
        };
        let registry = resolution.registry().clone();
        match update {
            Update::Reset(listed) => {
                let mut names: Vec<String> = listed.into_iter().map(|s| s.name).collect();
                names.sort();
                names.dedup();
                state.omitted = names.len().saturating_sub(MAX_SERVICES);
                names.truncate(MAX_SERVICES);
                let stale: Vec<String> = state
                    .services
                    .keys()
                    .filter(|n| names.binary_search(n).is_err())
                    .cloned()
                    .collect();
                for name in stale {
                    state.services.remove(&name);
                }
                for name in &names {
                    refresh(&mut state, registry.as_ref(), name).await;
                }
                state.registry_error = None;
            }
            Update::Add(service) | Update::Remove(service) => {
                if state.services.contains_key(&service.name) || state.services.len() < MAX_SERVICES
                {
                    refresh(&mut state, registry.as_ref(), &service.name).await;
                }
                state.registry_error = None;
            }
            Update::Unavailable(e) => {
                tracing::warn!(
                    "Registry [{}] cannot be followed: {e}; showing the services last seen",
                    registry.name()
                );
                state.registry_error = Some(e.to_string());
            }
        }
        state.seq += 1;
        if tx.send(Arc::new(state.clone())).is_err() {
            return;
        }
    }
}

/// Asks the registry for `name` and puts what it says in `state`.
async fn refresh(state: &mut Snapshot, registry: &dyn micro_registry::Registry, name: &str) {
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, registry.get_service(name)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) if e.is_not_found() => Vec::new(),
        Ok(Err(e)) => {
            tracing::debug!("Registry [{}] get service {name}: {e}", registry.name());
            return;
        }
        Err(_) => {
            tracing::debug!(
                "Registry [{}] get service {name}: timed out",
                registry.name()
            );
            return;
        }
    };
    let mut versions: Vec<Service> = found.into_iter().filter(|s| !s.nodes.is_empty()).collect();
    if versions.is_empty() {
        state.services.remove(name);
        return;
    }
    versions.sort_by(|a, b| a.version.cmp(&b.version));
    for version in &mut versions {
        version.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let rev = state.seq + 1;
    match state.services.get_mut(name) {
        Some(entry) if entry.versions == versions => {}
        Some(entry) => {
            entry.versions = versions;
            entry.rev = rev;
        }
        None => {
            state
                .services
                .insert(name.to_string(), Entry { versions, rev });
        }
    }
}
