//! Plain gRPC clients reach a toolkit server, by the proto package path or by
//! go-micro's `/<service>.<Handler>/<Method>` path.

use micro::registry::memory::MemoryRegistry;
use micro_testing::greeter::{Request, Response, greeter_client::GreeterClient};
use micro_testing::{TestGreeter, TestServer, loopback_options};
use std::sync::Arc;

/// Registered under a name unlike its proto package, as go-micro allows.
const SERVICE: &str = "acme.greeter.service";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_package_path_reaches_the_handler() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("a"),
        loopback_options(),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut plain = GreeterClient::new(channel);
    let reply = plain
        .hello(Request {
            name: "huohuo".into(),
            ..Default::default()
        })
        .await
        .expect("call by /go.micro.srv.greeter.Greeter/Hello");
    assert_eq!(reply.get_ref().msg, "Hello huohuo from a");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_paths_reach_the_handler() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("a"),
        loopback_options(),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    for path in [
        "/acme.greeter.service.Greeter/Hello",
        "/Greeter/Hello",
        "/whatever.prefix.Greeter/Hello",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let reply: tonic::Response<Response> = grpc
            .unary(
                tonic::Request::new(Request {
                    name: "x".into(),
                    ..Default::default()
                }),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        assert_eq!(reply.get_ref().msg, "Hello x from a", "{path}");
    }
    // An unknown handler is Unimplemented, not a crash.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let err = grpc
        .unary::<Request, Response, _>(
            tonic::Request::new(Request {
                name: "x".into(),
                ..Default::default()
            }),
            http::uri::PathAndQuery::from_static("/acme.greeter.service.Nope/Hello"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("unknown handler");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    server.stop();
}
