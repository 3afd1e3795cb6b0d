//! The admin HTTP listener (`--admin_address`): `/health/live`,
//! `/health/ready` and `/metrics`, on its own port, off by default.
//!
//! - `/health/live`: 200 while the process serves HTTP at all.
//! - `/health/ready`: 200 when ready, else 503; the JSON body names every
//!   condition and says which fails (`{"status":"NOT_SERVING","checks":{"registry":"ok","store":"..."}}`).
//! - `/metrics`: every metric, Prometheus text format.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;

use micro_server::Readiness;

/// A bound admin listener; [`spawn`](AdminServer::spawn) serves it.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    readiness: Readiness,
}

/// `:9090` → `0.0.0.0:9090`; anything else as given.
fn listen_address(address: &str) -> String {
    if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

impl AdminServer {
    /// Binds `address` (`host:port`, or `:port` for every interface).
    pub async fn bind(address: &str, readiness: Readiness) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(listen_address(address))
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("admin listener on {address}: {e}"))
            })?;
        let local_addr = listener.local_addr()?;
        Ok(AdminServer {
            listener,
            local_addr,
            readiness,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves in a background task until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tracing::info!(
            "Server [admin] Listening on {} (/health/live, /health/ready, /metrics)",
            self.local_addr
        );
        tokio::spawn(serve(self.listener, self.readiness))
    }
}

async fn serve(listener: TcpListener, readiness: Readiness) {
    // Probes and a scraper: a small budget, and connections that idle go.
    let options = micro_serve::ServeOptions {
        max_connections: 64,
        max_connections_per_ip: 16,
        idle_timeout: Duration::from_secs(30),
        http2: false,
        ..micro_serve::ServeOptions::new("admin")
    };
    let served = micro_serve::serve(listener, router(readiness), options, std::future::pending());
    if let Err(e) = served.await {
        tracing::error!("Server [admin] stopped: {e}");
    }
}

/// The admin routes: `/health/live`, `/health/ready`, `/metrics`, GET (and
/// HEAD) only.
pub fn router(readiness: Readiness) -> axum::Router {
    let only_get = || async { text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n") };
    axum::Router::new()
        .route(
            "/health/live",
            get(|| async { text(StatusCode::OK, "ok\n") }).fallback(only_get),
        )
        .route(
            "/health/ready",
            get(move || async move { ready(&readiness) }).fallback(only_get),
        )
        .route(
            "/metrics",
            get(|| async {
                with_type(
                    StatusCode::OK,
                    crate::metrics::CONTENT_TYPE,
                    crate::metrics::encode(),
                )
            })
            .fallback(only_get),
        )
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not found: try /health/live, /health/ready or /metrics\n",
            )
        })
}

/// `/health/ready`: 200 or 503, the JSON naming every check.
fn ready(readiness: &Readiness) -> Response<Full<Bytes>> {
    let report = readiness.report();
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = report.to_json().to_string();
    body.push('\n');
    with_type(status, "application/json", body)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.to_string())
}

fn with_type(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;

    async fn answer(
        readiness: &Readiness,
        method: &Method,
        path: &str,
    ) -> axum::response::Response {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        match router(readiness.clone()).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    async fn body(response: axum::response::Response) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn ready_names_the_failing_check() {
        let readiness = Readiness::new();
        readiness.set("registry", Ok(()));
        readiness.set("store", Err("connection refused".into()));
        let response = answer(&readiness, &Method::GET, "/health/ready").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let json: serde_json::Value = serde_json::from_str(&body(response).await).expect("json");
        assert_eq!(json["status"], "NOT_SERVING");
        assert_eq!(json["checks"]["store"], "connection refused");
        assert_eq!(json["checks"]["registry"], "ok");

        readiness.set("store", Ok(()));
        assert_eq!(
            answer(&readiness, &Method::GET, "/health/ready")
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            answer(&readiness, &Method::GET, "/health/live")
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            answer(&readiness, &Method::GET, "/nope").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&readiness, &Method::POST, "/metrics").await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let readiness = Readiness::new();
        let admin = AdminServer::bind("127.0.0.1:0", readiness)
            .await
            .expect("bind");
        let addr = admin.local_addr();
        let task = admin.spawn();
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let response = sender
            .send_request(
                http::Request::get("/metrics")
                    .body(http_body_util::Empty::<Bytes>::new())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            crate::metrics::CONTENT_TYPE
        );
        task.abort();
    }
}
