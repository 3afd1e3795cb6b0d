//! Overload (`--only overload`): user-srv (SQLite, one core) past its
//! capacity, with admission control (`--server_max_concurrent=auto`, the
//! default) and without (`off`).
//!
//! 1. Capacity: closed loop, [`CAPACITY_CONCURRENCY`] calls in flight,
//!    `User.QueryUserByName` through a toolkit client.
//! 2. Unloaded latency: open loop at a tenth of the capacity.
//! 3. Overload: open loop (a call every 1/rate, whatever the answers do) at
//!    [`OVERLOAD_FACTOR`]× the capacity for [`OVERLOAD`] (5 s in quick
//!    mode). Goodput (answered calls per second) against the capacity, p99
//!    of the answered calls against the unloaded p99, and how fast refused
//!    calls (`RESOURCE_EXHAUSTED`) come back.
//!
//! One node, so a shed call is not retried: its refusal is what is timed.
//! The client's deadline is its default (5 s; attempt timeout 2 s).
//!
//! The generator shares the machine: every latency it times includes its
//! own queueing (its tasks, the client's stack, the one HTTP/2 connection
//! whose frames refused and answered calls share). So the report also says
//! how late calls left against their schedule (send lag) and how much CPU
//! the generator (pinned to one core) and the server used during the
//! overload: a generator near 100 % of its core is itself the bottleneck,
//! and the refused calls' times are then mostly its own.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use micro_client::ClientOptions;
use tokio::time::Instant;
use user_proto::user::Request as UserRequest;
use user_proto::user::user_client::UserClient;

use crate::fixtures::Plan;
use crate::load::{Timing, closed_loop, micro_client_for};
use crate::proc::{Proc, free_port};
use crate::r2::{clock_tick, cpu_time};
use crate::servers::Flavor;

const USER: &str = "go.micro.srv.user";
/// Calls in flight while capacity is measured.
const CAPACITY_CONCURRENCY: usize = 32;
/// Offered load during the overload, in multiples of the capacity.
const OVERLOAD_FACTOR: f64 = 3.0;
/// How long the overload lasts (full mode).
const OVERLOAD: Duration = Duration::from_secs(30);
/// Calls the generator keeps outstanding at most: past that it is behind
/// (its own runtime is the queue) and a call due is skipped and counted, not
/// spawned. Without a bound a generator that falls behind on a busy machine
/// piles up hundreds of thousands of tasks, every call then outlives its
/// deadline, and the run measures the generator's collapse (it did: 0.02
/// of capacity answered, the server 0.13 cores busy).
const MAX_OUTSTANDING: usize = 4096;

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
    elapsed: Duration,
    /// CPU seconds per second: the generator (this process), the server.
    cpu: Option<(f64, f64)>,
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

/// Whether the handler answered: a user, or `NotFound` after the store
/// lookup (no user is registered: the call does the same work).
fn answered(result: &Result<tonic::Response<user_proto::user::Response>, tonic::Status>) -> bool {
    match result {
        Ok(_) => true,
        Err(status) => status.code() == tonic::Code::NotFound,
    }
}

/// Waits (30 s at most) for user-srv to answer.
async fn ready(client: &UserClient<micro_client::ServiceChannel>) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if answered(&client.clone().query_user_by_name(request()).await) {
            return;
        }
        assert!(Instant::now() < until, "user-srv did not answer in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call every `1/rate` for `length`, each in its own task.
async fn open_loop(
    client: &UserClient<micro_client::ServiceChannel>,
    rate: f64,
    length: Duration,
    server_pid: u32,
) -> OpenLoop {
    #[derive(Default)]
    struct Seen {
        ok: Vec<u64>,
        refused: Vec<u64>,
        failed: Vec<u64>,
        lag: Vec<u64>,
    }
    let tick = clock_tick();
    let server = server_pid.to_string();
    let cpu_before = cpu_time("self", tick).zip(cpu_time(&server, tick));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::new();
    let mut n: u32 = 0;
    let (mut sent_calls, mut skipped) = (0u32, 0u64);
    let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let due = start + period * n;
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        n += 1;
        if outstanding.load(std::sync::atomic::Ordering::Relaxed) >= MAX_OUTSTANDING {
            skipped += 1;
            continue;
        }
        sent_calls += 1;
        outstanding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outstanding = outstanding.clone();
        let mut client = client.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let late = sent.saturating_duration_since(due);
            let result = client.query_user_by_name(request()).await;
            outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let us = (sent.elapsed().as_micros() as u64).clamp(1, 60_000_000);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.lag
                .push((late.as_micros() as u64).clamp(1, 60_000_000));
            if answered(&result) {
                seen.ok.push(us);
            } else if result
                .as_ref()
                .is_err_and(|status| status.code() == tonic::Code::ResourceExhausted)
            {
                seen.refused.push(us);
            } else {
                seen.failed.push(us);
            }
        }));
    }
    let sent_for = start.elapsed();
    let cpu = cpu_before
        .zip(cpu_time("self", tick).zip(cpu_time(&server, tick)))
        .map(|((load0, server0), (load1, server1))| {
            let wall = sent_for.as_secs_f64();
            ((load1 - load0) / wall, (server1 - server0) / wall)
        });
    for task in tasks {
        let _ = task.await;
    }
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
        elapsed: length,
        cpu,
        limits: Vec::new(),
    }
}

/// One row per limit setting.
struct Row {
    limit: &'static str,
    capacity: f64,
    unloaded_p99: f64,
    run: OpenLoop,
}

async fn measure(
    addr: SocketAddr,
    admin: SocketAddr,
    server_pid: u32,
    overload: Duration,
    timing: Timing,
) -> (f64, f64, OpenLoop) {
    let client = micro_client_for(USER, &[addr], ClientOptions::default()).await;
    let user = UserClient::new(client.service(USER));
    ready(&user).await;
    let workers: Vec<_> = (0..CAPACITY_CONCURRENCY)
        .map(|_| {
            let user = user.clone();
            move || {
                let mut user = user.clone();
                async move { answered(&user.query_user_by_name(request()).await) }
            }
        })
        .collect();
    let capacity = closed_loop(workers, timing).await.rps();
    let quiet = open_loop(
        &user,
        (capacity / 10.0).max(10.0),
        timing.measure * 2,
        server_pid,
    )
    .await;
    let unloaded_p99 = ms(&quiet.ok, 0.99);
    let limits = sample_limit(admin, overload);
    let mut run = open_loop(&user, capacity * OVERLOAD_FACTOR, overload, server_pid).await;
    run.limits = limits.join().unwrap_or_default();
    (capacity, unloaded_p99, run)
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
        let data = std::env::temp_dir().join(format!(
            "micro-bench-overload-{}-{limit}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("data dir");
        let (proc, addr, admin) = user_srv(plan, limit, &data);
        let runtime = Flavor::Multi.runtime();
        let (capacity, unloaded_p99, run) =
            runtime.block_on(measure(addr, admin, proc.pid(), overload, timing));
        drop(runtime);
        drop(proc);
        let _ = std::fs::remove_dir_all(&data);
        rows.push(Row {
            limit,
            capacity,
            unloaded_p99,
            run,
        });
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Overload: user-srv `User.QueryUserByName` (SQLite, one core) at {OVERLOAD_FACTOR}× its capacity for {overload:?}, open loop, one node\n"
    );
    let _ = writeln!(
        out,
        "| `--server_max_concurrent` | capacity (calls/s, {CAPACITY_CONCURRENCY} in flight) | offered (sent/s) | goodput (answered/s) | goodput / capacity | p99 answered (ms) | unloaded p99 (ms) | p99 answered / unloaded | refused | refused p50 / p99 (ms) | failed (deadline) | not sent (generator behind) | send lag p50 / p99 (ms) | CPU generator / server (cores) | limit median / max |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for row in &rows {
        let r = &row.run;
        let goodput = r.ok.len() as f64 / r.elapsed.as_secs_f64();
        let refused = if r.refused.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2} / {:.2}", ms(&r.refused, 0.5), ms(&r.refused, 0.99))
        };
        let cpu = r.cpu.map_or("–".to_string(), |(load, server)| {
            format!("{load:.2} / {server:.2}")
        });
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
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2} | {:.1}× | {} | {} | {} | {} | {:.2} / {:.2} | {} | {} |",
            row.limit,
            row.capacity,
            r.sent_rate,
            goodput,
            goodput / row.capacity,
            ms(&r.ok, 0.99),
            row.unloaded_p99,
            ms(&r.ok, 0.99) / row.unloaded_p99.max(0.001),
            r.refused.len(),
            refused,
            r.failed.len(),
            r.skipped,
            ms(&r.lag, 0.5),
            ms(&r.lag, 0.99),
            cpu,
            limit,
        );
    }
    out.push('\n');
    out
}
