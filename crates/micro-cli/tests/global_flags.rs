//! The shared flags (`--registry`, `--registry_address`, `--admin_address`,
//! `--log_format`, ...) of the real `micro` binary, given after the command:
//! `micro api --registry=etcd` is what people type. Only loopback is used:
//! etcd is "reached" at a closed loopback port, `micro api` runs on the
//! memory registry and is stopped by its PID.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use micro_testing::http::get as http_get;
use micro_testing::process::{ChildGuard, OutputLines};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");

/// The `MICRO_*` variables a test sets itself; removed from every run so
/// the caller's environment cannot decide the outcome.
const SHARED_ENV: [&str; 8] = [
    "MICRO_REGISTRY",
    "MICRO_REGISTRY_ADDRESS",
    "MICRO_REGISTRY_TIMEOUT",
    "MICRO_ADMIN_ADDRESS",
    "MICRO_LOG_FORMAT",
    "MICRO_CLIENT_TLS_CA",
    "MICRO_CLIENT_TLS_CERT_FILE",
    "MICRO_CLIENT_TLS_KEY_FILE",
];

fn micro_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(MICRO);
    command.args(args).stdin(Stdio::null());
    for name in SHARED_ENV {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run micro")
}

fn micro(args: &[&str]) -> Output {
    micro_with_env(args, &[])
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback address nothing listens on: bound, then released.
fn closed_loopback_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    address.to_string()
}

/// The failure of a command that went to etcd at `address`: exit 1, the
/// registry's own error, not clap's.
fn assert_reached_etcd(args: &[&str], output: &Output, address: &str) {
    let err = stderr(output);
    assert!(
        !err.contains("unexpected argument"),
        "{args:?}: a shared flag was refused:\n{err}"
    );
    assert_eq!(output.status.code(), Some(1), "{args:?}:\n{err}");
    assert!(
        err.contains("Registry [etcd]")
            && err.contains(&format!("could not reach etcd at http://{address}")),
        "{args:?}: not an error about reaching etcd at {address}:\n{err}"
    );
}

#[test]
fn shared_flags_after_the_command_reach_the_registry() {
    let etcd = closed_loopback_address();
    let shared = [
        "--registry=etcd",
        "--registry_address",
        etcd.as_str(),
        "--registry_timeout=1s",
    ];
    for command in [
        &["list", "services"][..],
        &["get", "service", "go.micro.srv.nobody"],
        &["health", "go.micro.srv.nobody"],
        &["call", "go.micro.srv.nobody", "Greeter.Hello", "{}"],
    ] {
        let args: Vec<&str> = command.iter().chain(shared.iter()).copied().collect();
        assert_reached_etcd(&args, &micro(&args), &etcd);
    }
    // Some before, some between `list` and `services`, some after.
    let args = [
        "--registry=etcd",
        "list",
        "--registry_timeout=1s",
        "services",
        "--registry-address",
        etcd.as_str(),
    ];
    assert_reached_etcd(&args, &micro(&args), &etcd);
}

#[test]
fn environment_variables_still_set_the_shared_flags() {
    let etcd = closed_loopback_address();
    let env = [
        ("MICRO_REGISTRY", "etcd"),
        ("MICRO_REGISTRY_ADDRESS", etcd.as_str()),
        ("MICRO_REGISTRY_TIMEOUT", "1s"),
    ];
    let args = ["list", "services"];
    assert_reached_etcd(&args, &micro_with_env(&args, &env), &etcd);

    // A flag beats its variable, before the command or after it: the
    // memory registry is empty and answers at once.
    for args in [
        &["list", "services", "--registry=memory"][..],
        &["--registry=memory", "list", "services"],
    ] {
        let output = micro_with_env(args, &env);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

/// A TLS certificate from its variable and its key after the command make
/// a pair: `micro call` goes on to read the files (none exist: exit 2 naming
/// the CA file). Without the key it stops at the flags.
#[test]
fn a_tls_pair_may_be_half_variable_half_flag_after_the_command() {
    let env = [
        ("MICRO_CLIENT_TLS_CA", "/nonexistent/ca.pem"),
        ("MICRO_CLIENT_TLS_CERT_FILE", "/nonexistent/c.pem"),
    ];
    let call = ["call", "a.b", "C.D", "--address", "127.0.0.1:1"];
    let args: Vec<&str> = call
        .iter()
        .copied()
        .chain(["--client_tls_key_file=/nonexistent/k.pem"])
        .collect();
    let output = micro_with_env(&args, &env);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("micro: --client_tls_*: ") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );

    let output = micro_with_env(&call, &env);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
}

#[test]
fn a_bad_shared_flag_after_the_command_is_a_usage_error() {
    for args in [
        &["list", "services", "--registry=consul"][..],
        &["api", "--client_retries=many"],
        &["call", "a.b", "C.D", "--log_format=xml"],
    ] {
        let output = micro(args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("micro: invalid value"), "{args:?}: {err}");
    }
}

#[test]
fn subcommand_help_lists_the_shared_flags() {
    for (command, own) in [
        (&["api", "--help"][..], "--handler"),
        (&["list", "services", "--help"], "Every registered service"),
        (&["call", "--help"], "--metadata"),
        (&["web", "--help"], "--call_timeout"),
    ] {
        let output = micro(command);
        assert_eq!(output.status.code(), Some(0), "{command:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        for expected in [
            own,
            "--registry <NAME>",
            "[env: MICRO_REGISTRY=]",
            "--registry_address <ADDRS>",
            "--client_tls_ca <FILE>",
            "--admin_address <ADDR>",
            "--log_format <FORMAT>",
        ] {
            assert!(
                text.contains(expected),
                "{expected} missing from {command:?}:\n{text}"
            );
        }
    }
}

/// The message of a JSON log line.
fn message_of(line: &str) -> String {
    let entry: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("--log_format=json ignored: {line:?} ({e})"));
    entry["message"].as_str().unwrap_or_default().to_string()
}

/// The next JSON log line whose message contains `marker`, and its message.
fn wait_message(lines: &mut OutputLines, marker: &str, deadline: Instant) -> String {
    let line = lines
        .wait_for(&format!("log line with {marker:?}"), deadline, |line| {
            message_of(line).contains(marker)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    message_of(&line)
}

fn listening_address(message: &str) -> SocketAddr {
    let after = message
        .split("Listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {message:?}"));
    let address = after.split_whitespace().next().unwrap_or_default();
    address
        .parse()
        .unwrap_or_else(|e| panic!("{address:?} in {message:?}: {e}"))
}

/// `micro api --handler=api --admin_address ...`: every shared flag after
/// the command, and each one used: the memory registry, an admin listener
/// that answers, JSON log lines.
#[test]
fn api_takes_the_admin_and_log_flags_after_the_command() {
    let mut command = Command::new(MICRO);
    command
        .args([
            "api",
            "--handler=api",
            "--address",
            "127.0.0.1:0",
            "--admin_address",
            "127.0.0.1:0",
            "--registry=memory",
            "--log_format=json",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in SHARED_ENV {
        command.env_remove(name);
    }
    // Stopped by PID if the test fails before stopping it.
    let mut running = ChildGuard::spawn(&mut command).expect("start micro api");
    let mut lines = OutputLines::read(running.stderr.take().expect("stderr"));

    let deadline = Instant::now() + Duration::from_secs(20);
    let starting = wait_message(&mut lines, "Starting [api]", deadline);
    assert!(
        starting.contains("handler api") && starting.contains("registry [memory]"),
        "{starting}"
    );
    let admin = listening_address(&wait_message(
        &mut lines,
        "Server [admin] Listening on",
        deadline,
    ));
    let gateway = listening_address(&wait_message(
        &mut lines,
        "Server [http] Listening on",
        deadline,
    ));
    assert_ne!(admin, gateway);

    let live = http_get(admin, "/health/live");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let root = http_get(gateway, "/");
    assert!(root.starts_with("HTTP/1.1 200"), "{root}");

    running.terminate().expect("SIGTERM");
    // Its stderr closes when it exits: wait for that, bounded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rest = lines
        .wait_for_end(deadline)
        .unwrap_or_else(|e| panic!("micro api did not stop on SIGTERM: {e}"));
    let exit = running.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("Stopped")), "{rest:?}");
}
