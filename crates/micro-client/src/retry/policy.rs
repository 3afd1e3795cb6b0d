//! Whether a failed attempt may go to another node.
//!
//! A call is retried, on a node not tried yet in this call, when it cannot
//! have been processed (the connection failed before the request was sent,
//! or the server answered `Unavailable`). Calls marked idempotent are also
//! retried after failures where the node may have started the work
//! (connection lost mid-call, an attempt timeout, `Internal`, `Unknown`,
//! `DeadlineExceeded`, `ResourceExhausted`, `Aborted`, `DataLoss`).
//!
//! A call a server shed (`RESOURCE_EXHAUSTED` with admission control's
//! `grpc-retry-pushback-ms` mark: refused unexecuted, over its concurrency
//! limit) is retried on another node whether idempotent or not.

use tonic::Code;

use crate::outcome::Sent;

/// Whether a failed attempt may be tried again elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub idempotent: bool,
}

impl Policy {
    /// After a failure of the node (no answer).
    pub fn retry_failure(self, sent: Sent) -> bool {
        sent == Sent::No || self.idempotent
    }

    /// After a node shed the call unexecuted (over its concurrency limit).
    pub fn retry_shed(self) -> bool {
        true
    }

    /// After an answer with an error status.
    pub fn retry_status(self, code: Code) -> bool {
        match code {
            // The server did not take the request (overloaded, shutting down).
            Code::Unavailable => true,
            // Server-side failures: the work may have started.
            Code::Internal
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DataLoss => self.idempotent,
            // The request itself is at fault, or the answer is final.
            _ => false,
        }
    }
}
