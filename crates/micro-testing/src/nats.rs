//! A real `nats-server` (Debian's package) for tests: on loopback, a port
//! of its own choosing, stopped by its PID when dropped; with JetStream
//! ([`JetStreamServer`]) and as a JetStream cluster ([`NatsCluster`]).
//!
//! ```no_run
//! let server = micro_testing::nats::NatsServer::start();
//! let url = server.url(); // nats://127.0.0.1:<port>
//! # let _ = url;
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, OutputLines};

/// What to install when `nats-server` is missing.
pub const INSTALL: &str = "apt-get install nats-server";

/// A running `nats-server`; see the module docs.
#[derive(Debug)]
pub struct NatsServer {
    _child: ChildGuard,
    _log: OutputLines,
    pub address: SocketAddr,
}

impl NatsServer {
    /// Starts one on `127.0.0.1`, a random port, and waits until it is
    /// ready (20 s at most). Without `nats-server` it panics naming the
    /// package: a missing server is never a pass.
    pub fn start() -> NatsServer {
        let mut child = ChildGuard::spawn(
            Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", "-1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .unwrap_or_else(|e| panic!("cannot start nats-server: {e} ({INSTALL})"));
        let mut log = OutputLines::read(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = log
            .wait_for_line("Listening for client connections on ", deadline)
            .unwrap_or_else(|e| panic!("nats-server did not listen: {e}"));
        let address: SocketAddr = listening
            .rsplit("connections on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {listening:?}"));
        log.wait_for_line("Server is ready", deadline)
            .unwrap_or_else(|e| panic!("nats-server not ready: {e}"));
        NatsServer {
            _child: child,
            _log: log,
            address,
        }
    }

    /// `nats://<address>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }
}

/// Distinct free loopback ports (bound at once, then released).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// A directory of its own under the temp dir, removed when dropped.
#[derive(Debug)]
struct StateDir(PathBuf);

impl StateDir {
    fn new(what: &str) -> StateDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "micro-testing-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `nats-server -js` process: its arguments kept, so it can be killed
/// and started again on the same port and store.
#[derive(Debug)]
struct Member {
    args: Vec<String>,
    port: u16,
    running: Option<(ChildGuard, OutputLines)>,
}

impl Member {
    fn spawn(&mut self) {
        assert!(self.running.is_none(), "already running");
        let mut child = ChildGuard::spawn(
            Command::new("nats-server")
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .unwrap_or_else(|e| panic!("cannot start nats-server: {e} ({INSTALL})"));
        let log = OutputLines::read(child.stderr.take().expect("stderr"));
        self.running = Some((child, log));
    }

    fn wait_ready(&mut self, deadline: Instant) {
        let (_, log) = self.running.as_mut().expect("running");
        log.wait_for_line("Server is ready", deadline)
            .unwrap_or_else(|e| panic!("nats-server -js on port {} not ready: {e}", self.port));
    }

    /// SIGKILL by PID (as a crash), reaped; its store stays.
    fn kill(&mut self) {
        if let Some((child, _)) = self.running.take() {
            let _ = child.with_grace(Duration::ZERO);
        }
    }
}

/// A real `nats-server` with JetStream (`-js`, file store in a temp dir of
/// its own) on a free loopback port: [`kill`](Self::kill) it (SIGKILL) and
/// [`restart`](Self::restart) it on the same port and store. Stopped by its
/// PID and its store removed when dropped.
#[derive(Debug)]
pub struct JetStreamServer {
    member: Member,
    pub address: SocketAddr,
    _dir: StateDir,
}

impl JetStreamServer {
    /// Starts one and waits until it is ready (20 s at most).
    pub fn start() -> JetStreamServer {
        let dir = StateDir::new("jetstream");
        let port = free_ports(1)[0];
        let mut member = Member {
            args: vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-js".into(),
                "-sd".into(),
                dir.0.display().to_string(),
            ],
            port,
            running: None,
        };
        member.spawn();
        member.wait_ready(Instant::now() + Duration::from_secs(20));
        JetStreamServer {
            member,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    /// `nats://<address>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// SIGKILL (a crash); what it stored stays on disk.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Starts it again (after [`kill`](Self::kill)) on the same port and
    /// store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.member.spawn();
        self.member
            .wait_ready(Instant::now() + Duration::from_secs(20));
    }
}

/// A 3-member (or `n`-member) JetStream cluster on free loopback ports:
/// each member `nats-server -js` with a server name, a cluster port and
/// routes to the others, its store in a temp dir removed when dropped.
/// Members are killed (SIGKILL) and started again by index; every process
/// is stopped by its PID when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    members: Vec<Member>,
    _dir: StateDir,
}

impl NatsCluster {
    /// Starts `n` members and waits until each is ready and the cluster
    /// has elected its JetStream metadata leader (60 s at most).
    pub fn start(n: usize) -> NatsCluster {
        let dir = StateDir::new("nats-cluster");
        let ports = free_ports(2 * n);
        let (client_ports, cluster_ports) = ports.split_at(n);
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let store = dir.0.join(format!("n{}", i + 1));
                Member {
                    args: vec![
                        "-a".into(),
                        "127.0.0.1".into(),
                        "-p".into(),
                        client_ports[i].to_string(),
                        "-n".into(),
                        format!("n{}", i + 1),
                        "-js".into(),
                        "-sd".into(),
                        store.display().to_string(),
                        "--cluster_name".into(),
                        "micro-test".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{}", cluster_ports[i]),
                        "--routes".into(),
                        routes.clone(),
                    ],
                    port: client_ports[i],
                    running: None,
                }
            })
            .collect();
        for member in &mut members {
            member.spawn();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for member in &mut members {
            member.wait_ready(deadline);
        }
        let mut cluster = NatsCluster { members, _dir: dir };
        cluster.wait_for_leader(0, deadline);
        cluster
    }

    /// Waits until member `i` has seen a JetStream metadata leader.
    fn wait_for_leader(&mut self, i: usize, deadline: Instant) {
        let (_, log) = self.members[i].running.as_mut().expect("running");
        if log.log().iter().any(|l| l.contains("metadata leader")) {
            return;
        }
        log.wait_for_line("metadata leader", deadline)
            .unwrap_or_else(|e| panic!("no JetStream metadata leader: {e}"));
    }

    /// Every member's client URL, comma separated (`--broker_address`).
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client address.
    pub fn address(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].port))
    }

    /// Kills member `i` (SIGKILL, a crash); its store stays.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again (after [`kill`](Self::kill)) and waits
    /// until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.members[i].spawn();
        self.members[i].wait_ready(Instant::now() + Duration::from_secs(30));
    }
}
