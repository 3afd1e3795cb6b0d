//! A private PostgreSQL server for one test: Debian's binaries, a temp data
//! directory, a free loopback port; stopped by PID and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_testing::process::{ChildGuard, Signal};

#[derive(Debug)]
pub struct Postgres {
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not installed ({root:?}: {e}); `apt-get install postgresql` (scripts/test does)")
        })
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL server binaries under {root:?}"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Runs `program` as the `postgres` user when we are root (PostgreSQL
/// refuses to run as root); `setpriv` execs, so the PID is the server's.
fn as_postgres(program: &Path) -> Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub async fn start() -> Postgres {
        let bin = bin_dir();
        let mut dir = tempfile::Builder::new()
            .prefix("micro-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        // The server's user must own its directories.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let status = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "micro", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let child = ChildGuard::spawn(
                as_postgres(&bin.join("postgres"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-p", &port.to_string(), "-k"])
                    .arg(dir.path())
                    .args([
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("spawn postgres")
            // Stopped with SIGINT by `stop`; SIGKILL at once if that failed.
            .with_grace(Duration::ZERO);
            let mut server = Postgres {
                child: Some(child),
                dir,
                port,
            };
            match server.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    server.stop();
                    dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("tmp"));
                }
            }
        }
        panic!("PostgreSQL did not start: {last_error}");
    }

    /// A database URL for a fresh database named `name`.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Connection;
        let admin = format!("postgres://micro@127.0.0.1:{}/postgres", self.port);
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create database");
        format!("postgres://micro@127.0.0.1:{}/{name}", self.port)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        use sqlx::Connection;
        let url = format!("postgres://micro@127.0.0.1:{}/postgres", self.port);
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("postgres exited: {status}"));
            }
            match sqlx::PgConnection::connect(&url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) if started.elapsed() > limit => return Err(e.to_string()),
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Stops the server (SIGINT, bounded wait; then SIGKILL), as an outage
    /// would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: PostgreSQL's fast shutdown.
            if child.signal(Signal::SIGINT).is_ok() {
                let _ = child.wait_until(Instant::now() + Duration::from_secs(10));
            }
            // Dropped: SIGKILL if still running, and reaped.
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
