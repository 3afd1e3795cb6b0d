//! The gateway's security features against real services: `--auth=jwt`
//! (HS256, EdDSA, public paths, the rpc handler's rules, claims as headers
//! only the gateway sets), rate limits (429 + Retry-After), and TLS with
//! HTTP/1.1 and h2 by ALPN.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{RunningGateway, assert_micro_error, send, wait_for_nodes};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{EncodingKey, Header};
use micro_api::auth::AuthConfig;
use micro_api::ratelimit::{Rate, RateLimits};
use micro_api::{ApiOptions, HandlerKind};
use micro_registry::memory::MemoryRegistry;
use micro_testing::api::{TestApi, TestApiServer};
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SECRET: &[u8] = b"a shared secret of at least 32 bytes!";

fn token(key: &EncodingKey, header: Header, sub: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = serde_json::json!({"sub": sub, "name": "alice", "exp": now + exp_in, "iat": now});
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn hs256(sub: &str) -> String {
    token(
        &EncodingKey::from_secret(SECRET),
        Header::default(),
        sub,
        300,
    )
}

fn client() -> HttpClient<HttpConnector, Full<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

async fn call(gateway: &RunningGateway, path: &str, headers: &[(&str, &str)]) -> common::Reply {
    let mut request = Request::get(gateway.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(
        &client(),
        request.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
    .expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_guards_the_api_handler_and_passes_verified_claims() {
    let registry: micro_registry::SharedRegistry = Arc::new(MemoryRegistry::new());
    let api = TestApi::new("api-0");
    let server = TestApiServer::start(
        registry.clone(),
        "go.micro.api.test",
        api.clone(),
        loopback_options(),
    );
    let auth = AuthConfig::hs256(SECRET)
        .public_paths(&["/test/say/public*"])
        .expect("globs");
    let gateway = RunningGateway::start(
        registry.clone(),
        ApiOptions {
            handler: HandlerKind::Api,
            auth: Some(auth),
            ..ApiOptions::default()
        },
    )
    .await;
    wait_for_nodes(gateway.gateway.client(), "go.micro.api.test", 1).await;

    // No token, a bad one, one without the Bearer scheme, another key's,
    // an expired one: 401 with go-micro error JSON, and no call.
    let other_key = token(
        &EncodingKey::from_secret(b"another secret, another secret!!"),
        Header::default(),
        "1",
        300,
    );
    let expired = token(
        &EncodingKey::from_secret(SECRET),
        Header::default(),
        "1",
        -3600,
    );
    let bare = hs256("1");
    for headers in [
        vec![],
        vec![("authorization", "Bearer not.a.jwt")],
        vec![("authorization", bare.as_str())],
        vec![("authorization", &*format!("Bearer {other_key}"))],
        vec![("authorization", &*format!("Bearer {expired}"))],
    ] {
        let reply = call(&gateway, "/test/say/hello?name=x", &headers).await;
        assert_micro_error(&reply, 401);
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(api.hits(), 0, "refused requests call nothing");

    // alg=none is refused too.
    let none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(br#"{"sub":"1","exp":99999999999}"#)
    );
    let reply = call(
        &gateway,
        "/test/say/hello?name=x",
        &[("authorization", &format!("Bearer {none}"))],
    )
    .await;
    assert_micro_error(&reply, 401);

    // A valid token: served; the claims arrive as headers, and copies the
    // client sent are replaced.
    let good = format!("Bearer {}", hs256("42"));
    let reply = call(
        &gateway,
        "/test/say/hello?name=x",
        &[
            ("authorization", &good),
            ("micro-user-id", "1"),
            ("micro-remote-ip", "10.9.9.9"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request().expect("called");
    assert_eq!(seen.first_header("Micro-User-Id"), Some("42"));
    assert_eq!(seen.first_header("Micro-User-Name"), Some("alice"));
    assert_eq!(seen.first_header("Micro-Remote-Ip"), Some("127.0.0.1"));

    gateway.stop().await;

    // A public path needs no token, and forged claims never pass.
    let open = RunningGateway::start(
        registry.clone(),
        ApiOptions {
            handler: HandlerKind::Api,
            auth: Some(
                AuthConfig::hs256(SECRET)
                    .public_paths(&["/test/**"])
                    .expect("globs"),
            ),
            ..ApiOptions::default()
        },
    )
    .await;
    let reply = call(
        &open,
        "/test/say/hello?name=x",
        &[("micro-user-id", "1"), ("micro-user-name", "root")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request().expect("called");
    assert_eq!(seen.first_header("Micro-User-Id"), None);
    assert_eq!(seen.first_header("Micro-User-Name"), None);
    open.stop().await;
    server.stop();
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_rpc_handler_opens_only_what_rules_name() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        "go.micro.srv.greeter",
        TestGreeter::new("g"),
        loopback_options(),
    );
    // EdDSA: the gateway holds only the public key.
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let signing = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("signing key");
    let auth = AuthConfig::public_key_pem(pair.public_key_pem().as_bytes()).expect("public key");
    assert_eq!(auth.algorithm(), jsonwebtoken::Algorithm::EdDSA);
    let auth = auth.auth_paths(&["/greeter/greeter/*"]).expect("globs");
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            namespace: "go.micro.srv".into(),
            auth: Some(auth),
            ..ApiOptions::default()
        },
    )
    .await;
    wait_for_nodes(gateway.gateway.client(), "go.micro.srv.greeter", 1).await;
    let good = format!(
        "Bearer {}",
        token(
            &signing,
            Header::new(jsonwebtoken::Algorithm::EdDSA),
            "7",
            300
        )
    );
    let reply = call(
        &gateway,
        "/greeter/greeter/hello?name=x",
        &[("authorization", &good)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A path no rule opens: refused even with a valid token.
    let reply = call(
        &gateway,
        "/user/user/listUsers",
        &[("authorization", &good)],
    )
    .await;
    assert_micro_error(&reply, 403);
    // An HS256 token forged with the public key as the secret: refused.
    let forged = token(
        &EncodingKey::from_secret(pair.public_key_pem().as_bytes()),
        Header::default(),
        "7",
        300,
    );
    let reply = call(
        &gateway,
        "/greeter/greeter/hello?name=x",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_micro_error(&reply, 401);
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            rate_limits: RateLimits {
                per_ip: Rate::new(1, Some(3)),
                per_route: None,
            },
            ..ApiOptions::default()
        },
    )
    .await;
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..5 {
        let reply = call(&gateway, "/", &[]).await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 {
            refused = Some(reply);
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    let refused = refused.expect("a 429");
    let json = assert_micro_error(&refused, 429);
    assert_eq!(json["id"], "go.micro.api");
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=1).contains(&retry), "Retry-After {retry}");
    gateway.stop().await;

    // Per route: every client together.
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            rate_limits: RateLimits {
                per_ip: None,
                per_route: Rate::new(1, Some(2)),
            },
            ..ApiOptions::default()
        },
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(call(&gateway, "/a/b/c", &[]).await.status.as_u16());
    }
    assert_eq!(statuses[2], 429, "{statuses:?}");
    // Another route has its own bucket.
    assert_ne!(call(&gateway, "/other/b/c", &[]).await.status, 429);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_unknown_path_is_404_with_a_short_answer() {
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(registry, ApiOptions::default()).await;
    let long = "n".repeat(16 * 1024);
    let reply = call(&gateway, &format!("/{long}/x/y"), &[]).await;
    assert_micro_error(&reply, 404);
    assert!(
        reply.body.len() < 1024,
        "{} bytes answered",
        reply.body.len()
    );
    for (name, value) in reply.headers.iter() {
        assert!(value.len() < 256, "header {name} echoes input");
    }
    gateway.stop().await;
}

async fn tls_request(
    address: SocketAddr,
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
) -> (String, u16) {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let protocol = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let request = Request::get("https://localhost/")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let status = if protocol == "h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let response = sender.send_request(request).await.expect("answer");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1");
        tokio::spawn(conn);
        let response = sender.send_request(request).await.expect("answer");
        response.status().as_u16()
    };
    (protocol, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http1_and_h2_by_alpn() {
    let dir = tempfile::tempdir().expect("tmp");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    let tls = micro_api::tls::server_config(&cert_file, &key_file).expect("tls config");
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            tls: Some(tls),
            header_read_timeout: Duration::from_secs(2),
            ..ApiOptions::default()
        },
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    assert_eq!(
        tls_request(gateway.address, roots.clone(), &[b"h2", b"http/1.1"]).await,
        ("h2".to_string(), 200)
    );
    assert_eq!(
        tls_request(gateway.address, roots, &[b"http/1.1"]).await,
        ("http/1.1".to_string(), 200)
    );
    // Plain HTTP on the TLS port gets no answer, and the connection ends.
    let mut plain = tokio::net::TcpStream::connect(gateway.address)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut out))
        .await
        .expect("closed")
        .ok();
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));

    // Bad files are clear errors.
    let err = micro_api::tls::server_config(&key_file, &key_file).expect_err("a key is no cert");
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = micro_api::tls::server_config(&cert_file, &dir.path().join("missing.pem"))
        .expect_err("missing key");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    gateway.stop().await;
}
