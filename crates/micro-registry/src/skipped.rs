//! Entries the backends skipped as unusable, counted per process.
//!
//! A backend that drops something it read (an etcd key that is not ours, a
//! value that is not JSON, an mDNS packet that is not DNS) calls [`record`]
//! with its name and a fixed reason word. Whoever exports metrics reads
//! [`totals`]: `micro-telemetry` publishes them as
//! `micro_registry_entries_skipped_total{registry,reason}` at each scrape.
//!
//! This is the registry's telemetry plug: the backends depend on this crate
//! only (not on a metrics library), and since the counts live here, none is
//! lost to the order in which a process sets up its registry and its metrics.
//!
//! ```
//! micro_registry::skipped::record("example", "bad_json", 2);
//! let total = micro_registry::skipped::totals()
//!     .into_iter()
//!     .find(|t| t.registry == "example" && t.reason == "bad_json")
//!     .map_or(0, |t| t.count);
//! assert_eq!(total, 2);
//! ```

use std::sync::Mutex;

/// How many entries one backend skipped for one reason, since the process started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkippedTotal {
    /// The backend: `etcd`, `mdns`.
    pub registry: &'static str,
    /// A fixed word (etcd: `bad_key`, `oversized`, `bad_json`, `bad_service`,
    /// `bad_node`; mDNS: `not_dns`, `malformed`).
    pub reason: &'static str,
    pub count: u64,
}

/// A handful of (backend, reason) pairs: a list is enough, and skips are rare.
static TOTALS: Mutex<Vec<SkippedTotal>> = Mutex::new(Vec::new());

/// Counts `n` entries `registry` skipped for `reason`. Both are fixed words
/// (`'static`), so the label values stay bounded. `n == 0` costs nothing.
pub fn record(registry: &'static str, reason: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    let mut totals = TOTALS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match totals
        .iter_mut()
        .find(|t| t.registry == registry && t.reason == reason)
    {
        Some(total) => total.count = total.count.saturating_add(n),
        None => totals.push(SkippedTotal {
            registry,
            reason,
            count: n,
        }),
    }
}

/// Every (backend, reason) with at least one skipped entry, and its count.
pub fn totals() -> Vec<SkippedTotal> {
    TOTALS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(registry: &str, reason: &str) -> u64 {
        totals()
            .into_iter()
            .find(|t| t.registry == registry && t.reason == reason)
            .map_or(0, |t| t.count)
    }

    #[test]
    fn counts_add_up_per_backend_and_reason() {
        record("skipped-test", "a", 1);
        record("skipped-test", "a", 2);
        record("skipped-test", "b", 1);
        record("skipped-test-2", "a", 5);
        record("skipped-test", "c", 0);
        assert_eq!(count("skipped-test", "a"), 3);
        assert_eq!(count("skipped-test", "b"), 1);
        assert_eq!(count("skipped-test-2", "a"), 5);
        assert!(
            !totals()
                .iter()
                .any(|t| t.registry == "skipped-test" && t.reason == "c"),
            "nothing skipped, nothing listed"
        );
    }
}
