//! What is on the wire: go-micro v2.9.1's own key and value bytes
//! (testdata/go-micro-v2/etcd) are read, ours are byte-identical, `etcdctl`
//! shows them, and poisoned entries are skipped.

use std::time::Duration;

use etcd_client::Client;
use micro_registry::{Action, Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_registry_etcd::testing::EtcdCluster;
use micro_registry_etcd::{EtcdRegistry, node_key};

fn golden(name: &str) -> String {
    micro_registry_conformance::golden::file(&format!("etcd/{name}"))
}

/// The greeter of the golden capture, built with our types.
fn greeter() -> Service {
    micro_registry_conformance::golden::greeter("etcd")
}

async fn raw_client(etcd: &EtcdCluster) -> Client {
    Client::connect(etcd.endpoints(), None)
        .await
        .expect("raw etcd client")
}

async fn raw_get(client: &mut Client, key: &str) -> Option<(Vec<u8>, i64)> {
    let response = client.get(key, None).await.expect("raw get");
    response
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.lease()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_read_the_entries_go_micro_writes() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let mut raw = raw_client(&etcd).await;
    raw.put(golden("key.txt"), golden("value.json"), None)
        .await
        .expect("put go-micro entry");

    let registry = etcd.registry().await;
    let got = registry
        .get_service("go.micro.srv.greeter")
        .await
        .expect("get greeter");
    assert_eq!(got, vec![greeter()]);
    let listed = registry.list_services().await.expect("list");
    assert_eq!(listed, vec![greeter()]);

    // The variant with endpoint metadata `null` reads the same.
    raw.put(
        golden("key.txt"),
        golden("value-nottl-epmeta-null.json"),
        None,
    )
    .await
    .expect("put variant");
    let got = registry
        .get_service("go.micro.srv.greeter")
        .await
        .expect("get greeter");
    assert_eq!(got, vec![greeter()]);
    assert_eq!(registry.skipped_entries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_write_the_bytes_go_micro_writes_and_etcdctl_shows_them() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let registry = etcd.registry().await;
    let service = greeter();
    registry
        .register(&service, RegisterOptions::with_ttl(Duration::from_secs(90)))
        .await
        .expect("register");

    let key = node_key(&service.name, &service.nodes[0].id);
    assert_eq!(key, golden("key.txt"));
    let mut raw = raw_client(&etcd).await;
    let (value, lease) = raw_get(&mut raw, &key).await.expect("our key exists");
    assert_eq!(
        String::from_utf8(value).expect("utf-8"),
        golden("value.json")
    );
    assert_ne!(lease, 0, "the entry is on a lease");

    let output = etcd
        .etcdctl(&["get", "--prefix", "/micro/registry/"])
        .expect("run etcdctl");
    assert!(output.status.success(), "etcdctl: {output:?}");
    let shown = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(
        shown.trim_end(),
        golden("etcdctl-get-prefix.txt").trim_end()
    );

    registry.deregister(&service).await.expect("deregister");
    assert!(
        raw_get(&mut raw, &key).await.is_none(),
        "deregister deletes"
    );
    let leases = raw.leases().await.expect("leases");
    assert!(leases.leases().is_empty(), "deregister revokes the lease");
}

/// Entries nobody can use are skipped and counted, by lookups and watches,
/// and a good node beside them is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_entries_are_skipped_and_counted() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let registry = etcd.registry().await;
    let name = "poisoned";
    let mut watcher = registry
        .watch(WatchOptions::service(name))
        .await
        .expect("watch");

    let entry = |id: &str, address: &str| {
        serde_json::to_string(&Service::new(name, "latest").with_node(Node::new(id, address)))
            .expect("json")
    };
    let huge = serde_json::to_string(
        &Service::new(name, "latest")
            .with_metadata("padding", "x".repeat(1_200_000))
            .with_node(Node::new("poisoned-huge", "127.0.0.1:1")),
    )
    .expect("json");
    let poison = [
        (node_key(name, "poisoned-json"), "{\"name\":".to_string()),
        (
            node_key(name, "poisoned-empty"),
            entry("poisoned-empty", ""),
        ),
        (
            node_key(name, "poisoned-port0"),
            entry("poisoned-port0", "127.0.0.1:0"),
        ),
        (
            node_key(name, "poisoned-noport"),
            entry("poisoned-noport", "127.0.0.1"),
        ),
        (node_key(name, "poisoned-huge"), huge),
        (
            node_key(name, "poisoned-other"),
            entry("someone-else", "127.0.0.1:2"),
        ),
    ];
    let mut raw = raw_client(&etcd).await;
    for (key, value) in &poison {
        raw.put(key.as_str(), value.as_str(), None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    let good = Service::new(name, "latest").with_node(Node::new("poisoned-good", "127.0.0.1:4242"));
    registry
        .register(&good, RegisterOptions::default())
        .await
        .expect("register the good node");

    // The watcher's first event is the good node: the poisoned puts before it
    // were skipped.
    let event = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("an event in time")
        .expect("watcher open")
        .expect("no watcher error");
    assert_eq!(event.action, Action::Create);
    assert_eq!(event.service.nodes[0].id, "poisoned-good");
    let after_watch = registry.skipped_entries();
    assert_eq!(
        after_watch,
        poison.len() as u64,
        "each poisoned put counted"
    );

    let got = registry.get_service(name).await.expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].nodes, good.nodes);
    assert_eq!(
        registry.skipped_entries(),
        after_watch + poison.len() as u64
    );

    let listed = registry.list_services().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].nodes, good.nodes);

    // A node with an address clients could not dial is refused up front.
    let bad = Service::new(name, "latest").with_node(Node::new("poisoned-x", "127.0.0.1:0"));
    assert!(matches!(
        registry.register(&bad, RegisterOptions::default()).await,
        Err(micro_registry::Error::Invalid(_))
    ));
}

/// go-micro's key layout for names with a `/`, read back by a second client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_in_a_name_becomes_a_dash_in_the_key() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let writer = etcd.registry().await;
    let reader = EtcdRegistry::connect(etcd.options())
        .await
        .expect("connect");
    let service =
        Service::new("team/users", "1").with_node(Node::new("team/users-1", "127.0.0.1:9"));
    writer
        .register(&service, RegisterOptions::default())
        .await
        .expect("register");
    let mut raw = raw_client(&etcd).await;
    assert!(
        raw_get(&mut raw, "/micro/registry/team-users/team-users-1")
            .await
            .is_some()
    );
    let got = reader.get_service("team/users").await.expect("get");
    assert_eq!(got, vec![service]);
}

/// A listing of more entries than one page (512) reads every page of one
/// snapshot: 1,300 nodes of 260 services written raw, each listed once,
/// with either detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_larger_than_a_page_lists_every_entry_once() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    let mut raw = raw_client(&etcd).await;
    let mut expected = std::collections::BTreeSet::new();
    for s in 0..260 {
        let name = format!("go.micro.srv.page{s:03}");
        for n in 0..5 {
            let node = Node::new(format!("{name}-{n}"), format!("127.0.0.1:{}", 1000 + n));
            let service = Service::new(&name, "latest").with_node(node.clone());
            raw.put(
                node_key(&name, &node.id),
                serde_json::to_vec(&service).expect("json"),
                None,
            )
            .await
            .expect("put");
            expected.insert((name.clone(), node.id));
        }
    }
    let registry = etcd.registry().await;
    for detail in [micro_registry::Detail::Full, micro_registry::Detail::Nodes] {
        let listed = registry.list_services_with(detail).await.expect("list");
        let mut seen = std::collections::BTreeSet::new();
        for service in &listed {
            for node in &service.nodes {
                assert!(
                    seen.insert((service.name.clone(), node.id.clone())),
                    "{detail:?}: {} listed twice",
                    node.id
                );
            }
        }
        assert!(
            seen == expected,
            "{detail:?}: {} of {} nodes listed, {} missing",
            seen.len(),
            expected.len(),
            expected.difference(&seen).count()
        );
        assert_eq!(listed.len(), 260, "{detail:?}: one service per name");
    }
}
