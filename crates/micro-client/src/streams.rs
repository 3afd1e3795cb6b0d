//! The stream stage ([`MarkStreams`]): marks a call to an endpoint the
//! registry lists as a stream [`Streaming`], so that the stages below treat
//! it as one (no attempt timeout, no `grpc-timeout` unless the caller or
//! `stream_timeout` sets one, never run twice, counted in its node's load
//! while open) whoever made the call: a tonic-generated client knows its
//! method streams, but says so to no one below it.
//!
//! go-micro's servers and ours register each streaming method's endpoint
//! with metadata `"stream": "true"`; the node set keeps those of its
//! service ([`NodeSet::is_stream`]). A call to a service without stream
//! endpoints costs one atomic load here, and none allocates.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::call::Streaming;
use crate::pool::NodeSet;

/// Marks calls to the stream endpoints of `set`'s service [`Streaming`].
#[derive(Clone, Debug)]
pub struct MarkStreams<S> {
    inner: S,
    set: Arc<NodeSet>,
}

/// Puts a [`MarkStreams`] over a service: calls to stream endpoints of the
/// service whose nodes are `set`.
#[derive(Clone, Debug)]
pub struct MarkStreamsLayer {
    set: Arc<NodeSet>,
}

impl MarkStreamsLayer {
    pub fn new(set: Arc<NodeSet>) -> Self {
        MarkStreamsLayer { set }
    }
}

impl<S> Layer<S> for MarkStreamsLayer {
    type Service = MarkStreams<S>;

    fn layer(&self, inner: S) -> MarkStreams<S> {
        MarkStreams {
            inner,
            set: self.set.clone(),
        }
    }
}

impl<S> MarkStreams<S> {
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, B> Service<http::Request<B>> for MarkStreams<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    /// The stages below wait for the registry's first answer, so a call
    /// made once ready finds the service's endpoints known.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        if self.set.is_stream(request.uri().path()) {
            request.extensions_mut().insert(Streaming);
        }
        self.inner.call(request)
    }
}
