//! Publish and subscribe, go-micro's way, in one process (memory registry
//! and broker): two greeter instances each subscribe to
//! `go.micro.topic.greet` (every instance gets every message) and, in queue
//! group `workers`, to `go.micro.topic.work` (one of them gets each); an
//! event publishes protobuf and JSON, decoded by content type.
//!
//! ```text
//! cargo run -p examples --bin greeter-pubsub
//! ```
//!
//! Across processes, the same code runs on `--broker=http` (go-micro's
//! default, through the registry) or `--broker=nats`: see docs/events.md.

use std::sync::Arc;

use examples::greeter::Request;
use examples::greeter::greeter_server::GreeterServer;
use examples::{FILE_DESCRIPTOR_SET, Greeter};
use micro::broker::memory::MemoryBroker;
use micro::broker::{HandlerError, SharedBroker, SubscribeOptions};
use micro::registry::memory::MemoryRegistry;
use micro::{Event, Received, Server, ServerOptions};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro::log::init();
    let registry = Arc::new(MemoryRegistry::new());
    let broker: SharedBroker = Arc::new(MemoryBroker::new());
    let (seen, mut lines) = mpsc::unbounded_channel::<String>();
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for instance in ["a", "b"] {
        let greet = {
            let seen = seen.clone();
            move |received: Received<Request>| {
                let seen = seen.clone();
                async move {
                    let _ = seen.send(format!(
                        "{instance}: greet {} (from {})",
                        received.message.name,
                        received
                            .header
                            .get("Micro-From-Service")
                            .map_or("?", String::as_str)
                    ));
                    Ok::<(), HandlerError>(())
                }
            }
        };
        let work = {
            let seen = seen.clone();
            move |received: Received<Request>| {
                let seen = seen.clone();
                async move {
                    let _ = seen.send(format!("{instance}: work {}", received.message.name));
                    Ok::<(), HandlerError>(())
                }
            }
        };
        let server = Server::builder("go.micro.srv.greeter")
            .registry(registry.clone())
            .broker(broker.clone())
            .options(ServerOptions {
                address: "127.0.0.1:0".into(),
                ..ServerOptions::default()
            })
            .file_descriptor_set(FILE_DESCRIPTOR_SET)
            .add_service(GreeterServer::new(Greeter))
            .subscribe("go.micro.topic.greet", greet)
            .subscribe_with(
                "go.micro.topic.work",
                SubscribeOptions::queue("workers"),
                work,
            )
            .bind()
            .await?;
        let mut registered = server.registered();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        runs.push(tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        })));
        // Subscribed before it registers: ready once registered.
        registered.wait_for(|r| *r).await?;
    }
    drop(seen);

    let greet = Event::new("go.micro.topic.greet", broker.clone()).from_service("go.micro.srv.pub");
    greet
        .publish(&Request {
            name: "John".into(),
            count: 0,
        })
        .await?;
    greet.publish_json(r#"{"name":"Jane"}"#).await?;
    let work = Event::new("go.micro.topic.work", broker.clone());
    for i in 0..4 {
        work.publish_json(format!(r#"{{"name":"job {i}"}}"#))
            .await?;
    }
    for stop in stops {
        let _ = stop.send(());
    }
    for run in runs {
        run.await??;
    }
    // 2 greetings × 2 instances, 4 jobs once each.
    let mut all = Vec::new();
    while let Some(line) = lines.recv().await {
        all.push(line);
    }
    all.sort();
    for line in all {
        println!("{line}");
    }
    Ok(())
}
