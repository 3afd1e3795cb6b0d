//! The `micro` command line, in go-micro's forms:
//!
//! ```text
//! micro [--registry=etcd ...] api [--address :8080] [--handler api|rpc|http] [--namespace go.micro.api]
//! micro [...] list services
//! micro [...] get service go.micro.srv.greeter
//! micro [...] call go.micro.srv.greeter Greeter.Hello '{"name": "John"}'
//! micro [...] call --metadata authorization='Bearer t' --address 10.0.0.5:50051 --output text \
//!     go.micro.srv.user User.ChangePassword '{...}'
//! micro [...] health go.micro.srv.user
//! micro [...] web [--address 127.0.0.1:8082]
//! micro new [--type service|api] hello
//! ```
//!
//! The shared flags (`--registry`, `--registry_address`, `--client_*`, ...)
//! come before the subcommand.
//!
//! Each command lives in its own module, with its flags and a function that
//! returns its output, so it can be tested in-process on a memory registry:
//!
//! | command | module | runs |
//! | --- | --- | --- |
//! | `micro api` | [`api`] | [`api::run`] |
//! | `micro list services` | [`list`] | [`list::run`] |
//! | `micro get service NAME` | [`get`] | [`get::run`] |
//! | `micro call SERVICE ENDPOINT JSON` | [`call`](mod@call) | [`call::run`] |
//! | `micro health SERVICE` | [`health`](mod@health) | [`health::run`] |
//! | `micro web` | [`web`] | [`web::run`] |
//! | `micro new DIR` | [`new`] | [`new::run`] |
//!
//! This file holds the parser ([`Cli`], [`Command`]), the dispatch
//! ([`run`]) and what the commands share ([`CliError`]); `main.rs` only
//! parses, prints and picks the exit code (2 for usage errors, 1 for
//! failures).

pub mod api;
pub mod call;
pub mod get;
pub mod health;
pub mod list;
pub mod new;
pub mod web;

use clap::{Parser, Subcommand};
use micro::Registry;
use micro::config::MicroArgs;

pub use api::{ApiArgs, EdgeArgs, listen_address, parse_size, run as run_api};
pub use call::{CallArgs, Output, call, call_with, parse_metadata};
pub use get::{GetWhat, format_service, get_service};
pub use health::health;
pub use list::{ListWhat, list_services};

/// `micro`: run the API gateway, inspect the registry, call services.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub micro: MicroArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the `api` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API gateway: HTTP requests become calls to services by name
    Api(ApiArgs),
    /// List resources: `micro list services`
    List {
        #[command(subcommand)]
        what: ListWhat,
    },
    /// Describe a resource: `micro get service NAME`
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Call an endpoint with JSON: `micro call go.micro.srv.greeter Greeter.Hello '{"name":"John"}'`
    Call(CallArgs),
    /// Create a service crate: `micro new hello` (go.micro.srv.hello), `micro new --type api NAME`
    New(new::NewArgs),
    /// Check every node of a service over gRPC health: `micro health go.micro.srv.user`
    Health(health::HealthArgs),
    /// Run the web dashboard: services, nodes, endpoints, a form to call one (http://127.0.0.1:8082)
    Web(web::WebArgs),
}

/// Runs a parsed command line; what to print on stdout, or why it failed.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    match &cli.command {
        Command::Api(args) => api::run(&cli.micro, args).await.map(|()| String::new()),
        Command::List { what } => list::run(&cli.micro, what).await,
        Command::Get { what } => get::run(&cli.micro, what).await,
        Command::Call(args) => call::run(&cli.micro, args).await,
        Command::New(args) => new::run(args),
        Command::Health(args) => health::run(&cli.micro, args).await,
        Command::Web(args) => web::run(&cli.micro, args).await.map(|()| String::new()),
    }
}

/// Why a command failed, and so its exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// The user's input is wrong: exit code 2.
    Usage(String),
    /// The command could not do its job: exit code 1.
    Failed(String),
    /// `micro health`: the report (for stdout), and not every node serves: exit code 1.
    Unhealthy(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) | CliError::Unhealthy(_) => 1,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CliError::Usage(m) | CliError::Failed(m) | CliError::Unhealthy(m) => m,
        }
    }
}

impl From<micro::Error> for CliError {
    fn from(e: micro::Error) -> Self {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }
}

/// The error of a service the registry does not know (`get`, `call`).
pub(crate) fn not_found(registry: &dyn Registry, name: &str) -> CliError {
    CliError::Failed(format!(
        "service {name} not found in registry [{}]",
        registry.name()
    ))
}
