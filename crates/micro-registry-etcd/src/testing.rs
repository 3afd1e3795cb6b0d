//! A test harness that runs real `etcd` processes (feature `testing`).
//!
//! [`EtcdCluster`] starts one member or a cluster on free `127.0.0.1` ports
//! with data in a temporary directory, waits until every member reports
//! healthy, and on drop kills each process by PID, waits for it and removes
//! the directory. Members can be killed and restarted (optionally on empty
//! data) to test outages.
//!
//! The `etcd` binary is taken from `$ETCD_BIN`, else from `PATH` (Debian:
//! `etcd-server`); `etcdctl` likewise from `$ETCDCTL_BIN` or `PATH`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use micro_registry::Registry;
//! use micro_registry_etcd::testing::EtcdCluster;
//!
//! let etcd = EtcdCluster::single().await?;
//! let registry = etcd.registry().await;
//! assert!(registry.list_services().await.expect("list").is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::{EtcdOptions, EtcdRegistry};

/// How long a member (or a whole cluster) may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Port conflicts with other tests are retried this many times.
const START_ATTEMPTS: usize = 3;

/// Real etcd processes on loopback: one member or a cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    tls: Option<ServerTls>,
    token: String,
    /// Data directories and logs; removed on drop (after the processes).
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health`, also when clients must use TLS.
    metrics_port: u16,
    child: Option<Child>,
}

/// TLS for the members' client port (PEM files), for testing TLS clients.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server certificate; must name `127.0.0.1`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert`, also trusted for client certificates.
    pub ca: PathBuf,
    /// Require clients to present a certificate signed by `ca`.
    pub client_cert_auth: bool,
}

/// Starts an [`EtcdCluster`] with non-default settings.
#[derive(Clone, Debug)]
pub struct EtcdClusterBuilder {
    members: usize,
    tls: Option<ServerTls>,
}

impl EtcdClusterBuilder {
    /// Number of members (default 1).
    pub fn members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// Serve clients over TLS.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts the members and waits until all are healthy. Port conflicts
    /// with other tests are retried with new ports.
    pub async fn start(self) -> io::Result<EtcdCluster> {
        if self.members == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cluster needs a member",
            ));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match EtcdCluster::try_start(self.members, self.tls.clone()).await {
                Ok(cluster) => return Ok(cluster),
                Err(e) if attempt < START_ATTEMPTS && e.kind() == io::ErrorKind::AddrInUse => {
                    tracing::debug!("etcd harness: port conflict, retrying: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl EtcdCluster {
    /// One etcd member.
    pub async fn single() -> io::Result<EtcdCluster> {
        EtcdCluster::start(1).await
    }

    /// A cluster of `size` members, all healthy (a leader elected) on return.
    pub async fn start(size: usize) -> io::Result<EtcdCluster> {
        EtcdCluster::builder().members(size).start().await
    }

    /// For TLS or other non-default settings.
    pub fn builder() -> EtcdClusterBuilder {
        EtcdClusterBuilder {
            members: 1,
            tls: None,
        }
    }

    async fn try_start(size: usize, tls: Option<ServerTls>) -> io::Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("micro-etcd-").tempdir()?;
        let ports = free_ports(size * 3)?;
        let members = (0..size)
            .map(|i| Member {
                name: format!("etcd{:02}", i + 1),
                client_port: ports[3 * i],
                peer_port: ports[3 * i + 1],
                metrics_port: ports[3 * i + 2],
                child: None,
            })
            .collect();
        let token = format!(
            "micro-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut cluster = EtcdCluster {
            members,
            tls,
            token,
            dir,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..size {
            cluster.wait_healthy(i, deadline).await?;
        }
        Ok(cluster)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member (never true for a started one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `http://127.0.0.1:<port>` (`https` with TLS) of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `http://127.0.0.1:<port>` (`https` with TLS) of one member.
    pub fn endpoint(&self, member: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[member].client_port)
    }

    /// `127.0.0.1:<port>,...`: what `--registry_address` takes.
    pub fn addresses(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The temporary directory holding data and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Client port of one member.
    pub fn client_port(&self, member: usize) -> u16 {
        self.members[member].client_port
    }

    /// Options for all members, with timeouts suited to tests. With TLS they
    /// trust the CA (no client certificate: add one for `client_cert_auth`).
    pub fn options(&self) -> EtcdOptions {
        let options = EtcdOptions::new(self.endpoints())
            .with_dial_timeout(Duration::from_secs(2))
            .with_request_timeout(Duration::from_secs(5));
        match &self.tls {
            Some(tls) => options.with_tls(crate::EtcdTls {
                ca: Some(tls.ca.clone()),
                ..crate::EtcdTls::default()
            }),
            None => options,
        }
    }

    /// A registry client of this cluster.
    pub async fn registry(&self) -> EtcdRegistry {
        match EtcdRegistry::connect(self.options()).await {
            Ok(registry) => registry,
            Err(e) => panic!("etcd harness: connect to {:?}: {e}", self.endpoints()),
        }
    }

    /// PID of a running member.
    pub fn pid(&self, member: usize) -> Option<u32> {
        self.members[member].child.as_ref().map(Child::id)
    }

    /// Whether a member's process is running.
    pub fn is_running(&mut self, member: usize) -> bool {
        match self.members[member].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills a member (SIGKILL, by PID) and waits for it to exit.
    pub fn kill(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again on the same ports and waits until it is
    /// healthy. With `wipe`, its data is deleted first: a single member comes
    /// back as a new, empty etcd (leases and keys gone). Wiping one member of
    /// a larger cluster is not supported.
    pub async fn restart(&mut self, member: usize, wipe: bool) -> io::Result<()> {
        self.kill(member);
        if wipe {
            if self.members.len() > 1 {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "wiping one member of a cluster is not supported",
                ));
            }
            let data = self.data_dir(member);
            if data.exists() {
                std::fs::remove_dir_all(&data)?;
            }
        }
        // The port was just released; another test may grab it in between,
        // in which case this fails with the member's log.
        self.spawn(member)?;
        self.wait_healthy(member, Instant::now() + START_TIMEOUT)
            .await
    }

    /// Index of the current leader, asking the running members.
    pub async fn leader(&self) -> Option<usize> {
        for (i, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let Some((member_id, leader)) = status(&self.endpoint(i)).await else {
                continue;
            };
            if leader == 0 {
                continue;
            }
            if member_id == leader {
                return Some(i);
            }
            // Ask the leader itself to map its id to an index.
            for (j, other) in self.members.iter().enumerate() {
                if j != i
                    && other.child.is_some()
                    && let Some((id, _)) = status(&self.endpoint(j)).await
                    && id == leader
                {
                    return Some(j);
                }
            }
        }
        None
    }

    /// Runs `etcdctl` (API v3) against all running members; bounded by its
    /// own dial and command timeouts.
    pub fn etcdctl(&self, args: &[&str]) -> io::Result<Output> {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.child.is_some())
            .map(|(i, _)| self.endpoint(i))
            .collect();
        let program = std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into());
        let mut command = Command::new(&program);
        if let Some(tls) = &self.tls {
            command.arg("--cacert").arg(&tls.ca);
        }
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| not_found_hint(e, &program, "ETCDCTL_BIN"))
    }

    /// The last lines of a member's log, for failure messages.
    pub fn log_tail(&self, member: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path(member)) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn data_dir(&self, member: usize) -> PathBuf {
        self.dir.path().join(&self.members[member].name)
    }

    fn log_path(&self, member: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[member].name))
    }

    fn spawn(&mut self, member: usize) -> io::Result<()> {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let data = self.data_dir(member);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(member))?;
        let client = self.endpoint(member);
        let m = &self.members[member];
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let metrics = format!("http://127.0.0.1:{}", m.metrics_port);
        let program = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let mut command = Command::new(&program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--listen-metrics-urls")
            .arg(&metrics)
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca);
            if tls.client_cert_auth {
                command.arg("--client-cert-auth");
            }
        }
        let child = command
            .spawn()
            .map_err(|e| not_found_hint(e, &program, "ETCD_BIN"))?;
        self.members[member].child = Some(child);
        Ok(())
    }

    /// Polls a member's `/health` until it says true, its process exits, or
    /// `deadline` passes.
    async fn wait_healthy(&mut self, member: usize, deadline: Instant) -> io::Result<()> {
        let port = self.members[member].metrics_port;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(child) = self.members[member].child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.members[member].child = None;
                    let log = self.log_tail(member);
                    let kind = if log.contains("address already in use") {
                        io::ErrorKind::AddrInUse
                    } else {
                        io::ErrorKind::Other
                    };
                    return Err(io::Error::new(
                        kind,
                        format!("etcd member {member} exited ({status}) while starting:\n{log}"),
                    ));
                }
            } else {
                return Err(io::Error::other(format!(
                    "etcd member {member} is not running"
                )));
            }
            if healthy(port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self.log_tail(member);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd member {member} not healthy within {START_TIMEOUT:?}:\n{log}"),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        // `dir` is removed after this, with the processes gone.
    }
}

/// Distinct free loopback ports (bound at once, then released).
fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// `GET /health` on a metrics port, bounded by short timeouts.
async fn healthy(port: u16) -> bool {
    tokio::task::spawn_blocking(move || health_check(port).unwrap_or(false))
        .await
        .unwrap_or(false)
}

fn health_check(port: u16) -> io::Result<bool> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.starts_with("HTTP/1.0 200") && text.contains(r#""health":"true""#))
}

/// (member id, leader id) as one member sees it.
async fn status(endpoint: &str) -> Option<(u64, u64)> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let ask = async {
        let client = etcd_client::Client::connect([endpoint], Some(options)).await?;
        let mut maintenance = client.maintenance_client();
        maintenance.status().await
    };
    let status = tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()?
        .ok()?;
    Some((status.header()?.member_id(), status.leader()))
}

fn not_found_hint(error: io::Error, program: &str, variable: &str) -> io::Error {
    if error.kind() == io::ErrorKind::NotFound {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{program} not found: install etcd (apt-get install etcd-server etcd-client; scripts/test does) or set ${variable}"
            ),
        )
    } else {
        error
    }
}
