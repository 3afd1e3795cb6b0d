//! Child processes: started pinned to the server core, stopped by PID.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use micro_testing::process::ChildGuard;

/// The core servers run on; the load generator takes the other one.
pub const SERVER_CORE: usize = 0;
pub const LOAD_CORE: usize = 1;

/// A child process that is stopped (by its PID) when dropped: SIGTERM, then
/// SIGKILL if it is still there after 5 s.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    pub started: Instant,
}

impl Proc {
    /// Starts `program args` with `taskset -c SERVER_CORE`, capturing stdout
    /// and stderr lines (the child keeps its stdin: when we die, it sees EOF).
    pub fn spawn(name: &str, program: &Path, args: &[String], env: &[(&str, String)]) -> Proc {
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(SERVER_CORE.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let started = Instant::now();
        let mut child = ChildGuard::spawn(&mut command)
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()))
            .with_grace(Duration::from_secs(5));
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            lines,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for an output line containing `needle`; returns it and when it came.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> (String, Instant) {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return (line, Instant::now()),
                Ok(_) => {}
                Err(_) => panic!("{}: no line with {needle:?} within {timeout:?}", self.name),
            }
        }
    }

    /// The last output line containing `needle` printed so far, if any
    /// (lines before it are consumed).
    pub fn last_line(&mut self, needle: &str) -> Option<String> {
        let mut last = None;
        while let Ok(line) = self.lines.try_recv() {
            if line.contains(needle) {
                last = Some(line);
            }
        }
        last
    }

    /// Every output line printed so far and not yet read (the last `keep`).
    pub fn recent_lines(&mut self, keep: usize) -> Vec<String> {
        let mut lines = std::collections::VecDeque::new();
        while let Ok(line) = self.lines.try_recv() {
            if lines.len() == keep {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        lines.into()
    }

    /// Waits (20 s at most) for the `READY <address> [more]` line a server
    /// child prints once it serves; returns the address and the rest.
    pub fn wait_ready(&mut self) -> (SocketAddr, String) {
        let (line, _) = self.wait_line("READY ", Duration::from_secs(20));
        let mut words = line
            .split_whitespace()
            .skip_while(|w| *w != "READY")
            .skip(1);
        let address = words
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: expected READY <address>, got {line:?}", self.name));
        (address, words.collect::<Vec<_>>().join(" "))
    }

    /// Resident set size in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        self::signal(self.pid(), signal);
    }

    /// `kill -9 PID` now.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -TERM PID`, then `kill -9 PID` if it is still there after 5 s.
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid` (never 0 or a group).
pub fn signal(pid: u32, signal: &str) {
    if pid <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A free loopback port (bound, then released).
/// Resident set size of process `pid` in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
