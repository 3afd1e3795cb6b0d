//! HTTP/1 head deadlines after the first request, kept by the serve helper
//! (hyper's per-request header timer is off): a keep-alive connection idle
//! between requests has the idle timeout, and a request head whose bytes
//! started arriving has the header read timeout to complete.

use std::time::Duration;

use micro_serve::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
const HEAD: Duration = Duration::from_millis(300);
const IDLE: Duration = Duration::from_secs(30);

fn router() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "hello" }))
}

/// Serves on a free port until the returned sender is dropped.
async fn serve() -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        header_read_timeout: HEAD,
        idle_timeout: IDLE,
        ..ServeOptions::new("test")
    };
    tokio::spawn(micro_serve::serve(listener, router(), options, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// Sends one request on `stream` and reads its whole answer.
async fn request(stream: &mut TcpStream) -> String {
    stream.write_all(REQUEST).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"hello") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(n > 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_idles_past_the_header_timeout() {
    let (address, _stop) = serve().await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    assert!(request(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for several header timeouts, well within the idle timeout.
    tokio::time::sleep(HEAD * 4).await;
    assert!(
        request(&mut stream).await.starts_with("HTTP/1.1 200"),
        "the idle connection still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_second_head_is_cut_off_at_the_header_timeout() {
    let (address, _stop) = serve().await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    assert!(request(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Half a head, then nothing.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: te")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    // Closed (or reset): either ends the read.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "still open 10 s later (idle timeout {IDLE:?})"
    );
    let took = started.elapsed();
    assert!(
        took >= HEAD - Duration::from_millis(50) && took < Duration::from_secs(5),
        "closed after {took:?}, header timeout {HEAD:?}"
    );
}
