//! The `micro` command line, in go-micro's forms:
//!
//! ```text
//! micro [--registry=etcd ...] api [--address :8080] [--handler api|rpc|http] [--namespace go.micro.api]
//! micro [...] list services
//! micro [...] get service go.micro.srv.greeter
//! micro [...] call go.micro.srv.greeter Greeter.Hello '{"name": "John"}'
//! micro [...] call --metadata authorization='Bearer t' --address 10.0.0.5:50051 --output text \
//!     go.micro.srv.user User.ChangePassword '{...}'
//! ```
//!
//! `micro call` works with any service: one serving gRPC reflection (every
//! toolkit service) is called with protobuf built from its schema; one that
//! serves none (go-micro v2) gets the JSON itself as `application/grpc+json`,
//! as go-micro's own `micro call` sends it.
//!
//! The shared flags (`--registry`, `--registry_address`, `--client_*`, ...)
//! come before the subcommand. Each subcommand is a function here that
//! returns its output, so it can be tested in-process on a memory registry;
//! `main.rs` only parses, prints and picks the exit code (2 for usage errors,
//! 1 for failures).

pub mod new;
pub mod web;

use std::fmt::Write as _;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use micro::config::MicroArgs;
use micro::{Client, Registry};
use micro_api::{ApiOptions, Gateway, HandlerKind};
use micro_json::{CallOptions, DynamicClient};
use micro_registry::{Service, Value};

pub mod health;
pub use health::health;

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

#[derive(Debug, Subcommand)]
pub enum ListWhat {
    /// Every registered service, one name per line
    Services,
}

#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// A service's versions, nodes and endpoints
    Service {
        /// The service name, e.g. go.micro.srv.greeter
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The service name, e.g. go.micro.srv.greeter
    pub service: String,
    /// The endpoint, Handler.Method, e.g. Greeter.Hello
    pub endpoint: String,
    /// The request as JSON (default {})
    #[arg(default_value = "{}")]
    pub request: String,
    /// Metadata to send with the call, KEY=VALUE (repeatable), e.g. authorization='Bearer TOKEN'
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Call this node (host:port) directly instead of one found in the registry
    #[arg(long, env = "MICRO_ADDRESS", value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// How to print the reply: json (indented) or text (as received, one line)
    #[arg(
        long,
        short = 'o',
        env = "MICRO_OUTPUT",
        default_value = "json",
        value_name = "FORMAT"
    )]
    pub output: Output,
}

/// How `micro call` prints a reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Indented with tabs, as go-micro prints replies.
    #[default]
    Json,
    /// The JSON as the service sent it (go-micro's `raw`).
    Text,
}

impl std::str::FromStr for Output {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Output::Json),
            "text" | "raw" => Ok(Output::Text),
            other => Err(format!("unknown output {other:?} (expected json or text)")),
        }
    }
}

impl CallArgs {
    /// The arguments of `micro call SERVICE ENDPOINT REQUEST`, no flags.
    pub fn new(service: &str, endpoint: &str, request: &str) -> Self {
        CallArgs {
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            request: request.to_string(),
            metadata: Vec::new(),
            address: None,
            output: Output::Json,
        }
    }
}

/// `micro api` flags. Limits are on by default.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Address to listen on (":8080" = every interface)
    #[arg(
        long,
        env = "MICRO_API_ADDRESS",
        default_value = ":8080",
        value_name = "ADDR"
    )]
    pub address: String,

    /// How requests become calls: api (go.api.Request/Response), rpc (JSON ↔ the endpoint's messages), http (reverse proxy)
    #[arg(
        long,
        env = "MICRO_API_HANDLER",
        default_value = "rpc",
        value_name = "NAME"
    )]
    pub handler: HandlerKind,

    /// Prefix of the service names paths resolve to
    #[arg(
        long,
        env = "MICRO_API_NAMESPACE",
        default_value = "go.micro.api",
        value_name = "NS"
    )]
    pub namespace: String,

    /// Path resolver (only go-micro's "micro" rules)
    #[arg(long, env = "MICRO_API_RESOLVER", default_value = "micro", value_parser = ["micro"], value_name = "NAME")]
    pub resolver: String,

    /// Largest request body accepted (bytes; K/KiB and M/MiB suffixes allowed)
    #[arg(long = "max_body_bytes", visible_alias = "max-body-bytes", env = "MICRO_API_MAX_BODY_BYTES", default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_body_bytes: usize,

    /// Most request headers accepted
    #[arg(long = "max_headers", visible_alias = "max-headers", env = "MICRO_API_MAX_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub max_headers: u16,

    /// Largest total size of the request headers
    #[arg(long = "max_header_bytes", visible_alias = "max-header-bytes", env = "MICRO_API_MAX_HEADER_BYTES", default_value = "32KiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_header_bytes: usize,

    /// Time a client has to send its request headers
    #[arg(long = "header_read_timeout", visible_alias = "header-read-timeout", env = "MICRO_API_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub header_read_timeout: Duration,

    /// Time to answer a request, calls included
    #[arg(long = "request_timeout", visible_alias = "request-timeout", env = "MICRO_API_REQUEST_TIMEOUT", default_value = "10s", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Origins allowed to call cross-origin, comma separated ("*" for any); CORS is off without it
    #[arg(
        long = "cors_allowed_origins",
        visible_alias = "cors-allowed-origins",
        env = "MICRO_API_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Connections open at once; past it the longest-idle one is closed
    #[arg(long = "max_connections", visible_alias = "max-connections", env = "MICRO_API_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,

    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// `micro api` flags of the edge: connection budget, TLS, auth, rate limits.
#[derive(Debug, Args, Clone)]
pub struct EdgeArgs {
    /// Connections open at once from one client IP (0: no cap); past it that IP's longest-idle one is closed
    #[arg(
        long = "max_connections_per_ip",
        visible_alias = "max-connections-per-ip",
        env = "MICRO_API_MAX_CONNECTIONS_PER_IP",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_connections_per_ip: u32,

    /// How long a connection may stay open with no request in flight
    #[arg(long = "idle_timeout", visible_alias = "idle-timeout", env = "MICRO_API_IDLE_TIMEOUT", default_value = "60s", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Serve HTTPS with this PEM certificate chain (with --tls_key_file)
    #[arg(
        long = "tls_cert_file",
        visible_alias = "tls-cert-file",
        env = "MICRO_API_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// The PEM private key of --tls_cert_file
    #[arg(
        long = "tls_key_file",
        visible_alias = "tls-key-file",
        env = "MICRO_API_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// Require tokens: "jwt" (Authorization: Bearer <JWT>); without it every service in the namespace is public
    #[arg(long = "auth", env = "MICRO_API_AUTH", value_parser = ["jwt"], value_name = "KIND")]
    pub auth: Option<String>,

    /// HS256 key tokens are signed with (the one user-srv signs with)
    #[arg(
        long = "auth_secret",
        visible_alias = "auth-secret",
        env = "MICRO_AUTH_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub auth_secret: Option<String>,

    /// PEM public key tokens are signed for (RS256, ES256 or EdDSA), instead of --auth_secret
    #[arg(
        long = "auth_public_key",
        visible_alias = "auth-public-key",
        env = "MICRO_API_AUTH_PUBLIC_KEY",
        value_name = "FILE"
    )]
    pub auth_public_key: Option<std::path::PathBuf>,

    /// Paths served without a token, comma-separated globs (* within a segment, ** across), e.g. /user/account/login,/user/say/*
    #[arg(
        long = "auth_public_paths",
        visible_alias = "auth-public-paths",
        env = "MICRO_API_AUTH_PUBLIC_PATHS",
        value_delimiter = ',',
        value_name = "GLOBS"
    )]
    pub auth_public_paths: Vec<String>,

    /// Paths a valid token opens, comma-separated globs (default: every path; none for the rpc handler)
    #[arg(
        long = "auth_paths",
        visible_alias = "auth-paths",
        env = "MICRO_API_AUTH_PATHS",
        value_delimiter = ',',
        value_name = "GLOBS"
    )]
    pub auth_paths: Option<Vec<String>>,

    /// Requests per second from one client IP (off unless set)
    #[arg(long = "rate_limit", visible_alias = "rate-limit", env = "MICRO_API_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub rate_limit: Option<u32>,

    /// Requests one client IP may send at once (default: --rate_limit)
    #[arg(long = "rate_burst", visible_alias = "rate-burst", env = "MICRO_API_RATE_BURST", value_parser = clap::value_parser!(u32).range(1..), value_name = "N", requires = "rate_limit")]
    pub rate_burst: Option<u32>,

    /// Requests per second to one route (/a/b/c), from all clients together (off unless set)
    #[arg(long = "route_rate_limit", visible_alias = "route-rate-limit", env = "MICRO_API_ROUTE_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub route_rate_limit: Option<u32>,

    /// Requests to one route at once (default: --route_rate_limit)
    #[arg(long = "route_rate_burst", visible_alias = "route-rate-burst", env = "MICRO_API_ROUTE_RATE_BURST", value_parser = clap::value_parser!(u32).range(1..), value_name = "N", requires = "route_rate_limit")]
    pub route_rate_burst: Option<u32>,
}

impl EdgeArgs {
    /// Applies these flags to `options`; files are read here, so a bad
    /// certificate, key or glob is a usage error.
    pub fn apply(&self, options: &mut ApiOptions) -> Result<(), CliError> {
        options.max_connections_per_ip = self.max_connections_per_ip as usize;
        options.idle_timeout = self.idle_timeout;
        options.rate_limits = micro_api::ratelimit::RateLimits {
            per_ip: self
                .rate_limit
                .and_then(|n| micro_api::ratelimit::Rate::new(n, self.rate_burst)),
            per_route: self
                .route_rate_limit
                .and_then(|n| micro_api::ratelimit::Rate::new(n, self.route_rate_burst)),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options.tls = Some(
                micro_api::tls::server_config(cert, key)
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            );
        }
        let auth_flags = self.auth_public_key.is_some()
            || !self.auth_public_paths.is_empty()
            || self.auth_paths.is_some();
        match self.auth.as_deref() {
            Some(_) => {
                options.auth = Some(
                    micro_api::auth::AuthConfig::from_flags(
                        self.auth_secret.as_deref(),
                        self.auth_public_key.as_deref(),
                        &self.auth_public_paths,
                        self.auth_paths.as_deref(),
                    )
                    .map_err(|e| CliError::Usage(e.to_string()))?,
                );
            }
            None if auth_flags => {
                return Err(CliError::Usage(
                    "--auth_public_key, --auth_public_paths and --auth_paths need --auth=jwt"
                        .into(),
                ));
            }
            None => {}
        }
        Ok(())
    }
}

impl ApiArgs {
    pub fn api_options(&self) -> ApiOptions {
        ApiOptions {
            handler: self.handler,
            namespace: self.namespace.clone(),
            max_body_bytes: self.max_body_bytes,
            max_headers: usize::from(self.max_headers),
            max_header_bytes: self.max_header_bytes,
            header_read_timeout: self.header_read_timeout,
            request_timeout: self.request_timeout,
            cors_allowed_origins: self
                .cors_allowed_origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            max_connections: self.max_connections as usize,
            ..ApiOptions::default()
        }
    }

    /// [`ApiArgs::api_options`] with the edge flags applied (TLS files and
    /// keys read).
    pub fn gateway_options(&self) -> Result<ApiOptions, CliError> {
        let mut options = self.api_options();
        self.edge.apply(&mut options)?;
        Ok(options)
    }

    /// The address to bind: go's `:8080` means every interface.
    pub fn listen_address(&self) -> String {
        listen_address(&self.address)
    }
}

/// `:8080` → `0.0.0.0:8080`; anything else as given.
pub fn listen_address(address: &str) -> String {
    if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

/// A size: `1048576`, `512K`, `1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 1048576, 512KiB, 1MiB)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit (expected K, KiB, M or MiB)")),
    };
    let size = n
        .checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if size == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(size)
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

/// `micro list services`: the sorted names, one a line.
pub async fn list_services(registry: &dyn Registry) -> Result<String, CliError> {
    let services = registry.list_services().await.map_err(|e| {
        CliError::Failed(format!("Registry [{}] list services: {e}", registry.name()))
    })?;
    let mut names: Vec<String> = services.into_iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    Ok(names.iter().fold(String::new(), |mut out, name| {
        let _ = writeln!(out, "{name}");
        out
    }))
}

/// `micro get service NAME`, in go-micro's layout: per version the nodes,
/// then each endpoint with its request and response fields.
pub async fn get_service(registry: &dyn Registry, name: &str) -> Result<String, CliError> {
    let services = match registry.get_service(name).await {
        Ok(services) if !services.is_empty() => services,
        Ok(_) => return Err(not_found(registry, name)),
        Err(e) if e.is_not_found() => return Err(not_found(registry, name)),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "Registry [{}] get service {name}: {e}",
                registry.name()
            )));
        }
    };
    Ok(format_service(&services))
}

fn not_found(registry: &dyn Registry, name: &str) -> CliError {
    CliError::Failed(format!(
        "service {name} not found in registry [{}]",
        registry.name()
    ))
}

/// go-micro's `get service` text for the versions of one service.
pub fn format_service(services: &[Service]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for service in services {
        lines.push(format!("service  {}", service.name));
        lines.push(format!("\nversion {}", service.version));
        lines.push("\nID\tAddress\tMetadata".into());
        for node in &service.nodes {
            let metadata: Vec<String> = node
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            lines.push(format!(
                "{}\t{}\t{}",
                node.id,
                node.address,
                metadata.join(",")
            ));
        }
    }
    if let Some(first) = services.first() {
        for endpoint in &first.endpoints {
            lines.push(format!("\nEndpoint: {}", endpoint.name));
            if !endpoint.metadata.is_empty() {
                let metadata: Vec<String> = endpoint
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                lines.push(format!("Metadata: {}", metadata.join(",")));
            }
            lines.push(format!(
                "Request: {}",
                format_value(endpoint.request.as_ref())
            ));
            lines.push(format!(
                "\nResponse: {}",
                format_value(endpoint.response.as_ref())
            ));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn format_value(value: Option<&Value>) -> String {
    match value {
        Some(v) if !v.values.is_empty() => {
            let mut out = String::from("{\n");
            for field in &v.values {
                format_field(&mut out, field, 0);
            }
            out.push('}');
            out
        }
        _ => "{}".into(),
    }
}

/// go-micro's `formatEndpoint`: tab-indented `name type`, nested in braces.
/// Names are printed as registered (go-micro lowercased them, which made
/// `userName` read `username`, a name calls reject): the proto field name,
/// which `micro call` accepts, as it accepts the lowerCamelCase JSON name.
fn format_field(out: &mut String, value: &Value, depth: usize) {
    let indent = "\t".repeat(depth + 1);
    let _ = write!(out, "{indent}{} {}", value.name, value.kind);
    if value.values.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" {\n");
    for field in &value.values {
        format_field(out, field, depth + 1);
    }
    let _ = writeln!(out, "{indent}}}");
}

/// `micro call SERVICE ENDPOINT JSON`: the reply, pretty-printed JSON.
pub async fn call(
    client: &Client,
    service: &str,
    endpoint: &str,
    request: &str,
) -> Result<String, CliError> {
    call_with(client, &CallArgs::new(service, endpoint, request)).await
}

/// `micro call` with its flags: metadata, one node's address, output form.
pub async fn call_with(client: &Client, args: &CallArgs) -> Result<String, CliError> {
    let (service, endpoint) = (args.service.as_str(), args.endpoint.as_str());
    micro_json::split_endpoint(endpoint).ok_or_else(|| {
        CliError::Usage(format!(
            "endpoint {endpoint:?} is not Handler.Method (e.g. Greeter.Hello)"
        ))
    })?;
    serde_json::from_str::<serde_json::Value>(&args.request)
        .map_err(|e| CliError::Usage(format!("request is not JSON: {e}")))?;
    let metadata = parse_metadata(&args.metadata)?;

    let dynamic = match &args.address {
        Some(address) => {
            let channel = direct_channel(address, client.options())?;
            DynamicClient::to_address(channel, 1, Duration::from_secs(60))
        }
        None => {
            let registry = client.registry();
            match registry.get_service(service).await {
                Ok(found) if found.iter().any(|s| !s.nodes.is_empty()) => {}
                Ok(_) => return Err(not_found(registry.as_ref(), service)),
                Err(e) if e.is_not_found() => return Err(not_found(registry.as_ref(), service)),
                Err(e) => {
                    return Err(CliError::Failed(format!(
                        "Registry [{}] get service {service}: {e}",
                        registry.name()
                    )));
                }
            }
            DynamicClient::new(client.clone(), 1, Duration::from_secs(60))
        }
    };
    let options = CallOptions {
        timeout: client.options().request_timeout,
        idempotent: false,
        metadata,
    };
    let reply = dynamic
        .call_endpoint(service, endpoint, args.request.as_bytes(), options)
        .await
        .map_err(|e| {
            let err = e.to_micro_error("go.micro.client");
            CliError::Failed(format!(
                "error calling {service} {endpoint}: {} ({} {})",
                err.detail, err.code, err.status
            ))
        })?;
    match args.output {
        Output::Json => {
            let value: serde_json::Value = serde_json::from_slice(&reply)
                .map_err(|e| CliError::Failed(format!("reply is not JSON: {e}")))?;
            Ok(pretty(&value))
        }
        Output::Text => {
            let mut text = String::from_utf8_lossy(&reply).into_owned();
            text.push('\n');
            Ok(text)
        }
    }
}

/// `--metadata k=v` flags as gRPC metadata (keys lowercased, as HTTP/2 sends them).
pub fn parse_metadata(pairs: &[String]) -> Result<tonic::metadata::MetadataMap, CliError> {
    let mut split = Vec::with_capacity(pairs.len());
    for pair in pairs {
        split.push(
            pair.split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--metadata {pair:?} is not KEY=VALUE")))?,
        );
    }
    micro_json::call_metadata(split).map_err(|e| CliError::Usage(format!("--{e}")))
}

/// A channel to one node, `host:port`, connected on first use.
fn direct_channel(
    address: &str,
    options: &micro::ClientOptions,
) -> Result<tonic::transport::Channel, CliError> {
    let bad = || CliError::Usage(format!("--address {address:?} is not HOST:PORT"));
    let authority: http::uri::Authority = address.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none_or(|p| p == 0)
        || authority.host().is_empty()
        || address.contains('@')
    {
        return Err(bad());
    }
    let endpoint =
        micro::client::endpoint_for(authority.as_str(), options).map_err(CliError::Usage)?;
    Ok(endpoint.connect_lazy())
}

/// JSON indented with tabs, as go-micro prints replies.
fn pretty(value: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut serializer).is_err() {
        return value.to_string();
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push('\n');
    text
}

/// `micro api`: serves the gateway until SIGTERM, SIGINT or SIGQUIT.
pub async fn run_api(micro: &MicroArgs, args: &ApiArgs) -> Result<(), CliError> {
    let options = args.gateway_options()?;
    let registry = micro::connect_registry(&micro.registry).await?;
    let client_options = micro.client.client_options().map_err(CliError::Usage)?;
    let client = micro::telemetry_client(registry.clone(), client_options);
    let shutdown = micro::server::shutdown_signal()
        .map_err(|e| CliError::Failed(format!("cannot install signal handlers: {e}")))?;
    let address = args.listen_address();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.address)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.address)))?;
    tracing::info!(
        "Starting [api] handler {} namespace {} resolver {} registry [{}]",
        args.handler,
        args.namespace,
        args.resolver,
        registry.name()
    );
    match &options.auth {
        Some(auth) => tracing::info!(
            "Auth [jwt] {:?} tokens required except on --auth_public_paths",
            auth.algorithm()
        ),
        None => tracing::warn!(
            "Auth off: every service in namespace {} is public, every endpoint callable without a token (--auth=jwt to require tokens)",
            args.namespace
        ),
    }
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let _trace = micro::telemetry::trace::init("go.micro.api").map_err(CliError::Usage)?;
    let readiness = micro::telemetry::health::Readiness::new();
    // Not ready until the catalog's first listing: set before the admin
    // listener answers, not by the task that follows the catalog later.
    readiness.set("registry", Err(waiting_for(registry.name())));
    let _admin = match &micro.ops.admin_address {
        Some(admin) => {
            let port = |a: &str| a.rsplit(':').next().map(str::to_string);
            if port(admin) == port(&args.address) && port(admin).is_some_and(|p| p != "0") {
                return Err(CliError::Usage(
                    "--admin_address must not share the gateway's public port (--address)".into(),
                ));
            }
            let admin = micro::telemetry::admin::AdminServer::bind(admin, readiness.clone())
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            Some(AbortOnDrop(admin.spawn()))
        }
        None => None,
    };
    let gateway = Gateway::new(client, options);
    let _registry_readiness = AbortOnDrop(tokio::spawn(follow_registry(
        gateway.catalog().view(),
        registry.name().to_string(),
        readiness.clone(),
    )));
    tracing::info!("Server [{scheme}] Listening on {local}");
    let stopping = readiness.clone();
    gateway
        .serve(listener, async move {
            shutdown.await;
            stopping.begin_stop();
        })
        .await
        .map_err(|e| CliError::Failed(format!("gateway failed: {e}")))?;
    tracing::info!("Server [http] Stopped");
    Ok(())
}

fn waiting_for(registry: &str) -> String {
    format!("waiting for the first listing of registry [{registry}]")
}

/// The gateway's `registry` readiness: not ready until the first listing
/// (every path would be a false 404). Once it has listed, an unreachable
/// registry only degrades it: it keeps routing from the last listing, which
/// beats taking every gateway out of its load balancer at once when the
/// registry is down; `/health/ready` says so under `degraded`.
async fn follow_registry(
    mut view: tokio::sync::watch::Receiver<micro_api::catalog::View>,
    registry: String,
    readiness: micro::telemetry::health::Readiness,
) {
    use micro_api::catalog::View;
    let mut listed = false;
    loop {
        let current = view.borrow_and_update().clone();
        match current {
            View::Waiting => readiness.set(
                "registry",
                Err(format!(
                    "waiting for the first listing of registry [{registry}]"
                )),
            ),
            View::Listed => {
                listed = true;
                readiness.set("registry", Ok(()));
                readiness.note("registry", None);
            }
            View::Unreachable(why) if listed => readiness.note(
                "registry",
                Some(format!(
                    "registry [{registry}] unreachable ({why}); routing from the last listing"
                )),
            ),
            View::Unreachable(why) => readiness.set(
                "registry",
                Err(format!("registry [{registry}] unreachable: {why}")),
            ),
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a parsed command line; what to print on stdout, or why it failed.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    match &cli.command {
        Command::Api(args) => run_api(&cli.micro, args).await.map(|()| String::new()),
        Command::List {
            what: ListWhat::Services,
        } => {
            let registry = micro::connect_registry(&cli.micro.registry).await?;
            list_services(registry.as_ref()).await
        }
        Command::Get {
            what: GetWhat::Service { name },
        } => {
            let registry = micro::connect_registry(&cli.micro.registry).await?;
            get_service(registry.as_ref(), name).await
        }
        Command::Call(args) => {
            // One node by address needs no registry (as in go-micro).
            let registry: micro_registry::SharedRegistry = if args.address.is_some() {
                std::sync::Arc::new(micro_registry::memory::MemoryRegistry::new())
            } else {
                micro::connect_registry(&cli.micro.registry).await?
            };
            let options = cli.micro.client.client_options().map_err(CliError::Usage)?;
            let client = Client::new(registry, options);
            call_with(&client, args).await
        }
        Command::New(args) => new::run(args),
        Command::Health(args) => {
            let options = cli.micro.client.client_options().map_err(CliError::Usage)?;
            let registry = micro::connect_registry(&cli.micro.registry).await?;
            health::health_with(registry.as_ref(), args, &options).await
        }
        Command::Web(args) => web::run(&cli.micro, args).await.map(|()| String::new()),
    }
}
