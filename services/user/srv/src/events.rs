//! The service's events: a `UserEvent` on topic `go.micro.evt.user` after
//! each registration, password change and delete is stored, as JSON in
//! jsonpb's form (`{"type":"registered","id":"1","username":"huohuo","time":"1700000000"}`;
//! the message is `UserEvent` in `user.proto`, so typed subscribers decode
//! it). Never a password or a hash.
//!
//! Handlers only queue an event (a bounded queue; a full one drops the
//! event with a warning): one task publishes them in order, so a slow or
//! unreachable subscriber never slows a call, and a failed publish is a
//! warning, not a failed call (the change is stored either way). Each
//! event carries the trace context of the call that made it
//! (`traceparent`), so a trace runs from the call to every subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::UserRecord;

/// The topic user-srv publishes on.
pub const TOPIC: &str = "go.micro.evt.user";
/// Events waiting to be published, at most.
const QUEUE: usize = 1024;

/// What happened to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Registered,
    PasswordChanged,
    Deleted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Registered => "registered",
            Kind::PasswordChanged => "password_changed",
            Kind::Deleted => "deleted",
        }
    }
}

/// Where handlers queue events; [`Events::none`] publishes nothing.
#[derive(Clone, Debug, Default)]
pub struct Events {
    queue: Option<mpsc::Sender<Queued>>,
    dropped: Arc<AtomicU64>,
}

/// An event waiting to be published: its body, and the trace context of
/// the call that made it.
#[derive(Debug)]
struct Queued {
    body: serde_json::Value,
    trace: micro::broker::Header,
}

/// The task publishing queued events; [`finish`](Publisher::finish) waits
/// for the queue to empty once every [`Events`] is gone.
#[derive(Debug)]
pub struct Publisher(tokio::task::JoinHandle<()>);

impl Events {
    /// Events that go nowhere (tests of the handlers alone).
    pub fn none() -> Events {
        Events::default()
    }

    /// Publishes through `event` (its topic and broker), in order.
    pub fn start(event: micro::Event) -> (Events, Publisher) {
        let (queue, mut queued) = mpsc::channel::<Queued>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(Queued { body, trace }) = queued.recv().await {
                let mut traced = event.clone();
                for (key, value) in &trace {
                    traced = traced.with_metadata(key, value);
                }
                if let Err(e) = traced.publish_json(body.to_string()).await {
                    tracing::warn!("event {body} on {}: {e}", event.topic());
                }
            }
        });
        (
            Events {
                queue: Some(queue),
                dropped: Arc::default(),
            },
            Publisher(task),
        )
    }

    /// Queues the event of `kind` about `user`.
    pub(crate) fn emit(&self, kind: Kind, user: &UserRecord) {
        let Some(queue) = &self.queue else {
            return;
        };
        let body = serde_json::json!({
            "type": kind.as_str(),
            "id": user.id.to_string(),
            "username": user.name,
            "time": crate::now_unix().to_string(),
        });
        let queued = Queued {
            body,
            trace: micro::telemetry::broker::trace_headers(),
        };
        if queue.try_send(queued).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                "event queue full: {} event of user {} dropped ({dropped} so far)",
                kind.as_str(),
                user.id
            );
        }
    }
}

impl Publisher {
    /// Waits (at most `limit`) for the queued events to be published, once
    /// every [`Events`] is dropped.
    pub async fn finish(self, limit: Duration) {
        if tokio::time::timeout(limit, self.0).await.is_err() {
            tracing::warn!("events still unpublished after {limit:?}; exiting anyway");
        }
    }
}
