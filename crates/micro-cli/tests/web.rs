//! `micro web` as a binary: flags, exit codes, serving until SIGTERM with a
//! live stream open. Only the memory registry is used (never mDNS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");

/// Kills the child by PID if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(program: &str, args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let child = Command::new(program)
        .args(args)
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_WEB_ADDRESS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start micro web");
    let mut running = Running(child);
    let stderr = running.0.stderr.take().expect("stderr");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (running, lines)
}

/// Log lines until one contains `marker` (at most 20 s).
fn wait_line(lines: &mpsc::Receiver<String>, marker: &str) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {marker:?}; log so far: {log:?}"));
        log.push(line.clone());
        if line.contains(marker) {
            return (line, log);
        }
    }
}

fn connect(address: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    stream
}

fn http_get(address: SocketAddr, path: &str) -> String {
    let mut answer = String::new();
    let _ = connect(address, path).read_to_string(&mut answer);
    answer
}

fn stop(running: &mut Running) -> std::process::ExitStatus {
    let pid = running.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(exit) = running.0.try_wait().expect("wait") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "micro web did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let (mut running, lines) = start(
        MICRO,
        &["--registry=memory", "web", "--address", "127.0.0.1:0"],
    );
    let (line, log) = wait_line(&lines, "Listening on http://");
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
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("Stopped")), "{rest:?}");
}

#[test]
fn web_warns_when_not_on_loopback() {
    // In a fresh network namespace (root): every interface there is ours.
    let (mut running, lines) = start(
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
    let (warning, _) = wait_line(&lines, "not loopback");
    assert!(
        warning.contains("WARN") || warning.contains("warn"),
        "{warning}"
    );
    assert!(warning.contains("call every service"), "{warning}");
    wait_line(&lines, "Listening on http://0.0.0.0:");
    assert_eq!(stop(&mut running).code(), Some(0));
}
