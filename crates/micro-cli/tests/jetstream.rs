//! At least once, proved with the binary: `micro subscribe --broker=jetstream
//! --queue q` killed with SIGKILL twice while messages stream in, and
//! started again each time. Every message whose publish returned `Ok` is
//! printed at least once; a message is printed again only if it was the
//! one in hand when its subscriber was killed (every earlier one was
//! acknowledged, and the acknowledgement confirmed, before the next was
//! taken).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro::broker::jetstream::{JetStreamBroker, JetStreamOptions};
use micro::broker::{Broker, Message};
use micro_testing::nats::JetStreamServer;
use micro_testing::process::{ChildGuard, OutputLines, Signal};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const TOPIC: &str = "go.micro.topic.orders";

/// `micro subscribe --queue q` on `server`, subscribed (its consumer made)
/// when this returns.
fn subscriber(server: &JetStreamServer) -> (ChildGuard, OutputLines) {
    let mut child = ChildGuard::spawn(
        Command::new(MICRO)
            .args(["--registry=memory", "--broker=jetstream"])
            .arg(format!("--broker_address={}", server.address))
            // A message taken by a killed subscriber comes back after this.
            .arg("--broker_ack_wait=2s")
            .args(["subscribe", "--queue", "q", TOPIC])
            .env_remove("RUST_LOG")
            .env_remove("MICRO_LOG_LEVEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("micro subscribe");
    let lines = OutputLines::read(child.stdout.take().expect("stdout"));
    let mut log = OutputLines::read(child.stderr.take().expect("stderr"));
    log.wait_for_line("Subscribed to", Instant::now() + Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    // Its log is read to the end by its own thread after this.
    drop(log);
    (child, lines)
}

fn id(line: &str) -> u64 {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    value["body"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {line}"))
}

/// Reads `lines` until `n` lines came (or 30 s passed).
fn read_lines(lines: &mut OutputLines, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ids = Vec::new();
    while ids.len() < n {
        let line = lines
            .next_line(deadline)
            .unwrap_or_else(|e| panic!("after {} lines: {e}", ids.len()));
        ids.push(id(&line));
    }
    ids
}

#[test]
fn a_subscriber_killed_twice_mid_stream_misses_nothing_and_repeats_only_what_it_held() {
    let server = JetStreamServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let options = JetStreamOptions::from_addresses(&server.url()).expect("options");
    let publisher = JetStreamBroker::new(options).expect("broker");
    let total = 600u64;

    // The first subscriber makes the durable consumer of q.
    let (mut child, mut lines) = subscriber(&server);
    let acknowledged: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let publishing = runtime.spawn({
        let (acknowledged, done) = (acknowledged.clone(), done.clone());
        async move {
            for id in 0..total {
                let message = Message::new(format!(r#"{{"id":{id}}}"#))
                    .with_header("Content-Type", "application/json");
                if publisher.publish(TOPIC, message).await.is_ok() {
                    acknowledged.lock().expect("lock").insert(id);
                }
                // A backlog first (the subscriber is busy when killed),
                // then a stream (the kills land while messages come).
                if id >= total / 2 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            done.store(true, Ordering::SeqCst);
        }
    });

    let mut printed: Vec<Vec<u64>> = Vec::new();
    for _kill in 0..2 {
        let mut phase = read_lines(&mut lines, 100);
        child.signal(Signal::SIGKILL).expect("kill -9");
        child
            .wait_until(Instant::now() + Duration::from_secs(10))
            .expect("wait")
            .expect("killed");
        // What it printed before dying.
        phase.extend(
            lines
                .wait_for_end(Instant::now() + Duration::from_secs(10))
                .expect("output closed")
                .iter()
                .map(|l| id(l)),
        );
        printed.push(phase);
        (child, lines) = subscriber(&server);
    }
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), publishing).await })
        .expect("published in time")
        .expect("publisher ran");
    assert!(done.load(Ordering::SeqCst));
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert_eq!(
        acknowledged.len() as u64,
        total,
        "one server, up: every publish is acknowledged"
    );

    // The last subscriber prints the rest, and what the killed ones held.
    let mut seen: BTreeSet<u64> = printed.iter().flatten().copied().collect();
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged.is_subset(&seen) {
        let line = lines.next_line(deadline).unwrap_or_else(|e| {
            panic!(
                "acknowledged, never printed: {:?} (after {} lines; output closed: {})",
                acknowledged.difference(&seen).take(20).collect::<Vec<_>>(),
                e.log.len(),
                e.closed
            )
        });
        let id = id(&line);
        seen.insert(id);
        last.push(id);
    }
    printed.push(last);

    // Printed more than once: only the message each killed subscriber had
    // printed last (its acknowledgement was not confirmed when it died).
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for id in printed.iter().flatten() {
        *times.entry(*id).or_default() += 1;
    }
    let repeated: BTreeSet<u64> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let held: BTreeSet<u64> = printed[..2]
        .iter()
        .filter_map(|phase| phase.last().copied())
        .collect();
    assert!(
        repeated.is_subset(&held),
        "printed again after its acknowledgement was confirmed: {:?} (held at the kills: {held:?})",
        repeated.difference(&held).collect::<Vec<_>>()
    );
    eprintln!(
        "printed {} lines for {} messages; again: {repeated:?}",
        printed.iter().map(Vec::len).sum::<usize>(),
        acknowledged.len()
    );
    drop(child);
}
