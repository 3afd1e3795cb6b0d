//! Soak (`--only soak`, only when named): a long run of mixed load on etcd,
//! to see whether anything grows that should stay flat.
//!
//! etcd, one `user-srv`, `micro api --handler=rpc --namespace=go.micro.srv`
//! in front of it, and a client child (`micro-bench soak-client`) that, at
//! once: calls user-srv through the toolkit's client (QueryUserByName of a
//! user that does not exist, so the store stays as it is: user-srv's
//! NotFound is the expected answer; a closed loop, 2 in flight), sends gateway requests over HTTP/1.1 (2 in
//! flight, a new connection every 50 requests), and churns registrations
//! (synthetic services: a node registered, and the oldest of 20 deregistered,
//! every 250 ms).
//!
//! Every `SAMPLE` (10 s; 2 s when tiny) the gateway, user-srv and the client
//! child are sampled: RSS (/proc/PID/status VmRSS), open file descriptors
//! (/proc/PID/fd), threads (/proc/PID/status Threads), and etcd's own count
//! of watchers (`etcd_debugging_mvcc_watcher_total`, and watch streams). The
//! report gives, per series, the least-squares slope over the samples after
//! the warm-up (the first 2 minutes, or the first third of a shorter run) and
//! the bound (the lowest and highest sample after warm-up).
//!
//! Length: 30 minutes; `--soak_minutes N` (or `MICRO_BENCH_SOAK_MINUTES`)
//! for another length; `MICRO_BENCH_SOAK=tiny` for a 30 s check (the test).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use micro_client::{Client, ClientOptions};
use micro_registry::{RegisterOptions, SharedRegistry};
use user_proto::user::Request as UserRequest;
use user_proto::user::user_client::UserClient;

use crate::discovery::Backend;
use crate::fixtures::{Plan, start_etcd};
use crate::proc::{Proc, free_port, rss_kib};
use crate::scale::{synthetic_node, synthetic_service};
use crate::servers::Flavor;

/// `tiny`: a 30 s run (the test's).
pub const SIZE_ENV: &str = "MICRO_BENCH_SOAK";
/// Minutes of the run, when `--soak_minutes` is not given.
pub const MINUTES_ENV: &str = "MICRO_BENCH_SOAK_MINUTES";
/// What the client child prints once its loops run, and on its last line.
const CLIENT_PREFIX: &str = "SOAK-CLIENT ";
/// Synthetic services the churn keeps registered at once.
const CHURN_KEPT: usize = 20;

/// How long, how often.
#[derive(Clone, Copy, Debug)]
struct Length {
    total: Duration,
    sample: Duration,
    warmup: Duration,
}

impl Length {
    fn of(plan: &Plan) -> Length {
        if std::env::var(SIZE_ENV).is_ok_and(|v| v == "tiny") {
            return Length {
                total: Duration::from_secs(30),
                sample: Duration::from_secs(2),
                warmup: Duration::from_secs(10),
            };
        }
        let minutes = plan
            .soak_minutes
            .or_else(|| std::env::var(MINUTES_ENV).ok()?.parse().ok())
            .filter(|m: &f64| m.is_finite() && *m > 0.0)
            .unwrap_or(30.0);
        let total = Duration::from_secs_f64(minutes * 60.0);
        Length {
            total,
            sample: Duration::from_secs(10),
            warmup: Duration::from_secs(120).min(total / 3),
        }
    }
}

/// One process's figures at one time.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: f64,
    fds: f64,
    threads: f64,
}

fn sample(pid: u32) -> Sample {
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as f64)
        .unwrap_or(f64::NAN);
    Sample {
        rss_kib: rss_kib(pid).map_or(f64::NAN, |k| k as f64),
        fds,
        threads,
    }
}

/// A gauge from etcd's /metrics (`name value` line, no labels).
fn etcd_gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(f64::NAN)
}

fn etcd_metrics(address: &str) -> String {
    std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{address}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Least squares: slope of `ys` over `xs` (per unit of `xs`).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 { f64::NAN } else { num / den }
}

/// One series: its name, unit, and (seconds since start, value) samples.
struct Series {
    name: String,
    unit: &'static str,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: &str, unit: &'static str) -> Series {
        Series {
            name: name.to_string(),
            unit,
            points: Vec::new(),
        }
    }

    fn push(&mut self, at: f64, value: f64) {
        if value.is_finite() {
            self.points.push((at, value));
        }
    }

    /// The row: samples after warm-up, first → last, slope per hour, bound.
    fn row(&self, warmup: f64, hours: f64) -> String {
        let after: Vec<(f64, f64)> = self
            .points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= warmup)
            .collect();
        if after.len() < 2 {
            return format!("| {} | {} | – | – | – | – |\n", self.name, after.len());
        }
        let xs: Vec<f64> = after.iter().map(|(t, _)| t / 3600.0).collect();
        let ys: Vec<f64> = after.iter().map(|(_, v)| *v).collect();
        let per_hour = slope(&xs, &ys);
        let (low, high) = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(*v), h.max(*v))
            });
        let mean = ys.iter().sum::<f64>() / ys.len() as f64;
        // Flat: the trend over the run moves it by less than 5 % of its
        // level, or by less than one unit for counts.
        let drift = per_hour * hours;
        let flat = drift.abs() <= (0.05 * mean.abs()).max(1.0);
        format!(
            "| {} | {} | {} → {} | {:+.1} {}/h | {} – {} {} | {} |\n",
            self.name,
            ys.len(),
            fmt(ys[0]),
            fmt(ys[ys.len() - 1]),
            per_hour,
            self.unit,
            fmt(low),
            fmt(high),
            self.unit,
            if flat { "flat" } else { "grows" }
        )
    }
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The soak run and its report section. A series is "flat" when its
/// trend (the slope times the run's length after warm-up) moves it by less
/// than 5 % of its level (or one unit): judged over the run's own length,
/// so a short run says less than the 30 minutes.
pub fn soak(plan: &Plan) -> String {
    let length = Length::of(plan);
    eprintln!(
        "soak: {:?} of mixed load, a sample every {:?}, warm-up {:?}",
        length.total, length.sample, length.warmup
    );
    let etcd = start_etcd();
    let data = std::env::temp_dir().join(format!("micro-bench-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("soak data dir");
    let registry = [
        "--registry=etcd".to_string(),
        format!("--registry_address={}", etcd.address),
    ];
    let quiet = [("RUST_LOG", "warn".to_string())];
    let mut srv_args = registry.to_vec();
    srv_args.extend([
        "--server_address=127.0.0.1:0".to_string(),
        format!("--data_dir={}", data.display()),
        "--auth_secret=bench-secret".into(),
    ]);
    let user_srv = Proc::spawn(
        "user-srv",
        &plan.bin_dir.join("user-srv"),
        &srv_args,
        &quiet,
    );
    let gw_port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut gw_args = registry.to_vec();
    gw_args.extend([
        format!("--admin_address={admin}"),
        "api".into(),
        "--handler=rpc".into(),
        "--namespace=go.micro.srv".into(),
        format!("--address=127.0.0.1:{gw_port}"),
    ]);
    let gateway = Proc::spawn("micro api", &plan.bin_dir.join("micro"), &gw_args, &quiet);
    let gw = format!("127.0.0.1:{gw_port}");
    // user-srv's answer for a user it does not have: NotFound, 404 at the
    // gateway; every call of the soak asks for it (no store growth).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = crate::fixtures::curl_status(
            "POST",
            &format!("http://{gw}/user/user/query-user-by-name"),
            Some(r#"{"userName":"soak"}"#),
        );
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < until,
            "micro api → user-srv within 60 s (last {status})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = Proc::spawn(
        "soak client",
        &plan.exe,
        &[
            "soak-client".to_string(),
            format!("--registry_address={}", etcd.address),
            format!("--gateway={gw}"),
        ],
        &quiet,
    );
    let (line, _) = client.wait_line(CLIENT_PREFIX, Duration::from_secs(60));
    assert!(line.contains("READY"), "the soak client failed: {line}");

    let processes = [
        ("micro api", gateway.pid()),
        ("user-srv", user_srv.pid()),
        ("client", client.pid()),
    ];
    let mut series: Vec<Series> = Vec::new();
    for (name, _) in &processes {
        series.push(Series::new(&format!("{name} RSS"), "KiB"));
        series.push(Series::new(&format!("{name} fds"), "fds"));
        series.push(Series::new(&format!("{name} threads"), "threads"));
    }
    series.push(Series::new("etcd watchers", "watchers"));
    series.push(Series::new("etcd watch streams", "streams"));
    let started = Instant::now();
    let samples = (length.total.as_secs_f64() / length.sample.as_secs_f64()).ceil() as usize;
    for n in 0..=samples {
        let at = started.elapsed().as_secs_f64();
        for (k, (_, pid)) in processes.iter().enumerate() {
            let s = sample(*pid);
            series[3 * k].push(at, s.rss_kib);
            series[3 * k + 1].push(at, s.fds);
            series[3 * k + 2].push(at, s.threads);
        }
        let metrics = etcd_metrics(&etcd.address);
        let watchers = etcd_gauge(&metrics, "etcd_debugging_mvcc_watcher_total");
        let streams = etcd_gauge(&metrics, "etcd_debugging_mvcc_watch_stream_total");
        series[9].push(at, watchers);
        series[10].push(at, streams);
        eprintln!(
            "  soak {:>5.0} s: gateway {} KiB {} fds, user-srv {} KiB {} fds, client {} KiB {} fds, etcd watchers {}",
            at,
            fmt(series[0].points.last().map_or(f64::NAN, |p| p.1)),
            fmt(series[1].points.last().map_or(f64::NAN, |p| p.1)),
            fmt(series[3].points.last().map_or(f64::NAN, |p| p.1)),
            fmt(series[4].points.last().map_or(f64::NAN, |p| p.1)),
            fmt(series[6].points.last().map_or(f64::NAN, |p| p.1)),
            fmt(series[7].points.last().map_or(f64::NAN, |p| p.1)),
            fmt(watchers)
        );
        if n < samples {
            let next = started + length.sample * (n as u32 + 1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    let elapsed = started.elapsed();
    // The client's totals: its last line, once its stdin closes.
    client.stop();
    let (totals, _) = client.wait_line(" RPC calls (", Duration::from_secs(10));
    drop(gateway);
    drop(user_srv);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&data);

    let warmup = length.warmup.as_secs_f64();
    let hours = (elapsed.as_secs_f64() - warmup).max(0.0) / 3600.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Soak: {:.1} min of mixed load on etcd (`--only soak`)\n",
        elapsed.as_secs_f64() / 60.0
    );
    let _ = writeln!(
        out,
        "RPC calls through the toolkit's client (2 in flight), gateway requests (`micro api \
         --handler=rpc`, 2 in flight, a new connection every 50) and registration churn (a \
         synthetic node registered and the oldest of {CHURN_KEPT} deregistered every 250 ms), \
         sampled every {:?}; slope by least squares over the samples after the first {:?}. \
         Client: {}\n",
        length.sample,
        length.warmup,
        totals
            .split_once(CLIENT_PREFIX)
            .map_or(totals.as_str(), |(_, t)| t)
    );
    out.push_str(
        "| series | samples | first → last | slope | bound (after warm-up) | verdict |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for s in &series {
        out.push_str(&s.row(warmup, hours));
    }
    out.push('\n');
    out
}

/// `micro-bench soak-client`: the load of the soak, until its stdin closes
/// (or SIGTERM); then prints its totals.
pub fn client_child(registry_address: &str, gateway: &str) {
    let backend = Backend::Etcd {
        address: registry_address.to_string(),
    };
    let runtime = Flavor::Multi.runtime();
    runtime.block_on(async move {
        let registry = backend.registry().await;
        let client = Client::new(registry.clone(), ClientOptions::default());
        let running = Arc::new(AtomicBool::new(true));
        let counts: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
        // 0 rpc ok, 1 rpc failed, 2 http ok, 3 http failed, 4 churn ok, 5 churn failed
        // Loads start once user-srv answers a first call (a fresh client
        // may not find it in its first milliseconds: counted apart).
        let mut probe = UserClient::new(client.service("go.micro.srv.user"));
        let mut startup_failures = 0u32;
        let answer_until = Instant::now() + Duration::from_secs(30);
        while let Err(status) = query(&mut probe).await {
            startup_failures += 1;
            if Instant::now() >= answer_until {
                println!("{CLIENT_PREFIX}ERROR no answer from user-srv within 30 s: {status}");
                std::process::exit(1);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(probe);
        let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
        let began = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let (running, counts) = (running.clone(), counts.clone());
            let first_failure = first_failure.clone();
            let mut users = UserClient::new(client.service("go.micro.srv.user"));
            tasks.spawn(async move {
                while running.load(Ordering::Relaxed) {
                    match query(&mut users).await {
                        Err(status) => {
                            // The first one, for the report.
                            let n = counts[1].fetch_add(1, Ordering::Relaxed);
                            let mut first = first_failure.lock().unwrap_or_else(|p| p.into_inner());
                            let at = began.elapsed().as_secs_f64();
                            if n == 0 {
                                *first = Some(format!(
                                    "{:?}: {} ({at:.1} s after the start)",
                                    status.code(),
                                    status.message()
                                ));
                            } else if let Some(text) = first.as_mut() {
                                // The last one's time too.
                                let kept = text.split(" (last ").next().unwrap_or_default().to_string();
                                *text = format!("{kept} (last {at:.1} s)");
                            }
                        }
                        _ => {
                            counts[0].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        for _ in 0..2 {
            let (running, counts) = (running.clone(), counts.clone());
            let gateway = gateway.to_string();
            tasks.spawn(async move { http_loop(&gateway, &running, &counts).await });
        }
        let first_churn_failure = Arc::new(std::sync::Mutex::new(None::<String>));
        {
            let (running, counts) = (running.clone(), counts.clone());
            let first = first_churn_failure.clone();
            tasks.spawn(async move { churn(&registry, &running, &counts, &first).await });
        }
        println!("{CLIENT_PREFIX}READY");
        let stop = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        let term = async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
        };
        tokio::select! {
            _ = stop => {}
            () = term => {}
        }
        running.store(false, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let c = |i: usize| counts[i].load(Ordering::Relaxed);
        let first = first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|f| format!("; the first failed call: {f}"))
            .unwrap_or_default();
        let first_churn = first_churn_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|f| format!("; the first failed registry change: {f}"))
            .unwrap_or_default();
        let startup = if startup_failures > 0 {
            format!(" ({startup_failures} calls failed before the first answer, not counted)")
        } else {
            String::new()
        };
        println!(
            "{CLIENT_PREFIX}{} RPC calls ({} failed), {} gateway requests ({} failed), {} registry changes ({} failed){first}{first_churn}{startup}",
            c(0) + c(1),
            c(1),
            c(2) + c(3),
            c(3),
            c(4) + c(5),
            c(5)
        );
    });
}

/// One QueryUserByName of the user that does not exist; NotFound is
/// user-srv's answer (the call worked), anything else an error.
async fn query<T>(users: &mut UserClient<T>) -> Result<(), tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let request = UserRequest {
        user_name: "soak".into(),
        ..UserRequest::default()
    };
    match users.query_user_by_name(request).await {
        Err(status) if status.code() != tonic::Code::NotFound => Err(status),
        _ => Ok(()),
    }
}

/// Gateway requests over HTTP/1.1 keep-alive, a new connection every 50.
async fn http_loop(gateway: &str, running: &AtomicBool, counts: &[AtomicU64; 6]) {
    while running.load(Ordering::Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(gateway).await else {
            counts[3].fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        else {
            counts[3].fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let conn = tokio::spawn(conn);
        for _ in 0..50 {
            if !running.load(Ordering::Relaxed) {
                break;
            }
            let request = http::Request::post("/user/user/query-user-by-name")
                .header(http::header::HOST, "127.0.0.1")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(br#"{"userName":"soak"}"#)))
                .expect("request");
            let ok = match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status() == http::StatusCode::NOT_FOUND;
                    response.into_body().collect().await.is_ok() && ok
                }
                Err(_) => false,
            };
            counts[if ok { 2 } else { 3 }].fetch_add(1, Ordering::Relaxed);
            if !ok {
                break;
            }
        }
        drop(sender);
        let _ = conn.await;
    }
}

/// Registers a synthetic node and deregisters the oldest of `CHURN_KEPT`
/// every 250 ms, with a 30 s TTL; deregisters what is left at the end.
async fn churn(
    registry: &SharedRegistry,
    running: &AtomicBool,
    counts: &[AtomicU64; 6],
    first_failure: &std::sync::Mutex<Option<String>>,
) {
    let began = Instant::now();
    let count = |result: Result<(), micro_registry::Error>| {
        counts[if result.is_ok() { 4 } else { 5 }].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let mut first = first_failure.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(format!(
                    "{e} ({:.1} s after the start)",
                    began.elapsed().as_secs_f64()
                ));
            }
        }
    };
    let mut kept = std::collections::VecDeque::new();
    let mut n = 0usize;
    let options = RegisterOptions::with_ttl(Duration::from_secs(30));
    while running.load(Ordering::Relaxed) {
        let service = synthetic_service(n % 5);
        let one = service
            .clone()
            .with_node(synthetic_node(&service, n % 5, n));
        count(registry.register(&one, options).await);
        kept.push_back(one);
        if kept.len() > CHURN_KEPT
            && let Some(old) = kept.pop_front()
        {
            count(registry.deregister(&old).await);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for old in kept {
        let _ = registry.deregister(&old).await;
    }
}
