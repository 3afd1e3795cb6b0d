//! How loaded a node looks: a peak-EWMA latency estimate times the calls in
//! flight (plus one), the load measure of Finagle, Linkerd and tower's
//! `PeakEwma`, which [`p2c`](micro_selector::Strategy::P2c) compares.
//!
//! - A node's first answer replaces the [`DEFAULT_RTT`] it starts with,
//!   whichever is larger: the default is a guess, not a measurement. (Decayed
//!   from the default instead, a new client's fast nodes looked as slow as a
//!   20 ms node for their first second, and the slow node got its share.)
//! - After that, a slower answer than the estimate replaces it at once (the
//!   *peak*); a faster one pulls it down gradually, weighted by the time
//!   since the last answer (decay time [`DECAY`]), so a node that turns slow
//!   loses its share at the next answer and wins it back only by staying
//!   fast.
//! - A failed attempt counts as twice the estimate (at least twice
//!   [`DEFAULT_RTT`]): a node that fails fast does not look fast.
//! - A node nobody calls drifts back to looking cheap, so it is tried again;
//!   while calls to it are pending it does not (a hung node must not win).
//! - A node that has never answered and has no call pending costs nothing:
//!   a new node is tried by the next call, one call at a time until its
//!   first answer. (At the default estimate faded by time, a new node
//!   waited 2–3 s for its first call through the gateway: R13.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The estimate of a node not measured yet (Linkerd's and tower's default).
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast older measurements lose weight.
pub(crate) const DECAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Load {
    in_flight: AtomicU32,
    estimate: Mutex<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Nanoseconds.
    rtt: f64,
    at: Instant,
    /// Whether `rtt` comes from an answer (else it is [`DEFAULT_RTT`]).
    measured: bool,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            in_flight: AtomicU32::new(0),
            estimate: Mutex::new(Estimate {
                rtt: DEFAULT_RTT.as_nanos() as f64,
                at: Instant::now(),
                measured: false,
            }),
        }
    }
}

/// One attempt in flight, for the tests below (the attempt stage keeps its
/// own, which owns its node); dropping it without
/// [`finish`](InFlight::finish) (a cancelled call) only ends the in-flight
/// count.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    load: &'a Load,
    started: Instant,
}

#[cfg(test)]
impl InFlight<'_> {
    /// Records how long the attempt took and whether it failed.
    pub(crate) fn finish(self, failed: bool) {
        let now = Instant::now();
        self.load
            .observe(now.saturating_duration_since(self.started), now, failed);
    }
}

#[cfg(test)]
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    /// An attempt starts (`now`).
    #[cfg(test)]
    pub(crate) fn start(&self, now: Instant) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self,
            started: now,
        }
    }

    /// An attempt started.
    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt that [`enter`](Self::enter)ed ended: its latency and
    /// whether it failed, if known.
    pub(crate) fn exit(&self, result: Option<(Duration, bool)>) {
        if let Some((rtt, failed)) = result {
            self.observe(rtt, Instant::now(), failed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.estimate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, rtt: Duration, now: Instant, failed: bool) {
        let mut estimate = self.lock();
        let mut sample = rtt.as_nanos() as f64;
        if failed {
            sample = sample.max(2.0 * estimate.rtt.max(DEFAULT_RTT.as_nanos() as f64));
        }
        if sample > estimate.rtt || !estimate.measured {
            estimate.rtt = sample;
            estimate.measured = true;
        } else {
            let elapsed = now.saturating_duration_since(estimate.at).as_nanos() as f64;
            let weight = (-elapsed / DECAY.as_nanos() as f64).exp();
            estimate.rtt = estimate.rtt * weight + sample * (1.0 - weight);
        }
        estimate.at = now;
    }

    /// The load now: latency estimate × (calls in flight + 1).
    pub(crate) fn cost(&self) -> f64 {
        let pending = self.in_flight();
        let estimate = *self.lock();
        if !estimate.measured && pending == 0 {
            // Never answered and idle: costs nothing, so the next call tries
            // it (a new node gets its first call at once, not after the
            // default estimate has faded for seconds). While that call is
            // out it costs the default, so it gets one call at a time until
            // it has answered.
            return 0.0;
        }
        let rtt = if pending == 0 {
            // Idle: the estimate fades, so the node gets traffic again.
            let idle = Instant::now()
                .saturating_duration_since(estimate.at)
                .as_nanos() as f64;
            estimate.rtt * (-idle / DECAY.as_nanos() as f64).exp()
        } else {
            estimate.rtt
        };
        rtt * f64::from(pending + 1)
    }

    /// The latency estimate, for stats.
    pub(crate) fn rtt(&self) -> Duration {
        Duration::from_nanos(self.lock().rtt as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_taken_at_once_a_fast_one_gradually() {
        let load = Load::default();
        assert_eq!(load.rtt(), DEFAULT_RTT);
        let call = load.start(Instant::now());
        tokio::time::advance(MS * 100).await;
        call.finish(false);
        assert_eq!(load.rtt(), MS * 100, "peak");
        // Fast answers right after: the estimate barely moves.
        let call = load.start(Instant::now());
        tokio::time::advance(MS).await;
        call.finish(false);
        assert!(load.rtt() > MS * 95, "{:?}", load.rtt());
        // A second later, a fast answer weighs 1 - 1/e.
        tokio::time::advance(Duration::from_secs(1)).await;
        let call = load.start(Instant::now());
        call.finish(false);
        let rtt = load.rtt().as_secs_f64() * 1000.0;
        assert!((rtt - 99.9 / std::f64::consts::E).abs() < 1.0, "{rtt}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_answer_replaces_the_default() {
        let fast = Load::default();
        let slow = Load::default();
        let call = fast.start(Instant::now());
        tokio::time::advance(Duration::from_micros(300)).await;
        call.finish(false);
        assert_eq!(
            fast.rtt(),
            Duration::from_micros(300),
            "not decayed from 30 ms"
        );
        let call = slow.start(Instant::now());
        tokio::time::advance(MS * 20).await;
        call.finish(false);
        assert_eq!(slow.rtt(), MS * 20);
        // Busy with 5 calls each, the fast node is still far cheaper than
        // the idle slow one: p2c keeps the slow node out from the start.
        let pending: Vec<_> = (0..5).map(|_| fast.start(Instant::now())).collect();
        assert!(
            fast.cost() * 10.0 < slow.cost(),
            "{} vs {}",
            fast.cost(),
            slow.cost()
        );
        drop(pending);
        // A failure as the first answer still looks expensive.
        let failed = Load::default();
        failed.start(Instant::now()).finish(true);
        assert_eq!(failed.rtt(), DEFAULT_RTT * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_node_is_tried_at_once_one_call_at_a_time() {
        let known = Load::default();
        let call = known.start(Instant::now());
        tokio::time::advance(MS).await;
        call.finish(false);
        let new = Load::default();
        assert_eq!(new.cost(), 0.0, "idle and never measured: tried next");
        assert!(new.cost() < known.cost());
        let first = new.start(Instant::now());
        assert!(
            new.cost() > known.cost(),
            "its first call out: the default again ({} vs {})",
            new.cost(),
            known.cost()
        );
        tokio::time::advance(MS * 2).await;
        first.finish(false);
        assert_eq!(new.rtt(), MS * 2, "measured by its first answer");
        assert!(new.cost() > 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_look_expensive_and_pending_calls_add_up() {
        let a = Load::default();
        let b = Load::default();
        a.start(Instant::now()).finish(true);
        assert!(a.cost() > b.cost());
        assert_eq!(a.rtt(), DEFAULT_RTT * 2);
        let pending: Vec<_> = (0..3).map(|_| b.start(Instant::now())).collect();
        assert_eq!(b.in_flight(), 3);
        assert_eq!(b.cost(), 4.0 * DEFAULT_RTT.as_nanos() as f64);
        drop(pending);
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_node_fades_back_a_busy_one_does_not() {
        let load = Load::default();
        let start = load.start(Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        start.finish(true);
        let busy = load.start(Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(load.cost() >= 2e9, "pending calls keep it expensive");
        drop(busy);
        assert!(
            load.cost() < 1e6,
            "idle for 10 decay times: {}",
            load.cost()
        );
    }
}
