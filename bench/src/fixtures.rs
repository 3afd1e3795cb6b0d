//! What the scenarios share: the plan, server children (a gRPC server of
//! ours, etcd), the interleaved comparison loops, `curl`, an RSS sampler.
//! Imports no scenario.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::load::{self, GrpcClient, Round, Timing};
use crate::proc::{Proc, free_port};
use crate::report::PeerRounds;
use crate::servers::Flavor;

/// What to run, and how long.
#[derive(Debug)]
pub struct Plan {
    pub quick: bool,
    pub exe: PathBuf,
    pub bin_dir: PathBuf,
    pub rounds: usize,
    pub timing: Timing,
    pub flavors: Vec<Flavor>,
    /// The soak's length (`--soak_minutes`), if given.
    pub soak_minutes: Option<f64>,
    only: Vec<String>,
}

impl Plan {
    pub fn new(quick: bool, exe: PathBuf, bin_dir: PathBuf, only: &[String]) -> Plan {
        let (rounds, timing, flavors) = if quick {
            (
                3,
                Timing {
                    warmup: Duration::from_millis(300),
                    measure: Duration::from_millis(1000),
                },
                vec![Flavor::Multi],
            )
        } else {
            (
                5,
                Timing {
                    warmup: Duration::from_millis(400),
                    measure: Duration::from_millis(2000),
                },
                vec![Flavor::Multi, Flavor::CurrentThread],
            )
        };
        Plan {
            quick,
            exe,
            bin_dir,
            rounds,
            timing,
            flavors,
            soak_minutes: None,
            only: only.iter().map(|s| s.to_lowercase()).collect(),
        }
    }

    /// Whether `scenario` runs: every scenario runs unless `--only` names
    /// others.
    pub(crate) fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    /// Whether `--only` names `scenario` (for those that run only by name).
    pub(crate) fn names(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }

    /// Whether `--only` is left out (every default scenario runs).
    pub(crate) fn runs_all(&self) -> bool {
        self.only.is_empty()
    }
}

/// A gRPC server child of ours; returns it with its address.
pub(crate) fn grpc_server(plan: &Plan, kind: &str, flavor: Flavor) -> (Proc, SocketAddr) {
    let args = vec![
        "serve".to_string(),
        "--kind".into(),
        kind.into(),
        "--flavor".into(),
        match flavor {
            Flavor::Multi => "multi".into(),
            Flavor::CurrentThread => "current-thread".into(),
        },
    ];
    let mut p = Proc::spawn(kind, &plan.exe, &args, &[]);
    let (addr, _) = p.wait_ready();
    (p, addr)
}

pub(crate) const GRPC_SHAPES: [(usize, usize); 3] = [(1, 1), (10, 10), (50, 1)];

/// `plan.rounds` interleaved rounds of each of `labels`: `round(i)` measures
/// one round of peer `i`; each is logged under `shape` and kept in that
/// peer's row.
pub(crate) fn interleaved(
    plan: &Plan,
    shape: &str,
    labels: &[&str],
    mut round: impl FnMut(usize) -> Round,
) -> Vec<PeerRounds> {
    let mut rows: Vec<PeerRounds> = labels
        .iter()
        .map(|label| PeerRounds {
            peer: label.to_string(),
            rounds: Vec::new(),
        })
        .collect();
    for n in 0..plan.rounds {
        for (i, label) in labels.iter().enumerate() {
            let r = round(i);
            eprintln!(
                "  {shape} round {} {label}: {:.0}/s p99 {:.3} ms errors {}",
                n + 1,
                r.rps(),
                r.ms(0.99),
                r.errors
            );
            rows[i].rounds.push(r);
        }
    }
    rows
}

/// One gRPC comparison: peers are (label, client, server address).
pub(crate) fn grpc_compare(
    plan: &Plan,
    flavor: Flavor,
    shapes: &[(usize, usize)],
    peers: &[(&str, GrpcClient, SocketAddr)],
) -> Vec<(String, Vec<PeerRounds>)> {
    let labels: Vec<&str> = peers.iter().map(|(label, _, _)| *label).collect();
    shapes
        .iter()
        .map(|&(conns, per_conn)| {
            let shape = format!("c{conns}×m{per_conn}");
            let rows = interleaved(plan, &shape, &labels, |i| {
                let (_, client, addr) = peers[i];
                let runtime = flavor.runtime();
                runtime.block_on(load::grpc_round(client, addr, conns, per_conn, plan.timing))
            });
            (shape, rows)
        })
        .collect()
}

/// etcd on loopback, on the server core, with a throw-away data dir.
pub(crate) struct Etcd {
    proc: Proc,
    pub(crate) address: String,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn start_etcd() -> Etcd {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "micro-bench-etcd-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let client = free_port();
    let peer = free_port();
    let args = vec![
        "--name".to_string(),
        "bench".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen-client-urls".into(),
        format!("http://127.0.0.1:{client}"),
        "--advertise-client-urls".into(),
        format!("http://127.0.0.1:{client}"),
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-cluster".into(),
        format!("bench=http://127.0.0.1:{peer}"),
    ];
    let mut proc = Proc::spawn("etcd", std::path::Path::new("etcd"), &args, &[]);
    proc.wait_line("ready to serve client requests", Duration::from_secs(30));
    Etcd {
        proc,
        address: format!("127.0.0.1:{client}"),
        dir,
    }
}

/// `curl` one request; returns the HTTP status (0 when no answer).
pub(crate) fn curl_status(method: &str, url: &str, body: Option<&str>) -> u16 {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "5",
        "-X",
        method,
    ]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    cmd.arg(url);
    cmd.output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Interleaved HTTP rounds of `peers` at c1 and c50. `during(i)` runs
/// around each round of peer `i` (what it returns is dropped after it).
pub(crate) fn http_compare<G>(
    plan: &Plan,
    name: &str,
    peers: &[(&str, SocketAddr)],
    path: &'static str,
    body: Option<&'static str>,
    mut during: impl FnMut(usize) -> Option<G>,
) -> Vec<(String, Vec<PeerRounds>)> {
    let labels: Vec<&str> = peers.iter().map(|(label, _)| *label).collect();
    [1usize, 50]
        .into_iter()
        .map(|conns| {
            let rows = interleaved(plan, &format!("{name} c{conns}"), &labels, |i| {
                let guard = during(i);
                let runtime = Flavor::Multi.runtime();
                let r: Round =
                    runtime.block_on(load::http_round(peers[i].1, path, body, conns, plan.timing));
                drop(runtime);
                drop(guard);
                r
            });
            (format!("c{conns}"), rows)
        })
        .collect()
}

/// Samples the RSS of some processes every 100 ms into `maxes` until dropped.
pub(crate) struct RssSampler {
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub(crate) fn start(pids: [u32; 3], maxes: Arc<[AtomicU64; 3]>) -> RssSampler {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let thread = std::thread::spawn(move || {
            while flag.load(Ordering::Relaxed) {
                for (k, pid) in pids.into_iter().enumerate() {
                    if let Some(kib) = crate::proc::rss_kib(pid) {
                        maxes[k].fetch_max(kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            running,
            thread: Some(thread),
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
