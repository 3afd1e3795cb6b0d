//! The retry stage ([`Retry`]): runs a call's attempts, one after another
//! (or two at once when hedged), and judges each: whether a failed attempt
//! may go to another node ([`Policy`]), and whether the service can take
//! another retry ([`Budget`]).
//!
//! A call is retried, on a node not tried yet in this call, when it cannot
//! have been processed (the connection failed before the request was sent,
//! or the server answered `Unavailable`). Calls marked idempotent are also
//! retried after failures where the node may have started the work
//! (connection lost mid-call, an attempt timeout, `Internal`, `Unknown`,
//! `DeadlineExceeded`, `ResourceExhausted`, `Aborted`, `DataLoss`).
//!
//! Every retry takes from a budget that calls fill: over the last 10 seconds,
//! retries may be at most `ratio` (20 % of calls by default) plus
//! `min_per_second` per second. When a service fails for everyone, retries
//! stop there instead of multiplying its load (Finagle's and Linkerd's rule).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::attempt::Outcome;
use crate::balance::{Balance, BalanceFuture, NodeRequest, Picked};
use crate::body::RequestBody;
use crate::channel::Idempotent;
use crate::deadline::{Deadline, Timed};
use crate::endpoint::NodeEntry;
use crate::error::{ClientError, NodeFailure};
use crate::hedge;
use crate::observe::{AttemptResult, Call, CallEnd};
use crate::resolve::{NodeSet, Resolution};

/// How far a failed attempt got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The request never reached the server: always safe to send elsewhere.
    No,
    /// The server may have seen it.
    Maybe,
}

/// Whether a failed attempt may be tried again elsewhere.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) idempotent: bool,
}

impl Policy {
    /// After a failure of the node (no answer).
    pub(crate) fn retry_failure(self, sent: Sent) -> bool {
        sent == Sent::No || self.idempotent
    }

    /// After an answer with an error status.
    pub(crate) fn retry_status(self, code: Code) -> bool {
        match code {
            // The server did not take the request (overloaded, shutting down).
            Code::Unavailable => true,
            // Server-side failures: the work may have started.
            Code::Internal
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DataLoss => self.idempotent,
            // The request itself is at fault, or the answer is final.
            _ => false,
        }
    }
}

/// Retry budget settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetOptions {
    /// Retries allowed per call made (0.2: one retry per five calls).
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic (so a quiet client
    /// still retries).
    pub min_per_second: u32,
}

impl BudgetOptions {
    pub const RATIO: f64 = 0.2;
    pub const MIN_PER_SECOND: u32 = 10;
}

impl Default for BudgetOptions {
    fn default() -> Self {
        BudgetOptions {
            ratio: Self::RATIO,
            min_per_second: Self::MIN_PER_SECOND,
        }
    }
}

/// Seconds the budget looks back.
const WINDOW: usize = 10;

/// Calls and retries of the last [`WINDOW`] seconds, per second.
///
/// Counted in atomics: every call deposits, so this is on the hot path. Under
/// concurrent retries the check and the count of a withdrawal are not one
/// step, so a burst may overdraw by a retry or two; the bound holds over the
/// window.
#[derive(Debug)]
pub(crate) struct Budget {
    options: BudgetOptions,
    origin: Instant,
    /// Second (since `origin`) of the newest slot.
    now: AtomicU64,
    calls: [AtomicU64; WINDOW],
    retries: [AtomicU64; WINDOW],
    /// Held while the window moves on (at most once a second).
    rotate: Mutex<()>,
}

impl Budget {
    pub(crate) fn new(options: BudgetOptions) -> Self {
        Budget {
            options,
            origin: Instant::now(),
            now: AtomicU64::new(0),
            calls: Default::default(),
            retries: Default::default(),
            rotate: Mutex::new(()),
        }
    }

    /// The slot of the second `at` falls in, clearing the slots of the
    /// seconds that passed since the newest one.
    fn slot(&self, at: Instant) -> usize {
        let second = at.saturating_duration_since(self.origin).as_secs();
        if second > self.now.load(Ordering::Acquire) {
            let _rotating = self.rotate.lock().unwrap_or_else(|p| p.into_inner());
            let newest = self.now.load(Ordering::Acquire);
            if second > newest {
                let passed = (second - newest).min(WINDOW as u64);
                for s in 1..=passed {
                    let i = ((newest + s) % WINDOW as u64) as usize;
                    self.calls[i].store(0, Ordering::Relaxed);
                    self.retries[i].store(0, Ordering::Relaxed);
                }
                self.now.store(second, Ordering::Release);
            }
        }
        (second % WINDOW as u64) as usize
    }

    /// A call started at `now`.
    pub(crate) fn deposit(&self, now: Instant) {
        self.calls[self.slot(now)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; `false` if it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let i = self.slot(Instant::now());
        let sum = |slots: &[AtomicU64; WINDOW]| -> u64 {
            slots.iter().map(|n| n.load(Ordering::Relaxed)).sum()
        };
        let calls = sum(&self.calls);
        let retries = sum(&self.retries);
        // Over a window that has not run for WINDOW seconds yet, the floor
        // counts only the seconds that passed.
        let seconds = (self.now.load(Ordering::Acquire) + 1).min(WINDOW as u64);
        let allowed = self.options.ratio * calls as f64
            + f64::from(self.options.min_per_second) * seconds as f64;
        if (retries as f64) < allowed {
            self.retries[i].fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// For docs and tests: the window the budget looks back over.
#[allow(dead_code)]
pub(crate) const BUDGET_WINDOW: Duration = Duration::from_secs(WINDOW as u64);

/// The retry stage over the balance stage.
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    inner: Balance,
    /// Every call through this channel is [`Idempotent`].
    idempotent: bool,
}

/// Puts a [`Retry`] over the balance stage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryLayer {
    pub(crate) idempotent: bool,
}

impl Layer<Balance> for RetryLayer {
    type Service = Retry;

    fn layer(&self, inner: Balance) -> Retry {
        Retry {
            inner,
            idempotent: self.idempotent,
        }
    }
}

impl Retry {
    pub(crate) fn set_idempotent(&mut self, idempotent: bool) {
        self.idempotent = idempotent;
    }
}

impl Service<Timed> for Retry {
    type Response = http::Response<Body>;
    type Error = ClientError;
    type Future = RetryFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        let Ok(()) = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, timed: Timed) -> RetryFuture {
        let Timed {
            call: Call { request, end },
            deadline,
        } = timed;
        let set = self.inner.set();
        let (mut parts, body) = request.into_parts();
        let policy = Policy {
            idempotent: self.idempotent || parts.extensions.get::<Idempotent>().is_some(),
        };
        // Extensions are for the layers above this channel; the connection
        // to a node below it has no use for them, so they are not copied
        // per attempt.
        parts.extensions.clear();
        let body = if set.is_pending() {
            // Readiness waited `request_timeout` for the registry.
            Err(ClientError::RegistryTimeout {
                service: set.service().to_string(),
                registry: set.registry_name().to_string(),
                budget: set.options().request_timeout,
            })
        } else {
            RequestBody::take(body).map_err(|status| ClientError::BadRequest {
                service: set.service().to_string(),
                detail: status.message().to_string(),
            })
        };
        // A retry goes to a node not tried yet in this call: with one node
        // there is none, and nothing needs keeping for a second attempt.
        let attempts = if set.len() > 1 {
            1 + set.options().retries as usize
        } else {
            1
        };
        // A call that failed before any attempt has none, and that failure
        // for its answer.
        let (body, attempts, last) = match body {
            Ok(body) => {
                set.budget.deposit(deadline.started);
                (Some(body), attempts, None)
            }
            Err(error) => (None, 0, Some(Box::new(Err(error)))),
        };
        RetryFuture {
            state: Attempts {
                inner: self.inner.clone(),
                end,
                deadline,
                policy,
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
struct Attempts {
    inner: Balance,
    /// The observer's record of the call, ended here.
    end: Option<Box<dyn CallEnd>>,
    deadline: Deadline,
    policy: Policy,
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
    struct Hedge {
        // Until the second attempt is due.
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        backup: Option<BalanceFuture>,
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
enum Next {
    /// Another attempt, and when to hedge it.
    Attempt(BalanceFuture, Option<Duration>),
    /// No other attempt: the call's answer.
    Done(Answer),
}

pin_project! {
    /// The retry stage's future: a call's attempts, run in turn.
    pub(crate) struct RetryFuture {
        state: Attempts,
        #[pin]
        primary: Option<BalanceFuture>,
        hedge: Option<Pin<Box<Hedge>>>,
    }
}

impl Future for RetryFuture {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.project();
        let answer = ready!(run(this.state, this.primary, this.hedge, cx));
        // The call is over: so is the observer's record of it.
        Poll::Ready(match this.state.end.take() {
            None => answer,
            Some(end) => match answer {
                Ok(response) => Ok(end.answered(response)),
                Err(error) => {
                    end.failed(&error);
                    Err(error)
                }
            },
        })
    }
}

/// Runs the attempts until one gives the call its answer.
fn run(
    state: &mut Attempts,
    mut primary: Pin<&mut Option<BalanceFuture>>,
    hedge: &mut Option<Pin<Box<Hedge>>>,
    cx: &mut Context<'_>,
) -> Poll<Answer> {
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

impl Attempts {
    fn set(&self) -> &NodeSet {
        self.inner.set()
    }

    fn report(&self, result: AttemptResult) {
        if let Some(end) = &self.end {
            end.attempt(result);
        }
    }

    /// The next attempt, with when to hedge it; or the call's answer when
    /// there is no next attempt.
    fn next(&mut self) -> Next {
        let n = self.attempt;
        let nodes = self.set().len();
        let (Some(body), true) = (self.body.as_mut(), n < self.attempts) else {
            return Next::Done(self.without_node());
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
            return Next::Done(self.without_node());
        };
        // The attempt timeout leaves time for another attempt; a call that
        // will not be retried (not idempotent) fails fast with it too.
        let bounded = !self.policy.idempotent || (can_retry && nodes > self.tried.len() + 1);
        // One clock reading per attempt: the deadline check, and the
        // attempt's start for its latency (the first attempt starts with
        // the call).
        let now = if n == 0 {
            self.deadline.started
        } else {
            Instant::now()
        };
        let attempt = self.inner.call(NodeRequest {
            request: http::Request::from_parts(sent, body.for_attempt()),
            tried: self.tried.clone(),
            started: now,
            deadline: self.deadline.at,
            bounded,
        });
        if attempt.node().is_none() {
            return Next::Done(self.without_node());
        }
        if n > 0 && !self.set().budget.withdraw() {
            let Some(last) = self.last.take() else {
                return Next::Done(Err(no_nodes(self.set())));
            };
            return Next::Done(match *last {
                Err(error) => Err(ClientError::BudgetExhausted {
                    service: self.set().service().to_string(),
                    last: Box::new(error),
                }),
                // The node answered with an error: that answer stands.
                Ok(response) => Ok(response),
            });
        }
        if now >= self.deadline.at {
            return Next::Done(Err(self.deadline.exceeded(self.set().service(), n)));
        }
        self.can_retry = can_retry;
        let hedge_after = self
            .set()
            .options()
            .hedge_after
            .filter(|_| self.policy.idempotent && can_retry && self.parts.is_some());
        Next::Attempt(attempt, hedge_after)
    }

    /// No (other) node to try: the last attempt's result stands.
    #[allow(
        clippy::result_large_err,
        reason = "the call's answer, made once per call; boxing its error would cost each failed call an allocation"
    )]
    fn without_node(&mut self) -> Answer {
        match self.last.take() {
            Some(answer) => *answer,
            None => Err(no_nodes(self.set())),
        }
    }

    /// The second attempt of a hedged call, on another node than `first`,
    /// if there is one and the budget allows it.
    fn hedge(&mut self, first: &Arc<NodeEntry>) -> Option<BalanceFuture> {
        let kept = self.parts.as_ref()?;
        let body = self.body.as_mut()?;
        let mut exclude = self.tried.clone();
        exclude.push(first.clone());
        let second = self.inner.call(NodeRequest {
            request: http::Request::from_parts(copy_parts(kept), body.for_attempt()),
            tried: exclude,
            started: Instant::now(),
            deadline: self.deadline.at,
            bounded: false,
        });
        let node = second.node().filter(|node| !Arc::ptr_eq(node, first))?;
        if !self.set().budget.withdraw() {
            return None;
        }
        tracing::debug!(service = %self.set().service(), node = %first.node.id, hedge = %node.node.id, "first attempt slow; hedging");
        Some(second)
    }

    /// Runs an unhedged attempt: its outcome and node, reported to the
    /// observer.
    fn single(
        &mut self,
        primary: Pin<&mut Option<BalanceFuture>>,
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
        mut primary: Pin<&mut Option<BalanceFuture>>,
        hedge: HedgeProj<'_>,
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
                .and_then(BalanceFuture::node)
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
        let service = self.set().service();
        match outcome {
            Outcome::Deadline => Some(Err(self.deadline.exceeded(service, attempt + 1))),
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
fn attempted(picked: Result<Picked, std::convert::Infallible>) -> (Outcome, Arc<NodeEntry>) {
    let Ok(picked) = picked;
    match picked {
        Picked::Attempted { outcome, node } => (outcome, node),
        // Only futures with a node are run (see `Attempts::next`).
        Picked::NoNode => unreachable!("an attempt without a node is never run"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_a_share_of_calls_plus_a_floor() {
        let budget = Budget::new(BudgetOptions {
            ratio: 0.2,
            min_per_second: 1,
        });
        // First second: the floor allows one retry.
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        for _ in 0..100 {
            budget.deposit(Instant::now());
        }
        // 100 calls: 20 more retries.
        let granted = (0..50).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 20);
        // Ten seconds on, the old calls and retries are forgotten; the floor
        // has grown to ten.
        tokio::time::advance(BUDGET_WINDOW).await;
        let granted = (0..50).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn only_safe_failures_are_retried_unless_idempotent() {
        let plain = Policy { idempotent: false };
        let idempotent = Policy { idempotent: true };
        assert!(plain.retry_failure(Sent::No));
        assert!(!plain.retry_failure(Sent::Maybe));
        assert!(idempotent.retry_failure(Sent::Maybe));
        assert!(plain.retry_status(Code::Unavailable));
        assert!(!plain.retry_status(Code::Internal));
        assert!(idempotent.retry_status(Code::Internal));
        assert!(!idempotent.retry_status(Code::InvalidArgument));
        assert!(!idempotent.retry_status(Code::NotFound));
    }
}
