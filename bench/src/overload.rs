//! Overload (`--only overload`): user-srv (SQLite, one core) past its
//! capacity, with admission control (`--server_max_concurrent=auto`, the
//! default), without (`off`), and with a fixed limit sized from what the
//! first two rows measured.
//!
//! For each setting, on a fresh user-srv:
//!
//! 1. Capacity: closed loop, [`CAPACITY_CONCURRENCY`] calls in flight,
//!    `User.QueryUserByName`, and what each call cost the generator and the
//!    server in CPU.
//! 2. Unloaded latency: open loop at a tenth of the capacity.
//! 3. Overload: open loop (a call every 1/rate, whatever the answers do) at
//!    [`OVERLOAD_FACTOR`]× the capacity for [`OVERLOAD`] (5 s in quick
//!    mode). Goodput (answered calls per second) against the capacity, p99
//!    of the answered calls against the unloaded p99, and how fast refused
//!    calls (`RESOURCE_EXHAUSTED`) come back.
//!
//! One node, so a shed call is not retried: its refusal is what is timed.
//!
//! **The generator.** It shares the machine, on one core (the server has
//! the other), so every latency it times includes its own queueing. Through
//! the toolkit's client (tonic, the retry, deadline and balancing stages, one
//! HTTP/2 connection) a call costs the generator about as much CPU as it
//! costs the server: one core of it cannot offer three times a one-core
//! server's capacity, and a saturated generator's send lag became the
//! refused calls' time (quiet run before this generator: refusals 44 / 119
//! ms at p50 / p99, its send lag 67 / 118 ms, its core 0.98 busy). So the
//! rows are measured by a light generator ([`crate::grpc_raw`]): the
//! request encoded once, sent over [`CONNECTIONS`] raw HTTP/2 connections
//! (hyper), the `grpc-status` read from the trailers, on a current-thread
//! runtime; `grpc-timeout` is the toolkit's per-attempt default (2 s). Both
//! report their CPU per call, and the toolkit client's row (`auto`) stays
//! as the measure of what a real client adds (capacity included: its closed
//! loop of 32 is limited by the generator too). The light generator still
//! costs about half what a call costs the server (a refused call: its full
//! cost, for the server's few microseconds), so on one core it offers
//! about 1.5× this server's capacity, not 3×: its CPU and "not sent" columns
//! say when it was the bottleneck.
//!
//! The fixed limit is what Little's law gives for a target latency of twice
//! the unloaded p50 at the measured capacity: `N = capacity × 2 × p50`
//! (the mean over the rows before it, printed with the table).
//!
//! The report says how late calls left against their schedule (send lag)
//! and how much CPU the generator and the server used during the overload:
//! a generator near 100 % of its core is itself the bottleneck, and the
//! refused calls' times are then mostly its own.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use micro_client::ClientOptions;
use tokio::time::Instant;
use user_proto::user::Request as UserRequest;
use user_proto::user::user_client::UserClient;

use crate::fixtures::Plan;
use crate::grpc_raw::{RawGrpc, Status};
use crate::load::{Timing, closed_loop, micro_client_for};
use crate::proc::{Proc, free_port};
use crate::r2::{clock_tick, cpu_time};
use crate::servers::Flavor;

const USER: &str = "go.micro.srv.user";
/// The method's HTTP/2 path.
const QUERY_USER_BY_NAME: &str = "/go.micro.srv.user.User/QueryUserByName";
/// Calls in flight while capacity is measured.
const CAPACITY_CONCURRENCY: usize = 32;
/// The light generator's HTTP/2 connections (one connection's flow control
/// and stream limit are not what limits it).
const CONNECTIONS: usize = 4;
/// Offered load during the overload, in multiples of the capacity.
const OVERLOAD_FACTOR: f64 = 3.0;
/// How long the overload lasts (full mode).
const OVERLOAD: Duration = Duration::from_secs(30);
/// The fixed limit's latency target, in multiples of the unloaded p50.
const FIXED_TARGET: f64 = 2.0;
/// Calls the generator keeps outstanding at most: past that it is behind
/// (its own runtime is the queue) and a call due is skipped and counted, not
/// spawned. Without a bound a generator that falls behind on a busy machine
/// piles up hundreds of thousands of tasks, every call then outlives its
/// deadline, and the run measures the generator's collapse (it did: 0.02
/// of capacity answered, the server 0.13 cores busy).
const MAX_OUTSTANDING: usize = 4096;

/// Which generator sent the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generator {
    /// [`RawGrpc`] on a current-thread runtime.
    Light,
    /// The toolkit's client (`micro_client`, tonic) on a multi-thread
    /// runtime (both threads on the load core).
    Toolkit,
}

impl Generator {
    fn label(self) -> &'static str {
        match self {
            Generator::Light => "light (raw HTTP/2)",
            Generator::Toolkit => "toolkit client",
        }
    }
}

/// What an open-loop run saw.
struct OpenLoop {
    /// Calls sent per second (what the generator managed).
    sent_rate: f64,
    /// Calls due but not sent: [`MAX_OUTSTANDING`] were outstanding.
    skipped: u64,
    ok: Histogram<u64>,
    refused: Histogram<u64>,
    /// Other failures (deadlines, attempt timeouts).
    failed: Histogram<u64>,
    /// How late each call was sent against its schedule.
    lag: Histogram<u64>,
    /// From the first call due to the last answer (at least the run's
    /// length): what goodput is counted over.
    elapsed: Duration,
    /// CPU seconds per second while calls were sent: the generator (this
    /// process), the server.
    cpu: Option<(f64, f64)>,
    /// CPU per call sent, microseconds, from the first call to the last
    /// answer: the generator, the server.
    per_call: Option<(f64, f64)>,
    /// The server's adaptive limit, sampled during the run.
    limits: Vec<f64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(hist: &Histogram<u64>, q: f64) -> f64 {
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// user-srv on a memory registry (the client is given its address), with
/// `--server_max_concurrent=limit`: the process, its gRPC address and its
/// admin address (metrics).
fn user_srv(plan: &Plan, limit: &str, data: &std::path::Path) -> (Proc, SocketAddr, SocketAddr) {
    let port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let p = Proc::spawn(
        "user-srv",
        &plan.bin_dir.join("user-srv"),
        &[
            "--registry=memory".into(),
            format!("--server_address=127.0.0.1:{port}"),
            format!("--data_dir={}", data.display()),
            "--auth_secret=bench-secret".into(),
            format!("--server_max_concurrent={limit}"),
            format!("--admin_address={admin}"),
        ],
        &[("RUST_LOG", "warn".to_string())],
    );
    (
        p,
        format!("127.0.0.1:{port}").parse().expect("address"),
        admin,
    )
}

/// The server's adaptive limit (`micro_admission_limit`), read from its
/// metrics every 250 ms for `length`, on a thread of its own.
fn sample_limit(admin: SocketAddr, length: Duration) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        let period = Duration::from_millis(250);
        let samples = (length.as_millis() / period.as_millis()) as usize;
        let mut limits = Vec::with_capacity(samples);
        for _ in 0..samples {
            std::thread::sleep(period);
            let metrics = micro_testing::http::get(admin, "/metrics");
            let limit = metrics
                .lines()
                .filter(|l| l.starts_with("micro_admission_limit{"))
                .find_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok());
            limits.extend(limit);
        }
        limits
    })
}

fn request() -> UserRequest {
    UserRequest {
        user_name: "huohuo".into(),
        ..UserRequest::default()
    }
}

/// The toolkit client's answer, classed as the light generator classes
/// `grpc-status`: the handler answered (a user, or `NotFound` after the
/// store lookup: no user is registered, the call does the same work),
/// refused, or failed.
fn toolkit_status(
    result: &Result<tonic::Response<user_proto::user::Response>, tonic::Status>,
) -> Status {
    match result {
        Ok(_) => Status::Answered,
        Err(status) if status.code() == tonic::Code::NotFound => Status::Answered,
        Err(status) if status.code() == tonic::Code::ResourceExhausted => Status::Refused,
        Err(_) => Status::Failed,
    }
}

/// The CPU time (seconds) of this process and of `server`.
fn cpu_pair(server: &str, tick: f64) -> Option<(f64, f64)> {
    cpu_time("self", tick).zip(cpu_time(server, tick))
}

/// Waits (30 s at most) for user-srv to answer.
async fn ready<F, Fut>(call: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Status>,
{
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if call().await == Status::Answered {
            return;
        }
        assert!(Instant::now() < until, "user-srv did not answer in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call every `1/rate` for `length`, each in its own task.
async fn open_loop<F, Fut>(call: &F, rate: f64, length: Duration, server_pid: u32) -> OpenLoop
where
    F: Fn() -> Fut,
    Fut: Future<Output = Status> + Send + 'static,
{
    #[derive(Default)]
    struct Seen {
        ok: Vec<u64>,
        refused: Vec<u64>,
        failed: Vec<u64>,
        lag: Vec<u64>,
    }
    let tick = clock_tick();
    let server = server_pid.to_string();
    let cpu_before = cpu_pair(&server, tick);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::new();
    let mut n: u32 = 0;
    let (mut sent_calls, mut skipped) = (0u32, 0u64);
    let outstanding = Arc::new(AtomicUsize::new(0));
    loop {
        let due = start + period * n;
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        n += 1;
        if outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
            skipped += 1;
            continue;
        }
        sent_calls += 1;
        outstanding.fetch_add(1, Ordering::Relaxed);
        let outstanding = outstanding.clone();
        let seen = seen.clone();
        let call = call();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let late = sent.saturating_duration_since(due);
            let status = call.await;
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let us = (sent.elapsed().as_micros() as u64).clamp(1, 60_000_000);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.lag
                .push((late.as_micros() as u64).clamp(1, 60_000_000));
            match status {
                Status::Answered => seen.ok.push(us),
                Status::Refused => seen.refused.push(us),
                Status::Failed => seen.failed.push(us),
            }
        }));
    }
    let sent_for = start.elapsed();
    let cpu_sent = cpu_pair(&server, tick);
    for task in tasks {
        let _ = task.await;
    }
    let cpu_done = cpu_pair(&server, tick);
    // Answers counted over the time they took to come: a generator that fell
    // behind sends (and is answered) for longer than `length`.
    let answered_for = start.elapsed().max(length);
    let cpu = cpu_before
        .zip(cpu_sent)
        .map(|((load0, server0), (load1, server1))| {
            let wall = sent_for.as_secs_f64();
            ((load1 - load0) / wall, (server1 - server0) / wall)
        });
    let per_call = cpu_before.zip(cpu_done).filter(|_| sent_calls > 0).map(
        |((load0, server0), (load1, server1))| {
            let calls = f64::from(sent_calls) / 1e6;
            ((load1 - load0) / calls, (server1 - server0) / calls)
        },
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let fill = |values: &[u64]| {
        let mut hist = histogram();
        for v in values {
            let _ = hist.record(*v);
        }
        hist
    };
    OpenLoop {
        sent_rate: f64::from(sent_calls) / sent_for.as_secs_f64(),
        skipped,
        ok: fill(&seen.ok),
        refused: fill(&seen.refused),
        failed: fill(&seen.failed),
        lag: fill(&seen.lag),
        elapsed: answered_for,
        cpu,
        per_call,
        limits: Vec::new(),
    }
}

/// What one setting and generator measured.
struct Row {
    generator: Generator,
    limit: String,
    capacity: f64,
    /// CPU per call in the capacity's closed loop, microseconds: the
    /// generator, the server.
    closed_per_call: Option<(f64, f64)>,
    unloaded_p50: f64,
    unloaded_p99: f64,
    run: OpenLoop,
}

/// Capacity, unloaded latency and the overload, with `call` as the
/// generator.
async fn measure<F, Fut>(
    call: F,
    admin: SocketAddr,
    server_pid: u32,
    overload: Duration,
    timing: Timing,
) -> (f64, Option<(f64, f64)>, OpenLoop, OpenLoop)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Status> + Send + 'static,
{
    ready(&call).await;
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CAPACITY_CONCURRENCY)
        .map(|_| {
            let (call, calls) = (call.clone(), calls.clone());
            move || {
                calls.fetch_add(1, Ordering::Relaxed);
                let call = call();
                async move { call.await == Status::Answered }
            }
        })
        .collect();
    let tick = clock_tick();
    let server = server_pid.to_string();
    let before = cpu_pair(&server, tick);
    let capacity = closed_loop(workers, timing).await.rps();
    let closed_per_call =
        before
            .zip(cpu_pair(&server, tick))
            .map(|((load0, server0), (load1, server1))| {
                let calls = calls.load(Ordering::Relaxed).max(1) as f64 / 1e6;
                ((load1 - load0) / calls, (server1 - server0) / calls)
            });
    let quiet = open_loop(
        &call,
        (capacity / 10.0).max(10.0),
        timing.measure * 2,
        server_pid,
    )
    .await;
    let limits = sample_limit(admin, overload);
    let mut run = open_loop(&call, capacity * OVERLOAD_FACTOR, overload, server_pid).await;
    run.limits = limits.join().unwrap_or_default();
    (capacity, closed_per_call, quiet, run)
}

/// One row: a fresh user-srv with `--server_max_concurrent=limit`, measured
/// by `generator`.
fn row(plan: &Plan, generator: Generator, limit: &str, overload: Duration, timing: Timing) -> Row {
    let data = std::env::temp_dir().join(format!(
        "micro-bench-overload-{}-{limit}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    let (proc, addr, admin) = user_srv(plan, limit, &data);
    let pid = proc.pid();
    let (capacity, closed_per_call, quiet, run) = match generator {
        Generator::Light => Flavor::CurrentThread.runtime().block_on(async move {
            // user-srv may not listen yet: 30 s at most.
            let until = Instant::now() + Duration::from_secs(30);
            let raw = loop {
                match RawGrpc::connect(
                    addr,
                    CONNECTIONS,
                    QUERY_USER_BY_NAME,
                    &request(),
                    ClientOptions::ATTEMPT_TIMEOUT,
                    ClientOptions::REQUEST_TIMEOUT,
                )
                .await
                {
                    Ok(raw) => break raw,
                    Err(e) if Instant::now() >= until => {
                        panic!("cannot connect to user-srv in 30 s: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let call = move || {
                let raw = raw.clone();
                async move { raw.call().await }
            };
            measure(call, admin, pid, overload, timing).await
        }),
        Generator::Toolkit => Flavor::Multi.runtime().block_on(async move {
            let client = micro_client_for(USER, &[addr], ClientOptions::default()).await;
            let user = UserClient::new(client.service(USER));
            let call = move || {
                let mut user = user.clone();
                async move { toolkit_status(&user.query_user_by_name(request()).await) }
            };
            measure(call, admin, pid, overload, timing).await
        }),
    };
    drop(proc);
    let _ = std::fs::remove_dir_all(&data);
    Row {
        generator,
        limit: limit.to_string(),
        capacity,
        closed_per_call,
        unloaded_p50: ms(&quiet.ok, 0.5),
        unloaded_p99: ms(&quiet.ok, 0.99),
        run,
    }
}

/// The fixed limit for a latency of [`FIXED_TARGET`]× the unloaded p50 at
/// the capacity (Little's law), from the mean of `rows`, and how it was
/// computed.
fn fixed_limit(rows: &[Row]) -> (usize, String) {
    let n = rows.len().max(1) as f64;
    let capacity = rows.iter().map(|r| r.capacity).sum::<f64>() / n;
    let p50 = rows.iter().map(|r| r.unloaded_p50).sum::<f64>() / n;
    let limit = (capacity * FIXED_TARGET * p50 / 1000.0).ceil().max(1.0) as usize;
    (
        limit,
        format!(
            "Fixed limit: N = capacity × {FIXED_TARGET} × unloaded p50 = {capacity:.0}/s × {FIXED_TARGET} × {p50:.3} ms = **{limit}** (means of the rows above it)."
        ),
    )
}

/// What a refusal cost the server, estimated: its CPU during the overload
/// less what the answered calls cost each at capacity (all answered there),
/// shared among the refused calls.
fn refusal_cost(row: &Row) -> Option<f64> {
    let r = &row.run;
    let (_, answered) = row.closed_per_call?;
    let (_, per_call) = r.per_call?;
    let sent = (r.ok.len() + r.refused.len() + r.failed.len()) as f64;
    (!r.refused.is_empty())
        .then(|| (per_call * sent - answered * r.ok.len() as f64) / r.refused.len() as f64)
}

fn pair(values: Option<(f64, f64)>, digits: usize) -> String {
    values.map_or("–".to_string(), |(a, b)| {
        format!("{a:.digits$} / {b:.digits$}")
    })
}

/// The overload scenario's report.
pub fn overload(plan: &Plan) -> String {
    eprintln!("overload");
    let overload = if plan.quick {
        Duration::from_secs(5)
    } else {
        OVERLOAD
    };
    let timing = Timing {
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(if plan.quick { 2 } else { 5 }),
    };
    let mut rows = Vec::new();
    for limit in ["auto", "off"] {
        rows.push(row(plan, Generator::Light, limit, overload, timing));
    }
    let (fixed, how) = fixed_limit(&rows);
    rows.push(row(
        plan,
        Generator::Light,
        &fixed.to_string(),
        overload,
        timing,
    ));
    rows.push(row(plan, Generator::Toolkit, "auto", overload, timing));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Overload: user-srv `User.QueryUserByName` (SQLite, one core) at {OVERLOAD_FACTOR}× its capacity for {overload:?}, open loop, one node\n"
    );
    let _ = writeln!(
        out,
        "| generator | `--server_max_concurrent` | capacity (calls/s, {CAPACITY_CONCURRENCY} in flight) | CPU per call at capacity, generator / server (µs) | unloaded p50 / p99 (ms) | offered (sent/s) | goodput (answered/s) | goodput / capacity | p99 answered (ms) | p99 answered / unloaded | refused | refused p50 / p99 (ms) | failed (deadline) | not sent (generator behind) | send lag p50 / p99 (ms) | CPU generator / server (cores) | CPU per call sent, generator / server (µs) | server CPU per refusal (µs, est.) | limit median / max |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for row in &rows {
        let r = &row.run;
        let goodput = r.ok.len() as f64 / r.elapsed.as_secs_f64();
        let refused = if r.refused.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2} / {:.2}", ms(&r.refused, 0.5), ms(&r.refused, 0.99))
        };
        let limit = if r.limits.is_empty() {
            "–".to_string()
        } else {
            let mut sorted = r.limits.clone();
            sorted.sort_by(f64::total_cmp);
            format!(
                "{:.0} / {:.0}",
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {:.2} / {:.2} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1}× | {} | {} | {} | {} | {:.2} / {:.2} | {} | {} | {} | {} |",
            row.generator.label(),
            row.limit,
            row.capacity,
            pair(row.closed_per_call, 1),
            row.unloaded_p50,
            row.unloaded_p99,
            r.sent_rate,
            goodput,
            goodput / row.capacity,
            ms(&r.ok, 0.99),
            ms(&r.ok, 0.99) / row.unloaded_p99.max(0.001),
            r.refused.len(),
            refused,
            r.failed.len(),
            r.skipped,
            ms(&r.lag, 0.5),
            ms(&r.lag, 0.99),
            pair(r.cpu, 2),
            pair(r.per_call, 1),
            refusal_cost(row).map_or("–".to_string(), |us| format!("{us:.1}")),
            limit,
        );
    }
    let _ = writeln!(out, "\n{how}\n");
    out
}
