//! Side-by-side benchmarks of the toolkit against what users would pick
//! instead (raw tonic, grpc-go, grpc-gateway, a minimal axum → tonic gateway, bare axum), in
//! one run.
//!
//! ```sh
//! cargo build --release -p micro-bench -p user-srv -p user-api -p micro-cli
//! target/release/micro-bench --quick    # ≤ 2 minutes
//! target/release/micro-bench            # ~15 minutes
//! target/release/micro-bench --charts docs/benchmarks --out docs/results.md
//! ```
//!
//! The load generator (this process) runs on core 1; every server runs in a
//! child process started with `taskset -c 0` and is stopped by its PID.
//! Peers are measured in interleaved rounds (A, B, A, B, ...) and reported as
//! medians with min–max. Loopback only.

mod charts;
mod discovery;
mod events;
mod fixtures;
mod go;
mod gray;
mod grpc_gateway;
mod grpc_raw;
mod hotpaths;
mod load;
mod ops;
mod overload;
mod proc;
mod r2;
mod recovery;
mod registry;
mod report;
mod scale;
mod scenarios;
mod servers;
mod soak;
mod stats;
mod streams;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "micro-bench",
    about = "Benchmarks the toolkit side by side with raw tonic and a minimal gateway"
)]
struct Args {
    /// Short rounds (≤ 2 minutes in all) instead of the full run (~15 minutes).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (comma separated): r1, r2, r5, r3, r4, r8, r9, r6, r7,
    /// r10, r11, r12, r15, r16 (user-web; full runs only unless named), r17 (events; full runs only unless named), hotpaths; ops (telemetry overhead), r13 (cost at
    /// scale), r14 (etcd registry recovery), overload (admission control) and soak (a long run) only when named.
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Minutes of the soak (`--only soak`; default 30, or MICRO_BENCH_SOAK_MINUTES).
    #[arg(long = "soak_minutes", value_name = "MINUTES")]
    soak_minutes: Option<f64>,
    /// Where user-srv, user-api and micro are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also draw PNG charts (throughput, latency percentiles) of each table
    /// into this directory; the report links them relative to its own
    /// directory (that of --out, else the current one). Default: no charts.
    #[arg(long, value_name = "DIR")]
    charts: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Internal: run one server under test (started by the benchmark itself).
    #[command(hide = true)]
    Serve {
        #[arg(long, value_enum)]
        kind: servers::ServerKind,
        #[arg(long, value_enum, default_value = "multi")]
        flavor: servers::Flavor,
        #[arg(long)]
        upstream: Option<SocketAddr>,
        /// Added latency per call (micro kind only).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Percent of calls answered Unavailable (micro kind only).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        unavailable_percent: u8,
    },
    /// Instruction counts of the hot paths under callgrind, compared with
    /// the committed baseline (bench/hotpaths.baseline).
    Hotpaths {
        /// Write the new counts to the baseline.
        #[arg(long)]
        save: bool,
        /// Only these workloads (comma separated). Default: all.
        #[arg(long, value_enum, value_delimiter = ',')]
        workloads: Vec<hotpaths::Workload>,
    },
    /// Internal: R7's mDNS trials, run by the benchmark in a private network
    /// namespace (refuses to run where it sees more than loopback).
    #[command(hide = true)]
    DiscoveryMdns {
        #[arg(long)]
        trials: usize,
        #[arg(long)]
        budget_ms: u64,
    },
    /// Internal: R13's fresh client (resolves the greeter, calls it once,
    /// prints `R13-CLIENT READY`, then follows the registry until stopped).
    #[command(hide = true)]
    ScaleClient {
        #[arg(long, default_value = "etcd")]
        registry: String,
        #[arg(long = "registry_address")]
        registry_address: Option<String>,
    },
    /// Internal: R13's floor on etcd, a bare etcd-client watch of the
    /// registry's prefix that only counts events (prints `R13-FLOOR READY`).
    #[command(hide = true)]
    ScaleFloor {
        #[arg(long = "registry_address")]
        registry_address: String,
    },
    /// Internal: R13 on mDNS, run by the benchmark in a private network
    /// namespace (refuses to run where it sees more than loopback).
    #[command(hide = true)]
    ScaleMdns {
        #[arg(long)]
        bin_dir: PathBuf,
    },
    /// Internal: R17's idle micro server (a broker, one subscription with
    /// --subscribe), `READY <address>`, until stdin closes.
    #[command(hide = true)]
    EventsIdle {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        subscribe: bool,
        /// Publish one message first (connects the broker).
        #[arg(long)]
        publish: bool,
    },
    /// Internal: the soak's load (RPC calls, gateway requests, registration
    /// churn) until stdin closes or SIGTERM; prints its totals.
    #[command(hide = true)]
    SoakClient {
        #[arg(long = "registry_address")]
        registry_address: String,
        #[arg(long)]
        gateway: String,
    },
    /// Internal: one hot-path workload (run under callgrind by `hotpaths`).
    #[command(hide = true)]
    Hotpath {
        #[arg(long, value_enum)]
        workload: hotpaths::Workload,
        #[arg(long)]
        ops: u64,
        #[arg(long)]
        server: Option<SocketAddr>,
    },
}

/// Every process of the benchmark (load generator, servers, hot-path
/// children) sets a global `tracing` subscriber, as the toolkit's binaries
/// do. Without one, a dependency's `tracing/log` feature (sqlx enables it)
/// turns every span entry and exit in h2 and hyper into a `log` call: about
/// 2.5 % of a server's CPU at c10×m10 that no real service pays.
fn logs_as_services_do() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() {
    let args = Args::parse();
    logs_as_services_do();
    let exe = std::env::current_exe().expect("path of this binary");
    match args.command {
        Some(Command::Serve {
            kind,
            flavor,
            upstream,
            delay_ms,
            unavailable_percent,
        }) => {
            let gray = servers::Gray {
                delay: std::time::Duration::from_millis(delay_ms),
                unavailable_percent,
            };
            return servers::serve(kind, flavor, upstream, gray);
        }
        Some(Command::Hotpath {
            workload,
            ops,
            server,
        }) => return hotpaths::run_workload(workload, ops, server),
        Some(Command::DiscoveryMdns { trials, budget_ms }) => {
            return discovery::mdns_child(trials, std::time::Duration::from_millis(budget_ms));
        }
        Some(Command::ScaleClient {
            registry,
            registry_address,
        }) => return scale::client_child(&registry, registry_address.as_deref()),
        Some(Command::EventsIdle {
            broker,
            address,
            subscribe,
            publish,
        }) => return events::idle_child(&broker, &address, subscribe, publish),
        Some(Command::ScaleMdns { bin_dir }) => return scale::mdns_child(args.quick, &bin_dir),
        Some(Command::ScaleFloor { registry_address }) => {
            return scale::floor_child(&registry_address);
        }
        Some(Command::SoakClient {
            registry_address,
            gateway,
        }) => return soak::client_child(&registry_address, &gateway),
        Some(Command::Hotpaths { save, workloads }) => {
            let report = hotpaths::run(&exe, &workloads, save);
            print!("{report}");
            return write_report(args.out.as_deref(), &report);
        }
        None => {}
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    assert!(
        cores.len() >= 2,
        "the benchmark needs 2 cores (servers on core {}, load on core {})",
        proc::SERVER_CORE,
        proc::LOAD_CORE
    );
    assert!(
        core_affinity::set_for_current(core_affinity::CoreId {
            id: proc::LOAD_CORE
        }),
        "cannot pin the load generator to core {}",
        proc::LOAD_CORE
    );
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| exe.parent().expect("binary directory").to_path_buf());
    if let Some(dir) = &args.charts {
        let report_dir = args
            .out
            .as_deref()
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Err(e) = charts::enable(dir, report_dir, Path::new(charts::FONT)) {
            eprintln!("charts: {e}; no charts in this run");
        }
    }
    let mut plan = fixtures::Plan::new(args.quick, exe, bin_dir, &args.only);
    plan.soak_minutes = args.soak_minutes;
    let report = registry::run(&plan);
    print!("{report}");
    write_report(args.out.as_deref(), &report);
}

fn write_report(out: Option<&Path>, report: &str) {
    if let Some(out) = out {
        std::fs::write(out, report)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }
}
