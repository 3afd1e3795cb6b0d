//! The greeter-server binary as a user runs it: log lines in go-micro's shape,
//! SIGTERM → deregister and exit 0, bad flags → one line and exit 2.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_testing::process::{ChildGuard, OutputLines};

const BIN: &str = env!("CARGO_BIN_EXE_greeter-server");

/// Starts greeter-server (stopped by PID when the guard drops, also when the
/// test ends early) and reads its stderr.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (ChildGuard, OutputLines) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = ChildGuard::spawn(&mut command).expect("spawn greeter-server");
    let lines = OutputLines::read(child.stderr.take().expect("stderr"));
    (child, lines)
}

/// The next line containing `needle`, within 20 s.
fn wait_for_line(lines: &mut OutputLines, needle: &str) -> String {
    lines
        .wait_for_line(needle, Instant::now() + Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `2026-11-24 16:17:07 <message>`
fn assert_go_micro_shape(line: &str, message_start: &str) {
    let (stamp, message) = line.split_at(20.min(line.len()));
    let bytes = stamp.as_bytes();
    assert!(
        bytes.len() == 20
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b' '
            && bytes[13] == b':'
            && bytes[16] == b':'
            && bytes[19] == b' ',
        "no timestamp: {line:?}"
    );
    assert!(message.starts_with(message_start), "{line:?}");
}

#[test]
fn logs_like_go_micro_and_stops_cleanly_on_sigterm() {
    let (mut child, mut lines) = spawn(
        &["--registry", "memory", "--server_address", "127.0.0.1:0"],
        &[],
    );
    let starting = wait_for_line(&mut lines, "Starting [service]");
    assert_go_micro_shape(&starting, "Starting [service] go.micro.srv.greeter");
    let listening = wait_for_line(&mut lines, "Server [grpc] Listening on");
    assert_go_micro_shape(&listening, "Server [grpc] Listening on 127.0.0.1:");
    let registering = wait_for_line(&mut lines, "Registering node");
    assert_go_micro_shape(
        &registering,
        "Registry [memory] Registering node: go.micro.srv.greeter-",
    );

    child.terminate().expect("SIGTERM");
    wait_for_line(&mut lines, "Deregistering node");
    let exit = child.wait().expect("wait");
    assert_eq!(
        exit.code(),
        Some(0),
        "exit after SIGTERM; log: {:#?}",
        lines.log()
    );
}

#[test]
fn bad_flags_and_variables_are_one_line_and_exit_2() {
    for (args, env, wanted) in [
        (&["--registry=consul"][..], &[][..], "consul"),
        (&["--register_ttl=soon"], &[], "--register_ttl"),
        (&["--selector", "fastest"], &[], "fastest"),
        (&["--bogus"], &[], "--bogus"),
        (&[], &[("MICRO_REGISTER_TTL", "-3")], "-3"),
        (&[], &[("MICRO_REGISTRY", "zookeeper")], "zookeeper"),
        (
            &[
                "--registry=memory",
                "--register_ttl=10",
                "--register_interval=20",
            ],
            &[],
            "--register_interval",
        ),
    ] {
        let output = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?} {env:?}: {stderr}");
        assert!(lines[0].contains(wanted), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn environment_variables_configure_like_flags() {
    let (_child, mut lines) = spawn(
        &[],
        &[
            ("MICRO_REGISTRY", "memory"),
            ("MICRO_SERVER_ADDRESS", "127.0.0.1:0"),
            ("MICRO_SERVER_NAME", "go.micro.srv.renamed"),
        ],
    );
    let line = wait_for_line(&mut lines, "Registering node");
    assert!(
        line.contains("Registry [memory] Registering node: go.micro.srv.renamed-"),
        "{line}"
    );
}

#[test]
fn help_lists_the_shared_flags() {
    let output = Command::new(BIN).arg("--help").output().expect("run");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--registry",
        "--registry_address",
        "--server_address",
        "--server_advertise",
        "--register_ttl",
        "--register_interval",
        "--client_retries",
        "--client_request_timeout",
        "--selector",
        "MICRO_REGISTRY_ADDRESS",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
