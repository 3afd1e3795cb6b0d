//! Keeping one node registered: what every registered process shares (a
//! server, a web service, an http broker subscription).
//!
//! [`keep_registered`] registers the node, renews it every interval, and
//! watches its own service: if the registry loses the node (a lapsed or
//! revoked lease, an etcd restarted on empty data, a key deleted by hand) or
//! the watch breaks, it registers again at once instead of waiting for the
//! next interval. A failed registration is retried quickly (0.5 s, then
//! every second) and logged once per outage, so a registry that is down
//! when the process starts, or comes back, has the node within a second of
//! answering; the process keeps serving meanwhile.
//!
//! ```no_run
//! # async fn demo(registry: micro_registry::SharedRegistry, service: micro_registry::Service) {
//! use std::time::Duration;
//! use micro_registry::keep::{Keep, KeepStatus, keep_registered};
//!
//! let status = KeepStatus::new();
//! let mut registered = status.registered.subscribe();
//! let keep = Keep::new(Duration::from_secs(90), Duration::from_secs(30), "the server keeps serving and retries");
//! tokio::spawn(keep_registered(registry, service, keep, status));
//! let _ = registered.wait_for(|r| *r).await;
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::{
    Backoff, RegisterOptions, Resolution, ResolveOptions, Service, SharedRegistry, Update,
};

/// A failed registration is tried again after 0.5 s, then every second.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How a node is kept registered.
#[derive(Clone, Debug)]
pub struct Keep {
    /// The registration's lifetime unless renewed.
    pub ttl: Duration,
    /// How often it is renewed.
    pub interval: Duration,
    /// What the process does while it is not registered, for the log line
    /// of a failed registration ("the server keeps serving and retries").
    pub meanwhile: &'static str,
}

impl Keep {
    pub fn new(ttl: Duration, interval: Duration, meanwhile: &'static str) -> Keep {
        Keep {
            ttl,
            interval,
            meanwhile,
        }
    }
}

/// What [`keep_registered`] tells its owner.
#[derive(Clone, Debug)]
pub struct KeepStatus {
    /// Whether the node is registered now (its last registration
    /// succeeded).
    pub registered: watch::Sender<bool>,
    /// Whether the registry could not be asked the last time it was.
    pub unreachable: Arc<AtomicBool>,
    /// How many registrations were attempted (for a caller waiting for the
    /// first one's outcome).
    pub attempts: watch::Sender<u64>,
}

impl KeepStatus {
    pub fn new() -> KeepStatus {
        KeepStatus {
            registered: watch::channel(false).0,
            unreachable: Arc::new(AtomicBool::new(false)),
            attempts: watch::channel(0).0,
        }
    }

    /// Waits until the first registration was attempted: whether it
    /// succeeded.
    pub async fn first_attempt(&self) -> bool {
        let mut attempts = self.attempts.subscribe();
        let _ = attempts.wait_for(|n| *n > 0).await;
        *self.registered.borrow()
    }
}

impl Default for KeepStatus {
    fn default() -> Self {
        KeepStatus::new()
    }
}

/// Registers `registration` (one node) and keeps it registered until the
/// future is dropped; see the module docs. Logs as `Registry [<name>]`.
pub async fn keep_registered(
    registry: SharedRegistry,
    registration: Service,
    keep: Keep,
    status: KeepStatus,
) {
    let Some(node_id) = registration.nodes.first().map(|n| n.id.clone()) else {
        tracing::error!(
            "Registry [{}] nothing to keep registered: {} has no node",
            registry.name(),
            registration.name
        );
        return;
    };
    let lost = Notify::new();
    let watching = watch_own_node(
        registry.clone(),
        &registration.name,
        &node_id,
        &lost,
        &status.unreachable,
    );
    let registering = register_and_renew(&registry, &registration, &node_id, &keep, &status, &lost);
    // Both run until dropped.
    tokio::join!(watching, registering);
}

async fn register_and_renew(
    registry: &SharedRegistry,
    registration: &Service,
    node_id: &str,
    keep: &Keep,
    status: &KeepStatus,
    lost: &Notify,
) {
    let ttl = RegisterOptions::with_ttl(keep.ttl);
    let name = registry.name();
    tracing::info!("Registry [{name}] Registering node: {node_id}");
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let wait = match registry.register(registration, ttl).await {
            Ok(()) => {
                status.registered.send_replace(true);
                status.unreachable.store(false, Ordering::Relaxed);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        "Registry [{name}] Registered node: {node_id} (after failing for {:?})",
                        since.elapsed()
                    );
                }
                retry.reset();
                keep.interval
            }
            Err(e) => {
                status.registered.send_replace(false);
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    tracing::error!("Registry [{name}] Register error: {e}; {}", keep.meanwhile);
                } else {
                    tracing::debug!("Registry [{name}] register retry failed: {e}");
                }
                retry.next_delay().min(keep.interval)
            }
        };
        status.attempts.send_modify(|n| *n += 1);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = lost.notified() => {
                tracing::debug!("Registry [{name}] node {node_id} missing or watch broken; registering again");
            }
        }
    }
}

/// Signals `lost` when the registry no longer lists `node_id`: its node was
/// deleted, a re-listing after a broken watch lacks it, or the registry
/// cannot be asked (it may have lost everything). The [`Resolution`] does
/// the watching, listing and reconnecting.
async fn watch_own_node(
    registry: SharedRegistry,
    service: &str,
    node_id: &str,
    lost: &Notify,
    unreachable: &AtomicBool,
) {
    let options = ResolveOptions {
        // A listing is taken as it is: a node missing from it must register
        // again now, not after a grace period.
        grace: None,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        refresh: None,
        ..ResolveOptions::default()
    };
    let mut resolution = Resolution::service(registry, service, options);
    // The first listing races the first registration: no news either way.
    let mut first = true;
    loop {
        let update = resolution.next().await;
        unreachable.store(matches!(update, Update::Unavailable(_)), Ordering::Relaxed);
        let missing = match update {
            Update::Reset(_) if std::mem::take(&mut first) => false,
            Update::Reset(services) => !services
                .iter()
                .any(|s| s.nodes.iter().any(|n| n.id == node_id)),
            Update::Remove(removed) => removed.nodes.iter().any(|n| n.id == node_id),
            Update::Add(_) => false,
            Update::Unavailable(_) => true,
        };
        if missing {
            lost.notify_one();
        }
    }
}
