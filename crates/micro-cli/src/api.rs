//! `micro api`: the API gateway. HTTP requests become calls to services by
//! name (`--handler` api, rpc, http or web), or events on the broker
//! (`--handler=event`, on `--broker`), behind edge limits, TLS, auth and
//! rate limits; the admin listener (`--admin_address`) serves health and
//! metrics.

use std::time::Duration;

use clap::Args;
use micro::config::MicroArgs;
use micro_api::{ApiOptions, Gateway, HandlerKind};
use micro_serve::AbortOnDrop;

use crate::CliError;

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

    /// How requests become calls: api (go.api.Request/Response), rpc (JSON ↔ the endpoint's messages), http (reverse proxy), web (the same, for web services: --namespace go.micro.web), event (each request published as a go.api.Event on the --broker, topic <namespace>.<first path segment>)
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

    /// A relayed stream (WebSocket, event stream) with no message either way for this long is closed
    #[arg(long = "stream_idle_timeout", visible_alias = "stream-idle-timeout", env = "MICRO_API_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub stream_idle_timeout: Duration,

    /// Largest message a WebSocket client may send (bytes; K/KiB and M/MiB suffixes allowed)
    #[arg(long = "stream_max_message_bytes", visible_alias = "stream-max-message-bytes", env = "MICRO_API_STREAM_MAX_MESSAGE_BYTES", default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub stream_max_message_bytes: usize,

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

    /// Requests worked on at once; more are refused at once with 503 and Retry-After: `auto` (adaptive, a gradient limiter), a number, or `off` (also `0`)
    #[arg(
        long = "max_concurrent",
        visible_alias = "max-concurrent",
        env = "MICRO_API_MAX_CONCURRENT",
        default_value = "auto",
        value_name = "auto|N|off"
    )]
    pub max_concurrent: micro_serve::admission::ConcurrencyLimit,
}

impl EdgeArgs {
    /// Applies these flags to `options`; files are read here, so a bad
    /// certificate, key or glob is a usage error.
    pub fn apply(&self, options: &mut ApiOptions) -> Result<(), CliError> {
        options.max_connections_per_ip = self.max_connections_per_ip as usize;
        options.idle_timeout = self.idle_timeout;
        options.max_concurrent = self.max_concurrent;
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
            stream_idle_timeout: self.stream_idle_timeout,
            stream_max_message_bytes: self.stream_max_message_bytes,
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

/// `micro api`: serves the gateway until SIGTERM, SIGINT or SIGQUIT.
pub async fn run(micro: &MicroArgs, args: &ApiArgs) -> Result<(), CliError> {
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
    let readiness = micro::Readiness::new();
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
            Some(AbortOnDrop::new(admin.spawn()))
        }
        None => None,
    };
    // The event handler publishes on the broker the flags name; the others
    // use none.
    let broker = match args.handler {
        HandlerKind::Event => {
            let broker = micro::connect_broker(&micro.broker, registry.clone())?;
            tracing::info!("Broker [{}] publishing events", broker.name());
            Some(broker)
        }
        _ => None,
    };
    let gateway = match &broker {
        Some(broker) => Gateway::with_broker(client, options, broker.clone()),
        None => Gateway::new(client, options),
    };
    let _registry_readiness = AbortOnDrop::spawn(follow_registry(
        gateway.catalog().view(),
        registry.name().to_string(),
        readiness.clone(),
    ));
    tracing::info!("Server [{scheme}] Listening on {local}");
    let stopping = readiness.clone();
    gateway
        .serve(listener, async move {
            shutdown.await;
            stopping.begin_stop();
        })
        .await
        .map_err(|e| CliError::Failed(format!("gateway failed: {e}")))?;
    if let Some(broker) = broker {
        broker.close().await;
    }
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
    readiness: micro::Readiness,
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
