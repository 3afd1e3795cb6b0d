//! R13: cost at scale. Many synthetic services in a real registry, churn on
//! top, and what a fresh `micro api` gateway and a fresh toolkit client pay
//! for it.
//!
//! Per registry (etcd on loopback; mDNS in a private network namespace), at
//! growing sizes (services × nodes, registered cumulatively through the
//! [`Registry`] API with endpoints and metadata shaped like the user
//! service's):
//!
//! - a fresh gateway (`micro api --handler=rpc`, the real binary): spawn →
//!   its `/health/ready` answers 200 (after the catalog's first listing), and
//!   its RSS (VmRSS, VmHWM) once ready;
//! - a fresh client (this binary, `micro-bench scale-client`): spawn → its
//!   first call to a real greeter answered, and its RSS;
//! - churn (registrations and deregistrations of synthetic nodes at a fixed
//!   rate): the CPU the gateway and the client spend (the scheduler's
//!   nanosecond count, /proc/PID/task/*/schedstat) over the window, per
//!   registry event;
//! - under the same churn, a new greeter node registers → the first call the
//!   gateway (an HTTP closed loop through it) routes to it, and the first call
//!   a running in-process client makes to it (R6/R7's trial).
//!
//! Nothing of the synthetic services is called: their nodes listen nowhere.
//! mDNS runs only in a namespace of our own: this binary again
//! (`micro-bench scale-mdns`) under `unshare --net`, printing its rows.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use micro_client::{Client, ClientOptions};
use micro_registry::{Endpoint, Node, RegisterOptions, Service, SharedRegistry, Value};
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;
use tokio::sync::{Semaphore, oneshot};

use crate::discovery::{self, Backend, NodeServer, Probe, Trials, ms_between, percentile, sorted};
use crate::fixtures::{Plan, start_etcd};
use crate::load::GREETER;
use crate::proc::{self, Proc, free_port};
use crate::servers::Flavor;

/// Prefix of the lines the mDNS child and the client child print.
const CHILD_PREFIX: &str = "R13-CHILD ";
const CLIENT_PREFIX: &str = "R13-CLIENT ";
const FLOOR_PREFIX: &str = "R13-FLOOR ";
/// Environment variable: `tiny` runs a few services for a few seconds (the
/// test of the scenario).
pub const SIZE_ENV: &str = "MICRO_BENCH_R13";

/// Sizes and durations of one registry's run.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Services at each step (cumulative).
    scales: Vec<usize>,
    nodes_per_service: usize,
    /// Registrations per second, and as many deregistrations.
    churn_rate: u32,
    /// The CPU window (churn, no calls).
    churn: Duration,
    /// Routing trials under churn, per client kind.
    trials: Trials,
    /// Registrations in flight at once while populating and churning.
    in_flight: usize,
    /// Nodes of the burst (registered as fast as `in_flight` allows, then
    /// deregistered: a fleet restarting together).
    burst: usize,
}

impl Config {
    fn etcd(quick: bool, tiny: bool) -> Config {
        if tiny {
            return Config::tiny();
        }
        if quick {
            Config {
                scales: vec![30, 100],
                nodes_per_service: 5,
                churn_rate: 100,
                churn: Duration::from_secs(3),
                trials: Trials {
                    count: 20,
                    budget: Duration::from_secs(4),
                },
                in_flight: 64,
                burst: 1000,
            }
        } else {
            Config {
                scales: vec![100, 300, 1000, 2000],
                nodes_per_service: 5,
                churn_rate: 100,
                churn: Duration::from_secs(8),
                trials: Trials {
                    count: 100,
                    budget: Duration::from_secs(10),
                },
                in_flight: 64,
                burst: 1000,
            }
        }
    }

    fn mdns(quick: bool, tiny: bool) -> Config {
        if tiny {
            return Config::tiny();
        }
        // Each registration probes for 750 ms: many in flight.
        if quick {
            Config {
                scales: vec![30, 100],
                nodes_per_service: 3,
                churn_rate: 20,
                churn: Duration::from_secs(3),
                trials: Trials {
                    count: 3,
                    budget: Duration::from_secs(6),
                },
                in_flight: 256,
                // A registration returns before its probes end: when the
                // gateway has heard them all is not observable from here.
                burst: 0,
            }
        } else {
            Config {
                scales: vec![30, 100],
                nodes_per_service: 3,
                churn_rate: 20,
                churn: Duration::from_secs(6),
                trials: Trials {
                    count: 8,
                    budget: Duration::from_secs(12),
                },
                in_flight: 256,
                // A registration returns before its probes end: when the
                // gateway has heard them all is not observable from here.
                burst: 0,
            }
        }
    }

    fn tiny() -> Config {
        Config {
            scales: vec![5],
            nodes_per_service: 2,
            churn_rate: 10,
            churn: Duration::from_secs(1),
            trials: Trials {
                count: 2,
                budget: Duration::from_secs(4),
            },
            in_flight: 16,
            burst: 10,
        }
    }
}

fn tiny() -> bool {
    std::env::var(SIZE_ENV).is_ok_and(|v| v == "tiny")
}

/// What one size produced.
#[derive(Clone, Debug, Default)]
struct Row {
    services: f64,
    nodes: f64,
    populate_s: f64,
    gw_ready_ms: f64,
    gw_rss_kib: f64,
    gw_hwm_kib: f64,
    cl_ready_ms: f64,
    cl_rss_kib: f64,
    churn_events: f64,
    churn_s: f64,
    churn_skipped: f64,
    gw_cpu_ms: f64,
    cl_cpu_ms: f64,
    gw_rss_after_kib: f64,
    gw_route_p50: f64,
    gw_route_p99: f64,
    gw_route_trials: f64,
    gw_route_missed: f64,
    rr_route_p50: f64,
    rr_route_p99: f64,
    rr_route_trials: f64,
    cl_watch_p99: f64,
    cl_route_p50: f64,
    cl_route_p99: f64,
    cl_route_trials: f64,
    cl_route_missed: f64,
    burst_events: f64,
    burst_s: f64,
    gw_burst_cpu_ms: f64,
    floor_cpu_ms: f64,
    floor_burst_cpu_ms: f64,
}

impl Row {
    fn fields(&self) -> [f64; 31] {
        [
            self.services,
            self.nodes,
            self.populate_s,
            self.gw_ready_ms,
            self.gw_rss_kib,
            self.gw_hwm_kib,
            self.cl_ready_ms,
            self.cl_rss_kib,
            self.churn_events,
            self.churn_s,
            self.churn_skipped,
            self.gw_cpu_ms,
            self.cl_cpu_ms,
            self.gw_rss_after_kib,
            self.gw_route_p50,
            self.gw_route_p99,
            self.gw_route_trials,
            self.gw_route_missed,
            self.rr_route_p50,
            self.rr_route_p99,
            self.rr_route_trials,
            self.cl_watch_p99,
            self.cl_route_p50,
            self.cl_route_p99,
            self.cl_route_trials,
            self.cl_route_missed,
            self.burst_events,
            self.burst_s,
            self.gw_burst_cpu_ms,
            self.floor_cpu_ms,
            self.floor_burst_cpu_ms,
        ]
    }

    fn line(&self) -> String {
        let fields: Vec<String> = self.fields().iter().map(|f| format!("{f}")).collect();
        format!("ROW {}", fields.join(" "))
    }

    fn parse(line: &str) -> Option<Row> {
        let v: Vec<f64> = line
            .strip_prefix("ROW ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [
            services,
            nodes,
            populate_s,
            gw_ready_ms,
            gw_rss_kib,
            gw_hwm_kib,
            cl_ready_ms,
            cl_rss_kib,
            churn_events,
            churn_s,
            churn_skipped,
            gw_cpu_ms,
            cl_cpu_ms,
            gw_rss_after_kib,
            gw_route_p50,
            gw_route_p99,
            gw_route_trials,
            gw_route_missed,
            rr_route_p50,
            rr_route_p99,
            rr_route_trials,
            cl_watch_p99,
            cl_route_p50,
            cl_route_p99,
            cl_route_trials,
            cl_route_missed,
            burst_events,
            burst_s,
            gw_burst_cpu_ms,
            floor_cpu_ms,
            floor_burst_cpu_ms,
        ] = v.try_into().ok()?;
        Some(Row {
            services,
            nodes,
            populate_s,
            gw_ready_ms,
            gw_rss_kib,
            gw_hwm_kib,
            cl_ready_ms,
            cl_rss_kib,
            churn_events,
            churn_s,
            churn_skipped,
            gw_cpu_ms,
            cl_cpu_ms,
            gw_rss_after_kib,
            gw_route_p50,
            gw_route_p99,
            gw_route_trials,
            gw_route_missed,
            rr_route_p50,
            rr_route_p99,
            rr_route_trials,
            cl_watch_p99,
            cl_route_p50,
            cl_route_p99,
            cl_route_trials,
            cl_route_missed,
            burst_events,
            burst_s,
            gw_burst_cpu_ms,
            floor_cpu_ms,
            floor_burst_cpu_ms,
        })
    }

    /// Gateway CPU per registry event, µs.
    fn gw_cpu_per_event_us(&self) -> f64 {
        self.gw_cpu_ms * 1000.0 / self.churn_events
    }

    fn cl_cpu_per_event_us(&self) -> f64 {
        self.cl_cpu_ms * 1000.0 / self.churn_events
    }

    /// Gateway CPU per registry event of the burst, µs.
    fn gw_burst_cpu_per_event_us(&self) -> f64 {
        self.gw_burst_cpu_ms * 1000.0 / self.burst_events
    }

    /// A bare etcd watch's CPU per event of the churn, µs (etcd only).
    fn floor_cpu_per_event_us(&self) -> f64 {
        self.floor_cpu_ms * 1000.0 / self.churn_events
    }

    fn floor_burst_cpu_per_event_us(&self) -> f64 {
        self.floor_burst_cpu_ms * 1000.0 / self.burst_events
    }
}

/// A synthetic service shaped like the user service's registration: four
/// endpoints with request/response descriptions, service and node metadata.
pub(crate) fn synthetic_service(index: usize) -> Service {
    let message = |name: &str, fields: &[(&str, &str)]| {
        Value::new(name, name).with_values(
            fields
                .iter()
                .map(|(n, t)| Value::new(*n, *t))
                .collect::<Vec<_>>(),
        )
    };
    let endpoint = |name: &str, request: Value, response: Value| {
        let mut e = Endpoint::new(name);
        e.request = Some(request);
        e.response = Some(response);
        e
    };
    let user = message(
        "User",
        &[
            ("id", "string"),
            ("username", "string"),
            ("email", "string"),
            ("created", "int64"),
        ],
    );
    Service::new(format!("go.micro.srv.scale{index:05}"), "latest")
        .with_metadata("team", "scale")
        .with_endpoint(endpoint(
            "User.Register",
            message(
                "RegisterRequest",
                &[("username", "string"), ("password", "string")],
            ),
            message("RegisterResponse", &[("id", "string")]),
        ))
        .with_endpoint(endpoint(
            "User.Login",
            message(
                "LoginRequest",
                &[("username", "string"), ("password", "string")],
            ),
            message(
                "LoginResponse",
                &[("token", "string"), ("expires", "int64")],
            ),
        ))
        .with_endpoint(endpoint(
            "User.QueryUserByName",
            message("Request", &[("userName", "string")]),
            message("Response", &[("user", "User")]).with_values(vec![user.clone()]),
        ))
        .with_endpoint(endpoint(
            "User.Update",
            user,
            message("UpdateResponse", &[("ok", "bool")]),
        ))
}

/// Node `n` of synthetic service `index` (its port listens nowhere).
pub(crate) fn synthetic_node(service: &Service, index: usize, n: usize) -> Node {
    Node::new(
        format!("{}-{n:08x}-0000-4000-8000-{index:012}", service.name),
        format!("127.0.0.1:{}", 20_000 + (index * 7 + n) % 40_000),
    )
    .with_metadata("broker", "http")
    .with_metadata("protocol", "grpc")
    .with_metadata("registry", "etcd")
    .with_metadata("server", "grpc")
    .with_metadata("transport", "grpc")
}

/// Registers nodes `n` of services `[from, to)`, `in_flight` at once.
async fn populate(
    registry: &SharedRegistry,
    from: usize,
    to: usize,
    nodes: usize,
    in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for index in from..to {
        let service = synthetic_service(index);
        for n in 0..nodes {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let registry = registry.clone();
            let one = service
                .clone()
                .with_node(synthetic_node(&service, index, n));
            tasks.spawn(async move {
                let result = registry.register(&one, RegisterOptions::default()).await;
                drop(permit);
                result
            });
        }
        while let Some(done) = tasks.try_join_next() {
            done.expect("register task")
                .expect("synthetic registration");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("register task")
            .expect("synthetic registration");
    }
}

/// Registers `count` synthetic nodes (spread over the first `services`
/// services) with `in_flight` registrations at once, then deregisters them
/// the same way; the registry events this made (completed operations).
async fn burst(registry: &SharedRegistry, services: usize, count: usize, in_flight: usize) -> u64 {
    use futures::StreamExt;
    let services = services.max(1);
    let nodes: Vec<Service> = (0..count)
        .map(|j| {
            let service = synthetic_service(j % services);
            let node = Node::new(
                format!("{}-burst-{j:010}", service.name),
                format!("127.0.0.1:{}", 55_000 + j % 5000),
            )
            .with_metadata("protocol", "grpc");
            service.with_node(node)
        })
        .collect();
    let registering = futures::stream::iter(nodes.iter())
        .map(|one| async move { registry.register(one, RegisterOptions::default()).await })
        .buffer_unordered(in_flight.max(1))
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let deregistering = futures::stream::iter(nodes.iter())
        .map(|one| async move { registry.deregister(one).await })
        .buffer_unordered(in_flight.max(1))
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    (registering + deregistering) as u64
}

/// The CPU of `pid` once it stops rising (the events in its queue taken
/// in): read every 50 ms until two reads agree, for at most 10 s.
async fn settled_cpu_ms(pid: u32) -> Option<f64> {
    let mut last = cpu_ms(pid)?;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = cpu_ms(pid)?;
        if now == last {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// Registrations and deregistrations of synthetic nodes at `rate` per second
/// each, until stopped; counts completed operations (= registry events).
struct Churn {
    running: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Churn {
    /// Prefills `rate` churn nodes (so each tick both registers one and
    /// deregisters one), then churns.
    async fn start(
        registry: SharedRegistry,
        services: usize,
        rate: u32,
        in_flight: usize,
    ) -> Churn {
        let running = Arc::new(AtomicBool::new(true));
        let events = Arc::new(AtomicU64::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let services = services.max(1);
        let node = move |j: usize| {
            let index = j % services;
            let service = synthetic_service(index);
            let node = Node::new(
                format!("{}-churn-{j:010}", service.name),
                format!("127.0.0.1:{}", 60_000 + j % 5000),
            )
            .with_metadata("protocol", "grpc");
            service.with_node(node)
        };
        let mut queue: std::collections::VecDeque<Service> = std::collections::VecDeque::new();
        let mut next = 0usize;
        for _ in 0..rate {
            let one = node(next);
            next += 1;
            registry
                .register(&one, RegisterOptions::default())
                .await
                .expect("churn prefill");
            queue.push_back(one);
        }
        let task = {
            let (running, events, skipped) = (running.clone(), events.clone(), skipped.clone());
            tokio::spawn(async move {
                let permits = Arc::new(Semaphore::new(in_flight));
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while running.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let add = node(next);
                    next += 1;
                    let Some(remove) = queue.pop_front() else {
                        break;
                    };
                    queue.push_back(add.clone());
                    let (registry, events) = (registry.clone(), events.clone());
                    tokio::spawn(async move {
                        if registry
                            .register(&add, RegisterOptions::default())
                            .await
                            .is_ok()
                        {
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                        if registry.deregister(&remove).await.is_ok() {
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(permit);
                    });
                }
                // Wait (bounded) for the operations in flight, then take the
                // churn nodes out.
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    permits.acquire_many(in_flight as u32),
                )
                .await;
                for service in queue {
                    let _ = registry.deregister(&service).await;
                }
            })
        };
        Churn {
            running,
            events,
            skipped,
            task,
        }
    }

    fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.running.store(false, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// CPU time `pid` has run, in milliseconds: the scheduler's own count
/// (nanoseconds, `/proc/PID/task/*/schedstat`) summed over its threads, so
/// a window of a few milliseconds of CPU is measured, not rounded to the
/// 10 ms ticks of `/proc/PID/stat` (which read 0 or 10 ms for the same 2 ms
/// of work). Threads that ended are not in the sum (the gateway and the
/// client keep theirs); without schedstat, utime + stime in ticks.
fn cpu_ms(pid: u32) -> Option<f64> {
    schedstat_ms(pid).or_else(|| {
        crate::r2::cpu_time(&pid.to_string(), crate::r2::clock_tick()).map(|s| s * 1000.0)
    })
}

fn schedstat_ms(pid: u32) -> Option<f64> {
    let mut ns: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing is not counted.
        let Ok(line) = std::fs::read_to_string(path) else {
            continue;
        };
        ns += line.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e6)
}

/// VmRSS and VmHWM of `pid`, KiB.
fn memory_kib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The whole answer to `GET path` on `addr` (HTTP/1.0), if it answers.
fn http_body(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write as _};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The HTTP status of `GET path` on `addr` (HTTP/1.0), if it answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write as _};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Where the registry is, as `micro` and `scale-client` flags.
fn registry_flags(backend: &Backend) -> Vec<String> {
    match backend {
        Backend::Etcd { address } => vec![
            "--registry=etcd".to_string(),
            format!("--registry_address={address}"),
        ],
        Backend::Mdns => vec!["--registry=mdns".to_string()],
    }
}

/// A fresh `micro api --handler=rpc`: spawned, polled until ready.
struct Gateway {
    proc: Proc,
    address: String,
    ready_ms: f64,
}

fn start_gateway(bin_dir: &Path, backend: &Backend, extra: &[&str]) -> Gateway {
    let admin = format!("127.0.0.1:{}", free_port());
    let address = format!("127.0.0.1:{}", free_port());
    let mut args = registry_flags(backend);
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend([
        format!("--admin_address={admin}"),
        "api".to_string(),
        "--handler=rpc".into(),
        "--namespace=go.micro.srv".into(),
        format!("--address={address}"),
    ]);
    let mut proc = Proc::spawn(
        "micro api",
        &bin_dir.join("micro"),
        &args,
        &[("RUST_LOG", "warn".to_string())],
    );
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if http_status(&admin, "/health/ready") == Some(200) {
            break;
        }
        if Instant::now() >= until {
            // What it said and what its readiness says, for the report.
            let said = proc.recent_lines(20).join("\n  ");
            let ready = http_body(&admin, "/health/ready").unwrap_or_default();
            panic!(
                "micro api not ready within 120 s; /health/ready: {ready}\n  its last lines:\n  {said}"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_ms = proc.started.elapsed().as_secs_f64() * 1000.0;
    Gateway {
        proc,
        address,
        ready_ms,
    }
}

/// A fresh client child: spawned, until its first call is answered.
fn start_client(exe: &Path, backend: &Backend) -> (Proc, f64) {
    let mut args = vec!["scale-client".to_string()];
    args.extend(registry_flags(backend));
    let mut proc = Proc::spawn("scale client", exe, &args, &[]);
    let (line, at) = proc.wait_line(CLIENT_PREFIX, Duration::from_secs(60));
    assert!(line.contains("READY"), "the scale client failed: {line}");
    let ready_ms = (at - proc.started).as_secs_f64() * 1000.0;
    (proc, ready_ms)
}

/// A floor child: spawned, until its watch is set up.
fn start_floor(exe: &Path, address: &str) -> Proc {
    let args = vec![
        "scale-floor".to_string(),
        format!("--registry_address={address}"),
    ];
    let mut proc = Proc::spawn("scale floor", exe, &args, &[]);
    let (line, _) = proc.wait_line(FLOOR_PREFIX, Duration::from_secs(60));
    assert!(line.contains("READY"), "the floor watch failed: {line}");
    proc
}

/// `micro-bench scale-floor`: a bare etcd-client watch of the registry's
/// prefix (with previous values, as the registry watches), on a
/// current-thread runtime like the gateway's; counts events and nothing
/// else, until stopped. What any process following the registry pays.
pub fn floor_child(registry_address: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let endpoint = format!("http://{}", registry_address.trim_start_matches("http://"));
        let mut client = match etcd_client::Client::connect([endpoint], None).await {
            Ok(client) => client,
            Err(e) => {
                println!("{FLOOR_PREFIX}ERROR cannot reach etcd: {e}");
                std::process::exit(1);
            }
        };
        let options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_prev_key();
        let mut stream = match client.watch("/micro/registry/", Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                println!("{FLOOR_PREFIX}ERROR cannot watch: {e}");
                std::process::exit(1);
            }
        };
        // Set up once etcd says so, as the registry's watch waits for.
        match stream.message().await {
            Ok(Some(response)) if response.created() => {}
            other => {
                println!("{FLOOR_PREFIX}ERROR etcd did not set the watch up: {other:?}");
                std::process::exit(1);
            }
        }
        println!("{FLOOR_PREFIX}READY");
        let mut events = 0usize;
        while let Ok(Some(response)) = stream.message().await {
            events += response.events().len();
        }
        std::hint::black_box(events);
    });
}

/// `micro-bench scale-client`: resolves the greeter, calls it once, says so,
/// then idles (following the registry) until stopped.
pub fn client_child(registry: &str, registry_address: Option<&str>) {
    let backend = match registry {
        "etcd" => Backend::Etcd {
            address: registry_address.unwrap_or("127.0.0.1:2379").to_string(),
        },
        "mdns" => Backend::Mdns,
        other => {
            println!("{CLIENT_PREFIX}ERROR unknown registry {other:?} (etcd or mdns)");
            std::process::exit(2);
        }
    };
    let runtime = Flavor::Multi.runtime();
    runtime.block_on(async move {
        let registry = backend.registry().await;
        let client = Client::new(registry, ClientOptions::default());
        let mut greeter = GreeterClient::new(client.service(GREETER));
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = greeter
                .hello(Request {
                    name: "scale".into(),
                    ..Default::default()
                })
                .await;
            if answer.is_ok() {
                break;
            }
            if Instant::now() >= until {
                println!("{CLIENT_PREFIX}ERROR no answer within 30 s: {answer:?}");
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!("{CLIENT_PREFIX}READY");
        // Follow the registry until the parent stops us (or goes away).
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
        drop(greeter);
        drop(client);
    });
}

/// Under churn: a new greeter node registers → the first call the gateway
/// routes to it (an HTTP closed loop through the gateway, one call in
/// flight). Returns the (Register returned → first call) intervals, ms, and
/// how many trials missed.
async fn gateway_trials(backend: &Backend, gateway: &str, trials: Trials) -> (Vec<f64>, usize) {
    let bound = backend.step_bound();
    let registry = backend.registry().await;
    let mut probe = Probe::start(&registry).await;
    let running = Arc::new(AtomicBool::new(true));
    let looper = {
        let running = running.clone();
        let stream = tokio::net::TcpStream::connect(gateway)
            .await
            .expect("connect to micro api");
        stream.set_nodelay(true).expect("nodelay");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        tokio::spawn(conn);
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let request = http::Request::post("/greeter/greeter/hello")
                    .header(http::header::HOST, "127.0.0.1")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from_static(br#"{"name":"gw"}"#)))
                    .expect("request");
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status() == http::StatusCode::OK;
                        response.into_body().collect().await.is_ok() && ok
                    }
                    Err(_) => return,
                };
                if !ok {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut intervals = Vec::new();
    let mut missed = 0;
    let started = Instant::now();
    for _ in 0..trials.count {
        if started.elapsed() >= trials.budget {
            break;
        }
        let (first_tx, first_rx) = oneshot::channel();
        let (server, marks_rx) = NodeServer::start(backend, Some(first_tx)).await;
        let node_id = server.node_id.clone();
        let (first, marks) = tokio::join!(
            tokio::time::timeout(bound, first_rx),
            tokio::time::timeout(bound, marks_rx),
        );
        match (first, marks) {
            (Ok(Ok(t1)), Ok(Ok(marks))) => intervals.push(ms_between(marks.returned, t1)),
            _ => missed += 1,
        }
        server.stop().await;
        let _ = probe.wait(&node_id, false, bound).await;
    }
    running.store(false, Ordering::Relaxed);
    let _ = tokio::time::timeout(bound, looper).await;
    drop(probe);
    registry.close().await;
    (intervals, missed)
}

/// Runs every size on `backend`; `tell` hears of each row as it is done.
async fn measure(
    backend: Backend,
    config: Config,
    exe: PathBuf,
    bin_dir: PathBuf,
    tell: impl Fn(&Row),
) {
    let registry = backend.registry().await;
    // The greeter every client and gateway calls (routing trials add more).
    let (base, _) = NodeServer::start(&backend, None).await;
    let mut registered = 0;
    for &services in &config.scales {
        let mut row = Row {
            services: services as f64,
            nodes: (services * config.nodes_per_service) as f64,
            ..Row::default()
        };
        eprintln!(
            "  {services} services × {} nodes: registering",
            config.nodes_per_service
        );
        let began = Instant::now();
        populate(
            &registry,
            registered,
            services,
            config.nodes_per_service,
            config.in_flight,
        )
        .await;
        registered = services;
        row.populate_s = began.elapsed().as_secs_f64();
        if matches!(backend, Backend::Mdns) {
            // Let the announcements settle (two more follow the probes).
            tokio::time::sleep(Duration::from_secs(3)).await;
        }

        let (gateway_proc, gateway_address, ready_ms) = {
            let (bin_dir, backend) = (bin_dir.clone(), backend.clone());
            let g = tokio::task::spawn_blocking(move || start_gateway(&bin_dir, &backend, &[]))
                .await
                .expect("gateway start");
            (g.proc, g.address, g.ready_ms)
        };
        row.gw_ready_ms = ready_ms;
        tokio::time::sleep(Duration::from_millis(500)).await;
        (row.gw_rss_kib, row.gw_hwm_kib) = memory_kib(gateway_proc.pid());
        let (client_proc, client_ready) = {
            let (exe, backend) = (exe.clone(), backend.clone());
            tokio::task::spawn_blocking(move || start_client(&exe, &backend))
                .await
                .expect("client start")
        };
        row.cl_ready_ms = client_ready;
        // The floor: what any process following the registry's etcd prefix
        // pays per event (etcd only).
        let floor_proc = match &backend {
            Backend::Etcd { address } => {
                let (exe, address) = (exe.clone(), address.clone());
                Some(
                    tokio::task::spawn_blocking(move || start_floor(&exe, &address))
                        .await
                        .expect("floor start"),
                )
            }
            Backend::Mdns => None,
        };
        let floor_cpu = || floor_proc.as_ref().and_then(|p| cpu_ms(p.pid()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        row.cl_rss_kib = memory_kib(client_proc.pid()).0;
        eprintln!(
            "    gateway ready {:.0} ms, RSS {:.1} MiB; client ready {:.0} ms, RSS {:.1} MiB",
            row.gw_ready_ms,
            row.gw_rss_kib / 1024.0,
            row.cl_ready_ms,
            row.cl_rss_kib / 1024.0
        );

        // A burst (the fleet restarting together): the gateway's CPU per
        // event when events come faster than one at a time.
        if config.burst > 0 {
            let (gw0, fl0) = (cpu_ms(gateway_proc.pid()), floor_cpu());
            let t0 = Instant::now();
            row.burst_events =
                burst(&registry, services, config.burst, config.in_flight).await as f64;
            row.burst_s = t0.elapsed().as_secs_f64();
            let gw1 = settled_cpu_ms(gateway_proc.pid()).await;
            let fl1 = match &floor_proc {
                Some(p) => settled_cpu_ms(p.pid()).await,
                None => None,
            };
            row.gw_burst_cpu_ms = gw1.zip(gw0).map_or(f64::NAN, |(b, a)| b - a);
            row.floor_burst_cpu_ms = fl1.zip(fl0).map_or(f64::NAN, |(b, a)| b - a);
            eprintln!(
                "    burst: {} events in {:.1} s; gateway {:.1} µs CPU per event (a bare etcd watch {:.1})",
                row.burst_events,
                row.burst_s,
                row.gw_burst_cpu_per_event_us(),
                row.floor_burst_cpu_per_event_us()
            );
        }

        // Churn: CPU window (no calls), then routing trials under churn.
        let churn = Churn::start(
            backend.registry().await,
            services,
            config.churn_rate,
            config.in_flight,
        )
        .await;
        let (gw0, cl0, fl0, e0, t0) = (
            cpu_ms(gateway_proc.pid()),
            cpu_ms(client_proc.pid()),
            floor_cpu(),
            churn.events(),
            Instant::now(),
        );
        tokio::time::sleep(config.churn).await;
        let (gw1, cl1, fl1, e1) = (
            cpu_ms(gateway_proc.pid()),
            cpu_ms(client_proc.pid()),
            floor_cpu(),
            churn.events(),
        );
        row.floor_cpu_ms = fl1.zip(fl0).map_or(f64::NAN, |(b, a)| b - a);
        drop(floor_proc);
        row.churn_s = t0.elapsed().as_secs_f64();
        row.churn_events = (e1 - e0) as f64;
        row.gw_cpu_ms = gw1.zip(gw0).map_or(f64::NAN, |(b, a)| b - a);
        row.cl_cpu_ms = cl1.zip(cl0).map_or(f64::NAN, |(b, a)| b - a);
        row.gw_rss_after_kib = memory_kib(gateway_proc.pid()).0;
        eprintln!(
            "    churn: {} events in {:.1} s; gateway {:.1} µs CPU per event (a bare etcd watch {:.1}), client {:.1} µs",
            row.churn_events,
            row.churn_s,
            row.gw_cpu_per_event_us(),
            row.floor_cpu_per_event_us(),
            row.cl_cpu_per_event_us()
        );
        let (gw, gw_missed) = gateway_trials(&backend, &gateway_address, config.trials).await;
        let gw = sorted(gw.into_iter());
        row.gw_route_p50 = percentile(&gw, 0.5);
        row.gw_route_p99 = percentile(&gw, 0.99);
        row.gw_route_trials = gw.len() as f64;
        row.gw_route_missed = gw_missed as f64;
        // The same through a gateway that picks round robin: the registry's
        // and the gateway's share without p2c's caution about a new node.
        let round_robin = {
            let (bin_dir, backend) = (bin_dir.clone(), backend.clone());
            tokio::task::spawn_blocking(move || {
                start_gateway(&bin_dir, &backend, &["--selector=roundrobin"])
            })
            .await
            .expect("gateway start")
        };
        let (rr, _) = gateway_trials(&backend, &round_robin.address, config.trials).await;
        tokio::task::spawn_blocking(move || drop(round_robin))
            .await
            .expect("stop gateway");
        let rr = sorted(rr.into_iter());
        row.rr_route_p50 = percentile(&rr, 0.5);
        row.rr_route_p99 = percentile(&rr, 0.99);
        row.rr_route_trials = rr.len() as f64;
        let samples = discovery::run_trials(backend.clone(), config.trials, |_, _| {}).await;
        let watch = sorted(samples.trials.iter().map(|t| t.register_to_watch));
        row.cl_watch_p99 = percentile(&watch, 0.99);
        let cl = sorted(samples.trials.iter().map(|t| t.register_to_call));
        row.cl_route_p50 = percentile(&cl, 0.5);
        row.cl_route_p99 = percentile(&cl, 0.99);
        row.cl_route_trials = cl.len() as f64;
        row.cl_route_missed = samples.missed as f64;
        row.churn_skipped = churn.skipped.load(Ordering::Relaxed) as f64;
        churn.stop().await;
        eprintln!(
            "    new node → first call: gateway p99 {:.2} ms ({} trials), client p99 {:.2} ms ({} trials)",
            row.gw_route_p99, row.gw_route_trials, row.cl_route_p99, row.cl_route_trials
        );
        tokio::task::spawn_blocking(move || {
            drop(gateway_proc);
            drop(client_proc);
        })
        .await
        .expect("stop children");
        tell(&row);
    }
    base.stop().await;
    registry.close().await;
}

/// A figure with one decimal, or a dash where there is none.
fn or_dash(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        "—".to_string()
    }
}

/// Marginal cost per 1,000 nodes between consecutive rows, as text.
fn growth(rows: &[Row], pick: fn(&Row) -> f64, unit: &str) -> String {
    let steps: Vec<String> = rows
        .windows(2)
        .map(|w| {
            let per = (pick(&w[1]) - pick(&w[0])) / ((w[1].nodes - w[0].nodes) / 1000.0);
            format!(
                "{:.0}→{:.0} nodes: {per:+.1} {unit}",
                w[0].nodes, w[1].nodes
            )
        })
        .collect();
    if steps.is_empty() {
        "one size only".into()
    } else {
        format!("per 1,000 more nodes, {}", steps.join("; "))
    }
}

fn table(title: &str, chart: &str, config: &Config, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "Synthetic services registered through \
         the `Registry` API ({} nodes each, four endpoints with request/response descriptions and \
         metadata like the user service's; their nodes listen nowhere), cumulatively. Churn: {} \
         registrations and {} deregistrations per second of synthetic nodes, {:?} for the CPU \
         window (no calls), then on during the routing trials.{} CPU is the scheduler's count \
         (/proc/PID/task/*/schedstat); \"a bare etcd watch\" is an etcd-client watch of the \
         registry's prefix that only counts events, measured beside the gateway: what any process \
         following the registry pays.\n",
        config.nodes_per_service,
        config.churn_rate,
        config.churn_rate,
        config.churn,
        if config.burst > 0 {
            format!(
                " Before it, a burst: {} synthetic nodes registered with {} registrations in \
                 flight, then deregistered the same way (a fleet restarting together); the \
                 gateway's CPU from its start until the gateway is idle again.",
                config.burst, config.in_flight
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "| services × nodes | gateway spawn → ready (ms) | gateway RSS ready / peak (MiB) | gateway RSS after churn (MiB) | client spawn → first answer (ms) | client RSS (MiB) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let _ = writeln!(
            out,
            "| {:.0} × {} ({:.0}) | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} | {:.1} |",
            r.services,
            config.nodes_per_service,
            r.nodes,
            r.gw_ready_ms,
            r.gw_rss_kib / 1024.0,
            r.gw_hwm_kib / 1024.0,
            r.gw_rss_after_kib / 1024.0,
            r.cl_ready_ms,
            r.cl_rss_kib / 1024.0,
        );
    }
    let _ = writeln!(
        out,
        "\nUnder churn (a new greeter node registers → the first call it gets; one call in flight; \
         nearest-rank percentiles, p99 = max under 100 trials):\n"
    );
    let _ = writeln!(
        out,
        "| services × nodes | churn events (s) | gateway CPU per event (µs) | a bare etcd watch (µs) | client CPU per event (µs) | burst events (s) | gateway CPU per burst event (µs) | a bare etcd watch (µs) | via the gateway, p2c (default) p50 / p99 (ms) | via the gateway, round robin p50 / p99 (ms) | registry watch delivers the node p99 (ms) | running client (p2c) p50 / p99 (ms) |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {:.0} × {} ({:.0}) | {:.0} ({:.1}){} | {:.1} | {} | {:.1} | {} | {} | {} | {:.2} / {:.2} ({:.0} trials{}) | {:.2} / {:.2} ({:.0} trials) | {:.2} | {:.2} / {:.2} ({:.0} trials{}) |",
            r.services,
            config.nodes_per_service,
            r.nodes,
            r.churn_events,
            r.churn_s,
            if r.churn_skipped > 0.0 {
                format!(", {:.0} ticks skipped", r.churn_skipped)
            } else {
                String::new()
            },
            r.gw_cpu_per_event_us(),
            or_dash(r.floor_cpu_per_event_us()),
            r.cl_cpu_per_event_us(),
            if r.burst_events > 0.0 {
                format!("{:.0} ({:.2})", r.burst_events, r.burst_s)
            } else {
                "—".to_string()
            },
            or_dash(r.gw_burst_cpu_per_event_us()),
            or_dash(r.floor_burst_cpu_per_event_us()),
            r.gw_route_p50,
            r.gw_route_p99,
            r.gw_route_trials,
            missed_text(r.gw_route_missed),
            r.rr_route_p50,
            r.rr_route_p99,
            r.rr_route_trials,
            r.cl_watch_p99,
            r.cl_route_p50,
            r.cl_route_p99,
            r.cl_route_trials,
            missed_text(r.cl_route_missed),
        );
    }
    out.push('\n');
    let points = |pick: fn(&Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.nodes, pick(r))).collect()
    };
    out.push_str(&crate::charts::add_growth(
        &format!("{chart}-growth"),
        &crate::charts::Growth {
            title: format!("{title}: growth with the number of nodes"),
            x_desc: "nodes registered".into(),
            panels: vec![
                crate::charts::GrowthPanel {
                    y_desc: "RSS (MiB)".into(),
                    series: vec![
                        ("gateway".into(), points(|r| r.gw_rss_kib / 1024.0)),
                        ("client".into(), points(|r| r.cl_rss_kib / 1024.0)),
                    ],
                },
                crate::charts::GrowthPanel {
                    y_desc: "spawn → ready (ms)".into(),
                    series: vec![
                        ("gateway".into(), points(|r| r.gw_ready_ms)),
                        ("client".into(), points(|r| r.cl_ready_ms)),
                    ],
                },
                crate::charts::GrowthPanel {
                    y_desc: "CPU per registry event (µs)".into(),
                    series: vec![
                        ("gateway".into(), points(Row::gw_cpu_per_event_us)),
                        (
                            "gateway, burst".into(),
                            points(Row::gw_burst_cpu_per_event_us)
                                .into_iter()
                                .filter(|(_, y)| y.is_finite())
                                .collect(),
                        ),
                        ("client".into(), points(Row::cl_cpu_per_event_us)),
                    ],
                },
            ],
        },
    ));
    let _ = writeln!(
        out,
        "- Gateway time to ready: {}.",
        growth(rows, |r| r.gw_ready_ms, "ms")
    );
    let _ = writeln!(
        out,
        "- Gateway RSS (ready): {}.",
        growth(rows, |r| r.gw_rss_kib / 1024.0, "MiB")
    );
    let _ = writeln!(
        out,
        "- Gateway CPU per event: {}.",
        growth(rows, Row::gw_cpu_per_event_us, "µs")
    );
    if rows.iter().all(|r| r.burst_events > 0.0) {
        let _ = writeln!(
            out,
            "- Gateway CPU per event of a burst: {}.",
            growth(rows, Row::gw_burst_cpu_per_event_us, "µs")
        );
    }
    let _ = writeln!(
        out,
        "- Client time to first answer: {}.",
        growth(rows, |r| r.cl_ready_ms, "ms")
    );
    let _ = writeln!(
        out,
        "- Client RSS: {}.\n",
        growth(rows, |r| r.cl_rss_kib / 1024.0, "MiB")
    );
    out
}

fn missed_text(missed: f64) -> String {
    if missed > 0.0 {
        format!(", {missed:.0} missed")
    } else {
        String::new()
    }
}

/// R13 on etcd (in this process) and on mDNS (in a namespace of its own).
pub fn r13(plan: &Plan) -> String {
    eprintln!("R13");
    let tiny = tiny();
    let mut out = String::new();
    let config = Config::etcd(plan.quick, tiny);
    let etcd = start_etcd();
    let backend = Backend::Etcd {
        address: etcd.address.clone(),
    };
    let rows = std::sync::Mutex::new(Vec::new());
    let runtime = Flavor::Multi.runtime();
    runtime.block_on(measure(
        backend,
        config.clone(),
        plan.exe.clone(),
        plan.bin_dir.clone(),
        |row| rows.lock().expect("rows").push(row.clone()),
    ));
    drop(runtime);
    drop(etcd);
    let rows = rows.into_inner().expect("rows");
    out.push_str(&table(
        "R13: cost at scale, etcd on loopback",
        "r13-etcd",
        &config,
        &rows,
    ));
    out.push_str(&r13_mdns(plan, tiny));
    out
}

fn r13_mdns(plan: &Plan, tiny: bool) -> String {
    let config = Config::mdns(plan.quick, tiny);
    let title = "R13: cost at scale, mDNS in a private network namespace";
    if !discovery::netns_available() {
        return format!(
            "### {title}\n\nSkipped: no private network namespace (`unshare --net` needs root or \
             CAP_SYS_ADMIN); mDNS is never run outside one.\n\n"
        );
    }
    let mut command = micro_registry_mdns::testing::netns_command(&plan.exe);
    if plan.quick {
        command.arg("--quick");
    }
    command.arg("scale-mdns");
    command.arg(format!("--bin-dir={}", plan.bin_dir.display()));
    let program = PathBuf::from(command.get_program());
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env = if tiny {
        vec![(SIZE_ENV, "tiny".to_string())]
    } else {
        Vec::new()
    };
    let mut child = Proc::spawn("R13 mDNS (netns)", &program, &args, &env);
    let mut rows = Vec::new();
    loop {
        let (line, _) = child.wait_line(CHILD_PREFIX, Duration::from_secs(300));
        let line = line
            .split_once(CHILD_PREFIX)
            .map_or("", |(_, rest)| rest.trim());
        if let Some(row) = Row::parse(line) {
            rows.push(row);
        } else if line == "DONE" {
            break;
        } else if let Some(why) = line.strip_prefix("ERROR ") {
            return format!("### {title}\n\nSkipped: {why}\n\n");
        } else if let Some(what) = line.strip_prefix("PANIC ") {
            panic!("R13 failed in its namespace: {what}");
        }
    }
    drop(child);
    table(title, "r13-mdns", &config, &rows)
}

/// `micro-bench scale-mdns`, started by [`r13`] in a fresh network
/// namespace: refuses to run unless it sees only loopback, then prints
/// `R13-CHILD ROW ...` lines.
pub fn mdns_child(quick: bool, bin_dir: &Path) {
    if let Err(e) = micro_registry_mdns::testing::ensure_only_loopback() {
        println!("{CHILD_PREFIX}ERROR {e}");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        println!(
            "{CHILD_PREFIX}PANIC {}",
            info.to_string().replace('\n', " ")
        );
    }));
    let _ = core_affinity::set_for_current(core_affinity::CoreId {
        id: proc::LOAD_CORE,
    });
    let exe = std::env::current_exe().expect("path of this binary");
    let runtime = Flavor::Multi.runtime();
    runtime.block_on(measure(
        Backend::Mdns,
        Config::mdns(quick, tiny()),
        exe,
        bin_dir.to_path_buf(),
        |row| println!("{CHILD_PREFIX}{}", row.line()),
    ));
    drop(runtime);
    println!("{CHILD_PREFIX}DONE");
}

#[cfg(test)]
mod tests {
    use super::Row;

    #[test]
    fn row_line_round_trip() {
        let row = Row {
            services: 100.0,
            nodes: 500.0,
            gw_route_p99: 1.25,
            cl_route_missed: 2.0,
            ..Row::default()
        };
        let back = Row::parse(&row.line()).expect("parses");
        assert_eq!(back.fields(), row.fields());
        assert!(Row::parse("ROW 1 2").is_none());
    }
}
