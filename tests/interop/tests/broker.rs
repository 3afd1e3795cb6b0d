//! go-micro's http broker both ways, on etcd and on mDNS (in a private
//! network namespace), with the Go peer speaking it
//! (`go/broker.go`: go-micro v2.9.1's broker/http.go, standard library
//! only): a Go publisher reaches `micro subscribe`, `micro publish` reaches
//! Go subscribers, broadcast (every subscriber) and a queue group (one of
//! its members).
//!
//! The Go subscribers' `micro.http.broker` nodes are registered by the test
//! as go-micro registers them (the golden entries, checked byte for byte in
//! crates/micro-broker/tests/envelope.rs), and the Go publisher is given
//! the nodes the registry lists: go-micro's etcd client is not packaged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interop_tests::{binary, eventually, go_peer};
use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_registry_etcd::testing::EtcdCluster;
use micro_registry_mdns::testing::enter_private_netns;
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
use micro_testing::process::{ChildGuard, OutputLines};

const TOPIC: &str = "go.micro.topic.greet";

/// The `micro.http.broker` nodes of `TOPIC` in `registry`: `id@address@version`.
fn nodes(runtime: &tokio::runtime::Runtime, registry: &dyn Registry) -> Vec<String> {
    runtime
        .block_on(registry.get_service("micro.http.broker"))
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| {
            let version = s.version.clone();
            s.nodes
                .into_iter()
                .filter(|n| n.metadata.get("topic").map(String::as_str) == Some(TOPIC))
                .map(move |n| format!("{}@{}@{version}", n.id, n.address))
        })
        .collect()
}

fn wait_for_nodes(
    runtime: &tokio::runtime::Runtime,
    registry: &dyn Registry,
    n: usize,
) -> Vec<String> {
    eventually(
        &format!("{n} broker nodes"),
        Duration::from_secs(30),
        || {
            let found = nodes(runtime, registry);
            (found.len() == n).then_some(found)
        },
    )
}

/// `micro subscribe` on etcd with the http broker on loopback.
fn micro_subscribe(flags: &[String], extra: &[&str]) -> (ChildGuard, OutputLines) {
    let mut child = ChildGuard::spawn(
        Command::new(binary("micro"))
            .args(flags)
            .args(["subscribe", "--broker_address=127.0.0.1:0"])
            .args(extra)
            .arg(TOPIC)
            .env_remove("MICRO_BROKER")
            .env_remove("MICRO_BROKER_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("micro subscribe");
    let lines = OutputLines::read(child.stdout.take().expect("stdout"));
    (child, lines)
}

/// A Go subscriber: its child (stdin closes it), its lines, and its node.
struct GoSubscriber {
    child: ChildGuard,
    lines: OutputLines,
    address: String,
    id: String,
}

fn go_subscribe(extra: &[&str]) -> GoSubscriber {
    let mut child = ChildGuard::spawn(
        Command::new(&go_peer().binary)
            .args(["broker-subscribe", "-topic", TOPIC])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("gopeer broker-subscribe");
    let mut lines = OutputLines::read(child.stdout.take().expect("stdout"));
    let ready = lines
        .wait_for_line("READY ", Instant::now() + Duration::from_secs(30))
        .expect("READY");
    let mut parts = ready.split_whitespace().skip(1);
    let address = parts.next().expect("address").to_string();
    let id = parts.next().expect("node id").to_string();
    GoSubscriber {
        child,
        lines,
        address,
        id,
    }
}

/// The registration go-micro's http broker writes for a subscriber.
fn go_registration(subscriber: &GoSubscriber, queue: Option<&str>) -> Service {
    Service::new("micro.http.broker", queue.unwrap_or("ff.http.broadcast")).with_node(
        Node::new(&subscriber.id, &subscriber.address)
            .with_metadata("broker", "http")
            .with_metadata("secure", "false")
            .with_metadata("topic", TOPIC),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn go_micro_http_broker_both_ways_on_etcd() {
    go_peer();
    let runtime = runtime();
    let cluster = runtime.block_on(EtcdCluster::single()).expect("etcd");
    let registry = runtime.block_on(cluster.registry());
    let flags = vec![
        "--registry=etcd".to_string(),
        format!("--registry_address={}", cluster.addresses()),
    ];
    scenario(&runtime, &registry, &flags);
}

#[test]
fn go_micro_http_broker_both_ways_on_mdns() {
    go_peer();
    // This thread, the runtime's worker and every process it starts live
    // in a namespace with only loopback.
    enter_private_netns().expect("a private network namespace (needs root or CAP_SYS_ADMIN)");
    let runtime = runtime();
    let registry = {
        let _guard = runtime.enter();
        MdnsRegistry::new(MdnsOptions::default()).expect("mDNS registry")
    };
    // mDNS is the default registry.
    scenario(&runtime, &registry, &[]);
}

/// Both directions, broadcast and a queue group, on `registry` (which the
/// `micro` processes reach with `flags`).
fn scenario(runtime: &tokio::runtime::Runtime, registry: &dyn Registry, flags: &[String]) {
    let peer = go_peer();
    let deadline = || Instant::now() + Duration::from_secs(30);

    // (a) go-micro → Rust: two broadcast subscribers, a queue group of two.
    let (mut a, mut a_lines) = micro_subscribe(flags, &["--count", "2"]);
    let (mut b, mut b_lines) = micro_subscribe(flags, &["--count", "2"]);
    let (mut q1, mut q1_lines) = micro_subscribe(flags, &["--queue", "workers"]);
    let (mut q2, mut q2_lines) = micro_subscribe(flags, &["--queue", "workers"]);
    let found = wait_for_nodes(runtime, registry, 4);
    for name in ["John", "Jane"] {
        let mut publish = Command::new(&peer.binary);
        publish.args(["broker-publish", "-topic", TOPIC]);
        publish.args(["-body", &format!(r#"{{"name":"{name}"}}"#)]);
        for node in &found {
            publish.args(["-node", node]);
        }
        let output = publish.output().expect("gopeer broker-publish");
        let sent = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        // Two broadcast nodes and one of the group; each answered 200.
        assert_eq!(sent.lines().count(), 3, "{sent}");
        assert!(sent.lines().all(|l| l.ends_with(" 200")), "{sent}");
    }
    for (child, lines) in [(&mut a, &mut a_lines), (&mut b, &mut b_lines)] {
        let printed = lines
            .wait_for_end(deadline())
            .expect("two lines, then exit");
        assert_eq!(printed.len(), 2, "{printed:?}");
        let first: serde_json::Value = serde_json::from_str(&printed[0]).expect("json");
        assert_eq!(
            first,
            serde_json::json!({
                "topic": TOPIC,
                "header": {
                    "Content-Type": "application/json",
                    "Micro-From-Service": "go.micro.srv.gopub",
                    "Micro-Topic": TOPIC,
                },
                "body": {"name": "John"},
            })
        );
        let status = child.wait_until(deadline()).expect("wait").expect("exited");
        assert!(status.success(), "{status:?}");
    }
    // The group took each message once between them.
    q1.terminate().expect("SIGTERM");
    q2.terminate().expect("SIGTERM");
    let mut group = q1_lines.wait_for_end(deadline()).expect("q1 ends");
    group.extend(q2_lines.wait_for_end(deadline()).expect("q2 ends"));
    assert_eq!(group.len(), 2, "{group:?}");
    // Every Rust subscriber deregistered on its way out.
    wait_for_nodes(runtime, registry, 0);

    // (b) Rust → go-micro: two broadcast Go subscribers, a group of two.
    let mut g1 = go_subscribe(&["-count", "2"]);
    let mut g2 = go_subscribe(&["-count", "2"]);
    let mut gq1 = go_subscribe(&[]);
    let mut gq2 = go_subscribe(&[]);
    for (subscriber, queue) in [
        (&g1, None),
        (&g2, None),
        (&gq1, Some("workers")),
        (&gq2, Some("workers")),
    ] {
        runtime
            .block_on(registry.register(
                &go_registration(subscriber, queue),
                RegisterOptions::with_ttl(Duration::from_secs(60)),
            ))
            .expect("register a Go subscriber");
    }
    for name in ["Rust", "Ferris"] {
        let output = Command::new(binary("micro"))
            .args(flags)
            .args(["publish", "--metadata", "foo=bar", TOPIC])
            .arg(format!(r#"{{"name":"{name}"}}"#))
            .env_remove("MICRO_BROKER")
            .output()
            .expect("micro publish");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
    }
    for subscriber in [&mut g1, &mut g2] {
        let printed = subscriber.lines.wait_for_end(deadline()).expect("exit");
        assert_eq!(
            printed,
            [
                format!(
                    r#"MSG topic={TOPIC} ct=application/json from= foo=bar body={{"name":"Rust"}}"#
                ),
                format!(
                    r#"MSG topic={TOPIC} ct=application/json from= foo=bar body={{"name":"Ferris"}}"#
                ),
            ]
        );
        let status = subscriber
            .child
            .wait_until(deadline())
            .expect("wait")
            .expect("exited");
        assert!(status.success(), "{status:?}");
    }
    let mut group = Vec::new();
    for subscriber in [&mut gq1, &mut gq2] {
        drop(subscriber.child.stdin.take());
        group.extend(subscriber.lines.wait_for_end(deadline()).expect("ends"));
    }
    assert_eq!(group.len(), 2, "{group:?}");
}
