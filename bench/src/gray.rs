//! R10–R12: gray failures. One of three toolkit servers is slow (R10),
//! frozen (R11, SIGSTOP) or flaky (R12, `Unavailable` to 30 % of calls);
//! one toolkit client drives 10 calls in flight. Selectors side by side, in
//! interleaved rounds; every server is a child process on the server core.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro_client::ClientOptions;
use micro_selector::Strategy;
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;
use tokio::time::Instant;

use crate::fixtures::Plan;
use crate::load::{GREETER, Round, Timing, closed_loop, micro_client_with};
use crate::proc::Proc;
use crate::servers::Flavor;
use crate::stats::Spread;

/// Calls in flight.
const CONCURRENCY: usize = 10;

/// A toolkit greeter child, slow by `delay_ms` or flaky by `percent`.
fn server(plan: &Plan, delay_ms: u64, percent: u8) -> (Proc, SocketAddr) {
    let args = vec![
        "serve".to_string(),
        "--kind".into(),
        "micro".into(),
        "--delay-ms".into(),
        delay_ms.to_string(),
        "--unavailable-percent".into(),
        percent.to_string(),
    ];
    let mut p = Proc::spawn("micro-gray", &plan.exe, &args, &[]);
    let (addr, _) = p.wait_ready();
    (p, addr)
}

fn options(selector: Strategy) -> ClientOptions {
    ClientOptions {
        selector,
        ..ClientOptions::default()
    }
}

/// Closed-loop load over `addrs`; returns the round, the calls made (warm-up
/// included), the attempts the client sent (same span), the watcher's note
/// and the attempts per node address (same span).
async fn run(
    addrs: &[SocketAddr],
    options: ClientOptions,
    idempotent: bool,
    timing: Timing,
    during: impl FnOnce(Arc<micro_client::NodeSet>) -> tokio::task::JoinHandle<String>,
) -> (Round, u64, u64, String, Vec<(String, u64)>) {
    let client = micro_client_with(addrs, options).await;
    assert_eq!(client.nodes(GREETER).await.len(), addrs.len());
    let mut channel = client.service(GREETER);
    if idempotent {
        channel = channel.idempotent();
    }
    let set = channel.node_set().clone();
    let greeter = GreeterClient::new(channel);
    let calls = Arc::new(AtomicU64::new(0));
    let attempts_before: u64 = set.stats().iter().map(|s| s.attempts).sum();
    let watcher = during(set.clone());
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let greeter = greeter.clone();
            let calls = calls.clone();
            move || {
                let mut greeter = greeter.clone();
                calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    greeter
                        .hello(Request {
                            name: "huohuo".into(),
                            ..Default::default()
                        })
                        .await
                        .is_ok()
                }
            }
        })
        .collect();
    let round = closed_loop(workers, timing).await;
    let note = watcher.await.unwrap_or_default();
    let per_node: Vec<(String, u64)> = set
        .stats()
        .into_iter()
        .map(|s| (s.node.address, s.attempts))
        .collect();
    let attempts: u64 = per_node.iter().map(|(_, n)| n).sum::<u64>() - attempts_before;
    (
        round,
        calls.load(Ordering::Relaxed),
        attempts,
        note,
        per_node,
    )
}

fn nothing(_: Arc<micro_client::NodeSet>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async { String::new() })
}

/// R10: one of three nodes answers 20 ms late. p50/p99 with round robin and
/// p2c, against a fleet of only the two healthy nodes.
pub fn r10(plan: &Plan) -> String {
    eprintln!("R10");
    let fleets: [(&str, Option<Strategy>, bool); 4] = [
        (
            "roundrobin, 3 nodes (1 slow)",
            Some(Strategy::RoundRobin),
            true,
        ),
        ("random, 3 nodes (1 slow)", Some(Strategy::Random), true),
        ("p2c, 3 nodes (1 slow)", Some(Strategy::P2c), true),
        ("2 healthy nodes only (p2c)", Some(Strategy::P2c), false),
    ];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); fleets.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); fleets.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); fleets.len()];
    let mut slow_share: Vec<Vec<f64>> = vec![Vec::new(); fleets.len()];
    let healthy: Vec<(Proc, SocketAddr)> = (0..2).map(|_| server(plan, 0, 0)).collect();
    let slow = server(plan, 20, 0);
    for round in 0..plan.rounds {
        for (i, (label, selector, with_slow)) in fleets.iter().enumerate() {
            let mut addrs: Vec<SocketAddr> = healthy.iter().map(|(_, a)| *a).collect();
            if *with_slow {
                addrs.push(slow.1);
            }
            let options = options(selector.unwrap_or(Strategy::P2c));
            let runtime = Flavor::Multi.runtime();
            let (r, _, attempts, _, per_node) =
                runtime.block_on(run(&addrs, options, false, plan.timing, nothing));
            drop(runtime);
            let on_slow = per_node
                .iter()
                .filter(|(address, _)| *with_slow && *address == slow.1.to_string())
                .map(|(_, n)| *n)
                .sum::<u64>();
            let share = 100.0 * on_slow as f64 / attempts.max(1) as f64;
            eprintln!(
                "  round {} {label}: {:.0} calls/s p50 {:.2} ms p99 {:.2} ms errors {} on the slow node {share:.2} %",
                round + 1,
                r.rps(),
                r.ms(0.5),
                r.ms(0.99),
                r.errors
            );
            slow_share[i].push(share);
            p50[i].push(r.ms(0.5));
            p99[i].push(r.ms(0.99));
            rps[i].push(r.rps());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### R10: a slow node (+20 ms on one of three toolkit servers; one toolkit client, {CONCURRENCY} calls in flight; \
         {} rounds of {:?})\n",
        plan.rounds, plan.timing.measure
    );
    let _ = writeln!(
        out,
        "| fleet and selector | calls/s | p50 ms | p99 ms | attempts on the slow node (warm-up included) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    let mut medians = Vec::new();
    for (i, (label, _, with_slow)) in fleets.iter().enumerate() {
        let r = Spread::of(rps[i].clone());
        let a = Spread::of(p50[i].clone());
        let b = Spread::of(p99[i].clone());
        let s = Spread::of(slow_share[i].clone());
        medians.push(b.median);
        let share = if *with_slow {
            format!("{:.2} % ({:.2}–{:.2})", s.median, s.min, s.max)
        } else {
            "—".to_string()
        };
        let _ = writeln!(
            out,
            "| {label} | {:.0} ({:.0}–{:.0}) | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | {share} |",
            r.median, r.min, r.max, a.median, a.min, a.max, b.median, b.min, b.max
        );
    }
    let _ = writeln!(
        out,
        "\np99 against the healthy-only fleet: roundrobin {:.2}×, random {:.2}×, p2c {:.2}× (goal: p2c ≤ 1.2×).\n",
        medians[0] / medians[3],
        medians[1] / medians[3],
        medians[2] / medians[3]
    );
    out
}

/// R11: one of three nodes is frozen (SIGSTOP) for 10 s under load.
pub fn r11(plan: &Plan) -> String {
    eprintln!("R11");
    const FROZEN: Duration = Duration::from_secs(10);
    let stop_at = Duration::from_secs(2);
    let timing = Timing {
        warmup: plan.timing.warmup,
        measure: stop_at + FROZEN + Duration::from_secs(2),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### R11: a frozen node (SIGSTOP of one of three toolkit servers for {FROZEN:?}, {stop_at:?} into a {:?} window; \
         one toolkit client, {CONCURRENCY} calls in flight, default options: attempt timeout {:?}, 1 retry)\n",
        timing.measure,
        ClientOptions::ATTEMPT_TIMEOUT
    );
    let _ = writeln!(
        out,
        "| round | selector | calls | ok | failed | p99 ms (ok calls) | max ms | attempts on the frozen node while frozen | last of them after the stop (ms) |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let rounds = if plan.quick { 1 } else { 3 };
    let mut summary: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for round in 0..rounds {
        for selector in [Strategy::P2c, Strategy::RoundRobin] {
            for idempotent in [true, false] {
                let mut servers: Vec<(Proc, SocketAddr)> =
                    (0..3).map(|_| server(plan, 0, 0)).collect();
                let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
                let (victim, victim_addr) = servers.remove(0);
                let pid = victim.pid();
                let freeze = {
                    let victim_addr = victim_addr.to_string();
                    let warmup = timing.warmup;
                    move |set: Arc<micro_client::NodeSet>| {
                        tokio::spawn(async move {
                            let on_victim = |set: &micro_client::NodeSet| {
                                set.stats()
                                    .into_iter()
                                    .find(|s| s.node.address == victim_addr)
                                    .map_or(0, |s| s.attempts)
                            };
                            tokio::time::sleep(warmup + stop_at).await;
                            let base = on_victim(&set);
                            crate::proc::signal(pid, "STOP");
                            let stopped = Instant::now();
                            let mut seen = base;
                            let mut last = None;
                            while stopped.elapsed() < FROZEN {
                                let now = on_victim(&set);
                                if now > seen {
                                    seen = now;
                                    last = Some(stopped.elapsed());
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            crate::proc::signal(pid, "CONT");
                            format!(
                                "{} {:.0}",
                                seen - base,
                                last.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
                            )
                        })
                    }
                };
                let runtime = Flavor::Multi.runtime();
                let (r, calls, _, note, _) =
                    runtime.block_on(run(&addrs, options(selector), idempotent, timing, freeze));
                drop(runtime);
                victim.signal("CONT");
                drop(servers);
                let kind = if idempotent { "idempotent" } else { "plain" };
                let label = format!("{} {kind}", selector.as_str());
                let mut parts = note.split_whitespace();
                let after = parts.next().unwrap_or("?").to_string();
                let last = parts.next().unwrap_or("?").to_string();
                let max_ms = r.hist.max() as f64 / 1000.0;
                eprintln!(
                    "  round {} {label}: ok {} failed {} p99 {:.1} ms max {max_ms:.0} ms, {after} attempts on the frozen node, last {last} ms after the stop",
                    round + 1,
                    r.ok,
                    r.errors,
                    r.ms(0.99)
                );
                let _ = writeln!(
                    out,
                    "| {} | {label} | {calls} | {} | {} | {:.1} | {max_ms:.0} | {after} | {last} |",
                    round + 1,
                    r.ok,
                    r.errors,
                    r.ms(0.99)
                );
                match summary.iter_mut().find(|(l, _, _)| *l == label) {
                    Some((_, failed, p99)) => {
                        failed.push(r.errors as f64);
                        p99.push(r.ms(0.99));
                    }
                    None => summary.push((label, vec![r.errors as f64], vec![r.ms(0.99)])),
                }
            }
        }
    }
    out.push('\n');
    for (label, failed, p99) in summary {
        let f = Spread::of(failed);
        let p = Spread::of(p99);
        let _ = writeln!(
            out,
            "- {label}: median failed {:.0} ({:.0}–{:.0}); p99 {:.1} ms ({:.1}–{:.1}).",
            f.median, f.min, f.max, p.median, p.min, p.max
        );
    }
    out.push_str(
        "\nGoals: 0 failed idempotent calls, p99 < 1 s. Plain calls that were in flight on the frozen node \
         fail after the attempt timeout (the node may have started them).\n\n",
    );
    out
}

/// R12: one of three nodes answers `Unavailable` to 30 % of calls.
pub fn r12(plan: &Plan) -> String {
    eprintln!("R12");
    let timing = Timing {
        warmup: plan.timing.warmup,
        measure: plan.timing.measure * 2,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### R12: a flaky node (one of three toolkit servers answers Unavailable to 30 % of calls; one toolkit client, \
         {CONCURRENCY} idempotent calls in flight; {:?} measured)\n",
        timing.measure
    );
    let _ = writeln!(
        out,
        "| round | selector | calls ok | calls failed | success % | retries per call % |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    let mut healthy: Vec<(Proc, SocketAddr)> = (0..2).map(|_| server(plan, 0, 0)).collect();
    healthy.push(server(plan, 0, 30));
    let addrs: Vec<SocketAddr> = healthy.iter().map(|(_, a)| *a).collect();
    let mut summary: Vec<(Strategy, Vec<f64>, Vec<f64>)> = vec![
        (Strategy::RoundRobin, Vec::new(), Vec::new()),
        (Strategy::P2c, Vec::new(), Vec::new()),
    ];
    for round in 0..plan.rounds {
        for (selector, success, retries) in summary.iter_mut() {
            let runtime = Flavor::Multi.runtime();
            let (r, calls, attempts, _, _) =
                runtime.block_on(run(&addrs, options(*selector), true, timing, nothing));
            drop(runtime);
            let ok_pct = 100.0 * r.ok as f64 / (r.ok + r.errors).max(1) as f64;
            let retry_pct = 100.0 * attempts.saturating_sub(calls) as f64 / calls.max(1) as f64;
            eprintln!(
                "  round {} {}: ok {} failed {} ({ok_pct:.3} %), retries {retry_pct:.1} % of calls",
                round + 1,
                selector.as_str(),
                r.ok,
                r.errors
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {ok_pct:.3} | {retry_pct:.1} |",
                round + 1,
                selector.as_str(),
                r.ok,
                r.errors
            );
            success.push(ok_pct);
            retries.push(retry_pct);
        }
    }
    out.push('\n');
    for (selector, success, retries) in summary {
        let s = Spread::of(success);
        let r = Spread::of(retries);
        let _ = writeln!(
            out,
            "- {}: success {:.3} % ({:.3}–{:.3}); retries {:.1} % of calls ({:.1}–{:.1}).",
            selector.as_str(),
            s.median,
            s.min,
            s.max,
            r.median,
            r.min,
            r.max
        );
    }
    out.push_str("\nGoals: success ≥ 99.9 %, retries ≤ 20 % of calls.\n\n");
    out
}
