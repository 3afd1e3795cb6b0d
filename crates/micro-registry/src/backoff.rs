//! [`Backoff`]: the one exponential backoff every retry loop uses.
//!
//! Reconnecting a registry watch, re-registering a node, probing a node that
//! refused a connection, retrying an etcd request, and the ejection time of an
//! outlier node all wait "a little, then twice as long, up to a bound". They
//! share this type so the rule (and its tests) live in one place.
//!
//! ```
//! use std::time::Duration;
//! use micro_registry::Backoff;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
//! let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
//! assert_eq!(delays, [100, 200, 350, 350]);
//! backoff.reset();
//! assert_eq!(backoff.next_delay(), Duration::from_millis(100));
//! ```

use std::time::Duration;

/// Delays that start at `min` and double per failure up to `max`, with an
/// optional random spread so many clients that failed together do not retry
/// together.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The delay the next failure waits (before jitter).
    current: Duration,
    /// Each delay is shortened by up to this share of itself, at random.
    jitter: f64,
    /// Failures since the last reset.
    failures: u32,
}

impl Backoff {
    /// Delays from `min`, doubling, up to `max` (`max` below `min` is raised
    /// to `min`).
    pub const fn new(min: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < min.as_nanos() {
            min
        } else {
            max
        };
        Backoff {
            min,
            max,
            current: min,
            jitter: 0.0,
            failures: 0,
        }
    }

    /// Shortens each delay by a random share of up to `ratio` (0 to 1).
    pub fn with_jitter(mut self, ratio: f64) -> Self {
        self.jitter = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    pub fn min(&self) -> Duration {
        self.min
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// Failures counted since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next try, and the one after it doubled.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        if self.jitter > 0.0 {
            delay.mul_f64(1.0 - self.jitter * fastrand::f64())
        } else {
            delay
        }
    }

    /// Back to `min`: the thing retried works again.
    pub fn reset(&mut self) {
        self.current = self.min;
        self.failures = 0;
    }

    /// Sleeps for [`next_delay`](Self::next_delay) on the tokio clock.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_bound_and_resets() {
        let mut b = Backoff::new(MS * 20, MS * 400);
        let delays: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [20, 40, 80, 160, 320, 400, 400]);
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(), MS * 20);
    }

    #[test]
    fn a_max_below_min_is_min() {
        let mut b = Backoff::new(MS * 100, MS * 10);
        assert_eq!(b.max(), MS * 100);
        assert_eq!(b.next_delay(), MS * 100);
        assert_eq!(b.next_delay(), MS * 100);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..200 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::MAX);
    }

    #[test]
    fn jitter_only_shortens_within_its_share() {
        let mut b = Backoff::new(MS * 1000, MS * 1000).with_jitter(0.25);
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d <= MS * 1000 && d >= MS * 750, "{d:?}");
        }
        let b = Backoff::new(MS, MS).with_jitter(f64::NAN);
        assert_eq!(b.jitter, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_on_the_tokio_clock() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        for _ in 0..6 {
            b.wait().await;
        }
        // 1 + 2 + 4 + 8 + 16 + 30
        assert_eq!(start.elapsed(), Duration::from_secs(61));
    }
}
