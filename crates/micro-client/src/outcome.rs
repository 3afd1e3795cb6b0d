//! What an attempt tells the stages above it: how far the request got
//! ([`Sent`]), how the attempt ended ([`Outcome`]), and which node ran it
//! ([`Attempted`]). The attempt stage makes these, the balance stage adds
//! the node, the retry stage judges them; none of them imports another.

use std::sync::Arc;

use tonic::Code;
use tonic::body::Body;

use crate::endpoint::NodeEntry;
use crate::error::{ClientError, NodeFailure};

/// How far a failed attempt got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The request never reached the server: always safe to send elsewhere.
    No,
    /// The server may have seen it.
    Maybe,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The node answered; `status` is the error status of a trailers-only
    /// answer (`None`: a success, or a status only the trailers will tell).
    Answered {
        response: http::Response<Body>,
        status: Option<Code>,
    },
    /// The node failed: no connection, the connection broke, or no answer
    /// within the attempt timeout.
    Failed { failure: NodeFailure, sent: Sent },
    /// The call's own deadline passed.
    Deadline,
    /// The node refused the request unexecuted, over its concurrency limit:
    /// `RESOURCE_EXHAUSTED` with the `grpc-retry-pushback-ms` mark of
    /// admission control (an application's own `RESOURCE_EXHAUSTED` has
    /// none, and is an [`Answered`](Outcome::Answered)). Safe to send
    /// elsewhere, idempotent or not; the node is busy, not broken.
    Shed { response: http::Response<Body> },
}

/// An attempt's outcome and the node it ran on.
#[derive(Debug)]
pub struct Attempted {
    pub outcome: Outcome,
    pub node: Arc<NodeEntry>,
}

/// A future of an attempt that knows, before it runs, which node it goes to
/// (or why there is none): the retry stage needs that to end a call without
/// a node, and to send a hedge elsewhere.
pub trait Picked {
    /// The node chosen, or why none was (the future then fails with it).
    fn node(&self) -> Result<&Arc<NodeEntry>, &ClientError>;
}

/// A stage that balances over a pool of nodes: how many it has now. With
/// one node a retry has nowhere to go, so the retry stage keeps nothing for
/// one.
pub trait NodeCount {
    fn node_count(&self) -> usize;
}
