//! The telemetry hook of the server: a [`ServerObserver`] given to
//! [`ServerBuilder::observer`](crate::ServerBuilder::observer) sees every
//! call of a registered endpoint, from the request's headers to its gRPC
//! code, and runs the handler inside the call's context.
//!
//! It is where metrics (`micro_server_requests_total{service,endpoint,code}`,
//! `micro_server_request_duration_seconds`) and trace continuation (the
//! caller's W3C `traceparent`) plug in, without the server depending on a
//! metrics or tracing crate. `micro-telemetry`'s `server` feature implements
//! it; the `micro` facade installs it.
//!
//! The work is split by how often it happens:
//! - once per registered endpoint, when the server is bound,
//!   [`ServerObserver::endpoint`] resolves what the endpoint's calls need
//!   (metric handles, a span name);
//! - once per call, [`EndpointObserver::start`] reads the request's headers
//!   and returns the call's [`ServerCall`] (or nothing to watch);
//! - on every poll of the handler's future, [`ServerCall::enter`] runs the
//!   poll inside the call's context (a trace context made current);
//! - once, [`ServerCall::end`] gets the call's gRPC code and duration.
//!
//! Calls of paths that are not registered endpoints (health checks,
//! reflection, unknown methods) are not shown to the observer, so labels
//! stay bounded and probes do not drown the request counts. A server
//! without an observer has no [`ObserveLayer`] at all.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Duration;
//! use micro_server::observer::{EndpointObserver, ServerCall, ServerObserver};
//!
//! /// Counts the failed calls of every endpoint.
//! #[derive(Debug, Default)]
//! struct Failures;
//!
//! impl ServerObserver for Failures {
//!     fn endpoint(&self, _service: &str, _path: &str, _endpoint: &str)
//!         -> Arc<dyn EndpointObserver> {
//!         Arc::new(Endpoint::default())
//!     }
//! }
//!
//! #[derive(Debug, Default)]
//! struct Endpoint { failed: AtomicU64 }
//!
//! impl EndpointObserver for Endpoint {
//!     fn start(self: Arc<Self>, _headers: &http::HeaderMap) -> Option<Box<dyn ServerCall>> {
//!         Some(Box::new(Call(self)))
//!     }
//! }
//!
//! /// One call: ends on its endpoint's counter.
//! struct Call(Arc<Endpoint>);
//!
//! impl ServerCall for Call {
//!     fn end(self: Box<Self>, code: tonic::Code, _elapsed: Duration) {
//!         if code != tonic::Code::Ok {
//!             self.0.failed.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use http_body::{Frame, SizeHint};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

/// Watches the calls of a server; see the module docs.
pub trait ServerObserver: Send + Sync + fmt::Debug + 'static {
    /// Once per registered endpoint of service `service`, when the server
    /// is bound: `path` is its gRPC path
    /// (`/go.micro.srv.user.User/QueryUserByName`), `endpoint` its
    /// registered name (`User.QueryUserByName`). Resolve here what its
    /// calls need, so that a call looks nothing up.
    fn endpoint(&self, service: &str, path: &str, endpoint: &str) -> Arc<dyn EndpointObserver>;

    /// As [`endpoint`](Self::endpoint), for a streaming endpoint (server-,
    /// client- or bidi-streaming): its calls also see each message
    /// ([`ServerCall::received`], [`ServerCall::sent`]), and end when the
    /// stream does.
    fn stream_endpoint(
        &self,
        service: &str,
        path: &str,
        endpoint: &str,
    ) -> Arc<dyn EndpointObserver> {
        self.endpoint(service, path, endpoint)
    }

    /// What sees the server's admission control (calls shed, the limit,
    /// calls in flight), once when the server is bound; none by default.
    fn admission(
        &self,
        service: &str,
    ) -> Option<Arc<dyn micro_serve::admission::AdmissionObserver>> {
        let _ = service;
        None
    }
}

/// Watches the calls of one endpoint.
pub trait EndpointObserver: Send + Sync + 'static {
    /// A call begins; `headers` are its request's (the caller's trace
    /// context). `None`: nothing to do for this call, which then runs
    /// untouched.
    fn start(self: Arc<Self>, headers: &HeaderMap) -> Option<Box<dyn ServerCall>>;
}

/// One call of an endpoint, from [`EndpointObserver::start`].
///
/// If the call is dropped before its handler answers (the caller went away
/// first), the record is dropped without [`end`](Self::end).
pub trait ServerCall: Send + 'static {
    /// Runs `poll`, one poll of the handler's future, inside the call's
    /// context: make the call's trace context current around it, say.
    /// Called on every poll until the handler answers.
    fn enter(&self, poll: &mut dyn FnMut()) {
        poll();
    }

    /// The call ended with `code` (`Cancelled` if the caller went away
    /// before the response's end), `elapsed` after it began.
    fn end(self: Box<Self>, code: Code, elapsed: Duration);

    /// A streaming call's caller sent `messages` more messages.
    fn received(&self, messages: u64) {
        let _ = messages;
    }

    /// A streaming call's handler sent `messages` more messages.
    fn sent(&self, messages: u64) {
        let _ = messages;
    }
}

/// The observers of a server's endpoints, by gRPC path. Looked up on every
/// call with a key the caller sends, but only ever holding the server's own
/// paths: a fast hash will do (no caller can grow the map to make
/// collisions).
type Endpoints = HashMap<String, Watched, foldhash::fast::RandomState>;

/// An endpoint's observer, and whether the endpoint streams.
#[derive(Clone)]
struct Watched {
    observer: Arc<dyn EndpointObserver>,
    streams: bool,
}

/// A layer in front of a server's routes that shows the calls of its
/// registered endpoints to a [`ServerObserver`].
///
/// [`Server`](crate::Server) adds it when given an observer; it is public
/// for servers assembled by hand and for tests of observers.
#[derive(Clone)]
pub struct ObserveLayer {
    endpoints: Arc<Endpoints>,
}

impl fmt::Debug for ObserveLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveLayer")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl ObserveLayer {
    /// `endpoints`: (gRPC path, `Handler.Method`) of service `service`, e.g.
    /// (`/go.micro.srv.user.User/QueryUserByName`, `User.QueryUserByName`).
    pub fn new(
        observer: &dyn ServerObserver,
        service: &str,
        endpoints: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self::with_streams(observer, service, endpoints, [])
    }

    /// As [`new`](Self::new), with the streaming endpoints in `streams`
    /// (seen through [`ServerObserver::stream_endpoint`], their messages
    /// counted).
    pub fn with_streams(
        observer: &dyn ServerObserver,
        service: &str,
        endpoints: impl IntoIterator<Item = (String, String)>,
        streams: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let unary = endpoints.into_iter().map(|(path, endpoint)| {
            let observer = observer.endpoint(service, &path, &endpoint);
            let watched = Watched {
                observer,
                streams: false,
            };
            (path, watched)
        });
        let streaming = streams.into_iter().map(|(path, endpoint)| {
            let observer = observer.stream_endpoint(service, &path, &endpoint);
            let watched = Watched {
                observer,
                streams: true,
            };
            (path, watched)
        });
        ObserveLayer {
            endpoints: Arc::new(unary.chain(streaming).collect()),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            endpoints: self.endpoints.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    endpoints: Arc<Endpoints>,
}

impl<S> fmt::Debug for Observe<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observe")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl<S> Service<http::Request<Body>> for Observe<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = self
            .endpoints
            .get(request.uri().path())
            .and_then(|endpoint| {
                // Timed from before the observer's own work, as a layer
                // of its own would be.
                let started = Instant::now();
                let record = endpoint.observer.clone().start(request.headers())?;
                let stream = endpoint.streams.then(|| StreamCounts {
                    received: Arc::new(AtomicU64::new(0)),
                    sent: Messages::default(),
                });
                Some(Call {
                    record,
                    started,
                    stream,
                })
            });
        // A stream's requests are counted as the handler reads them.
        let request = match call.as_ref().and_then(|c| c.stream.as_ref()) {
            Some(stream) => {
                let received = stream.received.clone();
                request.map(|body| {
                    Body::new(CountedRequest {
                        inner: body,
                        messages: Messages::default(),
                        received,
                    })
                })
            }
            None => request,
        };
        ObserveFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

/// A call being watched.
struct Call {
    record: Box<dyn ServerCall>,
    started: Instant,
    /// A streaming call's message counts.
    stream: Option<StreamCounts>,
}

/// The messages of a streaming call: the requests (counted by the request
/// body as the handler reads them, reported with the replies and at the
/// end), and the replies' framing.
struct StreamCounts {
    received: Arc<AtomicU64>,
    sent: Messages,
}

impl Call {
    /// Reports the requests counted since the last report.
    fn report_received(&self) {
        if let Some(stream) = &self.stream {
            let received = stream.received.swap(0, Ordering::Relaxed);
            if received > 0 {
                self.record.received(received);
            }
        }
    }

    /// Counts (and reports) the replies in `data`.
    fn count_sent(&mut self, data: &[u8]) {
        if let Some(stream) = &mut self.stream {
            let sent = stream.sent.feed(data);
            if sent > 0 {
                self.record.sent(sent);
            }
        }
        self.report_received();
    }

    fn end(self, code: Code) {
        self.report_received();
        self.record.end(code, self.started.elapsed());
    }
}

/// Counts gRPC messages in a byte stream cut anywhere: each is a 5-byte
/// prefix (compressed flag, big-endian length) and its bytes.
#[derive(Debug, Default)]
struct Messages {
    /// Bytes of the current prefix read so far.
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Messages {
    /// The messages that start in `data`.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                data = &data[n..];
                self.remaining -= n as u64;
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                started += 1;
                self.have = 0;
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
            }
        }
        started
    }
}

/// A streaming call's request body, counting the messages the handler reads.
struct CountedRequest {
    inner: Body,
    messages: Messages,
    received: Arc<AtomicU64>,
}

impl http_body::Body for CountedRequest {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let started = self.messages.feed(data);
            self.received.fetch_add(started, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`]: the handler's, polled inside the call's
    /// context.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F> fmt::Debug for ObserveFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveFuture")
            .field("observed", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(call) = this.call.as_ref() else {
            return this.inner.poll(cx);
        };
        let mut inner = this.inner;
        let mut polled = Poll::Pending;
        call.record.enter(&mut || polled = inner.as_mut().poll(cx));
        let Poll::Ready(result) = polled else {
            return Poll::Pending;
        };
        Poll::Ready(match (result, this.call.take()) {
            (Ok(response), Some(call)) => Ok(observe(response, call)),
            // An error is not an answer (the server's routes never fail):
            // the record is dropped, as for a call dropped before it answers.
            (result, _) => result,
        })
    }
}

/// Ends the call at once for a trailers-only response, else when its body
/// ends.
fn observe(response: http::Response<Body>, call: Call) -> http::Response<Body> {
    if let Some(code) = grpc_code(response.headers()) {
        call.end(code);
        return response;
    }
    response.map(|body| {
        Body::new(Observed {
            inner: body,
            call: Some(call),
        })
    })
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The gRPC code in `grpc-status`, if the headers carry one.
fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    // A `HeaderName` constant: a `&str` key is parsed and checked on each lookup.
    let value = headers.get(&GRPC_STATUS)?;
    let code = match value.as_bytes() {
        // The one answer nearly every call carries.
        b"0" => 0,
        other => std::str::from_utf8(other).ok()?.parse::<i32>().ok()?,
    };
    Some(Code::from_i32(code))
}

/// A response body that ends its call with the code of its trailers
/// (`Unknown` if it ends without any, `Internal` on an error, `Cancelled`
/// if dropped before its end).
struct Observed {
    inner: Body,
    call: Option<Call>,
}

impl Observed {
    fn done(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.end(code);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.done(Code::Cancelled);
    }
}

impl http_body::Body for Observed {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(call)) = (frame.data_ref(), self.call.as_mut()) {
                    call.count_sent(data);
                }
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_code(trailers).unwrap_or(Code::Unknown);
                    self.done(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.done(Code::Internal),
            Poll::Ready(None) => self.done(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// Records what it sees: (endpoint, code) per ended call, and the
    /// endpoint of the call whose context a handler ran in.
    #[derive(Debug, Default)]
    struct Recorder {
        ended: Arc<Mutex<Vec<(String, Code)>>>,
    }

    impl ServerObserver for Recorder {
        fn endpoint(&self, service: &str, path: &str, endpoint: &str) -> Arc<dyn EndpointObserver> {
            assert_eq!(service, "go.micro.srv.t");
            assert!(path.ends_with(endpoint.rsplit('.').next().unwrap_or_default()));
            Arc::new(RecordedEndpoint {
                name: endpoint.to_string(),
                ended: self.ended.clone(),
            })
        }
    }

    struct RecordedEndpoint {
        name: String,
        ended: Arc<Mutex<Vec<(String, Code)>>>,
    }

    impl EndpointObserver for RecordedEndpoint {
        fn start(self: Arc<Self>, headers: &HeaderMap) -> Option<Box<dyn ServerCall>> {
            (!headers.contains_key("x-skip")).then(|| Box::new(RecordedCall(self)) as _)
        }
    }

    struct RecordedCall(Arc<RecordedEndpoint>);

    thread_local! {
        static CURRENT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }

    impl ServerCall for RecordedCall {
        fn enter(&self, poll: &mut dyn FnMut()) {
            CURRENT.with(|c| *c.borrow_mut() = Some(self.0.name.clone()));
            poll();
            CURRENT.with(|c| *c.borrow_mut() = None);
        }

        fn end(self: Box<Self>, code: Code, _elapsed: Duration) {
            let mut ended = self.0.ended.lock().expect("lock");
            ended.push((self.0.name.clone(), code));
        }
    }

    /// Messages are counted however their bytes are cut into frames.
    #[test]
    fn messages_are_counted_across_any_cut() {
        let mut bytes = Vec::new();
        for len in [0u32, 1, 7, 300, 5] {
            bytes.push(0);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend(std::iter::repeat_n(b'x', len as usize));
        }
        for chunk in 1..bytes.len() {
            let mut messages = Messages::default();
            let counted: u64 = bytes.chunks(chunk).map(|c| messages.feed(c)).sum();
            assert_eq!(counted, 5, "cut every {chunk} bytes");
            assert_eq!((messages.have, messages.remaining), (0, 0));
        }
    }

    fn layer(recorder: &Recorder) -> ObserveLayer {
        ObserveLayer::new(
            recorder,
            "go.micro.srv.t",
            [
                ("/t.T/Get".to_string(), "T.Get".to_string()),
                ("/t.T/Put".to_string(), "T.Put".to_string()),
            ],
        )
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://t{path}"))
            .body(Body::empty())
            .expect("request")
    }

    /// Answers with `grpc-status` in the trailers (`Put`) or the headers
    /// (anything else), saying in `x-context` which call's context it ran in.
    async fn handler(request: http::Request<Body>) -> Result<http::Response<Body>, Infallible> {
        let seen = CURRENT.with(|c| c.borrow().clone()).unwrap_or_default();
        let response = http::Response::builder().header("x-context", seen);
        if request.uri().path() == "/t.T/Put" {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
            let body = http_body_util::Full::new(bytes::Bytes::from_static(b"x"))
                .with_trailers(async { Some(Ok(trailers)) })
                .map_err(|e: Infallible| match e {});
            return Ok(response.body(Body::new(body)).expect("response"));
        }
        Ok(response
            .header("grpc-status", "0")
            .body(Body::empty())
            .expect("response"))
    }

    #[tokio::test]
    async fn registered_calls_run_in_their_context_and_end_with_their_code() {
        let recorder = Recorder::default();
        let service = layer(&recorder).layer(tower::service_fn(handler));

        let get = service
            .clone()
            .oneshot(request("/t.T/Get"))
            .await
            .expect("ok");
        assert_eq!(get.headers()["x-context"], "T.Get");
        let put = service
            .clone()
            .oneshot(request("/t.T/Put"))
            .await
            .expect("ok");
        assert_eq!(put.headers()["x-context"], "T.Put");
        // A trailers-only answer ends at once; the other when its body ends.
        assert_eq!(
            *recorder.ended.lock().expect("lock"),
            [("T.Get".to_string(), Code::Ok)]
        );
        put.into_body().collect().await.expect("body");

        // Unregistered paths and calls the observer skips run untouched.
        let other = service.clone().oneshot(request("/t.T/Other")).await;
        assert_eq!(other.expect("ok").headers()["x-context"], "");
        let mut skipped = request("/t.T/Get");
        skipped
            .headers_mut()
            .insert("x-skip", http::HeaderValue::from_static("1"));
        let skipped = service.clone().oneshot(skipped).await.expect("ok");
        assert_eq!(skipped.headers()["x-context"], "");

        assert_eq!(
            *recorder.ended.lock().expect("lock"),
            [
                ("T.Get".to_string(), Code::Ok),
                ("T.Put".to_string(), Code::NotFound)
            ]
        );
    }

    #[tokio::test]
    async fn a_body_dropped_early_ends_cancelled() {
        let recorder = Recorder::default();
        let service = layer(&recorder).layer(tower::service_fn(handler));
        let put = service.oneshot(request("/t.T/Put")).await.expect("ok");
        drop(put);
        assert_eq!(
            *recorder.ended.lock().expect("lock"),
            [("T.Put".to_string(), Code::Cancelled)]
        );
    }
}
