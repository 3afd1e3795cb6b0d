//! The http handler: a reverse proxy to registered HTTP services, dialling
//! registered node addresses only.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    start_site_with(name, None).await
}

/// The same, over TLS when `tls` is given.
async fn start_site_with(
    name: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
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
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(tls) => {
                        let Ok(stream) = tls.accept(stream).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
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

/// A node that accepts connections and never answers: what a process
/// stopped with SIGSTOP looks like from outside (the kernel completes the
/// handshake, nothing reads). Steady GETs through the gateway all succeed:
/// the retry stage sends the few that reach it elsewhere after the attempt
/// timeout, and the node is ejected after failing several in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_fails_no_get() {
    let registry = Arc::new(MemoryRegistry::new());
    let (a, site_a) = start_site("a").await;
    let (b, site_b) = start_site("b").await;
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    register(&registry, "site-a", &a.to_string()).await;
    register(&registry, "site-b", &b.to_string()).await;
    register(
        &registry,
        "site-frozen",
        &frozen.local_addr().expect("addr").to_string(),
    )
    .await;
    let attempt_timeout = Duration::from_millis(300);
    let client = micro_client::Client::new(
        registry.clone(),
        micro_client::ClientOptions {
            attempt_timeout,
            // Every third attempt goes to the frozen node until it is out.
            selector: micro_client::Strategy::RoundRobin,
            ..micro_client::ClientOptions::default()
        },
    );
    let gateway = RunningGateway::start_with_client(client, proxy_options()).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 3).await;
    let http = http_client();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let http = http.clone();
        let url = gateway.url(&format!("/site/w{worker}"));
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..50 {
                match get(&http, &url).await {
                    Ok(reply) if reply.status == 200 => {}
                    Ok(reply) => failed.push(format!("{}: {}", reply.status, reply.text())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failed.extend(done.expect("worker"));
    }
    assert!(
        failed.is_empty(),
        "{} of 200 GETs failed: {failed:?}",
        failed.len()
    );
    let stats = gateway
        .gateway
        .client()
        .node_set_ready(
            SERVICE,
            tokio::time::Instant::now() + Duration::from_secs(1),
        )
        .await
        .expect("known")
        .node_set()
        .stats();
    let on_frozen = stats
        .iter()
        .find(|s| s.node.id == "site-frozen")
        .expect("the frozen node");
    assert!(
        (1..20).contains(&on_frozen.attempts),
        "the frozen node got a few attempts, then none: {on_frozen:?}"
    );
    assert_eq!(on_frozen.state, micro_client::NodeState::Ejected);
    gateway.stop().await;
    site_a.abort();
    site_b.abort();
    drop(frozen);
}

/// The proxy's retries take from the service's one retry budget, the one
/// its gRPC calls take from: spent there, a failed attempt is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_retries_spend_the_services_budget_shared_with_grpc_calls() {
    let registry = Arc::new(MemoryRegistry::new());
    // Both refuse connections.
    register(&registry, "site-dead-1", "127.0.0.1:1").await;
    register(&registry, "site-dead-2", "127.0.0.1:2").await;
    let options = micro_client::ClientOptions {
        retry_budget: micro_client::BudgetOptions {
            ratio: 0.0,
            min_per_second: 1,
        },
        ..micro_client::ClientOptions::default()
    };
    let http = http_client();
    for spent in [false, true] {
        let client = micro_client::Client::new(registry.clone(), options.clone());
        if spent {
            // What a gRPC retry to the service does.
            assert!(client.budget(SERVICE).withdraw());
        }
        let gateway = RunningGateway::start_with_client(client, proxy_options()).await;
        common::wait_for_nodes(gateway.gateway.client(), SERVICE, 2).await;
        let reply = get(&http, &gateway.url("/site/")).await.expect("answer");
        let json = assert_micro_error(&reply, 503);
        let detail = json["detail"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            detail.contains("retry budget exhausted"),
            spent,
            "spent: {spent}: {detail}"
        );
        assert!(
            !detail.contains("127.0.0.1"),
            "answers never name a node: {detail}"
        );
        gateway.stop().await;
    }
}

/// A node registered `secure=true` is dialled over TLS, its certificate
/// checked against the client's CA (`--client_tls_ca`); without client TLS
/// it is refused with a clear error, never sent plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_node_is_dialled_over_tls() {
    let dir = tempfile::tempdir().expect("tmp");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    let mut server = (*micro_api::tls::server_config(&cert_file, &key_file).expect("tls")).clone();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let (address, site) = start_site_with("secure", Some(acceptor)).await;
    let registry = Arc::new(MemoryRegistry::new());
    register_secure(&registry, "site-secure", address).await;
    let http = http_client();

    let tls = micro_client::ClientTls::from_files(&cert_file, None, None, None).expect("ca");
    let gateway = proxy_with_tls(&registry, tls).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 1).await;
    let reply = get(&http, &gateway.url("/site/x")).await.expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["site"], "secure");
    gateway.stop().await;

    let gateway = RunningGateway::start(registry.clone(), proxy_options()).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 1).await;
    let reply = get(&http, &gateway.url("/site/x")).await.expect("answer");
    let json = assert_micro_error(&reply, 503);
    assert!(
        json["detail"].as_str().unwrap_or_default().contains("TLS"),
        "{json}"
    );
    gateway.stop().await;
    site.abort();
}

/// A secure site `name` serving a certificate of `server`'s CA, requiring
/// client certificates signed by the CAs in `client_ca`, registered.
async fn start_mutual_site(
    registry: &MemoryRegistry,
    name: &'static str,
    server: &micro_testing::tls::Pki,
    client_ca: &std::path::Path,
) -> JoinHandle<()> {
    let (cert, key) = server.issue(name, &["127.0.0.1"]);
    let config = micro_tls::server_config_with_client_ca(
        &micro_tls::Certificates::from_file(&cert).expect("cert"),
        &micro_tls::PrivateKey::from_file(&key).expect("key"),
        Some(&micro_tls::Certificates::from_file(client_ca).expect("client ca")),
        &[b"http/1.1"],
    )
    .expect("server config");
    let (address, site) =
        start_site_with(name, Some(tokio_rustls::TlsAcceptor::from(config))).await;
    register_secure(registry, &format!("site-{name}"), address).await;
    site
}

/// A gateway proxying over HTTP with the client TLS settings `tls`.
async fn proxy_with_tls(
    registry: &Arc<MemoryRegistry>,
    tls: micro_client::ClientTls,
) -> RunningGateway {
    let client = micro_client::Client::new(
        registry.clone(),
        micro_client::ClientOptions {
            tls: Some(tls),
            ..micro_client::ClientOptions::default()
        },
    );
    RunningGateway::start_with_client(client, proxy_options()).await
}

/// Registers the node `id` at `address`, marked `secure=true`.
async fn register_secure(registry: &MemoryRegistry, id: &str, address: SocketAddr) {
    let mut node = Node::new(id, address.to_string());
    node.metadata
        .insert(micro_tls::SECURE_METADATA.to_string(), "true".to_string());
    registry
        .register(
            &Service::new(SERVICE, "latest").with_node(node),
            RegisterOptions::default(),
        )
        .await
        .expect("register");
}

/// GETs through the gateway until `site` answers one (bounded): every
/// answer must be a 200.
async fn until_site_answers(
    http: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    url: &str,
    site: &str,
) {
    for _ in 0..200 {
        let reply = get(http, url).await.expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.json()["site"] == site {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("site {site} never answered");
}

/// The proxy's client certificate and CA, rotated and read again
/// ([`micro_tls::reload_all`], what SIGHUP calls): a node added after the
/// reload, trusting only the new client CA and serving a certificate of the
/// new CA, answers (so its new connection presented the new certificate and
/// trusted the new CA); a broken new certificate keeps the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_client_certificate_and_ca_are_read_again_for_new_connections() {
    use micro_testing::tls::{Pki, replace};
    let (old_ca, new_ca) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().expect("tmp");
    let (bundle, cert, key) = (
        dir.path().join("ca-bundle.pem"),
        dir.path().join("client.pem"),
        dir.path().join("client-key.pem"),
    );
    let both = [
        std::fs::read(old_ca.ca()).expect("old ca"),
        std::fs::read(new_ca.ca()).expect("new ca"),
    ]
    .concat();
    let client_ca_both = dir.path().join("client-ca-both.pem");
    std::fs::write(&client_ca_both, &both).expect("both cas");
    let issue_client = |pki: &Pki, name: &str| {
        let (c, k) = pki.issue(name, &["micro-client"]);
        replace(&key, &std::fs::read(k).expect("key"));
        replace(&cert, &std::fs::read(c).expect("cert"));
    };
    std::fs::copy(old_ca.ca(), &bundle).expect("bundle");
    issue_client(&old_ca, "client-1");

    let registry = Arc::new(MemoryRegistry::new());
    let site_a = start_mutual_site(&registry, "a", &old_ca, &client_ca_both).await;
    let tls = micro_client::ClientTls::from_files(&bundle, Some(&cert), Some(&key), None)
        .expect("client tls");
    let gateway = proxy_with_tls(&registry, tls).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 1).await;
    let http = http_client();
    let url = gateway.url("/site/x");
    until_site_answers(&http, &url, "a").await;

    // The new CA joins the bundle; the client certificate is one of its.
    replace(&bundle, &both);
    issue_client(&new_ca, "client-2");
    let reloaded = micro_tls::reload_all();
    let ours = |outcomes: &[Result<String, micro_tls::TlsError>]| -> Result<String, String> {
        let name = cert.display().to_string();
        outcomes
            .iter()
            .find_map(|o| match o {
                Ok(files) if files.contains(&name) => Some(Ok(files.clone())),
                Err(e) if e.to_string().contains(&name) => Some(Err(e.to_string())),
                _ => None,
            })
            .expect("our reload among them")
    };
    ours(&reloaded).expect("reloaded");
    let site_b = start_mutual_site(&registry, "b", &new_ca, new_ca.ca()).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 2).await;
    until_site_answers(&http, &url, "b").await;
    until_site_answers(&http, &url, "a").await;

    // A broken new certificate: the one in use stays.
    micro_testing::tls::replace(&cert, b"not a certificate");
    let err = ours(&micro_tls::reload_all()).expect_err("a broken certificate");
    assert!(err.contains("cannot read the TLS certificate"), "{err}");
    let site_c = start_mutual_site(&registry, "c", &new_ca, new_ca.ca()).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 3).await;
    until_site_answers(&http, &url, "c").await;

    gateway.stop().await;
    for site in [site_a, site_b, site_c] {
        site.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_handler_joins_a_websocket_through() {
    use micro_testing::http::{echoed, websocket_echo_node, websocket_handshake};
    let registry = Arc::new(MemoryRegistry::new());
    let (node, echo) = websocket_echo_node().await;
    register(&registry, "site-ws", &node.to_string()).await;
    let options = ApiOptions {
        handler: HandlerKind::Web,
        ..ApiOptions::default()
    };
    let gateway = RunningGateway::start_round_robin(registry.clone(), options).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 1).await;

    let host = gateway.address.to_string();
    let (mut client, head) =
        websocket_handshake(gateway.address, &host, "/site/socket?room=1").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("sec-websocket-accept: accepted"), "{head}");
    // Bytes both ways through the tunnel.
    assert_eq!(
        echoed(&mut client, b"hello, socket").await,
        b"hello, socket"
    );
    drop(client);
    let seen = echo.await.expect("node").to_lowercase();
    assert!(seen.starts_with("get /site/socket?room=1 "), "{seen}");
    assert!(seen.contains("upgrade: websocket"), "{seen}");
    assert!(
        seen.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{seen}"
    );
}

/// A tunnel holds its connection: a stopping gateway closes it and waits for
/// it, rather than returning with the tunnel still open behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_closes_its_websocket_tunnels() {
    use micro_testing::http::{echoed, websocket_echo_node, websocket_handshake};
    use tokio::io::AsyncReadExt as _;
    let registry = Arc::new(MemoryRegistry::new());
    let (node, echo) = websocket_echo_node().await;
    register(&registry, "site-ws", &node.to_string()).await;
    let options = ApiOptions {
        handler: HandlerKind::Web,
        ..ApiOptions::default()
    };
    let gateway = RunningGateway::start_round_robin(registry.clone(), options).await;
    common::wait_for_nodes(gateway.gateway.client(), SERVICE, 1).await;

    let host = gateway.address.to_string();
    let (mut client, head) = websocket_handshake(gateway.address, &host, "/site/socket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(
        echoed(&mut client, b"before the stop").await,
        b"before the stop"
    );

    let stopping = tokio::spawn(gateway.stop());
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
        .await
        .expect("the tunnel closes when the gateway stops");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the gateway stops")
        .expect("stop task");
    // The node saw its peer go too.
    tokio::time::timeout(Duration::from_secs(10), echo)
        .await
        .expect("the node's connection ends")
        .expect("node");
}
