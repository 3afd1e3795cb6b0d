//! The scripts the README shows, run as a user runs them: `--help` has no
//! side effects, `scripts/demo --netns` answers the README's curl examples in
//! its own namespace, and `scripts/etcd-cluster` stops and starts one member
//! while the others keep serving (in a private namespace, so its fixed ports
//! collide with nothing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(name: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(repo().join("scripts").join(name))
        .current_dir(repo())
        .stdin(Stdio::null());
    command
}

/// Runs `command`, killing it (by PID) if it outlives `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{command:?} did not finish within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_script_answers_help_without_side_effects() {
    let scratch = tempfile::tempdir().expect("tmp");
    for (name, wanted) in [
        ("demo", "--netns"),
        ("etcd-cluster", "stop N"),
        ("test", "--packages"),
    ] {
        for flag in ["--help", "-h"] {
            let mut command = script(name);
            // A cluster started by mistake would leave its state here.
            command
                .arg(flag)
                .env("ETCD_CLUSTER_DIR", scratch.path().join("cluster"))
                .env("ETCD_BIN", "/nonexistent/etcd");
            let output = run_bounded(command, Duration::from_secs(10));
            let help = text(&output);
            assert_eq!(output.status.code(), Some(0), "{name} {flag}: {help}");
            assert!(help.contains(wanted), "{name} {flag}: {help}");
            assert!(
                !help.contains("set -euo") && !help.contains("cargo build"),
                "{name} {flag} printed more than its help: {help}"
            );
        }
    }
    assert!(
        !scratch.path().join("cluster").exists(),
        "etcd-cluster --help created its state"
    );
    let mut unknown = script("demo");
    unknown.arg("--bogus");
    let output = run_bounded(unknown, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let mut unknown = script("etcd-cluster");
    unknown.args(["stop", "4"]);
    let output = run_bounded(unknown, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}

#[test]
fn the_test_command_lists_its_packages() {
    let mut command = script("test");
    command.arg("--packages");
    let output = run_bounded(command, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(0));
    let packages = String::from_utf8_lossy(&output.stdout);
    for needed in [
        "etcd-server",
        "postgresql",
        "dnsutils",
        "protobuf-compiler",
        "valgrind",
        "golang-go",
        "chromium",
        "chromium-driver",
    ] {
        assert!(
            packages.lines().any(|l| l == needed),
            "{needed} missing:\n{packages}"
        );
    }
}

/// The demo as the README shows it, from one terminal: in a private network
/// namespace, the three curl examples answer as documented.
#[test]
fn demo_in_a_namespace_answers_the_readme_examples() {
    let bin = topology_tests::binary("micro");
    let bin_dir = bin.parent().expect("target dir");
    let mut command = script("demo");
    command
        .args(["--netns", "--instances", "2", "--bin"])
        .arg(bin_dir)
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_REGISTRY_ADDRESS");
    let output = run_bounded(command, Duration::from_secs(120));
    let log = text(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(
        log.contains(r#"{"id":"1","username":"huohuo"}"#),
        "no registered user:\n{log}"
    );
    assert_eq!(
        log.matches(r#"{"id":"1","username":"huohuo"}"#).count(),
        2,
        "register and hello both answer the user:\n{log}"
    );
    assert!(
        log.contains(r#""code":400,"detail":"Name cannot be blank""#),
        "{log}"
    );
    assert!(log.contains("Deregistering node"), "{log}");
    assert!(log.contains("demo: stopped"), "{log}");
}

/// One member down: the cluster keeps serving through the others, and the
/// member rejoins with its data.
#[test]
fn etcd_cluster_stops_and_starts_one_member() {
    let state = tempfile::tempdir().expect("tmp");
    let steps = r#"
set -eu
trap 'scripts/etcd-cluster down >/dev/null 2>&1 || true' EXIT
scripts/etcd-cluster up
scripts/etcd-cluster status
scripts/etcd-cluster stop 2
echo "--- after stop 2"
scripts/etcd-cluster status
ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=2s --command-timeout=5s put written-while-down yes
scripts/etcd-cluster start 2
echo "--- after start 2"
scripts/etcd-cluster status
ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:3379 --dial-timeout=2s --command-timeout=5s get written-while-down --print-value-only
"#;
    let mut command = micro_registry_mdns::testing::netns_command("bash");
    command
        .args(["-c", steps])
        .current_dir(repo())
        .env("ETCD_CLUSTER_DIR", state.path().join("cluster"))
        .stdin(Stdio::null());
    let output = run_bounded(command, Duration::from_secs(120));
    let log = text(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    let (before, after) = log.split_once("--- after stop 2").expect("steps ran");
    assert_eq!(before.matches(", healthy").count(), 3, "{log}");
    let (down, restarted) = after.split_once("--- after start 2").expect("start ran");
    assert!(
        down.contains("member 2 etcd02 127.0.0.1:3379: stopped"),
        "{log}"
    );
    assert_eq!(down.matches(", healthy").count(), 2, "{log}");
    assert_eq!(restarted.matches(", healthy").count(), 3, "{log}");
    // Written through member 1 while 2 was down, read from 2 after it rejoined.
    assert!(restarted.trim_end().ends_with("yes"), "{log}");
    assert!(
        !state.path().join("cluster").exists(),
        "down removes the state"
    );
}
