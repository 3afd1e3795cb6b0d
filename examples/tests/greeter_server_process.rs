//! The greeter-server binary as a user runs it: log lines in go-micro's shape,
//! SIGTERM → deregister and exit 0, bad flags → one line and exit 2.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_greeter-server");

/// Kills the child by PID if the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Guard, mpsc::Receiver<String>) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn greeter-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Guard(child), rx)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(e) => panic!("no line containing {needle:?} ({e}); saw {seen:#?}"),
        }
    }
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
    let (mut child, rx) = spawn(
        &["--registry", "memory", "--server_address", "127.0.0.1:0"],
        &[],
    );
    let mut seen = Vec::new();
    let starting = wait_for_line(&rx, "Starting [service]", &mut seen);
    assert_go_micro_shape(&starting, "Starting [service] go.micro.srv.greeter");
    let listening = wait_for_line(&rx, "Server [grpc] Listening on", &mut seen);
    assert_go_micro_shape(&listening, "Server [grpc] Listening on 127.0.0.1:");
    let registering = wait_for_line(&rx, "Registering node", &mut seen);
    assert_go_micro_shape(
        &registering,
        "Registry [memory] Registering node: go.micro.srv.greeter-",
    );

    let pid = child.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for_line(&rx, "Deregistering node", &mut seen);
    let exit = child.0.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM; log: {seen:#?}");
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
    let (_child, rx) = spawn(
        &[],
        &[
            ("MICRO_REGISTRY", "memory"),
            ("MICRO_SERVER_ADDRESS", "127.0.0.1:0"),
            ("MICRO_SERVER_NAME", "go.micro.srv.renamed"),
        ],
    );
    let mut seen = Vec::new();
    let line = wait_for_line(&rx, "Registering node", &mut seen);
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
