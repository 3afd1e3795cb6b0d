//! The balance stage ([`Balance`]): which node an attempt goes to, by the
//! selector, among the nodes that are up and not tried yet in this call.
//!
//! Not ready until the registry has answered for the service once (or
//! failed to, or `request_timeout` passed): before that no node can be
//! chosen. Then it is always ready; with no node to choose, a request is
//! answered [`Picked::NoNode`] at once.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::attempt::{Attempt, AttemptFuture, AttemptRequest, Outcome};
use crate::endpoint::NodeEntry;
use crate::resolve::NodeSet;

/// A request for one attempt on a node not in `tried`.
#[derive(Debug)]
pub(crate) struct NodeRequest {
    pub(crate) request: http::Request<Body>,
    /// Nodes this call already tried (or is trying).
    pub(crate) tried: Vec<Arc<NodeEntry>>,
    pub(crate) started: Instant,
    /// The call's deadline.
    pub(crate) deadline: Instant,
    /// Whether the attempt timeout applies ([`AttemptRequest::bounded`]).
    pub(crate) bounded: bool,
}

/// What the balance stage did with a [`NodeRequest`].
#[derive(Debug)]
pub(crate) enum Picked {
    /// The attempt ran on `node`.
    Attempted {
        outcome: Outcome,
        node: Arc<NodeEntry>,
    },
    /// No node is up that the call has not tried.
    NoNode,
}

/// Chooses a node for each attempt and hands the request to the attempt
/// stage below it.
pub(crate) struct Balance {
    set: Arc<NodeSet>,
    inner: Attempt,
    /// While the first registry answer is awaited in `poll_ready`. (In a
    /// mutex only so that the service is `Sync`, as tonic's `Channel` is;
    /// `poll_ready` has `&mut self` and never locks it.)
    resolving: Mutex<Option<Resolving>>,
}

type Resolving = Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("service", &self.set.service())
            .finish_non_exhaustive()
    }
}

impl Clone for Balance {
    fn clone(&self) -> Self {
        Balance {
            set: self.set.clone(),
            inner: self.inner.clone(),
            resolving: Mutex::new(None),
        }
    }
}

/// Puts a [`Balance`] over the attempt stage.
#[derive(Clone, Debug)]
pub(crate) struct BalanceLayer {
    set: Arc<NodeSet>,
}

impl BalanceLayer {
    pub(crate) fn new(set: Arc<NodeSet>) -> Self {
        BalanceLayer { set }
    }
}

impl Layer<Attempt> for BalanceLayer {
    type Service = Balance;

    fn layer(&self, inner: Attempt) -> Balance {
        Balance {
            set: self.set.clone(),
            inner,
            resolving: Mutex::new(None),
        }
    }
}

impl Balance {
    pub(crate) fn set(&self) -> &Arc<NodeSet> {
        &self.set
    }
}

impl Service<NodeRequest> for Balance {
    type Response = Picked;
    type Error = Infallible;
    type Future = BalanceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let resolving = self
            .resolving
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.set.is_pending() {
            *resolving = None;
            return Poll::Ready(Ok(()));
        }
        let set = self.set.clone();
        let wait = set.options().request_timeout;
        let future = resolving.get_or_insert_with(|| {
            Box::pin(async move {
                let _ = tokio::time::timeout(wait, set.ready()).await;
            })
        });
        match future.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *resolving = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Chooses the node now; the attempt starts when the future is first
    /// polled ([`BalanceFuture::node`] tells which node it will be).
    fn call(&mut self, request: NodeRequest) -> BalanceFuture {
        let NodeRequest {
            request,
            tried,
            started,
            deadline,
            bounded,
        } = request;
        match self.set.pick(&tried) {
            None => BalanceFuture {
                node: None,
                attempt: None,
            },
            Some(node) => BalanceFuture {
                attempt: Some(self.inner.call(AttemptRequest {
                    node: node.clone(),
                    request,
                    started,
                    deadline,
                    bounded,
                })),
                node: Some(node),
            },
        }
    }
}

pin_project! {
    /// The attempt on the chosen node, if there was one to choose.
    pub(crate) struct BalanceFuture {
        node: Option<Arc<NodeEntry>>,
        #[pin]
        attempt: Option<AttemptFuture>,
    }
}

impl BalanceFuture {
    /// The node chosen (`None`: no node left).
    pub(crate) fn node(&self) -> Option<&Arc<NodeEntry>> {
        self.node.as_ref()
    }
}

impl Future for BalanceFuture {
    type Output = Result<Picked, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(attempt) = this.attempt.as_pin_mut() else {
            return Poll::Ready(Ok(Picked::NoNode));
        };
        let Ok(outcome) = std::task::ready!(attempt.poll(cx));
        let node = this.node.take().expect("an attempt has its node");
        Poll::Ready(Ok(Picked::Attempted { outcome, node }))
    }
}
