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
