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
use std::sync::atomic::{AtomicU64, Ordering};
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
