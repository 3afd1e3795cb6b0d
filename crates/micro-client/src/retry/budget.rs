//! The retry budget: every retry (and hedge) of a service takes from a
//! budget that its calls fill. Over the last 10 seconds, retries may be at
//! most `ratio` (20 % of calls by default) plus `min_per_second` per second.
//! When a service fails for everyone, retries stop there instead of
//! multiplying its load (Finagle's and Linkerd's rule).
//!
//! One budget per service, shared by every channel and proxy that calls it
//! (the [`Client`](crate::Client) keeps it), so a burst of failures spends
//! the same budget whichever transport saw it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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

/// Calls and retries of the last [`Budget::WINDOW`] seconds, per second.
///
/// Counted in atomics: every call deposits, so this is on the hot path. Under
/// concurrent retries the check and the count of a withdrawal are not one
/// step, so a burst may overdraw by a retry or two; the bound holds over the
/// window.
#[derive(Debug)]
pub struct Budget {
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
    pub fn new(options: BudgetOptions) -> Self {
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
    pub fn deposit(&self, now: Instant) {
        self.calls[self.slot(now)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; `false` if it is spent.
    pub fn withdraw(&self) -> bool {
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

impl Budget {
    /// The window the budget looks back over.
    pub const WINDOW: Duration = Duration::from_secs(WINDOW as u64);
}
