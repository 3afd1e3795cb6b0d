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

use crate::api::{Body, services_summary};
use crate::live::Snapshot;

struct State {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    keep_alive: Duration,
    first: bool,
    _permit: OwnedSemaphorePermit,
}

/// The body of one event stream.
pub(crate) fn stream(
    snapshot: watch::Receiver<Arc<Snapshot>>,
    keep_alive: Duration,
    permit: OwnedSemaphorePermit,
) -> Body {
    let state = State {
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
            event.push_str(&services_event(&current));
            return Some((Bytes::from(event), state));
        }
        let keep_alive = tokio::time::sleep(state.keep_alive);
        tokio::select! {
            changed = state.snapshot.changed() => {
                // The sender is gone: the dashboard is stopping.
                changed.ok()?;
                let current = state.snapshot.borrow_and_update().clone();
                Some((Bytes::from(services_event(&current)), state))
            }
            () = keep_alive => Some((Bytes::from_static(b": keep-alive\n\n"), state)),
        }
    });
    let frames = events.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    http_body_util::BodyExt::boxed_unsync(StreamBody::new(frames))
}

/// One `services` event: the summary as one line of JSON.
pub(crate) fn services_event(snapshot: &Snapshot) -> String {
    let data = services_summary(snapshot).to_string();
    format!("event: services\ndata: {data}\n\n")
}
