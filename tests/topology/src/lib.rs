//! Support for system tests: the workspace's binaries as processes (stopped
//! by PID), their logs, and HTTP calls made with `curl`, as a user would.
//!
//! The binaries are found next to the test executable (`target/<profile>/`):
//! `cargo test --workspace` builds them before running any test.

pub mod balancer;
pub mod lab;
pub mod rolling;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of workspace binary `name`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; `cargo test --workspace` builds every binary (or run `cargo build --workspace` first)",
        path.display()
    );
    path
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running process whose stderr is collected; killed by PID on drop.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Starts `binary(program)` with `args` and `env` (RUST_LOG included).
    pub fn start(label: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        Self::start_path(label, binary(program), args, env)
    }

    /// Starts the program at `path` (or found on `PATH`), like [`start`](Self::start).
    pub fn start_path(
        label: &str,
        path: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let program = path.as_ref().to_string_lossy().into_owned();
        let mut command = Command::new(path.as_ref());
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process {
            name: label.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lines of the log containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{}: no {needle:?} within {limit:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the child's PID (never 0 or a group).
    fn signal(child: &Child, signal: &str) {
        let pid = child.id();
        assert!(pid > 1, "refusing to signal PID {pid}");
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
    }

    /// SIGSTOP: the process freezes (its sockets still accept connections).
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            Self::signal(child, "-STOP");
        }
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            Self::signal(child, "-CONT");
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            Self::signal(&child, "-KILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded); the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        Self::signal(&child, "-TERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `curl` a URL: GET, or POST with a JSON body.
pub fn curl(url: &str, json_body: Option<&str>) -> Reply {
    match json_body {
        Some(body) => curl_with(
            url,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ],
        ),
        None => curl_with(url, &[]),
    }
}

/// `curl` a URL with more arguments (`-X`, `-H`, `-d`, ...).
pub fn curl_with(url: &str, args: &[&str]) -> Reply {
    let mut command = Command::new("curl");
    command.args(["-sS", "-m", "15", "-w", "\n%{http_code}"]);
    let output = command
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Reply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What steady callers saw: the failed answers, how many were answered
/// 200, the slowest answer, and how long every call took.
#[derive(Debug, Default)]
pub struct Steady {
    pub failed: Vec<String>,
    pub served: usize,
    pub slowest: Duration,
    pub took: Vec<Duration>,
}

impl Steady {
    /// The `p`th percentile (0-100) of the calls' durations.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.took.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// One line of figures: calls, failed, p50/p99/max.
    pub fn figures(&self) -> String {
        format!(
            "{} calls, {} failed, p50 {:?}, p99 {:?}, max {:?}",
            self.took.len(),
            self.failed.len(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.slowest
        )
    }
}

/// `callers` threads GET `url` back to back (each at most 10 000 times)
/// while `during` runs, then stop; every answer but 200 is a failure.
pub fn steady_gets(url: &str, callers: usize, during: impl FnOnce()) -> Steady {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let stop = stop.clone();
            let url = url.to_string();
            std::thread::spawn(move || {
                let mut seen = Steady::default();
                for _ in 0..10_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let sent = Instant::now();
                    let reply = curl(&url, None);
                    let took = sent.elapsed();
                    seen.slowest = seen.slowest.max(took);
                    seen.took.push(took);
                    if reply.status == 200 {
                        seen.served += 1;
                    } else {
                        seen.failed.push(format!("{} {}", reply.status, reply.body));
                    }
                }
                seen
            })
        })
        .collect();
    during();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Steady::default();
    for thread in threads {
        let seen = thread.join().expect("caller");
        all.failed.extend(seen.failed);
        all.took.extend(seen.took);
        all.served += seen.served;
        all.slowest = all.slowest.max(seen.slowest);
    }
    all
}

/// Freezes `process` (SIGSTOP) for `frozen`, with a second of calls
/// before and after.
pub fn freeze_for(process: &Process, frozen: Duration) {
    std::thread::sleep(Duration::from_secs(1));
    process.freeze();
    std::thread::sleep(frozen);
    process.thaw();
    std::thread::sleep(Duration::from_secs(1));
}

/// 32 random bytes, hex: a shared token key for the user-srv instances.
pub fn secret() -> String {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tutorial's topology, running.
#[derive(Debug)]
pub struct Topology {
    pub srvs: Vec<Process>,
    pub api: Process,
    pub gateway: Process,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// What [`exercise`] measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// QueryUserByName calls per user-srv for 30 hellos.
    pub spread: Vec<usize>,
    /// Failed hellos among the 30 after one user-srv was SIGKILLed.
    pub failed_after_kill: usize,
}

impl Topology {
    /// Starts one user-srv per entry of `srv_flags` (one SQLite store in
    /// `data_dir`), then user-api and `micro api --handler=api`, both with
    /// `shared_flags`.
    pub fn start(
        shared_flags: &[&str],
        srv_flags: &[Vec<String>],
        data_dir: &std::path::Path,
    ) -> Topology {
        let secret = secret();
        let data = data_dir.display().to_string();
        let env: Vec<(&str, &str)> = vec![
            ("MICRO_AUTH_SECRET", secret.as_str()),
            ("RUST_LOG", "info,user_srv=debug,user_api=debug"),
        ];
        let srvs = srv_flags
            .iter()
            .enumerate()
            .map(|(i, extra)| {
                let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
                args.extend(["--data_dir", data.as_str()]);
                Process::start(&format!("user-srv-{i}"), "user-srv", &args, &env)
            })
            .collect();
        let api = Process::start("user-api", "user-api", shared_flags, &env);
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut gateway_args: Vec<&str> = shared_flags.to_vec();
        gateway_args.extend(["api", "--handler=api", "--address", address.as_str()]);
        let gateway = Process::start("micro api", "micro", &gateway_args, &env);
        Topology {
            srvs,
            api,
            gateway,
            base: format!("http://{address}"),
        }
    }

    /// [`start`](Self::start) on etcd (`--registry_address=...` as
    /// `address`), every process on loopback, three user-srv renewing every
    /// 10 s with a 30 s TTL (a frozen one stays listed while frozen).
    pub fn start_on_etcd(address: &str, data_dir: &std::path::Path) -> Topology {
        let shared = ["--registry=etcd", address, "--server_address=127.0.0.1:0"];
        let srv: Vec<String> = shared
            .iter()
            .chain(&["--register_ttl=30", "--register_interval=10"])
            .map(|s| s.to_string())
            .collect();
        Topology::start(&shared, &[srv.clone(), srv.clone(), srv], data_dir)
    }

    /// [`eventually`], printing every process's log if it fails.
    fn eventually<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .srvs
                    .iter()
                    .chain([&self.api, &self.gateway])
                    .map(|p| {
                        let log = p.log();
                        let lines: Vec<&str> = log.lines().collect();
                        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
                        format!("--- {} (last 25 lines) ---\n{tail}", p.name)
                    })
                    .collect();
                panic!("{what}: not within {limit:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hello(&self, name: &str) -> Reply {
        curl(&format!("{}/user/say/hello?name={name}", self.base), None)
    }

    fn calls(&self) -> Vec<usize> {
        self.srvs
            .iter()
            .map(|s| s.count("User.QueryUserByName"))
            .collect()
    }

    /// Register, hello ×30 (counting per instance), SIGKILL one instance,
    /// hello ×30 more.
    pub fn exercise(&mut self) -> Figures {
        // The whole chain answers: an unknown user is user-srv's 404.
        let unknown = |reply: &Reply| {
            reply.status == 404 && reply.body.contains(r#"user \"nobody\" not found"#)
        };
        self.eventually(
            "gateway → user-api → user-srv",
            Duration::from_secs(60),
            || unknown(&self.hello("nobody")).then_some(()),
        );
        // Every instance takes calls before counting starts.
        let start = self.calls();
        self.eventually("every user-srv reached", Duration::from_secs(30), || {
            let reply = self.hello("nobody");
            assert!(unknown(&reply), "{reply:?}");
            let now = self.calls();
            now.iter().zip(&start).all(|(n, s)| n > s).then_some(())
        });

        let register = curl(
            &format!("{}/user/account/register", self.base),
            Some(r#"{"username":"huohuo","password":"correct horse battery"}"#),
        );
        assert_eq!(register.status, 201, "{register:?}");
        let id = register.json()["id"].as_str().expect("id").to_string();

        let before = self.calls();
        for _ in 0..30 {
            let reply = self.hello("huohuo");
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(
                reply.json(),
                serde_json::json!({"id": id, "username": "huohuo"})
            );
        }
        let spread: Vec<usize> = self
            .calls()
            .iter()
            .zip(&before)
            .map(|(after, before)| after - before)
            .collect();

        self.srvs[0].kill();
        let failed_after_kill = (0..30)
            .filter(|_| {
                let reply = self.hello("huohuo");
                reply.status != 200
            })
            .count();
        Figures {
            spread,
            failed_after_kill,
        }
    }

    /// SIGTERM to every live process; each must exit 0.
    pub fn stop(mut self) {
        for process in [&mut self.gateway, &mut self.api]
            .into_iter()
            .chain(self.srvs.iter_mut().skip(1))
        {
            let status = process.terminate(Duration::from_secs(20));
            assert!(
                status.success(),
                "{} exited with {status} after SIGTERM; log:\n{}",
                process.name,
                process.log()
            );
            assert!(
                process.log().contains("Deregistering") || process.name == "micro api",
                "{} did not deregister; log:\n{}",
                process.name,
                process.log()
            );
        }
    }
}
