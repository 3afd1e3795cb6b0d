//! The observe stage ([`Observe`], outermost): starts the
//! [`CallObserver`]'s record of each call, hands it down in the request's
//! extensions ([`Observed`]) so that the attempts below report to it, ends it
//! with the call's answer, and turns a [`ClientError`] into the gRPC status a
//! tonic client sees. Its future ([`ObserveFuture`]) holds the stages below
//! as plain futures: a call through the stack allocates no future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::BoxError;
use crate::call::Observed;
use crate::error::ClientError;
use crate::observer::{CallEnd, CallObserver};
use crate::pool::NodeSet;

/// The outermost stage; see the module docs.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    set: Arc<NodeSet>,
    observer: Option<Arc<dyn CallObserver>>,
}

/// Puts an [`Observe`] over a service: `observer` sees the calls to the
/// service whose nodes are `set`.
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    set: Arc<NodeSet>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl ObserveLayer {
    pub fn new(set: Arc<NodeSet>, observer: Option<Arc<dyn CallObserver>>) -> Self {
        ObserveLayer { set, observer }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            set: self.set.clone(),
            observer: self.observer.clone(),
        }
    }
}

impl<S> Observe<S> {
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S> Service<http::Request<Body>> for Observe<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = ClientError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(ClientError::into_status)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let mut end = None;
        if let Some(observer) = &self.observer {
            // Sees the request before it goes out (trace context).
            let (mut parts, body) = request.into_parts();
            let record = observer.start(&self.set, parts.uri.path(), &mut parts.headers);
            parts.extensions.insert(Observed(record.clone()));
            request = http::Request::from_parts(parts, body);
            end = Some(record);
        }
        ObserveFuture {
            inner: self.inner.call(request),
            end,
        }
    }
}

pin_project! {
    /// The call below, and the observer's record of it, ended with it.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        end: Option<Arc<dyn CallEnd>>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, ClientError>>,
{
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        Poll::Ready(match (this.end.take(), answer) {
            (None, Ok(response)) => Ok(response),
            (Some(end), Ok(response)) => Ok(end.answered(response)),
            (end, Err(error)) => {
                if let Some(end) = end {
                    end.failed(&error);
                }
                Err(error.into_status())
            }
        })
    }
}
