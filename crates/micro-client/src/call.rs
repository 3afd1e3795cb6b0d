//! Per-call state, carried down the stack in the request's extensions: each
//! stage reads what the stages above it put there and imports none of them.
//!
//! | extension | put by | read by |
//! | --- | --- | --- |
//! | [`Idempotent`] | the caller | retry |
//! | [`Streaming`] | the caller, or deadline (the registry lists the endpoint as a stream) | deadline, retry |
//! | [`Observed`] | observe | retry (each attempt's result) |
//! | [`CallDeadline`] | deadline | retry |
//! | [`AttemptContext`] | retry (balance fills in the node) | balance, attempt |
//!
//! A stage finds defaults when a stage above it is missing: no deadline is
//! a deadline far off, no attempt context an attempt bounded by the attempt
//! timeout on a node the balance stage chooses among all.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::endpoint::NodeEntry;
use crate::error::ClientError;
use crate::observer::CallEnd;

/// Marks a call as safe to run twice, so it is retried after any failure of
/// the node, not only when the request cannot have reached it, and may be
/// hedged.
///
/// ```
/// # use micro_client::Idempotent;
/// let mut request = tonic::Request::new(());
/// request.extensions_mut().insert(Idempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Idempotent;

/// Marks a call as a stream (server-, client- or bidi-streaming), which
/// may last far longer than a unary call. The [`deadline`](crate::deadline)
/// stage marks every call to an endpoint registered as a stream; callers
/// mark theirs for services that register no endpoints.
///
/// - its deadline is the caller's own `grpc-timeout`, else the client's
///   `stream_timeout`, else none (no `grpc-timeout` is sent: grpc-go servers
///   apply it to the whole stream, as go-micro's `StreamTimeout` default of
///   0 does not);
/// - no attempt timeout: the node may take its time to the first message;
/// - a node that cannot be reached is replaced by another before anything is
///   sent; once the stream is open nothing is retried;
/// - the node's load counts the stream until its reply body ends.
///
/// ```
/// # use micro_client::Streaming;
/// let mut request = tonic::Request::new(());
/// request.extensions_mut().insert(Streaming);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streaming;

/// The observer's record of a call, for the stages that report to it.
#[derive(Clone)]
pub struct Observed(pub Arc<dyn CallEnd>);

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observed")
    }
}

/// The deadline of a whole call, retries included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallDeadline {
    /// When the call started.
    pub started: Instant,
    pub at: Instant,
}

/// How far off "no deadline" is: a year (an `Instant` cannot hold more on
/// every platform).
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

impl CallDeadline {
    /// A call starting now with `budget` to run.
    pub fn after(budget: Duration) -> CallDeadline {
        let started = Instant::now();
        CallDeadline {
            started,
            at: started.checked_add(budget).unwrap_or(started + FAR),
        }
    }

    /// A call without a deadline.
    pub fn none() -> CallDeadline {
        CallDeadline::after(FAR)
    }

    /// Whether this is [`CallDeadline::none`] (or as far off).
    pub fn is_none(&self) -> bool {
        is_far(self.started, self.at)
    }

    /// The time the call had.
    pub fn budget(&self) -> Duration {
        self.at - self.started
    }

    /// The error of a call whose deadline passed after `attempts` attempts.
    pub fn exceeded(&self, service: &str, attempts: usize) -> ClientError {
        ClientError::Deadline {
            service: service.to_string(),
            budget: self.budget(),
            attempts,
        }
    }
}

/// Whether `at` is "no deadline" for a call started at `from`.
pub(crate) fn is_far(from: Instant, at: Instant) -> bool {
    at.saturating_duration_since(from) >= FAR / 2
}

/// One attempt: when it starts, what bounds it, where it may not go, and
/// (once the balance stage chose) its node.
#[derive(Clone, Debug)]
pub struct AttemptContext {
    /// When the attempt starts (its latency is measured from here).
    pub started: Instant,
    /// The call's deadline.
    pub deadline: Instant,
    /// Whether `attempt_timeout` bounds the attempt. Not for an idempotent
    /// call's last possible attempt (no other node, or no retry left): it
    /// gains nothing from giving up early, and an attempt timeout there
    /// would only cut short a caller upstream that is itself retrying.
    pub bounded: bool,
    /// A [`Streaming`] call: the node's load counts it until its reply ends.
    pub streaming: bool,
    /// Nodes this call already tried (or is trying).
    pub tried: Vec<Arc<NodeEntry>>,
    /// The node chosen for the attempt.
    pub node: Option<Arc<NodeEntry>>,
}

impl AttemptContext {
    /// When the attempt's time runs out: `timeout` after it starts when the
    /// attempt timeout bounds it, never after the call's deadline.
    pub fn until(&self, timeout: Duration) -> Instant {
        if self.bounded {
            (self.started + timeout).min(self.deadline)
        } else {
            self.deadline
        }
    }

    /// A single attempt bounded by the attempt timeout, starting now: what
    /// a stage finds when no retry stage is above it.
    pub fn single(deadline: Instant) -> AttemptContext {
        AttemptContext {
            started: Instant::now(),
            deadline,
            bounded: true,
            streaming: false,
            tried: Vec::new(),
            node: None,
        }
    }
}
