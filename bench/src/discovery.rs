//! R6 and R7: a new instance registers → the first call a running client
//! routes to it, on etcd (R6) and on mDNS (R7, in a private network namespace).
//!
//! Each trial, in one process:
//!
//! - A toolkit [`Client`] already follows the service in the registry (its own
//!   registry connection or mDNS responder, as a separate process would have)
//!   and calls it in a closed loop, one call in flight, over one running node.
//! - A new [`Server`] starts on its own thread and runtime (pinned to the
//!   server core; the client is on the load core) with its own registry
//!   connection or responder, and registers.
//! - t0 = its Register call returned (the server's `registered()` signal turns
//!   true right after); t1 = the new node's handler starts its first call.
//!   Also timed: when the client's registry watch delivered the new node (the
//!   registry's own share, a floor for t1), when the Register call began, and
//!   when the server started (before its registry client and listener).
//! - The new server stops gracefully (deregisters first); the trial waits,
//!   bounded, until the client has dropped the node before the next one.
//!
//! mDNS multicast only ever runs in a network namespace of our own: R7 runs
//! this binary again (`micro-bench discovery-mdns`) under `unshare --net`;
//! the child checks that it sees nothing but loopback before it opens a
//! socket, and prints its samples on stdout.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use micro_client::{Client, ClientOptions, NodeSet};
use micro_registry::{
    Action, Detail, Error, Event, RegisterOptions, Registry, Service, SharedRegistry, WatchOptions,
    Watcher,
};
use micro_registry_etcd::{EtcdOptions, EtcdRegistry};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
use micro_server::{Server, ServerOptions};
use micro_testing::AbortOnDrop;
use micro_testing::greeter::greeter_client::GreeterClient;
use micro_testing::greeter::greeter_server::{Greeter, GreeterServer};
use micro_testing::greeter::{Request, Response as HelloResponse};
use tokio::sync::{mpsc, oneshot};

use crate::fixtures::{Plan, start_etcd};
use crate::load::GREETER;
use crate::proc::{self, Proc};
use crate::servers::Flavor;

/// Prefix of the lines the R7 child prints for its parent.
const CHILD_PREFIX: &str = "R7-CHILD ";
const R6_TARGET_MS: f64 = 5.0;
const R7_TARGET_MS: f64 = 1500.0;

/// Where servers and the client register and look up.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Etcd { address: String },
    Mdns,
}

impl Backend {
    /// A fresh registry client (etcd) or responder (mDNS). Needs a runtime.
    pub(crate) async fn registry(&self) -> SharedRegistry {
        match self {
            Backend::Etcd { address } => {
                let options = EtcdOptions::from_addresses(address).expect("etcd address");
                Arc::new(EtcdRegistry::connect(options).await.expect("etcd registry"))
            }
            Backend::Mdns => Arc::new(MdnsRegistry::new(MdnsOptions::default()).expect("mdns")),
        }
    }

    /// Longest wait for one step of a trial (registration, first call, drop).
    pub(crate) fn step_bound(&self) -> Duration {
        match self {
            Backend::Etcd { .. } => Duration::from_secs(5),
            Backend::Mdns => Duration::from_secs(10),
        }
    }
}

/// How many trials, and how long they may take in all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trials {
    pub(crate) count: usize,
    pub(crate) budget: Duration,
}

impl Trials {
    /// A trial takes a few milliseconds: enough of them for a real p99.
    fn r6(quick: bool) -> Trials {
        if quick {
            Trials {
                count: 100,
                budget: Duration::from_secs(5),
            }
        } else {
            Trials {
                count: 300,
                budget: Duration::from_secs(20),
            }
        }
    }

    /// A trial takes ~0.8 s (the probes alone are 750 ms).
    fn r7(quick: bool) -> Trials {
        if quick {
            Trials {
                count: 6,
                budget: Duration::from_secs(8),
            }
        } else {
            Trials {
                count: 20,
                budget: Duration::from_secs(25),
            }
        }
    }
}

/// One trial's intervals, in milliseconds (negative: t1 came first).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trial {
    /// Register returned (t0) → first call on the new node (t1).
    pub(crate) register_to_call: f64,
    /// Register returned → the client's registry watch delivered the node.
    pub(crate) register_to_watch: f64,
    /// Register call began → first call.
    register_call_to_call: f64,
    /// Server start (before its registry client and listener) → first call.
    start_to_call: f64,
}

impl Trial {
    fn line(&self) -> String {
        format!(
            "SAMPLE {:.3} {:.3} {:.3} {:.3}",
            self.register_to_call,
            self.register_to_watch,
            self.register_call_to_call,
            self.start_to_call
        )
    }

    fn parse(line: &str) -> Option<Trial> {
        let mut values = line
            .strip_prefix("SAMPLE ")?
            .split_whitespace()
            .map(|v| v.parse::<f64>().ok());
        Some(Trial {
            register_to_call: values.next()??,
            register_to_watch: values.next()??,
            register_call_to_call: values.next()??,
            start_to_call: values.next()??,
        })
    }

    fn describe(&self) -> String {
        format!(
            "register → first call {:.3} ms (watch {:.3} ms; from the Register call {:.3} ms, from start {:.3} ms)",
            self.register_to_call,
            self.register_to_watch,
            self.register_call_to_call,
            self.start_to_call
        )
    }
}

/// What all trials of one registry produced.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    pub(crate) trials: Vec<Trial>,
    /// Trials where the new node got no call (or did not register, or the
    /// watch did not deliver it) within the step bound.
    pub(crate) missed: usize,
    /// Calls of the closed loop, and how many failed.
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    /// How long the trials took, stops and drop waits included.
    elapsed: Duration,
}

/// Milliseconds from `a` to `b`, negative when `b` came first.
pub(crate) fn ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a {
        (b - a).as_secs_f64() * 1000.0
    } else {
        -((a - b).as_secs_f64() * 1000.0)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// When a server started, called Register, and Register returned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Marks {
    start: Instant,
    called: Instant,
    pub(crate) returned: Instant,
}

/// The server's registry, timing its first successful Register call.
#[derive(Debug)]
struct TimedRegistry {
    inner: SharedRegistry,
    start: Instant,
    marks: Mutex<Option<oneshot::Sender<Marks>>>,
}

#[async_trait::async_trait]
impl Registry for TimedRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        let called = Instant::now();
        let result = self.inner.register(service, options).await;
        let returned = Instant::now();
        if result.is_ok()
            && let Some(tx) = lock(&self.marks).take()
        {
            let _ = tx.send(Marks {
                start: self.start,
                called,
                returned,
            });
        }
        result
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        self.inner.deregister(service).await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.inner.get_service(name).await
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.inner.list_services().await
    }

    async fn list_services_with(&self, detail: Detail) -> Result<Vec<Service>, Error> {
        self.inner.list_services_with(detail).await
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        self.inner.watch(options).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

/// A greeter that reports when its first call started.
#[derive(Debug, Default)]
struct FirstCallGreeter {
    first: Mutex<Option<oneshot::Sender<Instant>>>,
}

#[tonic::async_trait]
impl Greeter for FirstCallGreeter {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<HelloResponse>, tonic::Status> {
        let now = Instant::now();
        if let Some(tx) = lock(&self.first).take() {
            let _ = tx.send(now);
        }
        let name = request.into_inner().name;
        Ok(tonic::Response::new(HelloResponse {
            msg: format!("Hello {name}"),
        }))
    }

    micro_testing::greeter_streams!();
}

/// A toolkit server on its own thread and runtime, pinned to the server core.
pub(crate) struct NodeServer {
    pub(crate) node_id: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeServer {
    /// Starts a greeter server with a registry of its own; returns once it is
    /// bound (it registers right after), with a receiver of its [`Marks`].
    /// `first` learns of its first call.
    pub(crate) async fn start(
        backend: &Backend,
        first: Option<oneshot::Sender<Instant>>,
    ) -> (NodeServer, oneshot::Receiver<Marks>) {
        let (id_tx, id_rx) = oneshot::channel::<String>();
        let (marks_tx, marks) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let backend = backend.clone();
        let thread = std::thread::spawn(move || {
            // Worker threads inherit this thread's affinity.
            let _ = core_affinity::set_for_current(core_affinity::CoreId {
                id: proc::SERVER_CORE,
            });
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let start = Instant::now();
                let inner = backend.registry().await;
                let registry = Arc::new(TimedRegistry {
                    inner: inner.clone(),
                    start,
                    marks: Mutex::new(Some(marks_tx)),
                });
                let greeter = FirstCallGreeter {
                    first: Mutex::new(first),
                };
                let server = Server::builder(GREETER)
                    .registry(registry)
                    .options(ServerOptions {
                        address: "127.0.0.1:0".into(),
                        register_ttl: Duration::from_secs(30),
                        register_interval: Duration::from_secs(15),
                        shutdown_grace: Duration::from_secs(2),
                        deregister_timeout: Duration::from_secs(2),
                        ..ServerOptions::default()
                    })
                    .file_descriptor_set(micro_testing::FILE_DESCRIPTOR_SET)
                    .add_service(GreeterServer::new(greeter))
                    .bind()
                    .await
                    .expect("server binds");
                let _ = id_tx.send(server.node().id.clone());
                server
                    .run_until(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("server runs");
                // mDNS: goodbyes are out already (deregistered); stop the responder.
                inner.close().await;
            });
        });
        let node_id = tokio::time::timeout(Duration::from_secs(30), id_rx)
            .await
            .expect("server bound within 30 s")
            .expect("server thread bound");
        let server = NodeServer {
            node_id,
            stop: Some(stop),
            thread: Some(thread),
        };
        (server, marks)
    }

    /// Graceful stop (deregister, drain, stop), waiting for the thread.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Registry events as the client's registry delivered them, timestamped on
/// arrival by a task of their own.
pub(crate) struct Probe {
    events: mpsc::UnboundedReceiver<(Instant, Event)>,
    _task: AbortOnDrop<()>,
}

impl Probe {
    pub(crate) async fn start(registry: &SharedRegistry) -> Probe {
        let mut watcher = registry
            .watch(WatchOptions::service(GREETER))
            .await
            .expect("registry watch");
        let (tx, events) = mpsc::unbounded_channel();
        let task = AbortOnDrop::spawn(async move {
            while let Some(Ok(event)) = watcher.next().await {
                if tx.send((Instant::now(), event)).is_err() {
                    return;
                }
            }
        });
        Probe {
            events,
            _task: task,
        }
    }

    /// When an event with `action` (Create or Update if `created`) for
    /// `node_id` arrived; `None` after `bound` or if the watch ended.
    pub(crate) async fn wait(
        &mut self,
        node_id: &str,
        created: bool,
        bound: Duration,
    ) -> Option<Instant> {
        let wanted = |action: Action| match action {
            Action::Create | Action::Update => created,
            Action::Delete => !created,
        };
        tokio::time::timeout(bound, async {
            while let Some((at, event)) = self.events.recv().await {
                if wanted(event.action) && event.service.nodes.iter().any(|n| n.id == node_id) {
                    return Some(at);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

/// Waits (polling every millisecond, at most `bound`) until the client's node
/// set has `node_id` (or no longer has it). The node set has no change
/// signal; callers wait for the registry event first, so this only bridges
/// the client's own apply step.
async fn wait_node(set: &NodeSet, node_id: &str, present: bool, bound: Duration) -> bool {
    let until = Instant::now() + bound;
    loop {
        if set.nodes().iter().any(|n| n.id == node_id) == present {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs the trials against `backend`; call on the load core, in a runtime.
/// `tell` hears of each trial as it ends (its number; `None`: missed).
pub(crate) async fn run_trials(
    backend: Backend,
    trials: Trials,
    tell: fn(usize, Option<&Trial>),
) -> Samples {
    let bound = backend.step_bound();
    let client_registry = backend.registry().await;
    let mut probe = Probe::start(&client_registry).await;
    let (base, _) = NodeServer::start(&backend, None).await;
    let client = Client::new(client_registry.clone(), ClientOptions::default());
    let channel = client.service(GREETER);
    let set = channel.node_set().clone();
    let seen = probe.wait(&base.node_id, true, bound).await.is_some()
        || set.nodes().iter().any(|n| n.id == base.node_id);
    assert!(seen, "the client's registry never saw the first server");
    assert!(
        wait_node(&set, &base.node_id, true, bound).await,
        "the client never listed the first server"
    );

    // The running client: one call in flight, in a closed loop.
    let running = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let looper = {
        let (running, calls, errors) = (running.clone(), calls.clone(), errors.clone());
        let mut greeter = GreeterClient::new(channel);
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let ok = greeter
                    .hello(Request {
                        name: "huohuo".into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                calls.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                    // Pacing, not synchronisation: no busy loop on failures.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };

    let mut samples = Samples::default();
    let started = Instant::now();
    for i in 0..trials.count {
        if started.elapsed() >= trials.budget {
            eprintln!("  time budget {:?} used up after {i} trials", trials.budget);
            break;
        }
        let (first_tx, first_rx) = oneshot::channel();
        let (server, marks_rx) = NodeServer::start(&backend, Some(first_tx)).await;
        let node_id = server.node_id.clone();
        let (watched, first, marks) = tokio::join!(
            probe.wait(&node_id, true, bound),
            tokio::time::timeout(bound, first_rx),
            tokio::time::timeout(bound, marks_rx),
        );
        match (watched, first, marks) {
            (Some(watched), Ok(Ok(t1)), Ok(Ok(marks))) => {
                let trial = Trial {
                    register_to_call: ms_between(marks.returned, t1),
                    register_to_watch: ms_between(marks.returned, watched),
                    register_call_to_call: ms_between(marks.called, t1),
                    start_to_call: ms_between(marks.start, t1),
                };
                tell(i + 1, Some(&trial));
                samples.trials.push(trial);
            }
            (watched, first, marks) => {
                eprintln!(
                    "  trial {}: watch event {}, first call {}, registered {}",
                    i + 1,
                    watched.is_some(),
                    matches!(first, Ok(Ok(_))),
                    matches!(marks, Ok(Ok(_)))
                );
                tell(i + 1, None);
                samples.missed += 1;
            }
        }
        server.stop().await;
        let dropped = probe.wait(&node_id, false, bound).await.is_some()
            && wait_node(&set, &node_id, false, bound).await;
        assert!(
            dropped,
            "the client did not drop a stopped node within {bound:?}"
        );
    }

    samples.elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let _ = tokio::time::timeout(bound, looper).await;
    samples.calls = calls.load(Ordering::Relaxed);
    samples.errors = errors.load(Ordering::Relaxed);
    base.stop().await;
    drop(set);
    drop(client);
    drop(probe);
    client_registry.close().await;
    samples
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The markdown section for one registry.
fn report(title: &str, target: &str, target_ms: f64, samples: &Samples) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "t0 = the new server's Register call returned (its `registered()` signal turns true right \
         after); t1 = the new node's handler starts its first call from the running client. \
         Percentiles by nearest rank{}.\n",
        if samples.trials.len() < 100 {
            " (with fewer than 100 trials, p99 is the maximum)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "| interval | trials | p50 ms | p90 ms | p99 ms | max ms |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    type Pick = fn(&Trial) -> f64;
    let rows: [(&str, Pick); 5] = [
        (
            "**Register returned → first call on the new node (t1 − t0)**",
            |t| t.register_to_call,
        ),
        (
            "Register returned → the client's registry watch delivered the node (floor)",
            |t| t.register_to_watch,
        ),
        (
            "the client's registry watch delivered the node → first call (the client's share)",
            |t| t.register_to_call - t.register_to_watch,
        ),
        ("Register call began → first call on the new node", |t| {
            t.register_call_to_call
        }),
        (
            "server start (before its registry client and listener) → first call",
            |t| t.start_to_call,
        ),
    ];
    let mut headline_p99 = f64::NAN;
    for (i, (label, pick)) in rows.iter().enumerate() {
        let v = sorted(samples.trials.iter().map(pick));
        let p99 = percentile(&v, 0.99);
        if i == 0 {
            headline_p99 = p99;
        }
        let _ = writeln!(
            out,
            "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            v.len(),
            percentile(&v, 0.50),
            percentile(&v, 0.90),
            p99,
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    let met = samples.missed == 0 && !samples.trials.is_empty() && headline_p99 < target_ms;
    let _ = writeln!(
        out,
        "\nTarget {target}: **{}** (p99 {headline_p99:.3} ms over {} trials, {} missed; trials took \
         {:.1} s with stops and drop waits). The running client's closed loop: {} calls, {} failed.\n",
        if met { "met" } else { "missed" },
        samples.trials.len(),
        samples.missed,
        samples.elapsed.as_secs_f64(),
        samples.calls,
        samples.errors
    );
    out
}

/// R6: etcd on loopback (on the server core); servers and client in-process.
pub fn r6(plan: &Plan) -> String {
    eprintln!("R6");
    let etcd = start_etcd();
    let trials = Trials::r6(plan.quick);
    let runtime = Flavor::Multi.runtime();
    let samples = runtime.block_on(run_trials(
        Backend::Etcd {
            address: etcd.address.clone(),
        },
        trials,
        |i, trial| match trial {
            Some(trial) => eprintln!("  trial {i}: {}", trial.describe()),
            None => eprintln!("  trial {i}: missed"),
        },
    ));
    drop(runtime);
    drop(etcd);
    report(
        &format!(
            "R6: etcd, a new instance registers → its first call from a running toolkit client \
             ({} trials at most, {:?} budget)",
            trials.count, trials.budget
        ),
        "p99 < 5 ms",
        R6_TARGET_MS,
        &samples,
    )
}

/// Whether this process may create network namespaces.
pub(crate) fn netns_available() -> bool {
    std::process::Command::new("unshare")
        .args(["--net", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// R7: mDNS, in a child of ours in a fresh network namespace (loopback only).
pub fn r7(plan: &Plan) -> String {
    eprintln!("R7");
    let trials = Trials::r7(plan.quick);
    let title = format!(
        "R7: mDNS in a private network namespace, a new instance registers → its first call \
         from a running toolkit client ({} trials at most, {:?} budget)",
        trials.count, trials.budget
    );
    if !netns_available() {
        return format!(
            "### {title}\n\nSkipped: no private network namespace (`unshare --net` needs root or \
             CAP_SYS_ADMIN); mDNS is never run outside one.\n\n"
        );
    }
    let mut command = micro_registry_mdns::testing::netns_command(&plan.exe);
    command.args([
        "discovery-mdns".to_string(),
        format!("--trials={}", trials.count),
        format!("--budget-ms={}", trials.budget.as_millis()),
    ]);
    let program = std::path::PathBuf::from(command.get_program());
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut child = Proc::spawn("mDNS trials (netns)", &program, &args, &[]);
    let mut samples = Samples::default();
    // A trial has three bounded steps, then a bounded stop.
    let line_bound = Backend::Mdns.step_bound() * 6;
    loop {
        let (line, _) = child.wait_line(CHILD_PREFIX, line_bound);
        let line = line
            .split_once(CHILD_PREFIX)
            .map_or("", |(_, rest)| rest.trim());
        if let Some(trial) = Trial::parse(line) {
            eprintln!("  trial {}: {}", samples.trials.len() + 1, trial.describe());
            samples.trials.push(trial);
        } else if line == "MISSED" {
            eprintln!("  a trial missed");
            samples.missed += 1;
        } else if let Some(rest) = line.strip_prefix("DONE ") {
            let mut n = rest.split_whitespace().map(|v| v.parse().unwrap_or(0));
            samples.calls = n.next().unwrap_or(0);
            samples.errors = n.next().unwrap_or(0);
            samples.elapsed = Duration::from_millis(n.next().unwrap_or(0));
            break;
        } else if let Some(why) = line.strip_prefix("ERROR ") {
            return format!("### {title}\n\nSkipped: {why}\n\n");
        } else if let Some(what) = line.strip_prefix("PANIC ") {
            panic!("R7 failed in its namespace: {what}");
        }
    }
    drop(child);
    report(&title, "p99 < 1.5 s", R7_TARGET_MS, &samples)
}

/// The R7 child (`micro-bench discovery-mdns`), started by [`r7`] in a fresh
/// network namespace: refuses to run unless it sees only loopback, then runs
/// the trials and prints `R7-CHILD ...` lines on stdout.
pub fn mdns_child(count: usize, budget: Duration) {
    if let Err(e) = micro_registry_mdns::testing::ensure_only_loopback() {
        println!("{CHILD_PREFIX}ERROR {e}");
        std::process::exit(2);
    }
    // The parent reads stdout only: a failure must reach it there.
    std::panic::set_hook(Box::new(|info| {
        println!(
            "{CHILD_PREFIX}PANIC {}",
            info.to_string().replace('\n', " ")
        );
    }));
    // As the parent: the client (load) on the load core; servers re-pin
    // their own threads to the server core.
    let _ = core_affinity::set_for_current(core_affinity::CoreId {
        id: proc::LOAD_CORE,
    });
    let runtime = Flavor::Multi.runtime();
    let samples = runtime.block_on(run_trials(
        Backend::Mdns,
        Trials { count, budget },
        |_, trial| match trial {
            Some(trial) => println!("{CHILD_PREFIX}{}", trial.line()),
            None => println!("{CHILD_PREFIX}MISSED"),
        },
    ));
    drop(runtime);
    println!(
        "{CHILD_PREFIX}DONE {} {} {}",
        samples.calls,
        samples.errors,
        samples.elapsed.as_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::{Trial, percentile};

    #[test]
    fn nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.99), 4.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn sample_line_round_trip() {
        let t = Trial {
            register_to_call: -0.25,
            register_to_watch: 0.5,
            register_call_to_call: 1.0,
            start_to_call: 2.0,
        };
        let back = Trial::parse(&t.line()).expect("parses");
        assert_eq!(back.register_to_call, -0.25);
        assert_eq!(back.start_to_call, 2.0);
    }
}
