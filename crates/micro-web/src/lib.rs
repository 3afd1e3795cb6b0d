//! `micro web`: go-micro v2's dashboard, done as people expect today.
//!
//! One page (HTML, CSS and plain JavaScript built into the binary) shows the
//! registered services with their versions; per service its nodes (id,
//! address, metadata, gRPC health) and endpoints (request and response
//! shapes); and a form that calls an endpoint with JSON through the same
//! path as `micro call` ([`micro_json::DynamicClient`]: gRPC reflection
//! first, `application/grpc+json` for go-micro services). The page follows
//! the registry watch live over Server-Sent Events.
//!
//! ```no_run
//! # async fn run(registry: micro_registry::SharedRegistry) -> std::io::Result<()> {
//! use micro_client::{Client, ClientOptions};
//! let client = Client::new(registry, ClientOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8082").await?;
//! micro_web::serve(client, listener, micro_web::WebOptions::default(), std::future::pending()).await
//! # }
//! ```
//!
//! Web services (`go.micro.web.NAME`, e.g. `micro::web` services and
//! go-micro's `web.NewService`) are served under `/NAME/`, WebSockets
//! included, as go-micro's dashboard did.
//!
//! The JSON API the page uses is described in `docs/web.md`. The call form
//! can call any service, so the dashboard listens on loopback by default;
//! requests from other sites are refused (see [`api`]).

pub mod api;
pub mod assets;
pub mod health;
pub mod live;
mod sse;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use micro_client::Client;
use micro_json::DynamicClient;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use live::Snapshot;

/// go-micro's `micro web` port, on loopback.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8082";

/// How the dashboard serves.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Longest a call from the form may take.
    pub call_timeout: Duration,
    /// Longest each node's health check may take.
    pub health_timeout: Duration,
    /// Largest `POST /api/call` body.
    pub max_body_bytes: usize,
    /// Live-update (SSE) streams open at once; more are refused with 503.
    pub max_streams: usize,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Between SSE keep-alive comments.
    pub keep_alive: Duration,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Requests must name one of these hosts (`Host`), any port; empty: any.
    /// On a loopback address only loopback names are accepted, which stops
    /// DNS rebinding (a page on another site reaching the dashboard).
    pub allowed_hosts: Vec<String>,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            call_timeout: Duration::from_secs(10),
            health_timeout: Duration::from_secs(1),
            max_body_bytes: 1024 * 1024,
            max_streams: 32,
            max_connections: 256,
            keep_alive: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(10),
            allowed_hosts: loopback_hosts(),
        }
    }
}

impl WebOptions {
    /// The defaults for a dashboard listening on `address`: loopback host
    /// names only on a loopback address, any host name otherwise.
    pub fn for_address(address: &SocketAddr) -> Self {
        WebOptions {
            allowed_hosts: if address.ip().is_loopback() {
                loopback_hosts()
            } else {
                Vec::new()
            },
            ..WebOptions::default()
        }
    }
}

fn loopback_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// `127.0.0.1:8082`, `[::1]:8082`, `localhost:8082`, or go's `:8082` (every
/// interface): the address to listen on.
pub fn parse_address(address: &str) -> Result<SocketAddr, String> {
    let address = address.trim();
    let bad = || {
        format!(
            "{address:?} is not an address to listen on (expected HOST:PORT, e.g. 127.0.0.1:8082, 0.0.0.0:8082 or :8082)"
        )
    };
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Some(port) = address.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    address.parse().map_err(|_| bad())
}

/// The dashboard's state: the live registry view, the JSON caller, limits.
#[derive(Debug)]
pub struct Web {
    pub(crate) client: Client,
    pub(crate) dynamic: DynamicClient,
    pub(crate) proxy: micro_api::WebProxy,
    pub(crate) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) options: WebOptions,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Web {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Web {
    /// Starts following the registry of `client`. Inside a tokio runtime.
    pub fn new(client: Client, options: WebOptions) -> Arc<Web> {
        let (snapshot, follower) = live::spawn(client.registry().clone());
        Arc::new(Web {
            dynamic: DynamicClient::new(client.clone(), 256, Duration::from_secs(30)),
            proxy: micro_api::WebProxy::new(
                client.clone(),
                options.max_body_bytes,
                options.call_timeout,
            ),
            client,
            snapshot,
            streams: Arc::new(Semaphore::new(options.max_streams)),
            options,
            follower,
        })
    }

    /// The registry as last seen.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Waits until the registry has been listed once (at most `budget`).
    pub async fn listed(&self, budget: Duration) -> bool {
        let mut rx = self.snapshot.clone();
        matches!(
            tokio::time::timeout(budget, rx.wait_for(|s| s.seq > 0)).await,
            Ok(Ok(_))
        )
    }

    /// Stops the live streams (they end, so connections can close).
    fn stop_streams(&self) {
        self.follower.abort();
        self.streams.close();
    }
}

/// Serves the dashboard on `listener` until `shutdown` completes; then stops
/// accepting, ends the live streams and lets requests in flight finish
/// (at most five seconds).
pub async fn serve(
    client: Client,
    listener: TcpListener,
    options: WebOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let web = Web::new(client, options);
    serve_web(web, listener, shutdown).await
}

/// [`serve`] for a [`Web`] made already.
pub async fn serve_web(
    web: Arc<Web>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let options = micro_serve::ServeOptions {
        max_connections: web.options.max_connections,
        // A local tool: the budget is the whole listener's.
        max_connections_per_ip: 0,
        header_read_timeout: web.options.header_read_timeout,
        max_headers: 64,
        http2: false,
        shutdown_grace: Duration::from_secs(5),
        ..micro_serve::ServeOptions::new("web")
    };
    let stopping = web.clone();
    let shutdown = async move {
        shutdown.await;
        // Live event streams never end on their own.
        stopping.stop_streams();
    };
    micro_serve::serve(listener, api::router(web), options, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_go_and_rust_forms() {
        assert_eq!(
            parse_address("127.0.0.1:8082"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8082)))
        );
        assert_eq!(
            parse_address(":8082"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8082)))
        );
        assert_eq!(
            parse_address("localhost:0"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        assert!(parse_address("[::1]:8082").is_ok_and(|a| a.ip().is_loopback()));
        for bad in ["", "8082", "nohost:1", ":99999", "127.0.0.1", "1.2.3.4:x"] {
            let e = parse_address(bad).expect_err(bad);
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn loopback_addresses_limit_host_names() {
        let local = WebOptions::for_address(&SocketAddr::from(([127, 0, 0, 1], 8082)));
        assert!(local.allowed_hosts.contains(&"localhost".to_string()));
        let open = WebOptions::for_address(&SocketAddr::from(([0, 0, 0, 0], 8082)));
        assert!(open.allowed_hosts.is_empty());
    }
}
