//! The deadline stage ([`WithDeadline`]): the call's deadline
//! ([`CallDeadline`], in the request's extensions), from the caller's own
//! `grpc-timeout` or `request_timeout`. It bounds every stage below it: the
//! retry stage starts no attempt past it, and each attempt sends the server
//! what is left of it (or less: the attempt timeout) and stops waiting when
//! it passes. No timer of its own: the attempts' timers end at the deadline.

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::call::CallDeadline;
use crate::timeout;

/// Sets each call's [`CallDeadline`].
#[derive(Clone, Debug)]
pub struct WithDeadline<S> {
    inner: S,
    /// When the caller sets none.
    default: Duration,
}

/// Puts a [`WithDeadline`] over a service: `default` is the deadline of a
/// call whose caller set none.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    default: Duration,
}

impl DeadlineLayer {
    pub fn new(default: Duration) -> Self {
        DeadlineLayer { default }
    }
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
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, B> Service<http::Request<B>> for WithDeadline<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Takes the caller's `grpc-timeout` out of the headers (each attempt
    /// sets its own), falling back to the default.
    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let budget = request
            .headers_mut()
            .remove(timeout::GRPC_TIMEOUT)
            .and_then(|value| timeout::parse(&value))
            .unwrap_or(self.default);
        request.extensions_mut().insert(CallDeadline::after(budget));
        self.inner.call(request)
    }
}
