//! [`ClientError`]: why a call failed on the client's side, typed.
//!
//! A call that a node answered, even with an error status, returns that
//! answer. Everything else — no node, the deadline, a node that failed, the
//! retry budget — is a `ClientError`. It becomes a gRPC [`Status`] in one
//! place ([`ClientError::to_status`]) and travels inside it as the status's
//! source, so an edge (the `micro api` gateway) maps it to HTTP from the type,
//! never from message text: [`ClientError::from_status`].
//!
//! Messages name the service, never a node's id or address: callers may pass
//! them on to people outside. The node is in the error for logs
//! ([`ClientError::node`]).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use micro_registry::Node;
use tonic::{Code, Status};

/// Why a call failed without an answer from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The registry lists no node of the service (or none with a usable
    /// address). `registry_error`: the registry could not be asked.
    NoNode {
        service: String,
        registry: String,
        registry_error: Option<String>,
    },
    /// The registry did not answer the first lookup within the deadline.
    RegistryTimeout {
        service: String,
        registry: String,
        budget: Duration,
    },
    /// The call's deadline passed.
    Deadline {
        service: String,
        budget: Duration,
        attempts: usize,
    },
    /// A node did not answer within the attempt timeout, and the call is not
    /// idempotent, so it was not sent elsewhere.
    AttemptTimeout {
        service: String,
        timeout: Duration,
        node: Node,
    },
    /// A node failed the call (connection refused or lost) and no other
    /// attempt was allowed or possible.
    NodeFailed {
        service: String,
        cause: NodeFailure,
        node: Node,
        attempts: usize,
    },
    /// A retry was due but the retry budget is spent (too many retries
    /// lately: the service is failing, retrying would add load).
    BudgetExhausted {
        service: String,
        /// What the last attempt ran into.
        last: Box<ClientError>,
    },
    /// The request cannot be sent (its body failed).
    BadRequest { service: String, detail: String },
}

/// How a node failed an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeFailure {
    /// No connection: refused, unreachable, or the connect timed out. The
    /// request was not sent.
    Connect(String),
    /// The connection broke or failed after the request may have been sent.
    Connection(String),
    /// No answer within the attempt timeout.
    Timeout(Duration),
    /// TLS could not be set up with the node: its certificate was refused,
    /// it refused ours, it does not speak TLS, or it serves TLS and this
    /// client has none. The request was not sent.
    Tls(String),
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeFailure::Connect(_) => f.write_str("could not connect"),
            NodeFailure::Connection(_) => f.write_str("connection failed during the call"),
            NodeFailure::Timeout(t) => write!(f, "no answer within {t:?}"),
            NodeFailure::Tls(reason) => write!(f, "TLS failed: {reason}"),
        }
    }
}

impl NodeFailure {
    /// The underlying transport error, for logs.
    pub fn detail(&self) -> Option<&str> {
        match self {
            NodeFailure::Connect(d) | NodeFailure::Connection(d) | NodeFailure::Tls(d) => Some(d),
            NodeFailure::Timeout(_) => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoNode {
                service,
                registry,
                registry_error,
            } => {
                write!(
                    f,
                    "service {service}: no nodes found in registry [{registry}]"
                )?;
                if let Some(e) = registry_error {
                    write!(f, " (registry error: {e})")?;
                }
                Ok(())
            }
            ClientError::RegistryTimeout {
                service,
                registry,
                budget,
            } => write!(
                f,
                "service {service}: registry [{registry}] did not answer within {budget:?}"
            ),
            ClientError::Deadline {
                service,
                budget,
                attempts,
            } => write!(
                f,
                "service {service}: deadline of {budget:?} exceeded after {attempts} attempt(s)"
            ),
            ClientError::AttemptTimeout {
                service, timeout, ..
            } => write!(
                f,
                "service {service}: a node did not answer within the attempt timeout of {timeout:?}; \
                 not retried because the call is not idempotent"
            ),
            ClientError::NodeFailed {
                service,
                cause,
                attempts,
                ..
            } => write!(
                f,
                "service {service}: a node failed: {cause} (after {attempts} attempt(s))"
            ),
            ClientError::BudgetExhausted { service, last } => write!(
                f,
                "service {service}: retry budget exhausted (too many retries lately); last attempt: {last}"
            ),
            ClientError::BadRequest { service, detail } => {
                write!(f, "service {service}: cannot send the request: {detail}")
            }
        }
    }
}

impl StdError for ClientError {}

impl ClientError {
    /// The gRPC code of this failure: the one place it is decided.
    pub fn code(&self) -> Code {
        match self {
            ClientError::NoNode { .. }
            | ClientError::NodeFailed { .. }
            | ClientError::BudgetExhausted { .. } => Code::Unavailable,
            ClientError::RegistryTimeout { .. }
            | ClientError::Deadline { .. }
            | ClientError::AttemptTimeout { .. } => Code::DeadlineExceeded,
            ClientError::BadRequest { .. } => Code::Internal,
        }
    }

    /// The status a caller of the channel sees; `self` rides along as its
    /// source (see [`from_status`](Self::from_status)).
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        status.set_source(Arc::new(self.clone()));
        status
    }

    /// The client error inside a status returned by a
    /// [`ServiceChannel`](crate::ServiceChannel), if it is one.
    pub fn from_status(status: &Status) -> Option<&ClientError> {
        let mut source: Option<&(dyn StdError + 'static)> = status.source();
        while let Some(err) = source {
            if let Some(client) = err.downcast_ref::<ClientError>() {
                return Some(client);
            }
            source = err.source();
        }
        None
    }

    /// The service called.
    pub fn service(&self) -> &str {
        match self {
            ClientError::NoNode { service, .. }
            | ClientError::RegistryTimeout { service, .. }
            | ClientError::Deadline { service, .. }
            | ClientError::AttemptTimeout { service, .. }
            | ClientError::NodeFailed { service, .. }
            | ClientError::BudgetExhausted { service, .. }
            | ClientError::BadRequest { service, .. } => service,
        }
    }

    /// The node that failed, if one did (for logs, never for answers).
    /// The error a tonic client sees: this error's gRPC status (which keeps
    /// the error as its source). The node involved goes to the debug log,
    /// never into the status.
    pub fn into_status(self) -> crate::BoxError {
        if let Some(node) = self.node() {
            tracing::debug!(node = %node.id, address = %node.address, "call failed: {self}");
        }
        Box::new(self.to_status())
    }

    pub fn node(&self) -> Option<&Node> {
        match self {
            ClientError::AttemptTimeout { node, .. } | ClientError::NodeFailed { node, .. } => {
                Some(node)
            }
            ClientError::BudgetExhausted { last, .. } => last.node(),
            _ => None,
        }
    }

    /// Whether the deadline (of the call or of an attempt) ran out.
    pub fn is_timeout(&self) -> bool {
        self.code() == Code::DeadlineExceeded
    }
}

/// The whole error chain as text, for logs.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

/// The rustls error somewhere in an error's chain (itself, or inside an
/// I/O error), if any: how a TLS failure is told from others.
pub fn find_rustls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(error);
    while let Some(err) = source {
        if let Some(rustls) = err.downcast_ref::<rustls::Error>() {
            return Some(rustls);
        }
        if let Some(rustls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Some(rustls);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn travels_inside_its_status_and_names_no_node() {
        let err = ClientError::NodeFailed {
            service: "svc".into(),
            cause: NodeFailure::Connection("h2 protocol error at 10.0.0.7:4242".into()),
            node: Node::new("svc-1234", "10.0.0.7:4242"),
            attempts: 2,
        };
        let status = err.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            !status.message().contains("10.0.0.7"),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("svc-1234"),
            "{}",
            status.message()
        );
        assert_eq!(ClientError::from_status(&status), Some(&err));
        assert_eq!(ClientError::from_status(&Status::unavailable("x")), None);
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(status);
        let back = Status::from_error(boxed);
        assert_eq!(ClientError::from_status(&back), Some(&err));
    }
}
