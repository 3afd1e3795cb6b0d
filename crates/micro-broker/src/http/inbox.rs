//! The subscribing side: the HTTP listener publishers POST to, and the
//! table of this process's subscriptions it delivers to.
//!
//! What it answers (go-micro's listener, `broker/http.go` ServeHTTP, made
//! to say what happened):
//!
//! | request | go-micro v2.9.1 | here |
//! | --- | --- | --- |
//! | not POST | 405, `{"id":"go.micro.broker","code":400,"detail":"Method not allowed",…}` | the same bytes |
//! | body over the limit | read whole | 413 |
//! | not an envelope, JSON `null` | 500 (`null`: connection dropped) | 400 |
//! | no `Micro-Topic` header | 500 `Topic not found` | 400 `Topic not found` |
//! | no subscription with that `?id=` and topic | 200, nothing delivered | 404 |
//! | subscription stopping | (delivered) | 503: try another node |
//! | handler fails or panics | 200 | 500 with the error |
//! | handler acknowledges | 200 | 200 |

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use micro_errors::MicroError;
use micro_serve::AbortOnDrop;

use crate::dispatch::{Detached, Gate, deliver};
use crate::{BrokerObserver, Event, Handler, Message, TOPIC_HEADER};

/// The error id go-micro's broker answers with.
const ERROR_ID: &str = "go.micro.broker";

/// One subscription of this process.
pub(super) struct Sub {
    /// Shared with every delivery's [`Event`].
    pub(super) topic: Arc<str>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) gate: Arc<Gate>,
    /// Its `micro.http.broker` entry.
    pub(super) registration: micro_registry::Service,
    /// The task keeping it registered.
    pub(super) renew: Mutex<Option<AbortOnDrop<()>>>,
}

impl Sub {
    /// Keeps `renew` running while the subscription takes messages.
    pub(super) fn renew_with(&self, renew: AbortOnDrop<()>) {
        *self.renew.lock().unwrap_or_else(|p| p.into_inner()) = Some(renew);
    }

    /// Stops renewing the registration (before it is removed).
    pub(super) fn stop_renewing(&self) {
        if let Some(renew) = self.renew.lock().unwrap_or_else(|p| p.into_inner()).take() {
            renew.abort();
        }
    }
}

/// This process's subscriptions by node id, and how to deliver to them.
pub(super) struct Inbox {
    subs: Mutex<HashMap<String, Arc<Sub>>>,
    pub(super) max_message_bytes: usize,
    pub(super) observer: Option<Arc<dyn BrokerObserver>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("subscriptions", &self.subs().len())
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    pub(super) fn new(
        max_message_bytes: usize,
        observer: Option<Arc<dyn BrokerObserver>>,
    ) -> Inbox {
        Inbox {
            subs: Mutex::default(),
            max_message_bytes,
            observer,
        }
    }

    fn subs(&self) -> MutexGuard<'_, HashMap<String, Arc<Sub>>> {
        self.subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn insert(&self, id: String, sub: Arc<Sub>) {
        self.subs().insert(id, sub);
    }

    pub(super) fn remove(&self, id: &str) {
        self.subs().remove(id);
    }

    pub(super) fn all(&self) -> Vec<Arc<Sub>> {
        self.subs().values().cloned().collect()
    }

    pub(super) fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(receive).with_state(self)
    }
}

fn answer(status: StatusCode, code: i32, detail: impl Into<String>) -> Response {
    let body = MicroError::new(ERROR_ID, code, detail).to_json();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

async fn receive(State(inbox): State<Arc<Inbox>>, request: Request) -> Response {
    if request.method() != Method::POST {
        // go-micro's exact answer (http.Error adds the newline).
        let body = MicroError::bad_request(ERROR_ID, "Method not allowed").to_json() + "\n";
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-content-type-options", "nosniff")
            .body(Body::from(body))
            .unwrap_or_default();
    }
    let id = request.uri().query().and_then(query_id);
    let limit = inbox.max_message_bytes;
    let body = match http_body_util::Limited::new(request.into_body(), limit)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                413,
                format!("message over {limit} bytes"),
            );
        }
        Err(e) => return answer(StatusCode::BAD_REQUEST, 400, format!("reading body: {e}")),
    };
    let message = match Message::from_envelope(&body) {
        Ok(message) => message,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                400,
                format!("Error parsing request body: {e}"),
            );
        }
    };
    let Some(topic) = message.header(TOPIC_HEADER) else {
        return answer(StatusCode::BAD_REQUEST, 400, "Topic not found");
    };
    let sub = id.as_deref().and_then(|id| inbox.subs().get(id).cloned());
    let Some(sub) = sub.filter(|s| &*s.topic == topic) else {
        return answer(
            StatusCode::NOT_FOUND,
            404,
            format!(
                "no subscription {} to {topic} here",
                id.as_deref().unwrap_or("(no ?id=)")
            ),
        );
    };
    let Some(pass) = sub.gate.enter() else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, 503, "unsubscribing");
    };
    // Run here; a publisher that gives up (the connection dropped) does not
    // cut the handler short: the rest of it runs on a task of its own (a
    // drain waits for it).
    let observer = inbox.observer.clone();
    let outcome = Detached::new(async move {
        deliver(
            "http",
            &*sub.handler,
            Event::new(sub.topic.clone(), message),
            pass,
            observer.as_deref(),
        )
        .await
    })
    .await;
    match outcome.failure() {
        None => Response::new(Body::empty()),
        Some(failure) => answer(StatusCode::INTERNAL_SERVER_ERROR, 500, failure),
    }
}

/// The `id` query parameter, decoded as Go's `url.ParseQuery` does.
fn query_id(query: &str) -> Option<String> {
    // What publishers send: `id=<id>` alone, nothing escaped (found with
    // one vectorised scan, not a pass per byte).
    if let Some(id) = query.strip_prefix("id=")
        && memchr::memchr3(b'&', b'%', b'+', id.as_bytes()).is_none()
    {
        return Some(id.to_string());
    }
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (unescape(key)? == "id")
            .then(|| unescape(value).map(Cow::into_owned))
            .flatten()
    })
}

/// `text` with Go's query escapes (`%XX`, `+`) decoded; borrowed when it
/// has none (an id as the publisher writes it: no copy, no pass per byte).
fn unescape(text: &str) -> Option<Cow<'_, str>> {
    let bytes = text.as_bytes();
    if memchr::memchr2(b'%', b'+', bytes).is_none() {
        return Some(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `text` escaped as Go's `url.QueryEscape` does.
pub(super) fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_the_query() {
        for id in ["go.micro.topic.greet-5c7f1c6f", "a b&c=d/é"] {
            let query = format!("x=1&id={}", query_escape(id));
            assert_eq!(query_id(&query).as_deref(), Some(id));
        }
        assert_eq!(query_id("other=1"), None);
        assert_eq!(query_id("id=a+b").as_deref(), Some("a b"));
        assert_eq!(query_id("id=plain").as_deref(), Some("plain"));
        assert_eq!(query_id("id=x&id=y").as_deref(), Some("x"));
        assert_eq!(query_id("id=%zz"), None);
    }
}
