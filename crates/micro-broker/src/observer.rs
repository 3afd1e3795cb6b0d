//! The hook telemetry plugs into: every publish, delivery and drop of a
//! broker is shown to a [`BrokerObserver`], which may also add headers to
//! what is published and wrap each handler run (a trace running from the
//! publisher's span to each subscriber's), so this crate links no metrics
//! or tracing library (micro-telemetry implements it, as it does the
//! server's `ServerObserver`).

use std::fmt;
use std::time::Duration;

use crate::{Event, HandlerFuture, Header, Outcome};

/// Sees what a broker does. Every method has a default that does nothing.
pub trait BrokerObserver: Send + Sync + fmt::Debug + 'static {
    /// A message is about to be published on `topic`: add headers to it
    /// (telemetry writes the current trace context as `traceparent`).
    fn publishing(&self, broker: &'static str, topic: &str, header: &mut Header) {
        let _ = (broker, topic, header);
    }

    /// A handler is about to run on `event`: `run` is that run, to wrap
    /// (telemetry runs it in a span continuing the publisher's trace).
    fn handling(&self, broker: &'static str, event: &Event, run: HandlerFuture) -> HandlerFuture {
        let _ = (broker, event);
        run
    }

    /// A publish ended (`ok`: every subscriber took the message).
    fn published(&self, broker: &'static str, topic: &str, ok: bool) {
        let _ = (broker, topic, ok);
    }

    /// A handler ran on a message.
    fn delivered(&self, broker: &'static str, topic: &str, outcome: &Outcome, elapsed: Duration) {
        let _ = (broker, topic, outcome, elapsed);
    }

    /// A message was given up: pushed out of a full retry buffer, or past
    /// its retries.
    fn dropped(&self, broker: &'static str, topic: &str) {
        let _ = (broker, topic);
    }

    /// A message came to a subscription again (a durable backend: its
    /// handler refused it, or it was not acknowledged in time).
    fn redelivered(&self, broker: &'static str, topic: &str) {
        let _ = (broker, topic);
    }

    /// A message was given up after its deliveries (or as unreadable) and
    /// kept on the backend's dead-letter subject.
    fn dead_lettered(&self, broker: &'static str, topic: &str) {
        let _ = (broker, topic);
    }
}
