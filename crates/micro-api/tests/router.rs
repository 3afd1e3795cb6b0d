//! The router without sockets (`oneshot`): `/`, errors as go-micro JSON,
//! limits (413, 414, 431), CORS, deadlines.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::{assert_micro_error, oneshot, wait_for_nodes};
use http::Request;
use micro_api::{ApiOptions, Gateway, HandlerKind, VERSION};
use micro_client::{Client, ClientOptions};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_testing::{TestGreeter, TestServer, loopback_options};

fn new_gateway(options: ApiOptions) -> (Gateway, Arc<MemoryRegistry>) {
    let registry = Arc::new(MemoryRegistry::new());
    let client = Client::new(registry.clone(), ClientOptions::default());
    (Gateway::new(client, options), registry)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn root_answers_the_version() {
    for handler in [HandlerKind::Api, HandlerKind::Rpc, HandlerKind::Http] {
        let (gateway, _) = new_gateway(ApiOptions {
            handler,
            ..ApiOptions::default()
        });
        let reply = oneshot(gateway.router(), get("/")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.json(), serde_json::json!({ "version": VERSION }));
    }
}

#[tokio::test]
async fn unknown_service_is_404_naming_the_service_tried() {
    for (handler, path, tried) in [
        (HandlerKind::Api, "/user/say/hello", "go.micro.api.user"),
        (HandlerKind::Rpc, "/v1/user/hello", "go.micro.api.v1.user"),
        (HandlerKind::Http, "/site/index.html", "go.micro.api.site"),
    ] {
        let (gateway, _) = new_gateway(ApiOptions {
            handler,
            ..ApiOptions::default()
        });
        let reply = oneshot(gateway.router(), get(path)).await;
        let json = assert_micro_error(&reply, 404);
        assert_eq!(json["id"], "go.micro.api");
        assert_eq!(json["status"], "Not Found");
        let detail = json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(tried), "{handler}: {detail}");
    }
}

#[tokio::test]
async fn paths_that_name_no_endpoint_are_404() {
    let (gateway, _) = new_gateway(ApiOptions::default());
    for path in ["/favicon.ico", "/foo/bar.baz", "/foo/%FF"] {
        let reply = oneshot(gateway.router(), get(path)).await;
        assert_micro_error(&reply, 404);
    }
}

#[tokio::test]
async fn unknown_names_do_not_grow_the_gateway() {
    let (gateway, _) = new_gateway(ApiOptions::default());
    for i in 0..300 {
        let reply = oneshot(gateway.router(), get(&format!("/svc{i}/hello"))).await;
        assert_eq!(reply.status, 404);
    }
    // Nothing was fetched or cached for names nobody registered.
    assert!(gateway.dynamic().schemas().is_empty());
    assert!(gateway.catalog().names().is_empty());
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let (gateway, _) = new_gateway(ApiOptions {
        max_body_bytes: 16,
        ..ApiOptions::default()
    });
    // Declared too large: refused before reading.
    let declared = Request::post("/greeter/hello")
        .header("content-length", "17")
        .body(Body::from(vec![b'x'; 17]))
        .expect("request");
    let reply = oneshot(gateway.router(), declared).await;
    let json = assert_micro_error(&reply, 413);
    assert_eq!(json["status"], "Payload Too Large");

    // Streamed without a length: cut off while reading.
    let chunks = futures::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789"))),
    );
    let streamed = Request::post("/greeter/hello")
        .body(Body::from_stream(chunks))
        .expect("request");
    let reply = oneshot(gateway.router(), streamed).await;
    assert_micro_error(&reply, 413);

    // At the limit it is read (and the service is simply unknown).
    let ok = Request::post("/greeter/hello")
        .body(Body::from(vec![b' '; 16]))
        .expect("request");
    let reply = oneshot(gateway.router(), ok).await;
    assert_micro_error(&reply, 404);
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_and_long_uris_414() {
    let (gateway, _) = new_gateway(ApiOptions {
        max_headers: 4,
        max_header_bytes: 256,
        ..ApiOptions::default()
    });
    let mut many = Request::get("/");
    for i in 0..5 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let reply = oneshot(gateway.router(), many.body(Body::empty()).expect("request")).await;
    let json = assert_micro_error(&reply, 431);
    assert_eq!(json["status"], "Request Header Fields Too Large");

    let large = Request::get("/")
        .header("x-large", "v".repeat(300))
        .body(Body::empty())
        .expect("request");
    assert_micro_error(&oneshot(gateway.router(), large).await, 431);

    let long = get(&format!("/{}", "a".repeat(300)));
    assert_micro_error(&oneshot(gateway.router(), long).await, 414);

    // Within the limits: served.
    let fine = Request::get("/")
        .header("x-a", "1")
        .body(Body::empty())
        .expect("request");
    assert_eq!(oneshot(gateway.router(), fine).await.status, 200);
}

fn preflight(origin: &str) -> Request<Body> {
    Request::options("/greeter/hello")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, x-token")
        .body(Body::empty())
        .expect("request")
}

fn with_origin(origin: &str) -> Request<Body> {
    Request::get("/")
        .header("origin", origin)
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let (gateway, _) = new_gateway(ApiOptions::default());
    let reply = oneshot(gateway.router(), preflight("https://evil.example")).await;
    assert_micro_error(&reply, 403);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));

    let reply = oneshot(gateway.router(), with_origin("https://evil.example")).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let (gateway, _) = new_gateway(ApiOptions {
        cors_allowed_origins: vec!["https://app.example".into()],
        ..ApiOptions::default()
    });
    let reply = oneshot(gateway.router(), preflight("https://app.example")).await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        reply.headers["access-control-allow-methods"]
            .to_str()
            .unwrap_or_default()
            .contains("POST")
    );
    assert_eq!(
        reply.headers["access-control-allow-headers"],
        "content-type, x-token"
    );
    let reply = oneshot(gateway.router(), with_origin("https://app.example")).await;
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(reply.headers["vary"], "Origin");

    let reply = oneshot(gateway.router(), preflight("https://other.example")).await;
    assert_micro_error(&reply, 403);
    let reply = oneshot(gateway.router(), with_origin("https://other.example")).await;
    assert!(!reply.headers.contains_key("access-control-allow-origin"));

    let (any, _) = new_gateway(ApiOptions {
        cors_allowed_origins: vec!["*".into()],
        ..ApiOptions::default()
    });
    let reply = oneshot(any.router(), preflight("https://whoever.example")).await;
    assert_eq!(reply.status, 204);
}

#[tokio::test]
async fn a_service_whose_nodes_are_all_dead_is_503() {
    for handler in [HandlerKind::Api, HandlerKind::Rpc, HandlerKind::Http] {
        let (gateway, registry) = new_gateway(ApiOptions {
            handler,
            ..ApiOptions::default()
        });
        // Registered, but nothing listens there (port 1 refuses at once).
        registry
            .register(
                &Service::new("go.micro.api.gone", "latest")
                    .with_node(Node::new("go.micro.api.gone-1", "127.0.0.1:1")),
                RegisterOptions::default(),
            )
            .await
            .expect("register");
        let reply = oneshot(gateway.router(), get("/gone/say/hello")).await;
        let json = assert_micro_error(&reply, 503);
        assert_eq!(json["status"], "Service Unavailable");
        let detail = json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("go.micro.api.gone"), "{handler}: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_their_deadline_are_504() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        "go.micro.srv.greeter",
        TestGreeter::new("slow").with_delay(Duration::from_secs(3)),
        loopback_options(),
    );
    // The client's deadline passes first...
    let client = Client::new(
        registry.clone(),
        ClientOptions {
            request_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        },
    );
    wait_for_nodes(&client, "go.micro.srv.greeter", 1).await;
    let gateway = Gateway::new(
        client,
        ApiOptions {
            namespace: "go.micro.srv".into(),
            ..ApiOptions::default()
        },
    );
    let started = tokio::time::Instant::now();
    let reply = oneshot(gateway.router(), get("/greeter/greeter/hello?name=x")).await;
    let json = assert_micro_error(&reply, 504);
    assert_eq!(json["id"], "go.micro.srv.greeter");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // ...or the gateway's own request timeout does.
    let client = Client::new(registry.clone(), ClientOptions::default());
    wait_for_nodes(&client, "go.micro.srv.greeter", 1).await;
    let gateway = Gateway::new(
        client,
        ApiOptions {
            namespace: "go.micro.srv".into(),
            request_timeout: Duration::from_millis(500),
            ..ApiOptions::default()
        },
    );
    let started = tokio::time::Instant::now();
    let reply = oneshot(gateway.router(), get("/greeter/greeter/hello?name=x")).await;
    assert_micro_error(&reply, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.kill();
}

/// The answer carries the route it reached, which names the gateway's span;
/// a made-up endpoint or service reaches none, so span names stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_route_reached_only() {
    use micro_telemetry::api::Route;
    use tower::ServiceExt as _;

    let (gateway, registry) = new_gateway(ApiOptions {
        handler: HandlerKind::Rpc,
        namespace: "go.micro.srv".into(),
        ..ApiOptions::default()
    });
    let server = TestServer::start(
        registry.clone(),
        "go.micro.srv.greeter",
        TestGreeter::new("instance-0"),
        loopback_options(),
    );
    wait_for_nodes(gateway.client(), "go.micro.srv.greeter", 1).await;
    let route = |path: &'static str| {
        let router = gateway.router();
        async move {
            let response = tokio::time::timeout(Duration::from_secs(20), router.oneshot(get(path)))
                .await
                .expect("answer in 20 s")
                .expect("infallible");
            (
                response.status().as_u16(),
                response.extensions().get::<Route>().cloned(),
            )
        }
    };
    assert_eq!(
        route("/greeter/greeter/hello?name=x").await,
        (
            200,
            Some(Route("go.micro.srv.greeter/Greeter.Hello".into()))
        )
    );
    let (status, reached) = route("/greeter/greeter/no-such-method").await;
    assert_eq!((status, reached), (404, None));
    let (status, reached) = route("/nobody/greeter/hello").await;
    assert_eq!((status, reached), (404, None));
    server.stop();
}
