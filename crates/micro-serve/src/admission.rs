//! Admission control: how many requests a server (gRPC, `micro-server`) or
//! the gateway (`micro api`) works on at once, and what happens past that.
//!
//! Past the limit a request is refused at once, never queued: a queue only
//! turns overload into latency, and callers then time out while the server
//! still works on what they gave up. The refusal is cheap and says so
//! (gRPC `RESOURCE_EXHAUSTED` with a `grpc-retry-pushback-ms` trailer, HTTP
//! 503 with `Retry-After`), so a client sends the request to another node.
//!
//! The limit is [`ConcurrencyLimit`]: off, a fixed number, or adaptive
//! (the default). Adaptive is Netflix concurrency-limits' *gradient*
//! limiter (`Gradient2Limit`, after TCP Vegas): the limit follows how the
//! recent latency compares with the long-run latency,
//!
//! ```text
//! tolerated = max(TOLERANCE × long_rtt, long_rtt + QUEUE_ALLOWANCE)
//! gradient = clamp(tolerated / short_rtt, 0.5, 1)
//! limit    = (1 − SMOOTHING) × limit + SMOOTHING × (limit × gradient + √limit)
//! ```
//!
//! once per window of at least [`WINDOW`] and [`WINDOW_SAMPLES`] calls
//! (a call's end adds its latency to the window with two atomic operations;
//! only the end that closes a window takes a lock);
//! `short_rtt` is the window's mean, `long_rtt` an average over the last
//! [`LONG_WINDOWS`] windows. While latency stays within `TOLERANCE` of its
//! usual, the limit grows by about √limit per window; when requests start
//! to queue inside the server (latency up, throughput flat), it shrinks
//! toward the concurrency the server actually completes. A window where
//! fewer than half the limit were in flight leaves it alone (the load, not
//! the server, set the latency).
//!
//! Two departures from Gradient2. [`QUEUE_ALLOWANCE`]: a queue whose wait
//! stays under 50 ms is served, so a closed loop of callers (a load test's
//! 50 clients on a one-core server: latency 50× the unloaded, every call
//! served) is not turned into refusals. And a *saturated* window (every slot
//! taken) does not raise `long_rtt`, whose latency is the server's own queue:
//! in Gradient2 the long average follows that queue up under lasting
//! overload and the limit creeps up with it (except at the floor, where the
//! latency seen becomes the usual: a server that truly became slower must
//! not stay pinned there). It needs no CPU measurement (go-zero's
//! shedder reads CPU usage, which on a shared host says little about this
//! process's capacity) and no latency target to configure.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use tokio::time::Instant;

/// A window lasts at least this long...
pub const WINDOW: Duration = Duration::from_millis(100);
/// ...and holds at least this many calls.
pub const WINDOW_SAMPLES: u32 = 10;
/// `long_rtt` averages over about this many windows.
pub const LONG_WINDOWS: f64 = 600.0;
/// Latency may grow by this factor over its usual before the limit falls...
pub const TOLERANCE: f64 = 1.5;
/// ...and by this much at least: a queue whose wait stays under it is
/// served, not refused. A closed loop of callers (50 clients each calling
/// again once answered, a load test's usual shape) makes a one-core server's
/// latency 50 times its unloaded one, yet every call is served and the
/// queue cannot grow: refused, those calls would fail where they had
/// nowhere else to go. The allowance is far below callers' deadlines (2 s
/// per attempt by default), so what it admits does not time out waiting;
/// an open-ended overload still meets the limit once its queue waits longer.
pub const QUEUE_ALLOWANCE: Duration = Duration::from_millis(50);
/// How much of a new limit is taken per window.
pub const SMOOTHING: f64 = 0.2;
/// The adaptive limit's start, floor and ceiling.
pub const INITIAL_LIMIT: usize = 100;
pub const MIN_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 1000;

/// The `--server_max_concurrent` / `--max_concurrent` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConcurrencyLimit {
    /// The gradient limiter (module docs): `auto`.
    #[default]
    Adaptive,
    /// Exactly this many at once.
    Fixed(usize),
    /// No limit: `0` or `off`.
    Off,
}

impl FromStr for ConcurrencyLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" | "adaptive" => Ok(ConcurrencyLimit::Adaptive),
            "off" | "0" => Ok(ConcurrencyLimit::Off),
            n => match n.parse::<usize>() {
                Ok(n) => Ok(ConcurrencyLimit::Fixed(n)),
                Err(_) => Err(format!(
                    "{s:?} is not a concurrency limit: `auto` (adaptive), a number, or `off` (also `0`)"
                )),
            },
        }
    }
}

impl fmt::Display for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConcurrencyLimit::Adaptive => f.write_str("auto"),
            ConcurrencyLimit::Fixed(n) => write!(f, "{n}"),
            ConcurrencyLimit::Off => f.write_str("off"),
        }
    }
}

/// Why a request was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the concurrency limit.
    Shed,
    /// Its deadline had passed.
    Expired,
}

/// Sees what admission does, for metrics: `micro-telemetry` implements it
/// (`micro_server_admission_*`, `micro_api_admission_*`).
pub trait AdmissionObserver: Send + Sync + fmt::Debug + 'static {
    /// A request was refused.
    fn refused(&self, refusal: Refusal);
    /// The limit changed (and once at the start).
    fn limit(&self, limit: usize);
    /// Requests in flight now (on every admission and end).
    fn in_flight(&self, in_flight: usize);
}

/// A request over the limit: refuse it, and suggest when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shed {
    /// The limit at the time.
    pub limit: usize,
    /// About when a slot frees up: the recent latency (at least 1 ms).
    pub retry_after: Duration,
}

/// One server's (or gateway's) admission: the limit and what is in flight.
pub struct Admission {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// The recent mean latency, nanoseconds (for [`Shed::retry_after`]).
    recent: AtomicU64,
    adaptive: Option<Adaptive>,
    observer: Option<Arc<dyn AdmissionObserver>>,
}

/// The adaptive limit's window, filled without a lock, and its state,
/// locked only to close a window.
#[derive(Debug)]
struct Adaptive {
    /// Zero of `window_start`.
    epoch: Instant,
    /// The window's calls (above [`SUM_BITS`]) and the sum of their
    /// latencies in microseconds (below): one `fetch_add` per call.
    window: AtomicU64,
    /// Most requests in flight seen in the window.
    peak: AtomicUsize,
    /// When the window started, microseconds since `epoch`.
    window_start: AtomicU64,
    gradient: Mutex<Gradient>,
}

/// The low bits of [`Adaptive::window`]: the latency sum, microseconds
/// (2^44 µs is 203 days; one call counts at most [`MAX_SAMPLE_US`]).
const SUM_BITS: u32 = 44;
const SUM_MASK: u64 = (1 << SUM_BITS) - 1;
/// A window closes at this many calls whatever its age, well before the
/// count (20 bits) could overflow.
const MAX_WINDOW_SAMPLES: u64 = 1 << 19;
/// One call's latency counts at most this much (71 minutes): at the
/// largest limit, 1,000 calls at once, a window's sum stays far below
/// 2^44 µs.
const MAX_SAMPLE_US: u64 = u32::MAX as u64;

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("adaptive", &self.adaptive.is_some())
            .finish()
    }
}

impl Admission {
    /// The admission `limit` sets; `None` when it is off.
    pub fn new(
        limit: ConcurrencyLimit,
        observer: Option<Arc<dyn AdmissionObserver>>,
    ) -> Option<Arc<Self>> {
        let (start, adaptive) = match limit {
            ConcurrencyLimit::Off | ConcurrencyLimit::Fixed(0) => return None,
            ConcurrencyLimit::Fixed(n) => (n, None),
            ConcurrencyLimit::Adaptive => (
                INITIAL_LIMIT,
                Some(Adaptive {
                    epoch: Instant::now(),
                    window: AtomicU64::new(0),
                    peak: AtomicUsize::new(0),
                    window_start: AtomicU64::new(0),
                    gradient: Mutex::new(Gradient::new(INITIAL_LIMIT as f64)),
                }),
            ),
        };
        if let Some(observer) = &observer {
            observer.limit(start);
        }
        Some(Arc::new(Admission {
            limit: AtomicUsize::new(start),
            in_flight: AtomicUsize::new(0),
            recent: AtomicU64::new(0),
            adaptive,
            observer,
        }))
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests admitted and not ended.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Admits a request if under the limit: it counts until the [`Permit`]
    /// is dropped. Never waits.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Shed> {
        let limit = self.limit();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            });
        match admitted {
            Ok(before) => {
                if let Some(observer) = &self.observer {
                    observer.in_flight(before + 1);
                }
                Ok(Permit {
                    admission: self.clone(),
                    started: Instant::now(),
                    in_flight: before + 1,
                })
            }
            Err(_) => {
                self.refused(Refusal::Shed);
                let recent = Duration::from_nanos(self.recent.load(Ordering::Relaxed));
                Err(Shed {
                    limit,
                    retry_after: recent.max(Duration::from_millis(1)),
                })
            }
        }
    }

    /// Counts a request refused for `refusal` (a shed is counted by
    /// [`try_acquire`](Self::try_acquire)).
    pub fn refused(&self, refusal: Refusal) {
        if let Some(observer) = &self.observer {
            observer.refused(refusal);
        }
    }

    fn end(&self, started: Instant, in_flight: usize) {
        let now = Instant::now();
        let left = self.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(observer) = &self.observer {
            observer.in_flight(left);
        }
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let rtt = now.saturating_duration_since(started);
        if let Some((limit, recent)) = adaptive.sample(now, rtt, in_flight) {
            self.recent
                .store(recent.as_nanos() as u64, Ordering::Relaxed);
            if self.limit.swap(limit, Ordering::Relaxed) != limit
                && let Some(observer) = &self.observer
            {
                observer.limit(limit);
            }
        }
    }
}

/// An admitted request: counted in flight until dropped, its latency then
/// a sample for the adaptive limit.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    started: Instant,
    /// In flight when it was admitted, itself included.
    in_flight: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.end(self.started, self.in_flight);
    }
}

impl Adaptive {
    /// One call's latency, added to the window; at a window's end, the new
    /// limit and the window's mean latency.
    fn sample(&self, now: Instant, rtt: Duration, in_flight: usize) -> Option<(usize, Duration)> {
        let rtt_us = u64::try_from(rtt.as_micros())
            .unwrap_or(MAX_SAMPLE_US)
            .min(MAX_SAMPLE_US);
        let before = self
            .window
            .fetch_add((1 << SUM_BITS) | rtt_us, Ordering::AcqRel);
        if self.peak.load(Ordering::Relaxed) < in_flight {
            self.peak.fetch_max(in_flight, Ordering::Relaxed);
        }
        let samples = (before >> SUM_BITS) + 1;
        if samples < u64::from(WINDOW_SAMPLES) {
            return None;
        }
        let now_us = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Acquire);
        if samples < MAX_WINDOW_SAMPLES && now_us.saturating_sub(start) < WINDOW.as_micros() as u64
        {
            return None;
        }
        // One end closes the window; another one ending meanwhile adds to
        // the next.
        let mut gradient = match self.gradient.try_lock() {
            Ok(gradient) => gradient,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if self.window_start.load(Ordering::Acquire) != start {
            // Closed by another end just now.
            return None;
        }
        let taken = self.window.swap(0, Ordering::AcqRel);
        let peak = self.peak.swap(0, Ordering::Relaxed);
        self.window_start.store(now_us, Ordering::Release);
        let count = taken >> SUM_BITS;
        if count == 0 {
            return None;
        }
        let short = ((taken & SUM_MASK) as f64 * 1000.0 / count as f64).max(1.0);
        gradient.update(short, peak);
        Some((gradient.limit as usize, Duration::from_nanos(short as u64)))
    }
}

/// The gradient limiter's state (module docs).
#[derive(Debug)]
struct Gradient {
    limit: f64,
    /// Mean latency over about [`LONG_WINDOWS`] windows, nanoseconds.
    long_rtt: Option<f64>,
}

impl Gradient {
    fn new(limit: f64) -> Self {
        Gradient {
            limit,
            long_rtt: None,
        }
    }

    /// A window closed: its mean latency (nanoseconds) and the most
    /// requests in flight during it.
    fn update(&mut self, short: f64, peak: usize) {
        // Every slot was taken in this window: calls were (or could have
        // been) refused, and the latency includes the server's own queue.
        // Under lasting overload the long-run average would follow that
        // queue up and the limit would creep up with it (Gradient2's known
        // drift): a saturated window does not raise the usual latency.
        // Except at the floor, where the limit cannot fall further: the
        // latency seen there is what the server now does at its least (a
        // slower dependency, a slower host), and becomes the usual.
        let saturated = peak >= self.limit as usize;
        let at_floor = self.limit <= MIN_LIMIT as f64;
        let long = match self.long_rtt {
            None => short,
            Some(long) if saturated && at_floor && short > TOLERANCE * long => short / TOLERANCE,
            Some(long) if saturated && short > long => long,
            Some(long) => long + (short - long) * (2.0 / (LONG_WINDOWS + 1.0)),
        };
        // After a lasting rise the long-run latency would stay high and
        // hold the limit up: let it come down to meet the recent one.
        // And after a fall (a faster dependency, a cache warmed), catch up.
        let long = if long / short > 2.0 {
            long * 0.95
        } else {
            long
        };
        self.long_rtt = Some(long);
        if (peak as f64) < self.limit / 2.0 {
            return;
        }
        let tolerated = (TOLERANCE * long).max(long + QUEUE_ALLOWANCE.as_nanos() as f64);
        let gradient = (tolerated / short).clamp(0.5, 1.0);
        let queue = self.limit.sqrt();
        let next = self.limit * gradient + queue;
        self.limit = (self.limit * (1.0 - SMOOTHING) + next * SMOOTHING)
            .clamp(MIN_LIMIT as f64, MAX_LIMIT as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Seen {
        shed: AtomicUsize,
        expired: AtomicUsize,
        limit: AtomicUsize,
        in_flight: AtomicUsize,
    }

    impl AdmissionObserver for Seen {
        fn refused(&self, refusal: Refusal) {
            match refusal {
                Refusal::Shed => &self.shed,
                Refusal::Expired => &self.expired,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        fn limit(&self, limit: usize) {
            self.limit.store(limit, Ordering::Relaxed);
        }
        fn in_flight(&self, in_flight: usize) {
            self.in_flight.store(in_flight, Ordering::Relaxed);
        }
    }

    #[test]
    fn settings_parse() {
        assert_eq!("auto".parse(), Ok(ConcurrencyLimit::Adaptive));
        assert_eq!("off".parse(), Ok(ConcurrencyLimit::Off));
        assert_eq!("0".parse(), Ok(ConcurrencyLimit::Off));
        assert_eq!("64".parse(), Ok(ConcurrencyLimit::Fixed(64)));
        assert!("-1".parse::<ConcurrencyLimit>().is_err());
        assert!("lots".parse::<ConcurrencyLimit>().is_err());
        assert!(Admission::new(ConcurrencyLimit::Off, None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_limit_refuses_at_once_and_frees_on_drop() {
        let seen = Arc::new(Seen::default());
        let admission = Admission::new(ConcurrencyLimit::Fixed(2), Some(seen.clone())).expect("on");
        let a = admission.try_acquire().expect("first");
        let _b = admission.try_acquire().expect("second");
        assert_eq!(seen.in_flight.load(Ordering::Relaxed), 2);
        let shed = admission
            .try_acquire()
            .expect_err("third is over the limit");
        assert_eq!(shed.limit, 2);
        assert!(shed.retry_after >= Duration::from_millis(1));
        assert_eq!(seen.shed.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(admission.in_flight(), 1);
        let _c = admission.try_acquire().expect("a slot freed");
        assert_eq!(admission.limit(), 2, "a fixed limit does not move");
    }

    /// Runs `windows` windows of `concurrency` calls at once, each taking
    /// `rtt`, on paused time; the limit after.
    async fn run(admission: &Arc<Admission>, windows: usize, concurrency: usize, rtt: Duration) {
        for _ in 0..windows {
            let started = Instant::now();
            while Instant::now() - started < WINDOW {
                let permits: Vec<Permit> = (0..concurrency)
                    .filter_map(|_| admission.try_acquire().ok())
                    .collect();
                tokio::time::advance(rtt).await;
                drop(permits);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_adaptive_limit_falls_when_latency_rises_and_recovers() {
        let seen = Arc::new(Seen::default());
        let admission = Admission::new(ConcurrencyLimit::Adaptive, Some(seen.clone())).expect("on");
        assert_eq!(admission.limit(), INITIAL_LIMIT);
        assert_eq!(seen.limit.load(Ordering::Relaxed), INITIAL_LIMIT);
        // A steady, fast server: latency 2 ms at the limit's load.
        run(&admission, 20, INITIAL_LIMIT, Duration::from_millis(2)).await;
        let steady = admission.limit();
        assert!(
            steady >= INITIAL_LIMIT,
            "flat latency: the limit holds or grows ({steady})"
        );
        // The server saturates: latency rises with concurrency (a queue
        // inside it). The limit falls.
        for _ in 0..40 {
            let limit = admission.limit();
            // A millisecond per call in flight: past the queue allowance
            // above about 50.
            let rtt = Duration::from_millis(limit as u64).max(Duration::from_millis(2));
            run(&admission, 1, limit, rtt).await;
        }
        let loaded = admission.limit();
        assert!(
            loaded < steady / 2,
            "latency up: the limit falls ({steady} -> {loaded})"
        );
        assert!(loaded >= MIN_LIMIT);
        assert_eq!(
            seen.limit.load(Ordering::Relaxed),
            loaded,
            "the observer sees the limit"
        );
        // Fast again: the limit climbs back.
        run(&admission, 60, 1000, Duration::from_millis(2)).await;
        assert!(
            admission.limit() > loaded * 2,
            "recovered: {} vs {loaded}",
            admission.limit()
        );
    }

    /// A server that works on one call at a time, `service` each (one
    /// core, CPU-bound handlers): a call admitted with `n` in flight takes
    /// `n × service` (it waits for the ones before it).
    fn serial(service: Duration) -> impl Fn(usize) -> Duration {
        move |in_flight| service * in_flight.max(1) as u32
    }

    /// Runs `windows` windows on paused time, `offered(limit)` calls tried at
    /// once in each round (those over the limit refused), each admitted call
    /// taking `rtt(admitted)`: the limit after each window.
    async fn run_model(
        admission: &Arc<Admission>,
        windows: usize,
        offered: impl Fn(usize) -> usize,
        rtt: impl Fn(usize) -> Duration,
    ) -> Vec<usize> {
        let mut limits = Vec::with_capacity(windows);
        for _ in 0..windows {
            let started = Instant::now();
            while Instant::now() - started < WINDOW {
                let permits: Vec<Permit> = (0..offered(admission.limit()))
                    .filter_map(|_| admission.try_acquire().ok())
                    .collect();
                tokio::time::advance(rtt(permits.len())).await;
                drop(permits);
            }
            limits.push(admission.limit());
        }
        limits
    }

    /// Calls ending on several threads at once (the window filled without
    /// a lock): nothing stays in flight, the limit stays within its bounds,
    /// and windows close while the calls end.
    #[test]
    fn ends_on_many_threads_at_once_are_all_counted() {
        let admission = Admission::new(ConcurrencyLimit::Adaptive, None).expect("on");
        let adaptive = admission.adaptive.as_ref().expect("adaptive");
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20_000 {
                        if let Ok(permit) = admission.try_acquire() {
                            drop(permit);
                        }
                    }
                });
            }
        });
        assert_eq!(admission.in_flight(), 0);
        let limit = admission.limit();
        assert!((MIN_LIMIT..=MAX_LIMIT).contains(&limit), "{limit}");
        // What is left in the open window is what no closed window took:
        // fewer calls than all of them unless the run took under a window.
        let open = adaptive.window.load(Ordering::Relaxed) >> SUM_BITS;
        assert!(open <= 80_000);
        if started.elapsed() > WINDOW * 3 {
            assert!(
                open < 80_000,
                "windows closed while the calls ended ({open} calls left open)"
            );
        }
    }

    /// A closed loop: 50 callers, each calling again as soon as it is
    /// answered, on a server that works on one call at a time. Latency is
    /// 50 times the unloaded one, but the queue is bounded by the callers
    /// and every call is served: refusing them (with one node, the callers
    /// have nowhere else to go) would turn a busy, healthy server into
    /// failed calls. After warming up at one call at a time (the usual
    /// latency learnt unloaded), the limit stays above the 50.
    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_of_callers_is_not_refused() {
        let admission = Admission::new(ConcurrencyLimit::Adaptive, None).expect("on");
        let server = serial(Duration::from_micros(100));
        run_model(&admission, 50, |_| 1, &server).await;
        let limits = run_model(&admission, 600, |_| 50, &server).await;
        let lowest = limits.iter().min().copied().unwrap_or_default();
        assert!(
            lowest >= 50,
            "a closed loop of 50 was refused: the limit fell to {lowest} ({:?})",
            &limits[..20]
        );
    }

    /// An open-ended overload, then a closed loop of 50 callers. While it
    /// refuses, a server cannot tell the two apart: a closed loop's refused
    /// callers come back at once, so arrivals outpace completions and every
    /// slot is taken, as in an open-ended overload. A limiter that withdrew
    /// the queue allowance on those signals (refusals, saturated windows)
    /// would hold the limit near the unloaded concurrency after the overload
    /// and go on refusing the closed loop for good: the allowance must not
    /// depend on them.
    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_after_an_overload_is_not_refused() {
        let seen = Arc::new(Seen::default());
        let admission = Admission::new(ConcurrencyLimit::Adaptive, Some(seen.clone())).expect("on");
        let server = serial(Duration::from_micros(100));
        run_model(&admission, 50, |_| 1, &server).await;
        run_model(&admission, 300, |limit| 3 * limit, &server).await;
        let shed_in_overload = seen.shed.load(Ordering::Relaxed);
        assert!(shed_in_overload > 0, "the overload was refused in part");
        let limits = run_model(&admission, 600, |_| 50, &server).await;
        let lowest = limits.iter().min().copied().unwrap_or_default();
        assert!(
            lowest >= 50,
            "the closed loop after the overload was refused: the limit fell to {lowest} ({:?})",
            &limits[..20]
        );
        assert_eq!(seen.shed.load(Ordering::Relaxed), shed_in_overload);
    }

    /// An open-ended overload (three times what the limit lets in, for a
    /// minute) on a server taking 1 ms a call, one at a time: the limit
    /// comes down until an admitted call waits about the queue allowance,
    /// and stays near it, far below callers' deadlines.
    #[tokio::test(start_paused = true)]
    async fn an_open_ended_overload_is_held_near_the_queue_allowance() {
        let admission = Admission::new(ConcurrencyLimit::Adaptive, None).expect("on");
        let server = serial(Duration::from_millis(1));
        run_model(&admission, 50, |_| 1, &server).await;
        let limits = run_model(&admission, 600, |limit| 3 * limit, &server).await;
        let after = &limits[100..];
        let highest = after.iter().max().copied().unwrap_or_default();
        // An admitted call waits `limit` × 1 ms.
        let allowance = QUEUE_ALLOWANCE.as_millis() as usize;
        assert!(
            highest <= 3 * allowance,
            "the queue kept under 3× the allowance: up to {highest} ms ({:?})",
            &limits[limits.len() - 10..]
        );
        assert!(
            after.iter().all(|&l| l < INITIAL_LIMIT),
            "the limit came down: {after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_server_keeps_its_limit() {
        let admission = Admission::new(ConcurrencyLimit::Adaptive, None).expect("on");
        // Few calls at once, slow ones: the load set the latency, not the
        // server's saturation. Nothing moves.
        run(&admission, 30, 2, Duration::from_millis(2)).await;
        run(&admission, 30, 2, Duration::from_millis(40)).await;
        assert_eq!(admission.limit(), INITIAL_LIMIT);
    }
}
