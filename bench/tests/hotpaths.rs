//! The callgrind harness counts what it claims to: instructions inside the
//! measured function, a stable positive number per operation.

use std::process::Command;

#[test]
fn hot_paths_are_counted_under_callgrind() {
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "valgrind is not installed: apt-get install valgrind (scripts/test does)"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_micro-bench"))
        .args(["hotpaths", "--workloads", "selector,resolver"])
        .output()
        .expect("micro-bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    for name in ["selector", "resolver"] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{report}"));
        let count: u64 = row
            .split('|')
            .nth(3)
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count in {row:?}"));
        // A select is a few dozen instructions, a resolve a few thousand
        // (more in a debug build):
        // zero would mean the measured function was inlined away, millions
        // that start-up was counted.
        assert!((1..1_000_000).contains(&count), "{row}");
    }
}
