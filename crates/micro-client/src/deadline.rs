//! The deadline stage ([`WithDeadline`]): the call's deadline, from the
//! caller's own `grpc-timeout` or `request_timeout`. It bounds every stage
//! below it: the retry stage starts no attempt past it, and each attempt
//! sends the server what is left of it (or less: the attempt timeout) and
//! stops waiting when it passes. No timer of its own: the attempts' timers
//! end at the deadline.

use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::error::ClientError;
use crate::observe::Call;
use crate::timeout;

/// A call with its deadline, for the retry stage.
pub(crate) struct Timed {
    pub(crate) call: Call,
    pub(crate) deadline: Deadline,
}

/// Sets each call's [`Deadline`].
#[derive(Clone, Debug)]
pub(crate) struct WithDeadline<S> {
    inner: S,
    /// When the caller sets none.
    default: Duration,
}

/// Puts a [`WithDeadline`] over a service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeadlineLayer {
    pub(crate) default: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> WithDeadline<S> {
        WithDeadline {
            inner,
            default: self.default,
        }
    }
}

impl<S> WithDeadline<S> {
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S> Service<Call> for WithDeadline<S>
where
    S: Service<Timed, Response = http::Response<Body>, Error = ClientError>,
{
    type Response = http::Response<Body>;
    type Error = ClientError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> S::Future {
        let deadline = Deadline::take(call.request.headers_mut(), self.default);
        self.inner.call(Timed { call, deadline })
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// When the call started.
    pub(crate) started: Instant,
    pub(crate) at: Instant,
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
        }
    }

    pub(crate) fn exceeded(&self, service: &str, attempts: usize) -> ClientError {
        ClientError::Deadline {
            service: service.to_string(),
            budget: self.at - self.started,
            attempts,
        }
    }
}
