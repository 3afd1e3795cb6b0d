//! A light gRPC load generator: one pre-encoded unary request sent over raw
//! HTTP/2 connections (hyper's `client::conn::http2`), its `grpc-status`
//! read from the trailers (or the trailers-only headers). No channel, no
//! balancer, no retry or deadline stage, no message decoding: what is left
//! per call is HTTP/2 framing and the task that waits for the answer, so the
//! generator costs far less per call than the server it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How a call ended, by its `grpc-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The handler answered: OK, or `NotFound` (it looked and found none).
    Answered,
    /// `RESOURCE_EXHAUSTED`: refused unexecuted (admission control).
    Refused,
    /// Anything else: another status, a reset stream, a broken connection,
    /// or no answer within the generator's own bound.
    Failed,
}

const OK: &[u8] = b"0";
const NOT_FOUND: &[u8] = b"5";
const RESOURCE_EXHAUSTED: &[u8] = b"8";

impl Status {
    fn of(headers: &HeaderMap) -> Option<Status> {
        let status = headers.get("grpc-status")?.as_bytes();
        Some(match status {
            OK | NOT_FOUND => Status::Answered,
            RESOURCE_EXHAUSTED => Status::Refused,
            _ => Status::Failed,
        })
    }
}

/// `connections` HTTP/2 connections to one server, taken in turn, each
/// call the same pre-encoded request. Cheap to clone (one pointer).
#[derive(Clone)]
pub struct RawGrpc {
    shared: Arc<Shared>,
}

struct Shared {
    senders: Vec<SendRequest<Full<Bytes>>>,
    next: AtomicUsize,
    uri: Uri,
    /// The length-prefixed message.
    body: Bytes,
    timeout: HeaderValue,
    /// The generator gives up on a call after this (the server applies
    /// `timeout` itself; this only bounds a call that never ends).
    bound: Duration,
}

impl RawGrpc {
    /// Connects `connections` times to `addr` for unary calls of `path`
    /// with `message` (a protobuf message, encoded once here), sending
    /// `grpc-timeout: timeout` and waiting `bound` at most for each answer.
    /// Must run inside a tokio runtime: the connections' tasks are spawned
    /// on it.
    pub async fn connect(
        addr: SocketAddr,
        connections: usize,
        path: &str,
        message: &impl prost::Message,
        timeout: Duration,
        bound: Duration,
    ) -> std::io::Result<RawGrpc> {
        let mut senders = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            senders.push(sender);
        }
        let encoded = message.encode_to_vec();
        let mut body = BytesMut::with_capacity(5 + encoded.len());
        body.put_u8(0);
        body.put_u32(u32::try_from(encoded.len()).map_err(std::io::Error::other)?);
        body.put_slice(&encoded);
        let uri: Uri = format!("http://{addr}{path}")
            .parse()
            .map_err(std::io::Error::other)?;
        // grpc-timeout's form (at most 8 digits and a unit): milliseconds.
        let timeout = HeaderValue::try_from(format!("{}m", timeout.as_millis()))
            .map_err(std::io::Error::other)?;
        Ok(RawGrpc {
            shared: Arc::new(Shared {
                senders,
                next: AtomicUsize::new(0),
                uri,
                body: body.freeze(),
                timeout,
                bound,
            }),
        })
    }

    /// One call on the next connection in turn.
    pub async fn call(&self) -> Status {
        let shared = &self.shared;
        let turn = shared.next.fetch_add(1, Ordering::Relaxed) % shared.senders.len();
        let mut sender = shared.senders[turn].clone();
        let Ok(mut request) = Request::builder()
            .method(Method::POST)
            .uri(shared.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(Full::new(shared.body.clone()))
        else {
            return Status::Failed;
        };
        request
            .headers_mut()
            .insert("grpc-timeout", shared.timeout.clone());
        let exchange = async move {
            let response = sender.send_request(request).await.ok()?;
            // Trailers-only: the status is in the headers, the body empty.
            if let Some(status) = Status::of(response.headers()) {
                return Some(status);
            }
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(trailers) = frame.ok()?.into_trailers() {
                    return Status::of(&trailers);
                }
            }
            None
        };
        tokio::time::timeout(shared.bound, exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or(Status::Failed)
    }
}
