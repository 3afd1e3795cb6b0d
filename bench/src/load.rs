//! Closed-loop load generators: each worker sends a request, waits for the
//! answer, records its latency in an HDR histogram, and sends the next.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use micro_client::{Client, ClientOptions};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;
use tokio::time::Instant;

/// The service name the toolkit client calls.
pub const GREETER: &str = "go.micro.srv.greeter";

/// What one measured round produced.
#[derive(Debug)]
pub struct Round {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
}

impl Round {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Percentile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// How long each round warms up and then measures.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Runs `workers` closed loops of `call` for `timing`; only calls that
/// complete inside the measured window count.
pub(crate) async fn closed_loop<F, Fut>(workers: Vec<F>, timing: Timing) -> Round
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now() + timing.warmup;
    let end = start + timing.measure;
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut call| {
            let errors = errors.clone();
            tokio::spawn(async move {
                let mut hist = histogram();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let ok = call().await;
                    let done = Instant::now();
                    if sent >= start && done <= end {
                        if ok {
                            let us = (done - sent).as_micros().max(1) as u64;
                            let _ = hist.record(us.min(60_000_000));
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                hist
            })
        })
        .collect();
    let mut hist = histogram();
    for task in tasks {
        let part = task.await.expect("load worker");
        hist.add(part).expect("histograms add");
    }
    Round {
        ok: hist.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed: timing.measure,
        hist,
    }
}

/// Which gRPC client drives the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcClient {
    /// A raw `tonic::transport::Channel` per connection.
    Tonic,
    /// The same, each call carrying `grpc-timeout: 5S` as the toolkit client
    /// sends (deadline propagation), to price that header on its own.
    TonicWithDeadline,
    /// A toolkit `Client` per connection (its own node set, so its own
    /// connection), resolving the service in a `MemoryRegistry` that lists the
    /// one server.
    Micro,
    /// [`Micro`](Self::Micro) with the telemetry observer services use
    /// (metrics, and spans when this process exports them).
    MicroTelemetry,
}

/// A toolkit client whose (in-memory) registry lists one greeter node per
/// address in `addrs`.
pub async fn micro_client(addrs: &[SocketAddr]) -> Client {
    micro_client_with(addrs, ClientOptions::default()).await
}

/// [`micro_client`] with these options.
pub async fn micro_client_with(addrs: &[SocketAddr], options: ClientOptions) -> Client {
    micro_client_for(GREETER, addrs, options).await
}

/// A toolkit client whose (in-memory) registry lists `service` with one
/// node per address in `addrs`.
pub async fn micro_client_for(name: &str, addrs: &[SocketAddr], options: ClientOptions) -> Client {
    let registry = Arc::new(MemoryRegistry::new());
    let service = Service {
        name: name.into(),
        version: "latest".into(),
        nodes: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Node {
                id: format!("{name}-{i}"),
                address: a.to_string(),
                ..Node::default()
            })
            .collect(),
        ..Service::default()
    };
    registry
        .register(&service, RegisterOptions::default())
        .await
        .expect("memory registry registers");
    Client::new(registry, options)
}

/// `conns` connections × `per_conn` concurrent calls on each.
pub async fn grpc_round(
    client: GrpcClient,
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    timing: Timing,
) -> Round {
    match client {
        GrpcClient::Tonic | GrpcClient::TonicWithDeadline => {
            let mut clients = Vec::new();
            for _ in 0..conns {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("uri")
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .expect("tonic connects");
                clients.push(GreeterClient::new(channel));
            }
            let deadline =
                (client == GrpcClient::TonicWithDeadline).then_some(Duration::from_secs(5));
            grpc_load(clients, per_conn, timing, deadline).await
        }
        GrpcClient::Micro | GrpcClient::MicroTelemetry => {
            let mut clients = Vec::new();
            let mut keep = Vec::new();
            for _ in 0..conns {
                let client = if client == GrpcClient::MicroTelemetry {
                    let plain = micro_client(&[addr]).await;
                    Client::with_observer(
                        plain.registry().clone(),
                        ClientOptions::default(),
                        Arc::new(micro_telemetry::client::ClientTelemetry),
                    )
                } else {
                    micro_client(&[addr]).await
                };
                let nodes = client.nodes(GREETER).await;
                assert_eq!(nodes.len(), 1, "the client sees the server");
                clients.push(GreeterClient::new(client.service(GREETER)));
                keep.push(client);
            }
            let round = grpc_load(clients, per_conn, timing, None).await;
            drop(keep);
            round
        }
    }
}

async fn grpc_load<T>(
    clients: Vec<GreeterClient<T>>,
    per_conn: usize,
    timing: Timing,
    deadline: Option<Duration>,
) -> Round
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::Future: Send,
{
    // Connect (and, for the toolkit, make the first call) before the clock.
    for client in &clients {
        let mut c = client.clone();
        c.hello(Request {
            name: "huohuo".into(),
            ..Default::default()
        })
        .await
        .expect("first call answers");
    }
    let mut workers = Vec::new();
    for client in &clients {
        for _ in 0..per_conn {
            let client = client.clone();
            workers.push(move || {
                let mut client = client.clone();
                async move {
                    let mut request = tonic::Request::new(Request {
                        name: "huohuo".into(),
                        ..Default::default()
                    });
                    if let Some(deadline) = deadline {
                        request.set_timeout(deadline);
                    }
                    client.hello(request).await.is_ok()
                }
            });
        }
    }
    closed_loop(workers, timing).await
}

/// HTTP/1.1 keep-alive: `conns` connections, one request in flight on each,
/// `GET path` (or `POST path` with a JSON `body`) against `addr`; a 200
/// counts as success.
pub async fn http_round(
    addr: SocketAddr,
    path: &'static str,
    body: Option<&'static str>,
    conns: usize,
    timing: Timing,
) -> Round {
    let mut workers = Vec::new();
    for _ in 0..conns {
        let sender = Arc::new(tokio::sync::Mutex::new(http1_connect(addr).await));
        workers.push(move || {
            let sender = sender.clone();
            async move {
                let mut sender = sender.lock().await;
                let request = match body {
                    None => http::Request::get(path)
                        .header(http::header::HOST, "127.0.0.1")
                        .body(Full::new(Bytes::new())),
                    Some(json) => http::Request::post(path)
                        .header(http::header::HOST, "127.0.0.1")
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from_static(json.as_bytes()))),
                }
                .expect("request");
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status() == http::StatusCode::OK;
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
        });
    }
    closed_loop(workers, timing).await
}

/// One HTTP/1.1 keep-alive connection to `addr` (no Nagle), its driver
/// spawned.
pub(crate) async fn http1_connect(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("HTTP connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

/// R8: a toolkit client over `addrs` (one node each) at `concurrency` calls in
/// flight; `victim` is killed with SIGKILL a quarter into the measured window.
/// Returns the round, when the last attempt reached the victim after the kill
/// (if any did), and how many attempts did.
pub async fn kill_round(
    addrs: Vec<SocketAddr>,
    concurrency: usize,
    timing: Timing,
    victim: (crate::proc::Proc, SocketAddr),
    idempotent: bool,
) -> (Round, Option<Duration>, u64) {
    let client = micro_client(&addrs).await;
    assert_eq!(client.nodes(GREETER).await.len(), addrs.len());
    let mut channel = client.service(GREETER);
    if idempotent {
        channel = channel.idempotent();
    }
    let set = channel.node_set().clone();
    let greeter = GreeterClient::new(channel);
    for _ in 0..addrs.len() * 2 {
        greeter
            .clone()
            .hello(Request {
                name: "huohuo".into(),
                ..Default::default()
            })
            .await
            .expect("warm-up call");
    }
    let (mut victim, victim_addr) = victim;
    let victim_addr = victim_addr.to_string();
    let attempts_on_victim = move |set: &micro_client::NodeSet| {
        set.stats()
            .into_iter()
            .find(|s| s.node.address == victim_addr)
            .map_or(0, |s| s.attempts)
    };
    let kill_at = timing.warmup + timing.measure / 4;
    let end = Instant::now() + timing.warmup + timing.measure;
    let watcher = tokio::spawn(async move {
        tokio::time::sleep(kill_at).await;
        let base = attempts_on_victim(&set);
        let killed = tokio::task::spawn_blocking(move || {
            let killed = Instant::now();
            victim.kill9();
            killed
        })
        .await
        .expect("kill");
        let mut seen = base;
        let mut last = None;
        while Instant::now() < end {
            let now = attempts_on_victim(&set);
            if now > seen {
                seen = now;
                last = Some(Instant::now() - killed);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (last, seen - base)
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let greeter = greeter.clone();
            move || {
                let mut greeter = greeter.clone();
                async move {
                    greeter
                        .hello(Request {
                            name: "huohuo".into(),
                            ..Default::default()
                        })
                        .await
                        .is_ok()
                }
            }
        })
        .collect();
    let round = closed_loop(workers, timing).await;
    let (last, after) = watcher.await.expect("watcher");
    drop(client);
    (round, last, after)
}
