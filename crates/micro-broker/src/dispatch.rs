//! Running handlers: each delivery through a [`Gate`] (so a subscription
//! can stop and drain), panics caught as failed deliveries, every outcome
//! shown to the observer; a receive loop's [`StopSignal`], and
//! [`Detached`] for a handler run that outlives its caller.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
#[cfg(feature = "nats")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::FutureExt;
#[cfg(feature = "nats")]
use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::{BrokerObserver, Event, Handler};

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler acknowledged the message.
    Ok,
    /// The handler refused it.
    Error(String),
    /// The handler panicked (caught: the process runs on).
    Panic(String),
}

impl Outcome {
    /// `ok`, `error` or `panic`: the metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Panic(_) => "panic",
        }
    }

    /// Why the delivery failed, if it did.
    pub fn failure(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Error(e) => Some(format!("subscriber error: {e}")),
            Outcome::Panic(e) => Some(format!("subscriber panicked: {e}")),
        }
    }
}

/// Admits deliveries until closed; [`drain`](Gate::drain) waits for those
/// admitted. One atomic word (no lock per delivery): the closed flag and
/// the count of deliveries in flight.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicUsize,
    idle: Notify,
}

/// The closed flag in [`Gate::state`]; the bits below count passes.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// One admitted delivery; dropped when it ends.
#[derive(Debug)]
pub(crate) struct Pass(Arc<Gate>);

impl Gate {
    /// A pass, unless the gate is closed.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Pass> {
        let before = self.state.fetch_add(1, Ordering::AcqRel);
        if before & CLOSED != 0 {
            self.leave();
            return None;
        }
        Some(Pass(self.clone()))
    }

    fn leave(&self) {
        let before = self.state.fetch_sub(1, Ordering::AcqRel);
        if before & !CLOSED == 1 {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Closes the gate and waits until no delivery is in flight.
    pub(crate) async fn drain(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.state.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Runs `handler` on `event` (holding `pass`), a panic caught as
/// [`Outcome::Panic`], and shows the outcome to `observer`.
pub(crate) async fn deliver(
    broker: &'static str,
    handler: &dyn Handler,
    event: Event,
    pass: Pass,
    observer: Option<&dyn BrokerObserver>,
) -> Outcome {
    // Only what the outcome's log line and the observer need: the topic is
    // shared (no copy), the clock read only for an observer.
    let started = observer.map(|_| tokio::time::Instant::now());
    let topic = event.topic.clone();
    // What the observer's wrapping sees (headers, topic; the body is shared).
    let seen = observer.map(|_| event.clone());
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(event))) {
        Err(panic) => Outcome::Panic(panic_text(&*panic)),
        Ok(future) => {
            let future = match (observer, &seen) {
                (Some(observer), Some(event)) => observer.handling(broker, event, future),
                _ => future,
            };
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(e)) => Outcome::Error(e.0),
                Err(panic) => Outcome::Panic(panic_text(&*panic)),
            }
        }
    };
    drop(pass);
    if let Some(failure) = outcome.failure() {
        tracing::warn!("Broker [{broker}] {topic}: {failure}");
    }
    if let (Some(observer), Some(started)) = (observer, started) {
        observer.delivered(broker, &topic, &outcome, started.elapsed());
    }
    outcome
}

/// A receive loop's stop signal: one flag and the loop's waker, so that
/// waiting for a message or the stop costs two atomic operations, not a
/// lock (a `watch` channel's waiter list) per message.
#[cfg(feature = "nats")]
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    waker: AtomicWaker,
    /// Set by the loop as it ends ([`Ending`]).
    ended: AtomicBool,
    on_end: Notify,
}

/// Held by a receive loop: dropped as it ends (returned, panicked or
/// aborted), which [`StopSignal::ended`] waits for.
#[cfg(feature = "nats")]
pub(crate) struct Ending(pub(crate) Arc<StopSignal>);

#[cfg(feature = "nats")]
impl Drop for Ending {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Release);
        self.0.on_end.notify_waiters();
    }
}

#[cfg(feature = "nats")]
impl StopSignal {
    /// Stops the loop (wakes it if it waits).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Ready once stopped; else the waker is woken by [`stop`](Self::stop).
    pub(crate) fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_stopped() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until stopped.
    pub(crate) async fn stopped(&self) {
        std::future::poll_fn(|cx| self.poll_stopped(cx)).await
    }

    /// Waits until the loop holding this signal's [`Ending`] ended.
    pub(crate) async fn ended(&self) {
        loop {
            let end = self.on_end.notified();
            tokio::pin!(end);
            end.as_mut().enable();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            end.await;
        }
    }
}

/// A future run in place by its caller; if the caller drops it before it
/// finished (an HTTP client that hung up), the rest runs on a task of its
/// own, so a handler is never cut short (a drain waits for it). No task
/// spawned per message on the usual path.
pub(crate) struct Detached<T: Send + 'static> {
    future: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Detached<T> {
    pub(crate) fn new(future: impl Future<Output = T> + Send + 'static) -> Detached<T> {
        Detached {
            future: Some(Box::pin(future)),
        }
    }
}

impl<T: Send + 'static> Future for Detached<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = future.await;
            });
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_passes_and_closes_the_gate() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().expect("open");
        let drained = tokio::spawn({
            let gate = gate.clone();
            async move { gate.drain().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!drained.is_finished());
        assert!(gate.enter().is_none(), "closed while draining");
        drop(pass);
        drained.await.expect("drained");
    }

    #[cfg(feature = "nats")]
    #[tokio::test(start_paused = true)]
    async fn a_stop_wakes_a_waiting_loop_and_its_end_is_seen() {
        let signal = Arc::new(StopSignal::default());
        let ending = Ending(signal.clone());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.stopped().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished() && !signal.is_stopped());
        signal.stop();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("ran");
        let ended = tokio::spawn({
            let signal = signal.clone();
            async move { signal.ended().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!ended.is_finished(), "the loop still holds its Ending");
        drop(ending);
        tokio::time::timeout(std::time::Duration::from_secs(1), ended)
            .await
            .expect("ended")
            .expect("ran");
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_run_dropped_by_its_caller_runs_to_its_end() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = Detached::new(async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let _ = tx.send("finished");
        });
        // The caller gives up after 1 s (a publisher that hung up).
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(1), run)
                .await
                .is_err()
        );
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(5), rx).await,
            Ok(Ok("finished"))
        );
        // Run to its end in place: its output, nothing left behind.
        assert_eq!(Detached::new(async { 7 }).await, 7);
    }
}
