//! A stopping listener loses no request a client already sent: a connection
//! accepted just before the stop has its first request answered, then
//! closed, and a connection the kernel completed before the
//! stop, still waiting in the listen queue, is served rather than reset.
//! This is what makes a gateway's rolling restart behind a TCP balancer
//! lossless (tests/topology/tests/rolling.rs).

use std::io::{Read, Write};
use std::time::Duration;

use micro_serve::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

fn router() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "hello" }))
}

fn options() -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_secs(5),
        ..ServeOptions::new("test")
    }
}

/// `answer` is everything read until the server closed the connection.
fn assert_answered_and_closed(answer: &str) {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("hello"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_the_stop_has_its_request_answered() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(micro_serve::serve(listener, router(), options(), async {
        let _ = stopped.await;
    }));
    let mut early = TcpStream::connect(address).await.expect("connect");
    let _ = stop.send(());
    // The stop is under way once new connects are refused.
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(address).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts 5 s after the stop");
    // Only now does the request leave.
    early.write_all(REQUEST).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), early.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert_answered_and_closed(&answer);
    server.await.expect("server task").expect("serve");
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_waiting_in_the_listen_queue_at_the_stop_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(micro_serve::serve(listener, router(), options(), async {
        let _ = stopped.await;
    }));
    // The server task starts and waits for connections.
    tokio::task::yield_now().await;
    // Blocking calls on this (only) thread: the kernel completes the
    // connection and queues the request while the server task cannot run,
    // so both wait in the listen queue when the stop arrives.
    let mut queued = std::net::TcpStream::connect(address).expect("connect");
    queued.write_all(REQUEST).expect("write");
    let _ = stop.send(());
    let reader = std::thread::spawn(move || {
        queued
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        let read = queued.read_to_string(&mut answer);
        (read.map_err(|e| e.to_string()), answer)
    });
    server.await.expect("server task").expect("serve");
    let (read, answer) = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    read.expect("read: the connection was reset");
    assert_answered_and_closed(&answer);
}
