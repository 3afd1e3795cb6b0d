//! The `micro api` gateway: HTTP in, calls to services by name out.
//!
//! The data flow of one request, each stage its own module:
//!
//! ```text
//! HTTP request ─ edge (limits, CORS, deadline) ─ resolver (path → service, endpoint)
//!   ─ catalog (is it registered?) ─ handler (api | rpc | http)
//!   ─ toolkit client (node set → round robin → call, failover) ─ response
//!   └ any failure: go-micro error JSON, HTTP status = its code (error)
//! ```
//!
//! - [`resolver`]: go-micro's `micro` path rules (`/user/say/hello` →
//!   `go.micro.api.user` `Say.Hello`).
//! - `api` handler: the HTTP request as a `go.api.Request`, the service's
//!   `go.api.Response` as the HTTP response ([`convert`]).
//! - `rpc` handler: JSON ↔ the endpoint's own messages, for any toolkit service,
//!   with schemas from gRPC server reflection, or as `application/grpc+json`
//!   for a service without (go-micro's); see [`dynamic`] and `micro-json`.
//!   Both handlers forward the request headers as gRPC metadata
//!   ([`convert::to_metadata`]).
//! - `http` (and `web`) handler: a reverse proxy to a registered HTTP
//!   service, dialling registered node addresses only; WebSocket upgrades
//!   are joined through. [`WebProxy`] is the same proxy for other front
//!   ends (`micro web` serves web services under `/NAME/` with it).
//! - `event` handler: each request published on the broker as a
//!   `go.api.Event` (topic from the path), as go-micro's; see
//!   [`Gateway::with_broker`].
//!
//! [`Gateway::router`] is an `axum::Router`, testable without sockets;
//! [`Gateway::serve`] runs it on a listener with the connection-level limits.
//!
//! ```no_run
//! # async fn demo(client: micro_client::Client) -> std::io::Result<()> {
//! use micro_api::{ApiOptions, Gateway, HandlerKind};
//!
//! let gateway = Gateway::new(client, ApiOptions { handler: HandlerKind::Api, ..ApiOptions::default() });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener, std::future::pending()).await
//! # }
//! ```

pub mod auth;
pub mod catalog;
pub mod convert;
pub mod dynamic;
pub mod edge;
mod error;
mod handler;
pub mod ratelimit;
pub mod resolver;
mod routes;
mod serve;
pub mod tls;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use micro_client::Client;

pub use catalog::Catalog;
pub use dynamic::{CallOptions, DynamicClient, JsonInput};
pub use error::{ApiError, GATEWAY_ID};
pub use resolver::{ResolveError, Resolver, Route};
pub use serve::RemoteAddr;

/// The gateway's version, answered at `/`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How requests become calls (`--handler`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HandlerKind {
    /// `go.api.Request` → `Handler.Method` → `go.api.Response`.
    Api,
    /// JSON → the endpoint's request message → reply as JSON.
    #[default]
    Rpc,
    /// Reverse proxy to the HTTP service named by the first path part.
    Http,
    /// go-micro's `web` handler: the `http` proxy (WebSockets included),
    /// for web services (`--namespace go.micro.web`).
    Web,
    /// go-micro's `event` handler: each request published as a
    /// `go.api.Event` on topic `<namespace>.<first path segment>`.
    Event,
}

impl HandlerKind {
    pub const NAMES: [&'static str; 5] = ["api", "rpc", "http", "web", "event"];

    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Api => "api",
            HandlerKind::Rpc => "rpc",
            HandlerKind::Http => "http",
            HandlerKind::Web => "web",
            HandlerKind::Event => "event",
        }
    }
}

impl fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HandlerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "api" => Ok(HandlerKind::Api),
            "rpc" => Ok(HandlerKind::Rpc),
            "http" | "proxy" => Ok(HandlerKind::Http),
            "web" => Ok(HandlerKind::Web),
            "event" => Ok(HandlerKind::Event),
            other => Err(format!(
                "unknown handler {other:?} (expected one of: {})",
                HandlerKind::NAMES.join(", ")
            )),
        }
    }
}

/// The gateway's HTTP proxy for other front ends: forwards a request
/// (WebSockets too) to a node of a registered HTTP service through the
/// client's retry and balance stages, as `--handler=http` does.
#[derive(Clone, Debug)]
pub struct WebProxy {
    client: Client,
    proxy: handler::http::ProxyClient,
    max_body_bytes: usize,
    timeout: Duration,
}

impl WebProxy {
    /// A proxy calling through `client`; bodies up to `max_body_bytes`,
    /// answers within `timeout` (504 beyond).
    pub fn new(client: Client, max_body_bytes: usize, timeout: Duration) -> Self {
        WebProxy {
            proxy: handler::http::ProxyClient::new(client.options()),
            client,
            max_body_bytes,
            timeout,
        }
    }

    /// Sends `request` to `service` as `path` (path and query), telling it
    /// the prefix it is served under (`X-Micro-Web-Base-Path`, as go-micro's
    /// dashboard did). Failures are go-micro error JSON.
    pub async fn forward(
        &self,
        service: &str,
        path: String,
        base_path: &str,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let upstream = handler::http::Upstream {
            service,
            path,
            deadline,
            max_body_bytes: self.max_body_bytes,
            base_path: Some(base_path),
        };
        let forwarded = handler::http::forward(&self.client, &self.proxy, upstream, request);
        match tokio::time::timeout_at(deadline, forwarded).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => e.into_response(),
            Err(_) => ApiError::new(504, format!("service {service} did not answer in time"))
                .into_response(),
        }
    }
}

/// Gateway behaviour; every limit is on by default.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Which handler serves every path but `/`.
    pub handler: HandlerKind,
    /// Prefix of resolved service names (`go.micro.api`).
    pub namespace: String,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Largest total size of request headers, names and values (431 beyond;
    /// a longer URI is 414).
    pub max_header_bytes: usize,
    /// Time a connection has from accept to its first complete request
    /// head (TLS handshake and HTTP version detection included; HTTP/1 and
    /// HTTP/2), and an HTTP/1 client to send any later head.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Time to answer a request, calls included (504 beyond).
    pub request_timeout: Duration,
    /// Origins allowed cross-origin (`*` for any); empty: CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// Connections open at once. A new one past it closes the connection
    /// idle the longest; it is refused only when all are serving requests.
    pub max_connections: usize,
    /// Connections open at once from one client IP (0: no cap); past it,
    /// that IP's longest-idle connection is closed.
    pub max_connections_per_ip: usize,
    /// Serve HTTPS (HTTP/1.1 and h2 by ALPN) with this configuration; see
    /// [`tls::server_config`].
    pub tls: Option<Arc<tls::ServerConfig>>,
    /// Services whose schemas the rpc handler keeps.
    pub schema_cache_size: usize,
    /// How long a cached schema is used before it is fetched again.
    pub schema_ttl: Duration,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// `--auth=jwt`: tokens required except on public paths; `None`: every
    /// service in the namespace is public.
    pub auth: Option<auth::AuthConfig>,
    /// Request rates per client IP and per route (off by default).
    pub rate_limits: ratelimit::RateLimits,
    /// Requests worked on at once (`--max_concurrent`): adaptive by default;
    /// more are refused at once with 503 and `Retry-After` (see
    /// [`micro_serve::admission`]).
    pub max_concurrent: micro_serve::admission::ConcurrencyLimit,
    /// A relayed stream (WebSocket, event stream) with no message either
    /// way for this long is closed.
    pub stream_idle_timeout: Duration,
    /// Largest message a WebSocket client may send.
    pub stream_max_message_bytes: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            handler: HandlerKind::default(),
            namespace: "go.micro.api".into(),
            max_body_bytes: 1024 * 1024,
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            cors_allowed_origins: Vec::new(),
            max_connections: 1024,
            max_connections_per_ip: 256,
            tls: None,
            schema_cache_size: 256,
            schema_ttl: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            auth: None,
            rate_limits: ratelimit::RateLimits::default(),
            max_concurrent: micro_serve::admission::ConcurrencyLimit::default(),
            stream_idle_timeout: Duration::from_secs(300),
            stream_max_message_bytes: 1024 * 1024,
        }
    }
}

/// The gateway: cheap to clone, all clones share the client, catalog and caches.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) options: ApiOptions,
    pub(crate) resolver: Resolver,
    pub(crate) routes: routes::Routes,
    pub(crate) client: Client,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) dynamic: DynamicClient,
    pub(crate) proxy: handler::http::ProxyClient,
    pub(crate) limiter: Option<Arc<ratelimit::Limiter>>,
    /// Where the event handler publishes.
    pub(crate) broker: Option<micro_broker::SharedBroker>,
    pub(crate) admission: Option<Arc<micro_serve::admission::Admission>>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("options", &self.inner.options)
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway calling through `client` (its registry, selector, retries
    /// and deadline). Starts following the registry's service list; must be
    /// called inside a tokio runtime.
    pub fn new(client: Client, options: ApiOptions) -> Gateway {
        Gateway::build(client, options, None)
    }

    /// A gateway whose `event` handler publishes on `broker` (the other
    /// handlers do not use it).
    pub fn with_broker(
        client: Client,
        options: ApiOptions,
        broker: micro_broker::SharedBroker,
    ) -> Gateway {
        Gateway::build(client, options, Some(broker))
    }

    fn build(
        client: Client,
        options: ApiOptions,
        broker: Option<micro_broker::SharedBroker>,
    ) -> Gateway {
        let catalog = Catalog::spawn(client.registry().clone());
        let limiter = ratelimit::Limiter::new(options.rate_limits);
        let admission = micro_serve::admission::Admission::new(
            options.max_concurrent,
            Some(micro_telemetry::admission::AdmissionTelemetry::new("api")),
        );
        let dynamic = DynamicClient::new(
            client.clone(),
            options.schema_cache_size,
            options.schema_ttl,
        );
        let proxy = handler::http::ProxyClient::new(client.options());
        Gateway {
            inner: Arc::new(Inner {
                resolver: Resolver::new(options.namespace.clone()),
                routes: routes::Routes::new(Resolver::new(options.namespace.clone())),
                options,
                client,
                catalog,
                dynamic,
                proxy,
                limiter,
                broker,
                admission,
            }),
        }
    }

    pub fn options(&self) -> &ApiOptions {
        &self.inner.options
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The registered services as the gateway sees them.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.catalog
    }

    /// The JSON caller the rpc handler uses.
    pub fn dynamic(&self) -> &DynamicClient {
        &self.inner.dynamic
    }

    /// The whole gateway as a router: `/` answers the version, every other
    /// path goes to the configured handler; limits, CORS and the request
    /// deadline apply to all.
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback_service(self.service())
    }

    /// The same as one tower service, without the router around it: what
    /// [`serve`](Self::serve) runs (a router would box, clone and match its
    /// route on every request). Its layers are plain tower layers for the
    /// same reason.
    pub fn service(
        &self,
    ) -> impl tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static {
        tower::ServiceBuilder::new()
            // Outermost: counts every answer (limits and timeouts included)
            // and continues the caller's trace.
            .layer(micro_telemetry::api::ApiLayer::new(
                "go.micro.api",
                self.inner.options.handler.as_str(),
            ))
            // Edge checks, then rate limits, then auth, then the handler
            // (all in `edge`, one future).
            .service(edge::GatewayEdge::new(self.inner.clone()))
    }

    /// Serves the gateway on `listener` until `shutdown` completes, then stops
    /// accepting and lets in-flight requests finish (up to `shutdown_grace`).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        serve::serve(self, listener, shutdown).await
    }
}
