//! go-micro's codecs on a toolkit server: the same greeter answers
//! `application/grpc+json` (as go-micro's `micro call` and rpc handler send
//! it) and protobuf, and refuses other subtypes naming the ones it takes.

use std::sync::Arc;

use http::HeaderValue;
use http::uri::PathAndQuery;
use micro_json::RawJsonCodec;
use micro_registry::memory::MemoryRegistry;
use micro_testing::greeter::greeter_client::GreeterClient;
use micro_testing::greeter::greeter_server::GreeterServer;
use micro_testing::{Crashable, FILE_DESCRIPTOR_SET, TestGreeter, loopback_options};
use tonic::Code;
use tonic::transport::Channel;
use tower::ServiceExt;

const SERVICE: &str = "go.micro.srv.greeter";
const PATH: &str = "/go.micro.srv.greeter.Greeter/Hello";

fn start(greeter: TestGreeter, reflection: bool) -> Crashable {
    Crashable::start(
        Arc::new(MemoryRegistry::new()),
        SERVICE,
        loopback_options(),
        move |builder| {
            builder
                .reflection(reflection)
                .file_descriptor_set(FILE_DESCRIPTOR_SET)
                .add_service(GreeterServer::new(greeter))
        },
    )
}

/// One unary call whose message is `body` as is, sent as `content_type`;
/// the reply message and its content-type.
async fn call_raw(
    address: std::net::SocketAddr,
    path: &str,
    content_type: &'static str,
    body: &[u8],
) -> Result<(String, String), tonic::Status> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let channel = channel.map_request(move |mut request: http::Request<tonic::body::Body>| {
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        request
    });
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let reply = grpc
        .unary(
            tonic::Request::new(body.to_vec()),
            PathAndQuery::try_from(path.to_string()).expect("path"),
            RawJsonCodec,
        )
        .await?;
    let content_type = reply
        .metadata()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((
        String::from_utf8_lossy(&reply.into_inner()).into_owned(),
        content_type,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_reach_the_same_method() {
    let greeter = TestGreeter::new("rust");
    let server = start(greeter.clone(), true);

    let (reply, content_type) = call_raw(
        server.address,
        PATH,
        "application/grpc+json",
        br#"{"name":"huohuo"}"#,
    )
    .await
    .expect("JSON call");
    assert_eq!(reply, r#"{"msg":"Hello huohuo from rust"}"#);
    assert_eq!(content_type, "application/grpc+json");

    // go-micro's path form, and an empty message (go-micro sends `{}`).
    let (reply, _) = call_raw(
        server.address,
        "/go.micro.api.greeter.Greeter/Hello",
        "application/grpc+json",
        b"{}",
    )
    .await
    .expect("JSON call, other prefix");
    assert_eq!(reply, r#"{"msg":"Hello  from rust"}"#);

    // Protobuf, both spellings, untouched.
    let mut client = GreeterClient::connect(format!("http://{}", server.address))
        .await
        .expect("connect");
    let reply = client
        .hello(micro_testing::greeter::Request {
            name: "proto".into(),
            ..Default::default()
        })
        .await
        .expect("protobuf call");
    assert_eq!(reply.into_inner().msg, "Hello proto from rust");
    // `application/grpc+proto` with a protobuf message: field 1 = "p".
    let (reply, content_type) =
        call_raw(server.address, PATH, "application/grpc+proto", b"\x0a\x01p")
            .await
            .expect("grpc+proto call");
    assert_eq!(reply.as_bytes(), b"\x0a\x11Hello p from rust");
    assert_eq!(content_type, "application/grpc");
    assert_eq!(greeter.hits(), 4);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_unknown_subtypes_and_service_errors() {
    let greeter = TestGreeter::new("rust");
    // Without reflection the codecs work all the same.
    let server = start(greeter.clone(), false);

    let err = call_raw(
        server.address,
        PATH,
        "application/grpc+json",
        br#"{"nmae":"x"}"#,
    )
    .await
    .expect_err("unknown field");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("nmae"), "{err:?}");

    let err = call_raw(server.address, PATH, "application/grpc+json", b"{not json")
        .await
        .expect_err("not JSON");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = call_raw(server.address, PATH, "application/grpc+thrift", b"{}")
        .await
        .expect_err("unknown subtype");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    for supported in [
        "application/grpc,",
        "application/grpc+proto",
        "application/grpc+json",
    ] {
        assert!(err.message().contains(supported), "{err:?}");
    }

    let err = call_raw(
        server.address,
        "/go.micro.srv.greeter.Greeter/Goodbye",
        "application/grpc+json",
        b"{}",
    )
    .await
    .expect_err("no such method");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    // The service's own error passes through, JSON or not.
    let err = call_raw(
        server.address,
        PATH,
        "application/grpc+json",
        br#"{"name":"fail"}"#,
    )
    .await
    .expect_err("service error");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert_eq!(err.message(), "rust failed on purpose");

    // Only the service error reached the handler.
    assert_eq!(greeter.hits(), 1);
    server.stop();
}

/// A streaming call whose messages are `requests` as they are, sent as
/// `content_type`: the reply messages and how the call ended. The request
/// stream is not half-closed unless `half_close` (go-micro's clients never
/// half-close a server-streaming call).
async fn stream_raw(
    address: std::net::SocketAddr,
    path: &str,
    content_type: &'static str,
    requests: Vec<Vec<u8>>,
    half_close: bool,
) -> (Vec<String>, Result<(), tonic::Status>) {
    use futures::StreamExt;
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let channel = channel.map_request(move |mut request: http::Request<tonic::body::Body>| {
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        request
    });
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let requests = futures::stream::iter(requests);
    let requests = if half_close {
        requests.boxed()
    } else {
        requests.chain(futures::stream::pending()).boxed()
    };
    let reply = grpc
        .streaming(
            tonic::Request::new(requests),
            PathAndQuery::try_from(path.to_string()).expect("path"),
            RawJsonCodec,
        )
        .await;
    let mut replies = match reply {
        Ok(reply) => reply.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut messages = Vec::new();
    loop {
        match replies.message().await {
            Ok(Some(message)) => messages.push(String::from_utf8_lossy(&message).into_owned()),
            Ok(None) => return (messages, Ok(())),
            Err(status) => return (messages, Err(status)),
        }
    }
}

const STREAM: &str = "/go.micro.srv.greeter.Greeter/Stream";
const PING_PONG: &str = "/go.micro.srv.greeter.Greeter/PingPong";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_in_json_and_protobuf_without_half_close() {
    let greeter = TestGreeter::new("rust");
    let server = start(greeter.clone(), false);

    // go-micro's client: one JSON message, no half-close (the golden capture
    // in go-micro-v2/stream/grpc-json-stream.txt); go-micro's path form too.
    for path in [STREAM, "/go.micro.api.greeter.Greeter/Stream"] {
        let (messages, end) = stream_raw(
            server.address,
            path,
            "application/grpc+json",
            vec![br#"{"name":"x","count":2}"#.to_vec()],
            false,
        )
        .await;
        end.expect("ends OK");
        assert_eq!(
            messages,
            [r#"{"msg":"Hello x 1"}"#, r#"{"msg":"Hello x 2"}"#]
        );
    }
    // Protobuf, both spellings, the request not half-closed either:
    // name "p" (field 1), count 3 (field 2).
    for content_type in ["application/grpc", "application/grpc+proto"] {
        let (messages, end) = stream_raw(
            server.address,
            STREAM,
            content_type,
            vec![b"\x0a\x01p\x10\x03".to_vec()],
            false,
        )
        .await;
        end.expect("ends OK");
        assert_eq!(
            messages,
            [
                "\x0a\x09Hello p 1",
                "\x0a\x09Hello p 2",
                "\x0a\x09Hello p 3"
            ]
        );
    }
    // The generated tonic client (half-closes) gets the same.
    let mut client = GreeterClient::connect(format!("http://{}", server.address))
        .await
        .expect("connect");
    let mut replies = client
        .stream(micro_testing::greeter::Request {
            name: "tonic".into(),
            count: 2,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.message().await.expect("message") {
        got.push(reply.msg);
    }
    assert_eq!(got, ["Hello tonic 1", "Hello tonic 2"]);

    // An error after one message: the message, then the status.
    let (messages, end) = stream_raw(
        server.address,
        STREAM,
        "application/grpc+json",
        vec![br#"{"name":"fail"}"#.to_vec()],
        false,
    )
    .await;
    assert_eq!(messages, [r#"{"msg":"Hello fail 1"}"#]);
    let status = end.expect_err("fails");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "rust failed on purpose");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_streaming_in_json_until_half_close() {
    let greeter = TestGreeter::new("rust");
    let server = start(greeter.clone(), true);

    let (messages, end) = stream_raw(
        server.address,
        PING_PONG,
        "application/grpc+json",
        vec![
            br#"{"name":"a"}"#.to_vec(),
            // Any whitespace, another field.
            b" { \"name\" : \"b\", \"count\": 7 } ".to_vec(),
            b"{}".to_vec(),
        ],
        true,
    )
    .await;
    end.expect("ends OK at half-close");
    assert_eq!(
        messages,
        [
            r#"{"msg":"pong a"}"#,
            r#"{"msg":"pong b"}"#,
            r#"{"msg":"pong "}"#
        ]
    );

    // A bad message ends the call with InvalidArgument after the good ones.
    let (messages, end) = stream_raw(
        server.address,
        PING_PONG,
        "application/grpc+json",
        vec![br#"{"name":"a"}"#.to_vec(), br#"{"nmae":"b"}"#.to_vec()],
        false,
    )
    .await;
    assert_eq!(messages, [r#"{"msg":"pong a"}"#]);
    let status = end.expect_err("bad message");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("nmae"), "{status:?}");

    // A server-streaming request that is not JSON at all.
    let (messages, end) = stream_raw(
        server.address,
        STREAM,
        "application/grpc+json",
        vec![b"{not json".to_vec()],
        false,
    )
    .await;
    assert!(messages.is_empty());
    assert_eq!(end.expect_err("not JSON").code(), Code::InvalidArgument);

    // Unknown subtypes are refused on streams too.
    let (_, end) = stream_raw(
        server.address,
        PING_PONG,
        "application/grpc+thrift",
        vec![b"{}".to_vec()],
        true,
    )
    .await;
    assert_eq!(end.expect_err("thrift").code(), Code::Unimplemented);
    server.stop();
}
