//! [`ServiceChannel`]: a `tower::Service` that sends each gRPC request to a
//! node of one service.
//!
//! A call goes down a stack of tower services, outermost first, each in
//! its own module with one job and put in place by its `Layer`. No stage
//! knows another: what a call carries from one to the next travels in the
//! request's extensions ([`call`](crate::call)), what an attempt tells the
//! stages above it in an [`outcome`](crate::outcome).
//!
//! 1. **observe** ([`observe`](crate::observe)): the telemetry hook
//!    ([`CallObserver`]) around everything; its future holds the stages'
//!    futures, one inside the other (none is boxed);
//! 2. **deadline** ([`deadline`](crate::deadline)): a call to an endpoint
//!    the registry lists as a stream is marked [`Streaming`](crate::Streaming),
//!    whoever made it (a generated client, unmarked); the call's deadline,
//!    from the caller's `grpc-timeout` or `request_timeout` (a stream's: the
//!    caller's or `stream_timeout`, else none);
//! 3. **retry** ([`retry`](crate::retry)): runs the attempts and judges each:
//!    whether a failed attempt may go to another node (policy), whether the
//!    service can take another retry (budget), and for idempotent calls
//!    with `hedge_after` set, a second attempt on another node when the
//!    first is slow;
//! 4. **balance** ([`balance`](crate::balance)): which node, by the selector,
//!    among nodes up and not tried yet in this call; not ready until the
//!    registry has answered;
//! 5. **attempt** ([`attempt`](crate::attempt)): one request to that node's
//!    connection, bounded by the attempt timeout, reported to the node's
//!    health and load ([`endpoint`](crate::endpoint)).
//!
//! Failures are a typed [`ClientError`](crate::ClientError), turned into a
//! gRPC status in one place
//! ([`ClientError::into_status`](crate::ClientError::into_status)) for tonic clients.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Service, ServiceBuilder};

use crate::BoxError;
use crate::attempt::Attempt;
use crate::balance::{Balance, BalanceLayer};
use crate::deadline::{DeadlineLayer, WithDeadline};
use crate::observe::{Observe, ObserveFuture, ObserveLayer};
use crate::observer::CallObserver;
use crate::options::ClientOptions;
use crate::pick::Picker;
use crate::pool::NodeSet;
use crate::retry::{Budget, Retry, RetryFuture, RetryLayer, RetryOptions};

/// The retry and balance stages of one service, built once by the
/// [`Client`](crate::Client) and shared by its gRPC channel and by callers
/// that put them over another attempt stage (the gateway's HTTP proxy):
/// one retry budget and one selector per service, whatever the transport.
#[derive(Clone, Debug)]
pub struct ServiceLayers {
    pub set: Arc<NodeSet>,
    pub retry: RetryLayer,
    pub balance: BalanceLayer,
}

impl ServiceLayers {
    pub(crate) fn new(picker: &Picker, budget: Arc<Budget>, options: &ClientOptions) -> Self {
        ServiceLayers {
            set: picker.set.clone(),
            retry: RetryLayer::new(
                picker.set.service(),
                budget,
                RetryOptions {
                    retries: options.retries,
                    hedge_after: options.hedge_after,
                },
            ),
            balance: BalanceLayer::new(
                picker.set.clone(),
                picker.selector.clone(),
                options.request_timeout,
            ),
        }
    }
}

/// The stages of a call, outermost first.
type Stack = Observe<WithDeadline<Retry<Balance<Attempt>>>>;

/// A channel to one service by name. Cheap to clone; all clones share the
/// node set, its health and load, and the rotation.
#[derive(Clone)]
pub struct ServiceChannel {
    set: Arc<NodeSet>,
    idempotent: bool,
    stack: Stack,
}

impl fmt::Debug for ServiceChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceChannel")
            .field("service", &self.set.service())
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl ServiceChannel {
    /// The stack over the nodes of `picker`, whose retries take from
    /// `budget`.
    pub(crate) fn new(
        layers: &ServiceLayers,
        options: &ClientOptions,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Self {
        let set = layers.set.clone();
        let stack = ServiceBuilder::new()
            .layer(ObserveLayer::new(set.clone(), observer))
            .layer(
                DeadlineLayer::new(options.request_timeout)
                    .stream_timeout(options.stream_timeout)
                    .streams_of(set.clone()),
            )
            .layer(layers.retry.clone())
            .layer(layers.balance.clone())
            .service(Attempt::new(
                set.clone(),
                options.attempt_timeout,
                options.tls.is_some(),
            ));
        ServiceChannel {
            set,
            idempotent: false,
            stack,
        }
    }

    /// Treat every call through this channel as [`Idempotent`](crate::Idempotent).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self.stack.get_mut().get_mut().set_idempotent(true);
        self
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        self.set.service()
    }

    /// The node set behind this channel.
    pub fn node_set(&self) -> &Arc<NodeSet> {
        &self.set
    }
}

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    /// The stages' futures one inside the other: not boxed.
    type Future = ObserveFuture<RetryFuture<Balance<Attempt>>>;

    /// Ready once the registry has answered for the service (or failed to,
    /// or `request_timeout` passed): until then no node can be chosen. Once
    /// resolved, always ready; a service without nodes fails each call at
    /// once with [`ClientError::NoNode`](crate::ClientError::NoNode), and one whose registry has still
    /// not answered with [`ClientError::RegistryTimeout`](crate::ClientError::RegistryTimeout).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.stack.poll_ready(cx)
    }

    /// Fails with the gRPC status of a [`ClientError`](crate::ClientError) (which stays
    /// reachable as the status's source).
    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.stack.call(request)
    }
}
