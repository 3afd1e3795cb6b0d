//! The http broker between brokers of their own (each its own listener, as
//! separate processes would have) on one registry: broadcast, queue groups,
//! failures returned, failover, the retry buffer, bad input, draining; and
//! on a real etcd, subscriptions kept registered as servers keep theirs: a
//! registration the registry lost (etcd restarted on empty data, its lease
//! gone) back long before the next renewal, and a subscription made while
//! etcd is down serving at once and registered once etcd answers (the
//! renewal interval there is far longer than every wait, so only the repair,
//! not the timer, can pass them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_broker::http::{HttpBroker, HttpOptions, SERVICE_NAME};
use micro_broker::{Broker, Error, Event, HandlerError, Message, SubscribeOptions};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service, SharedRegistry};
use micro_registry_etcd::EtcdRegistry;
use micro_registry_etcd::testing::EtcdCluster;
use micro_testing::nodes::wait_for_nodes;

const TOPIC: &str = "go.micro.topic.greet";

fn options() -> HttpOptions {
    HttpOptions {
        address: "127.0.0.1:0".into(),
        request_timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    }
}

/// Longer than any wait of the registration tests: a renewal never comes
/// in time.
const INTERVAL: Duration = Duration::from_secs(300);
/// What "at once" is given on a busy machine.
const SOON: Duration = Duration::from_secs(20);

/// [`options`] renewing only every [`INTERVAL`].
fn kept() -> HttpOptions {
    HttpOptions {
        register_ttl: INTERVAL * 2,
        register_interval: INTERVAL,
        ..options()
    }
}

fn broker(registry: &SharedRegistry) -> HttpBroker {
    HttpBroker::new(registry.clone(), options())
}

/// A handler counting its messages.
fn counting(count: &Arc<AtomicUsize>) -> Arc<dyn micro_broker::Handler> {
    let count = count.clone();
    Arc::new(move |_: Event| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        }
    })
}

fn json(text: &str) -> Message {
    Message::new(text.as_bytes().to_vec()).with_header("Content-Type", "application/json")
}

#[tokio::test]
async fn broadcast_reaches_every_subscriber_and_a_queue_group_one_member() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let counts: Vec<Arc<AtomicUsize>> = (0..5).map(|_| Arc::default()).collect();
    let brokers: Vec<HttpBroker> = (0..5).map(|_| broker(&registry)).collect();
    let mut subscriptions = Vec::new();
    for (i, b) in brokers.iter().enumerate() {
        let options = if i < 2 {
            SubscribeOptions::default()
        } else {
            SubscribeOptions::queue("workers")
        };
        subscriptions.push(
            b.subscribe(TOPIC, options, counting(&counts[i]))
                .await
                .expect("subscribe"),
        );
    }
    let publisher = broker(&registry);
    const N: usize = 30;
    for i in 0..N {
        publisher
            .publish(TOPIC, json(&format!("{{\"n\":{i}}}")))
            .await
            .expect("published");
    }
    // Publish returns when every handler answered.
    assert_eq!(counts[0].load(Ordering::SeqCst), N, "broadcast 1");
    assert_eq!(counts[1].load(Ordering::SeqCst), N, "broadcast 2");
    let group: Vec<usize> = counts[2..]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        group.iter().sum::<usize>(),
        N,
        "one copy per group: {group:?}"
    );
    assert!(
        group.iter().filter(|&&c| c > 0).count() >= 2,
        "spread over the group: {group:?}"
    );
    for s in subscriptions {
        s.unsubscribe().await;
    }
}

#[tokio::test]
async fn handler_failures_and_panics_reach_the_publisher_and_the_subscriber_survives() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let subscriber = broker(&registry);
    let seen = Arc::new(AtomicUsize::new(0));
    let handler = {
        let seen = seen.clone();
        move |event: Event| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                match &event.message().body[..] {
                    b"fail" => Err(HandlerError::new("no thanks")),
                    b"panic" => panic!("handler exploded"),
                    _ => Ok(()),
                }
            }
        }
    };
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), Arc::new(handler))
        .await
        .expect("subscribe");
    let publisher = broker(&registry);

    let err = publisher
        .publish(TOPIC, Message::new("fail"))
        .await
        .expect_err("refused");
    let Error::Delivery(failures) = &err else {
        panic!("{err}")
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].target, subscription.id());
    assert!(failures[0].reason.contains("no thanks"), "{err}");
    assert!(!failures[0].queued, "a refusal is not retried");

    let err = publisher
        .publish(TOPIC, Message::new("panic"))
        .await
        .expect_err("panicked");
    assert!(err.to_string().contains("handler exploded"), "{err}");

    publisher
        .publish(TOPIC, Message::new("fine"))
        .await
        .expect("still serving after a panic");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(publisher.buffered(), 0);
    subscription.unsubscribe().await;
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

fn fake_node(id: &str, address: SocketAddr, version: &str) -> Service {
    Service::new("micro.http.broker", version).with_node(
        Node::new(id, address.to_string())
            .with_metadata("broker", "http")
            .with_metadata("secure", "false")
            .with_metadata("topic", TOPIC),
    )
}

#[tokio::test]
async fn a_queue_group_member_that_cannot_be_reached_is_skipped() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let subscriber = broker(&registry);
    let count = Arc::new(AtomicUsize::new(0));
    let live = subscriber
        .subscribe(TOPIC, SubscribeOptions::queue("workers"), counting(&count))
        .await
        .expect("subscribe");
    let dead = fake_node(&format!("{TOPIC}-dead"), closed_port().await, "workers");
    registry
        .register(&dead, RegisterOptions::default())
        .await
        .expect("register");
    let publisher = broker(&registry);
    for _ in 0..20 {
        publisher
            .publish(TOPIC, Message::new("x"))
            .await
            .expect("the live member takes it");
    }
    assert_eq!(count.load(Ordering::SeqCst), 20);
    assert_eq!(publisher.buffered(), 0);
    live.unsubscribe().await;
}

#[tokio::test]
async fn unreachable_broadcast_nodes_get_the_message_on_retry_and_a_full_buffer_drops_the_oldest() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let address = closed_port().await;
    let node_id = format!("{TOPIC}-later");
    registry
        .register(
            &fake_node(&node_id, address, "ff.http.broadcast"),
            RegisterOptions::default(),
        )
        .await
        .expect("register");
    let publisher = HttpBroker::new(
        registry.clone(),
        HttpOptions {
            retry_buffer: 2,
            retry_interval: Duration::from_millis(100),
            ..options()
        },
    );
    for i in 0..5 {
        let err = publisher
            .publish(TOPIC, Message::new(format!("m{i}")))
            .await
            .expect_err("unreachable");
        let Error::Delivery(failures) = err else {
            panic!("not a delivery error")
        };
        assert!(failures[0].queued, "{failures:?}");
    }
    assert_eq!(publisher.buffered(), 2, "bounded");
    assert_eq!(publisher.dropped(), 3, "the oldest three dropped");

    // The node comes up: the two newest arrive.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("rebind");
    let router = axum_like_inbox();
    let received = router.received.clone();
    let server = tokio::spawn(async move { router.serve(listener).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.lock().expect("lock").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bodies: Vec<String> = received.lock().expect("lock").clone();
    bodies.sort();
    assert_eq!(bodies, ["m3", "m4"]);
    assert_eq!(publisher.buffered(), 0);
    server.abort();
}

/// A bare go-micro-like node: answers 200 to every POST and keeps the bodies.
struct RecordingNode {
    received: Arc<std::sync::Mutex<Vec<String>>>,
}

fn axum_like_inbox() -> RecordingNode {
    RecordingNode {
        received: Arc::default(),
    }
}

impl RecordingNode {
    async fn serve(self, listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let received = self.received.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let message = Message::from_envelope(&body).expect("an envelope");
                    received
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&message.body).into_owned());
                    let _ = reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    }
}

/// A subscriber on a registry of its own taking messages of up to
/// `max_message_bytes`: its broker, its subscription (to [`TOPIC`]), its
/// listener's address, and how many messages its handler took.
async fn listening(
    max_message_bytes: usize,
) -> (
    HttpBroker,
    micro_broker::Subscription,
    SocketAddr,
    Arc<AtomicUsize>,
) {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let subscriber = HttpBroker::new(
        registry,
        HttpOptions {
            max_message_bytes,
            ..options()
        },
    );
    let count = Arc::new(AtomicUsize::new(0));
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("subscribe");
    let address: SocketAddr = subscriber
        .advertised()
        .expect("listening")
        .parse()
        .expect("addr");
    (subscriber, subscription, address, count)
}

async fn raw(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> String {
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_vec());
    tokio::task::spawn_blocking(move || {
        micro_testing::http::request(address, &method, &path, "application/json", &body)
    })
    .await
    .expect("request")
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

fn body(answer: &str) -> &str {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[tokio::test]
async fn bad_requests_get_clear_answers_and_reach_no_handler() {
    let (_subscriber, subscription, address, count) = listening(1024).await;
    let path = format!("/?id={}", subscription.id());
    let valid = Message::new(br#"{"name":"John"}"#.to_vec())
        .with_header("Content-Type", "application/json")
        .with_header("Micro-Topic", TOPIC)
        .to_envelope();

    // go-micro's exact answer to a GET.
    let get = raw(address, "GET", &path, b"").await;
    assert_eq!(status(&get), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(
        body(&get),
        "{\"id\":\"go.micro.broker\",\"code\":400,\"detail\":\"Method not allowed\",\"status\":\"Bad Request\"}\n"
    );

    for (what, input, expected) in [
        (
            "not JSON",
            &b"hello, not json"[..],
            "Error parsing request body",
        ),
        ("JSON null", b"null", "expected a JSON object"),
        ("empty", b"", "Error parsing request body"),
        (
            "not base64",
            br#"{"Header":{"Micro-Topic":"go.micro.topic.greet"},"Body":"not base64!"}"#,
            "not base64",
        ),
        (
            "no Micro-Topic",
            br#"{"Header":{"Content-Type":"application/json"},"Body":"eyJuYW1lIjoiSm9obiJ9"}"#,
            "Topic not found",
        ),
    ] {
        let answer = raw(address, "POST", &path, input).await;
        assert_eq!(
            status(&answer),
            "HTTP/1.1 400 Bad Request",
            "{what}: {answer}"
        );
        assert!(body(&answer).contains(expected), "{what}: {answer}");
    }
    let wrong_id = raw(address, "POST", &format!("/?id={TOPIC}-nobody"), &valid).await;
    assert_eq!(status(&wrong_id), "HTTP/1.1 404 Not Found", "{wrong_id}");
    let no_id = raw(address, "POST", "/", &valid).await;
    assert_eq!(status(&no_id), "HTTP/1.1 404 Not Found", "{no_id}");
    let big = Message::new(vec![b'x'; 2048])
        .with_header("Micro-Topic", TOPIC)
        .to_envelope();
    let too_big = raw(address, "POST", &path, &big).await;
    assert_eq!(
        status(&too_big),
        "HTTP/1.1 413 Payload Too Large",
        "{too_big}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 0, "no handler ran");

    // Any path, as go-micro's: delivered.
    let ok = raw(
        address,
        "POST",
        &format!("/anything?id={}", subscription.id()),
        &valid,
    )
    .await;
    assert_eq!(status(&ok), "HTTP/1.1 200 OK", "{ok}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    subscription.unsubscribe().await;
}

#[tokio::test]
async fn unsubscribe_deregisters_then_waits_for_handlers_in_flight() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let subscriber = broker(&registry);
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (started, release, done) = (started.clone(), release.clone(), done.clone());
        move |_: Event| {
            let (started, release, done) = (started.clone(), release.clone(), done.clone());
            async move {
                started.notify_one();
                let _permit = release.acquire().await.map_err(|e| e.to_string())?;
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), Arc::new(handler))
        .await
        .expect("subscribe");
    let id = subscription.id().to_string();
    let address: SocketAddr = subscriber
        .advertised()
        .expect("listening")
        .parse()
        .expect("addr");
    let publisher = broker(&registry);
    let publish = tokio::spawn(async move { publisher.publish(TOPIC, Message::new("slow")).await });
    started.notified().await;

    let unsubscribe = tokio::spawn(subscription.unsubscribe());
    // Deregistered while the handler still runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry.get_service("micro.http.broker").await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "not deregistered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!unsubscribe.is_finished(), "waits for the handler");
    // New deliveries are turned away: the publisher tries elsewhere.
    let valid = Message::new("late")
        .with_header("Micro-Topic", TOPIC)
        .to_envelope();
    let late = raw(address, "POST", &format!("/?id={id}"), &valid).await;
    assert_eq!(status(&late), "HTTP/1.1 503 Service Unavailable", "{late}");

    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), unsubscribe)
        .await
        .expect("drained")
        .expect("task");
    assert_eq!(done.load(Ordering::SeqCst), 1, "the handler finished");
    publish
        .await
        .expect("task")
        .expect("the in-flight message was taken");
}

#[tokio::test]
async fn close_deregisters_every_subscription_and_stops_the_listener() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let subscriber = broker(&registry);
    let count = Arc::new(AtomicUsize::new(0));
    let _a = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("subscribe");
    let _b = subscriber
        .subscribe(
            "other.topic",
            SubscribeOptions::queue("q"),
            counting(&count),
        )
        .await
        .expect("subscribe");
    let address: SocketAddr = subscriber
        .advertised()
        .expect("listening")
        .parse()
        .expect("addr");
    assert_eq!(
        registry
            .get_service("micro.http.broker")
            .await
            .expect("listed")
            .iter()
            .map(|s| s.nodes.len())
            .sum::<usize>(),
        2
    );
    subscriber.close().await;
    assert!(
        registry.get_service("micro.http.broker").await.is_err(),
        "every node deregistered"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_message_over_the_subscribers_limit_is_refused_not_retried() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let subscriber = HttpBroker::new(
        registry.clone(),
        HttpOptions {
            max_message_bytes: 1024,
            ..options()
        },
    );
    let count = Arc::new(AtomicUsize::new(0));
    let _subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("subscribe");
    let publisher = broker(&registry);
    let err = publisher
        .publish(TOPIC, Message::new(vec![b'x'; 4096]))
        .await
        .expect_err("too large");
    let Error::Delivery(failures) = &err else {
        panic!("{err}")
    };
    assert!(failures[0].reason.contains("over 1024 bytes"), "{err}");
    assert!(!failures[0].queued);
    assert_eq!(publisher.buffered(), 0);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

/// `request` (whole, as bytes) sent to `address`, the writing side then
/// closed: the answer as written (empty if the listener closed without
/// one). Bounded: a listener that hangs fails the test.
async fn exchange(address: SocketAddr, request: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // The listener may answer and close before the whole body is sent.
    let _ = stream.write_all(&request).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("an answer or a close, not a hang")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The rest of the listener's bad input, beyond
/// `bad_requests_get_clear_answers_and_reach_no_handler`: the request's own
/// content type (go-micro's listener parsed a form-typed body as a form
/// and lost it), a body over the limit without a `Content-Length`
/// (chunked), a body cut short, envelope fields of the wrong type, a
/// `Micro-Topic` that is not the subscription's. Each gets a clear answer
/// (or the connection closed), none a hang, and no handler runs but for the
/// valid envelopes.
#[tokio::test]
async fn the_rest_of_the_bad_input_gets_clear_answers() {
    let (_subscriber, subscription, address, count) = listening(1024).await;
    let path = format!("/?id={}", subscription.id());
    let valid = Message::new(br#"{"name":"John"}"#.to_vec())
        .with_header("Micro-Topic", TOPIC)
        .to_envelope();

    // The envelope is read whatever the request says its type is.
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "nonsense",
    ] {
        let (address, path, valid) = (address, path.clone(), valid.clone());
        let answer = tokio::task::spawn_blocking(move || {
            micro_testing::http::request(address, "POST", &path, content_type, &valid)
        })
        .await
        .expect("request");
        assert_eq!(
            status(&answer),
            "HTTP/1.1 200 OK",
            "{content_type}: {answer}"
        );
    }
    assert_eq!(count.load(Ordering::SeqCst), 3);

    for (what, envelope, expected) in [
        (
            "a header that is a number",
            format!(r#"{{"Header":{{"Micro-Topic":"{TOPIC}","X":1}},"Body":""}}"#),
            "not a string",
        ),
        (
            "Header an array",
            r#"{"Header":["Micro-Topic"],"Body":""}"#.to_string(),
            "not an object",
        ),
        (
            "Body a number",
            format!(r#"{{"Header":{{"Micro-Topic":"{TOPIC}"}},"Body":42}}"#),
            "not a base64 string",
        ),
        ("an array", "[1,2]".to_string(), "expected a JSON object"),
    ] {
        let answer = raw(address, "POST", &path, envelope.as_bytes()).await;
        assert_eq!(
            status(&answer),
            "HTTP/1.1 400 Bad Request",
            "{what}: {answer}"
        );
        assert!(body(&answer).contains(expected), "{what}: {answer}");
    }
    let other_topic = Message::new("x")
        .with_header("Micro-Topic", "go.micro.topic.other")
        .to_envelope();
    let answer = raw(address, "POST", &path, &other_topic).await;
    assert_eq!(status(&answer), "HTTP/1.1 404 Not Found", "{answer}");

    // Over the limit, chunked (no Content-Length to refuse it by).
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'x'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(address, chunked).await;
    assert_eq!(
        status(&answer),
        "HTTP/1.1 413 Payload Too Large",
        "{answer}"
    );

    // Cut short: 100 bytes announced, 10 sent, then the client's side closed.
    let mut short = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    short.extend_from_slice(&valid[..10]);
    let answer = exchange(address, short).await;
    assert!(
        answer.is_empty() || status(&answer) == "HTTP/1.1 400 Bad Request",
        "a clear answer or the connection closed: {answer}"
    );

    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "no handler ran for bad input"
    );
    // And the listener still takes messages.
    let ok = raw(address, "POST", &path, &valid).await;
    assert_eq!(status(&ok), "HTTP/1.1 200 OK", "{ok}");
    assert_eq!(count.load(Ordering::SeqCst), 4);
    subscription.unsubscribe().await;
}

/// The ids of the `micro.http.broker` nodes `registry` lists now.
async fn broker_nodes(registry: &dyn Registry) -> Vec<String> {
    registry
        .get_service(SERVICE_NAME)
        .await
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.nodes)
        .map(|n| n.id)
        .collect()
}

/// Waits (bounded) until `registry` lists node `id`; how long it took.
async fn listed(registry: &dyn Registry, id: &str, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    wait_for_nodes(
        &format!("{id} registered"),
        started + within,
        || broker_nodes(registry),
        |nodes| nodes.iter().any(|n| n == id),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_registry_lost_is_back_at_once() {
    let mut etcd = EtcdCluster::single().await.expect("etcd");
    let registry: SharedRegistry = Arc::new(etcd.registry().await);
    let subscriber = HttpBroker::new(registry.clone(), kept());
    let count = Arc::new(AtomicUsize::new(0));
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("subscribe");
    let id = subscription.id().to_string();
    listed(registry.as_ref(), &id, SOON).await;

    // etcd restarted on empty data: the registration and its lease are gone.
    etcd.kill(0);
    etcd.restart(0, true).await.expect("etcd back, empty");
    let reader = etcd.registry().await;
    let took = listed(&reader, &id, SOON).await;
    eprintln!("etcd back empty -> registered again: {took:?}");

    // And it takes messages again.
    let publisher = HttpBroker::new(registry.clone(), kept());
    publisher
        .publish(TOPIC, Message::new("hi"))
        .await
        .expect("delivered");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    subscription.unsubscribe().await;
    assert!(
        !broker_nodes(&reader).await.contains(&id),
        "deregistered, and not put back by the repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_while_the_registry_is_down_is_registered_once_it_answers() {
    let mut etcd = EtcdCluster::single().await.expect("etcd");
    let options_etcd = etcd.options().with_request_timeout(Duration::from_secs(2));
    etcd.kill(0);
    let registry: SharedRegistry = Arc::new(
        EtcdRegistry::connect(options_etcd)
            .await
            .expect("connect needs no etcd"),
    );
    let subscriber = HttpBroker::new(registry.clone(), kept());
    let count = Arc::new(AtomicUsize::new(0));
    let subscription = subscriber
        .subscribe(TOPIC, SubscribeOptions::default(), counting(&count))
        .await
        .expect("a registry that is down does not fail the subscription");
    let id = subscription.id().to_string();
    // The listener serves meanwhile.
    let address = subscriber.advertised().expect("listening").to_string();
    tokio::net::TcpStream::connect(&address)
        .await
        .expect("the listener accepts");

    etcd.restart(0, false).await.expect("etcd back");
    let reader = etcd.registry().await;
    let took = listed(&reader, &id, SOON).await;
    eprintln!("etcd back -> registered: {took:?}");
    let publisher = HttpBroker::new(Arc::new(reader), kept());
    publisher
        .publish(TOPIC, Message::new("hi"))
        .await
        .expect("delivered");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    subscription.unsubscribe().await;
    subscriber.close().await;
}
