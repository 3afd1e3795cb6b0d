//! Streams through the gateway, on real sockets: a real WebSocket client
//! (tokio-tungstenite) and plain HTTP for Server-Sent Events, through a
//! gateway serving on 127.0.0.1:0, to real greeter servers found in a
//! registry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RunningGateway, http_client, send};
use futures::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use micro_api::ApiOptions;
use micro_registry::SharedRegistry;
use micro_registry::memory::MemoryRegistry;
use micro_testing::greeter::greeter_server::{Greeter, GreeterServer};
use micro_testing::{
    Crashable, FILE_DESCRIPTOR_SET, ReplyStream, TestGreeter, TestServer, greeter, loopback_options,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tonic::{Request as GrpcRequest, Response, Status};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const GREETER: &str = "go.micro.api.greeter";

/// Opens a WebSocket to `path` of the gateway with `headers`.
async fn connect(
    gateway: &RunningGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, http::Response<Option<Vec<u8>>>), WsError> {
    let mut request = format!("ws://{}{path}", gateway.address)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("handshake in time")
}

/// Every message up to and including the close frame (or the end).
async fn read_all(ws: &mut Ws) -> (Vec<Message>, Option<CloseFrame>) {
    let mut messages = Vec::new();
    for _ in 0..100_000 {
        let next = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time");
        match next {
            Some(Ok(Message::Close(frame))) => return (messages, frame),
            Some(Ok(message)) => messages.push(message),
            Some(Err(e)) => panic!("websocket failed: {e}; after {messages:?}"),
            None => return (messages, None),
        }
    }
    panic!("too many messages");
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            other => panic!("not a text frame: {other:?}"),
        })
        .collect()
}

async fn gateway_with(
    registry: &SharedRegistry,
    options: ApiOptions,
) -> (RunningGateway, TestServer) {
    let server = TestServer::start(
        registry.clone(),
        GREETER,
        TestGreeter::new("rust"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(registry.clone(), options).await;
    (gateway, server)
}

fn memory() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}

#[tokio::test]
async fn websocket_streams_as_go_micros_gateway_does_and_closes_1000_at_the_end() {
    let registry = memory();
    let (gateway, server) = gateway_with(&registry, ApiOptions::default()).await;

    // The query is the first message; Content-Type: application/json gives
    // text frames, one per message; the normal end is close 1000.
    let (mut ws, response) = connect(
        &gateway,
        "/greeter/greeter/stream?name=x&count=3",
        &[("content-type", "application/json")],
    )
    .await
    .expect("upgrade");
    assert_eq!(response.status(), 101);
    let (messages, close) = read_all(&mut ws).await;
    assert_eq!(
        texts(&messages),
        [
            r#"{"msg":"Hello x 1"}"#,
            r#"{"msg":"Hello x 2"}"#,
            r#"{"msg":"Hello x 3"}"#
        ]
    );
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1000);

    // No Content-Type (what browsers send): binary frames.
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/stream?name=b&count=1", &[])
        .await
        .expect("upgrade");
    let (messages, close) = read_all(&mut ws).await;
    assert_eq!(
        messages,
        [Message::Binary(r#"{"msg":"Hello b 1"}"#.as_bytes().into())]
    );
    assert_eq!(u16::from(close.expect("close").code), 1000);

    // The `binary` subprotocol is echoed and wins over JSON text frames.
    let (mut ws, response) = connect(
        &gateway,
        "/greeter/greeter/stream?name=p&count=1",
        &[
            ("content-type", "application/json"),
            ("sec-websocket-protocol", "binary"),
        ],
    )
    .await
    .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
    let (messages, _) = read_all(&mut ws).await;
    assert!(matches!(messages[..], [Message::Binary(_)]), "{messages:?}");

    // The request headers went to the service as metadata.
    let (mut ws, _) = connect(
        &gateway,
        "/greeter/greeter/stream?name=m&count=1",
        &[("x-request-id", "ws-1")],
    )
    .await
    .expect("upgrade");
    read_all(&mut ws).await;
    let metadata = server.greeter.last_metadata().expect("metadata");
    assert_eq!(metadata.get("x-request-id").expect("forwarded"), "ws-1");
    assert!(metadata.get("sec-websocket-key").is_none());
    server.stop();
}

#[tokio::test]
async fn websocket_bidi_each_frame_is_one_message_each_way() {
    let registry = memory();
    let (gateway, server) = gateway_with(&registry, ApiOptions::default()).await;
    // No query: the first frame is the first message.
    let (mut ws, _) = connect(
        &gateway,
        "/greeter/greeter/pingPong",
        &[("content-type", "application/json")],
    )
    .await
    .expect("upgrade");
    for name in ["a", "b", "c"] {
        ws.send(Message::text(format!(r#"{{"name":"{name}"}}"#)))
            .await
            .expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("reply in time")
            .expect("a frame")
            .expect("ok");
        assert_eq!(reply, Message::text(format!(r#"{{"msg":"pong {name}"}}"#)));
    }
    // A binary frame is a message too.
    ws.send(Message::binary(r#"{"name":"bin"}"#.as_bytes().to_vec()))
        .await
        .expect("send");
    let reply = ws.next().await.expect("frame").expect("ok");
    assert_eq!(reply, Message::text(r#"{"msg":"pong bin"}"#));

    // A frame that is not JSON: close 1007 with the error JSON.
    ws.send(Message::text("not json")).await.expect("send");
    let (_, close) = read_all(&mut ws).await;
    let close = close.expect("close frame");
    assert_eq!(u16::from(close.code), 1007);
    let error: serde_json::Value = serde_json::from_str(&close.reason).expect("JSON reason");
    assert_eq!(error["code"], 400, "{error}");
    server.stop();
}

#[tokio::test]
async fn websocket_errors_close_with_the_code_and_the_error_json() {
    let registry = memory();
    let (gateway, server) = gateway_with(&registry, ApiOptions::default()).await;

    // The service fails after one message: 4000 + the error's code.
    let (mut ws, _) = connect(
        &gateway,
        "/greeter/greeter/stream?name=fail&count=2",
        &[("content-type", "application/json")],
    )
    .await
    .expect("upgrade");
    let (messages, close) = read_all(&mut ws).await;
    assert_eq!(texts(&messages), [r#"{"msg":"Hello fail 1"}"#]);
    let close = close.expect("close frame");
    let error: serde_json::Value = serde_json::from_str(&close.reason).expect("JSON reason");
    assert_eq!(error["code"], 500, "{error}");
    assert_eq!(u16::from(close.code), 4500);
    assert!(
        error["detail"]
            .as_str()
            .is_some_and(|d| d.contains("failed on purpose")),
        "{error}"
    );

    // Invalid argument from the service: 4400.
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/stream?name=x&count=-1", &[])
        .await
        .expect("upgrade");
    let (_, close) = read_all(&mut ws).await;
    let close = close.expect("close frame");
    assert_eq!(u16::from(close.code), 4400, "{close:?}");
    assert!(close.reason.len() <= 123);

    // A message past the limit: 1009.
    drop(gateway);
    let gateway = RunningGateway::start(
        registry.clone(),
        ApiOptions {
            stream_max_message_bytes: 64,
            ..ApiOptions::default()
        },
    )
    .await;
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/pingPong", &[])
        .await
        .expect("upgrade");
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(200));
    ws.send(Message::text(big)).await.expect("send");
    let (_, close) = read_all(&mut ws).await;
    assert_eq!(u16::from(close.expect("close").code), 1009);

    // An endpoint that does not stream: the unary path, as go-micro's.
    let plain = connect(&gateway, "/greeter/greeter/hello?name=x", &[]).await;
    match plain {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 200),
        other => panic!("expected the unary answer, got {other:?}"),
    }
    server.stop();
}

#[tokio::test]
async fn event_streams_send_one_data_line_per_message_and_an_error_event() {
    let registry = memory();
    let (gateway, server) = gateway_with(&registry, ApiOptions::default()).await;
    let client = http_client();
    let sse = |path: &str| {
        Request::get(gateway.url(path))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .expect("request")
    };
    let reply = send(&client, sse("/greeter/greeter/stream?name=s&count=2"))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(
        reply.text(),
        "data: {\"msg\":\"Hello s 1\"}\n\ndata: {\"msg\":\"Hello s 2\"}\n\n"
    );

    let reply = send(&client, sse("/greeter/greeter/stream?name=fail&count=2"))
        .await
        .expect("answer");
    let text = reply.text();
    let (data, error) = text.split_once("event: error\n").expect("an error event");
    assert_eq!(data, "data: {\"msg\":\"Hello fail 1\"}\n\n");
    let error = error
        .strip_prefix("data: ")
        .and_then(|e| e.strip_suffix("\n\n"))
        .expect("one data line");
    let error: serde_json::Value = serde_json::from_str(error).expect("JSON");
    assert_eq!(error["code"], 500, "{error}");

    // POST: the body is the message.
    let post = Request::post(gateway.url("/greeter/greeter/stream"))
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(Full::from(r#"{"name":"p","count":1}"#))
        .expect("request");
    let reply = send(&client, post).await.expect("answer");
    assert_eq!(reply.text(), "data: {\"msg\":\"Hello p 1\"}\n\n");
    server.stop();
}

#[tokio::test]
async fn upgrades_meet_auth_and_rate_limits() {
    let registry = memory();
    let options = ApiOptions {
        auth: Some(micro_api::auth::AuthConfig::hs256(b"secret")),
        ..ApiOptions::default()
    };
    let (gateway, server) = gateway_with(&registry, options).await;
    match connect(&gateway, "/greeter/greeter/stream?name=x&count=1", &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    drop(gateway);

    let options = ApiOptions {
        rate_limits: micro_api::ratelimit::RateLimits {
            per_ip: micro_api::ratelimit::Rate::new(1, Some(1)),
            per_route: None,
        },
        ..ApiOptions::default()
    };
    let gateway = RunningGateway::start(registry.clone(), options).await;
    let (mut first, _) = connect(&gateway, "/greeter/greeter/pingPong", &[])
        .await
        .expect("the first upgrade");
    match connect(&gateway, "/greeter/greeter/pingPong", &[]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    first.close(None).await.expect("close");
    server.stop();
}

/// A greeter whose `Stream` sends a message every `tick`, forever, and
/// counts the streams open on it (a stream dropped early, cancelled, is
/// counted out too).
#[derive(Clone)]
struct Ticker {
    tick: Duration,
    open: Arc<AtomicUsize>,
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Greeter for Ticker {
    async fn hello(
        &self,
        request: GrpcRequest<greeter::Request>,
    ) -> Result<Response<greeter::Response>, Status> {
        Ok(Response::new(greeter::Response {
            msg: format!("Hello {}", request.into_inner().name),
        }))
    }

    type StreamStream = ReplyStream;

    async fn stream(
        &self,
        request: GrpcRequest<greeter::Request>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(self.open.clone());
        let (name, tick) = (request.into_inner().name, self.tick);
        let replies = futures::stream::unfold((1u64, guard), move |(i, guard)| {
            let name = name.clone();
            async move {
                if i > 1 {
                    tokio::time::sleep(tick).await;
                }
                let reply = greeter::Response {
                    msg: format!("Hello {name} {i}"),
                };
                Some((Ok(reply), (i + 1, guard)))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    type PingPongStream = ReplyStream;

    async fn ping_pong(
        &self,
        request: GrpcRequest<tonic::Streaming<greeter::Request>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Ok(micro_testing::ping_pong(request.into_inner()))
    }
}

fn ticker(registry: &SharedRegistry, tick: Duration) -> (Crashable, Arc<AtomicUsize>) {
    let open = Arc::new(AtomicUsize::new(0));
    let handler = Ticker {
        tick,
        open: open.clone(),
    };
    let server = Crashable::start(registry.clone(), GREETER, loopback_options(), move |b| {
        b.file_descriptor_set(FILE_DESCRIPTOR_SET)
            .add_service(GreeterServer::new(handler))
    });
    (server, open)
}

/// Waits (bounded) until `check` holds.
async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_service_stream() {
    let registry = memory();
    let (server, open) = ticker(&registry, Duration::from_millis(20));
    let gateway = RunningGateway::start(registry.clone(), ApiOptions::default()).await;
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/stream?name=v", &[])
        .await
        .expect("upgrade");
    let first = ws.next().await.expect("frame").expect("ok");
    assert_eq!(
        first,
        Message::binary(r#"{"msg":"Hello v 1"}"#.as_bytes().to_vec())
    );
    assert_eq!(open.load(Ordering::SeqCst), 1);
    // Gone without a close frame: the TCP connection just ends.
    drop(ws);
    until(
        "the service's stream is cancelled",
        Duration::from_secs(5),
        || open.load(Ordering::SeqCst) == 0,
    )
    .await;

    // A close frame from the client ends it too.
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/stream?name=w", &[])
        .await
        .expect("upgrade");
    ws.next().await.expect("frame").expect("ok");
    ws.close(None).await.expect("close");
    until(
        "the service's stream is cancelled",
        Duration::from_secs(5),
        || open.load(Ordering::SeqCst) == 0,
    )
    .await;
    server.stop();
}

#[tokio::test]
async fn a_node_killed_mid_stream_closes_with_an_error() {
    let registry = memory();
    let (server, _open) = ticker(&registry, Duration::from_millis(20));
    let gateway = RunningGateway::start(registry.clone(), ApiOptions::default()).await;
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/stream?name=k", &[])
        .await
        .expect("upgrade");
    ws.next().await.expect("frame").expect("ok");
    server.kill();
    let (_, close) = read_all(&mut ws).await;
    let close = close.expect("a close frame, not a hang");
    let code = u16::from(close.code);
    assert!((4500..4600).contains(&code), "{close:?}");
    let error: serde_json::Value = serde_json::from_str(&close.reason).expect("JSON reason");
    assert!(error["code"].as_i64().is_some_and(|c| c >= 500), "{error}");
}

#[tokio::test]
async fn idle_streams_close_and_a_stopping_gateway_sends_close_frames() {
    let registry = memory();
    let options = ApiOptions {
        stream_idle_timeout: Duration::from_millis(300),
        ..ApiOptions::default()
    };
    let (gateway, server) = gateway_with(&registry, options).await;
    let (mut ws, _) = connect(&gateway, "/greeter/greeter/pingPong", &[])
        .await
        .expect("upgrade");
    let (_, close) = read_all(&mut ws).await;
    let close = close.expect("close frame");
    assert_eq!(u16::from(close.code), 4408, "{close:?}");

    let (mut ws, _) = connect(&gateway, "/greeter/greeter/pingPong", &[])
        .await
        .expect("upgrade");
    ws.send(Message::text(r#"{"name":"a"}"#))
        .await
        .expect("send");
    ws.next().await.expect("frame").expect("ok");
    let stopping = tokio::spawn(gateway.stop());
    let (_, close) = read_all(&mut ws).await;
    assert_eq!(u16::from(close.expect("close frame").code), 1001);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the gateway stops")
        .expect("stop task");
    server.stop();
}

#[tokio::test]
async fn an_upgraded_connection_keeps_its_slot() {
    let registry = memory();
    let options = ApiOptions {
        max_connections: 2,
        ..ApiOptions::default()
    };
    let (gateway, server) = gateway_with(&registry, options).await;
    let (mut a, _) = connect(&gateway, "/greeter/greeter/pingPong", &[])
        .await
        .expect("upgrade a");
    let (mut b, _) = connect(&gateway, "/greeter/greeter/pingPong", &[])
        .await
        .expect("upgrade b");
    // Both slots hold a stream: a third connection is refused.
    assert!(
        connect(&gateway, "/greeter/greeter/pingPong", &[])
            .await
            .is_err()
    );
    // Both streams still work.
    for ws in [&mut a, &mut b] {
        ws.send(Message::text(r#"{"name":"z"}"#))
            .await
            .expect("send");
        let reply = ws.next().await.expect("frame").expect("ok");
        assert_eq!(
            reply,
            Message::binary(r#"{"msg":"pong z"}"#.as_bytes().to_vec())
        );
    }
    a.close(None).await.expect("close");
    read_all(&mut a).await;
    // Its slot is free again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if connect(&gateway, "/greeter/greeter/pingPong", &[])
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
}
