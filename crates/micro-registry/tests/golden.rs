//! The data model against bytes go-micro v2.9.1 wrote (testdata/go-micro-v2/etcd).

use micro_registry::Service;

fn golden(name: &str) -> String {
    micro_registry_conformance::golden::file(&format!("etcd/{name}"))
}

/// The greeter of the golden capture, built with our types.
fn greeter() -> Service {
    micro_registry_conformance::golden::greeter("etcd")
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
