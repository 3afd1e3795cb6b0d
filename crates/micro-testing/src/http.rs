//! A bare HTTP/1.1 GET over a plain TCP stream, for tests of the binaries
//! that serve HTTP: no client library between the test and the bytes; and
//! a WebSocket handshake the same way, with a node that accepts one and
//! echoes, for the proxies that join WebSockets through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a read may wait for the server.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `address` and sends `GET path` (`Connection: close`); the
/// answer is left to read (a stream of events, say). Reads time out after
/// 10 s.
pub fn connect_get(address: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    stream
}

/// `GET path` on `address`: the answer as the server wrote it (status line,
/// headers, body), read until it closes the connection or 10 s pass
/// without a byte.
pub fn get(address: SocketAddr, path: &str) -> String {
    let mut answer = String::new();
    let _ = connect_get(address, path).read_to_string(&mut answer);
    answer
}

/// A node that accepts one WebSocket handshake (any request: it answers
/// `101` with `Sec-WebSocket-Accept: accepted`), then echoes every byte until
/// the tunnel closes. The task returns the request head it got.
pub async fn websocket_echo_node() -> (SocketAddr, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let head = read_head(&mut stream).await;
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: accepted\r\n\r\n",
            )
            .await
            .expect("answer");
        let mut buf = [0u8; 1024];
        // Bounded: until the tunnel closes, or 100 reads.
        for _ in 0..100 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        head
    });
    (address, task)
}

/// Sends a WebSocket handshake for `path` to `address` (`Host: host`);
/// returns the connection and the answer's head, lowercased (10 s at most).
pub async fn websocket_handshake(
    address: SocketAddr,
    host: &str,
    path: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(handshake.as_bytes())
        .await
        .expect("handshake");
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .expect("an answer in time");
    (stream, head.to_lowercase())
}

/// Writes `bytes` and reads as many back (10 s at most).
pub async fn echoed(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(bytes).await.expect("write");
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(READ_TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    back
}

/// Reads a request or response head, byte by byte (at most 16 KiB).
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn gets_the_whole_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut reader = BufReader::new(socket.try_clone().expect("clone"));
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                request.push(line.trim_end().to_string());
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("answer");
            request
        });
        let answer = get(address, "/health?x=1");
        assert_eq!(answer, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let request = server.join().expect("server");
        assert_eq!(request[0], "GET /health?x=1 HTTP/1.1");
        assert!(request.contains(&format!("Host: {address}")), "{request:?}");
        assert!(request.contains(&"Connection: close".to_string()));
    }
}
