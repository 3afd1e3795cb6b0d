//! R14: the etcd registry's recovery times, the timing goals its tests leave
//! to the benchmark (`micro-registry-etcd/tests/recovery.rs` keeps only
//! bounds that tell "delivered" or "recovered" from "never").
//!
//! - Register → another client's watch delivers the node: one etcd, a writer
//!   and a reader client, trials one after another (each a new node).
//! - etcd restarted on an empty data dir (same ports: leases and keys gone)
//!   → the registration is back: the writer registers again at once after
//!   each failure, as a server's heartbeat would (a real server waits for
//!   its next `register_interval` first: add it).
//!
//! etcd runs from the registry's test harness (not pinned to a core).

use std::fmt::Write;
use std::time::{Duration, Instant};

use micro_registry::{Node, RegisterOptions, Registry, Service, WatchOptions};
use micro_registry_etcd::testing::EtcdCluster;

use crate::discovery::{percentile, sorted};
use crate::servers::Flavor;

const WATCH_TARGET_MS: f64 = 2000.0;
const RECOVERY_TARGET_MS: f64 = 2000.0;
/// Heartbeats after etcd is back before a trial counts as never recovered.
const MAX_HEARTBEATS: usize = 10;

/// How many trials of each kind, and the time they may take in all.
#[derive(Clone, Copy, Debug)]
struct Counts {
    watch: usize,
    watch_budget: Duration,
    restarts: usize,
    restart_budget: Duration,
}

impl Counts {
    fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                watch: 100,
                watch_budget: Duration::from_secs(10),
                restarts: 5,
                restart_budget: Duration::from_secs(60),
            }
        } else {
            Counts {
                watch: 300,
                watch_budget: Duration::from_secs(30),
                restarts: 20,
                restart_budget: Duration::from_secs(240),
            }
        }
    }
}

fn service(name: &str, id: &str, port: u16) -> Service {
    Service::new(name, "latest").with_node(Node::new(id, format!("127.0.0.1:{port}")))
}

/// Samples in milliseconds, and trials that never got there.
#[derive(Debug, Default)]
struct Samples {
    ms: Vec<f64>,
    missed: usize,
    /// Heartbeats it took, per recovered trial (restarts only).
    heartbeats: Vec<usize>,
}

async fn watch_trials(etcd: &EtcdCluster, counts: Counts) -> Samples {
    let writer = etcd.registry().await;
    let reader = etcd.registry().await;
    let mut watcher = reader
        .watch(WatchOptions::service("r14.watch"))
        .await
        .expect("watch");
    let ttl = RegisterOptions::with_ttl(Duration::from_secs(30));
    let mut samples = Samples::default();
    let started = Instant::now();
    for i in 0..counts.watch {
        if started.elapsed() > counts.watch_budget {
            break;
        }
        let id = format!("r14.watch-{i}");
        let svc = service("r14.watch", &id, 5000 + (i % 1000) as u16);
        let began = Instant::now();
        if let Err(e) = writer.register(&svc, ttl).await {
            eprintln!("  watch trial {i}: register failed: {e}");
            samples.missed += 1;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(5), watcher.next()).await {
            Ok(Some(Ok(event))) if event.service.nodes[0].id == id => {
                samples.ms.push(began.elapsed().as_secs_f64() * 1e3);
            }
            other => {
                eprintln!("  watch trial {i}: no event for {id}: {other:?}");
                samples.missed += 1;
            }
        }
    }
    samples
}

async fn restart_trials(etcd: &mut EtcdCluster, counts: Counts) -> Samples {
    let options = etcd.options().with_request_timeout(Duration::from_secs(2));
    let writer = micro_registry_etcd::EtcdRegistry::connect(options)
        .await
        .expect("connect");
    let svc = service("r14.restart", "r14.restart-1", 4242);
    let ttl = RegisterOptions::with_ttl(Duration::from_secs(30));
    let mut samples = Samples::default();
    let started = Instant::now();
    for i in 0..counts.restarts {
        if started.elapsed() > counts.restart_budget {
            break;
        }
        writer.register(&svc, ttl).await.expect("register");
        etcd.kill(0);
        // The heartbeat that fails while etcd is down (not timed).
        let _ = writer.register(&svc, ttl).await;
        etcd.restart(0, true).await.expect("restart on empty data");
        let answering = Instant::now();
        let mut heartbeats = 0;
        let recovered = loop {
            heartbeats += 1;
            match writer.register(&svc, ttl).await {
                Ok(()) => break true,
                Err(_) if heartbeats < MAX_HEARTBEATS => {}
                Err(e) => {
                    eprintln!("  restart trial {i}: not back after {heartbeats} heartbeats: {e}");
                    break false;
                }
            }
        };
        if recovered {
            let ms = answering.elapsed().as_secs_f64() * 1e3;
            eprintln!("  restart trial {i}: back in {ms:.1} ms ({heartbeats} heartbeat(s))");
            samples.ms.push(ms);
            samples.heartbeats.push(heartbeats);
        } else {
            samples.missed += 1;
        }
    }
    samples
}

fn row(out: &mut String, label: &str, samples: &Samples) -> f64 {
    let v = sorted(samples.ms.iter().copied());
    let p99 = percentile(&v, 0.99);
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        v.len(),
        samples.missed,
        percentile(&v, 0.50),
        percentile(&v, 0.90),
        p99,
        v.last().copied().unwrap_or(f64::NAN)
    );
    p99
}

fn verdict(samples: &Samples, p99: f64, target_ms: f64) -> &'static str {
    if samples.missed == 0 && !samples.ms.is_empty() && p99 < target_ms {
        "met"
    } else {
        "missed"
    }
}

/// R14: etcd on loopback, the registry's own clients in this process.
pub fn r14(plan: &crate::fixtures::Plan) -> String {
    eprintln!("R14");
    let counts = Counts::new(plan.quick);
    let runtime = Flavor::Multi.runtime();
    let (watch, restarts) = runtime.block_on(async {
        let mut etcd = EtcdCluster::single().await.expect("start etcd");
        let watch = watch_trials(&etcd, counts).await;
        let restarts = restart_trials(&mut etcd, counts).await;
        (watch, restarts)
    });
    drop(runtime);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### R14: etcd registry recovery ({} watch trials, {} restarts at most)\n",
        counts.watch, counts.restarts
    );
    let _ = writeln!(
        out,
        "One etcd on loopback (the registry's test harness), two registry clients. Percentiles by \
         nearest rank (with fewer than 100 trials, p99 is the maximum). A restart trial: kill etcd, \
         one failing register, start it again on an empty data dir (same ports), then register at \
         once after each failure (request timeout 2 s, at most {MAX_HEARTBEATS}); timed from etcd \
         healthy again.\n"
    );
    let _ = writeln!(
        out,
        "| interval | trials | missed | p50 ms | p90 ms | p99 ms | max ms |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    let watch_p99 = row(
        &mut out,
        "Register call began → another client's watch delivers the node",
        &watch,
    );
    let restart_p99 = row(
        &mut out,
        "etcd back on empty data → the registration is back (lease granted again)",
        &restarts,
    );
    let heartbeats = restarts.heartbeats.iter().max().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "\nTargets: register → watch p99 < {WATCH_TARGET_MS:.0} ms: **{}**; etcd back → registered \
         p99 < {RECOVERY_TARGET_MS:.0} ms: **{}** (at most {heartbeats} heartbeat(s) needed).\n",
        verdict(&watch, watch_p99, WATCH_TARGET_MS),
        verdict(&restarts, restart_p99, RECOVERY_TARGET_MS),
    );
    out
}
