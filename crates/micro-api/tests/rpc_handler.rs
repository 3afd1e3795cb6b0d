//! The rpc handler end to end: real greeter servers, a gateway on a socket,
//! JSON in and canonical proto3 JSON out with no greeter code in the gateway
//! (its schema comes from the greeter's gRPC reflection).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{RunningGateway, assert_micro_error, get, http_client, send, wait_for_nodes};
use http::Request;
use http_body_util::Full;
use micro_api::{ApiOptions, HandlerKind};
use micro_registry::memory::MemoryRegistry;
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";

fn rpc_options() -> ApiOptions {
    ApiOptions {
        handler: HandlerKind::Rpc,
        namespace: "go.micro.srv".into(),
        ..ApiOptions::default()
    }
}

fn post(url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_in_canonical_json_out() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("instance-0"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(registry.clone(), rpc_options()).await;
    let http = http_client();

    // POST /greeter/greeter/hello → go.micro.srv.greeter Greeter.Hello.
    let reply = send(
        &http,
        post(
            &gateway.url("/greeter/greeter/hello"),
            r#"{"name": "huohuo"}"#,
        ),
    )
    .await
    .expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.text(), r#"{"msg":"Hello huohuo from instance-0"}"#);

    // GET: the query string is the request.
    let reply = get(&http, &gateway.url("/greeter/greeter/hello?name=huohuo"))
        .await
        .expect("answer");
    assert_eq!(reply.text(), r#"{"msg":"Hello huohuo from instance-0"}"#);

    // An empty body is the empty message.
    let reply = send(&http, post(&gateway.url("/greeter/greeter/hello"), ""))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The schema was fetched once and is cached.
    assert_eq!(gateway.gateway.dynamic().schemas().len(), 1);
    assert_eq!(server.greeter.hits(), 3);
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_service_errors_are_go_micro_json() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("instance-0"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(registry.clone(), rpc_options()).await;
    let http = http_client();
    let url = gateway.url("/greeter/greeter/hello");

    for (body, why) in [
        (r#"{"name":"#, "EOF"),
        ("not json", "expected"),
        (r#"{"name": 5}"#, "string"),
        (r#"{"nmae": "x"}"#, "nmae"),
        (r#"{"name": "x"} trailing"#, "trailing"),
        ("[1,2]", "Request"),
    ] {
        let reply = send(&http, post(&url, body)).await.expect("answer");
        let json = assert_micro_error(&reply, 400);
        assert_eq!(json["status"], "Bad Request");
        let detail = json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "{body}: {detail}");
    }
    assert_eq!(server.greeter.hits(), 0, "bad requests reached the service");

    // An endpoint the service does not have.
    let reply = send(&http, post(&gateway.url("/greeter/greeter/goodbye"), "{}"))
        .await
        .expect("answer");
    let json = assert_micro_error(&reply, 404);
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Greeter.Goodbye"),
        "{json}"
    );

    // The service fails: its status as a micro error from that service.
    let reply = send(&http, post(&url, r#"{"name": "fail"}"#))
        .await
        .expect("answer");
    let json = assert_micro_error(&reply, 500);
    assert_eq!(json["id"], SERVICE);
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("failed on purpose"),
        "{json}"
    );
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_round_robin_and_survive_a_crash() {
    let registry = Arc::new(MemoryRegistry::new());
    let mut servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 3);
    let gateway = RunningGateway::start_round_robin(registry.clone(), rpc_options()).await;
    wait_for_nodes(gateway.gateway.client(), SERVICE, 3).await;
    let http = http_client();

    // 90 calls: 30 each.
    for i in 0..90 {
        let reply = get(
            &http,
            &gateway.url(&format!("/greeter/greeter/hello?name=r{i}")),
        )
        .await
        .expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let counts: Vec<usize> = servers.iter().map(|s| s.greeter.hits()).collect();
    eprintln!("gateway round robin: 90 requests over 3 instances → {counts:?}");
    assert_eq!(counts, [30, 30, 30]);

    // 300 more; one instance crashes (no deregistration) after 100.
    let victim_hits = servers[1].greeter.clone();
    let before: usize = counts.iter().sum();
    let mut failed = Vec::new();
    for i in 0..300 {
        if i == 100 {
            servers.remove(1).kill();
        }
        match get(
            &http,
            &gateway.url(&format!("/greeter/greeter/hello?name=k{i}")),
        )
        .await
        {
            Ok(reply) if reply.status == 200 => {}
            Ok(reply) => failed.push((i, reply.status, reply.text())),
            Err(e) => failed.push((i, http::StatusCode::BAD_GATEWAY, e)),
        }
    }
    let served: usize =
        servers.iter().map(|s| s.greeter.hits()).sum::<usize>() + victim_hits.hits() - before;
    eprintln!(
        "gateway failover: 300 GETs, 1 of 3 instances killed at 100: {} failed, {served} served",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(served, 300);
    gateway.stop().await;
    for server in servers {
        server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_reflection_gets_json_and_headers_as_metadata() {
    let registry = Arc::new(MemoryRegistry::new());
    // As a go-micro service: no reflection, JSON accepted.
    let greeter = TestGreeter::new("no-reflection");
    let handler = greeter.clone();
    let server = micro_testing::Crashable::start(
        registry.clone(),
        SERVICE,
        loopback_options(),
        move |builder| {
            builder
                .reflection(false)
                .file_descriptor_set(micro_testing::FILE_DESCRIPTOR_SET)
                .add_service(micro_testing::greeter::greeter_server::GreeterServer::new(
                    handler,
                ))
        },
    );
    let gateway = RunningGateway::start(registry.clone(), rpc_options()).await;
    let http = http_client();

    let request = Request::post(gateway.url("/greeter/greeter/hello"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer t0ken")
        .header("x-request-id", "r-1")
        .header("connection", "keep-alive")
        .body(Full::new(Bytes::from_static(br#"{"name": "huohuo"}"#)))
        .expect("request");
    let reply = send(&http, request).await.expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.text(), r#"{"msg":"Hello huohuo from no-reflection"}"#);
    let metadata = greeter.last_metadata().expect("metadata").into_headers();
    assert_eq!(metadata["authorization"], "Bearer t0ken");
    assert_eq!(metadata["x-request-id"], "r-1");
    assert_eq!(metadata["content-type"], "application/grpc");
    for absent in ["host", "connection"] {
        assert!(metadata.get(absent).is_none(), "{absent} in {metadata:?}");
    }
    // The HTTP body's length (18) is not the gRPC body's.
    assert!(
        metadata
            .get("content-length")
            .is_none_or(|length| length != "18"),
        "{metadata:?}"
    );

    // GET: the query string as JSON strings.
    let reply = get(&http, &gateway.url("/greeter/greeter/hello?name=q"))
        .await
        .expect("answer");
    assert_eq!(reply.text(), r#"{"msg":"Hello q from no-reflection"}"#);

    // Bad JSON is the gateway's 400; the service's errors pass through.
    let reply = send(&http, post(&gateway.url("/greeter/greeter/hello"), "{nope"))
        .await
        .expect("answer");
    assert_micro_error(&reply, 400);
    let reply = send(
        &http,
        post(&gateway.url("/greeter/greeter/hello"), r#"{"nmae": "x"}"#),
    )
    .await
    .expect("answer");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("nmae"), "{}", reply.text());

    // "No reflection" is remembered: one cache entry, no schema.
    assert_eq!(gateway.gateway.dynamic().schemas().len(), 1);
    assert_eq!(greeter.hits(), 2);
    gateway.stop().await;
    server.stop();
}
