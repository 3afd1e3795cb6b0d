//! Three greeter instances and a client in one process, on the memory
//! registry: calls go round robin, and survive an instance stopping.
//!
//! ```text
//! cargo run -p examples --bin greeter-in-process
//! ```

use std::sync::Arc;

use examples::greeter::{Request, greeter_client::GreeterClient, greeter_server::GreeterServer};
use examples::{FILE_DESCRIPTOR_SET, Greeter};
use micro::registry::memory::MemoryRegistry;
use micro::{Client, ClientOptions, Server, ServerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro::log::init();
    let registry = Arc::new(MemoryRegistry::new());
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let server = Server::builder("go.micro.srv.greeter")
            .registry(registry.clone())
            .options(ServerOptions {
                address: "127.0.0.1:0".into(),
                ..ServerOptions::default()
            })
            .file_descriptor_set(FILE_DESCRIPTOR_SET)
            .add_service(GreeterServer::new(Greeter))
            .bind()
            .await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        runs.push(tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        })));
    }

    let client = Client::new(registry.clone(), ClientOptions::default());
    while client.nodes("go.micro.srv.greeter").await.len() < 3 {
        tokio::task::yield_now().await;
    }
    let channel = client.service("go.micro.srv.greeter");
    let stats = channel.node_set().clone();
    let mut greeter = GreeterClient::new(channel);
    for i in 0..6 {
        let reply = greeter
            .hello(Request {
                name: format!("call {i}"),
                ..Default::default()
            })
            .await?;
        println!("{}", reply.into_inner().msg);
    }
    // Stop one instance: it deregisters, the others take its calls.
    if let Some(stop) = stops.pop() {
        let _ = stop.send(());
    }
    if let Some(run) = runs.pop() {
        run.await??;
    }
    for i in 6..12 {
        let reply = greeter
            .hello(Request {
                name: format!("call {i}"),
                ..Default::default()
            })
            .await?;
        println!("{}", reply.into_inner().msg);
    }
    for node in stats.stats() {
        println!(
            "{} at {}: {} calls",
            node.node.id, node.node.address, node.attempts
        );
    }
    for stop in stops {
        let _ = stop.send(());
    }
    for run in runs {
        run.await??;
    }
    Ok(())
}
