//! Every scenario the harness runs, in report order, and when each runs.
//!
//! The scenarios sit below this table: each imports what it shares with the
//! others from [`crate::fixtures`], none imports the table back.

use std::fmt::Write;
use std::time::Instant;

use crate::fixtures::Plan;
use crate::{
    discovery, events, gray, hotpaths, ops, overload, r2, recovery, scale, scenarios, soak, streams,
};

/// When a scenario runs.
#[derive(Clone, Copy, Debug)]
enum When {
    /// Unless `--only` names others: by default, or when `--only` names one
    /// of its names.
    ByDefault,
    /// Only when `--only` names it.
    ByName,
    /// In a full run without `--only`, or when `--only` names it (never by
    /// default in quick mode).
    FullRunOrByName,
}

/// One scenario: the names `--only` knows it by, when it runs, and what
/// writes its part of the report.
#[derive(Debug)]
struct Scenario {
    names: &'static [&'static str],
    runs: When,
    report: fn(&Plan) -> String,
}

impl Scenario {
    fn selected(&self, plan: &Plan) -> bool {
        match self.runs {
            When::ByDefault => self.names.iter().any(|name| plan.wants(name)),
            When::ByName => self.names.iter().any(|name| plan.names(name)),
            When::FullRunOrByName => {
                (!plan.quick && plan.runs_all()) || self.names.iter().any(|name| plan.names(name))
            }
        }
    }
}

/// The scenarios in the order the report lists them.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        names: &["r1"],
        runs: When::ByDefault,
        report: scenarios::r1,
    },
    Scenario {
        names: &["r2"],
        runs: When::ByDefault,
        report: r2::r2,
    },
    Scenario {
        names: &["r5"],
        runs: When::ByDefault,
        report: scenarios::r5,
    },
    Scenario {
        names: &["r3", "r9", "r4"],
        runs: When::ByDefault,
        report: scenarios::r3_r9,
    },
    // user-web against bare axum → tonic: in a full run, or when named.
    Scenario {
        names: &["r16"],
        runs: When::FullRunOrByName,
        report: scenarios::r16,
    },
    Scenario {
        names: &["r8"],
        runs: When::ByDefault,
        report: scenarios::r8,
    },
    Scenario {
        names: &["r10"],
        runs: When::ByDefault,
        report: gray::r10,
    },
    Scenario {
        names: &["r11"],
        runs: When::ByDefault,
        report: gray::r11,
    },
    Scenario {
        names: &["r12"],
        runs: When::ByDefault,
        report: gray::r12,
    },
    Scenario {
        names: &["r15"],
        runs: When::ByDefault,
        report: streams::r15,
    },
    // Events (nats-server, JetStream): in a full run, or when named.
    Scenario {
        names: &["r17"],
        runs: When::FullRunOrByName,
        report: events::r17,
    },
    // Telemetry overhead runs only when asked for by name (`--only ops`).
    Scenario {
        names: &["ops"],
        runs: When::ByName,
        report: ops::ops,
    },
    // Cost at scale runs only when asked for by name (`--only r13`).
    Scenario {
        names: &["r13"],
        runs: When::ByName,
        report: scale::r13,
    },
    // etcd recovery times restart etcd many times: only when named (`--only r14`).
    Scenario {
        names: &["r14"],
        runs: When::ByName,
        report: recovery::r14,
    },
    // Overload runs user-srv at 3× its capacity for 30 s: only when named
    // (`--only overload`).
    Scenario {
        names: &["overload"],
        runs: When::ByName,
        report: overload::overload,
    },
    // The soak lasts 30 minutes: only when named (`--only soak`).
    Scenario {
        names: &["soak"],
        runs: When::ByName,
        report: soak::soak,
    },
    Scenario {
        names: &["r6"],
        runs: When::ByDefault,
        report: discovery::r6,
    },
    Scenario {
        names: &["r7"],
        runs: When::ByDefault,
        report: discovery::r7,
    },
    // Hot paths have their own command; quick mode leaves them out unless
    // asked for by name.
    Scenario {
        names: &["hotpaths"],
        runs: When::FullRunOrByName,
        report: |plan| hotpaths::run(&plan.exe, &[], false),
    },
];

/// Runs every selected scenario; returns the markdown report.
pub fn run(plan: &Plan) -> String {
    let started = Instant::now();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Results ({} mode: {} interleaved rounds of {:?} warm-up + {:?} measured per peer and load)\n",
        if plan.quick { "quick" } else { "full" },
        plan.rounds,
        plan.timing.warmup,
        plan.timing.measure
    );
    for scenario in SCENARIOS {
        if scenario.selected(plan) {
            out.push_str(&(scenario.report)(plan));
        }
    }
    let _ = writeln!(out, "Total wall time: {:.0?}\n", started.elapsed());
    out
}
