//! What can go wrong turning JSON into a call and the reply back into JSON.
//!
//! [`Error`] says what failed ([`ErrorKind`]) and, where the failure belongs
//! to a service, which one. It knows nothing of HTTP: the gateway and the CLI
//! each map it once, usually through [`Error::to_micro_error`].

use micro_errors::MicroError;
use tonic::Status;

/// The kinds of failure, each with the go-micro error code it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The JSON (or query string) does not fit the request message (400).
    BadInput,
    /// The service has no such endpoint (404).
    NoEndpoint,
    /// The call cannot be made with JSON: a streaming endpoint (501).
    Unsupported,
    /// The service serves no gRPC reflection, and its schema is needed (501).
    NoReflection,
    /// The service's schema or reply could not be used (502).
    BadReply,
    /// No node could take the call (503).
    Unavailable,
    /// The deadline passed (504).
    Timeout,
    /// The call itself failed with a gRPC status: see [`Error::status`].
    Call,
}

impl ErrorKind {
    /// The go-micro (HTTP-style) code of this kind; a [`ErrorKind::Call`]
    /// takes its code from the status instead.
    pub fn code(self) -> i32 {
        match self {
            ErrorKind::BadInput => 400,
            ErrorKind::NoEndpoint => 404,
            ErrorKind::Unsupported | ErrorKind::NoReflection => 501,
            ErrorKind::BadReply => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Call => 500,
        }
    }
}

/// A failed JSON call or transcoding.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{detail}")]
pub struct Error {
    kind: ErrorKind,
    service: Option<String>,
    endpoint: Option<String>,
    detail: String,
    status: Option<Box<Status>>,
}

impl Error {
    /// A failure of `kind`, not attributed to a service.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            service: None,
            endpoint: None,
            detail: detail.into(),
            status: None,
        }
    }

    /// Malformed or unfitting input.
    pub fn bad_input(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, detail)
    }

    /// A failure attributed to `service` (go-micro errors then carry its
    /// name as their `id`).
    pub fn of_service(kind: ErrorKind, service: &str, detail: impl Into<String>) -> Self {
        Error {
            service: Some(service.to_string()),
            ..Self::new(kind, detail)
        }
    }

    /// The call to `service` endpoint `endpoint` failed with `status`.
    pub fn call(status: Status, service: &str, endpoint: &str) -> Self {
        Error {
            kind: ErrorKind::Call,
            service: Some(service.to_string()),
            endpoint: Some(endpoint.to_string()),
            detail: status.message().to_string(),
            status: Some(Box::new(status)),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The service the failure belongs to, if any.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The endpoint (or gRPC path) of a failed call.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The gRPC status of a failed call ([`ErrorKind::Call`]).
    pub fn status(&self) -> Option<&Status> {
        self.status.as_deref()
    }

    /// As a go-micro error: a service's own micro error passes through
    /// unchanged; otherwise `id` is the service (or `default_id` when none),
    /// `code` the kind's (or the status's).
    pub fn to_micro_error(&self, default_id: &str) -> MicroError {
        let id = self.service.as_deref().unwrap_or(default_id);
        match &self.status {
            Some(status) => MicroError::parse(status.message())
                .unwrap_or_else(|| MicroError::from_status(status, id)),
            None => MicroError::new(id, self.kind.code(), self.detail.clone()),
        }
    }
}
