//! R13 (cost at scale) runs end to end at a tiny size: real etcd, the real
//! `micro api` binary, a client child, churn, routing trials, and the mDNS
//! part in a private network namespace. Asserts that it completes and
//! reports a row for every part (etcd and mDNS, neither skipped), not any
//! figure.

use std::path::Path;
use std::process::Command;

#[test]
fn r13_runs_at_a_tiny_size() {
    let exe = Path::new(env!("CARGO_BIN_EXE_micro-bench"));
    let bin_dir = exe.parent().expect("binary directory");
    assert!(
        bin_dir.join("micro").exists(),
        "R13 starts the real gateway: build it first (cargo build -p micro-cli; \
         cargo test --workspace does)"
    );
    let output = Command::new(exe)
        .args(["--quick", "--only", "r13"])
        .env("MICRO_BENCH_R13", "tiny")
        .output()
        .expect("micro-bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}\n{log}");
    // Each part has its own section with its own row (5 services × 2
    // nodes): the mDNS heading alone is printed even when that part was
    // skipped, and a row found anywhere could be the etcd table's.
    for part in ["etcd on loopback", "mDNS in a private network namespace"] {
        let section = section(&report, &format!("### R13: cost at scale, {part}"));
        assert!(!section.contains("Skipped"), "{part}:\n{section}\n{log}");
        assert!(
            section.contains("| 5 × 2 (10) | "),
            "{part}: no row\n{section}\n{log}"
        );
    }
}

/// The text from `heading` to the next `### ` heading (or the end).
fn section<'a>(report: &'a str, heading: &str) -> &'a str {
    let start = report
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{report}"));
    let body = &report[start + heading.len()..];
    let end = body.find("\n### ").unwrap_or(body.len());
    &body[..end]
}
