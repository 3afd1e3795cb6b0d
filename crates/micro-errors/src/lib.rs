//! go-micro's error type: `{"id","code","detail","status"}`.
//!
//! A handler returns one as a gRPC [`Status`] whose code is mapped from the
//! HTTP-style `code` and whose message is the error's JSON, as go-micro v2's
//! gRPC server does; a gateway turns it back into an HTTP response with
//! status = `code` and that JSON as the body.
//!
//! ```
//! use micro_errors::MicroError;
//!
//! let err = MicroError::bad_request("go.micro.api.user", "Name cannot be blank");
//! assert_eq!(
//!     err.to_json(),
//!     r#"{"id":"go.micro.api.user","code":400,"detail":"Name cannot be blank","status":"Bad Request"}"#
//! );
//! let status: tonic::Status = err.clone().into();
//! assert_eq!(status.code(), tonic::Code::InvalidArgument);
//! assert_eq!(MicroError::from_status(&status, "fallback"), err);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// A go-micro error. `code` is an HTTP status code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroError {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub status: String,
}

impl MicroError {
    /// An error with `code`; `status` is the code's HTTP reason phrase.
    pub fn new(id: impl Into<String>, code: i32, detail: impl Into<String>) -> Self {
        MicroError {
            id: id.into(),
            code,
            detail: detail.into(),
            status: reason(code).to_string(),
        }
    }

    pub fn bad_request(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 400, detail)
    }
    pub fn unauthorized(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 401, detail)
    }
    pub fn forbidden(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 403, detail)
    }
    pub fn not_found(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 404, detail)
    }
    pub fn method_not_allowed(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 405, detail)
    }
    pub fn timeout(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 408, detail)
    }
    pub fn conflict(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 409, detail)
    }
    pub fn internal(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 500, detail)
    }

    /// The JSON go-micro writes (keys in go-micro's order).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"id":"","code":{},"detail":"","status":""}}"#,
                self.code
            )
        })
    }

    /// Parses go-micro error JSON; `None` if `text` is not one.
    pub fn parse(text: &str) -> Option<MicroError> {
        let text = text.trim();
        if !text.starts_with('{') {
            return None;
        }
        let err: MicroError = serde_json::from_str(text).ok()?;
        (err.code != 0 || !err.detail.is_empty()).then_some(err)
    }

    /// The micro error a gRPC status carries, or one made from its code and
    /// message (with `id` naming who failed).
    pub fn from_status(status: &Status, id: &str) -> MicroError {
        if let Some(err) = MicroError::parse(status.message()) {
            return err;
        }
        MicroError::new(id, http_code(status.code()), status.message())
    }

    /// The HTTP status for this error (500 when `code` is not a valid one).
    pub fn http_status(&self) -> http::StatusCode {
        u16::try_from(self.code)
            .ok()
            .and_then(|c| http::StatusCode::from_u16(c).ok())
            .filter(|c| c.as_u16() >= 400)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl fmt::Display for MicroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl std::error::Error for MicroError {}

impl From<MicroError> for Status {
    fn from(err: MicroError) -> Status {
        Status::new(grpc_code(err.code), err.to_json())
    }
}

/// go-micro's mapping from HTTP-style codes to gRPC codes.
pub fn grpc_code(code: i32) -> Code {
    match code {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        409 => Code::AlreadyExists,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        500 => Code::Internal,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}

/// The HTTP status a gRPC code stands for.
pub fn http_code(code: Code) -> i32 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::FailedPrecondition => 412,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// The reason phrase go-micro puts in `status`.
pub fn reason(code: i32) -> &'static str {
    u16::try_from(code)
        .ok()
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .and_then(|c| c.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_status() {
        for code in [400, 401, 403, 404, 408, 409, 412, 500, 501, 503] {
            let err = MicroError::new("svc", code, "why");
            let status: Status = err.clone().into();
            assert_eq!(MicroError::from_status(&status, "other"), err, "{code}");
            assert_eq!(err.http_status().as_u16() as i32, code);
        }
    }

    #[test]
    fn plain_statuses_become_micro_errors() {
        let err =
            MicroError::from_status(&Status::not_found("no user huohuo"), "go.micro.srv.user");
        assert_eq!(err.code, 404);
        assert_eq!(err.status, "Not Found");
        assert_eq!(err.id, "go.micro.srv.user");
        assert_eq!(err.detail, "no user huohuo");
    }

    #[test]
    fn garbage_is_not_a_micro_error() {
        for text in ["", "oops", "{", "[]", "{}", r#"{"code":"x"}"#] {
            assert_eq!(MicroError::parse(text), None, "{text}");
        }
        assert_eq!(MicroError::new("x", 0, "").http_status(), 500);
        assert_eq!(MicroError::new("x", 99999, "").http_status(), 500);
    }
}
