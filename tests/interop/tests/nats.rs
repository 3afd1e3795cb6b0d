//! go-micro's NATS broker both ways on a real nats-server, with the Go peer
//! speaking it (`gonats/main.go`: go-micro v2.9.1's broker/nats on Debian's
//! nats.go): a Go publisher reaches `micro subscribe --broker=nats`, `micro
//! publish --broker=nats` reaches Go subscribers; broadcast and a queue group.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interop_tests::{binary, go_nats_peer};
use micro_testing::nats::NatsServer;
use micro_testing::process::{ChildGuard, OutputLines};

const TOPIC: &str = "go.micro.topic.greet";

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// `micro subscribe` on the nats broker; returns once it is subscribed.
fn micro_subscribe(broker: &str, extra: &[&str]) -> (ChildGuard, OutputLines) {
    interop_tests::micro_subscribe(
        &["--registry=memory", "--broker=nats", broker],
        extra,
        TOPIC,
    )
}

/// A Go subscriber, subscribed (on the server) when this returns.
fn go_subscribe(server: &str, extra: &[&str]) -> (ChildGuard, OutputLines) {
    let mut child = ChildGuard::spawn(
        Command::new(&go_nats_peer().binary)
            .args(["subscribe", "-server", server, "-topic", TOPIC])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("gonats subscribe");
    let mut lines = OutputLines::read(child.stdout.take().expect("stdout"));
    lines
        .wait_for_line("READY", deadline())
        .unwrap_or_else(|e| panic!("{e}"));
    (child, lines)
}

#[test]
fn go_micro_nats_broker_both_ways() {
    let peer = go_nats_peer();
    let server = NatsServer::start();
    let url = server.url();
    let broker = format!("--broker_address={}", server.address);

    // (a) go-micro → Rust.
    let (mut a, mut a_lines) = micro_subscribe(&broker, &["--count", "2"]);
    let (mut q1, mut q1_lines) = micro_subscribe(&broker, &["--queue", "workers"]);
    let (mut q2, mut q2_lines) = micro_subscribe(&broker, &["--queue", "workers"]);
    for name in ["John", "Jane"] {
        let output = Command::new(&peer.binary)
            .args(["publish", "-server", &url, "-topic", TOPIC, "-body"])
            .arg(format!(r#"{{"name":"{name}"}}"#))
            .output()
            .expect("gonats publish");
        assert!(output.status.success(), "{output:?}");
    }
    let printed = a_lines
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
    let status = a.wait_until(deadline()).expect("wait").expect("exited");
    assert!(status.success(), "{status:?}");
    // The group took each message once between them: wait for both, then stop.
    let mut group = Vec::new();
    let until = deadline();
    while group.len() < 2 && Instant::now() < until {
        for lines in [&mut q1_lines, &mut q2_lines] {
            if let Ok(line) = lines.next_line(Instant::now() + Duration::from_millis(200)) {
                group.push(line);
            }
        }
    }
    q1.terminate().expect("SIGTERM");
    q2.terminate().expect("SIGTERM");
    group.extend(q1_lines.wait_for_end(deadline()).expect("q1 ends"));
    group.extend(q2_lines.wait_for_end(deadline()).expect("q2 ends"));
    assert_eq!(group.len(), 2, "{group:?}");

    // (b) Rust → go-micro.
    let (mut g, mut g_lines) = go_subscribe(&url, &["-count", "2"]);
    let (mut gq1, mut gq1_lines) = go_subscribe(&url, &["-queue", "workers"]);
    let (mut gq2, mut gq2_lines) = go_subscribe(&url, &["-queue", "workers"]);
    for name in ["Rust", "Ferris"] {
        let output = Command::new(binary("micro"))
            .args(["--registry=memory", "--broker=nats", broker.as_str()])
            .args(["publish", "--metadata", "foo=bar", TOPIC])
            .arg(format!(r#"{{"name":"{name}"}}"#))
            .output()
            .expect("micro publish");
        assert!(output.status.success(), "{output:?}");
    }
    let printed = g_lines.wait_for_end(deadline()).expect("exit");
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
    let status = g.wait_until(deadline()).expect("wait").expect("exited");
    assert!(status.success(), "{status:?}");
    let mut group = Vec::new();
    let until = deadline();
    while group.len() < 2 && Instant::now() < until {
        for lines in [&mut gq1_lines, &mut gq2_lines] {
            if let Ok(line) = lines.next_line(Instant::now() + Duration::from_millis(200)) {
                group.push(line);
            }
        }
    }
    drop(gq1.stdin.take());
    drop(gq2.stdin.take());
    group.extend(gq1_lines.wait_for_end(deadline()).expect("ends"));
    group.extend(gq2_lines.wait_for_end(deadline()).expect("ends"));
    assert_eq!(group.len(), 2, "{group:?}");
    assert!(group.iter().all(|l| l.starts_with("MSG ")), "{group:?}");
}
