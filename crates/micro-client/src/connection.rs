//! The HTTP/2 connection to one node: made on first use, made again once
//! lost, shared by every call to the node.
//!
//! A request goes straight to hyper's connection. tonic's `Channel` would
//! put a buffer between them (a queue, a worker task and a one-shot reply
//! per request, then a boxed service stack), which costs ~7k instructions a
//! call (`micro-bench hotpaths`: a tonic client on a bare hyper connection
//! 66.0k, on a `Channel` 73.3k). What the `Channel` adds is done here
//! directly: the node's scheme and authority on each request, a
//! `user-agent`, connecting lazily and again after the connection is lost.
//! Its `grpc-timeout` timer is not needed: the attempt stage bounds every
//! attempt itself.
//!
//! A request that a closed connection did not take (the node went away
//! or said GOAWAY between two calls) is sent once more on a new
//! connection: it never reached the node, so resending is safe for any
//! call.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;
use tower::Service as _;

use crate::BoxError;
use crate::tls::{ClientTls, TlsConnector};

/// The `user-agent` of every call (gRPC clients name themselves).
const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("micro-client/", env!("CARGO_PKG_VERSION")));

/// The connection could not be made (TCP, TLS or the HTTP/2 preface): the
/// request was not sent. Its source says why.
#[derive(Debug, Clone)]
pub struct ConnectError(Arc<BoxError>);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot connect to the node")
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.0.as_ref().as_ref())
    }
}

/// How a node is dialled: TCP, or TCP then TLS.
#[derive(Clone, Debug)]
enum Dialer {
    Plain(HttpConnector),
    Tls(TlsConnector),
}

/// What connecting gives: the connection's request sender, or why not.
type Connected = Result<SendRequest<Body>, ConnectError>;

/// The HTTP/2 connection to one node. Clones share it.
#[derive(Clone)]
pub(crate) struct NodeConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// `http` or `https`, and the node's `host:port`: set on each request.
    scheme: Scheme,
    authority: Authority,
    /// What the dialer is given (it reads host and port from it).
    dial_uri: Uri,
    dialer: Dialer,
    dial_timeout: Duration,
    connection_window: u32,
    state: Mutex<State>,
}

enum State {
    /// No connection, none being made.
    Idle,
    /// Being made: callers wait for it. `generation` tells a stale result
    /// from the current one.
    Connecting {
        generation: u64,
        connected: Shared<BoxFuture<'static, Connected>>,
    },
    Ready(SendRequest<Body>),
}

impl fmt::Debug for NodeConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.state() {
            State::Idle => "idle",
            State::Connecting { .. } => "connecting",
            State::Ready(sender) if sender.is_closed() => "closed",
            State::Ready(_) => "ready",
        };
        f.debug_struct("NodeConnection")
            .field("authority", &self.inner.authority)
            .field("state", &state)
            .finish()
    }
}

impl NodeConnection {
    /// A connection to `authority` (a checked `host:port`), made on first
    /// use.
    pub(crate) fn new(
        authority: Authority,
        tcp: HttpConnector,
        tls: Option<&ClientTls>,
        dial_timeout: Duration,
        connection_window: u32,
    ) -> NodeConnection {
        let dial_uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("an authority and a path make a URI");
        let (scheme, dialer) = match tls {
            Some(tls) => (
                Scheme::HTTPS,
                Dialer::Tls(TlsConnector::new(tcp, tls.clone())),
            ),
            None => (Scheme::HTTP, Dialer::Plain(tcp)),
        };
        NodeConnection {
            inner: Arc::new(Inner {
                scheme,
                authority,
                dial_uri,
                dialer,
                dial_timeout,
                connection_window,
                state: Mutex::new(State::Idle),
            }),
        }
    }

    /// Sends `request` to the node, connecting first if need be.
    pub(crate) fn call(&self, mut request: http::Request<Body>) -> ResponseFuture {
        let uri = std::mem::take(request.uri_mut());
        let mut parts = uri.into_parts();
        parts.scheme = Some(self.inner.scheme.clone());
        parts.authority = Some(self.inner.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        match Uri::from_parts(parts) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(e) => {
                return ResponseFuture {
                    inner: self.inner.clone(),
                    step: Step::Failed(Some(Box::new(e))),
                    resent: false,
                };
            }
        }
        if !request.headers().contains_key(http::header::USER_AGENT) {
            request
                .headers_mut()
                .insert(http::header::USER_AGENT, USER_AGENT);
        }
        let step = self.inner.send(request);
        ResponseFuture {
            inner: self.inner.clone(),
            step,
            resent: false,
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends on the open connection, or waits for one being made (starting
    /// it if there is none).
    fn send(self: &Arc<Self>, request: http::Request<Body>) -> Step {
        let mut state = self.state();
        let generation = match &mut *state {
            State::Ready(sender) if !sender.is_closed() => {
                return Step::Sent(Box::pin(sender.try_send_request(request)));
            }
            State::Connecting {
                generation,
                connected,
            } => {
                return Step::Waiting {
                    generation: *generation,
                    connected: connected.clone(),
                    request: Some(request),
                };
            }
            State::Ready(_) | State::Idle => {
                GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            }
        };
        // Made on a task of its own: a caller that gives up does not stop
        // it, and the next caller finds it made.
        let this = self.clone();
        let connected: Shared<BoxFuture<'static, Connected>> =
            tokio::spawn(async move { this.connect().await })
                .map(|joined| match joined {
                    Ok(connected) => connected,
                    Err(e) => Err(ConnectError(Arc::new(Box::new(e)))),
                })
                .boxed()
                .shared();
        *state = State::Connecting {
            generation,
            connected: connected.clone(),
        };
        Step::Waiting {
            generation,
            connected,
            request: Some(request),
        }
    }

    /// A connection's result is in: kept if it is still the one awaited.
    fn settle(&self, generation: u64, connected: &Connected) {
        let mut state = self.state();
        if matches!(&*state, State::Connecting { generation: g, .. } if *g == generation) {
            *state = match connected {
                Ok(sender) => State::Ready(sender.clone()),
                Err(_) => State::Idle,
            };
        }
    }

    /// Forgets a connection that turned out closed (the next call makes a
    /// new one).
    fn forget_closed(&self) {
        let mut state = self.state();
        if matches!(&*state, State::Ready(sender) if sender.is_closed()) {
            *state = State::Idle;
        }
    }

    async fn connect(&self) -> Connected {
        let dial = async {
            let uri = self.dial_uri.clone();
            match &self.dialer {
                Dialer::Plain(tcp) => {
                    let io = tcp.clone().call(uri).await?;
                    self.handshake(io).await
                }
                Dialer::Tls(tls) => {
                    let io = tls.clone().call(uri).await?;
                    self.handshake(io).await
                }
            }
        };
        match tokio::time::timeout(self.dial_timeout, dial).await {
            Ok(Ok(sender)) => Ok(sender),
            Ok(Err(e)) => Err(ConnectError(Arc::new(e))),
            Err(_) => Err(ConnectError(Arc::new(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", self.dial_timeout),
            ))))),
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Body>, BoxError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .initial_connection_window_size(self.connection_window)
            .handshake(io)
            .await?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(node = %authority, error = %e, "connection to the node ended");
            }
        });
        Ok(sender)
    }
}

/// Tells connections apart (a result for an older one is not kept).
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type Sending = Pin<
    Box<
        dyn Future<Output = Result<http::Response<Incoming>, TrySendError<http::Request<Body>>>>
            + Send,
    >,
>;

// A request waits only while a connection is made; boxing it would cost an
// allocation on every call.
#[allow(clippy::large_enum_variant)]
enum Step {
    Waiting {
        generation: u64,
        connected: Shared<BoxFuture<'static, Connected>>,
        request: Option<http::Request<Body>>,
    },
    Sent(Sending),
    Failed(Option<BoxError>),
}

/// A request on its way to the node: its answer's head, or why none came.
/// Errors are a [`ConnectError`] (not sent) or hyper's (the connection
/// failed with the request on it).
pub(crate) struct ResponseFuture {
    inner: Arc<Inner>,
    step: Step,
    /// Sent again once already after a closed connection refused it.
    resent: bool,
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.step {
                Step::Failed(error) => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "polled after it ended".into())));
                }
                Step::Waiting {
                    generation,
                    connected,
                    request,
                } => {
                    let result = ready!(connected.poll_unpin(cx));
                    this.inner.settle(*generation, &result);
                    let request = request.take().expect("a waiting request");
                    this.step = match result {
                        Ok(mut sender) => Step::Sent(Box::pin(sender.try_send_request(request))),
                        Err(e) => Step::Failed(Some(Box::new(e))),
                    };
                }
                Step::Sent(sending) => match ready!(sending.as_mut().poll(cx)) {
                    Ok(response) => return Poll::Ready(Ok(response.map(Body::new))),
                    Err(mut e) => match e.take_message() {
                        // The connection closed before taking it: it never
                        // left, so it goes once more on a new connection.
                        Some(request) if !this.resent => {
                            this.resent = true;
                            this.inner.forget_closed();
                            this.step = this.inner.send(request);
                        }
                        _ => return Poll::Ready(Err(Box::new(e.into_error()))),
                    },
                },
            }
        }
    }
}
