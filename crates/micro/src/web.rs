//! HTTP services that register themselves: go-micro's `web` package, on
//! axum.
//!
//! A web service serves an [`axum::Router`] and registers under a go-micro
//! web name (`go.micro.web.NAME`) with go-micro's web record: one node at
//! the advertised `host:port`, one endpoint per route pattern added with
//! [`WebBuilder::route`]. `micro web` lists it and proxies `/NAME/…` to it;
//! `micro api --handler=http` (or `web`) routes to it. Its lifecycle is an
//! RPC server's ([`micro_server::lifecycle`]): listen, register, renew,
//! repair a lost registration; on SIGTERM turn not ready and deregister,
//! then stop accepting and let requests in flight finish. The same flags
//! (`--server_address`, `--server_advertise`, registry, TLS, admin
//! listener), the same readiness (`/health/ready` on the admin listener),
//! the same HTTP metrics and traces as the gateway
//! (`micro_api_requests_total{handler="web"}`), and the listener limits of
//! [`micro_serve`] (connection budget, header timeout).
//!
//! Handlers call services through the service's [`Client`], which every
//! request carries as an extension:
//!
//! ```no_run
//! use axum::Extension;
//! use axum::routing::get;
//!
//! async fn hello(Extension(client): Extension<micro::Client>) -> String {
//!     // e.g. UserClient::new(client.service("go.micro.srv.user"))
//!     format!("{} nodes known", client.registry().name())
//! }
//!
//! # async fn demo(args: micro::config::MicroArgs) -> Result<(), micro::Error> {
//! let service = micro::Service::new("go.micro.web.greeter", &args).await?;
//! service
//!     .web()
//!     .route("/hello", get(hello))
//!     .bind()
//!     .await? // listens
//!     .run()
//!     .await?; // registers; until SIGTERM: deregister, drain
//! service.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::MethodRouter;
use micro_client::Client;
use micro_registry::{Endpoint, Metadata, Node, Service as Registration, SharedRegistry};
use micro_serve::{AbortOnDrop, ServeOptions};
use micro_server::{Readiness, Registrar, ServerError, ServerOptions, lifecycle};
use tokio::net::TcpListener;

/// The namespace of go-micro's web services: `micro web` lists the
/// services under it, and `go.micro.web.user` is at `/user/`.
pub const NAMESPACE: &str = "go.micro.web";

/// Builds a [`WebServer`]; from [`Service::web`](crate::Service::web).
pub struct WebBuilder {
    name: String,
    version: String,
    metadata: Metadata,
    registry: SharedRegistry,
    options: ServerOptions,
    serve: ServeOptions,
    readiness: Readiness,
    client: Client,
    router: Router,
    endpoints: Vec<Endpoint>,
}

impl fmt::Debug for WebBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("endpoints", &self.endpoints.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl WebBuilder {
    pub(crate) fn new(
        name: &str,
        version: &str,
        registry: SharedRegistry,
        options: ServerOptions,
        readiness: Readiness,
        client: Client,
    ) -> WebBuilder {
        WebBuilder {
            name: name.to_string(),
            version: version.to_string(),
            metadata: Metadata::new(),
            registry,
            serve: ServeOptions {
                shutdown_grace: options.shutdown_grace,
                on_connection: Some(|| Box::new(micro_telemetry::api::OpenConnection::new())),
                ..ServeOptions::new("http")
            },
            options,
            readiness,
            client,
            router: Router::new(),
            endpoints: Vec::new(),
        }
    }

    /// Adds a route, and registers its pattern as an endpoint (go-micro's
    /// web endpoints are its route patterns).
    pub fn route(mut self, path: &str, method_router: MethodRouter) -> Self {
        self.endpoints.push(endpoint(path));
        self.router = self.router.route(path, method_router);
        self
    }

    /// Merges a router whose routes are not registered as endpoints (add
    /// them with [`endpoint`](Self::endpoint)); state already given
    /// (`Router::with_state`).
    pub fn router(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Changes the router as it stands, e.g. `|router| router.layer(edge)`:
    /// like `Router::layer`, a layer applies to the routes added before it.
    pub fn map_router(mut self, change: impl FnOnce(Router) -> Router) -> Self {
        self.router = change(self.router);
        self
    }

    /// Registers an endpoint named by a route pattern (`/user/{id}`).
    pub fn endpoint(mut self, pattern: &str) -> Self {
        self.endpoints.push(endpoint(pattern));
        self
    }

    /// Node metadata to register, besides `registry`, `server` and
    /// `protocol` (and `secure` with TLS).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The listener's limits (connection budget, timeouts); the gateway's
    /// defaults otherwise.
    pub fn serve_options(mut self, serve: ServeOptions) -> Self {
        self.serve = ServeOptions { tls: None, ..serve };
        self
    }

    /// A dependency check: not ready while it fails (see
    /// [`micro_server::ServerBuilder::readiness_check`]).
    pub fn readiness_check<F, Fut>(self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.readiness.add_check(name, check);
        self
    }

    /// Binds the listener and prepares the registration; nothing is
    /// registered until [`WebServer::run`].
    pub async fn bind(self) -> Result<WebServer, ServerError> {
        let WebBuilder {
            name,
            version,
            mut metadata,
            registry,
            options,
            mut serve,
            readiness,
            client,
            router,
            endpoints,
        } = self;
        lifecycle::check_options(&options)?;
        tracing::info!("Starting [service] {name}");
        if let Some(tls) = &options.tls {
            if tls.is_mutual() {
                return Err(ServerError::Options(
                    "web services serve TLS without client certificates: drop --server_tls_client_ca"
                        .into(),
                ));
            }
            let config = micro_tls::reloadable_server_config(
                tls.cert.path(),
                tls.key.path(),
                &[b"h2", b"http/1.1"],
            )
            .map_err(|e| ServerError::Options(format!("server TLS: {e}")))?;
            serve.tls = Some(config);
        }
        let (listener, local_addr) = lifecycle::listen(&options).await?;
        let mode = if options.tls.is_some() { " (TLS)" } else { "" };
        tracing::info!("Server [http] Listening on {local_addr}{mode}");
        let advertised = lifecycle::advertise(&options, local_addr, "http")?;

        metadata.insert("registry".into(), registry.name().to_string());
        metadata.insert("server".into(), "http".into());
        metadata.insert("protocol".into(), "http".into());
        if options.tls.is_some() {
            metadata.insert(micro_server::tls::SECURE_METADATA.into(), "true".into());
        }
        let registration = Registration {
            nodes: vec![Node {
                id: format!("{name}-{}", uuid::Uuid::new_v4()),
                address: advertised,
                metadata,
            }],
            name,
            version,
            metadata: Metadata::new(),
            endpoints,
        };
        readiness.set("registry", Err("not registered yet".into()));
        let router =
            router
                .layer(axum::Extension(client))
                .layer(micro_telemetry::api::ApiLayer::new(
                    &registration.name,
                    "web",
                ));
        Ok(WebServer {
            registered: tokio::sync::watch::channel(false).0,
            registry,
            options,
            serve,
            registration,
            listener,
            local_addr,
            router,
            readiness,
        })
    }
}

/// A route pattern as go-micro's endpoint: named by the pattern, with the
/// `path` and `handler` metadata go-micro's api endpoints carry.
fn endpoint(pattern: &str) -> Endpoint {
    let mut metadata = Metadata::new();
    metadata.insert("path".into(), pattern.into());
    metadata.insert("handler".into(), "web".into());
    Endpoint {
        name: pattern.to_string(),
        request: None,
        response: None,
        metadata,
    }
}

/// A bound web service, ready to [`run`](WebServer::run).
pub struct WebServer {
    registered: tokio::sync::watch::Sender<bool>,
    registry: SharedRegistry,
    options: ServerOptions,
    serve: ServeOptions,
    registration: Registration,
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    readiness: Readiness,
}

impl fmt::Debug for WebServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebServer")
            .field("name", &self.registration.name)
            .field("node", &self.node().id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl WebServer {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This service's node, as registered.
    pub fn node(&self) -> &Node {
        &self.registration.nodes[0]
    }

    /// What this service registers.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Turns true once registered, false after deregistering.
    pub fn registered(&self) -> tokio::sync::watch::Receiver<bool> {
        self.registered.subscribe()
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Serves until SIGTERM, SIGINT or SIGQUIT, then stops gracefully.
    pub async fn run(self) -> Result<(), ServerError> {
        let signal = micro_server::shutdown_signal().map_err(ServerError::Signals)?;
        self.run_until(signal).await
    }

    /// Serves until `shutdown` completes, then: not ready, deregister, stop
    /// accepting, let requests in flight finish (for at most
    /// `shutdown_grace`), return.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let WebServer {
            registered,
            registry,
            options,
            serve,
            registration,
            listener,
            local_addr: _,
            router,
            readiness,
        } = self;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut serving = AbortOnDrop::spawn(micro_serve::serve(listener, router, serve, async {
            let _ = stopped.await;
        }));
        let registrar = Registrar::start(registry, registration, options, readiness, registered);
        let early_exit =
            lifecycle::serve_registered(&mut serving, registrar, shutdown, std::future::ready(()))
                .await;
        let result = match early_exit {
            Some(result) => result,
            None => {
                let _ = stop.send(());
                // `serve` bounds the drain by `shutdown_grace` itself.
                (&mut serving).await
            }
        };
        match result {
            Ok(Ok(())) => {
                tracing::info!("Server [http] Stopped");
                Ok(())
            }
            Ok(Err(e)) => Err(ServerError::Http(e)),
            Err(join) => Err(ServerError::Task(join)),
        }
    }
}
