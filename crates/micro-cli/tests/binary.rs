//! The `micro` binary: flags, exit codes, and `micro api` serving until
//! SIGTERM. Only the memory registry is used (never mDNS).

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use micro_testing::http::get as http_get;
use micro_testing::process::{ChildGuard, OutputLines};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");

fn micro(args: &[&str]) -> Output {
    Command::new(MICRO)
        .args(args)
        .env_remove("MICRO_REGISTRY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run micro")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_and_version_exit_zero() {
    let help = micro(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["api", "list", "get", "call", "--registry"] {
        assert!(
            text.contains(command),
            "{command} missing from help:\n{text}"
        );
    }
    let api_help = micro(&["api", "--help"]);
    let text = String::from_utf8_lossy(&api_help.stdout);
    for flag in [
        "--address",
        "--handler",
        "--namespace",
        "--resolver",
        "--max_body_bytes",
        "--cors_allowed_origins",
    ] {
        assert!(text.contains(flag), "{flag} missing from api help:\n{text}");
    }
    assert_eq!(micro(&["--version"]).status.code(), Some(0));
}

#[test]
fn usage_errors_are_one_line_and_exit_two() {
    for args in [
        &[][..],
        &["--registry=consul", "list", "services"],
        &["list", "services", "--registry=consul"], // shared flags are checked after the command too
        &["--registry=memory", "list", "nodes"],
        &["--registry=memory", "api", "--handler=meta"],
        &["--registry=memory", "api", "--resolver=host"],
        &["--registry=memory", "api", "--max_body_bytes=0"],
        &["--registry=memory", "api", "--request_timeout=soon"],
        &[
            "--registry=memory",
            "call",
            "go.micro.srv.greeter",
            "Hello",
            "{}",
        ],
        &[
            "--registry=memory",
            "call",
            "go.micro.srv.greeter",
            "Greeter.Hello",
            "{bad",
        ],
        &["--no-such-flag"],
    ] {
        let output = micro(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("micro: "), "{args:?}: {err}");
    }
}

#[test]
fn commands_on_an_empty_registry() {
    let list = micro(&["--registry=memory", "list", "services"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert!(list.stdout.is_empty());
    assert_eq!(
        stderr(&list).trim_end(),
        "micro: no services registered in registry [memory]"
    );

    let get = micro(&["--registry=memory", "get", "service", "go.micro.srv.nobody"]);
    assert_eq!(get.status.code(), Some(1));
    assert_eq!(
        stderr(&get).trim_end(),
        "micro: service go.micro.srv.nobody not found in registry [memory]"
    );

    let call = micro(&[
        "--registry",
        "memory",
        "call",
        "go.micro.srv.nobody",
        "Greeter.Hello",
        r#"{"name":"x"}"#,
    ]);
    assert_eq!(call.status.code(), Some(1));
    assert!(
        stderr(&call).contains("go.micro.srv.nobody not found"),
        "{}",
        stderr(&call)
    );
}

#[test]
fn api_serves_until_sigterm_and_exits_zero() {
    api_serves_until_sigterm("auto");
}

/// What a process pinned to one CPU (or a 1-CPU container) runs on.
#[test]
fn api_serves_on_a_current_thread_runtime() {
    api_serves_until_sigterm("current_thread");
}

#[test]
fn a_bad_runtime_setting_is_a_usage_error() {
    let output = Command::new(MICRO)
        .args(["--registry=memory", "list", "services"])
        .env("MICRO_RUNTIME", "fast")
        .stdin(Stdio::null())
        .output()
        .expect("run micro");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim_end(),
        "MICRO_RUNTIME=fast: expected auto, current_thread or multi_thread"
    );
}

fn api_serves_until_sigterm(runtime: &str) {
    let child = Command::new(MICRO)
        .args([
            "--registry=memory",
            "api",
            "--address",
            "127.0.0.1:0",
            "--handler=api",
        ])
        .env("RUST_LOG", "info")
        .env("MICRO_RUNTIME", runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start micro api");
    // Stopped by PID if the test fails before stopping it.
    let mut running = ChildGuard::new(child);
    let mut lines = OutputLines::read(running.stderr.take().expect("stderr"));

    // The address from "Server [http] Listening on ...".
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = lines
        .wait_for_line("Server [http] Listening on ", deadline)
        .unwrap_or_else(|e| panic!("{e}"));
    let address: SocketAddr = line
        .split("Server [http] Listening on ")
        .nth(1)
        .map(|address| address.trim().parse().expect("address"))
        .expect("address");
    let log = lines.log();
    // go-micro's log shape: date, time, message.
    let starting = log
        .iter()
        .find(|l| l.contains("Starting [api]"))
        .expect("starting line");
    let stamp = starting.get(..19).unwrap_or_default();
    assert!(
        stamp.len() == 19 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[13] == b':',
        "{starting}"
    );
    assert!(
        starting.contains("handler api") && starting.contains("registry [memory]"),
        "{starting}"
    );

    let root = http_get(address, "/");
    assert!(root.starts_with("HTTP/1.1 200"), "{root}");
    assert!(root.contains(r#"{"version":""#), "{root}");
    let missing = http_get(address, "/user/say/hello?name=huohuo");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.contains("go.micro.api.user"), "{missing}");

    running.terminate().expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = running
        .wait_until(deadline)
        .expect("wait")
        .unwrap_or_else(|| panic!("micro api did not stop on SIGTERM"));
    assert_eq!(exit.code(), Some(0));
    let rest = lines
        .wait_for_end(deadline)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rest.iter().any(|l| l.contains("Stopped")), "{rest:?}");
}
