//! Background tasks that end with whatever holds them: a server's
//! registration loop, an admin listener, a test's server.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that is aborted when this handle is dropped: a server
/// whose `run` future is dropped leaves no registration loop behind, a test
/// that panics half way leaves no server running on its runtime.
///
/// Awaiting it waits for the task, as awaiting its [`JoinHandle`] does; a
/// wait given up (a `timeout` that lapsed) aborts it too.
#[derive(Debug)]
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Guards `task`.
    pub fn new(task: JoinHandle<T>) -> AbortOnDrop<T> {
        AbortOnDrop(task)
    }

    /// Spawns `future` on the current runtime and guards it.
    pub fn spawn<F>(future: F) -> AbortOnDrop<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        AbortOnDrop(tokio::spawn(future))
    }

    /// Aborts the task now.
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_dropped_task_is_aborted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = AbortOnDrop::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The sender is dropped with the aborted task: the receiver hears.
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("aborted within 10 s")
            .expect_err("nothing was sent");
    }

    #[tokio::test]
    async fn awaiting_it_waits_for_the_task() {
        let task = AbortOnDrop::spawn(async { 7 });
        assert_eq!(task.await.expect("ran"), 7);
    }
}
