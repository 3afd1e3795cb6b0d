//! Retry: when a failed attempt may go to another node ([`Policy`]), and how
//! many retries the service can take ([`Budget`]).
//!
//! A call is retried, on a node not tried yet in this call, when it cannot
//! have been processed (the connection failed before the request was sent,
//! or the server answered `Unavailable`). Calls marked idempotent are also
//! retried after failures where the node may have started the work
//! (connection lost mid-call, an attempt timeout, `Internal`, `Unknown`,
//! `DeadlineExceeded`, `ResourceExhausted`, `Aborted`, `DataLoss`).
//!
//! Every retry takes from a budget that calls fill: over the last 10 seconds,
//! retries may be at most `ratio` (20 % by default) of calls plus
//! `min_per_second` per second. When a service fails for everyone, retries
//! stop there instead of multiplying its load (Finagle's and Linkerd's rule).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

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
#[derive(Debug)]
pub(crate) struct Budget {
    options: BudgetOptions,
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    origin: Instant,
    /// Second (since `origin`) of the newest slot.
    now: u64,
    calls: [u64; WINDOW],
    retries: [u64; WINDOW],
}

impl Budget {
    pub(crate) fn new(options: BudgetOptions) -> Self {
        Budget {
            options,
            slots: Mutex::new(Slots {
                origin: Instant::now(),
                now: 0,
                calls: [0; WINDOW],
                retries: [0; WINDOW],
            }),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let second = slots.origin.elapsed().as_secs();
        if second != slots.now {
            // Clear the slots of the seconds that passed.
            let passed = (second - slots.now).min(WINDOW as u64);
            for s in 1..=passed {
                let i = ((slots.now + s) % WINDOW as u64) as usize;
                slots.calls[i] = 0;
                slots.retries[i] = 0;
            }
            slots.now = second;
        }
        slots
    }

    /// A call started.
    pub(crate) fn deposit(&self) {
        let mut slots = self.slots();
        let i = (slots.now % WINDOW as u64) as usize;
        slots.calls[i] += 1;
    }

    /// Takes one retry from the budget; `false` if it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let mut slots = self.slots();
        let calls: u64 = slots.calls.iter().sum();
        let retries: u64 = slots.retries.iter().sum();
        // Over a window that has not run for WINDOW seconds yet, the floor
        // counts only the seconds that passed.
        let seconds = (slots.now + 1).min(WINDOW as u64);
        let allowed = self.options.ratio * calls as f64
            + f64::from(self.options.min_per_second) * seconds as f64;
        if (retries as f64) < allowed {
            let i = (slots.now % WINDOW as u64) as usize;
            slots.retries[i] += 1;
            true
        } else {
            false
        }
    }
}

/// For docs and tests: the window the budget looks back over.
#[allow(dead_code)]
pub(crate) const BUDGET_WINDOW: Duration = Duration::from_secs(WINDOW as u64);

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
            budget.deposit();
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
