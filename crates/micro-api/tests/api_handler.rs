//! The api handler end to end: a test API service (handler `Say`, taking
//! `go.api.Request`) registered as `go.micro.api.test`, reached at
//! `/test/say/...` through a gateway on a socket.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{RunningGateway, assert_micro_error, get, http_client, send, wait_for_nodes};
use http::Request;
use http_body_util::Full;
use micro_api::{ApiOptions, HandlerKind};
use micro_registry::memory::MemoryRegistry;
use micro_testing::api::{TestApi, TestApiServer};
use micro_testing::loopback_options;

const SERVICE: &str = "go.micro.api.test";

fn api_options() -> ApiOptions {
    ApiOptions {
        handler: HandlerKind::Api,
        ..ApiOptions::default()
    }
}

/// A go-micro v2 `errors.BadRequest(id, detail)` as JSON, from bytes go-micro
/// v2.9.1 wrote: its http broker's answer to a GET
/// (`testdata/go-micro-v2/broker/http-subscriber-answers.txt`, case (b):
/// `errors.BadRequest("go.micro.broker", "Method not allowed")` through Go's
/// `http.Error`, which adds the final newline), with `id` and `detail`
/// swapped in. Key order, spacing, code and status text are go-micro's.
fn go_micro_bad_request(id: &str, detail: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/go-micro-v2/broker/http-subscriber-answers.txt"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let case = text
        .split("\n== ")
        .find(|case| case.starts_with("(b) GET"))
        .expect("case (b) in the capture");
    // `body:     '<bytes as a Python literal>' (89 bytes)`
    let line = case
        .lines()
        .find_map(|l| l.strip_prefix("body:"))
        .expect("a body line");
    let literal = line.trim_start().strip_prefix('\'').expect("quoted body");
    let end = literal.rfind("' (").expect("end of the body");
    let (body, count) = (&literal[..end], &literal[end + 3..]);
    let captured = body
        .strip_suffix("\\n")
        .expect("http.Error's newline, written as \\n");
    assert_eq!(
        count,
        format!("{} bytes)", captured.len() + 1),
        "nothing else escaped in {body}"
    );
    let swap = |text: &str, from: &str, to: &str| {
        assert_eq!(text.matches(from).count(), 1, "{from} in {text}");
        text.replace(from, to)
    };
    let json = swap(
        captured,
        r#""id":"go.micro.broker""#,
        &format!(r#""id":{}"#, serde_json::Value::from(id)),
    );
    swap(
        &json,
        r#""detail":"Method not allowed""#,
        &format!(r#""detail":{}"#, serde_json::Value::from(detail)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_answers_and_errors_pass_through() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestApiServer::start(
        registry.clone(),
        SERVICE,
        TestApi::new("api-0"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(registry.clone(), api_options()).await;
    let http = http_client();

    let reply = get(&http, &gateway.url("/test/say/hello?name=huohuo"))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "message": "Hello huohuo", "instance": "api-0" })
    );
    assert_eq!(reply.headers["x-instance"], "api-0");
    // The service set no Content-Type: JSON by default.
    assert_eq!(reply.headers["content-type"], "application/json");

    // The service's own micro error, byte for byte as go-micro writes one,
    // with its code as status.
    let reply = get(&http, &gateway.url("/test/say/hello"))
        .await
        .expect("answer");
    assert_micro_error(&reply, 400);
    assert_eq!(
        reply.text(),
        go_micro_bad_request(SERVICE, "Name cannot be blank")
    );

    // An endpoint the API service does not have.
    let reply = get(&http, &gateway.url("/test/say/goodbye"))
        .await
        .expect("answer");
    let json = assert_micro_error(&reply, 404);
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Say.Goodbye"),
        "{json}"
    );
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_request_becomes_a_go_api_request() {
    let registry = Arc::new(MemoryRegistry::new());
    let api = TestApi::new("api-0");
    let server = TestApiServer::start(registry.clone(), SERVICE, api.clone(), loopback_options());
    let gateway = RunningGateway::start(registry.clone(), api_options()).await;
    let http = http_client();

    // A form POST: fields in `post`, body left empty.
    let request = Request::post(gateway.url("/test/say/hello?q=1&q=2&lang=en"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-custom", "a")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Full::new(Bytes::from_static(b"name=form&x=1&x=2")))
        .expect("request");
    let reply = send(&http, request).await.expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request().expect("request reached the service");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/test/say/hello");
    assert_eq!(seen.url, "/test/say/hello?q=1&q=2&lang=en");
    assert_eq!(seen.get["q"].values, ["1", "2"]);
    assert_eq!(seen.first_get("lang"), Some("en"));
    assert_eq!(seen.first_post("name"), Some("form"));
    assert_eq!(seen.post["x"].values, ["1", "2"]);
    assert_eq!(seen.body, "");
    assert_eq!(seen.first_header("X-Custom"), Some("a"));
    assert_eq!(seen.header["X-Custom"].key, "X-Custom");
    assert_eq!(
        seen.first_header("Content-Type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        seen.first_header("Host"),
        Some(gateway.address.to_string().as_str())
    );
    assert_eq!(
        seen.first_header("X-Forwarded-For"),
        Some("10.0.0.1, 127.0.0.1")
    );
    // The headers also travel as gRPC metadata, as go-micro's api handler
    // sent them; never the HTTP Content-Length (go-micro#1079: the gRPC body
    // is another body, with a length of its own if any) or Host.
    let metadata = api.last_metadata().expect("metadata").into_headers();
    assert_eq!(metadata["x-custom"], "a");
    assert_eq!(metadata["x-forwarded-for"], "10.0.0.1");
    assert!(
        metadata
            .get("content-length")
            .is_none_or(|length| length != "17"),
        "{metadata:?}"
    );
    assert!(metadata.get("host").is_none(), "{metadata:?}");
    assert_eq!(metadata["content-type"], "application/grpc");

    // Any other body is passed as is.
    let request = Request::put(gateway.url("/test/say/hello?name=body"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"name":"json"}"#)))
        .expect("request");
    let reply = send(&http, request).await.expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request().expect("request");
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body, r#"{"name":"json"}"#);
    assert!(seen.post.is_empty());
    assert_eq!(seen.first_header("X-Forwarded-For"), Some("127.0.0.1"));

    // A GET without a Content-Type gets go-micro's.
    let reply = get(&http, &gateway.url("/test/say/hello?name=get"))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = api.last_request().expect("request");
    assert_eq!(
        seen.first_header("Content-Type"),
        Some("text/plain; charset=UTF-8")
    );
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_api_response_becomes_the_http_response() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestApiServer::start(
        registry.clone(),
        SERVICE,
        TestApi::new("api-0"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(registry.clone(), api_options()).await;
    let http = http_client();

    let reply = get(
        &http,
        &gateway.url("/test/say/status?code=201&header=a&header=b"),
    )
    .await
    .expect("answer");
    assert_eq!(reply.status, 201);
    assert_eq!(reply.text(), "status");
    assert_eq!(reply.headers["content-type"], "text/plain");
    let echoed: Vec<_> = reply.headers.get_all("x-echo").iter().collect();
    assert_eq!(echoed, ["a", "b"]);

    // statusCode 0 is 200.
    let reply = get(&http, &gateway.url("/test/say/status"))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200);

    // A status no HTTP response can carry: the service is at fault.
    let reply = get(&http, &gateway.url("/test/say/status?code=1000"))
        .await
        .expect("answer");
    let json = assert_micro_error(&reply, 502);
    assert_eq!(json["id"], SERVICE);
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_spread_round_robin() {
    let registry = Arc::new(MemoryRegistry::new());
    let servers: Vec<TestApiServer> = (0..3)
        .map(|i| {
            TestApiServer::start(
                registry.clone(),
                SERVICE,
                TestApi::new(format!("api-{i}")),
                loopback_options(),
            )
        })
        .collect();
    let gateway = RunningGateway::start_round_robin(registry.clone(), api_options()).await;
    wait_for_nodes(gateway.gateway.client(), SERVICE, 3).await;
    let http = http_client();
    for i in 0..60 {
        let reply = get(&http, &gateway.url(&format!("/test/say/hello?name=n{i}")))
            .await
            .expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let counts: Vec<usize> = servers.iter().map(|s| s.api.hits()).collect();
    assert_eq!(counts, [20, 20, 20]);
    gateway.stop().await;
    for server in servers {
        server.stop();
    }
}
