//! The deadline stage ([`WithDeadline`]): the call's deadline
//! ([`CallDeadline`], in the request's extensions), from the caller's own
//! `grpc-timeout` or `request_timeout`. It bounds every stage below it: the
//! retry stage starts no attempt past it, and each attempt sends the server
//! what is left of it (or less: the attempt timeout) and stops waiting when
//! it passes. No timer of its own: the attempts' timers end at the deadline.

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::call::{CallDeadline, Streaming};
use crate::timeout;

/// Sets each call's [`CallDeadline`].
#[derive(Clone, Debug)]
pub struct WithDeadline<S> {
    inner: S,
    /// When the caller sets none.
    default: Duration,
    /// A [`Streaming`] call's, when the caller sets none (`None`: no deadline).
    stream: Option<Duration>,
}

/// Puts a [`WithDeadline`] over a service: `default` is the deadline of a
/// call whose caller set none.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    default: Duration,
    stream: Option<Duration>,
}

impl DeadlineLayer {
    pub fn new(default: Duration) -> Self {
        DeadlineLayer {
            default,
            stream: None,
        }
    }

    /// The deadline of a [`Streaming`] call whose caller set none (`None`,
    /// the default: no deadline).
    pub fn stream_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stream = timeout;
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> WithDeadline<S> {
        WithDeadline {
            inner,
            default: self.default,
            stream: self.stream,
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
    /// sets its own), falling back to the default (a stream's own).
    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let budget = request
            .headers_mut()
            .remove(timeout::GRPC_TIMEOUT)
            .and_then(|value| timeout::parse(&value));
        let deadline = match budget {
            Some(budget) => CallDeadline::after(budget),
            None if request.extensions().get::<Streaming>().is_some() => self
                .stream
                .map_or_else(CallDeadline::none, CallDeadline::after),
            None => CallDeadline::after(self.default),
        };
        request.extensions_mut().insert(deadline);
        self.inner.call(request)
    }
}
