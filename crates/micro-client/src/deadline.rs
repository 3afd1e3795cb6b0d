//! The deadline stage ([`WithDeadline`]): the call's deadline
//! ([`CallDeadline`], in the request's extensions), from the caller's own
//! `grpc-timeout` or `request_timeout`. It bounds every stage below it: the
//! retry stage starts no attempt past it, and each attempt sends the server
//! what is left of it (or less: the attempt timeout) and stops waiting when
//! it passes. No timer of its own: the attempts' timers end at the deadline.
//!
//! A stream's deadline is another (`stream_timeout`, none by default), so
//! this stage also marks a call to an endpoint the registry lists as a
//! stream [`Streaming`], so that the stages below treat it as one (no
//! attempt timeout, never run twice, counted in its node's load while
//! open) whoever made the call: a tonic-generated client knows its method
//! streams, but says so to no one below it. go-micro's servers and ours
//! register each streaming method's endpoint with metadata
//! `"stream": "true"`; the node set keeps those of its service
//! ([`NodeSet::is_stream`]). A call to a service without stream endpoints
//! costs one atomic load for this, and none allocates.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::call::{CallDeadline, Streaming};
use crate::pool::NodeSet;
use crate::timeout;

/// Sets each call's [`CallDeadline`].
#[derive(Clone, Debug)]
pub struct WithDeadline<S> {
    inner: S,
    /// When the caller sets none.
    default: Duration,
    /// A [`Streaming`] call's, when the caller sets none (`None`: no deadline).
    stream: Option<Duration>,
    /// Whose stream endpoints are marked [`Streaming`].
    streams_of: Option<Arc<NodeSet>>,
}

/// Puts a [`WithDeadline`] over a service: `default` is the deadline of a
/// call whose caller set none.
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    default: Duration,
    stream: Option<Duration>,
    streams_of: Option<Arc<NodeSet>>,
}

impl DeadlineLayer {
    pub fn new(default: Duration) -> Self {
        DeadlineLayer {
            default,
            stream: None,
            streams_of: None,
        }
    }

    /// The deadline of a [`Streaming`] call whose caller set none (`None`,
    /// the default: no deadline).
    pub fn stream_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stream = timeout;
        self
    }

    /// Marks calls to the stream endpoints of the service whose nodes are
    /// `set` [`Streaming`] (see the module docs).
    pub fn streams_of(mut self, set: Arc<NodeSet>) -> Self {
        self.streams_of = Some(set);
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
            streams_of: self.streams_of.clone(),
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

    /// Marks a call to a listed stream endpoint [`Streaming`]; takes the
    /// caller's `grpc-timeout` out of the headers (each attempt sets its
    /// own), falling back to the default (a stream's own).
    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let listed = self
            .streams_of
            .as_ref()
            .is_some_and(|set| set.is_stream(request.uri().path()));
        if listed {
            request.extensions_mut().insert(Streaming);
        }
        let budget = request
            .headers_mut()
            .remove(timeout::GRPC_TIMEOUT)
            .and_then(|value| timeout::parse(&value));
        let deadline = match budget {
            Some(budget) => CallDeadline::after(budget),
            None if listed || request.extensions().get::<Streaming>().is_some() => self
                .stream
                .map_or_else(CallDeadline::none, CallDeadline::after),
            None => CallDeadline::after(self.default),
        };
        request.extensions_mut().insert(deadline);
        self.inner.call(request)
    }
}
