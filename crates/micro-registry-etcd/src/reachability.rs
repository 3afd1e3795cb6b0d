//! What a registry knows of etcd's reachability, and etcd client errors as
//! one readable line: shared by the registry's operations and its watches.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use tokio::time::Instant;

/// What this registry knows of etcd's reachability: down since an operation
/// found no endpoint answering or a watch stream broke, up again at the next
/// answer.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    down: StdMutex<Option<(Instant, String)>>,
}

impl Reachability {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn up(&self) {
        let mut down = self.lock();
        if down.is_some() {
            *down = None;
        }
    }

    /// Marks etcd unreachable (keeping the time it first was) for `reason`.
    pub(crate) fn down(&self, reason: String) {
        let mut down = self.lock();
        match down.as_mut() {
            Some((_, last)) => *last = reason,
            None => *down = Some((Instant::now(), reason)),
        }
    }

    /// How long etcd has been unreachable, and the last reason; `None` while
    /// it answers.
    pub(crate) fn since(&self) -> Option<(Duration, String)> {
        self.lock()
            .as_ref()
            .map(|(at, reason)| (at.elapsed(), reason.clone()))
    }
}

/// An etcd client error as one readable line, with its causes.
pub(crate) fn describe(error: &etcd_client::Error) -> String {
    let (mut text, mut source) = match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = if status.message().is_empty() {
                format!("{:?}", status.code())
            } else {
                status.message().to_string()
            };
            (message, std::error::Error::source(status))
        }
        other => (other.to_string(), std::error::Error::source(other)),
    };
    let mut depth = 0;
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
        depth += 1;
        if depth > 8 {
            break;
        }
    }
    text
}
