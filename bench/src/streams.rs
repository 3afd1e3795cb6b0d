//! R15: server streaming. The greeter's `Stream` (10,000 replies a call,
//! one stream at a time), measured at the receiving end: messages per
//! second, and the gap between consecutive messages (its percentiles in the
//! table's latency columns).
//!
//! - toolkit server + toolkit client against raw tonic server + raw tonic
//!   channel (the goal: ≥ 0.95 of tonic's messages/s), and a raw tonic
//!   client to the toolkit server (which side a difference comes from);
//! - through `micro api`'s WebSocket (a real gateway process, the toolkit
//!   server behind it found in etcd; JSON text frames) against a direct
//!   gRPC stream to the same server.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;
use micro_registry::{Endpoint, Node, RegisterOptions, Registry, Service};
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;
use tokio::time::Instant;

use crate::fixtures::{Plan, grpc_server, interleaved, start_etcd};
use crate::load::{GREETER, Round, Timing, micro_client};
use crate::proc::{Proc, free_port};
use crate::report;
use crate::servers::Flavor;

/// Replies per stream: the greeter's most.
const COUNT: i32 = 10_000;

/// What receives the stream.
#[derive(Clone, Copy, Debug)]
enum Receiver {
    /// A raw tonic channel to the address.
    Tonic(SocketAddr),
    /// A toolkit client finding the address in its registry.
    Micro(SocketAddr),
    /// A WebSocket to this gateway address.
    Gateway(SocketAddr),
}

pub(crate) fn r15(plan: &Plan) -> String {
    eprintln!("R15");
    let flavor = Flavor::Multi;
    let (_tonic, tonic_addr) = grpc_server(plan, "tonic", flavor);
    let (_micro, micro_addr) = grpc_server(plan, "micro", flavor);
    let etcd = start_etcd();
    let (_gateway, gateway_addr) = gateway(plan, &etcd.address, micro_addr);

    let compare = |peers: &[(&str, Receiver)]| {
        let labels: Vec<&str> = peers.iter().map(|(label, _)| *label).collect();
        interleaved(plan, "stream", &labels, |i| {
            flavor
                .runtime()
                .block_on(stream_round(peers[i].1, plan.timing))
        })
    };
    let toolkit = compare(&[
        (
            "tonic server + tonic client (baseline)",
            Receiver::Tonic(tonic_addr),
        ),
        ("micro server + micro client", Receiver::Micro(micro_addr)),
        // Which side any difference comes from.
        ("micro server + tonic client", Receiver::Tonic(micro_addr)),
    ]);
    let gateway = compare(&[
        (
            "micro server, direct gRPC stream (baseline)",
            Receiver::Micro(micro_addr),
        ),
        (
            "micro server via micro api WebSocket",
            Receiver::Gateway(gateway_addr),
        ),
    ]);
    let mut out = report::table(
        "R15: server streaming, messages/s and the gap between messages (the latency columns), toolkit vs raw tonic",
        &[("1 stream × 10,000 msgs".to_string(), toolkit)],
    );
    out.push_str(&report::table(
        "R15 gateway: the same stream through micro api's WebSocket vs a direct gRPC stream",
        &[("1 stream × 10,000 msgs".to_string(), gateway)],
    ));
    drop(etcd);
    out
}

/// `micro api` on the server core, the micro server registered in etcd
/// with its streaming endpoint marked, as the server registers it.
fn gateway(plan: &Plan, etcd: &str, server: SocketAddr) -> (Proc, SocketAddr) {
    let runtime = Flavor::Multi.runtime();
    runtime.block_on(async {
        let options = micro_registry_etcd::EtcdOptions {
            endpoints: vec![etcd.to_string()],
            ..micro_registry_etcd::EtcdOptions::default()
        };
        let registry = micro_registry_etcd::EtcdRegistry::connect(options)
            .await
            .expect("etcd registry");
        let service = Service {
            name: GREETER.into(),
            version: "latest".into(),
            endpoints: vec![Endpoint {
                name: "Greeter.Stream".into(),
                metadata: [("stream".to_string(), "true".to_string())].into(),
                ..Endpoint::default()
            }],
            nodes: vec![Node {
                id: format!("{GREETER}-r15"),
                address: server.to_string(),
                ..Node::default()
            }],
            ..Service::default()
        };
        registry
            .register(
                &service,
                RegisterOptions::with_ttl(Duration::from_secs(600)),
            )
            .await
            .expect("register the greeter");
    });
    let port = free_port();
    let args = vec![
        "--registry=etcd".to_string(),
        format!("--registry_address={etcd}"),
        "api".into(),
        "--namespace=go.micro.srv".into(),
        format!("--address=127.0.0.1:{port}"),
    ];
    let proc = Proc::spawn(
        "micro api",
        &plan.bin_dir.join("micro"),
        &args,
        &[("RUST_LOG", "warn".to_string())],
    );
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // Routable once a stream opens through it.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = runtime.block_on(async {
            let url = format!("ws://{address}/greeter/greeter/stream?name=r&count=1");
            tokio_tungstenite::connect_async(url).await.is_ok()
        });
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "micro api did not route the stream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, address)
}

/// Streams one after another for the warm-up, then for the measured time:
/// every message counted, every gap between two messages of a stream
/// recorded (µs).
async fn stream_round(receiver: Receiver, timing: Timing) -> Round {
    let mut source = Source::open(receiver).await;
    let warm_until = Instant::now() + timing.warmup;
    while Instant::now() < warm_until {
        source.stream(None).await;
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let (mut ok, mut errors) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < timing.measure {
        match source.stream(Some(&mut hist)).await {
            Some(messages) => ok += messages,
            None => errors += 1,
        }
    }
    Round {
        ok,
        errors,
        elapsed: started.elapsed(),
        hist,
    }
}

/// An open way to the greeter.
enum Source {
    Grpc(GreeterClient<tonic::transport::Channel>),
    Micro {
        client: GreeterClient<micro_client::ServiceChannel>,
        /// Kept while the channel is used (it holds the node set).
        _toolkit: micro_client::Client,
    },
    Gateway(SocketAddr),
}

impl Source {
    async fn open(receiver: Receiver) -> Source {
        match receiver {
            Receiver::Tonic(addr) => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("uri")
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .expect("tonic connects");
                Source::Grpc(GreeterClient::new(channel))
            }
            Receiver::Micro(addr) => {
                let client = micro_client(&[addr]).await;
                let nodes = client.nodes(GREETER).await;
                assert_eq!(nodes.len(), 1, "the client sees the server");
                Source::Micro {
                    client: GreeterClient::new(client.service(GREETER)),
                    _toolkit: client,
                }
            }
            Receiver::Gateway(addr) => Source::Gateway(addr),
        }
    }

    /// One whole stream; the messages received, `None` if it failed.
    async fn stream(&mut self, hist: Option<&mut Histogram<u64>>) -> Option<u64> {
        let request = Request {
            name: "r15".into(),
            count: COUNT,
        };
        let mut gaps = Gaps::new(hist);
        match self {
            Source::Grpc(client) => {
                let mut replies = client.stream(request).await.ok()?.into_inner();
                while replies.message().await.ok()?.is_some() {
                    gaps.message();
                }
            }
            Source::Micro { client, .. } => {
                let mut replies = client.stream(request).await.ok()?.into_inner();
                while replies.message().await.ok()?.is_some() {
                    gaps.message();
                }
            }
            Source::Gateway(addr) => {
                let url = format!("ws://{addr}/greeter/greeter/stream?name=r15&count={COUNT}");
                let mut request =
                    tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                        url,
                    )
                    .ok()?;
                request.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/json"),
                );
                let (mut ws, _) = tokio_tungstenite::connect_async(request).await.ok()?;
                use tokio_tungstenite::tungstenite::Message;
                loop {
                    match ws.next().await? {
                        Ok(Message::Text(_) | Message::Binary(_)) => gaps.message(),
                        Ok(Message::Close(frame)) => {
                            if frame.is_none_or(|f| u16::from(f.code) != 1000) {
                                return None;
                            }
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
            }
        }
        (gaps.count == u64::try_from(COUNT).unwrap_or(0)).then_some(gaps.count)
    }
}

/// The gaps between the messages of one stream.
struct Gaps<'a> {
    hist: Option<&'a mut Histogram<u64>>,
    last: Option<Instant>,
    count: u64,
}

impl<'a> Gaps<'a> {
    fn new(hist: Option<&'a mut Histogram<u64>>) -> Self {
        Gaps {
            hist,
            last: None,
            count: 0,
        }
    }

    fn message(&mut self) {
        let now = Instant::now();
        if let (Some(last), Some(hist)) = (self.last, self.hist.as_deref_mut()) {
            let gap = u64::try_from(now.duration_since(last).as_micros()).unwrap_or(u64::MAX);
            let _ = hist.record(gap.max(1));
        }
        self.last = Some(now);
        self.count += 1;
    }
}
