//! Throughput and latency of a simple GET through the gateway (api handler)
//! to one API service, both on this machine. Not run by default:
//!
//! ```sh
//! cargo test --release -p micro-api --test bench -- --ignored --nocapture
//! ```
//!
//! Bounded: `CONNECTIONS` keep-alive connections for `DURATION`, then it stops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RunningGateway, get, http_client, wait_for_nodes};
use micro_api::{ApiOptions, HandlerKind};
use micro_registry::memory::MemoryRegistry;
use micro_testing::api::{TestApi, TestApiServer};
use micro_testing::loopback_options;
use tokio::time::Instant;

const CONNECTIONS: usize = 16;
const DURATION: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn get_through_the_api_handler() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestApiServer::start(
        registry.clone(),
        "go.micro.api.test",
        TestApi::new("bench"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(
        registry.clone(),
        ApiOptions {
            handler: HandlerKind::Api,
            ..ApiOptions::default()
        },
    )
    .await;
    wait_for_nodes(gateway.gateway.client(), "go.micro.api.test", 1).await;
    let url = gateway.url("/test/say/hello?name=huohuo");

    // Warm up: connections, node set, HTTP/2 to the service.
    let warm = http_client();
    for _ in 0..200 {
        let reply = get(&warm, &url).await.expect("answer");
        assert_eq!(reply.status, 200);
    }

    let started = Instant::now();
    let until = started + DURATION;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = http_client();
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < until {
                    let sent = Instant::now();
                    match get(&http, &url).await {
                        Ok(reply) if reply.status == 200 => latencies.push(sent.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    eprintln!(
        "GET /test/say/hello via api handler: {} requests in {:.1?} with {CONNECTIONS} connections: \
         {:.0} req/s, p50 {:.2?}, p99 {:.2?}, max {:.2?}, {errors} errors",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1],
    );
    assert_eq!(errors, 0);
    gateway.stop().await;
    server.stop();
}
