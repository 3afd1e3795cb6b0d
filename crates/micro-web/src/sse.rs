//! `GET /api/events`: the registry, live, as Server-Sent Events.
//!
//! Each stream sends an `event: services` with the summary of every service
//! at once, and again after each change; a `: keep-alive` comment every
//! [`WebOptions::keep_alive`](crate::WebOptions::keep_alive) keeps proxies
//! and the browser from giving up on a quiet stream. A stream holds no queue:
//! it reads the latest [`Snapshot`] when it can send, so a slow client skips
//! states it had no time for. Streams are capped (a semaphore permit each).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::{OwnedSemaphorePermit, watch};

use http_body_util::combinators::UnsyncBoxBody;

use crate::live::Snapshot;

/// What each `services` event carries: the summary of a snapshot (the
/// JSON `GET /api/services` answers).
pub(crate) type Summary = fn(&Snapshot) -> serde_json::Value;

struct State {
    summary: Summary,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    keep_alive: Duration,
    first: bool,
    _permit: OwnedSemaphorePermit,
}

/// The body of one event stream.
pub(crate) fn stream(
    snapshot: watch::Receiver<Arc<Snapshot>>,
    summary: Summary,
    keep_alive: Duration,
    permit: OwnedSemaphorePermit,
) -> UnsyncBoxBody<Bytes, Infallible> {
    let state = State {
        summary,
        snapshot,
        keep_alive,
        first: true,
        _permit: permit,
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        if state.first {
            state.first = false;
            // The retry hint: reconnect quickly after a restart.
            let current = state.snapshot.borrow_and_update().clone();
            let mut event = String::from("retry: 1000\n");
            event.push_str(&services_event(state.summary, &current));
            return Some((Bytes::from(event), state));
        }
        let keep_alive = tokio::time::sleep(state.keep_alive);
        tokio::select! {
            changed = state.snapshot.changed() => {
                // The sender is gone: the dashboard is stopping.
                changed.ok()?;
                let current = state.snapshot.borrow_and_update().clone();
                Some((Bytes::from(services_event(state.summary, &current)), state))
            }
            () = keep_alive => Some((Bytes::from_static(b": keep-alive\n\n"), state)),
        }
    });
    let frames = events.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    http_body_util::BodyExt::boxed_unsync(StreamBody::new(frames))
}

/// One `services` event: the summary as one line of JSON.
fn services_event(summary: Summary, snapshot: &Snapshot) -> String {
    let data = summary(snapshot).to_string();
    format!("event: services\ndata: {data}\n\n")
}
