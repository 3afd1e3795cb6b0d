//! Connections an attacker opens and never uses cannot lock clients out.
//!
//! The harness opens 1,100 silent TCP connections, then 1,100 that send only
//! the HTTP/2 preface, from 11 loopback source addresses (more than the
//! gateway's 1,024 slots), while normal clients call a real greeter through
//! the gateway. It counts the attacker's connections the gateway still holds
//! (seen from the attacker's side: not yet closed), checks every one of them
//! is closed by the header deadline, and samples the process RSS.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{RunningGateway, wait_for_nodes};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use micro_api::ApiOptions;
use micro_registry::memory::MemoryRegistry;
use micro_testing::{TestGreeter, TestServer, loopback_options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const ATTACK: usize = 1_100;
const SOURCES: u8 = 11;
const HEAD_TIMEOUT: Duration = Duration::from_secs(3);

fn raise_fd_limit() {
    // Each attack connection is two descriptors in this process (both ends).
    let limit = rlimit::increase_nofile_limit(16 * 1024).expect("RLIMIT_NOFILE");
    assert!(
        limit >= 6_000,
        "RLIMIT_NOFILE hard limit {limit} is too low for this test"
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn source(i: usize) -> IpAddr {
    // 127.0.0.10 .. 127.0.0.20; the normal clients use 127.0.0.1.
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        10 + (i % usize::from(SOURCES)) as u8,
    ))
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// `n` connections that send `greeting` (maybe nothing) and then wait.
async fn attack(to: SocketAddr, n: usize, greeting: &'static [u8]) -> Vec<TcpStream> {
    let streams: Vec<TcpStream> = futures::stream::iter(0..n)
        .map(|i| async move {
            let mut stream = connect_from(source(i), to)
                .await
                .expect("attacker connects");
            if !greeting.is_empty() {
                // The gateway may already have closed it to make room.
                let _ = stream.write_all(greeting).await;
            }
            stream
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(streams.len(), n);
    streams
}

/// Whether the gateway still holds `stream` open (it has not closed it).
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue, // e.g. the gateway's HTTP/2 SETTINGS
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

/// Waits until the gateway closed every stream; the time the last took.
async fn all_closed(streams: Vec<TcpStream>, within: Duration) -> Duration {
    let started = Instant::now();
    let deadline = started + within;
    let closed = futures::stream::iter(streams)
        .map(|mut stream| async move {
            let mut sink = Vec::new();
            tokio::time::timeout_at(deadline, stream.read_to_end(&mut sink))
                .await
                .is_ok()
        })
        .buffer_unordered(2_048)
        .filter(|closed| futures::future::ready(*closed))
        .count()
        .await;
    assert_eq!(
        closed, ATTACK,
        "attack connections still open after {within:?}"
    );
    started.elapsed()
}

fn client_from(ip: IpAddr) -> HttpClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip));
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// How many of `n` greeter calls by normal clients from `ip` are answered
/// 200 (each on a new connection, 5 s at most).
async fn normal_clients(gateway: &RunningGateway, ip: IpAddr, n: usize) -> usize {
    let client = client_from(ip);
    let url = gateway.url("/greeter/greeter/hello?name=alice");
    let mut served = 0;
    for _ in 0..n {
        let request = http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let response = client.request(request).await.ok()?;
            let status = response.status();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        })
        .await;
        if let Ok(Some((status, body))) = answer {
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            served += 1;
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_connections_do_not_lock_clients_out() {
    raise_fd_limit();
    let registry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        "go.micro.srv.greeter",
        TestGreeter::new("g"),
        loopback_options(),
    );
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            namespace: "go.micro.srv".into(),
            header_read_timeout: HEAD_TIMEOUT,
            ..ApiOptions::default()
        },
    )
    .await;
    let slots = gateway.gateway.options().max_connections;
    wait_for_nodes(gateway.gateway.client(), "go.micro.srv.greeter", 1).await;
    let normal = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(normal_clients(&gateway, normal, 2).await, 2);
    let rss_before = rss_kib();

    for (kind, greeting) in [
        ("silent TCP", &b""[..]),
        ("HTTP/2 preface-only", H2_PREFACE),
    ] {
        let started = Instant::now();
        let streams = attack(gateway.address, ATTACK, greeting).await;
        let opened_in = started.elapsed();
        let served = normal_clients(&gateway, normal, 8).await;
        // A client from an attacker's own address gets in too: that
        // address's longest-idle connection makes room.
        let served_same_ip = normal_clients(&gateway, source(0), 2).await;
        let held = streams.iter().filter(|s| still_open(s)).count();
        let rss = rss_kib();
        let closed_in = all_closed(streams, HEAD_TIMEOUT + Duration::from_secs(5)).await;
        eprintln!(
            "{kind}: {ATTACK} attack connections opened in {opened_in:?}; attacker held {held} \
             (slots {slots}); normal clients served {served}/8 (+{served_same_ip}/2 from an \
             attacking address); every attack connection closed {closed_in:?} later; \
             RSS {} MiB -> {} MiB",
            rss_before / 1024,
            rss / 1024,
        );
        assert_eq!(served, 8, "{kind}: normal clients locked out");
        assert_eq!(
            served_same_ip, 2,
            "{kind}: client on an attacking address locked out"
        );
        assert!(held <= slots, "{kind}: attacker holds {held} > {slots}");
        assert!(
            rss.saturating_sub(rss_before) < 96 * 1024,
            "{kind}: RSS grew from {rss_before} KiB to {rss} KiB"
        );
    }
    gateway.stop().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share() {
    raise_fd_limit();
    let registry = Arc::new(MemoryRegistry::new());
    let gateway = RunningGateway::start(
        registry,
        ApiOptions {
            max_connections_per_ip: 16,
            ..ApiOptions::default()
        },
    )
    .await;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut streams = Vec::new();
    for _ in 0..64 {
        streams.push(
            connect_from(attacker, gateway.address)
                .await
                .expect("connect"),
        );
    }
    // Each connection past the share closes that address's longest-idle
    // one: the first 48 are closed, the newest 16 kept.
    let mut kept = streams.split_off(48);
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
            .await
            .unwrap_or_else(|_| panic!("connection {i} still open past the share"))
            .ok();
    }
    assert!(kept.iter().all(still_open), "the newest 16 are kept");
    // A 65th from that address still gets a slot (and an answer).
    let mut late = connect_from(attacker, gateway.address)
        .await
        .expect("connect");
    late.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), late.read_to_end(&mut out))
        .await
        .expect("answered")
        .expect("read");
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    kept.clear();
    gateway.stop().await;
}

/// The idle timeout of the two tests below: long enough that a close right
/// after the answer (no keep-alive at all) is told apart from the timeout.
const IDLE: Duration = Duration::from_millis(500);

async fn idle_gateway() -> RunningGateway {
    RunningGateway::start(
        Arc::new(MemoryRegistry::new()),
        ApiOptions {
            idle_timeout: IDLE,
            ..ApiOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_keep_alive_connection_is_closed() {
    let gateway = idle_gateway().await;
    // One request, keep-alive, then nothing.
    let mut h1 = TcpStream::connect(gateway.address).await.expect("connect");
    h1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), h1.read_to_end(&mut out))
        .await
        .expect("closed within 5 s")
        .expect("read");
    let took = started.elapsed();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    // Kept open until the idle timeout (timers never fire early), not
    // closed with the answer.
    assert!(
        took >= IDLE - Duration::from_millis(100),
        "closed after {took:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_closed_with_goaway() {
    let gateway = idle_gateway().await;
    // One request on a connection the client keeps (and never uses again).
    let stream = TcpStream::connect(gateway.address).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get(gateway.url("/"))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("body");
    drop(body);
    let answered = Instant::now();
    // The gateway ends the connection (GOAWAY, then close): the driver
    // returns, without an error (a reset or a cut connection is one).
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("h2 connection closed within 5 s")
        .expect("driver task");
    let took = answered.elapsed();
    ended.unwrap_or_else(|e| panic!("h2 connection ended with an error after {took:?}: {e}"));
    // Kept open until the idle timeout, not closed with the answer.
    assert!(
        took >= IDLE - Duration::from_millis(100),
        "closed after {took:?}"
    );
    drop(sender);
    gateway.stop().await;
}
