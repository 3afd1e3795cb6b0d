//! The hook telemetry plugs into: every publish, delivery and drop of a
//! broker is shown to a [`BrokerObserver`], so this crate links no metrics
//! library (micro-telemetry implements it, as it does the server's
//! `ServerObserver`).

use std::fmt;
use std::time::Duration;

use crate::Outcome;

/// Sees what a broker does. Every method has a default that does nothing.
pub trait BrokerObserver: Send + Sync + fmt::Debug + 'static {
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
}
