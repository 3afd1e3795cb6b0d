//! Operability for micro services, in one place:
//!
//! - [`metrics`]: the Prometheus metrics of servers, clients, registries
//!   and the gateway;
//! - `server`, `client`, [`api`]: where those metrics are taken, and where
//!   the W3C trace context is continued and passed on. `server` (the
//!   server's `ServerObserver`) and `client` (the client's `CallObserver`)
//!   plug into hooks those crates own, each behind the feature of its name:
//!   without it this crate does not link `micro-server` or `micro-client`;
//! - `admin` (with the `server` feature): the admin HTTP listener
//!   (`/health/live`, `/health/ready` from the server's `Readiness`,
//!   `/metrics`);
//! - [`trace`]: `traceparent` propagation and OTLP export;
//! - [`registry`]: a registry wrapper that counts operations;
//! - [`log`]: JSON log lines.
//!
//! The registry backends do not depend on this crate: they count skipped
//! entries in `micro_registry::skipped`, which [`metrics`] exports.

#[cfg(feature = "server")]
pub mod admin;
pub mod admission;
pub mod api;
#[cfg(feature = "client")]
mod body;
#[cfg(feature = "broker")]
pub mod broker;
#[cfg(feature = "client")]
pub mod client;
pub mod log;
pub mod metrics;
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
pub mod trace;

/// Readiness and the gRPC health service, now the server's own
/// (`micro_server::health`); here for the code that found them here.
#[cfg(feature = "server")]
pub use micro_server::health;
