//! `micro publish` and `micro subscribe`: the binaries on a real etcd with
//! the http broker (lines, exit codes, queue groups), and the lines'
//! format in-process.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro::broker::{Event, Message};
use micro_registry::Registry;
use micro_registry_etcd::testing::EtcdCluster;
use micro_testing::nodes::wait_for_nodes;
use micro_testing::process::{ChildGuard, OutputLines};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const TOPIC: &str = "go.micro.topic.greet";

fn micro(etcd: &EtcdCluster, args: &[&str]) -> Command {
    let mut command = Command::new(MICRO);
    command
        .arg("--registry=etcd")
        .arg(format!("--registry_address={}", etcd.addresses()))
        .args(args)
        .env_remove("MICRO_BROKER")
        .env_remove("MICRO_BROKER_ADDRESS");
    command
}

/// Waits until `n` http broker nodes serve the topic.
async fn subscribers(registry: &dyn Registry, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    wait_for_nodes(
        &format!("{n} subscribers"),
        deadline,
        || async {
            registry
                .get_service("micro.http.broker")
                .await
                .unwrap_or_default()
                .into_iter()
                .flat_map(|s| s.nodes)
                .collect::<Vec<_>>()
        },
        |nodes| nodes.len() == n,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribe_through_etcd_and_the_http_broker() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let registry = etcd.registry().await;

    let mut subscriber = ChildGuard::spawn(
        micro(&etcd, &["subscribe", "--count", "2", TOPIC])
            .arg("--broker_address=127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("micro subscribe");
    let mut lines = OutputLines::read(subscriber.stdout.take().expect("stdout"));
    subscribers(&registry, 1).await;

    let published = micro(
        &etcd,
        &[
            "publish",
            "--metadata",
            "foo=bar",
            TOPIC,
            r#"{"name":"John"}"#,
        ],
    )
    .output()
    .expect("micro publish");
    assert!(published.status.success(), "{published:?}");
    assert_eq!(String::from_utf8_lossy(&published.stdout), "ok\n");
    let published = micro(
        &etcd,
        &[
            "publish",
            "--content_type=application/grpc+proto",
            TOPIC,
            "\n\u{4}John",
        ],
    )
    .output()
    .expect("micro publish");
    assert!(published.status.success(), "{published:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let printed = lines.wait_for_end(deadline).expect("two lines, then exit");
    assert_eq!(printed.len(), 2, "{printed:?}");
    let first: serde_json::Value = serde_json::from_str(&printed[0]).expect("json");
    assert_eq!(
        first,
        serde_json::json!({
            "topic": TOPIC,
            "header": {"Content-Type": "application/json", "Foo": "bar", "Micro-Topic": TOPIC},
            "body": {"name": "John"},
        })
    );
    let second: serde_json::Value = serde_json::from_str(&printed[1]).expect("json");
    assert_eq!(second["body"], "CgRKb2hu", "base64 of a protobuf body");
    let status = subscriber
        .wait_until(std::time::Instant::now() + Duration::from_secs(10))
        .expect("wait")
        .expect("exited after --count");
    assert!(status.success(), "{status:?}");
    // It deregistered on its way out.
    subscribers(&registry, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_clearly() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let bad_json = micro(&etcd, &["publish", TOPIC, "{not json"])
        .output()
        .expect("micro publish");
    assert_eq!(bad_json.status.code(), Some(2), "{bad_json:?}");
    assert!(String::from_utf8_lossy(&bad_json.stderr).contains("not JSON"));

    // A subscriber registered at a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let registry = etcd.registry().await;
    let dead = micro_registry::Service::new("micro.http.broker", "ff.http.broadcast").with_node(
        micro_registry::Node::new(format!("{TOPIC}-dead"), port.to_string())
            .with_metadata("broker", "http")
            .with_metadata("secure", "false")
            .with_metadata("topic", TOPIC),
    );
    registry
        .register(&dead, micro_registry::RegisterOptions::default())
        .await
        .expect("register");
    let unreachable = micro(&etcd, &["publish", TOPIC, "{}"])
        .output()
        .expect("micro publish");
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(err.contains(&format!("{TOPIC}-dead")), "{err}");
}

#[test]
fn lines_show_json_bodies_as_json_and_others_as_base64() {
    let line = |message: Message| -> serde_json::Value {
        serde_json::from_str(&micro_cli::subscribe::line(&Event::new(TOPIC, message)))
            .expect("json line")
    };
    let json = line(Message::new(r#"{"a":1}"#).with_header("Content-Type", "application/json"));
    assert_eq!(
        json,
        serde_json::json!({"topic": TOPIC, "header": {"Content-Type": "application/json"}, "body": {"a": 1}})
    );
    let broken = line(Message::new("{broken").with_header("Content-Type", "application/json"));
    assert_eq!(broken["body"], "e2Jyb2tlbg==", "not JSON after all: base64");
    assert_eq!(line(Message::new(&b"\x00\x01"[..]))["body"], "AAE=");
}

#[test]
fn publish_reaches_subscribe_through_nats_with_the_flags_either_side() {
    let server = micro_testing::nats::NatsServer::start();
    let address = format!("--broker_address={}", server.address);
    let mut subscriber = ChildGuard::spawn(
        Command::new(MICRO)
            .args(["--broker=nats", address.as_str(), "--registry=memory"])
            .args(["subscribe", "--count", "1", "--queue", "q", TOPIC])
            .env_remove("RUST_LOG")
            .env_remove("MICRO_LOG_LEVEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("micro subscribe");
    let mut lines = OutputLines::read(subscriber.stdout.take().expect("stdout"));
    let mut log = OutputLines::read(subscriber.stderr.take().expect("stderr"));
    // Subscribed (on the server) before it says so.
    log.wait_for_line("Subscribed to", Instant::now() + Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let published = Command::new(MICRO)
        .args([
            "--registry=memory",
            "publish",
            "--broker=nats",
            address.as_str(),
        ])
        .args([TOPIC, r#"{"name":"nats"}"#])
        .output()
        .expect("micro publish");
    assert!(published.status.success(), "{published:?}");
    assert_eq!(String::from_utf8_lossy(&published.stdout), "ok\n");
    let printed = lines
        .wait_for_end(Instant::now() + Duration::from_secs(20))
        .expect("one line, then exit");
    assert_eq!(printed.len(), 1, "{printed:?}");
    let line: serde_json::Value = serde_json::from_str(&printed[0]).expect("json");
    assert_eq!(line["body"], serde_json::json!({"name": "nats"}));
    let status = subscriber
        .wait_until(Instant::now() + Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    assert!(status.success(), "{status:?}");

    // No server there: exit 1, saying why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let failed = Command::new(MICRO)
        .args(["--registry=memory", "--broker=nats"])
        .arg(format!("--broker_address={closed}"))
        .args(["publish", TOPIC, "{}"])
        .output()
        .expect("micro publish");
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("cannot connect"),
        "{failed:?}"
    );
}
