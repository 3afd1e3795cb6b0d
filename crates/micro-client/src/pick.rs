//! The balancer, for calls that are not gRPC: the gateway's HTTP proxy asks
//! a [`Picker`] for a node ([`Picker::pick_node`]) and reports how the
//! attempt went ([`Pick::finish`]), so its calls share the selector, the
//! health (down, ejected) and the load of the client's gRPC calls.

use std::fmt;
use std::sync::Arc;

use micro_registry::Node;
use micro_selector::Selector;
use tokio::time::Instant;

use crate::balance::pick;
use crate::endpoint::NodeEntry;
use crate::pool::{Health, NodeSet};

/// How an attempt on a [`Pick`]ed node went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickOutcome {
    /// The node answered.
    Answered,
    /// The node answered that it cannot serve now (a 503, `Unavailable`).
    Unavailable,
    /// No connection to the node: it is down until a probe reaches it.
    ConnectFailed,
    /// The connection broke during the attempt.
    ConnectionFailed,
    /// No answer in time.
    Timeout,
}

/// A node chosen for one attempt; counts as in flight until finished or
/// dropped.
pub struct Pick {
    set: Arc<NodeSet>,
    entry: Arc<NodeEntry>,
    started: Instant,
    finished: bool,
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("service", &self.set.service())
            .field("node", &self.entry.node.id)
            .finish_non_exhaustive()
    }
}

/// The nodes of one service and the selector that chooses among them, as
/// the client's channels to it use them.
#[derive(Clone, Debug)]
pub struct Picker {
    pub(crate) set: Arc<NodeSet>,
    pub(crate) selector: Arc<Selector>,
}

impl Picker {
    /// The node set.
    pub fn node_set(&self) -> &Arc<NodeSet> {
        &self.set
    }

    /// The selector's state, shared with the client's channels.
    pub fn selector(&self) -> &Arc<Selector> {
        &self.selector
    }

    /// A node for the next attempt, skipping the ids in `tried`; `None` when
    /// the set has no other node.
    pub fn pick_node(&self, tried: &[String]) -> Option<Pick> {
        let entries = self.set.entries();
        let tried: Vec<Arc<NodeEntry>> = entries
            .iter()
            .filter(|e| tried.iter().any(|id| *id == e.node.id))
            .cloned()
            .collect();
        let entry = pick(&self.selector, &self.set, &tried)?;
        Some(Pick::start(self.set.clone(), entry))
    }
}

impl Pick {
    /// An attempt on `entry` (a node of `set`) starts now: it counts as in
    /// flight until finished or dropped. For an attempt stage of another
    /// transport, given its node in the
    /// [`AttemptContext`](crate::call::AttemptContext).
    pub fn start(set: Arc<NodeSet>, entry: Arc<NodeEntry>) -> Pick {
        entry.count_attempt();
        entry.load().enter();
        Pick {
            set,
            entry,
            started: Instant::now(),
            finished: false,
        }
    }

    pub fn node(&self) -> &Node {
        &self.entry.node
    }

    /// Reports the attempt to the node's health and load.
    pub fn finish(mut self, outcome: PickOutcome) {
        self.finished = true;
        let failed = outcome != PickOutcome::Answered;
        self.entry
            .load()
            .exit(Some((self.started.elapsed(), failed)));
        let health = match outcome {
            PickOutcome::Answered => Health::Answered,
            PickOutcome::ConnectFailed | PickOutcome::ConnectionFailed => Health::Refused,
            PickOutcome::Unavailable | PickOutcome::Timeout => Health::Failed,
        };
        self.set.credit(&self.entry, health);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.finished {
            self.entry.load().exit(None);
        }
    }
}
