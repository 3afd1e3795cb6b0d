//! The gateway's admission control (`--max_concurrent`): a request over the
//! limit is answered 503 with `Retry-After` at once, in go-micro's error
//! JSON, without reaching a service; a real greeter behind a gateway on a
//! socket.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{RunningGateway, assert_micro_error, http_client, send};
use http::Request;
use http_body_util::Full;
use micro_api::{ApiOptions, HandlerKind};
use micro_registry::memory::MemoryRegistry;
use micro_serve::admission::ConcurrencyLimit;
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";

fn post(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"name":"huohuo"}"#)))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_503_with_retry_after_at_once() {
    let registry = Arc::new(MemoryRegistry::new());
    // Each call takes a minute: the first request holds the one slot.
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("slow").with_delay(Duration::from_secs(60)),
        loopback_options(),
    );
    let options = ApiOptions {
        handler: HandlerKind::Rpc,
        namespace: "go.micro.srv".into(),
        max_concurrent: ConcurrencyLimit::Fixed(1),
        request_timeout: Duration::from_secs(120),
        ..ApiOptions::default()
    };
    let gateway = RunningGateway::start(registry.clone(), options).await;
    let http = http_client();
    let url = gateway.url("/greeter/greeter/hello");
    let held = tokio::spawn({
        let (http, request) = (http.clone(), post(&url));
        async move { send(&http, request).await }
    });
    tokio::time::timeout(Duration::from_secs(20), server.greeter.call_started())
        .await
        .expect("the first request reached the greeter");

    let reply = send(&http, post(&url)).await.expect("answer");
    let json = assert_micro_error(&reply, 503);
    assert_eq!(json["id"], "go.micro.api", "{json}");
    assert!(
        json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("overloaded")),
        "{json}"
    );
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    assert_eq!(
        server.greeter.hits(),
        1,
        "the refused request reached no service"
    );

    held.abort();
    server.kill();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_queues_nothing_and_refuses_nothing() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("slow").with_delay(Duration::from_millis(300)),
        loopback_options(),
    );
    let options = ApiOptions {
        handler: HandlerKind::Rpc,
        namespace: "go.micro.srv".into(),
        max_concurrent: ConcurrencyLimit::Off,
        ..ApiOptions::default()
    };
    let gateway = RunningGateway::start(registry.clone(), options).await;
    let http = http_client();
    let url = gateway.url("/greeter/greeter/hello");
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (http, request) = (http.clone(), post(&url));
            tokio::spawn(async move { send(&http, request).await })
        })
        .collect();
    for call in calls {
        let reply = call.await.expect("task").expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    server.stop();
    gateway.stop().await;
}
