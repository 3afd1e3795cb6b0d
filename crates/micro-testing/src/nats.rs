//! A real `nats-server` (Debian's package) for tests: on loopback, a port
//! of its own choosing, stopped by its PID when dropped.
//!
//! ```no_run
//! let server = micro_testing::nats::NatsServer::start();
//! let url = server.url(); // nats://127.0.0.1:<port>
//! # let _ = url;
//! ```

use std::net::SocketAddr;
use std::process::{Command, Stdio};
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
