//! The `micro` command line, in go-micro's forms:
//!
//! ```text
//! micro api [--address :8080] [--handler api|rpc|http|web] [--namespace go.micro.api]
//! micro list services
//! micro get service go.micro.srv.greeter
//! micro call go.micro.srv.greeter Greeter.Hello '{"name": "John"}'
//! micro call --metadata authorization='Bearer t' --address 10.0.0.5:50051 --output text \
//!     go.micro.srv.user User.ChangePassword '{...}'
//! micro stream go.micro.srv.greeter Greeter.Stream '{"name": "John", "count": 3}'
//! micro health go.micro.srv.user
//! micro web [--address 127.0.0.1:8082]
//! micro new [--type service|api|web] hello
//! ```
//!
//! The shared flags ([`MicroArgs`]: `--registry`, `--registry_address`,
//! `--client_*`, `--admin_address`, `--log_format`, ...) are global: each
//! is accepted before the command or after it (`micro --registry=etcd api`
//! and `micro api --registry=etcd` are the same), read from its `MICRO_*`
//! variable when not given, and listed in every command's `--help`. A flag
//! that needs another (`--client_tls_cert_file` and `--client_tls_key_file`)
//! may sit on the other side of the command, or come from its variable
//! ([`Cli::try_parse_args`]).
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
//! | `micro stream SERVICE ENDPOINT [JSON]` | [`stream`](mod@stream) | [`stream::run`] |
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
pub mod stream;
pub mod web;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use micro::Registry;
use micro::config::MicroArgs;

pub use api::{ApiArgs, EdgeArgs, listen_address, parse_size, run as run_api};
pub use call::{CallArgs, Output, call, call_with, parse_metadata};
pub use get::{GetWhat, format_service, get_service};
pub use health::health;
pub use list::{ListWhat, list_services};
pub use stream::{StreamArgs, stream_with};

/// `micro`: run the API gateway, inspect the registry, call services.
//
// (The doc comment above is `micro --help`'s text.) Every flag of `micro`
// itself, the shared `MicroArgs`, is global: clap accepts it before the
// command, after it, or between `list` and `services`, and lists it in each
// command's `--help`. The commands' own flags take other names (`api
// --address` is not `--server_address`). Parse with `Cli::try_parse_args`.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about, propagate_version = true)]
#[command(mut_args = |arg: clap::Arg| arg.global(true))]
pub struct Cli {
    #[command(flatten)]
    pub micro: MicroArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses `micro`'s command line (the program name first). The shared
    /// flags' rules of which flag needs which (a TLS certificate its key)
    /// are checked once, on the flags of both sides of the command and the
    /// `MICRO_*` variables together. (`Cli::try_parse_from` leaves them to
    /// clap, which checks them on each side before it joins the sides: it
    /// refuses a pair split around the command, or half of one given by a
    /// variable and half on the command line.)
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command =
            Cli::command().mut_args(|arg| arg.requires(clap::builder::Resettable::Reset));
        let mut matches = command.try_get_matches_from_mut(args)?;
        check_shared_requires(&matches)?;
        Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
    }
}

/// Checks the joined shared flags against [`MicroArgs`]' own `requires`
/// rules: the flags given on the command line (either side) are parsed
/// again by the shared flags alone, which read the `MICRO_*` variables too.
fn check_shared_requires(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    let rules = MicroArgs::augment_args(clap::Command::new("micro").no_binary_name(true));
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    for arg in rules.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let Some(long) = arg.get_long() else {
            continue;
        };
        match matches.get_raw(id) {
            Some(values) if arg.get_action().takes_values() => {
                for value in values {
                    let mut flag = std::ffi::OsString::from(format!("--{long}="));
                    flag.push(value);
                    argv.push(flag);
                }
            }
            _ => argv.push(format!("--{long}").into()),
        }
    }
    rules.try_get_matches_from(argv).map(|_| ())
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
    /// Stream from an endpoint, one JSON reply a line; more requests from stdin: `micro stream go.micro.srv.greeter Greeter.Stream '{"name":"John","count":3}'`
    Stream(StreamArgs),
    /// Create a service crate: `micro new hello` (go.micro.srv.hello), `micro new --type api NAME`, `micro new --type web NAME`
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
        Command::Stream(args) => stream::run(&cli.micro, args).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One command line per command; `every_command_is_covered` keeps the
    /// list whole.
    const COMMANDS: [&[&str]; 8] = [
        &["api", "--handler=api"],
        &["list", "services"],
        &["get", "service", "go.micro.srv.greeter"],
        &["call", "go.micro.srv.greeter", "Greeter.Hello", "{}"],
        &["stream", "go.micro.srv.greeter", "Greeter.Stream", "{}"],
        &["health", "go.micro.srv.user"],
        &["web"],
        &["new", "hello"],
    ];

    /// Shared flags from each group (registry, server, client, operations),
    /// in both spellings and both value forms, none at its default.
    const SHARED: [&str; 11] = [
        "--registry=etcd",
        "--registry_address",
        "127.0.0.1:2379",
        "--registry-timeout=2s",
        "--server_name=go.micro.srv.other",
        "--client_retries=3",
        "--selector=random",
        "--admin_address",
        "127.0.0.1:9103",
        "--log_format=json",
        "--health-check-interval=7s",
    ];

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("micro").chain(args.iter().copied()))
    }

    fn assert_shared(cli: &Cli, args: &[&str]) {
        let m = &cli.micro;
        assert_eq!(m.registry.registry.as_str(), "etcd", "{args:?}");
        assert_eq!(
            m.registry.registry_address.as_deref(),
            Some("127.0.0.1:2379"),
            "{args:?}"
        );
        assert_eq!(
            m.registry.registry_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(
            m.server.server_name.as_deref(),
            Some("go.micro.srv.other"),
            "{args:?}"
        );
        assert_eq!(m.client.client_retries, 3, "{args:?}");
        assert_eq!(m.client.selector.as_str(), "random", "{args:?}");
        assert_eq!(
            m.ops.admin_address.as_deref(),
            Some("127.0.0.1:9103"),
            "{args:?}"
        );
        assert_eq!(m.ops.log_format.to_string(), "json", "{args:?}");
        assert_eq!(
            m.ops.health_check_interval,
            std::time::Duration::from_secs(7),
            "{args:?}"
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_is_covered() {
        let mut defined: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        let mut covered: Vec<String> = COMMANDS.iter().map(|c| c[0].to_string()).collect();
        defined.sort();
        covered.sort();
        assert_eq!(defined, covered);
    }

    #[test]
    fn every_shared_flag_is_global() {
        let shared: Vec<String> = MicroArgs::augment_args(clap::Command::new("shared"))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(shared.len() > 30, "{shared:?}");
        let cli = Cli::command();
        for id in &shared {
            let arg = cli
                .get_arguments()
                .find(|a| a.get_id() == id.as_str())
                .unwrap_or_else(|| panic!("--{id} is not a flag of micro"));
            assert!(
                arg.is_global_set(),
                "--{id} is accepted only before the command"
            );
        }
    }

    #[test]
    fn shared_flags_parse_before_and_after_every_command() {
        for command in COMMANDS {
            let before: Vec<&str> = SHARED.iter().chain(command).copied().collect();
            let after: Vec<&str> = command.iter().chain(&SHARED).copied().collect();
            let parsed_before = parse(&before).unwrap_or_else(|e| panic!("{before:?}: {e}"));
            let parsed_after = parse(&after).unwrap_or_else(|e| panic!("{after:?}: {e}"));
            assert_shared(&parsed_before, &before);
            assert_shared(&parsed_after, &after);
            // The same command line either way, the command's own flags too.
            assert_eq!(
                format!("{parsed_before:?}"),
                format!("{parsed_after:?}"),
                "{command:?}"
            );
        }
        // Between a command and its subcommand.
        let between = ["list", "--registry=etcd", "services", "--client_retries=3"];
        let cli = parse(&between).unwrap_or_else(|e| panic!("{between:?}: {e}"));
        assert_eq!(cli.micro.registry.registry.as_str(), "etcd");
        assert_eq!(cli.micro.client.client_retries, 3);
    }

    /// The commands' own `--address`, `--timeout` are not the shared
    /// `--server_address`, `--registry_address`, `--registry_timeout`.
    #[test]
    fn command_flags_and_shared_flags_stay_apart() {
        let args = [
            "api",
            "--address=127.0.0.1:1",
            "--admin_address=127.0.0.1:2",
            "--server_address=127.0.0.1:3",
        ];
        let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Api(api) = &cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(api.address, "127.0.0.1:1");
        assert_eq!(cli.micro.ops.admin_address.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(cli.micro.server.server_address, "127.0.0.1:3");

        let args = [
            "call",
            "a.b",
            "C.D",
            "--address=127.0.0.1:4",
            "--registry_address=127.0.0.1:5",
        ];
        let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Call(call) = &cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(call.address.as_deref(), Some("127.0.0.1:4"));
        assert_eq!(
            cli.micro.registry.registry_address.as_deref(),
            Some("127.0.0.1:5")
        );

        let args = ["health", "a.b", "--timeout=1s", "--registry_timeout=9s"];
        let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Health(health) = &cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(health.timeout, std::time::Duration::from_secs(1));
        assert_eq!(
            cli.micro.registry.registry_timeout,
            std::time::Duration::from_secs(9)
        );
    }

    /// Flags that need each other (a TLS certificate and its key) may sit
    /// on either side of the command; half a pair is still a usage error.
    #[test]
    fn paired_shared_flags_may_sit_on_either_side() {
        let pair = [
            "--client_tls_cert_file=/c.pem",
            "--client_tls_key_file=/k.pem",
        ];
        let call = ["call", "a.b", "C.D"];
        for args in [
            vec![pair[0], pair[1], call[0], call[1], call[2]],
            vec![call[0], call[1], call[2], pair[0], pair[1]],
            vec![pair[0], call[0], call[1], call[2], pair[1]],
            vec![pair[1], call[0], call[1], call[2], pair[0]],
        ] {
            let cli = parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(
                cli.micro.client.client_tls_cert_file.as_deref(),
                Some(std::path::Path::new("/c.pem")),
                "{args:?}"
            );
            assert_eq!(
                cli.micro.client.client_tls_key_file.as_deref(),
                Some(std::path::Path::new("/k.pem")),
                "{args:?}"
            );
        }
        for (args, missing) in [
            (
                &["call", "a.b", "C.D", "--client_tls_cert_file=/c.pem"][..],
                "--client_tls_key_file",
            ),
            (
                &["--server_tls_key_file=/k.pem", "list", "services"],
                "--server_tls_cert_file",
            ),
        ] {
            let err = parse(args).expect_err("half a pair");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert!(err.to_string().contains(missing), "{args:?}: {err}");
        }
    }
}
