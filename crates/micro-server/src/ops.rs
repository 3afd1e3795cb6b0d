//! What a server adds for operators: the gRPC health service over the
//! server's [`Readiness`], the observer's layer over its registered
//! endpoints, and the task that keeps the `registry` condition in step with
//! the registration.

use prost_reflect::DescriptorPool;

use crate::health::{HealthService, Readiness};
use crate::observer::{ObserveLayer, ServerObserver};

/// The health service name clients ask for.
pub(crate) const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The `registry` condition before the first registration.
pub(crate) const NOT_REGISTERED: &str = "not registered yet";

/// The health service: `name` (the registered service), every proto service
/// served, and `""`.
pub(crate) fn health_service(
    readiness: &Readiness,
    name: &str,
    services: &[&'static str],
) -> tonic_health::pb::health_server::HealthServer<HealthService> {
    let names = std::iter::once(name.to_string()).chain(services.iter().map(|s| s.to_string()));
    HealthService::new(readiness.clone(), names).into_server()
}

/// The observer's layer: every method of every served proto service.
pub(crate) fn observe_layer(
    observer: &dyn ServerObserver,
    name: &str,
    pool: &DescriptorPool,
    services: &[&'static str],
) -> ObserveLayer {
    let (mut endpoints, mut streams) = (Vec::new(), Vec::new());
    for full_name in services {
        if let Some(service) = pool.get_service_by_name(full_name) {
            for method in service.methods() {
                let named = (
                    format!("/{full_name}/{}", method.name()),
                    format!("{}.{}", service.name(), method.name()),
                );
                if method.is_client_streaming() || method.is_server_streaming() {
                    streams.push(named);
                } else {
                    endpoints.push(named);
                }
            }
        }
    }
    ObserveLayer::with_streams(observer, name, endpoints, streams)
}

/// The gRPC paths of the streaming methods served (not limited by
/// admission).
pub(crate) fn stream_paths(
    pool: &DescriptorPool,
    services: &[&'static str],
) -> std::collections::HashSet<String> {
    services
        .iter()
        .filter_map(|full_name| pool.get_service_by_name(full_name))
        .flat_map(|service| {
            service
                .methods()
                .filter(|m| m.is_client_streaming() || m.is_server_streaming())
                .map(|m| format!("/{}/{}", service.full_name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Keeps readiness's `registry` condition equal to the registration state
/// until the sender is dropped.
pub(crate) async fn follow_registration(
    readiness: Readiness,
    mut registered: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = *registered.borrow_and_update();
        readiness.set(
            "registry",
            if now {
                Ok(())
            } else {
                Err("not registered (the registry has lost or refused our registration)".into())
            },
        );
        if registered.changed().await.is_err() {
            return;
        }
    }
}
