//! A node that accepts calls and never answers (a frozen process, a tarpit)
//! costs one attempt, not the call: idempotent calls go on to another node,
//! others fail at once with a clear error, and the node soon stops getting
//! calls.

use std::sync::Arc;
use std::time::Duration;

use micro::client::ClientError;
use micro::registry::memory::MemoryRegistry;
use micro::registry::{Node, RegisterOptions, Registry, Service};
use micro::{Client, ClientOptions};
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use micro_testing::{AbortOnDrop, TestServer};
use tokio::net::TcpListener;
use tokio::time::Instant;

const SERVICE: &str = "go.micro.srv.greeter";

/// Accepts TCP connections and holds them without a byte in reply, like the
/// kernel does for a SIGSTOPped server. Stops (closing them all) on drop.
struct Tarpit {
    address: std::net::SocketAddr,
    _task: AbortOnDrop<()>,
}

impl Tarpit {
    async fn start() -> Tarpit {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let task = AbortOnDrop::spawn(async move {
            let mut held = Vec::new();
            // Bounded: a test opens a handful of connections.
            while held.len() < 1000 {
                match listener.accept().await {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => return,
                }
            }
        });
        Tarpit {
            address,
            _task: task,
        }
    }

    async fn register(&self, registry: &MemoryRegistry) {
        let service = Service::new(SERVICE, "latest")
            .with_node(Node::new("tarpit", self.address.to_string()));
        registry
            .register(&service, RegisterOptions::default())
            .await
            .expect("register the tarpit");
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        attempt_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_get_past_a_hung_node_and_it_leaves_the_rotation() {
    let registry = Arc::new(MemoryRegistry::new());
    let servers: Vec<TestServer> = TestServer::start_many(registry.clone(), SERVICE, 2);
    let tarpit = Tarpit::start().await;
    tarpit.register(&registry).await;
    let client = Client::new(registry.clone(), options());
    assert_eq!(client.nodes(SERVICE).await.len(), 3);
    let channel = client.service(SERVICE).idempotent();
    let set = channel.node_set().clone();

    // Eight callers at once, as under load.
    let started = Instant::now();
    let mut callers = Vec::new();
    for c in 0..8 {
        let mut greeter = GreeterClient::new(channel.clone());
        callers.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for i in 0..25 {
                if let Err(status) = greeter
                    .hello(Request {
                        name: format!("{c}-{i}"),
                        ..Default::default()
                    })
                    .await
                {
                    failed.push(status);
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for caller in callers {
        failed.extend(caller.await.expect("caller"));
    }
    let tarpit_attempts = set
        .stats()
        .iter()
        .find(|s| s.node.id == "tarpit")
        .map_or(0, |s| s.attempts);
    let served: usize = servers.iter().map(|s| s.greeter.hits()).sum();
    eprintln!(
        "hung node: 200 idempotent calls by 8 callers, 1 of 3 nodes a tarpit: {} failed, \
         {tarpit_attempts} attempt(s) reached the tarpit, {:?} in all",
        failed.len(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert_eq!(served, 200);
    // Each hung attempt costs 300 ms: the tarpit must not take a share of
    // 200 calls (67 with round robin).
    assert!(tarpit_attempts <= 20, "{tarpit_attempts} attempts hung");
    for server in servers {
        server.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_is_not_idempotent_fails_fast_with_a_clear_error() {
    let registry = Arc::new(MemoryRegistry::new());
    let tarpit = Tarpit::start().await;
    tarpit.register(&registry).await;
    let client = Client::new(registry.clone(), options());
    let mut greeter = GreeterClient::new(client.service(SERVICE));
    let started = Instant::now();
    let status = greeter
        .hello(Request {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("the only node hangs");
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    let error = ClientError::from_status(&status).expect("a client error");
    assert!(
        matches!(error, ClientError::AttemptTimeout { .. }),
        "{error:?}"
    );
    assert!(
        status.message().contains("not idempotent"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains(&tarpit.address.to_string()),
        "the message names the node: {}",
        status.message()
    );
    // One attempt (300 ms), not the request timeout (10 s).
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
