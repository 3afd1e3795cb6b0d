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

use micro_registry::keep::{Keep, KeepStatus, keep_registered};
use micro_registry::{Service as Registration, SharedRegistry};
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
        let status = KeepStatus {
            registered: registered.clone(),
            ..KeepStatus::new()
        };
        let unreachable = status.unreachable.clone();
        let task = AbortOnDrop::spawn(keep_registered(
            registry.clone(),
            registration.clone(),
            Keep::new(
                options.register_ttl,
                options.register_interval,
                "the server keeps serving and retries",
            ),
            status,
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

/// The bound on deregistering when the registry is known to be unreachable.
pub const DEREGISTER_WHEN_UNREACHABLE: Duration = Duration::from_secs(1);
