//! The retry stage ([`Retry`]): runs a call's attempts, one after another
//! (or two at once when hedged), and judges each: whether a failed attempt
//! may go to another node ([`Policy`]), and whether the service can take
//! another retry ([`Budget`]).
//!
//! It reads the call's [`CallDeadline`] and [`Idempotent`] mark from the
//! request's extensions, gives each attempt an [`AttemptContext`] (its
//! deadline, whether the attempt timeout bounds it, the nodes tried), and
//! reports each attempt's result to the [`Observed`] record if there is one.
//! Below it is any service that answers an attempt with an [`Attempted`]
//! and whose futures know their node before they run ([`Picked`]): the
//! balance stage.

pub mod budget;
mod hedge;
pub mod policy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

pub use budget::{Budget, BudgetOptions};
use pin_project_lite::pin_project;
pub use policy::Policy;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::body::RequestBody;
use crate::call::{AttemptContext, CallDeadline, Idempotent, Observed, Streaming};
use crate::endpoint::NodeEntry;
use crate::error::{ClientError, NodeFailure};
use crate::observer::AttemptResult;
use crate::outcome::{Attempted, NodeCount, Outcome, Picked};

/// What the retry stage does; see [`ClientOptions`](crate::ClientOptions).
#[derive(Clone, Debug)]
pub struct RetryOptions {
    /// Extra attempts after the first, each on a different node.
    pub retries: u32,
    /// For idempotent calls: hedge after this long.
    pub hedge_after: Option<Duration>,
}

/// The retry stage; see the module docs.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
    /// Every call through this stage is [`Idempotent`].
    idempotent: bool,
}

/// What every call of a [`Retry`] reads; one pointer in each call's future.
#[derive(Debug)]
struct Shared {
    service: String,
    budget: Arc<Budget>,
    options: RetryOptions,
}

/// Puts a [`Retry`] over a service: the calls are to `service`, whose
/// retries take from `budget`.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    pub fn new(service: &str, budget: Arc<Budget>, options: RetryOptions) -> Self {
        RetryLayer {
            shared: Arc::new(Shared {
                service: service.into(),
                budget,
                options,
            }),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: self.shared.clone(),
            idempotent: false,
        }
    }
}

impl<S> Retry<S> {
    /// Treat every call as [`Idempotent`].
    pub fn set_idempotent(&mut self, idempotent: bool) {
        self.idempotent = idempotent;
    }
}

impl<S> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = Attempted, Error = ClientError> + NodeCount + Clone,
    S::Future: Picked,
{
    type Response = http::Response<Body>;
    type Error = ClientError;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> RetryFuture<S> {
        let (mut parts, body) = request.into_parts();
        // A stream is never run twice: only a node that could not be
        // reached is replaced.
        let streaming = parts.extensions.get::<Streaming>().is_some();
        let policy = Policy {
            idempotent: !streaming
                && (self.idempotent || parts.extensions.get::<Idempotent>().is_some()),
        };
        let deadline = parts
            .extensions
            .get::<CallDeadline>()
            .copied()
            .unwrap_or_else(CallDeadline::none);
        let observed = parts.extensions.get::<Observed>().cloned();
        // Extensions are for the stages above this one; each attempt gets
        // its own context, and the node's connection has no use for the
        // rest, so they are not copied per attempt.
        parts.extensions.clear();
        let body = RequestBody::take(body).map_err(|status| ClientError::BadRequest {
            service: self.shared.service.clone(),
            detail: status.message().to_string(),
        });
        // A retry goes to a node not tried yet in this call: with one node
        // there is none, and nothing needs keeping for a second attempt.
        let attempts = if self.inner.node_count() > 1 {
            1 + self.shared.options.retries as usize
        } else {
            1
        };
        // A call that failed before any attempt has none, and that failure
        // for its answer.
        let (body, attempts, last) = match body {
            Ok(body) => {
                self.shared.budget.deposit(deadline.started);
                (Some(body), attempts, None)
            }
            Err(error) => (None, 0, Some(Box::new(Err(error)))),
        };
        RetryFuture {
            state: Attempts {
                inner: self.inner.clone(),
                shared: self.shared.clone(),
                observed,
                deadline,
                policy,
                streaming,
                body,
                parts: Some(parts),
                attempts,
                attempt: 0,
                running: false,
                can_retry: false,
                tried: Vec::new(),
                last,
            },
            primary: None,
            hedge: None,
        }
    }
}

/// A call's attempts so far: what the next one needs and what the last ones
/// left.
struct Attempts<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The observer's record of the call, told of each attempt.
    observed: Option<Observed>,
    deadline: CallDeadline,
    policy: Policy,
    /// A [`Streaming`] call: no attempt timeout, never run twice.
    streaming: bool,
    body: Option<RequestBody>,
    /// The request line and headers, while another attempt may need them.
    parts: Option<http::request::Parts>,
    /// At most this many attempts (hedges aside).
    attempts: usize,
    /// The current attempt, from 0.
    attempt: usize,
    /// An attempt (and maybe its hedge) is in flight.
    running: bool,
    /// Whether the current attempt may be followed by another.
    can_retry: bool,
    /// Nodes tried and failed in this call: filled only when a call fails.
    tried: Vec<Arc<NodeEntry>>,
    /// The last failed attempt's result, for when no other attempt follows
    /// (or the failure before any attempt). Boxed: set only when a call
    /// fails, and its room would make every call's future larger.
    last: Option<Box<Answer>>,
}

pin_project! {
    /// A hedged call's second attempt and what it needs, boxed: only calls
    /// with `hedge_after` set pay for its room.
    #[project = HedgeProj]
    struct Hedge<F> {
        // Until the second attempt is due.
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        backup: Option<F>,
        // The attempt that ended first without settling the call, while
        // the other one runs.
        early: Option<(Outcome, Arc<NodeEntry>)>,
    }
}

/// The call's answer.
type Answer = Result<http::Response<Body>, ClientError>;

/// What comes after an attempt that did not answer the call.
#[allow(
    clippy::large_enum_variant,
    reason = "made once per attempt and moved straight into the call's future; boxing would allocate per attempt"
)]
enum Next<F> {
    /// Another attempt, and when to hedge it.
    Attempt(F, Option<Duration>),
    /// No other attempt: the call's answer.
    Done(Answer),
}

pin_project! {
    /// The retry stage's future: a call's attempts, run in turn.
    pub struct RetryFuture<S: Service<http::Request<Body>>> {
        state: Attempts<S>,
        #[pin]
        primary: Option<S::Future>,
        hedge: Option<Pin<Box<Hedge<S::Future>>>>,
    }
}

impl<S> Future for RetryFuture<S>
where
    S: Service<http::Request<Body>, Response = Attempted, Error = ClientError> + NodeCount,
    S::Future: Picked,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.project();
        let answer = ready!(run(this.state, this.primary, this.hedge, cx));
        // The observe stage ends the record: this stage holds it no longer.
        this.state.observed = None;
        Poll::Ready(answer)
    }
}

/// Runs the attempts until one gives the call its answer.
fn run<S>(
    state: &mut Attempts<S>,
    mut primary: Pin<&mut Option<S::Future>>,
    hedge: &mut Option<Pin<Box<Hedge<S::Future>>>>,
    cx: &mut Context<'_>,
) -> Poll<Answer>
where
    S: Service<http::Request<Body>, Response = Attempted, Error = ClientError> + NodeCount,
    S::Future: Picked,
{
    loop {
        if !state.running {
            match state.next() {
                Next::Done(answer) => return Poll::Ready(answer),
                Next::Attempt(attempt, hedge_after) => {
                    primary.set(Some(attempt));
                    *hedge = hedge_after.map(|after| {
                        Box::pin(Hedge {
                            timer: Some(tokio::time::sleep(after)),
                            backup: None,
                            early: None,
                        })
                    });
                    state.running = true;
                }
            }
        }
        let (outcome, node) = ready!(match hedge.as_mut() {
            None => state.single(primary.as_mut(), cx),
            Some(hedge) => state.race(primary.as_mut(), hedge.as_mut().project(), cx),
        });
        state.running = false;
        // The attempt that lost a race, if any, is cancelled here.
        primary.set(None);
        *hedge = None;
        if let Some(answer) = state.judge(outcome, node) {
            return Poll::Ready(answer);
        }
    }
}

impl<S> Attempts<S>
where
    S: Service<http::Request<Body>, Response = Attempted, Error = ClientError> + NodeCount,
    S::Future: Picked,
{
    fn report(&self, result: AttemptResult) {
        if let Some(observed) = &self.observed {
            observed.0.attempt(result);
        }
    }

    /// The next attempt, with when to hedge it; or the call's answer when
    /// there is no next attempt.
    fn next(&mut self) -> Next<S::Future> {
        let n = self.attempt;
        let nodes = self.inner.node_count();
        let (Some(body), true) = (self.body.as_mut(), n < self.attempts) else {
            return Next::Done(self.last_answer(n));
        };
        let can_retry = n + 1 < self.attempts && body.is_replayable();
        // The request's parts are copied only while another attempt may
        // need them. The copy is kept and the original sent: it has room
        // for the grpc-timeout header, the exact-size copy may not.
        let sent = match (can_retry, self.parts.as_mut()) {
            (true, Some(kept)) => {
                let copy = copy_parts(kept);
                Some(std::mem::replace(kept, copy))
            }
            _ => self.parts.take(),
        };
        let Some(sent) = sent else {
            return Next::Done(self.last_answer(n));
        };
        // The attempt timeout leaves time for another attempt; a call that
        // will not be retried (not idempotent) fails fast with it too.
        // A stream has no attempt timeout: it may take its time to the
        // first message.
        let bounded = !self.streaming
            && (!self.policy.idempotent || (can_retry && nodes > self.tried.len() + 1));
        // One clock reading per attempt: the deadline check, and the
        // attempt's start for its latency (the first attempt starts with
        // the call).
        let now = if n == 0 {
            self.deadline.started
        } else {
            Instant::now()
        };
        let mut request = http::Request::from_parts(sent, body.for_attempt());
        request.extensions_mut().insert(AttemptContext {
            started: now,
            deadline: self.deadline.at,
            bounded,
            streaming: self.streaming,
            tried: self.tried.clone(),
            node: None,
        });
        let attempt = self.inner.call(request);
        if let Err(none) = attempt.node() {
            // No (other) node to try: the last attempt's result stands.
            return Next::Done(match self.last.take() {
                Some(answer) => *answer,
                None => Err(none.clone()),
            });
        }
        if n > 0 && !self.shared.budget.withdraw() {
            return Next::Done(match self.last_answer(n) {
                Err(error) => Err(ClientError::BudgetExhausted {
                    service: self.shared.service.clone(),
                    last: Box::new(error),
                }),
                // The node answered with an error: that answer stands.
                Ok(response) => Ok(response),
            });
        }
        if now >= self.deadline.at {
            return Next::Done(Err(self.deadline.exceeded(&self.shared.service, n)));
        }
        self.can_retry = can_retry;
        let hedge_after = self
            .shared
            .options
            .hedge_after
            .filter(|_| self.policy.idempotent && can_retry && self.parts.is_some());
        Next::Attempt(attempt, hedge_after)
    }

    /// No other attempt: the last one's result stands (or the failure
    /// before any attempt). There is one whenever no attempt is made after
    /// the first; `n` is only for a clear error should that ever not hold.
    #[allow(
        clippy::result_large_err,
        reason = "the call's answer, made once per call; boxing its error would cost each failed call an allocation"
    )]
    fn last_answer(&mut self, n: usize) -> Answer {
        match self.last.take() {
            Some(answer) => *answer,
            None => Err(self.deadline.exceeded(&self.shared.service, n)),
        }
    }

    /// The second attempt of a hedged call, on another node than `first`,
    /// if there is one and the budget allows it.
    fn hedge(&mut self, first: &Arc<NodeEntry>) -> Option<S::Future> {
        let kept = self.parts.as_ref()?;
        let body = self.body.as_mut()?;
        let mut exclude = self.tried.clone();
        exclude.push(first.clone());
        let mut request = http::Request::from_parts(copy_parts(kept), body.for_attempt());
        request.extensions_mut().insert(AttemptContext {
            started: Instant::now(),
            deadline: self.deadline.at,
            bounded: false,
            streaming: false,
            tried: exclude,
            node: None,
        });
        let second = self.inner.call(request);
        let node = second
            .node()
            .ok()
            .filter(|node| !Arc::ptr_eq(node, first))?;
        if !self.shared.budget.withdraw() {
            return None;
        }
        tracing::debug!(service = %self.shared.service, node = %first.node.id, hedge = %node.node.id, "first attempt slow; hedging");
        Some(second)
    }

    /// Runs an unhedged attempt: its outcome and node, reported to the
    /// observer.
    fn single(
        &mut self,
        primary: Pin<&mut Option<S::Future>>,
        cx: &mut Context<'_>,
    ) -> Poll<(Outcome, Arc<NodeEntry>)> {
        let Some(attempt) = primary.as_pin_mut() else {
            return Poll::Pending;
        };
        let (outcome, node) = attempted(ready!(attempt.poll(cx)));
        self.report(AttemptResult::of(&outcome));
        Poll::Ready((outcome, node))
    }

    /// Runs the current attempt, and its hedge once it is due: the outcome
    /// to judge and the node it came from. Every attempt that ends is
    /// reported to the observer, and one that lost the race as
    /// [`Cancelled`](AttemptResult::Cancelled).
    ///
    /// When neither attempt of a hedged call settles it, an answer (an
    /// error status from a node that processed the request) is kept over a
    /// failure: a hedge that fails must not hide what the first node
    /// answered (other than `Unavailable`). The node that lost is added to
    /// `tried`.
    fn race(
        &mut self,
        mut primary: Pin<&mut Option<S::Future>>,
        hedge: HedgeProj<'_, S::Future>,
        cx: &mut Context<'_>,
    ) -> Poll<(Outcome, Arc<NodeEntry>)> {
        let HedgeProj {
            mut timer,
            mut backup,
            early,
        } = hedge;
        if backup.is_none() && early.is_none() {
            if let Poll::Ready(ended) = self.single(primary.as_mut(), cx) {
                return Poll::Ready(ended);
            }
            let Some(due) = timer.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            ready!(due.poll(cx));
            timer.set(None);
            let first = primary
                .as_ref()
                .get_ref()
                .as_ref()
                .and_then(|first| first.node().ok())
                .cloned();
            match first.and_then(|first| self.hedge(&first)) {
                Some(second) => backup.set(Some(second)),
                // No hedge: the first attempt alone, as if unhedged.
                None => return Poll::Pending,
            }
        }
        if early.is_none() {
            let (picked, primary_first) = match primary.as_mut().as_pin_mut().map(|f| f.poll(cx)) {
                Some(Poll::Ready(picked)) => (picked, true),
                _ => match backup.as_mut().as_pin_mut().map(|f| f.poll(cx)) {
                    Some(Poll::Ready(picked)) => (picked, false),
                    _ => return Poll::Pending,
                },
            };
            let (outcome, node) = attempted(picked);
            self.report(AttemptResult::of(&outcome));
            if hedge::settles(&outcome) {
                // The other attempt is dropped (cancelled) by the caller.
                self.report(AttemptResult::Cancelled);
                return Poll::Ready((outcome, node));
            }
            if primary_first {
                primary.set(None);
            } else {
                backup.set(None);
            }
            *early = Some((outcome, node));
        }
        let remaining = match primary.as_mut().as_pin_mut() {
            Some(first) => first,
            None => match backup.as_mut().as_pin_mut() {
                Some(second) => second,
                None => return Poll::Pending,
            },
        };
        let (late, late_node) = attempted(ready!(remaining.poll(cx)));
        self.report(AttemptResult::of(&late));
        let Some((early, early_node)) = early.take() else {
            return Poll::Ready((late, late_node));
        };
        // Neither settled: the early one failed or answered with an error.
        if hedge::kept_over_failure(&early) && matches!(late, Outcome::Failed { .. }) {
            self.tried.push(late_node);
            return Poll::Ready((early, early_node));
        }
        self.tried.push(early_node);
        Poll::Ready((late, late_node))
    }

    /// Judges an attempt's outcome: the call's answer, or `None` to try
    /// another node.
    fn judge(&mut self, outcome: Outcome, node: Arc<NodeEntry>) -> Option<Answer> {
        let attempt = self.attempt;
        let service = &*self.shared.service;
        match outcome {
            Outcome::Deadline => Some(Err(self.deadline.exceeded(service, attempt + 1))),
            // Not executed: another node may take it, within the budget
            // like any retry; with none left, the refusal is the answer.
            Outcome::Shed { response } => {
                if self.can_retry && self.policy.retry_shed() {
                    tracing::debug!(service = %service, node = %node.node.id, attempt, "node shed the call; trying another");
                    self.tried.push(node);
                    self.last = Some(Box::new(Ok(response)));
                    self.attempt += 1;
                    return None;
                }
                Some(Ok(response))
            }
            Outcome::Answered { response, status } => match status {
                Some(code) if self.can_retry && self.policy.retry_status(code) => {
                    tracing::debug!(service = %service, node = %node.node.id, attempt, ?code, "retrying on another node");
                    self.tried.push(node);
                    self.last = Some(Box::new(Ok(response)));
                    self.attempt += 1;
                    None
                }
                _ => Some(Ok(response)),
            },
            Outcome::Failed { failure, sent } => {
                tracing::debug!(service = %service, node = %node.node.id, address = %node.node.address, attempt, ?sent, "attempt failed: {failure} {}", failure.detail().unwrap_or_default());
                let error = match failure {
                    NodeFailure::Timeout(timeout) if !self.policy.idempotent => {
                        ClientError::AttemptTimeout {
                            service: service.to_string(),
                            timeout,
                            node: node.node.clone(),
                        }
                    }
                    cause => ClientError::NodeFailed {
                        service: service.to_string(),
                        cause,
                        node: node.node.clone(),
                        attempts: attempt + 1,
                    },
                };
                if self.can_retry && self.policy.retry_failure(sent) {
                    self.tried.push(node);
                    self.last = Some(Box::new(Err(error)));
                    self.attempt += 1;
                    return None;
                }
                Some(Err(error))
            }
        }
    }
}

/// The outcome of an attempt started on a node.
fn attempted(attempted: Result<Attempted, ClientError>) -> (Outcome, Arc<NodeEntry>) {
    match attempted {
        Ok(Attempted { outcome, node }) => (outcome, node),
        // Only futures with a node are run (see `Attempts::next`).
        Err(error) => unreachable!("an attempt without a node is never run: {error}"),
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
