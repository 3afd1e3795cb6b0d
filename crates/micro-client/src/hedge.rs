//! Hedging: for an idempotent call, when the first attempt has not answered
//! after `hedge_after`, the same request goes to a second node too and the
//! first answer wins (the other attempt is cancelled). The second request
//! takes from the retry budget like a retry, so hedges cannot pile load on a
//! slow service either.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::body::Body;

use crate::attempt::{self, Outcome};
use crate::endpoint::NodeEntry;
use crate::observe::{AttemptResult, CallEnd};
use crate::resolve::NodeSet;

/// Whether an outcome ends the race (rather than waiting for the other one).
fn settles(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Answered { status, .. } => status.is_none(),
        Outcome::Deadline => true,
        Outcome::Failed { .. } => false,
    }
}

/// The attempts of a hedged call.
pub(crate) struct Hedged<'a, F> {
    pub(crate) first: Arc<NodeEntry>,
    pub(crate) request: http::Request<Body>,
    /// When the first attempt starts.
    pub(crate) started: Instant,
    /// Whether the first attempt is bounded by the attempt timeout (as an
    /// unhedged attempt would be: not when no other node could take over).
    pub(crate) bounded: bool,
    /// Makes the copy of the request for the hedge, only if one is sent.
    pub(crate) spare: F,
    pub(crate) after: Duration,
    pub(crate) deadline: Instant,
    pub(crate) tried: &'a mut Vec<Arc<NodeEntry>>,
}

/// Runs the request on `first`, hedged by a copy on another node after
/// `after`. Returns the outcome to judge and the node it came from; a node
/// that lost the race after failing is added to `tried`.
///
/// Every attempt started here is reported to `observer`, the hedge too: an
/// attempt that lost the race is reported as
/// [`Cancelled`](AttemptResult::Cancelled) if it had not ended.
///
/// When neither attempt settles the call, an answer (an error status from
/// a node that processed the request) is kept over a failure: a hedge that
/// fails must not hide what the first node answered (other than
/// `Unavailable`).
pub(crate) async fn run<F>(
    set: &NodeSet,
    call: Hedged<'_, F>,
    observer: Option<&dyn CallEnd>,
) -> (Outcome, Arc<NodeEntry>)
where
    F: FnOnce() -> http::Request<Body>,
{
    let report = |outcome: &Outcome| {
        if let Some(observer) = observer {
            observer.attempt(AttemptResult::of(outcome));
        }
    };
    let Hedged {
        first,
        request,
        started,
        bounded,
        spare,
        after,
        deadline,
        tried,
    } = call;
    let first_node = first.clone();
    let primary = attempt::run(set, &first_node, request, started, deadline, bounded);
    tokio::pin!(primary);
    tokio::select! {
        biased;
        outcome = &mut primary => {
            report(&outcome);
            return (outcome, first);
        }
        () = tokio::time::sleep(after) => {}
    }
    let unhedged = |outcome: Outcome| {
        report(&outcome);
        outcome
    };
    let mut exclude = tried.clone();
    exclude.push(first.clone());
    let Some(second) = set.pick(&exclude).filter(|e| !Arc::ptr_eq(e, &first)) else {
        return (unhedged(primary.await), first);
    };
    if !set.budget.withdraw() {
        return (unhedged(primary.await), first);
    }
    tracing::debug!(service = %set.service(), node = %first.node.id, hedge = %second.node.id, "first attempt slow; hedging");
    let second_node = second.clone();
    let backup = attempt::run(set, &second_node, spare(), Instant::now(), deadline, false);
    tokio::pin!(backup);
    // The attempt that ends first; the other is still running.
    let (early, early_node, late_node, primary_first) = tokio::select! {
        outcome = &mut primary => (outcome, first, second, true),
        outcome = &mut backup => (outcome, second, first, false),
    };
    report(&early);
    if settles(&early) {
        // The other attempt is dropped (cancelled) with this future.
        if let Some(observer) = observer {
            observer.attempt(AttemptResult::Cancelled);
        }
        return (early, early_node);
    }
    let late = if primary_first {
        backup.await
    } else {
        primary.await
    };
    report(&late);
    // Neither settled: the early one failed or answered with an error.
    if kept_over_failure(&early) && matches!(late, Outcome::Failed { .. }) {
        tried.push(late_node);
        return (early, early_node);
    }
    tried.push(early_node);
    (late, late_node)
}

/// Whether an error answer is kept when the other attempt then fails: one
/// that says the node processed the request (not `Unavailable`, which says
/// it did not, no more than a failure does).
fn kept_over_failure(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Answered { status, .. } if *status != Some(tonic::Code::Unavailable))
}
