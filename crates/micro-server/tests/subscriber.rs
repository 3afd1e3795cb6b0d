//! A server's subscribers: registered as go-micro registers them (golden
//! entry), messages decoded by content type, refusals returned, and a
//! graceful stop that drains subscriptions before deregistering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_broker::http::{HttpBroker, HttpOptions};
use micro_broker::memory::MemoryBroker;
use micro_broker::{Broker, HandlerError, Message, SharedBroker};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Service, SharedRegistry};
use micro_server::{Received, Server, ServerError};
use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_server::GreeterServer;
use micro_testing::{FILE_DESCRIPTOR_SET, TestGreeter, loopback_options};

const TOPIC: &str = "go.micro.topic.greet";

fn golden(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../testdata/go-micro-v2/broker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn subscribers_are_registered_as_go_micro_registers_them() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let broker: SharedBroker = Arc::new(HttpBroker::new(
        registry.clone(),
        HttpOptions {
            address: "127.0.0.1:0".into(),
            ..HttpOptions::default()
        },
    ));
    let server = Server::builder("go.micro.srv.greeter")
        .registry(registry)
        .options(loopback_options())
        .broker(broker)
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(GreeterServer::new(TestGreeter::new("a")))
        .subscribe(TOPIC, |_: Received<Request>| async { Ok(()) })
        .bind()
        .await
        .expect("bind");
    let golden: Service =
        serde_json::from_slice(&golden("registry-service-subscriber.value.json")).expect("golden");
    let ours = server.registration();
    // The subscriber's endpoint, byte for byte, after the handlers'. (How
    // streaming handlers are described is the server's business, not
    // this test's.)
    assert_eq!(
        serde_json::to_string(ours.endpoints.last().expect("endpoints")).expect("json"),
        serde_json::to_string(golden.endpoints.last().expect("endpoints")).expect("json"),
    );
    let names: Vec<&str> = ours.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "Func").count(),
        1,
        "{names:?}"
    );
    assert_eq!(ours.endpoints.len(), golden.endpoints.len());
    assert_eq!(
        ours.nodes[0].metadata.get("broker").map(String::as_str),
        Some("http")
    );
}

#[tokio::test]
async fn subscribers_need_a_broker() {
    let err = Server::builder("go.micro.srv.greeter")
        .registry(Arc::new(MemoryRegistry::new()))
        .options(loopback_options())
        .subscribe(TOPIC, |_: Received<Request>| async { Ok(()) })
        .bind()
        .await
        .expect_err("no broker");
    assert!(matches!(err, ServerError::Options(_)), "{err}");
}

/// Starts a greeter server with one subscriber on a memory broker.
async fn serve_with<F, Fut>(
    broker: SharedBroker,
    registry: &SharedRegistry,
    handler: F,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ServerError>>,
    String,
)
where
    F: Fn(Received<Request>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let server = Server::builder("go.micro.srv.greeter")
        .registry(registry.clone())
        .options(loopback_options())
        .broker(broker)
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(GreeterServer::new(TestGreeter::new("a")))
        .subscribe(TOPIC, handler)
        .bind()
        .await
        .expect("bind");
    let node = server.node().id.clone();
    let mut registered = server.registered();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    registered.wait_for(|r| *r).await.expect("registered");
    (stop, run, node)
}

#[tokio::test]
async fn messages_are_decoded_by_content_type() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let broker = MemoryBroker::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stop, run, _) = serve_with(Arc::new(broker.clone()), &registry, {
        let seen = seen.clone();
        move |received: Received<Request>| {
            let seen = seen.clone();
            async move {
                assert_eq!(received.topic, TOPIC);
                assert!(!received.header.contains_key("Content-Type"));
                if received.message.name == "fail" {
                    return Err(HandlerError::new("refused"));
                }
                seen.lock().expect("lock").push((
                    received.message.name,
                    received.header.get("Micro-From-Service").cloned(),
                ));
                Ok(())
            }
        }
    })
    .await;

    let json = Message::new(r#"{"name":"John","count":2}"#)
        .with_header("Content-Type", "application/json")
        .with_header("Micro-From-Service", "go.micro.srv.pub");
    broker.publish(TOPIC, json).await.expect("json");
    // greeter.Request{name: "Jane"} as protobuf, with go-micro's default
    // content type and with none (also protobuf).
    let proto = Message::new(&b"\x0a\x04Jane"[..]);
    broker
        .publish(
            TOPIC,
            proto
                .clone()
                .with_header("Content-Type", "application/grpc+proto"),
        )
        .await
        .expect("proto");
    broker.publish(TOPIC, proto).await.expect("no content type");
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            ("John".to_string(), Some("go.micro.srv.pub".to_string())),
            ("Jane".to_string(), None),
            ("Jane".to_string(), None)
        ]
    );

    for (message, expected) in [
        (
            Message::new("x").with_header("Content-Type", "text/plain"),
            "unsupported content type",
        ),
        (
            Message::new("{not json").with_header("Content-Type", "application/json"),
            "cannot decode",
        ),
        (
            Message::new(&b"\xff\xff"[..]).with_header("Content-Type", "application/protobuf"),
            "cannot decode",
        ),
        (
            Message::new(r#"{"name":"fail"}"#).with_header("Content-Type", "application/json"),
            "refused",
        ),
    ] {
        let err = broker.publish(TOPIC, message).await.expect_err("refused");
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert_eq!(seen.lock().expect("lock").len(), 3);
    let _ = stop.send(());
    run.await.expect("task").expect("stopped");
}

#[tokio::test]
async fn a_graceful_stop_drains_subscriptions_before_deregistering() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let broker = MemoryBroker::new();
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (stop, run, node) = serve_with(Arc::new(broker.clone()), &registry, {
        let (started, release, done) = (started.clone(), release.clone(), done.clone());
        move |received: Received<Request>| {
            let (started, release, done) = (started.clone(), release.clone(), done.clone());
            async move {
                if received.message.name != "a" {
                    done.fetch_add(100, Ordering::SeqCst);
                    return Ok(());
                }
                started.notify_one();
                let _permit = release.acquire().await.map_err(|e| e.to_string())?;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    })
    .await;
    let in_flight = tokio::spawn({
        let broker = broker.clone();
        async move { broker.publish(TOPIC, Message::new(&b"\x0a\x01a"[..])).await }
    });
    started.notified().await;
    let _ = stop.send(());

    // The drain has begun once new messages reach no handler.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = done.load(Ordering::SeqCst);
        let _ = broker.publish(TOPIC, Message::new(&b"\x0a\x01b"[..])).await;
        if done.load(Ordering::SeqCst) == before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never drained");
        tokio::task::yield_now().await;
    }
    let listed = registry
        .get_service("go.micro.srv.greeter")
        .await
        .expect("still registered while the handler runs");
    assert_eq!(listed[0].nodes[0].id, node);
    assert!(!run.is_finished());

    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stopped in time")
        .expect("task")
        .expect("clean stop");
    assert_eq!(done.load(Ordering::SeqCst) % 100, 1, "the handler finished");
    in_flight.await.expect("task").expect("delivered");
    assert!(
        registry.get_service("go.micro.srv.greeter").await.is_err(),
        "deregistered after the drain"
    );
}

/// Through the http broker's listener, as a go-micro publisher reaches it:
/// a message in a content type no codec decodes, or that does not decode,
/// is refused with a 500 naming why (go-micro's listener answered 200
/// whatever happened), the publisher's `publish` returns that reason, and
/// the handler never runs.
#[tokio::test]
async fn undecodable_messages_through_the_http_listener_are_refused_clearly() {
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let broker = HttpBroker::new(
        registry.clone(),
        HttpOptions {
            address: "127.0.0.1:0".into(),
            ..HttpOptions::default()
        },
    );
    let handled = Arc::new(AtomicUsize::new(0));
    let (stop, run, _) = serve_with(Arc::new(broker.clone()), &registry, {
        let handled = handled.clone();
        move |_: Received<Request>| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    })
    .await;
    let publisher = HttpBroker::new(
        registry.clone(),
        HttpOptions {
            address: "127.0.0.1:0".into(),
            ..HttpOptions::default()
        },
    );
    for (message, expected) in [
        (
            Message::new("x").with_header("Content-Type", "text/plain"),
            "unsupported content type",
        ),
        (
            Message::new("x").with_header("Content-Type", "application/x-unknown"),
            "unsupported content type",
        ),
        (
            Message::new("{not json").with_header("Content-Type", "application/json"),
            "cannot decode",
        ),
    ] {
        let error = publisher
            .publish(TOPIC, message)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
    // The listener's own answer, as a go-micro publisher gets it.
    let node = registry
        .get_service(micro_broker::http::SERVICE_NAME)
        .await
        .expect("the subscription's node")
        .remove(0)
        .nodes
        .remove(0);
    let envelope = Message::new("x")
        .with_header("Content-Type", "text/plain")
        .with_header("Micro-Topic", TOPIC)
        .to_envelope();
    let address: std::net::SocketAddr = node.address.parse().expect("address");
    let path = format!("/?id={}", node.id);
    let answer = tokio::task::spawn_blocking(move || {
        micro_testing::http::request(address, "POST", &path, "application/json", &envelope)
    })
    .await
    .expect("request");
    assert!(
        answer.starts_with("HTTP/1.1 500"),
        "a refusal is a 500: {answer}"
    );
    assert!(answer.contains("unsupported content type"), "{answer}");
    assert_eq!(handled.load(Ordering::SeqCst), 0, "the handler never ran");
    let _ = stop.send(());
    run.await.expect("task").expect("stopped");
    publisher.close().await;
}

/// On a durable broker a server's subscription without a queue is kept
/// under the service's name: what is published while every instance is
/// stopped reaches the next one.
#[tokio::test]
async fn a_services_subscription_is_durable_under_its_name_on_jetstream() {
    use micro_broker::jetstream::{JetStreamBroker, JetStreamOptions};
    let server = micro_testing::nats::JetStreamServer::start();
    let jetstream = || -> SharedBroker {
        Arc::new(
            JetStreamBroker::new(JetStreamOptions::from_addresses(&server.url()).expect("url"))
                .expect("broker"),
        )
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = |broker: SharedBroker| {
        let tx = tx.clone();
        async move {
            let server = Server::builder("go.micro.srv.greeter")
                .registry(Arc::new(MemoryRegistry::new()))
                .options(loopback_options())
                .broker(broker)
                .file_descriptor_set(FILE_DESCRIPTOR_SET)
                .add_service(GreeterServer::new(TestGreeter::new("a")))
                .subscribe(TOPIC, move |received: Received<Request>| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(received.message.name);
                        Ok(())
                    }
                })
                .bind()
                .await
                .expect("bind");
            let mut registered = server.registered();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let run = tokio::spawn(server.run_until(async {
                let _ = stopped.await;
            }));
            registered.wait_for(|r| *r).await.expect("registered");
            (stop, run)
        }
    };
    let json = |name: &str| {
        Message::new(format!(r#"{{"name":"{name}"}}"#))
            .with_header("Content-Type", "application/json")
    };
    let publisher = jetstream();
    let (stop, running) = run(jetstream()).await;
    publisher
        .publish(TOPIC, json("first"))
        .await
        .expect("published");
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("in time");
    assert_eq!(first.as_deref(), Some("first"));
    stop.send(()).expect("stop");
    running.await.expect("joined").expect("stopped");
    // No instance runs: kept for the service.
    publisher
        .publish(TOPIC, json("away"))
        .await
        .expect("published");
    let (stop, running) = run(jetstream()).await;
    let away = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("in time");
    assert_eq!(away.as_deref(), Some("away"), "and not \"first\" again");
    assert!(rx.try_recv().is_err(), "nothing more");
    stop.send(()).expect("stop");
    running.await.expect("joined").expect("stopped");
}
