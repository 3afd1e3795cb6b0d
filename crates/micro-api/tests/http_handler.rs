//! The http handler: a reverse proxy to registered HTTP services, dialling
//! registered node addresses only.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{RunningGateway, assert_micro_error, get, http_client, send};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use micro_api::{ApiOptions, HandlerKind};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};
use tokio::task::JoinHandle;

const SERVICE: &str = "go.micro.api.site";

/// A plain HTTP/1 server that describes each request it gets.
async fn start_site(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<Incoming>| async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let header = |n: &str| {
                            parts
                                .headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let text = serde_json::json!({
                            "site": name,
                            "method": parts.method.as_str(),
                            "uri": parts.uri.to_string(),
                            "host": header("host"),
                            "xff": header("x-forwarded-for"),
                            "secret": header("x-secret"),
                            "body": String::from_utf8_lossy(&body),
                        })
                        .to_string();
                        let response = http::Response::builder()
                            .header("content-type", "application/json")
                            .header("x-site", name)
                            .body(Full::new(Bytes::from(text)))
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, task)
}

async fn register(registry: &MemoryRegistry, id: &str, address: &str) {
    registry
        .register(
            &Service::new(SERVICE, "latest").with_node(Node::new(id, address)),
            RegisterOptions::default(),
        )
        .await
        .expect("register");
}

fn proxy_options() -> ApiOptions {
    ApiOptions {
        handler: HandlerKind::Http,
        ..ApiOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_round_robin_with_the_original_request() {
    let registry = Arc::new(MemoryRegistry::new());
    let (a, site_a) = start_site("a").await;
    let (b, site_b) = start_site("b").await;
    register(&registry, "site-a", &a.to_string()).await;
    register(&registry, "site-b", &b.to_string()).await;
    let gateway = RunningGateway::start_round_robin(registry.clone(), proxy_options()).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 2).await;
    let http = http_client();

    let mut sites = Vec::new();
    for i in 0..4 {
        let request = Request::post(gateway.url(&format!("/site/page/{i}?x=1")))
            .header("connection", "x-secret")
            .header("x-secret", "hop")
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        let reply = send(&http, request).await.expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let json = reply.json();
        assert_eq!(json["method"], "POST");
        assert_eq!(json["uri"], format!("/site/page/{i}?x=1"));
        assert_eq!(json["body"], "payload");
        assert_eq!(json["host"], gateway.address.to_string());
        assert_eq!(json["xff"], "127.0.0.1");
        // Named in Connection: hop-by-hop, not forwarded.
        assert_eq!(json["secret"], "-");
        assert_eq!(
            reply.headers["x-site"],
            json["site"].as_str().unwrap_or_default()
        );
        sites.push(json["site"].as_str().unwrap_or_default().to_string());
    }
    sites.sort();
    assert_eq!(sites, ["a", "a", "b", "b"]);

    // The version prefix: /v1/site → go.micro.api.v1.site (not registered).
    let reply = get(&http, &gateway.url("/v1/site/x"))
        .await
        .expect("answer");
    let json = assert_micro_error(&reply, 404);
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("go.micro.api.v1.site")
    );
    gateway.stop().await;
    site_a.abort();
    site_b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_are_skipped_and_bad_addresses_never_dialled() {
    let registry = Arc::new(MemoryRegistry::new());
    let (a, site_a) = start_site("a").await;
    // Refuses connections: skipped for the live node.
    register(&registry, "site-dead", "127.0.0.1:1").await;
    register(&registry, "site-a", &a.to_string()).await;
    let gateway = RunningGateway::start(registry.clone(), proxy_options()).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 2).await;
    let http = http_client();
    for _ in 0..6 {
        let reply = get(&http, &gateway.url("/site/")).await.expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["site"], "a");
    }
    gateway.stop().await;
    site_a.abort();

    // Only addresses that are not host:port: nothing to dial.
    let registry = Arc::new(MemoryRegistry::new());
    let bad = "bad.site";
    registry
        .register(
            &Service::new("go.micro.api.bad", "latest")
                .with_node(Node::new(format!("{bad}-1"), format!("{a}/admin")))
                .with_node(Node::new(format!("{bad}-2"), format!("user@{a}"))),
            RegisterOptions::default(),
        )
        .await
        .expect("register");
    let gateway = RunningGateway::start(registry.clone(), proxy_options()).await;
    let reply = get(&http, &gateway.url("/bad/x")).await.expect("answer");
    assert_micro_error(&reply, 503);
    gateway.stop().await;
}
