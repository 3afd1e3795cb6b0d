//! The telemetry hook of the client: a [`CallObserver`] given to
//! [`Client::with_observer`](crate::Client::with_observer) sees every call
//! through the client's channels, outermost, before anything else runs and
//! after everything is done.
//!
//! It is where metrics (`micro_client_requests_total{service,endpoint,code}`,
//! `micro_client_attempts_total{service,outcome}`) and trace context
//! propagation (a W3C `traceparent` header) plug in, without the client
//! depending on a metrics or tracing crate. Node counts per state
//! (`micro_client_nodes{service,state}`) come from
//! [`Client::node_states`](crate::Client::node_states).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use micro_client::observer::{AttemptResult, CallEnd, CallObserver};
//! use micro_client::NodeSet;
//!
//! #[derive(Debug, Default)]
//! struct Counts { calls: AtomicU64, failed_attempts: Arc<AtomicU64> }
//!
//! impl CallObserver for Counts {
//!     fn start(&self, _nodes: &NodeSet, _path: &str, _headers: &mut http::HeaderMap)
//!         -> Arc<dyn CallEnd> {
//!         self.calls.fetch_add(1, Ordering::Relaxed);
//!         Arc::new(Call(self.failed_attempts.clone()))
//!     }
//! }
//!
//! /// One call: its attempts are counted with the call's own state.
//! struct Call(Arc<AtomicU64>);
//!
//! impl CallEnd for Call {
//!     fn attempt(&self, result: AttemptResult) {
//!         if result != AttemptResult::Answered {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use tonic::body::Body;

use crate::error::{ClientError, NodeFailure};
use crate::outcome::Outcome;
use crate::pool::NodeSet;

/// How one attempt ended, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptResult {
    /// The node answered (with a success or an error status other than
    /// `Unavailable`).
    Answered,
    /// The node answered `Unavailable`.
    Unavailable,
    /// No connection to the node.
    ConnectFailed,
    /// The connection broke during the attempt.
    ConnectionFailed,
    /// No answer within the attempt timeout.
    Timeout,
    /// The call's deadline passed during the attempt.
    Deadline,
    /// A hedged call's other attempt answered first; this one was dropped.
    Cancelled,
    /// The node shed the request unexecuted (over its concurrency limit).
    Shed,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Answered => "answered",
            AttemptResult::Unavailable => "unavailable",
            AttemptResult::ConnectFailed => "connect_failed",
            AttemptResult::ConnectionFailed => "connection_failed",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Deadline => "deadline",
            AttemptResult::Cancelled => "cancelled",
            AttemptResult::Shed => "shed",
        }
    }

    /// The label of an attempt's outcome.
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Answered { status, .. } if *status == Some(tonic::Code::Unavailable) => {
                AttemptResult::Unavailable
            }
            Outcome::Answered { .. } => AttemptResult::Answered,
            Outcome::Failed { failure, .. } => match failure {
                NodeFailure::Connect(_) | NodeFailure::Tls(_) => AttemptResult::ConnectFailed,
                NodeFailure::Connection(_) => AttemptResult::ConnectionFailed,
                NodeFailure::Timeout(_) => AttemptResult::Timeout,
            },
            Outcome::Deadline => AttemptResult::Deadline,
            Outcome::Shed { .. } => AttemptResult::Shed,
        }
    }
}

impl fmt::Display for AttemptResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Watches calls; every method has a default that does nothing.
pub trait CallObserver: Send + Sync + fmt::Debug + 'static {
    /// A call of `path` (`/package.Service/Method`) through `nodes` begins:
    /// add headers (trace context) to the request here. The returned
    /// [`CallEnd`] sees the call's attempts and how it ends, so it can carry
    /// per-call state (a start time, a span, the call's metrics resolved
    /// once).
    fn start(&self, nodes: &NodeSet, path: &str, headers: &mut HeaderMap) -> Arc<dyn CallEnd> {
        let _ = (nodes, path, headers);
        Arc::new(())
    }
}

/// The rest of one observed call; see [`CallObserver::start`].
pub trait CallEnd: Send + Sync + 'static {
    /// After each attempt on a node.
    fn attempt(&self, result: AttemptResult) {
        let _ = result;
    }

    /// The call was answered. Its gRPC status may be in the headers or, as
    /// usual, in the trailers: wrap the body to see them.
    fn answered(self: Arc<Self>, response: http::Response<Body>) -> http::Response<Body> {
        response
    }

    /// The call failed in the client (no node, deadline, node failures...).
    fn failed(self: Arc<Self>, error: &ClientError) {
        let _ = error;
    }
}

impl CallEnd for () {}
