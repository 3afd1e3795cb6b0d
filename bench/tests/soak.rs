//! The soak (`--only soak`) runs end to end in its tiny mode (30 s): real
//! etcd, user-srv, the real `micro api`, the client child's three loads, and
//! the sampling. Asserts that it completes, that every load ran, and that
//! the table has a row with figures for every series, not any figure itself
//! (the flatness verdict needs the long run).

use std::path::Path;
use std::process::Command;

#[test]
fn soak_runs_in_its_tiny_mode() {
    let exe = Path::new(env!("CARGO_BIN_EXE_micro-bench"));
    let bin_dir = exe.parent().expect("binary directory");
    for binary in ["micro", "user-srv"] {
        assert!(
            bin_dir.join(binary).exists(),
            "the soak starts the real {binary}: build it first (cargo build -p micro-cli -p user-srv; \
             cargo test --workspace does)"
        );
    }
    let output = Command::new(exe)
        .args(["--only", "soak"])
        .env("MICRO_BENCH_SOAK", "tiny")
        .output()
        .expect("micro-bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}\n{log}");
    assert!(report.contains("### Soak: "), "{report}\n{log}");
    // Every load ran: "N RPC calls (F failed), N gateway requests ..., N registry changes".
    let totals = report
        .split_once("Client: ")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no client totals:\n{report}"));
    for load in ["RPC calls", "gateway requests", "registry changes"] {
        let count: u64 = totals
            .split(&format!(" {load} "))
            .next()
            .and_then(|before| before.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of {load}:\n{report}"));
        assert!(count > 0, "no {load}:\n{report}");
    }
    for process in ["micro api", "user-srv", "client"] {
        for what in ["RSS", "fds", "threads"] {
            let row = format!("| {process} {what} | ");
            let line = report
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("no row {row:?}:\n{report}"));
            assert!(line.contains("/h |"), "no slope in {line:?}");
        }
    }
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("| etcd watchers | ") && l.contains("/h |")),
        "no etcd watchers row:\n{report}"
    );
}
