//! The lifecycle every registered server shares, whatever it serves (gRPC
//! here, HTTP in `micro::web`): bind the listen address, pick the address
//! to advertise, then a [`Registrar`] that registers, renews, repairs a
//! lost registration, keeps [`Readiness`]'s `registry` condition in step,
//! and at the stop turns NOT_SERVING and deregisters (bounded) before the
//! listener drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use micro_registry::{Backoff, RegisterOptions, Service as Registration, SharedRegistry};
use micro_serve::{AbortOnDrop, address};
use tokio::net::TcpListener;

use crate::{Readiness, ServerError, ServerOptions, ops};

/// Binds `options.address` (`:0`: every interface, a random port; every
/// IPv4 interface where there is no IPv6).
pub async fn listen(options: &ServerOptions) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listen = address::parse_listen(&options.address).map_err(ServerError::Options)?;
    let listener = address::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            address: options.address.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        address: options.address.clone(),
        source,
    })?;
    Ok((listener, local_addr))
}

/// The address to register for a listener bound to `local_addr`:
/// `--server_advertise`, else the bound IP, else the best interface's
/// (logged, `kind` naming the server: `grpc`, `http`).
pub fn advertise(
    options: &ServerOptions,
    local_addr: SocketAddr,
    kind: &str,
) -> Result<String, ServerError> {
    let (advertised, chosen) = address::advertise(options.advertise.as_deref(), local_addr)
        .map_err(ServerError::Options)?;
    match chosen {
        address::Chosen::Configured | address::Chosen::Bound => {
            tracing::debug!("Server [{kind}] Advertising {advertised}")
        }
        address::Chosen::Interface(name) => tracing::info!(
            "Server [{kind}] Advertising {advertised} (interface {name}; set --server_advertise to override)"
        ),
        address::Chosen::Loopback => tracing::info!(
            "Server [{kind}] Advertising {advertised}: no other interface is up, so only this host can reach it"
        ),
    }
    Ok(advertised)
}

/// Checks the registration timing options.
pub fn check_options(options: &ServerOptions) -> Result<(), ServerError> {
    if options.register_ttl.is_zero() || options.register_interval.is_zero() {
        return Err(ServerError::Options(
            "register_ttl and register_interval must be positive".into(),
        ));
    }
    if options.register_interval >= options.register_ttl {
        return Err(ServerError::Options(format!(
            "register_interval ({:?}) must be shorter than register_ttl ({:?}), or registrations lapse between renewals",
            options.register_interval, options.register_ttl
        )));
    }
    Ok(())
}

/// Serves until `shutdown` completes or `serving` ends by itself, keeping
/// the node registered meanwhile; then turns not ready, runs
/// `before_deregister` (a server's subscriptions draining), and deregisters
/// (see [`Registrar::stop_after`]) before the caller drains. `Some(result)`:
/// the server ended first, with that result.
pub async fn serve_registered<T>(
    serving: &mut AbortOnDrop<T>,
    registrar: Registrar,
    shutdown: impl std::future::Future<Output = ()>,
    before_deregister: impl std::future::Future<Output = ()>,
) -> Option<Result<T, tokio::task::JoinError>> {
    tokio::pin!(shutdown);
    let early_exit = tokio::select! {
        () = &mut shutdown => None,
        result = &mut *serving => Some(result),
    };
    // Not ready and deregistered before draining: probes and callers go
    // elsewhere first.
    registrar.stop_after(before_deregister).await;
    early_exit
}

/// Keeps one node registered while it lives; [`stop`](Registrar::stop)
/// deregisters it. Its tasks end when it is dropped.
#[derive(Debug)]
pub struct Registrar {
    registry: SharedRegistry,
    registration: Registration,
    options: ServerOptions,
    readiness: Readiness,
    registered: tokio::sync::watch::Sender<bool>,
    unreachable: Arc<AtomicBool>,
    task: AbortOnDrop<()>,
    _follow: AbortOnDrop<()>,
    _checks: Option<AbortOnDrop<()>>,
}

impl Registrar {
    /// Starts registering `registration` (one node) every
    /// `register_interval` with `register_ttl`, and running `readiness`'s
    /// checks; `registered` turns true once it is registered.
    pub fn start(
        registry: SharedRegistry,
        registration: Registration,
        options: ServerOptions,
        readiness: Readiness,
        registered: tokio::sync::watch::Sender<bool>,
    ) -> Registrar {
        let follow = AbortOnDrop::spawn(ops::follow_registration(
            readiness.clone(),
            registered.subscribe(),
        ));
        let checks = readiness.has_checks().then(|| {
            AbortOnDrop::spawn(readiness.clone().run_checks(options.health_check_interval))
        });
        let unreachable = Arc::new(AtomicBool::new(false));
        let task = AbortOnDrop::spawn(keep_registered(
            registry.clone(),
            registration.clone(),
            options.clone(),
            registered.clone(),
            unreachable.clone(),
        ));
        Registrar {
            registry,
            registration,
            options,
            readiness,
            registered,
            unreachable,
            task,
            _follow: follow,
            _checks: checks,
        }
    }

    /// NOT_SERVING first (probes and callers drain), then stop renewing and
    /// deregister, bounded by `deregister_timeout` (by
    /// [`DEREGISTER_WHEN_UNREACHABLE`] when the registry is known to be
    /// unreachable or the node was not registered).
    pub async fn stop(self) {
        self.stop_after(async {}).await;
    }

    /// [`stop`](Self::stop), with `before_deregister` run once the node is
    /// not ready and its renewals stopped, before it is deregistered.
    pub async fn stop_after(mut self, before_deregister: impl std::future::Future<Output = ()>) {
        let Registrar {
            registry,
            registration,
            options,
            readiness,
            registered,
            unreachable,
            task,
            ..
        } = &mut self;
        readiness.begin_stop();
        task.abort();
        let _ = task.await;
        before_deregister.await;
        // `registered` turns false once the deregistration is done (or
        // given up), as `Server::registered` promises.
        let was_registered = *registered.borrow();
        let deregister_timeout = if was_registered && !unreachable.load(Ordering::Relaxed) {
            options.deregister_timeout
        } else {
            options.deregister_timeout.min(DEREGISTER_WHEN_UNREACHABLE)
        };
        let node_id = &registration.nodes[0].id;
        tracing::info!(
            "Registry [{}] Deregistering node: {node_id}",
            registry.name()
        );
        match tokio::time::timeout(deregister_timeout, registry.deregister(registration)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("Registry [{}] Deregister error: {e}", registry.name()),
            Err(_) => tracing::error!(
                "Registry [{}] Deregister error: no answer within {:?}; the node stays listed until its TTL lapses",
                registry.name(),
                deregister_timeout
            ),
        }
        registered.send_replace(false);
    }
}

/// Registers, then renews every interval.
///
/// A failed registration is retried quickly (0.5 s, then every second) and
/// logged once per outage, so a registry that comes back (an etcd restarted
/// on empty data, say) has the node again within a second of answering. The
/// server also watches its own service: if its node is deleted behind its
/// back (a key removed by hand, a lapsed lease) or the watch breaks (the
/// registry went away), it registers again at once instead of waiting for
/// the next interval.
async fn keep_registered(
    registry: SharedRegistry,
    registration: Registration,
    options: ServerOptions,
    registered: tokio::sync::watch::Sender<bool>,
    unreachable: Arc<AtomicBool>,
) {
    let ttl = RegisterOptions::with_ttl(options.register_ttl);
    let node_id = registration.nodes[0].id.clone();
    let name = registry.name().to_string();
    let lost = Arc::new(tokio::sync::Notify::new());
    let _watch = AbortOnDrop::spawn(watch_own_node(
        registry.clone(),
        registration.name.clone(),
        node_id.clone(),
        lost.clone(),
        unreachable.clone(),
    ));
    tracing::info!("Registry [{name}] Registering node: {node_id}");
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut retry = Backoff::new(REGISTER_RETRY_MIN, REGISTER_RETRY_MAX);
    loop {
        let wait = match registry.register(&registration, ttl).await {
            Ok(()) => {
                registered.send_replace(true);
                unreachable.store(false, Ordering::Relaxed);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        "Registry [{name}] Registered node: {node_id} (after failing for {:?})",
                        since.elapsed()
                    );
                }
                retry.reset();
                options.register_interval
            }
            Err(e) => {
                // Not registered: not ready until it is again.
                registered.send_replace(false);
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    tracing::error!(
                        "Registry [{name}] Register error: {e}; the server keeps serving and retries"
                    );
                } else {
                    tracing::debug!("Registry [{name}] register retry failed: {e}");
                }
                retry.next_delay().min(options.register_interval)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = lost.notified() => {
                tracing::debug!("Registry [{name}] node {node_id} missing or watch broken; registering again");
            }
        }
    }
}

/// The bound on deregistering when the registry is known to be unreachable.
pub const DEREGISTER_WHEN_UNREACHABLE: Duration = Duration::from_secs(1);

/// A failed registration is tried again after 0.5 s, then every second.
const REGISTER_RETRY_MIN: Duration = Duration::from_millis(500);
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(1);

/// Signals `lost` when the registry no longer lists `node_id`: its node was
/// deleted, a re-listing after a broken watch lacks it, or the registry
/// cannot be asked (it may have lost everything). The registry
/// [`Resolution`](micro_registry::Resolution) does the watching, listing and
/// reconnecting.
async fn watch_own_node(
    registry: SharedRegistry,
    service: String,
    node_id: String,
    lost: Arc<tokio::sync::Notify>,
    unreachable: Arc<AtomicBool>,
) {
    use micro_registry::{Resolution, ResolveOptions, Update};
    let options = ResolveOptions {
        // A listing is taken as it is: a node missing from it must register
        // again now, not after a grace period.
        grace: None,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        refresh: None,
        ..ResolveOptions::default()
    };
    let mut resolution = Resolution::service(registry, &service, options);
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
