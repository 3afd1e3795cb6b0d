//! Helpers shared by the gateway's tests: a gateway on 127.0.0.1:0, a small
//! HTTP client, waiting for nodes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use micro_api::{ApiOptions, Gateway};
use micro_client::{Client, ClientOptions};
use micro_registry::SharedRegistry;
use micro_testing::AbortOnDrop;
use tokio::sync::oneshot;
use tower::ServiceExt;

/// A gateway serving on a real socket; stopped by `stop` (or when dropped,
/// by aborting its task).
pub struct RunningGateway {
    pub gateway: Gateway,
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<AbortOnDrop<std::io::Result<()>>>,
}

impl RunningGateway {
    pub async fn start(registry: SharedRegistry, options: ApiOptions) -> RunningGateway {
        Self::start_with_client(Client::new(registry, ClientOptions::default()), options).await
    }

    /// A gateway whose client selects nodes in turn (tests that count calls
    /// per node).
    #[allow(dead_code)]
    pub async fn start_round_robin(
        registry: SharedRegistry,
        options: ApiOptions,
    ) -> RunningGateway {
        let round_robin = ClientOptions {
            selector: micro_client::Strategy::RoundRobin,
            ..ClientOptions::default()
        };
        Self::start_with_client(Client::new(registry, round_robin), options).await
    }

    pub async fn start_with_client(client: Client, options: ApiOptions) -> RunningGateway {
        let gateway = Gateway::new(client, options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        let task = AbortOnDrop::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        RunningGateway {
            gateway,
            address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("gateway stops")
                .expect("gateway task")
                .expect("gateway serve");
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn http_client() -> HttpClient<HttpConnector, Full<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

/// Sends `request` over HTTP/1 and reads the whole answer.
pub async fn send(
    client: &HttpClient<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .map_err(|_| "no answer in 20 s".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(
    client: &HttpClient<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<Reply, String> {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    send(client, request).await
}

/// Drives the router without sockets.
pub async fn oneshot(router: axum::Router, request: Request<Body>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(20), router.oneshot(request))
        .await
        .expect("router answers in 20 s")
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Waits (10 s at most) until `client` knows `n` nodes of `service`.
pub async fn wait_for_nodes(client: &Client, service: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let wanted = format!("{service}: {n} nodes");
    micro_testing::nodes::wait_for_nodes(
        &wanted,
        deadline,
        || client.nodes(service),
        |nodes| nodes.len() == n,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Asserts `reply` is go-micro error JSON with `code` as status and code.
pub fn assert_micro_error(reply: &Reply, code: u16) -> serde_json::Value {
    assert_eq!(reply.status.as_u16(), code, "{}", reply.text());
    assert_eq!(
        reply.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "{reply:?}"
    );
    let json = reply.json();
    assert_eq!(json["code"], code, "{json}");
    for key in ["id", "detail", "status"] {
        assert!(json[key].is_string(), "{key} missing: {json}");
    }
    json
}
