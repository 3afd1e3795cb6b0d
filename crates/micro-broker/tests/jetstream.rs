//! The jetstream broker on real `nats-server -js` processes (and a real
//! 3-member cluster): PubAck before `Ok`, go-micro's bytes on the subject
//! both ways with core NATS, streams made once with their limits, durable
//! queue consumers, redelivery with backoff then a dead letter (a failing
//! or panicking handler, a payload that is no envelope), draining, a
//! restarted server, a cluster member killed under publish load, a publish
//! retried while the stream elects a new leader.
#![cfg(feature = "nats")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use micro_broker::jetstream::{
    DEAD_LETTER_DELIVERIES, DEAD_LETTER_REASON, DEAD_LETTER_STREAM, JetStreamBroker,
    JetStreamOptions, stream_name,
};
use micro_broker::{
    Broker, BrokerObserver, Event, HandlerError, Message, Outcome, SubscribeOptions,
};
use micro_testing::nats::{JetStreamServer, NatsCluster, NatsServer};
use tokio::sync::mpsc;

const TOPIC: &str = "go.micro.topic.greet";

fn golden(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../testdata/go-micro-v2/broker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn options(servers: &str) -> JetStreamOptions {
    let mut options = JetStreamOptions::from_addresses(servers).expect("options");
    options.backoff_base = Duration::from_millis(200);
    options.backoff_max = Duration::from_secs(1);
    options.publish_timeout = Duration::from_secs(3);
    options
}

fn connect(servers: &str) -> JetStreamBroker {
    JetStreamBroker::new(options(servers)).expect("broker")
}

/// Counts what the broker shows its observer.
#[derive(Debug, Default)]
struct Seen {
    redelivered: Mutex<usize>,
    dead_lettered: Mutex<usize>,
    errors: Mutex<Vec<String>>,
}

impl BrokerObserver for Seen {
    fn redelivered(&self, _broker: &'static str, _topic: &str) {
        *self.redelivered.lock().expect("lock") += 1;
    }
    fn dead_lettered(&self, _broker: &'static str, _topic: &str) {
        *self.dead_lettered.lock().expect("lock") += 1;
    }
    fn delivered(&self, _b: &'static str, _t: &str, outcome: &Outcome, _e: Duration) {
        if let Some(failure) = outcome.failure() {
            self.errors.lock().expect("lock").push(failure);
        }
    }
}

/// A handler sending each body on a channel, then answering `Ok`.
fn forwarding(tx: mpsc::UnboundedSender<String>) -> Arc<dyn micro_broker::Handler> {
    Arc::new(move |event: Event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(String::from_utf8_lossy(&event.message().body).into_owned());
            Ok::<(), HandlerError>(())
        }
    })
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message in time")
        .expect("open")
}

/// Nothing more arrives within `wait` (a bound, not a sleep for a signal:
/// the absence of a redelivery has no event to wait for).
async fn nothing_more(rx: &mut mpsc::UnboundedReceiver<String>, wait: Duration) {
    if let Ok(Some(extra)) = tokio::time::timeout(wait, rx.recv()).await {
        panic!("delivered again: {extra}");
    }
}

#[tokio::test]
async fn publish_is_acknowledged_by_a_stream_and_core_nats_sees_go_micros_envelope() {
    let server = JetStreamServer::start();
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut core = raw.subscribe(TOPIC).await.expect("core subscribe");
    raw.flush().await.expect("flush");
    let broker = connect(&server.address.to_string());
    broker
        .publish(
            TOPIC,
            Message::new(r#"{"name":"John"}"#).with_header("Content-Type", "application/json"),
        )
        .await
        .expect("acknowledged");
    // A go-micro `nats` subscriber (core NATS) gets the same bytes.
    let message = tokio::time::timeout(Duration::from_secs(10), core.next())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(message.subject.as_str(), TOPIC);
    assert_eq!(
        &message.payload[..],
        &golden("nats-publish-json.payload.json")[..]
    );

    // Stored in the stream made for the topic: file storage, the limits.
    let js = async_nats::jetstream::new(raw.clone());
    let mut stream = js
        .get_stream(stream_name(TOPIC))
        .await
        .expect("stream made");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.subjects, [TOPIC]);
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(
        info.config.discard,
        async_nats::jetstream::stream::DiscardPolicy::Old
    );
    let defaults = JetStreamOptions::default();
    assert_eq!(info.config.max_age, defaults.max_age);
    assert_eq!(info.config.max_bytes, defaults.max_bytes);
    assert_eq!(info.config.max_messages, defaults.max_messages);
    assert_eq!(info.state.messages, 1);

    // A second broker uses that stream (no second one), and a stream an
    // operator made for several topics is used as it is.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .expect("operator's stream");
    let other = connect(&server.url());
    other
        .publish(TOPIC, Message::new("again"))
        .await
        .expect("acknowledged");
    other
        .publish("orders.created", Message::new("order"))
        .await
        .expect("acknowledged");
    let names: BTreeSet<String> = js.stream_names().map(|n| n.expect("name")).collect().await;
    assert_eq!(
        names,
        BTreeSet::from(["ORDERS".to_string(), stream_name(TOPIC)])
    );
    assert_eq!(
        js.get_stream("ORDERS")
            .await
            .expect("orders")
            .info()
            .await
            .expect("info")
            .state
            .messages,
        1
    );
    broker.close().await;
    other.close().await;
}

#[tokio::test]
async fn core_nats_publishers_reach_a_subscriber_and_bad_publishes_fail_clearly() {
    let server = JetStreamServer::start();
    let broker = connect(&server.url());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = broker
        .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx))
        .await
        .expect("subscribe");
    // A go-micro `nats` publisher: core NATS, go-micro's envelope.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    raw.publish(TOPIC, golden("nats-publish-json.payload.json").into())
        .await
        .expect("core publish");
    raw.flush().await.expect("flush");
    assert_eq!(next(&mut rx).await, r#"{"name":"John"}"#);

    // Over the server's max_payload: an error, nothing stored.
    let big = vec![b'x'; 2 << 20];
    let err = broker
        .publish(TOPIC, Message::new(big))
        .await
        .expect_err("too big");
    assert!(err.to_string().contains("not acknowledged"), "{err}");
    subscription.unsubscribe().await;
    broker.close().await;

    // A server without JetStream: no PubAck, an error saying so, in time.
    let plain = NatsServer::start();
    let broker = connect(&plain.url());
    let started = Instant::now();
    let err = broker
        .publish(TOPIC, Message::new("x"))
        .await
        .expect_err("no JetStream");
    assert!(err.to_string().contains("JetStream"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = broker
        .subscribe(
            TOPIC,
            SubscribeOptions::default(),
            forwarding(mpsc::unbounded_channel().0),
        )
        .await
        .expect_err("no JetStream");
    assert!(err.to_string().contains("JetStream"), "{err}");
}

#[tokio::test]
async fn refusals_come_back_with_backoff_then_go_to_the_dead_letters() {
    let server = JetStreamServer::start();
    let seen = Arc::new(Seen::default());
    let mut opts = options(&server.url());
    opts.max_deliveries = 3;
    let subscriber = JetStreamBroker::with_observer(opts, seen.clone()).expect("broker");
    let times: Arc<Mutex<BTreeMap<String, Vec<Instant>>>> = Arc::default();
    let handler = {
        let times = times.clone();
        move |event: Event| {
            let times = times.clone();
            async move {
                let body = String::from_utf8_lossy(&event.message().body).into_owned();
                times
                    .lock()
                    .expect("lock")
                    .entry(body.clone())
                    .or_default()
                    .push(Instant::now());
                match body.as_str() {
                    "fail" => Err(HandlerError::new("no")),
                    "panic" => panic!("boom"),
                    _ => Ok(()),
                }
            }
        }
    };
    let subscription = subscriber
        .subscribe(
            TOPIC,
            SubscribeOptions::default().with_service("go.micro.srv.greeter"),
            Arc::new(handler),
        )
        .await
        .expect("subscribe");
    let publisher = connect(&server.url());
    for body in ["fail", "panic", "ok"] {
        publisher
            .publish(TOPIC, Message::new(body))
            .await
            .expect("published");
    }
    // Not an envelope (a core NATS publisher's mistake): no handler runs it.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    raw.publish(TOPIC, "hello, not json".into())
        .await
        .expect("core publish");
    raw.flush().await.expect("flush");

    // Three dead letters, kept in their stream, saying why.
    let js = async_nats::jetstream::new(raw.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while *seen.dead_lettered.lock().expect("lock") < 3 {
        assert!(Instant::now() < deadline, "dead letters: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = js
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .expect("dead-letter stream");
    let mut reasons = BTreeMap::new();
    for seq in 1..=3 {
        let message = dead.get_raw_message(seq).await.expect("dead letter");
        assert_eq!(
            message.subject.as_str(),
            format!("micro.deadletter.{TOPIC}")
        );
        let headers = message.headers;
        let reason = headers.get(DEAD_LETTER_REASON).expect("reason").to_string();
        let deliveries = headers
            .get(DEAD_LETTER_DELIVERIES)
            .expect("deliveries")
            .to_string();
        let body = match Message::from_envelope(&message.payload) {
            Ok(m) => String::from_utf8_lossy(&m.body).into_owned(),
            Err(_) => String::from_utf8_lossy(&message.payload).into_owned(),
        };
        reasons.insert(body, (reason, deliveries));
    }
    assert!(reasons["fail"].0.contains("no"), "{reasons:?}");
    assert_eq!(reasons["fail"].1, "3");
    assert!(reasons["panic"].0.contains("boom"), "{reasons:?}");
    assert_eq!(reasons["panic"].1, "3");
    assert!(
        reasons["hello, not json"].0.contains("envelope"),
        "{reasons:?}"
    );

    // Each refused message ran 3 times, waiting 200 ms then 400 ms (the
    // doubling backoff); the good one ran once.
    let times = times.lock().expect("lock").clone();
    for body in ["fail", "panic"] {
        let runs = &times[body];
        assert_eq!(runs.len(), 3, "{body}: {runs:?}");
        assert!(runs[1] - runs[0] >= Duration::from_millis(200), "{body}");
        assert!(runs[2] - runs[1] >= Duration::from_millis(400), "{body}");
    }
    assert_eq!(times["ok"].len(), 1);
    assert!(!times.contains_key("hello, not json"));
    assert_eq!(*seen.redelivered.lock().expect("lock"), 4);
    subscription.unsubscribe().await;
    subscriber.close().await;
    publisher.close().await;
}

#[tokio::test]
async fn a_durable_queue_keeps_messages_while_away_and_acknowledged_ones_never_return() {
    let server = JetStreamServer::start();
    let url = server.url();
    let publisher = connect(&url);
    publisher
        .publish(TOPIC, Message::new("before"))
        .await
        .expect("published");

    // The first subscriber of queue q gets what the stream holds.
    let first = connect(&url);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = first
        .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx))
        .await
        .expect("subscribe");
    assert_eq!(next(&mut rx).await, "before");
    subscription.unsubscribe().await;

    // Published while nobody of q runs: waits for q.
    for i in 0..10 {
        publisher
            .publish(TOPIC, Message::new(format!("away {i}")))
            .await
            .expect("published");
    }
    // Two members of q share them; each once; "before" (acknowledged)
    // never again.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = connect(&url);
    let b = connect(&url);
    let sub_a = a
        .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx.clone()))
        .await
        .expect("subscribe");
    let sub_b = b
        .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx))
        .await
        .expect("subscribe");
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let body = next(&mut rx).await;
        assert!(got.insert(body.clone()), "twice: {body}");
    }
    assert_eq!(
        got,
        (0..10)
            .map(|i| format!("away {i}"))
            .collect::<BTreeSet<_>>()
    );
    // An ephemeral subscriber gets only what comes after it.
    let (tx_e, mut rx_e) = mpsc::unbounded_channel();
    let ephemeral = publisher
        .subscribe(TOPIC, SubscribeOptions::default(), forwarding(tx_e))
        .await
        .expect("subscribe");
    publisher
        .publish(TOPIC, Message::new("last"))
        .await
        .expect("published");
    assert_eq!(next(&mut rx_e).await, "last");
    assert_eq!(next(&mut rx).await, "last");
    nothing_more(&mut rx, Duration::from_secs(2)).await;
    nothing_more(&mut rx_e, Duration::ZERO).await;
    ephemeral.unsubscribe().await;
    sub_a.unsubscribe().await;
    sub_b.unsubscribe().await;
}

#[tokio::test]
async fn unsubscribe_lets_the_handler_finish_and_acknowledge() {
    let server = JetStreamServer::start();
    let url = server.url();
    let subscriber = connect(&url);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let release = release.clone();
        move |event: Event| {
            let (tx, release) = (tx.clone(), release.clone());
            async move {
                let body = String::from_utf8_lossy(&event.message().body).into_owned();
                let _ = tx.send(body);
                let _permit = release.acquire().await.map_err(|e| e.to_string())?;
                Ok::<(), HandlerError>(())
            }
        }
    };
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::queue("q"), Arc::new(handler))
        .await
        .expect("subscribe");
    let publisher = connect(&url);
    for body in ["slow", "next"] {
        publisher
            .publish(TOPIC, Message::new(body))
            .await
            .expect("published");
    }
    assert_eq!(next(&mut rx).await, "slow");
    let unsubscribe = tokio::spawn(subscription.unsubscribe());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!unsubscribe.is_finished(), "waits for the handler");
    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), unsubscribe)
        .await
        .expect("drained in time")
        .expect("joined");
    // "slow" was acknowledged; "next" was handed back: the next member of
    // q gets "next" only.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let again = connect(&url)
        .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx))
        .await
        .expect("subscribe");
    assert_eq!(next(&mut rx).await, "next");
    nothing_more(&mut rx, Duration::from_secs(2)).await;
    again.unsubscribe().await;
}

#[tokio::test]
async fn a_subscription_survives_a_server_restart() {
    let mut server = JetStreamServer::start();
    let url = server.url();
    let subscriber = connect(&url);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx))
        .await
        .expect("subscribe");
    let publisher = connect(&url);
    publisher
        .publish(TOPIC, Message::new("one"))
        .await
        .expect("published");
    assert_eq!(next(&mut rx).await, "one");
    server.kill();
    // Down: publishing fails (no PubAck), clearly and in time.
    let err = publisher
        .publish(TOPIC, Message::new("lost"))
        .await
        .expect_err("server down");
    assert!(err.to_string().contains("not acknowledged"), "{err}");
    server.restart();
    // Back: the same clients publish and receive again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match publisher.publish(TOPIC, Message::new("two")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never published again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(next(&mut rx).await, "two");
    subscription.unsubscribe().await;
}

/// Publishes ids `0..count` while `during` runs once in the middle; returns
/// the ids whose publish returned `Ok`.
async fn publish_load(
    publisher: &JetStreamBroker,
    count: usize,
    mut during: impl FnMut(),
) -> BTreeSet<usize> {
    let mut acknowledged = BTreeSet::new();
    for id in 0..count {
        if id == count / 3 {
            during();
        }
        if publisher
            .publish(TOPIC, Message::new(id.to_string()))
            .await
            .is_ok()
        {
            acknowledged.insert(id);
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_member_killed_under_publish_load_loses_no_acknowledged_message() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let mut opts = options(&urls);
    opts.replicas = 3;
    let subscriber = JetStreamBroker::new(opts.clone()).expect("broker");
    // The publisher is connected to member 1, the one killed: it loses its
    // connection mid-load and finds the others (as the cluster told it).
    let mut to_first = options(&cluster.address(0).to_string());
    to_first.replicas = 3;
    let publisher = JetStreamBroker::new(to_first).expect("broker");
    // Made (with 3 replicas) before the load; the stream may take a moment
    // to have a leader after the cluster formed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = loop {
        match subscriber
            .subscribe(TOPIC, SubscribeOptions::queue("q"), forwarding(tx.clone()))
            .await
        {
            Ok(subscription) => break subscription,
            Err(e) => {
                assert!(Instant::now() < deadline, "no stream: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    drop(tx);
    let count = 300;
    let acknowledged = publish_load(&publisher, count, || cluster.kill(0)).await;
    assert!(
        acknowledged.len() >= count / 3,
        "most publishes succeed with 2 of 3 members: {}",
        acknowledged.len()
    );
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged.is_subset(&delivered) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(body)) => {
                delivered.insert(body.parse::<usize>().expect("an id"));
            }
            _ => panic!(
                "{} acknowledged but never delivered, the first: {:?}",
                acknowledged.difference(&delivered).count(),
                acknowledged
                    .difference(&delivered)
                    .take(20)
                    .collect::<Vec<_>>()
            ),
        }
    }
    subscription.unsubscribe().await;
    cluster.restart(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_while_the_stream_elects_a_leader_is_retried_until_acknowledged() {
    let mut cluster = NatsCluster::start(3);
    let mut opts = options(&cluster.urls());
    opts.replicas = 3;
    let maker = JetStreamBroker::new(opts).expect("broker");
    // The stream made, with 3 replicas and a leader (the cluster may take
    // a moment to have one after it formed).
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = maker.publish(TOPIC, Message::new("first")).await {
        assert!(Instant::now() < deadline, "no stream: {e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its leader, as the cluster reports it.
    let js = async_nats::jetstream::new(
        async_nats::connect(cluster.address(0).to_string())
            .await
            .expect("connects"),
    );
    let info = js
        .get_stream(stream_name(TOPIC))
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a leader");
    let index: usize = leader
        .strip_prefix('n')
        .and_then(|n| n.parse::<usize>().ok())
        .expect("members are n1..n3")
        - 1;
    // The publisher (and a probe) on a member that stays: its connection
    // lives through the kill, so what it meets is the stream without a
    // leader, not a lost connection.
    let survivor = (index + 1) % 3;
    let mut to_survivor = options(&cluster.address(survivor).to_string());
    to_survivor.replicas = 3;
    // Longer than an election (seconds after the leader is lost).
    to_survivor.publish_timeout = Duration::from_secs(20);
    let publisher = JetStreamBroker::new(to_survivor).expect("broker");
    publisher
        .publish(TOPIC, Message::new("second"))
        .await
        .expect("acknowledged by the leader");
    let probe = async_nats::connect(cluster.address(survivor).to_string())
        .await
        .expect("connects");
    drop(js);
    cluster.kill(index);
    // Only the stream's leader takes its subject: until the other two
    // elect one (an election timeout, seconds) a publish has no responder.
    // A request after the kill meets exactly that (it is answered at once,
    // stored nowhere).
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        probe.request(TOPIC, "probe".into()),
    )
    .await
    .expect("answered");
    match answer {
        Err(e) => assert_eq!(e.kind(), async_nats::RequestErrorKind::NoResponders, "{e}"),
        Ok(reply) => panic!("a leader answered at once: {reply:?}"),
    }
    // The publish meets it too and is tried again until a new leader
    // acknowledges it.
    publisher
        .publish(TOPIC, Message::new("during the election"))
        .await
        .expect("acknowledged once a new leader is elected");
    // Stored: the last message on the subject, read from a member that
    // stayed (the new leader answers).
    let js = async_nats::jetstream::new(probe);
    let stream = js.get_stream(stream_name(TOPIC)).await.expect("stream");
    let last = stream
        .get_last_raw_message_by_subject(TOPIC)
        .await
        .expect("the last message");
    let stored = Message::from_envelope(&last.payload).expect("an envelope");
    assert_eq!(&stored.body[..], b"during the election");
    cluster.restart(index);
}
