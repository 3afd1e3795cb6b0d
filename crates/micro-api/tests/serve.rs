//! The gateway on a real socket: the connection-level limits hyper enforces
//! (header size and count, header read timeout) and graceful shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RunningGateway, get, http_client, wait_for_nodes};
use micro_api::ApiOptions;
use micro_registry::memory::MemoryRegistry;
use micro_testing::{TestGreeter, TestServer, loopback_options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` raw and returns what the server answers until it closes
/// (or 5 s pass).
async fn raw(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn hyper_refuses_oversized_heads_with_431() {
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            max_headers: 8,
            max_header_bytes: 1024,
            ..ApiOptions::default()
        },
    )
    .await;

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(gateway.address, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(gateway.address, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    // A normal request on the same gateway is fine.
    let answer = raw(
        gateway.address,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_head_is_cut_off() {
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            header_read_timeout: Duration::from_millis(300),
            ..ApiOptions::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(gateway.address).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&out);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        "go.micro.srv.greeter",
        TestGreeter::new("slow").with_delay(Duration::from_millis(500)),
        loopback_options(),
    );
    let gateway = RunningGateway::start(
        registry.clone(),
        ApiOptions {
            namespace: "go.micro.srv".into(),
            ..ApiOptions::default()
        },
    )
    .await;
    wait_for_nodes(gateway.gateway.client(), "go.micro.srv.greeter", 1).await;
    let http = http_client();
    let url = gateway.url("/greeter/greeter/hello?name=late");
    let in_flight = tokio::spawn(async move { get(&http, &url).await });
    // Stop once the call has reached the greeter.
    tokio::time::timeout(Duration::from_secs(10), server.greeter.call_started())
        .await
        .expect("call started");
    let address = gateway.address;
    gateway.stop().await;
    let reply = in_flight.await.expect("task").expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    // And nothing is accepted any more.
    assert!(TcpStream::connect(address).await.is_err());
    server.stop();
}
