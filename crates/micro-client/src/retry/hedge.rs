//! Hedging, for idempotent calls: when the first attempt has not answered
//! after `hedge_after`, the same request goes to a second node too and the
//! first answer wins (the other attempt is cancelled). The second request
//! takes from the retry budget like a retry, so hedges cannot pile load on a
//! slow service either. The race itself runs in the retry stage
//! ([`RetryFuture`](super::RetryFuture)); these are its rules.

use crate::outcome::Outcome;

/// Whether an outcome ends the race (rather than waiting for the other one).
pub(crate) fn settles(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Answered { status, .. } => status.is_none(),
        Outcome::Deadline => true,
        Outcome::Failed { .. } | Outcome::Shed { .. } => false,
    }
}

/// Whether an error answer is kept when the other attempt then fails: one
/// that says the node processed the request (not `Unavailable`, which says
/// it did not, no more than a failure does).
pub(crate) fn kept_over_failure(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Answered { status, .. } if *status != Some(tonic::Code::Unavailable))
}
