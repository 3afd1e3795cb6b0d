//! The balance stage ([`Balance`]): which node an attempt goes to, chosen by
//! the [`Selector`] among the nodes of the pool that are up and not tried
//! yet in this call (the [`AttemptContext`]'s `tried`); the choice goes down
//! in the same context for the stage below, and up with the outcome
//! ([`Attempted`]).
//!
//! Not ready until the registry has answered for the service once (or
//! failed to, or the wait passed): before that no node can be chosen. With
//! no node, readiness asks the registry whether one was registered that the
//! pool's watch has not brought yet, and waits for it (within the same
//! wait). Then it is ready; with no node to choose, an attempt fails at once with
//! [`ClientError::NoNode`] (or [`ClientError::RegistryTimeout`] if the
//! registry never answered), which its future tells before it runs
//! ([`Picked`]).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use micro_selector::Selector;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::call::AttemptContext;
use crate::endpoint::NodeEntry;
use crate::error::ClientError;
use crate::outcome::{Attempted, NodeCount, Outcome, Picked};
use crate::pool::NodeSet;

/// Chooses a node for each attempt and hands the request to the stage
/// below it.
pub struct Balance<S> {
    /// One pointer: the stage is cloned into every call's future.
    shared: Arc<Shared>,
    inner: S,
    /// While the first registry answer is awaited in `poll_ready`. (In a
    /// mutex only so that the service is `Sync`, as tonic's `Channel` is;
    /// `poll_ready` has `&mut self` and never locks it.)
    resolving: Mutex<Option<Resolving>>,
}

type Resolving = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug)]
struct Shared {
    set: Arc<NodeSet>,
    selector: Arc<Selector>,
    /// How long readiness waits for the registry's first answer.
    wait: Duration,
}

impl<S> fmt::Debug for Balance<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("service", &self.shared.set.service())
            .field("selector", &self.shared.selector.strategy())
            .finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for Balance<S> {
    fn clone(&self) -> Self {
        Balance {
            shared: self.shared.clone(),
            inner: self.inner.clone(),
            resolving: Mutex::new(None),
        }
    }
}

/// Puts a [`Balance`] over a service: nodes of `set`, chosen by `selector`;
/// readiness waits at most `wait` for the registry's first answer.
#[derive(Clone, Debug)]
pub struct BalanceLayer {
    shared: Arc<Shared>,
}

impl BalanceLayer {
    pub fn new(set: Arc<NodeSet>, selector: Arc<Selector>, wait: Duration) -> Self {
        BalanceLayer {
            shared: Arc::new(Shared {
                set,
                selector,
                wait,
            }),
        }
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance {
            shared: self.shared.clone(),
            inner,
            resolving: Mutex::new(None),
        }
    }
}

impl<S> NodeCount for Balance<S> {
    fn node_count(&self) -> usize {
        self.shared.set.len()
    }
}

/// The node for the next attempt: not in `tried`, and up; failing that, one
/// that is down or ejected (better a slim chance than none).
pub(crate) fn pick(
    selector: &Selector,
    set: &NodeSet,
    tried: &[Arc<NodeEntry>],
) -> Option<Arc<NodeEntry>> {
    let entries = set.entries();
    let untried = |e: &Arc<NodeEntry>| {
        !tried
            .iter()
            .any(|t| Arc::ptr_eq(t, e) || t.node.id == e.node.id)
    };
    let cost = |e: &Arc<NodeEntry>| e.load().cost();
    selector
        .select_by_load(&entries, |e| untried(e) && e.is_up(), cost)
        .or_else(|| selector.select_by_load(&entries, untried, cost))
        .cloned()
}

impl<S, B> Service<http::Request<B>> for Balance<S>
where
    S: Service<http::Request<B>, Response = Outcome, Error = Infallible>,
{
    type Response = Attempted;
    type Error = ClientError;
    type Future = BalanceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        let resolving = self
            .resolving
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Not pending, and nodes to choose from: ready.
        if !self.shared.set.is_pending() && !self.shared.set.is_empty() {
            *resolving = None;
            return match ready!(self.inner.poll_ready(cx)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(never) => match never {},
            };
        }
        let set = self.shared.set.clone();
        let wait = self.shared.wait;
        // Waits for the registry's first answer, or, with no node, asks it
        // whether a node is on its way (see `NodeSet::catch_up`).
        let future = resolving.get_or_insert_with(|| {
            Box::pin(async move {
                let started = tokio::time::Instant::now();
                if set.is_pending() {
                    let _ = tokio::time::timeout(wait, set.ready()).await;
                }
                set.catch_up(wait.saturating_sub(started.elapsed())).await;
            })
        });
        ready!(future.as_mut().poll(cx));
        *resolving = None;
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(never) => match never {},
        }
    }

    /// Chooses the node now; the attempt starts when the future is first
    /// polled ([`Picked::node`] tells which node it will be).
    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if self.shared.set.is_pending() {
            // Readiness waited as long as it may for the registry.
            return BalanceFuture::none(ClientError::RegistryTimeout {
                service: self.shared.set.service().to_string(),
                registry: self.shared.set.registry_name().to_string(),
                budget: self.shared.wait,
            });
        }
        // One look-up of the context: read the nodes tried, write the pick.
        let context = request.extensions_mut().get_mut::<AttemptContext>();
        let tried = context.as_ref().map_or(&[][..], |c| &c.tried[..]);
        let Some(node) = pick(&self.shared.selector, &self.shared.set, tried) else {
            return BalanceFuture::none(self.shared.set.no_node());
        };
        match context {
            Some(context) => context.node = Some(node.clone()),
            None => {
                let mut context = AttemptContext::single(crate::call::CallDeadline::none().at);
                context.node = Some(node.clone());
                request.extensions_mut().insert(context);
            }
        }
        BalanceFuture {
            choice: Choice::Node(node),
            attempt: Some(self.inner.call(request)),
        }
    }
}

/// The node an attempt goes to, or why there is none.
#[derive(Debug)]
enum Choice {
    Node(Arc<NodeEntry>),
    /// Boxed: rare, and every call's future holds this.
    Refused(Box<ClientError>),
}

pin_project! {
    /// The attempt on the chosen node, if there was one to choose.
    pub struct BalanceFuture<F> {
        choice: Choice,
        #[pin]
        attempt: Option<F>,
    }
}

impl<F> BalanceFuture<F> {
    fn none(error: ClientError) -> Self {
        BalanceFuture {
            choice: Choice::Refused(Box::new(error)),
            attempt: None,
        }
    }
}

impl<F> fmt::Debug for BalanceFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceFuture")
            .field("choice", &self.choice)
            .finish_non_exhaustive()
    }
}

impl<F> Picked for BalanceFuture<F> {
    fn node(&self) -> Result<&Arc<NodeEntry>, &ClientError> {
        match &self.choice {
            Choice::Node(node) => Ok(node),
            Choice::Refused(error) => Err(error),
        }
    }
}

impl<F> Future for BalanceFuture<F>
where
    F: Future<Output = Result<Outcome, Infallible>>,
{
    type Output = Result<Attempted, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.attempt.as_pin_mut() {
            Some(attempt) => match ready!(attempt.poll(cx)) {
                Ok(outcome) => Some(outcome),
                Err(never) => match never {},
            },
            None => None,
        };
        Poll::Ready(match (this.choice, outcome) {
            (Choice::Node(node), Some(outcome)) => Ok(Attempted {
                outcome,
                node: node.clone(),
            }),
            // No node: the future fails with why (an attempt runs only on
            // a node).
            (Choice::Refused(error), _) => Err((**error).clone()),
            (Choice::Node(_), None) => unreachable!("an attempt is made on every node chosen"),
        })
    }
}
