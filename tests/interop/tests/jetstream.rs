//! The jetstream broker with go-micro's NATS broker (the Go peer
//! `gonats/main.go`: go-micro v2.9.1's broker/nats on Debian's nats.go) on
//! a real `nats-server -js`: a Go publisher (core NATS) reaches `micro
//! subscribe --broker=jetstream --queue q`, also while that subscriber is
//! down (the stream keeps it); `micro publish --broker=jetstream` (stored,
//! acknowledged) reaches a Go subscriber.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interop_tests::{binary, go_nats_peer};
use micro_testing::nats::JetStreamServer;
use micro_testing::process::{ChildGuard, OutputLines};

const TOPIC: &str = "go.micro.topic.greet";

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// `micro subscribe` on the jetstream broker; returns once it is subscribed.
fn micro_subscribe(broker: &str, extra: &[&str]) -> (ChildGuard, OutputLines) {
    interop_tests::micro_subscribe(
        &["--registry=memory", "--broker=jetstream", broker],
        extra,
        TOPIC,
    )
}

fn go_publish(url: &str, name: &str) {
    let output = Command::new(&go_nats_peer().binary)
        .args(["publish", "-server", url, "-topic", TOPIC, "-body"])
        .arg(format!(r#"{{"name":"{name}"}}"#))
        .output()
        .expect("gonats publish");
    assert!(output.status.success(), "{output:?}");
}

fn name_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(value["topic"], TOPIC, "{line}");
    assert_eq!(
        value["header"]["Micro-From-Service"], "go.micro.srv.gopub",
        "{line}"
    );
    value["body"]["name"].as_str().expect("name").to_string()
}

#[test]
fn go_micro_nats_peers_and_the_jetstream_broker_both_ways() {
    let peer = go_nats_peer();
    let server = JetStreamServer::start();
    let url = server.url();
    let broker = format!("--broker_address={}", server.address);

    // (a) go-micro → Rust, through the stream.
    let (mut q, mut q_lines) = micro_subscribe(&broker, &["--queue", "workers", "--count", "1"]);
    go_publish(&url, "John");
    let printed = q_lines.wait_for_end(deadline()).expect("a line, then exit");
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(name_of(&printed[0]), "John");
    let status = q.wait_until(deadline()).expect("wait").expect("exited");
    assert!(status.success(), "{status:?}");
    // Published while no member of the queue runs: kept for it.
    go_publish(&url, "Jane");
    let (mut q, mut q_lines) = micro_subscribe(&broker, &["--queue", "workers", "--count", "1"]);
    let printed = q_lines.wait_for_end(deadline()).expect("a line, then exit");
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(name_of(&printed[0]), "Jane", "John was acknowledged");
    let status = q.wait_until(deadline()).expect("wait").expect("exited");
    assert!(status.success(), "{status:?}");

    // (b) Rust → go-micro: a core NATS subscriber gets what the stream
    // acknowledged.
    let mut g = ChildGuard::spawn(
        Command::new(&peer.binary)
            .args(["subscribe", "-server", &url, "-topic", TOPIC, "-count", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("gonats subscribe");
    let mut g_lines = OutputLines::read(g.stdout.take().expect("stdout"));
    g_lines
        .wait_for_line("READY", deadline())
        .unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(binary("micro"))
        .args(["--registry=memory", "--broker=jetstream", broker.as_str()])
        .args([
            "publish",
            "--metadata",
            "foo=bar",
            TOPIC,
            r#"{"name":"Rust"}"#,
        ])
        .output()
        .expect("micro publish");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
    let printed = g_lines.wait_for_end(deadline()).expect("exit");
    assert_eq!(
        printed,
        [format!(
            r#"MSG topic={TOPIC} ct=application/json from= foo=bar body={{"name":"Rust"}}"#
        )]
    );
    let status = g.wait_until(deadline()).expect("wait").expect("exited");
    assert!(status.success(), "{status:?}");
}
