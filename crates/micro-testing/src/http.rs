//! A bare HTTP/1.1 GET over a plain TCP stream, for tests of the binaries
//! that serve HTTP: no client library between the test and the bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a read may wait for the server.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `address` and sends `GET path` (`Connection: close`); the
/// answer is left to read (a stream of events, say). Reads time out after
/// 10 s.
pub fn connect_get(address: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(address);
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

/// `method path` on `address` with `content_type` and `body`
/// (`Connection: close`): the answer as the server wrote it, read as
/// [`get`] reads it.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> String {
    let mut stream = connect(address);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    // A server may answer before the whole body is sent (a body over its
    // limit) and close: the answer still counts.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A connection to `address` whose reads time out after 10 s.
fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    stream
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
