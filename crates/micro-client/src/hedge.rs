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
pub(crate) async fn run<F>(set: &NodeSet, call: Hedged<'_, F>) -> (Outcome, Arc<NodeEntry>)
where
    F: FnOnce() -> http::Request<Body>,
{
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
        outcome = &mut primary => return (outcome, first),
        () = tokio::time::sleep(after) => {}
    }
    let mut exclude = tried.clone();
    exclude.push(first.clone());
    let Some(second) = set.pick(&exclude).filter(|e| !Arc::ptr_eq(e, &first)) else {
        return (primary.await, first);
    };
    if !set.budget.withdraw() {
        return (primary.await, first);
    }
    tracing::debug!(service = %set.service(), node = %first.node.id, hedge = %second.node.id, "first attempt slow; hedging");
    let second_node = second.clone();
    let backup = attempt::run(set, &second_node, spare(), Instant::now(), deadline, false);
    tokio::pin!(backup);
    tokio::select! {
        outcome = &mut primary => {
            if settles(&outcome) {
                return (outcome, first);
            }
            tried.push(first);
            (backup.await, second)
        }
        outcome = &mut backup => {
            if settles(&outcome) {
                return (outcome, second);
            }
            tried.push(second);
            (primary.await, first)
        }
    }
}
