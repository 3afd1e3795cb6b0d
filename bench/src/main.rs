//! Side-by-side benchmarks of the toolkit against what users would pick
//! instead (raw tonic, a minimal axum → tonic gateway, bare axum), in one run.
//!
//! ```sh
//! cargo build --release -p micro-bench -p user-service -p micro-cli
//! target/release/micro-bench --quick    # ≤ 2 minutes
//! target/release/micro-bench            # ≤ 10 minutes
//! ```
//!
//! The load generator (this process) runs on core 1; every server runs in a
//! child process started with `taskset -c 0` and is stopped by its PID
//! (R6/R7, which time registration, run theirs in-process, on threads pinned
//! to core 0).
//! Peers are measured in interleaved rounds (A, B, A, B, ...) and reported as
//! medians with min–max. Loopback only.

mod discovery;
mod load;
mod proc;
mod report;
mod scenarios;
mod servers;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "micro-bench",
    about = "Benchmarks the toolkit side by side with raw tonic and a minimal gateway"
)]
struct Args {
    /// Short rounds (≤ 2 minutes in all) instead of the full run (≤ 10 minutes).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (comma separated): r1, r5, r3, r8, r9, r6, r7. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where user-srv, user-api and micro are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
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
}

fn main() {
    let args = Args::parse();
    match args.command {
        Some(Command::Serve {
            kind,
            flavor,
            upstream,
        }) => {
            servers::serve(kind, flavor, upstream);
            return;
        }
        Some(Command::DiscoveryMdns { trials, budget_ms }) => {
            discovery::mdns_child(trials, std::time::Duration::from_millis(budget_ms));
            return;
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
    let exe = std::env::current_exe().expect("path of this binary");
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| exe.parent().expect("binary directory").to_path_buf());
    let plan = scenarios::Plan::new(args.quick, exe, bin_dir, &args.only);
    let report = scenarios::run(&plan);
    print!("{report}");
    if let Some(out) = args.out {
        std::fs::write(&out, &report)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }
}
