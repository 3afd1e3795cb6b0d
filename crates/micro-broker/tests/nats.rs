//! The nats broker on a real nats-server: go-micro's bytes on the wire,
//! broadcast and queue groups, a payload that is not an envelope, a
//! refusing handler, draining, flushing at close.
#![cfg(feature = "nats")]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use micro_broker::nats::{NatsBroker, NatsOptions};
use micro_broker::{Broker, Event, HandlerError, Message, SubscribeOptions};
use micro_testing::nats::NatsServer;
use tokio::sync::mpsc;

const TOPIC: &str = "go.micro.topic.greet";

fn golden(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../testdata/go-micro-v2/broker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn broker(server: &NatsServer) -> NatsBroker {
    NatsBroker::new(NatsOptions::from_addresses(&server.address.to_string()).expect("options"))
}

/// A handler that sends each message's body on a channel.
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
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message in time")
        .expect("open")
}

#[tokio::test]
async fn the_payload_is_go_micros_envelope_on_the_topics_subject() {
    let server = NatsServer::start();
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let mut seen = raw.subscribe(TOPIC).await.expect("raw subscribe");
    raw.flush().await.expect("flush");
    let broker = broker(&server);
    broker
        .publish(
            TOPIC,
            Message::new(r#"{"name":"John"}"#).with_header("Content-Type", "application/json"),
        )
        .await
        .expect("published");
    broker.close().await;
    let message = tokio::time::timeout(Duration::from_secs(10), seen.next())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(message.subject.as_str(), TOPIC);
    assert_eq!(
        &message.payload[..],
        &golden("nats-publish-json.payload.json")[..]
    );
    assert!(message.headers.is_none(), "no NATS headers, as go-micro");
}

#[tokio::test]
async fn broadcast_and_queue_groups_and_go_micros_messages() {
    let server = NatsServer::start();
    let (tx, mut broadcast) = mpsc::unbounded_channel();
    let (gtx, mut group) = mpsc::unbounded_channel();
    let subscribers: Vec<NatsBroker> = (0..4).map(|_| broker(&server)).collect();
    let mut subscriptions = Vec::new();
    for (i, b) in subscribers.iter().enumerate() {
        let (options, handler) = if i < 2 {
            (SubscribeOptions::default(), forwarding(tx.clone()))
        } else {
            (SubscribeOptions::queue("workers"), forwarding(gtx.clone()))
        };
        subscriptions.push(
            b.subscribe(TOPIC, options, handler)
                .await
                .expect("subscribe"),
        );
    }
    // go-micro's own bytes, published raw: decoded as any other.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    raw.publish(TOPIC, golden("nats-publish-metadata.payload.json").into())
        .await
        .expect("raw publish");
    raw.flush().await.expect("flush");
    let publisher = broker(&server);
    for i in 0..10 {
        publisher
            .publish(TOPIC, Message::new(format!("m{i}")))
            .await
            .expect("published");
    }
    publisher.close().await;
    let mut got = Vec::new();
    for _ in 0..22 {
        got.push(next(&mut broadcast).await);
    }
    assert_eq!(got.iter().filter(|b| *b == r#"{"name":"John"}"#).count(), 2);
    let mut grouped = Vec::new();
    for _ in 0..11 {
        grouped.push(next(&mut group).await);
    }
    grouped.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    expected.push(r#"{"name":"John"}"#.into());
    expected.sort();
    assert_eq!(grouped, expected, "one copy per group");
    for s in subscriptions {
        s.unsubscribe().await;
    }
}

/// Counts what the broker shows it.
#[derive(Debug, Default)]
struct Seen {
    outcomes: std::sync::Mutex<Vec<String>>,
}

impl micro_broker::BrokerObserver for Seen {
    fn delivered(&self, _: &'static str, _: &str, outcome: &micro_broker::Outcome, _: Duration) {
        self.outcomes
            .lock()
            .expect("lock")
            .push(outcome.label().to_string());
    }
}

#[tokio::test]
async fn bad_payloads_and_refusals_are_counted_and_the_subscription_drains() {
    let server = NatsServer::start();
    let seen = Arc::new(Seen::default());
    let subscriber = NatsBroker::with_observer(
        NatsOptions::from_addresses(&server.url()).expect("options"),
        seen.clone(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let release = release.clone();
        move |event: Event| {
            let (tx, release) = (tx.clone(), release.clone());
            async move {
                let body = String::from_utf8_lossy(&event.message().body).into_owned();
                let _ = tx.send(body.clone());
                match body.as_str() {
                    "fail" => Err(HandlerError::new("no")),
                    "panic" => panic!("boom"),
                    "slow" => {
                        let _permit = release.acquire().await.map_err(|e| e.to_string())?;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    };
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), Arc::new(handler))
        .await
        .expect("subscribe");
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    for payload in [
        &b"hello, not json"[..],
        b"null",
        br#"{"Body":"not base64!"}"#,
    ] {
        raw.publish(TOPIC, payload.to_vec().into())
            .await
            .expect("raw publish");
    }
    raw.flush().await.expect("flush");
    let publisher = broker(&server);
    for body in ["fail", "panic", "ok", "slow"] {
        publisher
            .publish(TOPIC, Message::new(body))
            .await
            .expect("published");
    }
    publisher.close().await;
    // In order, one at a time; the bad payloads reached no handler.
    for expected in ["fail", "panic", "ok", "slow"] {
        assert_eq!(next(&mut rx).await, expected);
    }
    // "slow" is in the handler: unsubscribe waits for it.
    let unsubscribe = tokio::spawn(subscription.unsubscribe());
    tokio::task::yield_now().await;
    assert!(!unsubscribe.is_finished());
    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), unsubscribe)
        .await
        .expect("drained")
        .expect("task");
    assert_eq!(
        *seen.outcomes.lock().expect("lock"),
        ["error", "error", "error", "error", "panic", "ok", "ok"]
    );
}

#[test]
fn addresses_are_read_as_go_micro_reads_them() {
    let options =
        NatsOptions::from_addresses("127.0.0.1:4222, nats://10.0.0.1:4223,,").expect("ok");
    assert_eq!(
        options.servers,
        ["nats://127.0.0.1:4222", "nats://10.0.0.1:4223"]
    );
    assert_eq!(
        NatsOptions::from_addresses("").expect("ok").servers,
        ["nats://127.0.0.1:4222"]
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut options = NatsOptions::from_addresses(&port.to_string()).expect("options");
    options.connect_timeout = Duration::from_secs(2);
    let err = NatsBroker::new(options)
        .publish(TOPIC, Message::new("x"))
        .await
        .expect_err("nobody there");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_message_over_the_servers_limit_is_a_clear_error() {
    let server = NatsServer::start();
    let broker = broker(&server);
    // nats-server's default max_payload is 1 MiB.
    let err = broker
        .publish(TOPIC, Message::new(vec![b'x'; 2 * 1024 * 1024]))
        .await
        .expect_err("too large");
    assert!(
        err.to_string().contains("publish go.micro.topic.greet"),
        "{err}"
    );
    // The connection still works.
    broker
        .publish(TOPIC, Message::new("small"))
        .await
        .expect("published");
}
