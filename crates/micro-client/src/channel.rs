//! [`ServiceChannel`]: a `tower::Service` that sends each gRPC request to a
//! node of one service, retrying on another node when that is safe.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use crate::body::RequestBody;
use crate::resolve::{NodeEntry, NodeSet, Resolution};
use crate::{BoxError, ClientOptions, timeout};

/// Marks a call as safe to run twice, so it is retried after any failure of
/// the server, not only when the request cannot have reached it.
///
/// ```
/// # use micro_client::Idempotent;
/// let mut request = tonic::Request::new(());
/// request.extensions_mut().insert(Idempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Idempotent;

/// A channel to one service by name. Cheap to clone; all clones share the
/// node set and the round-robin rotation.
#[derive(Clone)]
pub struct ServiceChannel {
    set: Arc<NodeSet>,
    options: Arc<ClientOptions>,
    idempotent: bool,
}

impl fmt::Debug for ServiceChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceChannel")
            .field("service", &self.set.service())
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl ServiceChannel {
    pub(crate) fn new(set: Arc<NodeSet>, options: Arc<ClientOptions>) -> Self {
        ServiceChannel {
            set,
            options,
            idempotent: false,
        }
    }

    /// Treat every call through this channel as [`Idempotent`].
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        self.set.service()
    }

    /// The node set behind this channel.
    pub fn node_set(&self) -> &Arc<NodeSet> {
        &self.set
    }
}

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per node and checked per attempt.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let set = self.set.clone();
        let options = self.options.clone();
        let idempotent = self.idempotent;
        // --- ops (issue 13): telemetry hooks; move to the outermost client layer at merge.
        let entries = set.entries();
        let down = entries.iter().filter(|e| e.is_down()).count();
        micro_telemetry::client::nodes(set.service(), entries.len() - down, down, 0);
        let path = request.uri().path().to_string();
        let record =
            micro_telemetry::client::start_call(set.service(), &path, request.headers_mut());
        // --- end ops
        Box::pin(async move {
            let result = call(&set, &options, idempotent, request).await;
            record
                .finish(result) // ops (issue 13): counts the call by its final code
                .map_err(|status| Box::new(status) as BoxError)
        })
    }
}

/// How far a failed attempt got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The channel's own deadline (from our grpc-timeout) passed.
    Timeout,
    /// The request never reached the server (connection refused or failed
    /// before sending, stream refused): always safe to send elsewhere.
    NotSent,
    /// The server may have seen the request.
    MaybeSent,
}

async fn call(
    set: &NodeSet,
    options: &ClientOptions,
    idempotent: bool,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    // The caller's deadline, if it set one; each attempt sends what is left.
    let budget = parts
        .headers
        .remove(timeout::GRPC_TIMEOUT)
        .and_then(|value| timeout::parse(&value))
        .unwrap_or(options.request_timeout);
    let deadline = started + budget;
    let idempotent = idempotent || parts.extensions.get::<Idempotent>().is_some();
    // Extensions are for the layers above this channel; the connection to a
    // node below it has no use for them, so they are not copied per attempt.
    parts.extensions.clear();

    if set.is_pending()
        && tokio::time::timeout_at(deadline, set.ready())
            .await
            .is_err()
    {
        return Err(Status::deadline_exceeded(format!(
            "service {}: registry [{}] did not answer within {budget:?}",
            set.service(),
            set.registry_name()
        )));
    }

    let mut body = RequestBody::take(body)?;
    let attempts = 1 + options.retries as usize;
    // Nodes tried and failed in this call: filled only when a call fails.
    let mut tried: Vec<Arc<NodeEntry>> = Vec::new();
    let mut last: Option<Result<http::Response<Body>, Status>> = None;
    let mut parts = Some(parts);

    for attempt in 0..attempts {
        let entries = set.entries();
        let Some(entry) = pick(set, &entries, &tried) else {
            break;
        };
        let can_retry = attempt + 1 < attempts && body.is_replayable();

        let now = Instant::now();
        if now >= deadline {
            return Err(deadline_exceeded(set, budget, attempt));
        }
        // The request's parts are copied only while another attempt may
        // need them. The copy is kept and the original sent: it has room
        // for the grpc-timeout header, the exact-size copy may not.
        let Some(sent) = (match (can_retry, parts.as_mut()) {
            (true, Some(p)) => {
                let copy = copy_parts(p);
                Some(std::mem::replace(p, copy))
            }
            _ => parts.take(),
        }) else {
            break;
        };
        let mut request = http::Request::from_parts(sent, body.for_attempt());
        request
            .headers_mut()
            .insert(timeout::GRPC_TIMEOUT, timeout::encode(deadline - now));

        entry.count_attempt();
        let mut channel = entry.channel.clone();
        let outcome = tokio::time::timeout_at(deadline, async move {
            channel.ready().await?;
            channel.call(request).await
        })
        .await;
        // ops (issue 13): micro_client_attempts_total; move with the hooks above at merge.
        micro_telemetry::client::attempt(set.service(), attempt_outcome(&outcome));

        match outcome {
            Err(_elapsed) => return Err(deadline_exceeded(set, budget, attempt + 1)),
            Ok(Err(error)) => {
                let failure = classify(&error);
                // The channel enforces the grpc-timeout we set: that is our
                // deadline passing, not the node failing.
                if failure == Failure::Timeout {
                    return Err(deadline_exceeded(set, budget, attempt + 1));
                }
                // A connection-level failure, sent or not: the node is not
                // healthy, so it leaves the rotation until a probe reaches it.
                entry.mark_refused(options);
                let status = Status::unavailable(format!(
                    "service {}: node {} at {}: {}",
                    set.service(),
                    entry.node.id,
                    entry.node.address,
                    error_chain(&error)
                ));
                tracing::debug!(service = %set.service(), node = %entry.node.id, attempt, ?failure, "call failed: {}", status.message());
                if can_retry && (failure == Failure::NotSent || idempotent) {
                    tried.push(entry);
                    last = Some(Err(status));
                    continue;
                }
                return Err(status);
            }
            Ok(Ok(response)) => {
                entry.mark_answered();
                let status = grpc_status(response.headers());
                // tonic servers enforce the grpc-timeout we sent and answer
                // Cancelled "Timeout expired" a moment before our own timer
                // fires: to the caller, that is the deadline passing.
                if status == Some(Code::Cancelled)
                    && response
                        .headers()
                        .get(GRPC_MESSAGE)
                        .is_some_and(|m| m.as_bytes().starts_with(b"Timeout"))
                {
                    return Err(deadline_exceeded(set, budget, attempt + 1));
                }
                match status {
                    Some(code) if can_retry && should_retry(code, idempotent) => {
                        tracing::debug!(service = %set.service(), node = %entry.node.id, attempt, ?code, "retrying on another node");
                        tried.push(entry);
                        last = Some(Ok(response));
                        continue;
                    }
                    _ => return Ok(response),
                }
            }
        }
    }

    match last {
        Some(result) => result,
        None => Err(no_nodes(set)),
    }
}

/// ops (issue 13): the `outcome` label of one attempt.
fn attempt_outcome<T, E: StdError + 'static>(
    outcome: &Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> &'static str {
    match outcome {
        Err(_) => "timeout",
        Ok(Ok(_)) => "answered",
        Ok(Err(error)) => match classify(error) {
            Failure::Timeout => "timeout",
            Failure::NotSent => "refused",
            Failure::MaybeSent => "failed",
        },
    }
}

/// The next node to try: not tried yet in this call and not down; failing
/// that, one that is down (better a slim chance than none).
fn pick(
    set: &NodeSet,
    entries: &[Arc<NodeEntry>],
    tried: &[Arc<NodeEntry>],
) -> Option<Arc<NodeEntry>> {
    let untried = |e: &Arc<NodeEntry>| {
        !tried
            .iter()
            .any(|t| Arc::ptr_eq(t, e) || t.node.id == e.node.id)
    };
    set.selector
        .select(entries, |e| untried(e) && !e.is_down())
        .or_else(|| set.selector.select(entries, untried))
        .cloned()
}

fn no_nodes(set: &NodeSet) -> Status {
    let why = match set.resolution() {
        Resolution::Failed(reason) => format!(" (registry error: {reason})"),
        _ => String::new(),
    };
    Status::unavailable(format!(
        "service {}: no nodes found in registry [{}]{why}",
        set.service(),
        set.registry_name()
    ))
}

fn deadline_exceeded(set: &NodeSet, budget: std::time::Duration, attempts: usize) -> Status {
    Status::deadline_exceeded(format!(
        "service {}: deadline of {budget:?} exceeded after {attempts} attempt(s)",
        set.service()
    ))
}

/// Whether a failed call may go to another node.
fn should_retry(code: Code, idempotent: bool) -> bool {
    match code {
        // The server did not take the request (overloaded, shutting down).
        Code::Unavailable => true,
        // Server-side failures: the work may have started.
        Code::Internal
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::DataLoss => idempotent,
        // The request itself is at fault, or the answer is final.
        _ => false,
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What another attempt sends: the same request line and headers.
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut copy = http::Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// The status of a trailers-only response (an error before any message).
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value: &HeaderValue = headers.get(GRPC_STATUS)?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    (code != 0).then(|| Code::from_i32(code))
}

fn classify(error: &(dyn StdError + 'static)) -> Failure {
    let mut source = Some(error);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return Failure::Timeout;
        }
        if err.is::<tonic::ConnectError>() {
            return Failure::NotSent;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return Failure::NotSent;
            }
        }
        source = err.source();
    }
    Failure::MaybeSent
}

fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}
