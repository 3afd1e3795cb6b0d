//! Serve an [`axum::Router`] (or any tower service of axum requests) on a
//! TCP listener: the one accept loop of the gateway (`micro api`), the
//! dashboard (`micro web`), web services (`micro::web`) and the admin
//! listener, with the limits that live at the connection, so that
//! connections an attacker opens cannot lock clients out:
//!
//! - every connection is accepted at once and takes a slot in the budget:
//!   `max_connections` in all, `max_connections_per_ip` from one client IP;
//!   when the budget is spent the connection idle the longest gives its
//!   slot up (a connection is refused only when every slot serves a
//!   request);
//! - a connection has `header_read_timeout` from accept to its first
//!   complete request head, HTTP/1 and HTTP/2 alike (the version detection,
//!   and the TLS handshake, included), and `idle_timeout` between requests;
//!   on HTTP/1, once the bytes of the next head start arriving, that head
//!   has `header_read_timeout` to complete (checked here, with the
//!   connection's one lazy timer, rather than by hyper's per-head timer,
//!   which allocated and armed a tokio timer on every request);
//! - HTTP/2 connections are pinged, and closed when a ping goes unanswered;
//! - hyper enforces the header size and count caps.
//!
//! Each request carries its peer as [`RemoteAddr`]. Shutdown stops
//! accepting (the connections the kernel already completed are taken and
//! served first, not reset), then lets requests in flight finish, for at
//! most `shutdown_grace`: idle keep-alive connections close, a connection
//! accepted just before the stop gets its first request answered (awaited
//! until its head deadline), HTTP/1 requests in flight are answered with
//! `Connection: close` and HTTP/2 connections get GOAWAY.
//!
//! HTTP/1 upgrades (WebSockets) are served. A request that takes its
//! connection over holds it with the [`ConnectionHold`] in its extensions:
//! the connection keeps its slot in the budget, busy, until the hold ends,
//! and shutdown waits for it (the holder sees [`Held::stopping`]).
//!
//! [`admission`] is the concurrency limit (adaptive, fixed or off) that
//! gRPC servers and the gateway put in front of their requests.
//!
//! [`AbortOnDrop`] guards the background tasks of listeners and servers:
//! dropped, it aborts its task.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let router = axum::Router::new();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let options = micro_serve::ServeOptions::new("http");
//! micro_serve::serve(listener, router, options, std::future::pending()).await
//! # }
//! ```

pub mod address;
pub mod admission;
mod conns;
mod task;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::conns::{Busy, Conn, Connections, Refused};
pub use crate::task::AbortOnDrop;

/// The peer of a request, set by [`serve`]. Insert it yourself when
/// driving a router directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// In the extensions of every request with an `Upgrade` header: a handler
/// that takes the connection over calls [`ConnectionHold::hold`] to keep it
/// counted.
#[derive(Clone, Debug)]
pub struct ConnectionHold(Arc<HoldShared>);

#[derive(Debug)]
struct HoldShared {
    conn: Arc<Conn>,
    /// The connection's task waits until every clone is dropped.
    held: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
}

impl ConnectionHold {
    /// Keeps the connection's slot, busy (never given up to a newer
    /// connection), and the server's shutdown waiting, until the guard is
    /// dropped.
    pub fn hold(&self) -> Held {
        Held {
            _busy: self.0.conn.begin(),
            _held: self.0.held.clone(),
            stop: self.0.stop.clone(),
        }
    }
}

/// A connection taken over by a handler (see [`ConnectionHold`]).
#[derive(Debug)]
pub struct Held {
    _busy: Busy,
    _held: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
}

impl Held {
    /// Completes once the server is stopping: the holder should end what it
    /// does (within the shutdown grace) and drop the guard.
    pub async fn stopping(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

/// The limits of one listener; see the crate docs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Names the listener in logs (`Server [http]`).
    pub name: &'static str,
    pub max_connections: usize,
    /// 0: no per-IP cap.
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Whether HTTP/2 is served (by prior knowledge, or ALPN over TLS).
    pub http2: bool,
    /// TLS on every connection.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub shutdown_grace: Duration,
    /// Made when a connection opens and dropped when it closes (an
    /// open-connections gauge).
    pub on_connection: Option<fn() -> Box<dyn Send>>,
}

impl ServeOptions {
    /// Defaults for a listener named `name`: 1,024 connections, 64 per IP,
    /// 10 s to the first request head, 60 s idle, 100 headers of 16 KiB in
    /// all, HTTP/1 and HTTP/2, plaintext, 10 s to finish at shutdown.
    pub fn new(name: &'static str) -> Self {
        ServeOptions {
            name,
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            http2: true,
            tls: None,
            shutdown_grace: Duration::from_secs(10),
            on_connection: None,
        }
    }
}

/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection past its deadline may take to close (an HTTP/2
/// GOAWAY goes out first); one that lost its slot is closed at once.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `service` (an [`axum::Router`], or a tower service of axum
/// requests, which saves the router's boxing and matching on every
/// request) on `listener` until `shutdown` completes, then stops accepting
/// and lets requests in flight finish (see the crate docs).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let name = options.name;
    let shared = Arc::new(Shared {
        service,
        builder: builder(&options),
        connections: Connections::new(options.max_connections, options.max_connections_per_ip),
        tls: options.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        options,
    });
    let (stopping, stop_signal) = watch::channel(false);
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!("Server [{name}] accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        shared.spawn_connection(stream, remote, &stop_signal, &alive);
    }
    // Connections the kernel completed before the stop are served, not reset
    // by closing the listener under them: a balancer already sent their
    // requests (a connect refused after this is one it can send elsewhere).
    match listener.into_std() {
        Ok(listener) => {
            for _ in 0..shared.options.max_connections.max(1) {
                let Ok((stream, remote)) = listener.accept() else {
                    break;
                };
                match stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream))
                {
                    Ok(stream) => shared.spawn_connection(stream, remote, &stop_signal, &alive),
                    Err(e) => tracing::debug!(%remote, "connection dropped at stop: {e}"),
                }
            }
        }
        Err(e) => tracing::debug!("Server [{name}] listener not drained at stop: {e}"),
    }
    tracing::info!("Server [{name}] Stopping: finishing requests in flight");
    let _ = stopping.send(true);
    drop(alive);
    let grace = shared.options.shutdown_grace;
    if tokio::time::timeout(grace, all_ended.recv()).await.is_err() {
        tracing::warn!("Server [{name}] requests still in flight after {grace:?}; stopping anyway");
    }
    Ok(())
}

/// hyper's own cap on request headers (HTTP/1), when none is set.
const HYPER_MAX_HEADERS: usize = 100;

fn builder(options: &ServeOptions) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    if !options.http2 {
        builder = builder.http1_only();
    }
    // The head deadlines are the connection's (`drive`, `Conn::close_at`):
    // hyper's own header read timer would be armed on every request.
    builder.http1().header_read_timeout(None);
    // hyper parses up to 100 headers on the stack; a cap set explicitly,
    // even to 100, makes it fill a 100-entry buffer on every request head.
    if options.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(options.max_headers);
    }
    builder
        .http1()
        .max_buf_size((options.max_header_bytes + 4096).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// What every connection task shares.
struct Shared<S> {
    service: S,
    builder: Builder<TokioExecutor>,
    connections: Connections,
    tls: Option<tokio_rustls::TlsAcceptor>,
    options: ServeOptions,
}

/// Why a connection is being closed by the gateway.
#[derive(Clone, Copy, Debug)]
enum Close {
    Shutdown,
    Evicted,
    Deadline,
}

impl<S> Shared<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    /// Admits an accepted connection into the budget and serves it on its
    /// own task.
    fn spawn_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        stop_signal: &watch::Receiver<bool>,
        alive: &mpsc::Sender<()>,
    ) {
        let conn = match self.connections.admit(remote.ip()) {
            Ok(conn) => conn,
            Err(refused) => {
                // Every slot is serving a request: closing at once costs
                // nothing and tells the client to come back.
                tracing::debug!(%remote, "connection refused: {refused}");
                drop(stream);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = self.clone();
        let stop_signal = stop_signal.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _open = shared.options.on_connection.map(|open| open());
            let (held, mut all_released) = mpsc::channel::<()>(1);
            let hold = ConnectionHold(Arc::new(HoldShared {
                conn: conn.clone(),
                held,
                stop: stop_signal.clone(),
            }));
            shared
                .clone()
                .connection(stream, remote, hold, stop_signal)
                .await;
            // A connection taken over (a WebSocket) lives on in its holder.
            let _ = all_released.recv().await;
            shared.connections.release(&conn);
            drop(alive);
        });
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        hold: ConnectionHold,
        stop_signal: watch::Receiver<bool>,
    ) {
        let Some(tls) = self.tls.clone() else {
            return self.drive(stream, remote, hold, stop_signal).await;
        };
        let conn = hold.0.conn.clone();
        // The handshake counts against the deadline to the first request.
        let deadline = tokio::time::Instant::now() + self.options.header_read_timeout;
        let handshake = tokio::select! {
            done = tokio::time::timeout_at(deadline, tls.accept(stream)) => done,
            () = conn.close.notified() => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.drive(stream, remote, hold, stop_signal).await,
            Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(%remote, "TLS handshake not done in time"),
        }
    }

    /// Serves one connection until it ends, loses its slot, misses its
    /// deadline, or the server stops.
    async fn drive<I>(
        self: Arc<Self>,
        io: I,
        remote: SocketAddr,
        hold: ConnectionHold,
        mut stop_signal: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = hold.0.conn.clone();
        let service = ConnService {
            service: self.service.clone(),
            remote,
            conn: conn.clone(),
            hold,
        };
        // With upgrades: a WebSocket takes the connection over; a handler
        // keeps it in the budget with the request's `ConnectionHold`.
        let io = Watched {
            io,
            conn: conn.clone(),
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let (head, idle) = (self.options.header_read_timeout, self.options.idle_timeout);
        // The deadline is checked lazily: one timer, re-armed only when it
        // fires (not on every request), at most `step` apart, so a deadline
        // that moved earlier (the idle timeout after the first request being
        // shorter than the head timeout) is late by at most `step`. A head
        // that starts arriving is never late: its deadline is `head` (≥
        // `step`) away, and the next check re-arms to it.
        let step = head.min(idle).max(Duration::from_millis(1));
        let mut check_at = tokio::time::Instant::now() + step;
        let close = conn.close.notified();
        let stop = stop_signal.wait_for(|stop| *stop);
        tokio::pin!(close, stop);
        let reason = loop {
            let timer = tokio::time::sleep_until(check_at);
            tokio::pin!(timer);
            tokio::select! {
                // Polled in this order on every wake: the connection first,
                // and no random start (select!'s default), which costs.
                biased;
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%remote, "connection ended: {e}");
                    }
                    return;
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    match conn.close_at(head, idle) {
                        Some(at) if at <= now => break Close::Deadline,
                        Some(at) => check_at = at.min(now + step),
                        None => check_at = now + step,
                    }
                }
                () = &mut close => break Close::Evicted,
                _ = &mut stop => break Close::Shutdown,
            }
        };
        tracing::debug!(%remote, "closing connection: {reason:?}");
        if matches!(reason, Close::Shutdown) && !conn.has_requested() {
            // Accepted just before the stop, its request not read yet:
            // closed now (hyper drops a connection still detecting its
            // version) it would go unanswered, though a client or a balancer
            // already sent it. Its first request is awaited until its head
            // deadline; the connection closes after answering it.
            let first = conn.first_request.notified();
            tokio::pin!(first);
            first.as_mut().enable();
            if let Some(at) = conn.close_at(head, idle).filter(|_| !conn.has_requested()) {
                tokio::select! {
                    biased;
                    _ = connection.as_mut() => return,
                    () = &mut first => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
        }
        let grace = match reason {
            // Its slot is given to a newer connection now.
            Close::Evicted => return,
            Close::Deadline => CLOSE_GRACE,
            Close::Shutdown => self.options.shutdown_grace,
        };
        // HTTP/2: GOAWAY first; HTTP/1: close once idle.
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(grace, connection).await;
    }
}

/// The service for one connection: the peer as [`RemoteAddr`], and the
/// connection marked busy from each request head to the end of its response.
#[derive(Clone)]
struct ConnService<S> {
    service: S,
    remote: SocketAddr,
    conn: Arc<Conn>,
    hold: ConnectionHold,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone,
{
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future = Answer<S>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        if request.version() == http::Version::HTTP_2 {
            self.conn.set_http2();
        }
        let busy = self.conn.begin();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(RemoteAddr(self.remote));
        // Only a request asking to upgrade can take the connection over
        // (an extension costs an allocation: not on every request).
        if request.headers().contains_key(http::header::UPGRADE) {
            request.extensions_mut().insert(self.hold.clone());
        }
        Answer {
            inner: self.service.clone().oneshot(request),
            busy: Some(busy),
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's answer to one request, its body tracked (a named
    /// future, and the tracked body handed to hyper as is: this runs on
    /// every request, and boxing either costs an allocation).
    struct Answer<S>
    where
        S: tower::Service<http::Request<Body>>,
    {
        #[pin]
        inner: tower::util::Oneshot<S, http::Request<Body>>,
        busy: Option<Busy>,
    }
}

impl<S> Future for Answer<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Output = Result<http::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let busy = this.busy.take().expect("Answer polled after it completed");
        Poll::Ready(Ok(response.map(|body| Tracked { body, _busy: busy })))
    }
}

/// A connection's IO, telling its [`Conn`] when bytes arrive (on an idle
/// HTTP/1 connection, the start of the next request head: see
/// [`Conn::bytes_read`]).
struct Watched<I> {
    io: I,
    conn: Arc<Conn>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that keeps its connection busy until it is done.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full => f.write_str("every slot is serving a request"),
            Refused::IpFull => f.write_str("every slot of this client IP is serving a request"),
        }
    }
}
