//! The data model against bytes go-micro v2.9.1 wrote (testdata/go-micro-v2/etcd).

use micro_registry::{Endpoint, Node, Service, Value};

fn golden(name: &str) -> String {
    let path = format!(
        "{}/../../testdata/go-micro-v2/etcd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The greeter service of the golden capture, built with our types.
fn greeter() -> Service {
    Service::new("go.micro.srv.greeter", "latest")
        .with_endpoint(Endpoint {
            name: "Greeter.Hello".into(),
            request: Some(
                Value::new("Request", "Request").with_values(vec![Value::new("name", "string")]),
            ),
            response: Some(
                Value::new("Response", "Response").with_values(vec![Value::new("msg", "string")]),
            ),
            metadata: Default::default(),
        })
        .with_node(
            Node::new(
                "go.micro.srv.greeter-4b6e0b5e-6f7a-4c1d-9a2b-3c4d5e6f7a8b",
                "127.0.0.1:4242",
            )
            .with_metadata("broker", "http")
            .with_metadata("protocol", "grpc")
            .with_metadata("registry", "etcd")
            .with_metadata("server", "grpc")
            .with_metadata("transport", "grpc"),
        )
}

#[test]
fn we_write_the_bytes_go_micro_writes() {
    let ours = serde_json::to_string(&greeter()).expect("serialise");
    assert_eq!(ours, golden("value.json"));
}

#[test]
fn we_read_what_go_micro_writes() {
    let theirs: Service = serde_json::from_str(&golden("value.json")).expect("parse");
    assert_eq!(theirs, greeter());
    // Endpoint metadata written as null by some go-micro versions reads the same.
    let nulls: Service =
        serde_json::from_str(&golden("value-nottl-epmeta-null.json")).expect("parse");
    assert_eq!(nulls, greeter());
}

#[test]
fn go_micro_lookup_output_parses() {
    #[derive(serde::Deserialize)]
    struct Listing {
        list: Vec<Service>,
        get: Vec<Service>,
    }
    let listing: Listing = serde_json::from_str(&golden("gm-list.json")).expect("parse");
    assert_eq!(listing.list, vec![greeter()]);
    assert_eq!(listing.get, vec![greeter()]);
}

#[test]
fn missing_and_null_fields_default() {
    let sparse: Service = serde_json::from_str(
        r#"{"name":"a","nodes":[{"id":"a-1","address":"127.0.0.1:1","metadata":null}],"endpoints":null}"#,
    )
    .expect("parse");
    assert_eq!(sparse.version, "");
    assert!(sparse.endpoints.is_empty());
    assert!(sparse.nodes[0].metadata.is_empty());
}
