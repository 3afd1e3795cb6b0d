//! Login throttling: a growing wait after failed logins, counted per
//! account *and source* (the client's address) and per source alone.
//!
//! - An account and source pair gets [`PAIR_FREE`] failures, then must wait
//!   1 s, 2 s, 4 s ... up to [`MAX_WAIT`] after each further failure.
//! - One source gets [`SOURCE_FREE`] failures over all accounts (guessing
//!   many names), then the same growing wait.
//! - There is no account-wide lock: an attack on an account from other
//!   sources never keeps its owner, on their own source, from logging in.
//! - A login attempted during a wait is refused before any password work,
//!   with the same answer whether the account exists or not.
//! - A successful login clears its pair. Entries are forgotten
//!   [`FORGET_AFTER`] after their last failure; the table holds at most
//!   [`MAX_ENTRIES`] (the oldest go first).
//!
//! Steady state for one source: one guess per [`MAX_WAIT`] per account.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures of one account from one source before waits begin.
pub const PAIR_FREE: u32 = 5;
/// Failures of one source (any accounts) before waits begin.
pub const SOURCE_FREE: u32 = 20;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a failure is remembered.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most entries kept.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Pair { account: String, source: String },
    Source(String),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
}

impl Entry {
    /// When the next attempt is allowed, given `free` failures.
    fn allowed_at(&self, free: u32) -> Option<Instant> {
        let over = self.failures.checked_sub(free)?;
        let wait = Duration::from_secs(1u64 << over.min(16)).min(MAX_WAIT);
        Some(self.last_failure + wait)
    }
}

/// The failure counts.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// Longest account name or source kept as a key.
const MAX_KEY: usize = 256;

fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_KEY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_ascii_lowercase()
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(account: &str, source: &str) -> [Key; 2] {
        [
            Key::Pair {
                account: bounded(account),
                source: bounded(source),
            },
            Key::Source(bounded(source)),
        ]
    }

    /// `Err(wait)` while `account` may not be tried from `source`.
    pub fn check(&self, account: &str, source: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.lock();
        let [pair, source] = Self::keys(account, source);
        let allowed_at = [(pair, PAIR_FREE), (source, SOURCE_FREE)]
            .into_iter()
            .filter_map(|(key, free)| entries.get(&key)?.allowed_at(free))
            .max();
        match allowed_at {
            Some(at) if at > now => Err(at - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn failed(&self, account: &str, source: &str) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.saturating_duration_since(e.last_failure) < FORGET_AFTER);
            if entries.len() >= MAX_ENTRIES {
                // Still full: drop the oldest tenth.
                let mut times: Vec<Instant> = entries.values().map(|e| e.last_failure).collect();
                times.sort_unstable();
                let cut = times[times.len() / 10];
                entries.retain(|_, e| e.last_failure > cut);
            }
        }
        for key in Self::keys(account, source) {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
            });
            if now.saturating_duration_since(entry.last_failure) >= FORGET_AFTER {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
        }
    }

    /// A successful login: the pair starts over.
    pub fn succeeded(&self, account: &str, source: &str) {
        let [pair, _] = Self::keys(account, source);
        self.lock().remove(&pair);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_grow_per_pair_and_other_sources_are_free() {
        let throttle = LoginThrottle::new();
        for _ in 0..PAIR_FREE {
            assert!(throttle.check("alice", "10.0.0.9").is_ok());
            throttle.failed("alice", "10.0.0.9");
        }
        // The sixth attempt must wait; the owner elsewhere need not.
        assert!(throttle.check("alice", "10.0.0.9").is_err());
        assert!(throttle.check("alice", "10.0.0.1").is_ok());
        assert!(
            throttle.check("ALICE", "10.0.0.9").is_err(),
            "names fold case"
        );
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = throttle.check("alice", "10.0.0.9").expect_err("throttled");
            waits.push(wait.as_secs());
            tokio::time::advance(wait).await;
            assert!(throttle.check("alice", "10.0.0.9").is_ok());
            throttle.failed("alice", "10.0.0.9");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        // Success clears the pair.
        tokio::time::advance(MAX_WAIT).await;
        throttle.succeeded("alice", "10.0.0.9");
        assert!(throttle.check("alice", "10.0.0.9").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn one_source_guessing_many_names_is_slowed() {
        let throttle = LoginThrottle::new();
        for i in 0..SOURCE_FREE {
            throttle.failed(&format!("user{i}"), "10.0.0.9");
        }
        assert!(throttle.check("someone-new", "10.0.0.9").is_err());
        assert!(throttle.check("someone-new", "10.0.0.8").is_ok());
        tokio::time::advance(FORGET_AFTER).await;
        throttle.failed("x", "10.0.0.9");
        assert!(
            throttle.check("someone-new", "10.0.0.9").is_ok(),
            "old failures forgotten"
        );
    }
}
