//! The flags every micro binary shares, named as go-micro v2 named them,
//! turned into the options of what they configure.
//!
//! This is the flags → options wiring layer, above the client and the
//! server: the options live with what they configure
//! ([`micro_client::ClientOptions`], [`micro_server::ServerOptions`]), and
//! this crate only fills them in from the command line and the environment.
//! It depends on `micro-client` and `micro-server`; neither of them, nor
//! anything below them, depends on it (the `micro` facade does).
//!
//! Each flag is accepted as `--snake_case` (go-micro's spelling) and
//! `--kebab-case`, and read from its `MICRO_*` environment variable when not
//! given on the command line:
//!
//! | flag | env | default |
//! | --- | --- | --- |
//! | `--registry` | `MICRO_REGISTRY` | `mdns` |
//! | `--registry_address` | `MICRO_REGISTRY_ADDRESS` | backend's own |
//! | `--registry_timeout` | `MICRO_REGISTRY_TIMEOUT` | `5s` |
//! | `--registry_username`, `--registry_password` | `MICRO_REGISTRY_USERNAME`, `MICRO_REGISTRY_PASSWORD` | none |
//! | `--registry_tls_ca`, `--registry_tls_cert`, `--registry_tls_key` | `MICRO_REGISTRY_TLS_CA`, `..._CERT`, `..._KEY` | none |
//! | `--mdns_timeout` | `MICRO_MDNS_TIMEOUT` | `1s` |
//! | `--mdns_interface` | `MICRO_MDNS_INTERFACE` | every multicast interface |
//! | `--server_name` | `MICRO_SERVER_NAME` | the binary's service name |
//! | `--server_version` | `MICRO_SERVER_VERSION` | `latest` |
//! | `--server_address` | `MICRO_SERVER_ADDRESS` | `:0` |
//! | `--server_advertise` | `MICRO_SERVER_ADVERTISE` | picked, logged |
//! | `--register_ttl` | `MICRO_REGISTER_TTL` | `1m` |
//! | `--register_interval` | `MICRO_REGISTER_INTERVAL` | `30s` |
//! | `--server_tls_cert_file`, `--server_tls_key_file` | `MICRO_SERVER_TLS_CERT_FILE`, `..._KEY_FILE` | plaintext |
//! | `--server_tls_client_ca` | `MICRO_SERVER_TLS_CLIENT_CA` | no client certificates |
//! | `--server_max_concurrent` | `MICRO_SERVER_MAX_CONCURRENT` | `auto` (adaptive; `off` or `0`: no limit) |
//! | `--client_retries` | `MICRO_CLIENT_RETRIES` | `1` |
//! | `--client_request_timeout` | `MICRO_CLIENT_REQUEST_TIMEOUT` | `5s` |
//! | `--client_attempt_timeout` | `MICRO_CLIENT_ATTEMPT_TIMEOUT` | `2s` |
//! | `--client_retry_budget` | `MICRO_CLIENT_RETRY_BUDGET` | `0.2` |
//! | `--client_hedge_after` | `MICRO_CLIENT_HEDGE_AFTER` | off |
//! | `--client_stream_timeout` | `MICRO_CLIENT_STREAM_TIMEOUT` | off (streams have no deadline) |
//! | `--client_tls_ca` | `MICRO_CLIENT_TLS_CA` | plaintext |
//! | `--client_tls_cert_file`, `--client_tls_key_file` | `MICRO_CLIENT_TLS_CERT_FILE`, `..._KEY_FILE` | none |
//! | `--client_tls_server_name` | `MICRO_CLIENT_TLS_SERVER_NAME` | each node's address |
//! | `--selector` | `MICRO_SELECTOR` | `p2c` |
//! | `--admin_address` | `MICRO_ADMIN_ADDRESS` | off |
//! | `--log_format` | `MICRO_LOG_FORMAT` | `text` |
//! | `--health_check_interval` | `MICRO_HEALTH_CHECK_INTERVAL` | `5s` |
//! | `--broker` | `MICRO_BROKER` | `http` |
//! | `--broker_address` | `MICRO_BROKER_ADDRESS` | http `:0` (its listener), nats and jetstream `nats://127.0.0.1:4222` |
//! | `--broker_advertise` | `MICRO_BROKER_ADVERTISE` | picked, logged |
//! | `--broker_replicas` | `MICRO_BROKER_REPLICAS` | `1` (jetstream streams) |
//! | `--broker_max_deliveries` | `MICRO_BROKER_MAX_DELIVERIES` | `5` (jetstream; then dead-lettered) |
//! | `--broker_max_age` / `_max_bytes` / `_max_msgs` | `MICRO_BROKER_MAX_AGE` / `_MAX_BYTES` / `_MAX_MSGS` | `168h` / 1 GiB / 1,000,000 (jetstream stream limits) |
//! | `--broker_max_ack_pending` | `MICRO_BROKER_MAX_ACK_PENDING` | `256` (jetstream, per subscription) |
//! | `--broker_ack_wait` | `MICRO_BROKER_ACK_WAIT` | `30s` (jetstream: then delivered again) |
//!
//! Durations take a unit (`500ms`, `5s`, `1m`) or, as in go-micro, a plain
//! number of seconds.
//!
//! ```
//! use clap::Parser;
//! use micro_config::MicroArgs;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     micro: MicroArgs,
//! }
//!
//! let cli = Cli::parse_from(["user-srv", "--registry=memory", "--register-ttl", "20", "--register_interval=10s"]);
//! assert_eq!(cli.micro.registry.registry.as_str(), "memory");
//! assert_eq!(cli.micro.server.server_options().unwrap().register_ttl.as_secs(), 20);
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};
use micro_client::{BudgetOptions, ClientOptions, ClientTls};
use micro_selector::Strategy;
use micro_server::{ConcurrencyLimit, ServerOptions, ServerTls};

mod broker;
mod ops;
pub use broker::{BrokerArgs, BrokerKind};
pub use ops::{LogFormat, OpsArgs};

/// Every shared flag: registry, server, client, operations and broker.
#[derive(Args, Clone, Debug, Default)]
pub struct MicroArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Which registry backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegistryKind {
    /// Multicast DNS on the local network: no dependencies.
    #[default]
    Mdns,
    /// An etcd cluster.
    Etcd,
    /// This process only (tests, single-binary programs).
    Memory,
}

impl RegistryKind {
    pub const NAMES: [&'static str; 3] = ["mdns", "etcd", "memory"];

    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Mdns => "mdns",
            RegistryKind::Etcd => "etcd",
            RegistryKind::Memory => "memory",
        }
    }
}

impl fmt::Display for RegistryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RegistryKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mdns" => Ok(RegistryKind::Mdns),
            "etcd" => Ok(RegistryKind::Etcd),
            "memory" => Ok(RegistryKind::Memory),
            other => Err(format!(
                "unknown registry {other:?} (expected one of: {})",
                RegistryKind::NAMES.join(", ")
            )),
        }
    }
}

/// Where services are registered and found.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Registry")]
pub struct RegistryArgs {
    /// Registry backend: mdns (local network, no dependencies), etcd, memory (this process only)
    #[arg(
        long = "registry",
        env = "MICRO_REGISTRY",
        default_value = "mdns",
        value_name = "NAME"
    )]
    pub registry: RegistryKind,

    /// Registry addresses, comma separated (etcd: host[:port], http:// or https:// accepted; port defaults to 2379)
    #[arg(
        long = "registry_address",
        visible_alias = "registry-address",
        env = "MICRO_REGISTRY_ADDRESS",
        value_name = "ADDRS"
    )]
    pub registry_address: Option<String>,

    /// Deadline of one registry request (etcd), retries included
    #[arg(
        long = "registry_timeout",
        visible_alias = "registry-timeout",
        env = "MICRO_REGISTRY_TIMEOUT",
        default_value = "5s",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub registry_timeout: Duration,

    /// User name for the registry (etcd authentication)
    #[arg(
        long = "registry_username",
        visible_alias = "registry-username",
        env = "MICRO_REGISTRY_USERNAME",
        value_name = "USER"
    )]
    pub registry_username: Option<String>,

    /// Password for the registry (etcd authentication); prefer the environment variable
    #[arg(
        long = "registry_password",
        visible_alias = "registry-password",
        env = "MICRO_REGISTRY_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub registry_password: Option<String>,

    /// CA certificate (PEM) to verify the registry's TLS certificate (etcd over https://)
    #[arg(
        long = "registry_tls_ca",
        visible_alias = "registry-tls-ca",
        env = "MICRO_REGISTRY_TLS_CA",
        value_name = "FILE"
    )]
    pub registry_tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for the registry
    #[arg(
        long = "registry_tls_cert",
        visible_alias = "registry-tls-cert",
        env = "MICRO_REGISTRY_TLS_CERT",
        value_name = "FILE"
    )]
    pub registry_tls_cert: Option<std::path::PathBuf>,

    /// Client key (PEM) for the registry
    #[arg(
        long = "registry_tls_key",
        visible_alias = "registry-tls-key",
        env = "MICRO_REGISTRY_TLS_KEY",
        value_name = "FILE"
    )]
    pub registry_tls_key: Option<std::path::PathBuf>,

    /// How long a cold mDNS lookup waits for answers
    #[arg(
        long = "mdns_timeout",
        visible_alias = "mdns-timeout",
        env = "MICRO_MDNS_TIMEOUT",
        default_value = "1s",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub mdns_timeout: Duration,

    /// Network interface for mDNS (default: every multicast-capable interface)
    #[arg(
        long = "mdns_interface",
        visible_alias = "mdns-interface",
        env = "MICRO_MDNS_INTERFACE",
        value_name = "NAME"
    )]
    pub mdns_interface: Option<String>,
}

impl Default for RegistryArgs {
    /// The flags' defaults (environment variables ignored).
    fn default() -> Self {
        defaults()
    }
}

/// How a service listens and registers itself.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Name to register instead of the binary's own service name
    #[arg(
        long = "server_name",
        visible_alias = "server-name",
        env = "MICRO_SERVER_NAME",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,

    /// Version to register
    #[arg(
        long = "server_version",
        visible_alias = "server-version",
        env = "MICRO_SERVER_VERSION",
        default_value = "latest",
        value_name = "VERSION"
    )]
    pub server_version: String,

    /// Address to listen on (":0" = every interface, random port)
    #[arg(
        long = "server_address",
        visible_alias = "server-address",
        env = "MICRO_SERVER_ADDRESS",
        default_value = ServerOptions::ADDRESS,
        value_name = "ADDR"
    )]
    pub server_address: String,

    /// Address to register for peers to dial (default: the bound IP, or the best interface address)
    #[arg(
        long = "server_advertise",
        visible_alias = "server-advertise",
        env = "MICRO_SERVER_ADVERTISE",
        value_name = "HOST[:PORT]"
    )]
    pub server_advertise: Option<String>,

    /// Lifetime of a registration unless renewed
    #[arg(
        long = "register_ttl",
        visible_alias = "register-ttl",
        env = "MICRO_REGISTER_TTL",
        default_value = duration_text(ServerOptions::REGISTER_TTL),
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub register_ttl: Duration,

    /// How often to renew the registration (must be shorter than the TTL)
    #[arg(
        long = "register_interval",
        visible_alias = "register-interval",
        env = "MICRO_REGISTER_INTERVAL",
        default_value = duration_text(ServerOptions::REGISTER_INTERVAL),
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub register_interval: Duration,

    /// Serve gRPC over TLS with this certificate chain (PEM, leaf first); needs --server_tls_key_file
    #[arg(
        long = "server_tls_cert_file",
        visible_alias = "server-tls-cert-file",
        env = "MICRO_SERVER_TLS_CERT_FILE",
        requires = "server_tls_key_file",
        value_name = "FILE"
    )]
    pub server_tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --server_tls_cert_file
    #[arg(
        long = "server_tls_key_file",
        visible_alias = "server-tls-key-file",
        env = "MICRO_SERVER_TLS_KEY_FILE",
        requires = "server_tls_cert_file",
        value_name = "FILE"
    )]
    pub server_tls_key_file: Option<PathBuf>,

    /// Mutual TLS: require client certificates signed by this CA (PEM)
    #[arg(
        long = "server_tls_client_ca",
        visible_alias = "server-tls-client-ca",
        env = "MICRO_SERVER_TLS_CLIENT_CA",
        requires = "server_tls_cert_file",
        value_name = "FILE"
    )]
    pub server_tls_client_ca: Option<PathBuf>,

    /// Unary calls served at once; more are refused at once with RESOURCE_EXHAUSTED: `auto` (adaptive, a gradient limiter), a number, or `off` (also `0`)
    #[arg(
        long = "server_max_concurrent",
        visible_alias = "server-max-concurrent",
        env = "MICRO_SERVER_MAX_CONCURRENT",
        default_value = "auto",
        value_name = "auto|N|off"
    )]
    pub server_max_concurrent: ConcurrencyLimit,
}

impl Default for ServerArgs {
    /// The flags' defaults (environment variables ignored).
    fn default() -> Self {
        defaults()
    }
}

impl ServerArgs {
    /// The server options these flags describe; an error if they contradict.
    pub fn server_options(&self) -> Result<ServerOptions, String> {
        if self.register_interval >= self.register_ttl {
            return Err(format!(
                "--register_interval ({}) must be shorter than --register_ttl ({})",
                humantime::format_duration(self.register_interval),
                humantime::format_duration(self.register_ttl)
            ));
        }
        Ok(ServerOptions {
            address: self.server_address.clone(),
            advertise: self.server_advertise.clone(),
            register_ttl: self.register_ttl,
            register_interval: self.register_interval,
            tls: self.server_tls()?,
            max_concurrent: self.server_max_concurrent,
            ..ServerOptions::default()
        })
    }

    /// The server's TLS files, read and checked; `None` without
    /// `--server_tls_cert_file`.
    pub fn server_tls(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.server_tls_cert_file, &self.server_tls_key_file)
        else {
            return match self.server_tls_client_ca {
                Some(_) => Err(
                    "--server_tls_client_ca needs --server_tls_cert_file and --server_tls_key_file"
                        .into(),
                ),
                None => Ok(None),
            };
        };
        ServerTls::from_files(cert, key, self.server_tls_client_ca.as_deref())
            .map(Some)
            .map_err(|e| format!("--server_tls_*: {e}"))
    }
}

/// How calls to other services behave. The defaults are
/// [`ClientOptions`]'s.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Client")]
pub struct ClientArgs {
    /// Extra attempts of a failed call, each on another node
    #[arg(
        long = "client_retries",
        visible_alias = "client-retries",
        env = "MICRO_CLIENT_RETRIES",
        default_value_t = ClientOptions::RETRIES,
        value_parser = clap::value_parser!(u32).range(0..=10),
        value_name = "N"
    )]
    pub client_retries: u32,

    /// Deadline of a call, retries included
    #[arg(
        long = "client_request_timeout",
        visible_alias = "client-request-timeout",
        env = "MICRO_CLIENT_REQUEST_TIMEOUT",
        default_value = duration_text(ClientOptions::REQUEST_TIMEOUT),
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub client_request_timeout: Duration,

    /// Deadline of one attempt on one node: a node that does not answer in time costs one attempt, and idempotent calls go on to another node
    #[arg(
        long = "client_attempt_timeout",
        visible_alias = "client-attempt-timeout",
        env = "MICRO_CLIENT_ATTEMPT_TIMEOUT",
        default_value = duration_text(ClientOptions::ATTEMPT_TIMEOUT),
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub client_attempt_timeout: Duration,

    /// Retries allowed per call, over the last 10 s (plus 10 per second): bounds what retries add to a failing service
    #[arg(
        long = "client_retry_budget",
        visible_alias = "client-retry-budget",
        env = "MICRO_CLIENT_RETRY_BUDGET",
        default_value_t = BudgetOptions::RATIO,
        value_parser = parse_ratio,
        value_name = "RATIO"
    )]
    pub client_retry_budget: f64,

    /// For idempotent calls: when the first attempt has not answered after this long, send the call to a second node too and take the first answer (default: off)
    #[arg(
        long = "client_hedge_after",
        visible_alias = "client-hedge-after",
        env = "MICRO_CLIENT_HEDGE_AFTER",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub client_hedge_after: Option<Duration>,

    /// Deadline of a whole stream (server-, client- or bidi-streaming call) whose caller sets none (default: off, as go-micro's StreamTimeout)
    #[arg(
        long = "client_stream_timeout",
        visible_alias = "client-stream-timeout",
        env = "MICRO_CLIENT_STREAM_TIMEOUT",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub client_stream_timeout: Option<Duration>,

    /// Node selection: p2c (the less loaded of two random nodes), roundrobin (each call to the next node) or random
    #[arg(
        long = "selector",
        env = "MICRO_SELECTOR",
        default_value = ClientOptions::SELECTOR.as_str(),
        value_parser = parse_strategy,
        value_name = "NAME"
    )]
    pub selector: Strategy,

    /// Call services over TLS, verifying their certificates against this CA (PEM)
    #[arg(
        long = "client_tls_ca",
        visible_alias = "client-tls-ca",
        env = "MICRO_CLIENT_TLS_CA",
        value_name = "FILE"
    )]
    pub client_tls_ca: Option<PathBuf>,

    /// Mutual TLS: the certificate (PEM) to present to services; needs --client_tls_key_file
    #[arg(
        long = "client_tls_cert_file",
        visible_alias = "client-tls-cert-file",
        env = "MICRO_CLIENT_TLS_CERT_FILE",
        requires = "client_tls_key_file",
        value_name = "FILE"
    )]
    pub client_tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --client_tls_cert_file
    #[arg(
        long = "client_tls_key_file",
        visible_alias = "client-tls-key-file",
        env = "MICRO_CLIENT_TLS_KEY_FILE",
        requires = "client_tls_cert_file",
        value_name = "FILE"
    )]
    pub client_tls_key_file: Option<PathBuf>,

    /// The name service certificates must carry (default: each node's address, as an IP SAN)
    #[arg(
        long = "client_tls_server_name",
        visible_alias = "client-tls-server-name",
        env = "MICRO_CLIENT_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub client_tls_server_name: Option<String>,
}

impl Default for ClientArgs {
    /// The flags' defaults (environment variables ignored).
    fn default() -> Self {
        defaults()
    }
}

impl ClientArgs {
    /// The client options these flags describe; an error if a TLS file
    /// cannot be used.
    pub fn client_options(&self) -> Result<ClientOptions, String> {
        Ok(ClientOptions {
            request_timeout: self.client_request_timeout,
            attempt_timeout: self.client_attempt_timeout,
            retries: self.client_retries,
            retry_budget: BudgetOptions {
                ratio: self.client_retry_budget,
                ..BudgetOptions::default()
            },
            selector: self.selector,
            hedge_after: self.client_hedge_after,
            stream_timeout: self.client_stream_timeout,
            tls: self.client_tls()?,
            ..ClientOptions::default()
        })
    }

    /// The client's TLS files, read and checked; `None` without
    /// `--client_tls_ca`.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, String> {
        let Some(ca) = &self.client_tls_ca else {
            return match (&self.client_tls_cert_file, &self.client_tls_server_name) {
                (None, None) => Ok(None),
                _ => Err(
                    "--client_tls_cert_file and --client_tls_server_name need --client_tls_ca"
                        .into(),
                ),
            };
        };
        ClientTls::from_files(
            ca,
            self.client_tls_cert_file.as_deref(),
            self.client_tls_key_file.as_deref(),
            self.client_tls_server_name.clone(),
        )
        .map(Some)
        .map_err(|e| format!("--client_tls_*: {e}"))
    }
}

/// A set of flags with every flag at its default: the defaults live in the
/// flag definitions only (and those point at the library constants).
fn defaults<T: Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command.get_matches_from(std::iter::empty::<&str>());
    match T::from_arg_matches(&matches) {
        Ok(args) => args,
        // Every default parses: checked by the tests.
        Err(e) => panic!("flag defaults do not parse: {e}"),
    }
}

/// A duration as a flag default (`5s`, `500ms`). Leaked: a handful of short
/// strings, built once per flag definition.
fn duration_text(d: Duration) -> &'static str {
    Box::leak(humantime::format_duration(d).to_string().into_boxed_str())
}

/// A share between 0 and 1.
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
        .map_err(|e: micro_selector::UnknownStrategy| e.to_string())
}

/// A duration: `500ms`, `5s`, `1m30s`, or a number of seconds (`60`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 1m, or a number of seconds)"))
}

/// A duration greater than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// Parses the command line like `T::parse()`, but reports a bad flag as one
/// line on stderr and exits with code 2 (`--help` and `--version` print and
/// exit 0 as usual).
pub fn parse<T: Parser>() -> T {
    parse_from(std::env::args_os())
}

/// [`parse`] over the given arguments.
pub fn parse_from<T, I, A>(args: I) -> T
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    match T::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => exit_usage(&e.to_string()),
    }
}

/// Prints `message` (its first line, without clap's `error: ` prefix) as one
/// line and exits with code 2, the usage-error code.
pub fn exit_usage(message: &str) -> ! {
    let line = message
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    let program = std::env::args()
        .next()
        .and_then(|p| p.rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| "micro".into());
    eprintln!("{program}: {line}");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        micro: MicroArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_go_micros() {
        let cli = parse(&[]).expect("parse");
        let m = cli.micro;
        assert_eq!(m.registry.registry, RegistryKind::Mdns);
        assert_eq!(m.server.server_address, ":0");
        assert_eq!(m.server.register_ttl, Duration::from_secs(60));
        assert_eq!(m.server.register_interval, Duration::from_secs(30));
        assert_eq!(m.client.client_retries, 1);
        assert_eq!(m.client.client_request_timeout, Duration::from_secs(5));
        assert_eq!(m.ops.health_check_interval, Duration::from_secs(5));
        assert_eq!(m.client.client_attempt_timeout, Duration::from_secs(2));
        assert_eq!(m.client.selector, Strategy::P2c);
    }

    #[test]
    fn default_impls_are_the_flag_defaults_and_the_library_defaults() {
        let parsed = parse(&[]).expect("parse").micro;
        let default = MicroArgs::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        let client = default.client.client_options().expect("valid");
        let library = ClientOptions::default();
        assert_eq!(client.request_timeout, library.request_timeout);
        assert_eq!(client.attempt_timeout, library.attempt_timeout);
        assert_eq!(client.retries, library.retries);
        assert_eq!(client.retry_budget, library.retry_budget);
        assert_eq!(client.selector, library.selector);
        assert_eq!(client.hedge_after, library.hedge_after);
        assert_eq!(client.stream_timeout, library.stream_timeout);
        let server = default.server.server_options().expect("valid");
        let library = ServerOptions::default();
        assert_eq!(server.address, library.address);
        assert_eq!(server.register_ttl, library.register_ttl);
        assert_eq!(server.register_interval, library.register_interval);
        assert_eq!(server.max_concurrent, library.max_concurrent);
    }

    #[test]
    fn the_concurrency_limit_is_adaptive_fixed_or_off() {
        let limit = |args: &[&str]| {
            parse(args)
                .map(|cli| {
                    cli.micro
                        .server
                        .server_options()
                        .expect("valid")
                        .max_concurrent
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(limit(&[]), Ok(ConcurrencyLimit::Adaptive));
        assert_eq!(
            limit(&["--server_max_concurrent=64"]),
            Ok(ConcurrencyLimit::Fixed(64))
        );
        assert_eq!(
            limit(&["--server-max-concurrent", "off"]),
            Ok(ConcurrencyLimit::Off)
        );
        assert_eq!(
            limit(&["--server_max_concurrent=0"]),
            Ok(ConcurrencyLimit::Off)
        );
        let error = limit(&["--server_max_concurrent=lots"]).expect_err("not a limit");
        assert!(error.contains("not a concurrency limit"), "{error}");
    }

    #[test]
    fn snake_and_kebab_spellings_both_work() {
        let snake =
            parse(&["--registry_address=127.0.0.1:2379", "--client_retries", "3"]).expect("snake");
        let kebab =
            parse(&["--registry-address=127.0.0.1:2379", "--client-retries", "3"]).expect("kebab");
        assert_eq!(
            snake.micro.registry.registry_address,
            kebab.micro.registry.registry_address
        );
        assert_eq!(snake.micro.client.client_retries, 3);
        assert_eq!(kebab.micro.client.client_retries, 3);
    }

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert!(positive_duration("0").is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--registry=consul"][..],
            &["--selector=fastest"],
            &["--register_ttl=-1"],
            &["--client_retries=many"],
            &["--client_request_timeout=0"],
            &["--client_attempt_timeout=0"],
            &["--client_retry_budget=1.5"],
            &["--log_format=xml"],
            &["--health_check_interval=0s"],
            &["--no-such-flag"],
        ] {
            let err = parse(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        let err = parse(&["--registry=consul"])
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("mdns, etcd, memory"), "{err}");
    }

    #[test]
    fn tls_flags_come_in_pairs_and_files_are_read() {
        for args in [
            &["--server_tls_cert_file=c.pem"][..],
            &["--server_tls_key_file=k.pem"],
            &["--server_tls_client_ca=ca.pem"],
            &["--client_tls_cert_file=c.pem"],
        ] {
            let err = parse(args).expect_err("incomplete");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        let none = parse(&[]).expect("parse").micro;
        assert!(
            none.client
                .client_options()
                .expect("plaintext")
                .tls
                .is_none()
        );
        assert!(
            none.server
                .server_options()
                .expect("plaintext")
                .tls
                .is_none()
        );

        let cli = parse(&["--client_tls_ca=/nonexistent/ca.pem"]).expect("parse");
        let err = cli.micro.client.client_options().expect_err("missing file");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let cli = parse(&["--client_tls_server_name=svc"]).expect("parse");
        let err = cli.micro.client.client_options().expect_err("no CA");
        assert!(err.contains("--client_tls_ca"), "{err}");
        let cli = parse(&[
            "--server_tls_cert_file=/nonexistent/c.pem",
            "--server_tls_key_file=/nonexistent/k.pem",
        ])
        .expect("parse");
        let err = cli.micro.server.server_options().expect_err("missing file");
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn interval_must_be_shorter_than_ttl() {
        let cli = parse(&["--register_ttl=10", "--register_interval=10"]).expect("parse");
        let err = cli
            .micro
            .server
            .server_options()
            .expect_err("contradiction");
        assert!(err.contains("--register_interval"), "{err}");
    }
}
