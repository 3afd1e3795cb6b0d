//! Microservices the go-micro way, in Rust.
//!
//! Services are defined in protobuf and served over gRPC (tonic); each server
//! **registers itself** in a registry, and clients **call services by name**,
//! spreading calls round robin over the live nodes and failing over when one
//! stops. The data model, registry entries and gRPC paths are go-micro v2's, so
//! go-micro services and these find and call each other.
//!
//! The pieces, each its own crate, re-exported here:
//! - [`registry`]: the data model, the `Registry` trait, the memory backend;
//! - [`selector`]: p2c (load-aware), round robin and random;
//! - [`client`]: name → watched node set → selector → tonic channel, with
//!   deadlines, attempt timeouts, budgeted retries on another node, and
//!   probing or ejection of failing nodes;
//! - [`server`]: a tonic server that registers, renews, and stops gracefully;
//! - [`config`]: go-micro's flags and `MICRO_*` variables.
//!
//! [`web`] serves an axum router as a registered web service
//! (`go.micro.web.NAME`), go-micro's `web` package.
//!
//! [`Service`] ties them together for a binary, like go-micro's
//! `micro.NewService`:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     micro: micro::config::MicroArgs,
//! }
//!
//! # async fn demo() -> Result<(), micro::Error> {
//! let cli: Cli = micro::config::parse();
//! micro::log::init_with(cli.micro.ops.log_format);
//! let service = micro::Service::new("go.micro.srv.greeter", &cli.micro).await?;
//! let server = service.server()
//!     // .file_descriptor_set(FILE_DESCRIPTOR_SET)
//!     // .add_service(GreeterServer::new(MyGreeter))
//!     .bind()
//!     .await?;
//! server.run().await?;
//! # Ok(())
//! # }
//! ```

pub mod log;
pub mod runtime;
mod service;
pub mod web;

pub use micro_client as client;
pub use micro_config as config;
pub use micro_registry as registry;
pub use micro_selector as selector;
pub use micro_server as server;
pub use micro_telemetry as telemetry;

pub use micro_client::{Client, ClientOptions, Idempotent, ServiceChannel};
pub use micro_registry::{Registry, SharedRegistry};
pub use micro_server::{Readiness, Server, ServerBuilder, ServerOptions};
pub use service::{Error, Service, connect_registry, telemetry_client, telemetry_server};
