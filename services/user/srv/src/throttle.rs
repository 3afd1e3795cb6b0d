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
//! - A successful login clears its pair.
//!
//! The counts live in the store (table `login_failures`, migration 0003), so
//! every user-srv instance on one store shares them: N instances allow no
//! more guesses than one. Counts are forgotten [`FORGET_AFTER`] after their
//! last failure; expired rows are deleted every [`SWEEP_EVERY`] failures an
//! instance counts, and the table is capped at [`MAX_ENTRIES`] (the oldest
//! go first). Times are the hosts' wall clocks, in milliseconds.
//!
//! Steady state for one source: one guess per [`MAX_WAIT`] per account.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::store::{FailureCount, Store, StoreError};

/// Failures of one account from one source before waits begin.
pub const PAIR_FREE: u32 = 5;
/// Failures of one source (any accounts) before waits begin.
pub const SOURCE_FREE: u32 = 20;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a failure is remembered.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most rows kept.
pub const MAX_ENTRIES: i64 = 100_000;
/// Failures counted by one instance between two sweeps of expired rows.
pub const SWEEP_EVERY: u32 = 256;

/// Longest account name or source kept as a key.
const MAX_KEY: usize = 256;

fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_KEY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_ascii_lowercase()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When the next attempt is allowed (Unix ms) after `count`, given `free`
/// failures before waits begin.
fn allowed_at(count: FailureCount, free: u32, now_ms: i64) -> Option<i64> {
    if count.last_failure_ms < now_ms - millis(FORGET_AFTER) {
        return None;
    }
    let over = count.failures.checked_sub(free)?;
    let wait = Duration::from_secs(1u64 << over.min(16)).min(MAX_WAIT);
    Some(count.last_failure_ms + millis(wait))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The failure counts, in the store.
#[derive(Debug)]
pub struct LoginThrottle {
    store: Store,
    /// Failures counted since the last sweep.
    since_sweep: AtomicU32,
}

impl LoginThrottle {
    pub fn new(store: Store) -> Self {
        LoginThrottle {
            store,
            since_sweep: AtomicU32::new(0),
        }
    }

    /// `Ok(Err(wait))` while `account` may not be tried from `source`.
    pub async fn check(
        &self,
        account: &str,
        source: &str,
    ) -> Result<Result<(), Duration>, StoreError> {
        self.check_at(account, source, now_ms()).await
    }

    /// [`check`](Self::check) at `now_ms`.
    pub async fn check_at(
        &self,
        account: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<Result<(), Duration>, StoreError> {
        let (pair, by_source) = self
            .store
            .login_failures(&bounded(account), &bounded(source))
            .await?;
        let allowed_at = [(pair, PAIR_FREE), (by_source, SOURCE_FREE)]
            .into_iter()
            .filter_map(|(count, free)| allowed_at(count?, free, now_ms))
            .max();
        Ok(match allowed_at {
            Some(at) if at > now_ms => Err(Duration::from_millis(
                u64::try_from(at - now_ms).unwrap_or(0),
            )),
            _ => Ok(()),
        })
    }

    /// Counts a failed login.
    pub async fn failed(&self, account: &str, source: &str) -> Result<(), StoreError> {
        self.failed_at(account, source, now_ms()).await
    }

    /// [`failed`](Self::failed) at `now_ms`.
    pub async fn failed_at(
        &self,
        account: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let forget_before = now_ms - millis(FORGET_AFTER);
        self.store
            .count_login_failure(&bounded(account), &bounded(source), now_ms, forget_before)
            .await?;
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) + 1 >= SWEEP_EVERY {
            self.since_sweep.store(0, Ordering::Relaxed);
            self.sweep(now_ms).await?;
        }
        Ok(())
    }

    /// Deletes expired rows and caps the table.
    pub async fn sweep(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.store
            .expire_login_failures(now_ms - millis(FORGET_AFTER), MAX_ENTRIES)
            .await
    }

    /// A successful login: the pair starts over.
    pub async fn succeeded(&self, account: &str, source: &str) -> Result<(), StoreError> {
        self.store
            .clear_login_failures(&bounded(account), &bounded(source))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn throttle() -> (LoginThrottle, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("user.db").display());
        let store = Store::open(&url).await.expect("store");
        (LoginThrottle::new(store), dir)
    }

    const T0: i64 = 1_700_000_000_000;

    fn secs(n: u64) -> i64 {
        millis(Duration::from_secs(n))
    }

    #[tokio::test]
    async fn waits_grow_per_pair_and_other_sources_are_free() {
        let (throttle, _dir) = throttle().await;
        let mut now = T0;
        for _ in 0..PAIR_FREE {
            assert_eq!(
                throttle
                    .check_at("alice", "10.0.0.9", now)
                    .await
                    .expect("check"),
                Ok(())
            );
            throttle
                .failed_at("alice", "10.0.0.9", now)
                .await
                .expect("count");
        }
        // The sixth attempt must wait; the owner elsewhere need not.
        assert!(
            throttle
                .check_at("alice", "10.0.0.9", now)
                .await
                .expect("check")
                .is_err()
        );
        assert!(
            throttle
                .check_at("alice", "10.0.0.1", now)
                .await
                .expect("check")
                .is_ok()
        );
        assert!(
            throttle
                .check_at("ALICE", "10.0.0.9", now)
                .await
                .expect("check")
                .is_err(),
            "names fold case"
        );
        let mut waits = Vec::new();
        for _ in 0..8 {
            let wait = throttle
                .check_at("alice", "10.0.0.9", now)
                .await
                .expect("check")
                .expect_err("throttled");
            waits.push(wait.as_secs());
            now += millis(wait);
            assert!(
                throttle
                    .check_at("alice", "10.0.0.9", now)
                    .await
                    .expect("check")
                    .is_ok()
            );
            throttle
                .failed_at("alice", "10.0.0.9", now)
                .await
                .expect("count");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        // Success clears the pair.
        now += secs(60);
        throttle
            .succeeded("alice", "10.0.0.9")
            .await
            .expect("clear");
        assert!(
            throttle
                .check_at("alice", "10.0.0.9", now)
                .await
                .expect("check")
                .is_ok()
        );
    }

    #[tokio::test]
    async fn one_source_guessing_many_names_is_slowed_and_old_rows_go() {
        let (throttle, _dir) = throttle().await;
        for i in 0..SOURCE_FREE {
            throttle
                .failed_at(&format!("user{i}"), "10.0.0.9", T0)
                .await
                .expect("count");
        }
        assert!(
            throttle
                .check_at("someone-new", "10.0.0.9", T0)
                .await
                .expect("check")
                .is_err()
        );
        assert!(
            throttle
                .check_at("someone-new", "10.0.0.8", T0)
                .await
                .expect("check")
                .is_ok()
        );
        let later = T0 + millis(FORGET_AFTER) + 1;
        assert!(
            throttle
                .check_at("someone-new", "10.0.0.9", later)
                .await
                .expect("check")
                .is_ok(),
            "old failures forgotten"
        );
        throttle
            .failed_at("x", "10.0.0.9", later)
            .await
            .expect("count");
        assert!(
            throttle
                .check_at("someone-new", "10.0.0.9", later)
                .await
                .expect("check")
                .is_ok(),
            "the count started over"
        );
        // 20 pairs and the source at T0, 1 pair at `later` (the source row
        // was refreshed): the sweep deletes the 20 old pairs.
        assert_eq!(throttle.store.login_failure_rows().await.expect("rows"), 22);
        assert_eq!(throttle.sweep(later).await.expect("sweep"), 20);
        assert_eq!(throttle.store.login_failure_rows().await.expect("rows"), 2);
    }

    #[tokio::test]
    async fn the_table_is_capped() {
        let (throttle, _dir) = throttle().await;
        for i in 0..10 {
            throttle
                .failed_at("a", &format!("10.0.0.{i}"), T0 + i)
                .await
                .expect("count");
        }
        assert_eq!(throttle.store.login_failure_rows().await.expect("rows"), 20);
        throttle
            .store
            .expire_login_failures(T0 - 1, 6)
            .await
            .expect("cap");
        let rows = throttle.store.login_failure_rows().await.expect("rows");
        assert_eq!(rows, 6, "the 6 newest rows are kept");
        // The newest source still counts.
        let (_, by_source) = throttle
            .store
            .login_failures("a", "10.0.0.9")
            .await
            .expect("read");
        assert_eq!(by_source.map(|c| c.failures), Some(1));
    }
}
