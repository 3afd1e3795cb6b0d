//! What a server registers: go-micro's node id, metadata and endpoints, with
//! the endpoints byte-identical to go-micro v2.9.1's for the same proto.

use std::sync::Arc;

use micro::registry::memory::MemoryRegistry;
use micro::{Server, ServerOptions};
use micro_testing::greeter::greeter_server::GreeterServer;
use micro_testing::{FILE_DESCRIPTOR_SET, TestGreeter};

fn golden_value() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/go-micro-v2/etcd/value.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden")).expect("json")
}

#[tokio::test]
async fn endpoints_node_and_metadata_match_go_micro() {
    let server = Server::builder("go.micro.srv.greeter")
        .registry(Arc::new(MemoryRegistry::new()))
        .options(ServerOptions {
            address: "127.0.0.1:0".into(),
            ..ServerOptions::default()
        })
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(GreeterServer::new(TestGreeter::new("x")))
        .bind()
        .await
        .expect("bind");
    let registration = server.registration();
    let ours = serde_json::to_value(registration).expect("json");
    let theirs = golden_value();
    assert_eq!(ours["name"], theirs["name"]);
    assert_eq!(ours["version"], theirs["version"]);
    assert_eq!(ours["metadata"], theirs["metadata"]);
    // The captured greeter had `Hello(Request{name})` only; the shared
    // greeter has since grown `count` and two streaming methods, which
    // go-micro marks `"stream": "true"` (gm:server/grpc/extractor.go).
    let mut hello = theirs["endpoints"][0].clone();
    hello["request"]["values"]
        .as_array_mut()
        .expect("values")
        .push(serde_json::json!({"name": "count", "type": "int32", "values": null}));
    let streaming = |name: &str| {
        let mut endpoint = hello.clone();
        endpoint["name"] = format!("Greeter.{name}").into();
        endpoint["metadata"] = serde_json::json!({"stream": "true"});
        endpoint
    };
    let expected = serde_json::json!([hello, streaming("Stream"), streaming("PingPong")]);
    assert_eq!(ours["endpoints"], expected);

    let node = server.node();
    let uuid = node
        .id
        .strip_prefix("go.micro.srv.greeter-")
        .expect("id = <service>-<uuid>");
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(node.address, server.local_addr().to_string());
    assert!(node.address.starts_with("127.0.0.1:"));
    for (key, value) in [
        ("registry", "memory"),
        ("server", "grpc"),
        ("transport", "grpc"),
        ("protocol", "grpc"),
    ] {
        assert_eq!(
            node.metadata.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
}

#[tokio::test]
async fn bad_options_are_refused_before_binding() {
    for (options, wanted) in [
        (
            ServerOptions {
                address: "nonsense".into(),
                ..ServerOptions::default()
            },
            "listen address",
        ),
        (
            ServerOptions {
                address: "127.0.0.1:0".into(),
                advertise: Some("0.0.0.0".into()),
                ..ServerOptions::default()
            },
            "not reachable",
        ),
        (
            ServerOptions {
                address: "127.0.0.1:0".into(),
                register_ttl: std::time::Duration::from_secs(10),
                register_interval: std::time::Duration::from_secs(10),
                ..ServerOptions::default()
            },
            "register_interval",
        ),
    ] {
        let err = Server::builder("go.micro.srv.greeter")
            .registry(Arc::new(MemoryRegistry::new()))
            .options(options)
            .add_service(GreeterServer::new(TestGreeter::new("x")))
            .bind()
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(wanted), "{err}");
    }
}
