//! The bytes go-micro v2.9.1 writes, and the toolkit's, side by side: the
//! envelope, the http broker's POST, and its registry entries
//! (testdata/go-micro-v2/broker, captured from go-micro itself).

use std::sync::Arc;
use std::time::Duration;

use micro_broker::http::{HttpBroker, HttpOptions};
use micro_broker::{Broker, Event, HandlerError, Message, SubscribeOptions};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{RegisterOptions, Registry, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn golden(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../testdata/go-micro-v2/broker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn go_message(content_type: &str, body: &[u8]) -> Message {
    Message::new(body.to_vec())
        .with_header("Content-Type", content_type)
        .with_header("Micro-Topic", "go.micro.topic.greet")
}

#[test]
fn envelopes_are_go_micros_bytes() {
    let json = go_message("application/json", br#"{"name":"John"}"#);
    assert_eq!(json.to_envelope(), golden("http-publish-json.body.json"));
    let metadata = json
        .clone()
        .with_header("Foo", "bar")
        .with_header("Micro-From-Service", "go.micro.srv.pub");
    assert_eq!(
        metadata.to_envelope(),
        golden("http-publish-metadata.body.json")
    );
    // greeter.Request{name: "John"} as protobuf.
    let proto = go_message("application/grpc+proto", b"\x0a\x04John");
    assert_eq!(proto.to_envelope(), golden("http-publish-proto.body.json"));

    for name in [
        "http-publish-json.body.json",
        "http-publish-metadata.body.json",
        "http-publish-proto.body.json",
    ] {
        let read = Message::from_envelope(&golden(name)).expect(name);
        assert_eq!(read.to_envelope(), golden(name), "{name} round trip");
    }
}

/// A go-micro-shaped node that records the one request it gets: what the
/// toolkit's publisher POSTs, compared with go-micro's POST to the same node.
#[tokio::test]
async fn the_publishers_post_is_go_micros() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let registry = Arc::new(MemoryRegistry::new());
    let fake: Service =
        serde_json::from_slice(&golden("http-publish-fake-node.value.json")).expect("golden entry");
    let mut fake = fake;
    fake.nodes[0].address = address.clone();
    let node_id = fake.nodes[0].id.clone();
    registry
        .register(&fake, RegisterOptions::default())
        .await
        .expect("register");

    let answer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Head and body: the body's length is in the head.
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed mid-request");
            request.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&request, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("answer");
        request
    });

    let broker = HttpBroker::new(registry, HttpOptions::default());
    let message = Message::new(br#"{"name":"John"}"#.to_vec())
        .with_header("Content-Type", "application/json");
    broker
        .publish("go.micro.topic.greet", message)
        .await
        .expect("published");
    let request = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("in time")
        .expect("request");
    let end = find(&request, b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&request[..end]).to_string();
    let golden_head = String::from_utf8(golden("http-publish-json.request.txt")).expect("utf-8");
    // Same request line (node id as the query), same content type; the
    // client's own headers (User-Agent, Accept-Encoding) are Go's.
    assert_eq!(
        head.lines().next(),
        golden_head.lines().next(),
        "request line"
    );
    assert!(head.starts_with(&format!("POST /?id={node_id} HTTP/1.1")));
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(
        &request[end + 4..],
        &golden("http-publish-json.body.json")[..]
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `micro.http.broker` entries a subscription registers are go-micro's
/// but for the node id's uuid and the address.
#[tokio::test]
async fn subscriptions_register_go_micros_entries() {
    let registry = Arc::new(MemoryRegistry::new());
    let options = HttpOptions {
        address: "127.0.0.1:0".into(),
        ..HttpOptions::default()
    };
    let broker = HttpBroker::new(registry.clone(), options);
    let handler = Arc::new(|_: Event| async { Ok::<(), HandlerError>(()) });
    let broadcast = broker
        .subscribe(
            "go.micro.topic.greet",
            SubscribeOptions::default(),
            handler.clone(),
        )
        .await
        .expect("subscribe");
    let queue = broker
        .subscribe(
            "go.micro.topic.greet",
            SubscribeOptions::queue("q1"),
            handler,
        )
        .await
        .expect("subscribe");
    let advertised = broker.advertised().expect("listening").to_string();
    assert!(advertised.starts_with("127.0.0.1:"), "{advertised}");

    let mut found = registry
        .get_service("micro.http.broker")
        .await
        .expect("registered");
    found.sort_by(|a, b| a.version.cmp(&b.version));
    let expect = |golden_name: &str, subscription: &micro_broker::Subscription| {
        let mut expected: Service = serde_json::from_slice(&golden(golden_name)).expect("golden");
        expected.nodes[0].id = subscription.id().to_string();
        expected.nodes[0].address = advertised.clone();
        serde_json::to_string(&expected).expect("json")
    };
    let by_version = |version: &str| {
        let service = found
            .iter()
            .find(|s| s.version == version)
            .expect("version");
        serde_json::to_string(service).expect("json")
    };
    assert_eq!(
        by_version("ff.http.broadcast"),
        expect("registry-http-broker-broadcast.value.json", &broadcast)
    );
    assert_eq!(
        by_version("q1"),
        expect("registry-http-broker-queue.value.json", &queue)
    );
    // `<topic>-<uuid>`.
    let uuid = broadcast
        .id()
        .strip_prefix("go.micro.topic.greet-")
        .expect("topic prefix");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");

    broadcast.unsubscribe().await;
    queue.unsubscribe().await;
    assert!(
        registry.get_service("micro.http.broker").await.is_err(),
        "deregistered on unsubscribe"
    );
}
