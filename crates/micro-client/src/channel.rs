//! [`ServiceChannel`]: a `tower::Service` that sends each gRPC request to a
//! node of one service.
//!
//! A call goes through these stages, outermost first, each in its own
//! module with one job:
//!
//! 1. **observe** ([`CallObserver`]): the telemetry hook, around everything;
//! 2. **deadline** ([`deadline`](crate::deadline)): the call's budget, from
//!    the caller's `grpc-timeout` or `request_timeout`;
//! 3. **retry** ([`retry`](crate::retry)): whether a failed attempt may go to
//!    another node (policy), and whether the service can take another retry
//!    (budget);
//! 4. **balance** ([`NodeSet::pick`]): which node, by the selector, among
//!    nodes up and not tried yet in this call;
//! 5. **attempt** ([`attempt`](crate::attempt)): one request to that node,
//!    bounded by the attempt timeout, reported to the node's health and load
//!    ([`endpoint`](crate::endpoint)); for idempotent calls with
//!    `hedge_after` set, a second request to another node if the first is
//!    slow ([`hedge`](crate::hedge)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::body::Body;

use crate::attempt::{self, Outcome};
use crate::body::RequestBody;
use crate::deadline::Deadline;
use crate::endpoint::NodeEntry;
use crate::error::{ClientError, NodeFailure};
use crate::hedge;
use crate::observe::{AttemptResult, CallEnd, CallObserver};
use crate::resolve::{NodeSet, Resolution};
use crate::retry::Policy;
use crate::{BoxError, ClientOptions};

/// Marks a call as safe to run twice, so it is retried after any failure of
/// the node, not only when the request cannot have reached it, and may be
/// hedged.
///
/// ```
/// # use micro_client::Idempotent;
/// let mut request = tonic::Request::new(());
/// request.extensions_mut().insert(Idempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Idempotent;

/// A channel to one service by name. Cheap to clone; all clones share the
/// node set, its health and load, and the rotation.
pub struct ServiceChannel {
    set: Arc<NodeSet>,
    options: Arc<ClientOptions>,
    observer: Option<Arc<dyn CallObserver>>,
    idempotent: bool,
    /// While the first registry answer is awaited in `poll_ready`. (In a
    /// mutex only so that the channel is `Sync`, as tonic's is; `poll_ready`
    /// has `&mut self` and never locks it.)
    resolving: Mutex<Option<Resolving>>,
}

type Resolving = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Clone for ServiceChannel {
    fn clone(&self) -> Self {
        ServiceChannel {
            set: self.set.clone(),
            options: self.options.clone(),
            observer: self.observer.clone(),
            idempotent: self.idempotent,
            resolving: Mutex::new(None),
        }
    }
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
    pub(crate) fn new(
        set: Arc<NodeSet>,
        options: Arc<ClientOptions>,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Self {
        ServiceChannel {
            set,
            options,
            observer,
            idempotent: false,
            resolving: Mutex::new(None),
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

impl tower::Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    /// Ready once the registry has answered for the service (or failed to,
    /// or `request_timeout` passed): until then no node can be chosen. Once
    /// resolved, always ready; a service without nodes fails each call at
    /// once with [`ClientError::NoNode`].
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let resolving = self
            .resolving
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.set.is_pending() {
            *resolving = None;
            return Poll::Ready(Ok(()));
        }
        let set = self.set.clone();
        let wait = self.options.request_timeout;
        let future = resolving.get_or_insert_with(|| {
            Box::pin(async move {
                let _ = tokio::time::timeout(wait, set.ready()).await;
            })
        });
        match future.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *resolving = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let set = self.set.clone();
        let idempotent = self.idempotent;
        let observer = self.observer.clone();
        Box::pin(async move {
            match observer {
                None => call(&set, idempotent, request, None).await,
                // The telemetry hook: sees the request before it goes out
                // (trace context), every attempt and the call's result.
                Some(observer) => {
                    let (mut parts, body) = request.into_parts();
                    let end = observer.start(&set, parts.uri.path(), &mut parts.headers);
                    let request = http::Request::from_parts(parts, body);
                    match call(&set, idempotent, request, Some(&*end)).await {
                        Ok(response) => Ok(end.answered(response)),
                        Err(error) => {
                            end.failed(&error);
                            Err(error)
                        }
                    }
                }
            }
            .map_err(|error| {
                if let Some(node) = error.node() {
                    tracing::debug!(service = %set.service(), node = %node.id, address = %node.address, "call failed: {error}");
                }
                Box::new(error.to_status()) as BoxError
            })
        })
    }
}

async fn call(
    set: &NodeSet,
    idempotent: bool,
    request: http::Request<Body>,
    observer: Option<&dyn CallEnd>,
) -> Result<http::Response<Body>, ClientError> {
    let options = set.options();
    let (mut parts, body) = request.into_parts();
    let deadline = Deadline::take(&mut parts.headers, options.request_timeout);
    let policy = Policy {
        idempotent: idempotent || parts.extensions.get::<Idempotent>().is_some(),
    };
    // Extensions are for the layers above this channel; the connection to a
    // node below it has no use for them, so they are not copied per attempt.
    parts.extensions.clear();

    if set.is_pending()
        && tokio::time::timeout_at(deadline.at, set.ready())
            .await
            .is_err()
    {
        return Err(ClientError::RegistryTimeout {
            service: set.service().to_string(),
            registry: set.registry_name().to_string(),
            budget: deadline.budget,
        });
    }

    let mut body = RequestBody::take(body).map_err(|status| ClientError::BadRequest {
        service: set.service().to_string(),
        detail: status.message().to_string(),
    })?;
    set.budget.deposit(deadline.started);
    // A retry goes to a node not tried yet in this call: with one node there
    // is none, and nothing needs keeping for a second attempt.
    let attempts = if set.len() > 1 {
        1 + options.retries as usize
    } else {
        1
    };
    // Nodes tried and failed in this call: filled only when a call fails.
    let mut tried: Vec<Arc<NodeEntry>> = Vec::new();
    let mut last: Option<Result<http::Response<Body>, ClientError>> = None;
    let mut parts = Some(parts);

    for attempt in 0..attempts {
        let Some(entry) = set.pick(&tried) else {
            break;
        };
        if attempt > 0 && !set.budget.withdraw() {
            let last = match last {
                Some(Err(error)) => error,
                // The node answered with an error: that answer stands.
                Some(Ok(response)) => return Ok(response),
                None => break,
            };
            return Err(ClientError::BudgetExhausted {
                service: set.service().to_string(),
                last: Box::new(last),
            });
        }
        // One clock reading per attempt: the check, and the attempt's start
        // for its latency.
        let now = Instant::now();
        if now >= deadline.at {
            return Err(deadline.exceeded(set.service(), attempt));
        }
        let can_retry = attempt + 1 < attempts && body.is_replayable();
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
        let request = http::Request::from_parts(sent, body.for_attempt());

        // The attempt timeout leaves time for another attempt; a call that
        // will not be retried (not idempotent) fails fast with it too.
        let bounded = !policy.idempotent || (can_retry && set.len() > tried.len() + 1);
        let hedge_after = options
            .hedge_after
            .filter(|_| policy.idempotent && can_retry);
        let (outcome, entry) = match (hedge_after, parts.as_ref()) {
            (Some(after), Some(kept)) => {
                let call = hedge::Hedged {
                    first: entry,
                    request,
                    started: now,
                    bounded,
                    spare: || http::Request::from_parts(copy_parts(kept), body.for_attempt()),
                    after,
                    deadline: deadline.at,
                    tried: &mut tried,
                };
                // Boxed: a hedge holds two attempts, and would make every
                // call's future (moved on each call) twice as large.
                Box::pin(hedge::run(set, call, observer)).await
            }
            _ => {
                let outcome = attempt::run(set, &entry, request, now, deadline.at, bounded).await;
                if let Some(observer) = observer {
                    observer.attempt(AttemptResult::of(&outcome));
                }
                (outcome, entry)
            }
        };
        match outcome {
            Outcome::Deadline => return Err(deadline.exceeded(set.service(), attempt + 1)),
            Outcome::Answered { response, status } => match status {
                Some(code) if can_retry && policy.retry_status(code) => {
                    tracing::debug!(service = %set.service(), node = %entry.node.id, attempt, ?code, "retrying on another node");
                    tried.push(entry);
                    last = Some(Ok(response));
                }
                _ => return Ok(response),
            },
            Outcome::Failed { failure, sent } => {
                tracing::debug!(service = %set.service(), node = %entry.node.id, address = %entry.node.address, attempt, ?sent, "attempt failed: {failure} {}", failure.detail().unwrap_or_default());
                let error = match failure {
                    NodeFailure::Timeout(timeout) if !policy.idempotent => {
                        ClientError::AttemptTimeout {
                            service: set.service().to_string(),
                            timeout,
                            node: entry.node.clone(),
                        }
                    }
                    cause => ClientError::NodeFailed {
                        service: set.service().to_string(),
                        cause,
                        node: entry.node.clone(),
                        attempts: attempt + 1,
                    },
                };
                if can_retry && policy.retry_failure(sent) {
                    tried.push(entry);
                    last = Some(Err(error));
                    continue;
                }
                return Err(error);
            }
        }
    }

    match last {
        Some(result) => result,
        None => Err(no_nodes(set)),
    }
}

fn no_nodes(set: &NodeSet) -> ClientError {
    ClientError::NoNode {
        service: set.service().to_string(),
        registry: set.registry_name().to_string(),
        registry_error: match set.resolution() {
            Resolution::Failed(reason) => Some(reason),
            _ => None,
        },
    }
}

/// What another attempt sends: the same request line and headers.
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut copy = http::Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}
