//! Instruction counts of the hot paths under `valgrind --tool=callgrind`:
//! deterministic where wall-clock figures are noisy, so a regression of the
//! resolver, the selector, the codecs or the client's per-call work shows as
//! a changed number, not as a blip in a throughput table.
//!
//! Each workload runs in a child process under callgrind, twice: with `n`
//! and with `2n` operations, counting only the instructions executed inside
//! [`measured`] on the measuring thread (`--toggle-collect`). The cost of
//! one operation is the difference divided by `n`: start-up, connection set
//! up and warm-up cancel out. Calls go to a server in another process (not
//! under valgrind), so only the client side is counted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use micro_api::convert::to_api_request;
use micro_api::dynamic::{json_to_message, message_to_json};
use micro_api::resolver::Resolver;
use micro_api_proto::Request as ApiRequest;
use micro_selector::{Selector, Strategy};
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::load::{self, GREETER};
use crate::proc::Proc;

/// One hot path: its name, what one operation is, and how many to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `Selector::select`, round robin over 8 nodes, every node eligible.
    Selector,
    /// The gateway's path resolver: `/user/say/hello` → service and endpoint.
    Resolver,
    /// The `api` handler's codec: HTTP request → `go.api.Request`, encoded
    /// and decoded with prost.
    ApiCodec,
    /// The `rpc` handler's codec: JSON → dynamic message → protobuf bytes,
    /// and a reply's protobuf bytes → JSON.
    JsonCodec,
    /// One unary call through a raw tonic `Channel`.
    CallTonic,
    /// The same, with a `grpc-timeout` header (as deadline propagation sends).
    CallTonicDeadline,
    /// One unary call, tonic's client over hyper's HTTP/2 connection itself
    /// (no `Channel`: no buffer task, no reconnect, no timeout layer).
    CallH2,
    /// One unary call through the toolkit's `Client` (registry lookup,
    /// selector, deadline, retry bookkeeping).
    CallMicro,
    /// The same with the telemetry observer services use: metrics.
    CallMicroMetrics,
    /// The same with metrics and tracing set up, no span sampled.
    CallMicroTraced,
}

impl Workload {
    const ALL: [Workload; 10] = [
        Workload::Selector,
        Workload::Resolver,
        Workload::ApiCodec,
        Workload::JsonCodec,
        Workload::CallTonic,
        Workload::CallTonicDeadline,
        Workload::CallH2,
        Workload::CallMicro,
        Workload::CallMicroMetrics,
        Workload::CallMicroTraced,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Selector => "selector",
            Workload::Resolver => "resolver",
            Workload::ApiCodec => "api-codec",
            Workload::JsonCodec => "json-codec",
            Workload::CallTonic => "call-tonic",
            Workload::CallTonicDeadline => "call-tonic-deadline",
            Workload::CallH2 => "call-h2",
            Workload::CallMicro => "call-micro",
            Workload::CallMicroMetrics => "call-micro-metrics",
            Workload::CallMicroTraced => "call-micro-traced",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Workload::Selector => "round robin `Selector::select` over 8 nodes",
            Workload::Resolver => "gateway resolver, `/user/say/hello` → route",
            Workload::ApiCodec => "HTTP request → `go.api.Request`, prost encode + decode",
            Workload::JsonCodec => "rpc handler: JSON → protobuf, protobuf → JSON",
            Workload::CallTonic => "unary call, raw tonic `Channel` (client side)",
            Workload::CallTonicDeadline => "unary call, raw tonic + `grpc-timeout` (client side)",
            Workload::CallH2 => "unary call, tonic client on a bare hyper HTTP/2 connection",
            Workload::CallMicro => "unary call, toolkit `Client` (client side)",
            Workload::CallMicroMetrics => "the same, with the telemetry observer (metrics)",
            Workload::CallMicroTraced => "the same, metrics + tracing set up, no span sampled",
        }
    }

    /// Operations in the first run (the second runs twice as many).
    fn ops(self) -> u64 {
        match self {
            Workload::Selector | Workload::Resolver => 20_000,
            Workload::ApiCodec | Workload::JsonCodec => 2_000,
            Workload::CallTonic
            | Workload::CallTonicDeadline
            | Workload::CallH2
            | Workload::CallMicro
            | Workload::CallMicroMetrics
            | Workload::CallMicroTraced => 400,
        }
    }

    fn needs_server(self) -> bool {
        matches!(
            self,
            Workload::CallTonic
                | Workload::CallTonicDeadline
                | Workload::CallH2
                | Workload::CallMicro
                | Workload::CallMicroMetrics
                | Workload::CallMicroTraced
        )
    }
}

/// The function whose instructions callgrind counts (`--toggle-collect`).
#[inline(never)]
fn measured<R>(work: impl FnOnce() -> R) -> R {
    black_box(work())
}

/// Runs `ops` operations of `workload` (in the child under callgrind).
pub fn run_workload(workload: Workload, ops: u64, server: Option<SocketAddr>) {
    match workload {
        Workload::Selector => {
            let selector = Selector::new(Strategy::RoundRobin);
            let nodes: Vec<u32> = (0..8).collect();
            measured(|| {
                let mut sum = 0u64;
                for _ in 0..ops {
                    let pick = selector.select(black_box(&nodes), |n| *n != 8);
                    sum += u64::from(*pick.expect("a node"));
                }
                sum
            });
        }
        Workload::Resolver => {
            let resolver = Resolver::new("go.micro.api");
            measured(|| {
                for _ in 0..ops {
                    let route = resolver.resolve(black_box("/user/say/hello"));
                    black_box(route.expect("resolves"));
                }
            });
        }
        Workload::ApiCodec => {
            let (parts, ()) = http::Request::builder()
                .method("GET")
                .uri("/user/say/hello?name=huohuo")
                .header("host", "127.0.0.1:8080")
                .header("user-agent", "curl/7.88.1")
                .header("accept", "*/*")
                .body(())
                .expect("a request")
                .into_parts();
            let remote: SocketAddr = "127.0.0.1:50000".parse().expect("address");
            measured(|| {
                for _ in 0..ops {
                    let request = to_api_request(black_box(&parts), b"", Some(remote));
                    let bytes = request.encode_to_vec();
                    let back = ApiRequest::decode(Bytes::from(bytes)).expect("decodes");
                    black_box(back);
                }
            });
        }
        Workload::JsonCodec => {
            let pool = DescriptorPool::decode(micro_testing::FILE_DESCRIPTOR_SET)
                .expect("greeter descriptors");
            let input = pool
                .get_message_by_name("go.micro.srv.greeter.Request")
                .expect("Request message");
            let output = pool
                .get_message_by_name("go.micro.srv.greeter.Response")
                .expect("Response message");
            let reply = micro_testing::greeter::Response {
                msg: "Hello huohuo".into(),
            }
            .encode_to_vec();
            measured(|| {
                for _ in 0..ops {
                    let message = json_to_message(input.clone(), br#"{"name":"huohuo"}"#)
                        .expect("valid JSON");
                    black_box(message.encode_to_vec());
                    let answer =
                        DynamicMessage::decode(output.clone(), reply.as_slice()).expect("decodes");
                    black_box(message_to_json(&answer).expect("JSON"));
                }
            });
        }
        Workload::CallH2 => {
            let server = server.expect("calls need --server");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let request = || {
                tonic::Request::new(Request {
                    name: "huohuo".into(),
                    ..Default::default()
                })
            };
            let mut greeter = runtime.block_on(async {
                let tcp = tokio::net::TcpStream::connect(server)
                    .await
                    .expect("connects");
                tcp.set_nodelay(true).expect("nodelay");
                let (send, connection) =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .expect("HTTP/2 handshake");
                tokio::spawn(connection);
                let origin: http::Uri = format!("http://{server}").parse().expect("uri");
                let mut greeter = GreeterClient::with_origin(BareH2 { send }, origin);
                greeter.hello(request()).await.expect("first call answers");
                greeter
            });
            measured(|| {
                runtime.block_on(async {
                    for _ in 0..ops {
                        greeter.hello(request()).await.expect("call answers");
                    }
                })
            });
        }
        Workload::CallTonic
        | Workload::CallTonicDeadline
        | Workload::CallMicro
        | Workload::CallMicroMetrics
        | Workload::CallMicroTraced => {
            let server = server.expect("calls need --server");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let deadline = workload == Workload::CallTonicDeadline;
            let request = move || {
                let mut request = tonic::Request::new(Request {
                    name: "huohuo".into(),
                    ..Default::default()
                });
                if deadline {
                    request.set_timeout(Duration::from_secs(5));
                }
                request
            };
            // Unsampled tracing: spans made and dropped, nothing exported
            // (the endpoint is never dialled for want of spans).
            let _trace = (workload == Workload::CallMicroTraced).then(|| {
                let _enter = runtime.enter();
                micro_telemetry::trace::init_with(micro_telemetry::trace::TraceConfig {
                    service_name: "hotpath".into(),
                    export: micro_telemetry::trace::Export::To("http://127.0.0.1:9".into()),
                    sampling: micro_telemetry::trace::Sampling::ParentRatio(0.0),
                })
                .expect("tracing set up")
            });
            if workload != Workload::CallTonic && workload != Workload::CallTonicDeadline {
                let (_client, mut greeter) = runtime.block_on(async {
                    let plain = load::micro_client(&[server]).await;
                    let client = if workload == Workload::CallMicro {
                        plain
                    } else {
                        micro_client::Client::with_observer(
                            plain.registry().clone(),
                            micro_client::ClientOptions::default(),
                            std::sync::Arc::new(micro_telemetry::client::ClientTelemetry),
                        )
                    };
                    let mut greeter = GreeterClient::new(client.service(GREETER));
                    greeter.hello(request()).await.expect("first call answers");
                    (client, greeter)
                });
                measured(|| {
                    runtime.block_on(async {
                        for _ in 0..ops {
                            greeter.hello(request()).await.expect("call answers");
                        }
                    })
                });
            } else {
                let mut greeter = runtime.block_on(async {
                    let channel =
                        tonic::transport::Endpoint::from_shared(format!("http://{server}"))
                            .expect("uri")
                            .tcp_nodelay(true)
                            .connect()
                            .await
                            .expect("tonic connects");
                    let mut greeter = GreeterClient::new(channel);
                    greeter.hello(request()).await.expect("first call answers");
                    greeter
                });
                measured(|| {
                    runtime.block_on(async {
                        for _ in 0..ops {
                            greeter.hello(request()).await.expect("call answers");
                        }
                    })
                });
            }
        }
    }
}

/// hyper's HTTP/2 connection as a tonic transport, nothing around it.
#[derive(Clone)]
struct BareH2 {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl tower::Service<http::Request<tonic::body::Body>> for BareH2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}

/// Instructions per operation, per workload, measured now.
#[derive(Debug, Default)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    fn parse(text: &str) -> Counts {
        let map = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.parse().ok()?))
            })
            .collect();
        Counts(map)
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# Instructions per operation (callgrind), written by `micro-bench hotpaths --save`.\n",
        );
        for (name, ir) in &self.0 {
            let _ = writeln!(out, "{name} {ir}");
        }
        out
    }
}

/// The committed baseline the counts are compared with.
pub fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hotpaths.baseline")
}

/// Measures `only` (every workload if empty) under callgrind; returns the
/// markdown section. `save` writes the new counts into the committed
/// baseline (counts of workloads not run are kept).
pub fn run(exe: &Path, only: &[Workload], save: bool) -> String {
    let mut out = String::from("### Hot paths: instructions per operation (callgrind)\n\n");
    if Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        out.push_str(
            "Skipped: `valgrind` is not installed (Debian: `apt-get install -y valgrind`).\n\n",
        );
        return out;
    }
    let baseline = std::fs::read_to_string(baseline_path())
        .map(|t| Counts::parse(&t))
        .unwrap_or_default();
    let scratch = tempdir();
    let mut server: Option<(Proc, SocketAddr)> = None;
    let mut counts = Counts::default();
    let selected = Workload::ALL
        .into_iter()
        .filter(|w| only.is_empty() || only.contains(w));
    let _ = writeln!(
        out,
        "| hot path | what one operation is | instructions / op | baseline | change |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for workload in selected {
        let address = if workload.needs_server() {
            if server.is_none() {
                server = Some(start_server(exe));
            }
            server.as_ref().map(|(_, a)| *a)
        } else {
            None
        };
        let n = workload.ops();
        let per_op = match (
            callgrind(exe, &scratch, workload, n, address),
            callgrind(exe, &scratch, workload, 2 * n, address),
        ) {
            (Ok(one), Ok(two)) => two.saturating_sub(one) / n,
            (Err(e), _) | (_, Err(e)) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | failed: {e} | | |",
                    workload.name(),
                    workload.describe()
                );
                continue;
            }
        };
        let base = baseline.0.get(workload.name()).copied();
        let change = base.map_or("—".to_string(), |b| {
            format!("{:+.1} %", (per_op as f64 / b as f64 - 1.0) * 100.0)
        });
        let _ = writeln!(
            out,
            "| {} | {} | {per_op} | {} | {change} |",
            workload.name(),
            workload.describe(),
            base.map_or("—".to_string(), |b| b.to_string()),
        );
        counts.0.insert(workload.name().to_string(), per_op);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&scratch);
    if let (Some(tonic), Some(micro)) = (counts.0.get("call-tonic"), counts.0.get("call-micro")) {
        let _ = writeln!(
            out,
            "\nClient side of a unary call: toolkit / raw tonic = {:.2} (instructions).",
            *micro as f64 / *tonic as f64
        );
    }
    out.push('\n');
    if save {
        let mut merged = baseline;
        merged.0.extend(counts.0);
        match std::fs::write(baseline_path(), merged.render()) {
            Ok(()) => {
                let _ = writeln!(out, "Baseline saved to `bench/hotpaths.baseline`.\n");
            }
            Err(e) => {
                let _ = writeln!(out, "Could not save the baseline: {e}\n");
            }
        }
    }
    out
}

fn start_server(exe: &Path) -> (Proc, SocketAddr) {
    let args = ["serve", "--kind", "tonic", "--flavor", "multi"].map(String::from);
    let mut p = Proc::spawn("hotpaths-server", exe, &args, &[]);
    let (addr, _) = p.wait_ready();
    (p, addr)
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("micro-bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Instructions counted inside [`measured`] for `ops` operations.
fn callgrind(
    exe: &Path,
    scratch: &Path,
    workload: Workload,
    ops: u64,
    server: Option<SocketAddr>,
) -> Result<u64, String> {
    let file = scratch.join(format!("{}-{ops}.out", workload.name()));
    // Pinned as in the full run (server on its core, this on the load core):
    // unpinned, the call counts come out ~25 % lower (not traced why).
    let mut command = Command::new("taskset");
    command
        .args(["-c", &crate::proc::LOAD_CORE.to_string(), "valgrind"])
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*hotpaths::measured*")
        .arg(exe)
        .args(["hotpath", "--workload", workload.name(), "--ops"])
        .arg(ops.to_string());
    if let Some(server) = server {
        command.arg("--server").arg(server.to_string());
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(format!("valgrind exited with {}: {last}", output.status));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("no callgrind output {}: {e}", file.display()))?;
    let _ = std::fs::remove_file(&file);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .filter(|&ir: &u64| ir > 0)
        .ok_or_else(|| "no instructions counted (is `measured` inlined?)".to_string())
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn baseline_round_trips() {
        let counts = Counts::parse("# comment\nselector 41\ncall-micro 90000\nbroken\n");
        assert_eq!(counts.0.len(), 2);
        assert_eq!(Counts::parse(&counts.render()).0, counts.0);
    }
}
