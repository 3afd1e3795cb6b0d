//! `micro web` as a binary: flags, exit codes, serving until SIGTERM with a
//! live stream open. Only the memory registry is used (never mDNS).

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_testing::http::{connect_get as connect, get as http_get};
use micro_testing::process::{ChildGuard, OutputLines};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");

fn start(program: &str, args: &[&str]) -> (ChildGuard, OutputLines) {
    let mut running = ChildGuard::spawn(
        Command::new(program)
            .args(args)
            .env_remove("MICRO_REGISTRY")
            .env_remove("MICRO_WEB_ADDRESS")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("start micro web");
    let lines = OutputLines::read(running.stderr.take().expect("stderr"));
    (running, lines)
}

/// Log lines until one contains `marker` (at most 20 s): that line, and
/// every line read so far.
fn wait_line(lines: &mut OutputLines, marker: &str) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = lines
        .wait_for_line(marker, deadline)
        .unwrap_or_else(|e| panic!("{e}"));
    (line, lines.log().to_vec())
}

fn stop(running: &mut ChildGuard) -> std::process::ExitStatus {
    running.terminate().expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    running
        .wait_until(deadline)
        .expect("wait")
        .unwrap_or_else(|| panic!("micro web did not stop on SIGTERM"))
}

#[test]
fn web_usage_errors_exit_two() {
    for args in [
        &["--registry=memory", "web", "--address", "8082"][..],
        &["--registry=memory", "web", "--address", ":99999"],
        &["--registry=memory", "web", "--address", "nohost:80"],
        &["--registry=memory", "web", "--call_timeout=soon"],
        &["--registry=memory", "web", "--nope"],
    ] {
        let output = Command::new(MICRO)
            .args(args)
            .env_remove("MICRO_REGISTRY")
            .env_remove("MICRO_WEB_ADDRESS")
            .stdin(Stdio::null())
            .output()
            .expect("run micro");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("micro: "), "{args:?}: {err}");
    }
    let help = Command::new(MICRO)
        .args(["web", "--help"])
        .output()
        .expect("run micro");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("127.0.0.1:8082") && text.contains("MICRO_WEB_ADDRESS"),
        "{text}"
    );
}

#[test]
fn web_serves_the_page_and_stops_on_sigterm_with_a_stream_open() {
    let (mut running, mut lines) = start(
        MICRO,
        &["--registry=memory", "web", "--address", "127.0.0.1:0"],
    );
    let (line, log) = wait_line(&mut lines, "Listening on http://");
    let address: SocketAddr = line
        .split("Listening on http://")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        !log.iter().any(|l| l.contains("not loopback")),
        "no warning on loopback: {log:?}"
    );

    let page = http_get(address, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html") && page.contains("<title>micro web</title>"));
    let services = http_get(address, "/api/services");
    assert!(services.starts_with("HTTP/1.1 200"), "{services}");
    assert!(services.contains(r#""services":[]"#), "{services}");

    // A live stream, open while the dashboard stops: it ends, and so does micro.
    let mut events = connect(address, "/api/events");
    let mut first = [0u8; 512];
    let n = events.read(&mut first).expect("the stream starts");
    let head = String::from_utf8_lossy(&first[..n]);
    assert!(head.contains("text/event-stream"), "{head}");
    let exit = stop(&mut running);
    assert_eq!(exit.code(), Some(0));
    let mut rest = Vec::new();
    let _ = events.read_to_end(&mut rest);
    let rest = lines
        .wait_for_end(Instant::now() + Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rest.iter().any(|l| l.contains("Stopped")), "{rest:?}");
}

#[test]
fn web_warns_when_not_on_loopback() {
    // In a fresh network namespace (root): every interface there is ours.
    let (mut running, mut lines) = start(
        "unshare",
        &[
            "--net",
            "--",
            MICRO,
            "--registry=memory",
            "web",
            "--address",
            "0.0.0.0:0",
        ],
    );
    let (warning, _) = wait_line(&mut lines, "not loopback");
    assert!(
        warning.contains("WARN") || warning.contains("warn"),
        "{warning}"
    );
    assert!(warning.contains("call every service"), "{warning}");
    wait_line(&mut lines, "Listening on http://0.0.0.0:");
    assert_eq!(stop(&mut running).code(), Some(0));
}
