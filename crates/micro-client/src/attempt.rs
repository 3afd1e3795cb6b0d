//! The attempt stage: one request to one node, bounded by the attempt
//! timeout ([`Attempt`], the innermost service, over the node's HTTP/2
//! connection). The node, the call's deadline and whether the attempt timeout
//! applies come in the request's [`AttemptContext`].
//!
//! The attempt's deadline is the call's, or sooner: `attempt_timeout` after
//! it starts. A node that accepts the request and never answers (frozen,
//! overloaded, a tarpit) therefore costs one attempt, not the whole call.
//! What happened is reported to the node (health: down, failures in a row;
//! load: latency and calls in flight) and returned as an [`Outcome`] for the
//! retry stage to judge.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::Code;
use tonic::body::Body;
use tower::Service;

use crate::BoxError;
use crate::call::AttemptContext;
use crate::connection::{ConnectError, ResponseFuture};
use crate::endpoint::NodeEntry;
use crate::error::{NodeFailure, error_chain, find_rustls};
use crate::outcome::{Outcome, Sent};
use crate::pool::{Health, NodeSet};
use crate::timeout;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The mark of a call a server shed unexecuted (`micro_server::PUSHBACK`).
const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The innermost service: sends a request on the connection of the node in
/// its [`AttemptContext`], with `grpc-timeout` set to what the attempt may
/// take, and credits the node (in its pool) with how it went.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// One pointer: the stage is cloned into every call's future.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    set: Arc<NodeSet>,
    /// Time for one attempt on one node.
    timeout: Duration,
    /// Whether nodes are dialled over TLS (how a failed connect is read).
    tls: bool,
    /// `grpc-timeout` for a whole `timeout`, what most attempts send:
    /// encoded once.
    full: HeaderValue,
}

impl Attempt {
    /// Attempts on nodes of `set`, each bounded by `timeout`; `tls`: the
    /// nodes are dialled over TLS.
    pub fn new(set: Arc<NodeSet>, timeout: Duration, tls: bool) -> Self {
        Attempt {
            shared: Arc::new(Shared {
                set,
                timeout,
                tls,
                full: timeout::encode(timeout),
            }),
        }
    }
}

impl Service<http::Request<Body>> for Attempt {
    type Response = Outcome;
    type Error = Infallible;
    type Future = AttemptFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Nothing happens until the future is first polled: an attempt that
    /// the retry stage drops unpolled (no budget left) is not counted.
    fn call(&mut self, mut request: http::Request<Body>) -> AttemptFuture {
        let Some(mut context) = request.extensions_mut().remove::<AttemptContext>() else {
            return AttemptFuture::without_node(self);
        };
        let Some(node) = context.node.take() else {
            return AttemptFuture::without_node(self);
        };
        let attempt_timeout = self.shared.timeout;
        let (started, deadline) = (context.started, context.deadline);
        let until = context.until(attempt_timeout);
        let left = until - started;
        // No deadline (a stream without one): no grpc-timeout, which
        // grpc-go servers would apply to the whole stream.
        if !crate::call::is_far(started, until) {
            request.headers_mut().insert(
                timeout::GRPC_TIMEOUT,
                if left == attempt_timeout {
                    self.shared.full.clone()
                } else {
                    timeout::encode(left)
                },
            );
        }
        AttemptFuture {
            shared: self.shared.clone(),
            stage: Stage::Start {
                node,
                request,
                started,
                until,
            },
            attempt_bound: until < deadline,
            streaming: context
                .streaming
                .then(|| (!crate::call::is_far(started, deadline)).then_some(deadline)),
            response: None,
            timer: None,
            in_flight: None,
        }
    }
}

/// Where an attempt is.
// The request is held only until the first poll; boxing it would cost an
// allocation per attempt.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// Not started: the first poll starts it.
    Start {
        node: Arc<NodeEntry>,
        request: http::Request<Body>,
        started: Instant,
        /// When the attempt's time runs out.
        until: Instant,
    },
    /// Sent (or waiting for the node's connection to take it): the answer
    /// is awaited.
    Sent,
    /// Ended (an outcome was returned).
    Done,
    /// No node was chosen (no balance stage above): fails at once.
    NoNode,
}

pin_project! {
    /// An attempt in flight. Dropped before it ends (a hedge lost the race,
    /// the caller gave up), it only ends the node's in-flight count.
    #[project = AttemptProj]
    pub struct AttemptFuture {
        shared: Arc<Shared>,
        stage: Stage,
        // Whether running out of time is the attempt's limit (the node is
        // slow) rather than the call's (the caller's deadline).
        attempt_bound: bool,
        // A stream (with its deadline, if it has one): its node's load
        // counts it until the reply body is dropped, and the body ends at
        // the deadline.
        streaming: Option<Option<Instant>>,
        #[pin]
        response: Option<ResponseFuture>,
        #[pin]
        timer: Option<Sleep>,
        in_flight: Option<InFlight>,
    }
}

/// Counts the attempt in its node's load until finished or dropped.
#[derive(Debug)]
struct InFlight {
    node: Arc<NodeEntry>,
    started: Instant,
    finished: bool,
}

impl InFlight {
    fn finish(&mut self, failed: bool) {
        self.finished = true;
        let now = Instant::now();
        self.node
            .load()
            .exit(Some((now.saturating_duration_since(self.started), failed)));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.node.load().exit(None);
        }
    }
}

impl AttemptFuture {
    fn without_node(attempt: &Attempt) -> Self {
        AttemptFuture {
            shared: attempt.shared.clone(),
            stage: Stage::NoNode,
            attempt_bound: false,
            streaming: None,
            response: None,
            timer: None,
            in_flight: None,
        }
    }
}

impl std::fmt::Debug for AttemptFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptFuture")
            .field("service", &self.shared.set.service())
            .finish_non_exhaustive()
    }
}

impl Future for AttemptFuture {
    type Output = Result<Outcome, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if matches!(this.stage, Stage::NoNode) {
            *this.stage = Stage::Done;
            return Poll::Ready(Ok(Outcome::Failed {
                failure: NodeFailure::Connect(
                    "no node was chosen for the attempt (no balance stage above it)".into(),
                ),
                sent: Sent::No,
            }));
        }
        if matches!(this.stage, Stage::Start { .. }) {
            let Stage::Start {
                node,
                request,
                started,
                until,
            } = std::mem::replace(this.stage, Stage::Done)
            else {
                unreachable!("matched above");
            };
            if let Some(reason) = &node.refusal {
                return Poll::Ready(Ok(Outcome::Failed {
                    failure: NodeFailure::Tls(reason.to_string()),
                    sent: Sent::No,
                }));
            }
            node.count_attempt();
            node.load().enter();
            this.timer.set(Some(tokio::time::sleep_until(until)));
            this.response.set(Some(node.connection.call(request)));
            *this.stage = Stage::Sent;
            *this.in_flight = Some(InFlight {
                node,
                started,
                finished: false,
            });
        }

        // The node first, then the clock (as `tokio::time::timeout` does).
        if let Some(response) = this.response.as_mut().as_pin_mut()
            && let Poll::Ready(result) = response.poll(cx)
        {
            return end(this, Ok(result));
        }
        match this.timer.as_mut().as_pin_mut() {
            Some(timer) => {
                ready!(timer.poll(cx));
                end(this, Err(Elapsed))
            }
            // Polled again after it ended.
            None => Poll::Pending,
        }
    }
}

/// Ends the attempt with `result`: releases the connection and the timer,
/// and judges the result.
fn end(
    mut this: AttemptProj<'_>,
    result: Result<Result<http::Response<Body>, BoxError>, Elapsed>,
) -> Poll<Result<Outcome, Infallible>> {
    *this.stage = Stage::Done;
    this.response.set(None);
    this.timer.set(None);
    let in_flight = this.in_flight.take().expect("set when started");
    let node = this
        .streaming
        .map(|deadline| (in_flight.node.clone(), deadline));
    let outcome = judge(
        &this.shared.set,
        this.shared.timeout,
        this.shared.tls,
        in_flight,
        *this.attempt_bound,
        result,
    );
    Poll::Ready(Ok(match (outcome, node) {
        (Outcome::Answered { response, status }, Some((node, deadline))) => {
            node.load().enter();
            let open = OpenStream(node);
            let deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
            Outcome::Answered {
                response: response.map(|body| {
                    Body::new(CountedBody {
                        body,
                        deadline,
                        _open: open,
                    })
                }),
                status,
            }
        }
        (outcome, _) => outcome,
    }))
}

/// An open stream, counted in its node's load until dropped.
struct OpenStream(Arc<NodeEntry>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.load().exit(None);
    }
}

/// A stream's reply body, its stream counted in the node's load while it
/// lives.
struct CountedBody {
    body: Body,
    /// The stream's deadline: tonic servers apply `grpc-timeout` only until
    /// their reply headers, so the client ends the stream itself.
    deadline: Option<Pin<Box<Sleep>>>,
    _open: OpenStream,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let passed = self
            .deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if !passed {
            return Poll::Pending;
        }
        self.deadline = None;
        Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
            "the stream's deadline passed",
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The attempt's own deadline passed before the node answered.
struct Elapsed;

/// What the attempt's result means, credited to its node.
fn judge(
    set: &NodeSet,
    timeout: Duration,
    tls: bool,
    in_flight: InFlight,
    attempt_bound: bool,
    result: Result<Result<http::Response<Body>, BoxError>, Elapsed>,
) -> Outcome {
    let timed_out = || {
        if attempt_bound {
            Some(NodeFailure::Timeout(timeout))
        } else {
            None
        }
    };
    let outcome = match result {
        Err(Elapsed) => match timed_out() {
            Some(failure) => Outcome::Failed {
                failure,
                sent: Sent::Maybe,
            },
            None => Outcome::Deadline,
        },
        Ok(Err(error)) => match classify(error.as_ref(), tls) {
            Class::Tls(reason) => Outcome::Failed {
                failure: NodeFailure::Tls(reason),
                sent: Sent::No,
            },
            Class::NotSent => Outcome::Failed {
                failure: NodeFailure::Connect(error_chain(error.as_ref())),
                sent: Sent::No,
            },
            Class::MaybeSent => Outcome::Failed {
                failure: NodeFailure::Connection(error_chain(error.as_ref())),
                sent: Sent::Maybe,
            },
        },
        Ok(Ok(response)) => {
            let status = grpc_status(response.headers());
            // tonic servers enforce the grpc-timeout we sent and answer
            // Cancelled "Timeout expired" a moment before our own timer
            // fires: that is the attempt's (or the call's) time running out.
            if status == Some(Code::Cancelled)
                && response
                    .headers()
                    .get(GRPC_MESSAGE)
                    .is_some_and(|m| m.as_bytes().starts_with(b"Timeout"))
            {
                match timed_out() {
                    Some(failure) => Outcome::Failed {
                        failure,
                        sent: Sent::Maybe,
                    },
                    None => Outcome::Deadline,
                }
            } else if status == Some(Code::ResourceExhausted)
                && response.headers().contains_key(PUSHBACK)
            {
                Outcome::Shed { response }
            } else {
                Outcome::Answered { response, status }
            }
        }
    };

    // What the node gets credited with.
    let mut in_flight = in_flight;
    let health = match &outcome {
        Outcome::Answered { status, .. } => {
            let node_failed = *status == Some(Code::Unavailable);
            in_flight.finish(node_failed);
            Some(if node_failed {
                Health::Failed
            } else {
                Health::Answered
            })
        }
        Outcome::Failed { failure, .. } => {
            in_flight.finish(true);
            Some(match failure {
                // The connection failed: the node is down until a probe
                // reaches it.
                NodeFailure::Connect(_) | NodeFailure::Connection(_) => Health::Refused,
                // Reachable but not usable (a certificate refused): an
                // outlier, not a crash; a TCP probe would only let it back.
                NodeFailure::Timeout(_) | NodeFailure::Tls(_) => Health::Failed,
            })
        }
        // Busy: it costs twice its estimate in the selector's load (p2c
        // turns to others while it sheds), but it is up and answering, so
        // not an outlier to eject (when every node sheds, none should go).
        Outcome::Shed { .. } => {
            in_flight.finish(true);
            Some(Health::Answered)
        }
        // Not the node's fault: nothing learnt.
        Outcome::Deadline => None,
    };
    if let Some(health) = health {
        set.credit(&in_flight.node, health);
    }
    outcome
}

enum Class {
    /// The TLS handshake failed (the request was not sent).
    Tls(String),
    NotSent,
    MaybeSent,
}

/// How far a failed request got, from the error's type (never its text).
fn classify(error: &(dyn StdError + 'static), tls: bool) -> Class {
    let mut source = Some(error);
    while let Some(err) = source {
        if err.is::<ConnectError>() {
            return match tls.then(|| tls_failure(err)).flatten() {
                Some(reason) => Class::Tls(reason),
                None => Class::NotSent,
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return Class::NotSent;
            }
        }
        source = err.source();
    }
    // A TLS error after the handshake (an alert from the node).
    if tls && let Some(rustls) = find_rustls(error) {
        return Class::Tls(describe(rustls));
    }
    Class::MaybeSent
}

/// What went wrong in a TLS handshake, if that is how connecting failed:
/// rustls's verdict (certificate refused, alert from the node, not TLS at
/// all), or the node closing the connection mid-handshake.
fn tls_failure(connect: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(rustls) = find_rustls(connect) {
        return Some(describe(rustls));
    }
    let mut source = connect.source();
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return Some(
                "the node closed the connection during the TLS handshake (it may require a client certificate, or not serve TLS)"
                    .into(),
            );
        }
        source = err.source();
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidMessage(_) => format!(
            "{error} (the node does not seem to serve TLS: is it plaintext? --client_tls_ca makes every call TLS)"
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!(
                "{error} (the node's certificate does not chain to --client_tls_ca, or does not name the node's address; see --client_tls_server_name)"
            )
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA,
        ) => format!(
            "{error} (the node requires a client certificate it trusts: --client_tls_cert_file, --client_tls_key_file)"
        ),
        _ => error.to_string(),
    }
}

/// The status of a trailers-only response (an error before any message).
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value: &HeaderValue = headers.get(GRPC_STATUS)?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    (code != 0).then(|| Code::from_i32(code))
}
