//! Waiting until a client (or a registry) sees the nodes a test expects.

use std::fmt;
use std::time::{Duration, Instant};

/// How often [`wait_for_nodes`] asks again.
const POLL: Duration = Duration::from_millis(10);

/// A wait of [`wait_for_nodes`] that ended at its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesNotSeen {
    /// What was waited for.
    pub wanted: String,
    /// The nodes last seen (`{:?}`).
    pub last: String,
}

impl fmt::Display for NodesNotSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} never seen: {}", self.wanted, self.last)
    }
}

impl std::error::Error for NodesNotSeen {}

/// Asks `nodes` (every 10 ms, until `deadline`, real time even where the
/// test pauses tokio's clock) until what it answers satisfies `seen`;
/// returns that answer, or says what it last saw.
///
/// A client learns of a new node, and of a stopped one leaving, from its
/// registry watch a moment after the registry does: tests wait with this
/// instead of sleeping. `nodes` is typically `|| client.nodes(SERVICE)`.
///
/// ```ignore
/// # async fn example(client: micro_client::Client) {
/// use std::time::Duration;
/// use micro_testing::nodes::wait_for_nodes;
///
/// let deadline = std::time::Instant::now() + Duration::from_secs(10);
/// wait_for_nodes("2 nodes", deadline, || client.nodes("go.micro.srv.greeter"), |n| n.len() == 2)
///     .await
///     .unwrap_or_else(|e| panic!("{e}"));
/// # }
/// ```
pub async fn wait_for_nodes<T, F, Fut>(
    wanted: &str,
    deadline: Instant,
    mut nodes: F,
    seen: impl Fn(&[T]) -> bool,
) -> Result<Vec<T>, NodesNotSeen>
where
    T: fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<T>>,
{
    loop {
        let now = nodes().await;
        if seen(&now) {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(NodesNotSeen {
                wanted: wanted.to_string(),
                last: format!("{now:?}"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn waits_until_the_nodes_are_seen() {
        let asked = Arc::new(AtomicUsize::new(0));
        let nodes = || {
            let asked = asked.clone();
            async move {
                let n = asked.fetch_add(1, Ordering::SeqCst);
                (0..n.min(3)).collect::<Vec<usize>>()
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = wait_for_nodes("3 nodes", deadline, nodes, |n| n.len() == 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(asked.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn says_what_it_last_saw_at_the_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let error = wait_for_nodes(
            "2 nodes",
            deadline,
            || async { vec!["a"] },
            |n| n.len() == 2,
        )
        .await
        .expect_err("never two");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(error.to_string(), r#"2 nodes never seen: ["a"]"#);
    }
}
