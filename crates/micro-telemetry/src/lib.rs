//! Operability for micro services, in one place:
//!
//! - [`health`]: readiness (registered, dependency checks pass, not
//!   stopping) and the `grpc.health.v1.Health` service that reports it;
//! - [`admin`]: the admin HTTP listener (`/health/live`, `/health/ready`,
//!   `/metrics`);
//! - [`metrics`]: the Prometheus metrics of servers, clients, registries
//!   and the gateway;
//! - [`server`], `client`, [`api`]: where those metrics are taken, and
//!   where the W3C trace context is continued and passed on (`client`, the
//!   client's `CallObserver`, with the `client` feature: without it this
//!   crate does not link `micro-client`);
//! - [`trace`]: `traceparent` propagation and OTLP export;
//! - [`registry`]: a registry wrapper that counts operations;
//! - [`log`]: JSON log lines.
//!
//! The registry backends do not depend on this crate: they count skipped
//! entries in `micro_registry::skipped`, which [`metrics`] exports.

pub mod admin;
pub mod api;
mod body;
#[cfg(feature = "client")]
pub mod client;
pub mod health;
pub mod log;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod trace;
