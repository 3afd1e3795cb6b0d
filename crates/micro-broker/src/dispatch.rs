//! Running handlers: each delivery through a [`Gate`] (so a subscription
//! can stop and drain), panics caught as failed deliveries, every outcome
//! shown to the observer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
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
    let started = tokio::time::Instant::now();
    let topic = event.topic().to_string();
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
    if let Some(observer) = observer {
        observer.delivered(broker, &topic, &outcome, started.elapsed());
    }
    outcome
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
}
