//! Every failure becomes go-micro's error JSON, `{"id","code","detail","status"}`,
//! with HTTP status = `code`, in one place.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use micro_client::ClientError;
use micro_errors::MicroError;
use tonic::{Code, Status};

/// The mark of a call a server shed unexecuted (`micro_server::PUSHBACK`).
const SHED_MARK: &str = "grpc-retry-pushback-ms";

/// The `id` of errors the gateway itself produces, as go-micro's.
pub const GATEWAY_ID: &str = "go.micro.api";

/// An error answered to the HTTP client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError(pub MicroError);

impl ApiError {
    /// A gateway error with HTTP-style `code`.
    pub fn new(code: u16, detail: impl Into<String>) -> Self {
        ApiError(MicroError::new(GATEWAY_ID, i32::from(code), detail))
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, detail)
    }

    /// 413, the one wording for a body over the limit.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(413, format!("request body larger than {limit} bytes"))
    }

    /// What a failed call to `service` endpoint `endpoint` means to the HTTP
    /// client: the service's own micro error passes through unchanged; an
    /// unknown endpoint is 404; the client's own failures map by their type
    /// ([`from_client`](Self::from_client)).
    pub fn from_call(status: &Status, service: &str, endpoint: &str) -> Self {
        if let Some(err) = ClientError::from_status(status) {
            return Self::from_client(err);
        }
        if let Some(err) = MicroError::parse(status.message()) {
            return ApiError(err);
        }
        match status.code() {
            Code::Unimplemented => {
                let mut detail = format!("service {service} has no endpoint {endpoint}");
                if !status.message().is_empty() {
                    detail.push_str(": ");
                    detail.push_str(status.message());
                }
                ApiError(MicroError::new(service, 404, detail))
            }
            Code::Unavailable => ApiError(MicroError::new(service, 503, status.message())),
            // Shed by every node tried (admission control's mark): the
            // service is overloaded, not the caller rate limited (429).
            Code::ResourceExhausted if status.metadata().contains_key(SHED_MARK) => {
                ApiError(MicroError::new(service, 503, status.message()))
            }
            Code::DeadlineExceeded => ApiError(MicroError::new(service, 504, status.message())),
            _ => ApiError(MicroError::from_status(status, service)),
        }
    }

    /// The client's failure as HTTP, decided here only: no node, a node
    /// failed, retries spent → 503; a deadline (the call's or an attempt's)
    /// → 504. The answer names the service, never a node: the node and its
    /// address are logged under the request id the answer carries.
    pub fn from_client(err: &ClientError) -> Self {
        let code: u16 = match err {
            ClientError::RegistryTimeout { .. }
            | ClientError::Deadline { .. }
            | ClientError::AttemptTimeout { .. } => 504,
            ClientError::BadRequest { .. } => 500,
            // NoNode, NodeFailed, BudgetExhausted, and any later kind.
            _ => 503,
        };
        let request_id = format!("{:016x}", fastrand::u64(..));
        match err.node() {
            Some(node) => tracing::warn!(
                request_id,
                service = err.service(),
                node = %node.id,
                address = %node.address,
                "call failed: {err}"
            ),
            None => tracing::warn!(request_id, service = err.service(), "call failed: {err}"),
        }
        ApiError(MicroError::new(
            err.service(),
            i32::from(code),
            format!("{err} (request id {request_id})"),
        ))
    }

    pub fn code(&self) -> u16 {
        self.0.http_status().as_u16()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ApiError {}

impl From<MicroError> for ApiError {
    fn from(err: MicroError) -> Self {
        ApiError(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.0.to_json()));
        *response.status_mut() = self.0.http_status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Longest piece of a request echoed in an error answer.
const MAX_ECHO: usize = 96;

/// `text` quoted for an error answer, cut to [`MAX_ECHO`] bytes: no user
/// input is echoed unbounded.
pub(crate) fn shown(text: &str) -> String {
    if text.len() <= MAX_ECHO {
        return format!("{text:?}");
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shed_is_503_and_an_application_resource_exhausted_stays_429() {
        let mut shed = Status::resource_exhausted("server overloaded");
        shed.metadata_mut()
            .insert(SHED_MARK, tonic::metadata::MetadataValue::from(3u64));
        assert_eq!(ApiError::from_call(&shed, "svc", "A.B").code(), 503);
        let quota = Status::resource_exhausted("quota spent");
        assert_eq!(ApiError::from_call(&quota, "svc", "A.B").code(), 429);
    }
}
