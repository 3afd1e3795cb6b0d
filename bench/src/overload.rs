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
use crate::servers::Flavor;

const USER: &str = "go.micro.srv.user";
/// Calls in flight while capacity is measured.
const CAPACITY_CONCURRENCY: usize = 32;
/// Offered load during the overload, in multiples of the capacity.
const OVERLOAD_FACTOR: f64 = 3.0;
/// How long the overload lasts (full mode).
const OVERLOAD: Duration = Duration::from_secs(30);

/// What an open-loop run saw.
struct OpenLoop {
    /// Calls sent per second (what the generator managed).
    sent_rate: f64,
    ok: Histogram<u64>,
    refused: Histogram<u64>,
    /// Other failures (deadlines, attempt timeouts).
    failed: Histogram<u64>,
    elapsed: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(hist: &Histogram<u64>, q: f64) -> f64 {
    hist.value_at_quantile(q) as f64 / 1000.0
}

/// user-srv on a memory registry (the client is given its address), with
/// `--server_max_concurrent=limit`.
fn user_srv(plan: &Plan, limit: &str, data: &std::path::Path) -> (Proc, SocketAddr) {
    let port = free_port();
    let p = Proc::spawn(
        "user-srv",
        &plan.bin_dir.join("user-srv"),
        &[
            "--registry=memory".into(),
            format!("--server_address=127.0.0.1:{port}"),
            format!("--data_dir={}", data.display()),
            "--auth_secret=bench-secret".into(),
            format!("--server_max_concurrent={limit}"),
        ],
        &[("RUST_LOG", "warn".to_string())],
    );
    (p, format!("127.0.0.1:{port}").parse().expect("address"))
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
) -> OpenLoop {
    #[derive(Default)]
    struct Seen {
        ok: Vec<u64>,
        refused: Vec<u64>,
        failed: Vec<u64>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::new();
    let mut n: u32 = 0;
    loop {
        let due = start + period * n;
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        n += 1;
        let mut client = client.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = client.query_user_by_name(request()).await;
            let us = (sent.elapsed().as_micros() as u64).clamp(1, 60_000_000);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
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
        sent_rate: f64::from(n) / sent_for.as_secs_f64(),
        ok: fill(&seen.ok),
        refused: fill(&seen.refused),
        failed: fill(&seen.failed),
        elapsed: length,
    }
}

/// One row per limit setting.
struct Row {
    limit: &'static str,
    capacity: f64,
    unloaded_p99: f64,
    run: OpenLoop,
}

async fn measure(addr: SocketAddr, overload: Duration, timing: Timing) -> (f64, f64, OpenLoop) {
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
    let quiet = open_loop(&user, (capacity / 10.0).max(10.0), timing.measure * 2).await;
    let unloaded_p99 = ms(&quiet.ok, 0.99);
    let run = open_loop(&user, capacity * OVERLOAD_FACTOR, overload).await;
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
        let (proc, addr) = user_srv(plan, limit, &data);
        let runtime = Flavor::Multi.runtime();
        let (capacity, unloaded_p99, run) = runtime.block_on(measure(addr, overload, timing));
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
        "| `--server_max_concurrent` | capacity (calls/s, {CAPACITY_CONCURRENCY} in flight) | offered (sent/s) | goodput (answered/s) | goodput / capacity | p99 answered (ms) | unloaded p99 (ms) | p99 answered / unloaded | refused | refused p50 / p99 (ms) | failed (deadline) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let r = &row.run;
        let goodput = r.ok.len() as f64 / r.elapsed.as_secs_f64();
        let refused = if r.refused.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2} / {:.2}", ms(&r.refused, 0.5), ms(&r.refused, 0.99))
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2} | {:.1}× | {} | {} | {} |",
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
        );
    }
    out.push('\n');
    out
}
