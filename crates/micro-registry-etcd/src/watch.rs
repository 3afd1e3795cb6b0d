//! Registry watches: an etcd prefix watch with previous values, turned into
//! [`Event`]s.
//!
//! A put is a `create` when it made the key (create revision = mod revision)
//! and an `update` otherwise; a delete is decoded from the previous value (or,
//! failing that, from the key). A watch etcd cancels (compaction, lost
//! leader) or a broken stream yields one error and then ends: the consumer
//! lists again and watches anew, so nothing is silently missed.

use std::collections::VecDeque;
use std::sync::Arc;

use etcd_client::{EventType, WatchClient, WatchStream};
use micro_registry::{Action, Detail, Error, Event, Node, Service, WatchOptions, Watcher};

use crate::entry::{Decoder, PREFIX, service_prefix, split_key};
use crate::reachability::{Reachability, describe};

/// The key prefix a watch of `service` (or of every service) follows.
pub(crate) fn prefix(service: Option<&str>) -> String {
    match service {
        Some(name) => service_prefix(name),
        None => PREFIX.to_string(),
    }
}

/// Opens a watch of `prefix` on `client`, and waits until etcd has set it
/// up, so that every change made after the registry's `watch` returns is
/// seen.
pub(crate) async fn open(
    mut client: WatchClient,
    prefix: String,
) -> Result<WatchStream, etcd_client::Error> {
    let options = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_prev_key();
    let mut stream = client.watch(prefix, Some(options)).await?;
    match stream.message().await? {
        Some(response) if response.created() && !response.canceled() => Ok(stream),
        Some(response) => Err(etcd_client::Error::WatchError(format!(
            "etcd refused the watch: {}",
            response.cancel_reason()
        ))),
        None => Err(etcd_client::Error::WatchError(
            "etcd closed the watch stream".into(),
        )),
    }
}

/// The registry [`Watcher`] reading `stream` (opened by [`open`] on `prefix`).
pub(crate) fn watcher(
    stream: WatchStream,
    options: WatchOptions,
    prefix: String,
    decoder: Arc<Decoder>,
    reachability: Arc<Reachability>,
) -> Watcher {
    let state = State {
        stream: Some(stream),
        pending: VecDeque::new(),
        decoder,
        reachability,
        name: options.service,
        prefix,
        detail: options.detail,
    };
    Watcher::new(futures::stream::unfold(state, next))
}

struct State {
    /// `None` once the watch ended.
    stream: Option<WatchStream>,
    pending: VecDeque<Result<Event, Error>>,
    decoder: Arc<Decoder>,
    reachability: Arc<Reachability>,
    name: Option<String>,
    prefix: String,
    detail: Detail,
}

async fn next(mut state: State) -> Option<(Result<Event, Error>, State)> {
    loop {
        if let Some(item) = state.pending.pop_front() {
            return Some((item, state));
        }
        let stream = state.stream.as_mut()?;
        match stream.message().await {
            Ok(Some(response)) => {
                if response.canceled() || response.compact_revision() > 0 {
                    let reason = if response.compact_revision() > 0 {
                        format!(
                            "history compacted at revision {}",
                            response.compact_revision()
                        )
                    } else {
                        response.cancel_reason().to_string()
                    };
                    // Routine (a compaction, a member leaving): the resolution
                    // lists again, and warns only if etcd does not answer.
                    tracing::debug!(
                        "Registry [etcd] watch of {} cancelled by etcd: {reason}",
                        state.prefix
                    );
                    state.stream = None;
                    state.pending.push_back(Err(Error::Unavailable {
                        registry: "etcd".into(),
                        detail: format!(
                            "watch of {} cancelled by etcd ({reason}); list again",
                            state.prefix
                        ),
                    }));
                    continue;
                }
                for event in response.events() {
                    if let Some(event) = convert(&state, event) {
                        state.pending.push_back(Ok(event));
                    }
                }
            }
            Ok(None) => {
                state.stream = None;
                state.pending.push_back(Err(Error::Unavailable {
                    registry: "etcd".into(),
                    detail: format!("etcd closed the watch of {}; list again", state.prefix),
                }));
            }
            Err(e) => {
                let cause = describe(&e);
                // The connection to etcd failed under the watch (etcd gone,
                // or keepalive pings unanswered).
                state
                    .reachability
                    .down(format!("watch of {} broke: {cause}", state.prefix));
                // One member stopping breaks the watches it carried; the
                // resolution watches again through another member, and warns
                // (once an outage) only if no member answers.
                tracing::debug!("Registry [etcd] watch of {} broke: {cause}", state.prefix);
                state.stream = None;
                state.pending.push_back(Err(Error::Unavailable {
                    registry: "etcd".into(),
                    detail: format!("watch of {} broke ({cause}); list again", state.prefix),
                }));
            }
        }
    }
}

fn convert(state: &State, event: &etcd_client::Event) -> Option<Event> {
    let kv = event.kv()?;
    let wanted = state.name.as_deref();
    match event.event_type() {
        EventType::Put => {
            let service = state.decoder.decode_as(
                kv.key(),
                kv.value(),
                kv.mod_revision(),
                wanted,
                state.detail,
            )?;
            let action = if kv.create_revision() == kv.mod_revision() {
                Action::Create
            } else {
                Action::Update
            };
            Some(Event { action, service })
        }
        EventType::Delete => {
            let (service_segment, node_segment) = split_key(kv.key())?;
            // Deleting a node nobody could use is harmless, so the previous
            // value is read leniently; without it the key names the node.
            let previous = event
                .prev_kv()
                .and_then(|prev| state.decoder.read_leniently(prev.value(), state.detail));
            let service = match previous {
                Some(service)
                    if !service.nodes.is_empty() && wanted.is_none_or(|n| n == service.name) =>
                {
                    service
                }
                _ => Service {
                    name: wanted.unwrap_or(service_segment).to_string(),
                    nodes: vec![Node::new(node_segment, "")],
                    ..Service::default()
                },
            };
            Some(Event {
                action: Action::Delete,
                service,
            })
        }
    }
}
