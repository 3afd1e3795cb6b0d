//! R17: events, publish → handler. Messages/s handled and the latency from
//! the start of `publish` to the handler (the latency columns), with one
//! subscriber and with a queue group of 3, each backend against the raw
//! client doing the same work:
//!
//! - `nats` (micro-broker's NatsBroker) against raw async-nats core
//!   publish / (queue) subscribe;
//! - `jetstream` (JetStreamBroker: PubAck awaited, durable pull consumer,
//!   acknowledgement confirmed) against raw async-nats JetStream doing the
//!   same (publish awaiting its PubAck, a durable pull consumer, double ack);
//!
//!   The same work, for both: what a user's code does to talk to go-micro
//!   without the toolkit. Each raw publisher writes go-micro's envelope
//!   (`{"Header":{"Micro-Topic":…},"Body":"<base64>"}`) with serde_json and
//!   base64, each raw subscriber reads it back the same way and hands the
//!   decoded body to the handler ([`GoEnvelope`]). The bare 8-byte body
//!   (nothing a go-micro service could read) is an extra row for nats;
//!   ratios are against the envelope baseline.
//! - `http` (HttpBroker on a memory registry) against a raw hyper POST loop
//!   to axum receivers (a queue group of 3: the POSTs spread over 3), which
//!   also writes and reads the envelope.
//!
//! Connections as deployed, alike on both sides: each subscriber is its
//! own process, so its own connection (one per member of a queue group),
//! and the publisher another one. (The raw JetStream baseline used to run
//! its publisher and its three pull streams on one shared connection.)
//!
//! Four publishing tasks share a window of 256 messages not yet handled, so
//! a core NATS publisher (which returns before delivery) cannot outrun its
//! subscriber; the timestamp travels in the body. The warm-up and the
//! measured second start once both sides are set up (connections,
//! subscriptions, the http broker's registrations found). Then the idle RSS of a
//! micro server subscribing to one topic against the same server without
//! subscriptions (hidden subcommand `events-idle`), per backend.
//!
//! `R17_ONLY=nats|jetstream|http|idle` runs one part alone, and
//! `R17_PEER=raw|micro` one side of it (profiling).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use micro_broker::http::{HttpBroker, HttpOptions};
use micro_broker::jetstream::{JetStreamBroker, JetStreamOptions};
use micro_broker::nats::{NatsBroker, NatsOptions};
use micro_broker::{Event, HandlerError, Message, SharedBroker, SubscribeOptions};
use micro_registry::memory::MemoryRegistry;
use micro_testing::nats::{JetStreamServer, NatsServer};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::fixtures::{Plan, interleaved};
use crate::load::{Round, Timing, http1_connect};
use crate::proc::Proc;
use crate::report;
use crate::servers::Flavor;

/// Messages published but not yet handled, at most.
const WINDOW: usize = 256;
/// Publishing tasks.
const PUBLISHERS: usize = 4;

/// go-micro's broker message as a user's own code would write and read
/// it with serde_json and base64 (what the raw baselines do).
#[derive(serde::Serialize, serde::Deserialize)]
struct GoEnvelope {
    #[serde(rename = "Header")]
    header: std::collections::HashMap<String, String>,
    #[serde(rename = "Body")]
    body: String,
}

impl GoEnvelope {
    fn write(topic: &str, body: &[u8]) -> Bytes {
        use base64::Engine;
        let envelope = GoEnvelope {
            header: [("Micro-Topic".to_string(), topic.to_string())].into(),
            body: base64::engine::general_purpose::STANDARD.encode(body),
        };
        Bytes::from(serde_json::to_vec(&envelope).expect("an envelope"))
    }

    /// The body, `None` if `payload` is no envelope.
    fn read(payload: &[u8]) -> Option<Vec<u8>> {
        use base64::Engine;
        let envelope: GoEnvelope = serde_json::from_slice(payload).ok()?;
        base64::engine::general_purpose::STANDARD
            .decode(envelope.body)
            .ok()
    }
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    /// Raw core NATS, the bare body (no envelope).
    RawCoreBare,
    RawCore,
    MicroNats,
    RawJetStream,
    MicroJetStream,
    RawHttp,
    MicroHttp,
}

pub(crate) fn r17(plan: &Plan) -> String {
    eprintln!("R17");
    let runtime = Flavor::Multi.runtime();
    let core = NatsServer::start();
    let js = JetStreamServer::start();
    let servers = Servers {
        core: core.url(),
        js: js.url(),
    };
    let groups = [("1 subscriber", 1usize), ("queue group of 3", 3)];
    let mut out = String::new();
    let peers: [(&str, Vec<(&str, Peer)>); 3] = [
        (
            "R17 nats: publish → handler, micro nats broker vs raw async-nats core",
            vec![
                (
                    "raw async-nats core, go-micro envelope (baseline)",
                    Peer::RawCore,
                ),
                ("micro nats broker", Peer::MicroNats),
                ("raw async-nats core, bare body", Peer::RawCoreBare),
            ],
        ),
        (
            "R17 jetstream: publish (PubAck) → handler (ack confirmed), micro jetstream broker vs raw async-nats JetStream",
            vec![
                (
                    "raw async-nats JetStream, go-micro envelope (baseline)",
                    Peer::RawJetStream,
                ),
                ("micro jetstream broker", Peer::MicroJetStream),
            ],
        ),
        (
            "R17 http: publish → handler, micro http broker vs raw hyper POST loop",
            vec![
                ("raw hyper POST → axum (baseline)", Peer::RawHttp),
                ("micro http broker", Peer::MicroHttp),
            ],
        ),
    ];
    let only = std::env::var("R17_ONLY").ok();
    for (title, peers) in peers {
        if let Some(only) = &only
            && !title.starts_with(&format!("R17 {only}:"))
        {
            continue;
        }
        // `R17_PEER=raw|micro`: only the peers whose label starts so
        // (profiling one side alone).
        let peers: Vec<(&str, Peer)> = match std::env::var("R17_PEER") {
            Ok(side) => peers
                .into_iter()
                .filter(|(label, _)| label.starts_with(&side))
                .collect(),
            Err(_) => peers,
        };
        let labels: Vec<&str> = peers.iter().map(|(label, _)| *label).collect();
        let shapes: Vec<(String, Vec<report::PeerRounds>)> = groups
            .iter()
            .map(|&(shape, subscribers)| {
                let rows = interleaved(plan, shape, &labels, |i| {
                    runtime.block_on(round(&servers, peers[i].1, subscribers, plan.timing))
                });
                (shape.to_string(), rows)
            })
            .collect();
        out.push_str(&report::table(title, &shapes));
    }
    if only.as_deref().is_none_or(|only| only == "idle") {
        out.push_str(&idle_rss(plan, &servers));
    }
    drop((core, js));
    out
}

struct Servers {
    core: String,
    js: String,
}

/// What every peer's handler does: the latency of a message handled in
/// the measured window recorded, the window's slot given back.
struct Meter {
    base: Instant,
    /// The warm-up's end and the measured window's, set once the peer is
    /// set up ([`start`](Self::start)): a slow setup (connections, the
    /// http broker's registrations) takes nothing from the round.
    span: OnceLock<(Instant, Instant)>,
    timing: Timing,
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    window: Semaphore,
}

impl Meter {
    fn new(timing: Timing) -> Arc<Meter> {
        let base = Instant::now();
        Arc::new(Meter {
            base,
            span: OnceLock::new(),
            timing,
            hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")),
            ok: AtomicU64::new(0),
            window: Semaphore::new(WINDOW),
        })
    }

    /// Starts the warm-up, then the measured window; returns its end.
    fn start(&self) -> Instant {
        let now = Instant::now();
        let from = now + self.timing.warmup;
        let until = from + self.timing.measure;
        self.span.get_or_init(|| (from, until)).1
    }

    /// The body to publish: when it starts, in µs since `base`.
    fn stamp(&self) -> Bytes {
        Bytes::copy_from_slice(&(self.base.elapsed().as_micros() as u64).to_be_bytes())
    }

    fn handled(&self, body: &[u8]) {
        let now = Instant::now();
        if let Ok(stamp) = <[u8; 8]>::try_from(body) {
            let sent = u64::from_be_bytes(stamp);
            let latency = ((now - self.base).as_micros() as u64).saturating_sub(sent);
            if let Some(&(from, until)) = self.span.get()
                && now >= from
                && now < until
            {
                let _ = self
                    .hist
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(latency.max(1));
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.window.add_permits(1);
    }

    fn round(&self, errors: u64, measure: Duration) -> Round {
        Round {
            ok: self.ok.load(Ordering::Relaxed),
            errors,
            elapsed: measure,
            hist: self
                .hist
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A fresh topic per round: nothing of an earlier round reaches this one.
fn topic() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "go.micro.bench.r17.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How a peer publishes one body.
type Publish =
    Arc<dyn Fn(Bytes) -> futures::future::BoxFuture<'static, bool> + Send + Sync + 'static>;

async fn round(servers: &Servers, peer: Peer, subscribers: usize, timing: Timing) -> Round {
    let meter = Meter::new(timing);
    let topic = topic();
    let (publish, keep) = match peer {
        Peer::RawCore => raw_core(&servers.core, &topic, subscribers, &meter, true).await,
        Peer::RawCoreBare => raw_core(&servers.core, &topic, subscribers, &meter, false).await,
        Peer::RawJetStream => raw_jetstream(&servers.js, &topic, subscribers, &meter).await,
        Peer::RawHttp => raw_http(&topic, subscribers, &meter).await,
        Peer::MicroNats => {
            let make = || -> SharedBroker {
                Arc::new(NatsBroker::new(
                    NatsOptions::from_addresses(&servers.core).expect("options"),
                ))
            };
            micro(make, &topic, subscribers, &meter).await
        }
        Peer::MicroJetStream => {
            let make = || -> SharedBroker {
                Arc::new(
                    JetStreamBroker::new(
                        JetStreamOptions::from_addresses(&servers.js).expect("options"),
                    )
                    .expect("broker"),
                )
            };
            micro(make, &topic, subscribers, &meter).await
        }
        Peer::MicroHttp => {
            let registry = Arc::new(MemoryRegistry::new());
            let make = || -> SharedBroker {
                Arc::new(HttpBroker::new(
                    registry.clone(),
                    HttpOptions {
                        address: "127.0.0.1:0".into(),
                        ..HttpOptions::default()
                    },
                ))
            };
            micro(make, &topic, subscribers, &meter).await
        }
    };
    let until = meter.start();
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (meter, publish, errors) = (meter.clone(), publish.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let Ok(permit) = meter.window.acquire().await else {
                        break;
                    };
                    permit.forget();
                    if !publish(meter.stamp()).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                        meter.window.add_permits(1);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let round = meter.round(errors.load(Ordering::Relaxed), timing.measure);
    keep.stop().await;
    round
}

/// What a round keeps running until it ends.
enum Keep {
    Brokers(Vec<SharedBroker>, Vec<micro_broker::Subscription>),
    Tasks(Vec<tokio::task::JoinHandle<()>>),
}

impl Keep {
    async fn stop(self) {
        match self {
            Keep::Brokers(brokers, subscriptions) => {
                for subscription in subscriptions {
                    drop(subscription);
                }
                for broker in brokers {
                    let _ = tokio::time::timeout(Duration::from_secs(5), broker.close()).await;
                }
            }
            Keep::Tasks(tasks) => {
                for task in tasks {
                    task.abort();
                }
            }
        }
    }
}

async fn micro(
    make: impl Fn() -> SharedBroker,
    topic: &str,
    subscribers: usize,
    meter: &Arc<Meter>,
) -> (Publish, Keep) {
    let mut brokers = Vec::new();
    let mut subscriptions = Vec::new();
    for _ in 0..subscribers {
        let broker = make();
        let meter = meter.clone();
        // The raw loops' work, done as they do it (no clone of the meter
        // per message); the broker still boxes the returned future.
        let handler = move |event: Event| {
            meter.handled(&event.message().body);
            std::future::ready(Ok::<(), HandlerError>(()))
        };
        let options = if subscribers > 1 || broker.name() == "jetstream" {
            SubscribeOptions::queue("q")
        } else {
            SubscribeOptions::default()
        };
        subscriptions.push(
            broker
                .subscribe(topic, options, Arc::new(handler))
                .await
                .expect("subscribe"),
        );
        brokers.push(broker);
    }
    let publisher = make();
    if publisher.name() == "http" {
        wait_for_http_subscribers(&publisher, topic, meter).await;
    }
    brokers.push(publisher.clone());
    let topic = topic.to_string();
    let publish: Publish = Arc::new(move |body| {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        Box::pin(async move { publisher.publish(&topic, Message::new(body)).await.is_ok() })
    });
    (publish, Keep::Brokers(brokers, subscriptions))
}

/// The http broker's publisher finds its subscribers through the registry:
/// publish probes (not stamped) until one is delivered.
async fn wait_for_http_subscribers(publisher: &SharedBroker, topic: &str, meter: &Meter) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        if publisher
            .publish(topic, Message::new("probe"))
            .await
            .is_ok()
        {
            // The probe took a window slot back that it never had.
            let _ = meter.window.try_acquire().map(|p| p.forget());
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the http broker's subscribers were never found");
}

async fn raw_core(
    url: &str,
    topic: &str,
    subscribers: usize,
    meter: &Arc<Meter>,
    envelope: bool,
) -> (Publish, Keep) {
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let client = async_nats::connect(url).await.expect("connect");
        let mut subscriber = if subscribers > 1 {
            client
                .queue_subscribe(topic.to_string(), "q".into())
                .await
                .expect("queue subscribe")
        } else {
            client
                .subscribe(topic.to_string())
                .await
                .expect("subscribe")
        };
        client.flush().await.expect("flush");
        let meter = meter.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while let Some(message) = subscriber.next().await {
                if !envelope {
                    meter.handled(&message.payload);
                } else if let Some(body) = GoEnvelope::read(&message.payload) {
                    meter.handled(&body);
                }
            }
        }));
    }
    let client = async_nats::connect(url).await.expect("connect");
    let topic = topic.to_string();
    let publish: Publish = Arc::new(move |body: Bytes| {
        let (client, topic) = (client.clone(), topic.clone());
        let payload = if envelope {
            GoEnvelope::write(&topic, &body)
        } else {
            body
        };
        Box::pin(async move { client.publish(topic, payload).await.is_ok() })
    });
    (publish, Keep::Tasks(tasks))
}

async fn raw_jetstream(
    url: &str,
    topic: &str,
    subscribers: usize,
    meter: &Arc<Meter>,
) -> (Publish, Keep) {
    use async_nats::jetstream::{self, consumer, stream};
    // As deployed, and as the broker side runs: each subscriber its own
    // process and so its own connection, the publisher another.
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    let name = micro_broker::jetstream::stream_name(topic);
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![topic.to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");
    let config = consumer::pull::Config {
        durable_name: Some("q".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: 256,
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let own = jetstream::new(async_nats::connect(url).await.expect("connect"));
        let consumer: consumer::Consumer<consumer::pull::Config> = own
            .get_stream_no_info(&name)
            .await
            .expect("stream")
            .get_or_create_consumer("q", config.clone())
            .await
            .expect("consumer");
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(64)
            .messages()
            .await
            .expect("messages");
        let meter = meter.clone();
        tasks.push(tokio::spawn(async move {
            let _own = own;
            while let Some(Ok(message)) = messages.next().await {
                if let Some(body) = GoEnvelope::read(&message.payload) {
                    meter.handled(&body);
                }
                let _ = message.double_ack().await;
            }
        }));
    }
    let topic = topic.to_string();
    let publish: Publish = Arc::new(move |body: Bytes| {
        let (js, topic) = (js.clone(), topic.clone());
        let payload = GoEnvelope::write(&topic, &body);
        Box::pin(async move {
            match js.publish(topic, payload).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        })
    });
    (publish, Keep::Tasks(tasks))
}

async fn raw_http(topic: &str, subscribers: usize, meter: &Arc<Meter>) -> (Publish, Keep) {
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..subscribers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        addrs.push(listener.local_addr().expect("address"));
        let meter = meter.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: Bytes| {
                let meter = meter.clone();
                async move {
                    match GoEnvelope::read(&body) {
                        Some(body) => {
                            meter.handled(&body);
                            http::StatusCode::OK
                        }
                        None => http::StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
    // One keep-alive connection per (publishing task, receiver); each task
    // takes the next receiver in turn.
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..PUBLISHERS {
        for addr in &addrs {
            senders.push(Arc::new(tokio::sync::Mutex::new(
                http1_connect(*addr).await,
            )));
        }
    }
    let senders = Arc::new(senders);
    let topic = topic.to_string();
    let publish: Publish = Arc::new(move |body: Bytes| {
        let i = next.fetch_add(1, Ordering::Relaxed) % senders.len();
        let sender = senders[i].clone();
        let body = GoEnvelope::write(&topic, &body);
        Box::pin(async move {
            let mut sender = sender.lock().await;
            let request = http::Request::post("/")
                .header(http::header::HOST, "127.0.0.1")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .expect("request");
            match sender.send_request(request).await {
                Ok(response) => {
                    response.status() == http::StatusCode::OK
                        && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            }
        })
    });
    (publish, Keep::Tasks(tasks))
}

/// Idle RSS of a micro server (the greeter) with one subscription against
/// the same without, per backend, each its own process; and against the
/// same server connected to the broker (it published one message on the
/// topic: for `jetstream` its stream made), which separates what the
/// subscription costs from what the connection and its code cost.
fn idle_rss(plan: &Plan, servers: &Servers) -> String {
    let mut out = String::from(
        "### R17 idle RSS: a micro server subscribing to one topic vs the same server without subscriptions\n\n\
         RSS, in KiB (anonymous memory in brackets: the rest is mostly the executable's pages).\n\n\
         | broker | without | published once (connected) | subscribing | subscribing − without | subscribing − connected |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for (broker, address) in [
        ("http", "127.0.0.1:0".to_string()),
        ("nats", servers.core.clone()),
        ("jetstream", servers.js.clone()),
    ] {
        let rss = |flag: Option<&str>| -> (i64, i64) {
            let mut args = vec![
                "events-idle".to_string(),
                format!("--broker={broker}"),
                format!("--address={address}"),
            ];
            args.extend(flag.map(str::to_string));
            let mut proc = Proc::spawn(
                &format!("events-idle {broker}"),
                &plan.exe,
                &args,
                &[("RUST_LOG", "warn".to_string())],
            );
            proc.wait_ready();
            // Idle: what it holds once set up.
            std::thread::sleep(Duration::from_secs(1));
            let rss = proc.rss_kib().expect("RSS") as i64;
            let anon = rss_anon_kib(proc.pid()).unwrap_or(0) as i64;
            proc.stop();
            (rss, anon)
        };
        let without = rss(None);
        let connected = rss(Some("--publish"));
        let with = rss(Some("--subscribe"));
        let show = |(rss, anon): (i64, i64)| format!("{rss} ({anon})");
        let diff = |a: (i64, i64), b: (i64, i64)| format!("{:+} ({:+})", a.0 - b.0, a.1 - b.1);
        out.push_str(&format!(
            "| {broker} | {} | {} | {} | {} | {} |\n",
            show(without),
            show(connected),
            show(with),
            diff(with, without),
            diff(with, connected),
        ));
    }
    out.push('\n');
    out
}

/// `RssAnon` of process `pid`, KiB.
fn rss_anon_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The topic of the `events-idle` child.
const IDLE_TOPIC: &str = "go.micro.bench.r17.idle";

/// The `events-idle` child: a micro server with the broker named, one
/// subscription if asked; `READY <address>`, then idle until stdin closes.
pub(crate) fn idle_child(broker: &str, address: &str, subscribe: bool, publish: bool) {
    Flavor::Multi.runtime().block_on(async move {
        let registry = Arc::new(MemoryRegistry::new());
        let broker: SharedBroker = match broker {
            "http" => Arc::new(HttpBroker::new(
                registry.clone(),
                HttpOptions {
                    address: address.into(),
                    ..HttpOptions::default()
                },
            )),
            "nats" => Arc::new(NatsBroker::new(
                NatsOptions::from_addresses(address).expect("options"),
            )),
            "jetstream" => Arc::new(
                JetStreamBroker::new(JetStreamOptions::from_addresses(address).expect("options"))
                    .expect("broker"),
            ),
            other => panic!("unknown broker {other}"),
        };
        let mut builder = micro_server::Server::builder("go.micro.srv.greeter")
            .registry(registry)
            .broker(broker.clone())
            .options(micro_server::ServerOptions {
                address: "127.0.0.1:0".into(),
                ..micro_server::ServerOptions::default()
            })
            .file_descriptor_set(micro_testing::FILE_DESCRIPTOR_SET)
            .add_service(micro_testing::greeter::greeter_server::GreeterServer::new(
                micro_testing::TestGreeter::new("idle"),
            ));
        if subscribe {
            builder = builder.subscribe(
                IDLE_TOPIC,
                |_: micro_server::Received<micro_testing::greeter::Request>| async { Ok(()) },
            );
        }
        if publish {
            // No subscriber: the http broker finds none and is done.
            broker
                .publish(IDLE_TOPIC, Message::new("{}"))
                .await
                .expect("published");
        }
        let server = builder.bind().await.expect("binds");
        println!("READY {}", server.local_addr());
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await;
        };
        server.run_until(stdin_closed).await.expect("runs");
    });
}
