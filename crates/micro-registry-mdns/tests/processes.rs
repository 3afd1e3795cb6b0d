//! Two processes in one private network namespace: each finds the other's
//! service; a graceful stop (shutdown or drop) says goodbye, so the other's
//! cache drops it at once instead of after the record's 120 s TTL. Prints the
//! measured times (R7 in `micro-bench` measures discovery times).
//!
//! The peer is this test binary again, running the ignored `peer_process`
//! with `MDNS_PEER` set; it talks over stdin/stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micro_registry::{Action, Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry, testing};
use micro_testing::process::ChildGuard;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const PEER_ENV: &str = "MDNS_PEER";
const LIMIT: Duration = Duration::from_secs(15);
/// A goodbye takes milliseconds to drop the peer; without one the record
/// lives out its 120 s TTL. 10 s tells the two apart on a loaded machine.
const GOODBYE_BOUND: Duration = Duration::from_secs(10);

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
        / 1000
}

fn service(name: &str, port: u16) -> Service {
    Service::new(name, "latest").with_node(Node::new(
        format!("{name}-{}", uuid::Uuid::new_v4()),
        format!("127.0.0.1:{port}"),
    ))
}

/// The peer's side: `MDNS_PEER=<own service> <service to find> <stop mode>`.
/// Not a test of its own: `two_processes_find_each_other_and_stop_gracefully`
/// runs it (`--ignored --exact peer_process`) in a child process.
#[test]
#[ignore = "the peer half of two_processes_find_each_other_and_stop_gracefully, run by it"]
fn peer_process() {
    let spec = std::env::var(PEER_ENV).unwrap_or_else(|_| {
        panic!(
            "{PEER_ENV} is not set: peer_process is the peer that \
             two_processes_find_each_other_and_stop_gracefully starts, not a test of its own"
        )
    });
    testing::ensure_only_loopback().expect("peer runs in the test's namespace");
    let parts: Vec<String> = spec.split(' ').map(str::to_string).collect();
    let [own, wanted, mode] = parts.as_slice() else {
        panic!("bad {PEER_ENV}: {spec}");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = MdnsRegistry::new(MdnsOptions::default()).expect("peer registry");
        let svc = service(own, 4600);
        let started = now_ms();
        registry
            .register(&svc, RegisterOptions::default())
            .await
            .expect("peer register");
        println!("PEER READY {started}");
        let deadline = Instant::now() + LIMIT;
        loop {
            if registry.get_service(wanted).await.is_ok() {
                println!("PEER FOUND {}", now_ms());
                break;
            }
            assert!(Instant::now() < deadline, "peer never found {wanted}");
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).expect("stdin");
        println!("PEER STOPPING {}", now_ms());
        if mode == "drop" {
            drop(registry);
        } else {
            registry.shutdown().await;
        }
        println!("PEER STOPPED {}", now_ms());
    });
}

/// The peer; stopped by PID if the test fails half way.
struct Peer {
    child: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Peer {
    /// Starts the peer from the calling thread, so in its namespace.
    fn start(own: &str, wanted: &str, mode: &str) -> Peer {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = ChildGuard::spawn(
            Command::new(exe)
                .args([
                    "peer_process",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(PEER_ENV, format!("{own} {wanted} {mode}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
        .expect("spawn peer");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            stdin,
            lines,
        }
    }

    /// The timestamp of the next `PEER <word> <ms>` line.
    async fn expect(&mut self, word: &str) -> u128 {
        let prefix = format!("PEER {word} ");
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => {
                    // libtest may have printed "test peer_process ... " first.
                    if let Some(at) = line.find(&prefix) {
                        return line[at + prefix.len()..].trim().parse().expect("timestamp");
                    }
                }
                Ok(None) => panic!("peer exited before {word}"),
                Err(_) => panic!("peer said no {word} within {LIMIT:?}"),
            }
        }
    }

    fn stop(&mut self) {
        let mut stdin = self.stdin.take().expect("stdin");
        stdin.write_all(b"STOP\n").expect("write");
    }

    fn wait(mut self) {
        let deadline = std::time::Instant::now() + LIMIT;
        let status = self
            .child
            .wait_until(deadline)
            .expect("wait")
            .expect("peer did not exit");
        assert!(status.success(), "peer failed: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_find_each_other_and_stop_gracefully() {
    testing::enter_private_netns().expect("private network namespace");
    let registry = MdnsRegistry::new(MdnsOptions::default()).expect("registry");
    let mine = service(&format!("main.{}", uuid::Uuid::new_v4().simple()), 4500);
    registry
        .register(&mine, RegisterOptions::default())
        .await
        .expect("register");

    let mut visible = Vec::new();
    let mut found = Vec::new();
    let mut gone = Vec::new();
    for (trial, mode) in ["shutdown", "drop", "shutdown", "drop", "shutdown"]
        .into_iter()
        .enumerate()
    {
        let peer_name = format!("peer{trial}.{}", uuid::Uuid::new_v4().simple());
        let mut watcher = registry
            .watch(WatchOptions::service(&peer_name))
            .await
            .expect("watch");
        let mut peer = Peer::start(&peer_name, &mine.name, mode);
        let started = peer.expect("READY").await;

        // Passive: the peer's announcement reaches our watch/cache.
        let created = timeout(LIMIT, watcher.next())
            .await
            .expect("peer visible in time")
            .expect("watcher open")
            .expect("event");
        assert_eq!(created.action, Action::Create);
        let seen_at = now_ms();
        visible.push(seen_at.saturating_sub(started));
        let got = registry.get_service(&peer_name).await.expect("peer found");
        assert_eq!(got[0].nodes[0].address, "127.0.0.1:4600");

        // Active: the peer's cold lookup of our service.
        let peer_found = peer.expect("FOUND").await;
        found.push(peer_found.saturating_sub(started));

        // Graceful stop: gone from our cache.
        peer.stop();
        let stopping = peer.expect("STOPPING").await;
        let deleted = timeout(GOODBYE_BOUND, watcher.next())
            .await
            .unwrap_or_else(|_| panic!("peer not gone within {GOODBYE_BOUND:?}: no goodbye"))
            .expect("watcher open")
            .expect("event");
        let gone_at = now_ms();
        assert_eq!(deleted.action, Action::Delete, "{deleted:?}");
        gone.push(gone_at.saturating_sub(stopping));
        assert!(
            registry.get_service(&peer_name).await.is_err(),
            "peer still listed"
        );
        peer.wait();
        println!(
            "trial {trial} ({mode}): start → visible to the other process {} ms (watch), \
             cold lookup by the peer {} ms; graceful stop → gone {} ms",
            visible[trial], found[trial], gone[trial]
        );
    }
    let max_gone = gone.iter().copied().max().unwrap_or(0);
    println!("start → visible (watch) ms: {visible:?}");
    println!("start → found by cold lookup ms: {found:?}");
    println!("graceful stop → gone ms: {gone:?}");
    assert!(
        max_gone < GOODBYE_BOUND.as_millis(),
        "graceful stop took {max_gone} ms to propagate: no goodbye?"
    );
    assert!(
        visible.iter().all(|ms| *ms < 5000),
        "start → visible: {visible:?}"
    );
    registry.shutdown().await;
}
