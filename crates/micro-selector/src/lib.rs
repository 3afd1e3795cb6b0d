//! Which node serves the next call.
//!
//! A [`Selector`] picks from the current node list, skipping nodes the caller
//! rules out (already tried in this call, or backing off after refusing
//! connections). It keeps no node list itself: the client owns the live set
//! and hands a snapshot in.
//!
//! [`RoundRobin`](Strategy::RoundRobin) is a real rotation across calls:
//! go-micro v2's round robin restarted at a random node inside every call, so
//! consecutive calls did not take turns. Here, with 4 nodes, 100 calls land
//! exactly 25 on each. Each selector starts its rotation at a random node, so
//! many clients that start together do not all call the same node first.
//!
//! [`P2c`](Strategy::P2c) ("power of two choices") draws two nodes at random
//! and takes the one with the lower load, as the caller measures it (the
//! client uses latency × calls in flight): a slow or stuck node loses almost
//! every draw, a healthy one is never starved, and no global ordering is
//! needed.
//!
//! ```
//! use micro_selector::{Selector, Strategy};
//!
//! let selector = Selector::new(Strategy::RoundRobin);
//! let nodes = ["a", "b", "c"];
//! let picks: Vec<&str> = (0..6).map(|_| *selector.select(&nodes, |_| true).unwrap()).collect();
//! // Wherever the rotation starts, each node gets every third call.
//! assert_eq!(picks[..3], picks[3..]);
//! assert!(["a", "b", "c"].iter().all(|n| picks.contains(n)));
//!
//! let p2c = Selector::new(Strategy::P2c);
//! let load = |n: &&str| if *n == "b" { 10.0 } else { 1.0 };
//! for _ in 0..20 {
//!     assert_ne!(p2c.select_by_load(&nodes, |_| true, load), Some(&"b"));
//! }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A selection strategy, as named on the command line (`--selector`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Each call goes to the next node in turn (default).
    #[default]
    RoundRobin,
    /// Each call goes to a node chosen at random.
    Random,
    /// The less loaded of two nodes chosen at random.
    P2c,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["roundrobin", "random", "p2c"];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "roundrobin",
            Strategy::Random => "random",
            Strategy::P2c => "p2c",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownStrategy(pub String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown selector {:?} (expected one of: {})",
            self.0,
            Strategy::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownStrategy {}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
            "roundrobin" | "rr" => Ok(Strategy::RoundRobin),
            "random" => Ok(Strategy::Random),
            "p2c" | "poweroftwochoices" => Ok(Strategy::P2c),
            _ => Err(UnknownStrategy(s.to_string())),
        }
    }
}

/// Picks nodes for one service. Share one per service and client so the
/// rotation spans calls.
#[derive(Debug)]
pub struct Selector {
    strategy: Strategy,
    next: AtomicUsize,
}

impl Selector {
    pub fn new(strategy: Strategy) -> Self {
        Selector {
            strategy,
            next: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The next node among `nodes` for which `eligible` holds, or `None` if
    /// there is none. Ineligible nodes are skipped in rotation order, so a
    /// node that is out does not stall the turn of the others.
    pub fn select<'a, T>(&self, nodes: &'a [T], eligible: impl Fn(&T) -> bool) -> Option<&'a T> {
        self.select_index(nodes, eligible).map(|i| &nodes[i])
    }

    /// Like [`select`](Self::select), returning the index. Without a load to
    /// compare, [`P2c`](Strategy::P2c) picks at random.
    pub fn select_index<T>(&self, nodes: &[T], eligible: impl Fn(&T) -> bool) -> Option<usize> {
        self.select_index_by_load(nodes, eligible, |_| 0.0)
    }

    /// Like [`select`](Self::select); `load` is what [`P2c`](Strategy::P2c)
    /// compares (lower wins). The other strategies ignore it.
    pub fn select_by_load<'a, T>(
        &self,
        nodes: &'a [T],
        eligible: impl Fn(&T) -> bool,
        load: impl Fn(&T) -> f64,
    ) -> Option<&'a T> {
        self.select_index_by_load(nodes, eligible, load)
            .map(|i| &nodes[i])
    }

    /// Like [`select_by_load`](Self::select_by_load), returning the index.
    pub fn select_index_by_load<T>(
        &self,
        nodes: &[T],
        eligible: impl Fn(&T) -> bool,
        load: impl Fn(&T) -> f64,
    ) -> Option<usize> {
        let len = nodes.len();
        if len == 0 {
            return None;
        }
        let start = match self.strategy {
            Strategy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % len,
            Strategy::Random => fastrand::usize(..len),
            Strategy::P2c => return p2c(nodes, eligible, load),
        };
        (0..len)
            .map(|offset| (start + offset) % len)
            .find(|&i| eligible(&nodes[i]))
    }
}

/// Two distinct eligible nodes at random; the one with the lower load.
fn p2c<T>(nodes: &[T], eligible: impl Fn(&T) -> bool, load: impl Fn(&T) -> f64) -> Option<usize> {
    let len = nodes.len();
    let cheaper = |a: usize, b: usize| {
        if load(&nodes[b]) < load(&nodes[a]) {
            b
        } else {
            a
        }
    };
    if len == 1 {
        return eligible(&nodes[0]).then_some(0);
    }
    let a = fastrand::usize(..len);
    let mut b = fastrand::usize(..len - 1);
    if b >= a {
        b += 1;
    }
    match (eligible(&nodes[a]), eligible(&nodes[b])) {
        (true, true) => Some(cheaper(a, b)),
        // Some nodes are out: draw among the eligible ones, in a random
        // rotation (no allocation).
        _ => {
            let start = fastrand::usize(..len);
            let mut found = (0..len)
                .map(|offset| (start + offset) % len)
                .filter(|&i| eligible(&nodes[i]));
            let first = found.next()?;
            Some(match found.next() {
                Some(second) => cheaper(first, second),
                None => first,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_spreads_evenly_across_calls() {
        let selector = Selector::new(Strategy::RoundRobin);
        let nodes = [0usize, 1, 2, 3];
        let mut counts = [0; 4];
        for _ in 0..100 {
            counts[*selector.select(&nodes, |_| true).expect("node")] += 1;
        }
        assert_eq!(counts, [25, 25, 25, 25]);
    }

    #[test]
    fn ineligible_nodes_are_skipped() {
        let selector = Selector::new(Strategy::RoundRobin);
        let nodes = ["a", "b", "c"];
        for _ in 0..9 {
            assert_ne!(selector.select(&nodes, |n| *n != "b"), Some(&"b"));
        }
        assert_eq!(selector.select(&nodes, |_| false), None);
        assert_eq!(selector.select::<&str>(&[], |_| true), None);
    }

    #[test]
    fn random_reaches_every_node_and_honours_eligibility() {
        let selector = Selector::new(Strategy::Random);
        let nodes = [0usize, 1, 2];
        let mut seen = [false; 3];
        for _ in 0..300 {
            let n = *selector.select(&nodes, |n| *n != 2).expect("node");
            seen[n] = true;
        }
        assert_eq!(seen, [true, true, false]);
    }

    #[test]
    fn strategy_names_parse() {
        assert_eq!("roundrobin".parse(), Ok(Strategy::RoundRobin));
        assert_eq!("round_robin".parse(), Ok(Strategy::RoundRobin));
        assert_eq!("Random".parse(), Ok(Strategy::Random));
        assert_eq!("p2c".parse(), Ok(Strategy::P2c));
        let err = "fastest".parse::<Strategy>().expect_err("unknown");
        assert!(err.to_string().contains("roundrobin, random, p2c"), "{err}");
    }

    #[test]
    fn round_robin_starts_at_a_random_node() {
        let firsts: std::collections::HashSet<usize> = (0..64)
            .map(|_| {
                let selector = Selector::new(Strategy::RoundRobin);
                *selector.select(&[0usize, 1, 2, 3], |_| true).expect("node")
            })
            .collect();
        assert!(firsts.len() > 1, "every selector started at {firsts:?}");
    }

    #[test]
    fn p2c_prefers_the_lighter_node_and_starves_none() {
        let selector = Selector::new(Strategy::P2c);
        let nodes = [0usize, 1, 2];
        let load = |n: &usize| if *n == 0 { 100.0 } else { 1.0 };
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[*selector
                .select_by_load(&nodes, |_| true, load)
                .expect("node")] += 1;
        }
        // The heavy node only wins a draw against itself, which p2c never
        // draws: it gets nothing while the others are eligible.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
        // When it is the only eligible node, it is chosen.
        assert_eq!(selector.select_by_load(&nodes, |n| *n == 0, load), Some(&0));
        assert_eq!(selector.select_by_load(&nodes, |_| false, load), None);
        // Equal loads: spread evenly-ish.
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[*selector
                .select_by_load(&nodes, |_| true, |_| 1.0)
                .expect("node")] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
        // One node out: the other two share.
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[*selector
                .select_by_load(&nodes, |n| *n != 1, |_| 1.0)
                .expect("node")] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 50 && counts[2] > 50, "{counts:?}");
    }
}
