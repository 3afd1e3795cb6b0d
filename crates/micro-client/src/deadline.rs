//! The call's deadline: the caller's own `grpc-timeout`, or
//! `request_timeout`. It bounds every stage below it; each attempt sends the
//! server what is left of it (or less: the attempt timeout).

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::error::ClientError;
use crate::timeout;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// When the call started.
    pub(crate) started: Instant,
    pub(crate) at: Instant,
    /// The whole budget, for messages.
    pub(crate) budget: Duration,
}

impl Deadline {
    /// Takes the caller's `grpc-timeout` out of `headers` (each attempt sets
    /// its own), falling back to `default`.
    pub(crate) fn take(headers: &mut HeaderMap, default: Duration) -> Deadline {
        let budget = headers
            .remove(timeout::GRPC_TIMEOUT)
            .and_then(|value| timeout::parse(&value))
            .unwrap_or(default);
        let started = Instant::now();
        Deadline {
            started,
            at: started + budget,
            budget,
        }
    }

    pub(crate) fn exceeded(&self, service: &str, attempts: usize) -> ClientError {
        ClientError::Deadline {
            service: service.to_string(),
            budget: self.budget,
            attempts,
        }
    }
}
