//! R13 (cost at scale) runs end to end at a tiny size: real etcd, the real
//! `micro api` binary, a client child, churn, routing trials, and the mDNS
//! part in a private network namespace. Asserts that it completes and
//! reports every part, not any figure.

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
    assert!(
        report.contains("### R13: cost at scale, etcd on loopback"),
        "{report}"
    );
    // One row: 5 services × 2 nodes.
    assert!(report.contains("| 5 × 2 (10) | "), "{report}");
    assert!(
        report.contains("### R13: cost at scale, mDNS in a private network namespace"),
        "{report}"
    );
}
