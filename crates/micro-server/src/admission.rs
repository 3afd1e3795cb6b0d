//! Admission control in front of a server's handlers
//! ([`ServerOptions::max_concurrent`](crate::ServerOptions::max_concurrent),
//! `--server_max_concurrent`; the limiter is [`micro_serve::admission`]).
//!
//! A unary call over the limit is answered at once, without reaching its
//! handler: `RESOURCE_EXHAUSTED`, with a [`PUSHBACK`] header in the
//! trailers-only answer. That header is the mark a client trusts: a shed
//! call was not executed, so it may go to another node even when it is not
//! idempotent (`micro-client` does), where a handler's own
//! `RESOURCE_EXHAUSTED` (no mark) may have done work.
//!
//! A call whose `grpc-timeout` has already run out when it would start
//! (`0` of any unit) is answered `DEADLINE_EXCEEDED` and not started either.
//!
//! Streams, health checks and reflection are not limited: a stream's
//! length is not a measure of the server's load, and a probe must see the
//! server as it is, busy or not.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue};
use micro_serve::admission::{Admission, Permit, Refusal};
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// The mark of a shed call (gRPC's retry pushback: milliseconds after which
/// the server may have room again).
pub const PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The layer; the server puts it after its path rewriting, so it sees the
/// paths it serves.
#[derive(Clone, Debug)]
pub(crate) struct AdmissionLayer {
    admission: Arc<Admission>,
    /// Paths not limited: streaming methods (health and reflection go by
    /// their prefix).
    exempt: Arc<HashSet<String>>,
}

impl AdmissionLayer {
    pub(crate) fn new(admission: Arc<Admission>, streams: HashSet<String>) -> Self {
        AdmissionLayer {
            admission,
            exempt: Arc::new(streams),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] makes.
#[derive(Clone, Debug)]
pub(crate) struct Admit<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S> Service<http::Request<Body>> for Admit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.") || self.layer.exempt.contains(path) {
            return AdmitFuture::Admitted {
                inner: self.inner.call(request),
                permit: None,
            };
        }
        if request
            .headers()
            .get(GRPC_TIMEOUT)
            .is_some_and(|timeout| expired(timeout.as_bytes()))
        {
            self.layer.admission.refused(Refusal::Expired);
            let status = Status::deadline_exceeded("the call's deadline passed before it started");
            return AdmitFuture::Refused {
                response: Some(status.into_http()),
            };
        }
        match self.layer.admission.try_acquire() {
            Ok(permit) => AdmitFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(shed) => {
                let status = Status::resource_exhausted(format!(
                    "server overloaded: {} calls in flight, the limit; not started, try another node",
                    shed.limit
                ));
                let mut response: http::Response<Body> = status.into_http();
                let millis = shed.retry_after.as_millis().max(1) as u64;
                response
                    .headers_mut()
                    .insert(PUSHBACK, HeaderValue::from(millis));
                AdmitFuture::Refused {
                    response: Some(response),
                }
            }
        }
    }
}

/// A `grpc-timeout` of nothing left: digits all zero, and a unit.
fn expired(value: &[u8]) -> bool {
    match value.split_last() {
        Some((unit, digits)) => {
            b"HMSmun".contains(unit) && !digits.is_empty() && digits.iter().all(|d| *d == b'0')
        }
        None => false,
    }
}

pin_project! {
    /// An admitted call (holding its permit until its handler answers), or
    /// a refusal.
    #[project = AdmitProj]
    pub(crate) enum AdmitFuture<F> {
        Admitted {
            #[pin]
            inner: F,
            permit: Option<Permit>,
        },
        Refused {
            response: Option<http::Response<Body>>,
        },
    }
}

impl<F, E> Future for AdmitFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Admitted { inner, permit } => {
                let answer = std::task::ready!(inner.poll(cx));
                // The handler answered: its slot is free (a unary answer's
                // body is already made).
                permit.take();
                Poll::Ready(answer)
            }
            AdmitProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("a refusal is polled once after it is ready"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expired;

    #[test]
    fn only_a_zero_timeout_has_expired() {
        for passed in ["0n", "0u", "0m", "0S", "00000000M", "0H"] {
            assert!(expired(passed.as_bytes()), "{passed}");
        }
        for left in ["1n", "10m", "5S", "", "m", "0x", "abc"] {
            assert!(!expired(left.as_bytes()), "{left}");
        }
    }
}
