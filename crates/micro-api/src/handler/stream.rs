//! Streams at the gateway: a WebSocket upgrade, or `Accept:
//! text/event-stream`, on a path whose endpoint the registry marks
//! `"stream": "true"` opens the endpoint's stream and relays it.
//!
//! The WebSocket relay is go-micro's (`api/handler/rpc/stream.go`), so a
//! client written against its gateway works unchanged:
//!
//! - the URL query, read as JSON (`a.b=1` → `{"a":{"b":1}}`), is the first
//!   message unless it is empty; each text or binary frame is one more
//!   message, as it is; each message of the service is one frame;
//! - frames are text when the upgrade request says `Content-Type:
//!   application/json`, binary otherwise (browsers send none), and binary
//!   when the client offers the `binary` subprotocol (echoed back);
//! - messages go to the service as `application/grpc+json`, the request
//!   headers as metadata.
//!
//! Beyond go-micro: a normal end sends close 1000; a failure sends a close
//! frame with code 4000 + the error's code (e.g. 4503, 4404) and the error
//! JSON as the reason (its detail cut to fit the 123 bytes a reason may
//! take); a frame that is not JSON closes with 1007, one past the size limit
//! with 1009, an idle stream with 4408, a stopping gateway with 1001.
//!
//! Server-Sent Events (`Accept: text/event-stream`): the request (the JSON
//! body, or for GET the query) is the one message sent; each message of the
//! service is one `data:` line; a failure is an `error` event with the error
//! JSON; the body ends at the stream's end.
//!
//! Both hold bounded buffers only: a client that stops reading stops the
//! gateway reading from the service (whose writes then wait on HTTP/2 flow
//! control), and one that stops sending stops the service's reads. A client
//! that goes away cancels the service's stream at once. The edge's checks
//! (limits, rate limits, auth) apply to the upgrade request as to any other,
//! and an upgraded connection keeps its slot in the connection budget until
//! its stream ends (see [`micro_serve::ConnectionHold`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{FutureExt, SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, header};
use micro_errors::MicroError;
use micro_json::client::JsonStream;
use micro_serve::{ConnectionHold, Held};
use micro_telemetry::api::ApiStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{deadline, ensure_registered, read_body, routed};
use crate::convert::to_metadata;
use crate::dynamic::CallOptions;
use crate::error::ApiError;
use crate::routes::Resolved;
use crate::{Inner, Route};

/// Messages from the client waiting for the service to take them.
const REQUEST_BUFFER: usize = 16;
/// Frames written to the socket once this much is buffered (or flushed).
const WRITE_BUFFER: usize = 64 * 1024;
/// The largest reply a service may send (tonic's default decoding limit).
const LARGEST_REPLY: usize = 4 * 1024 * 1024;
/// Longest wait to deliver a close frame to a client that may not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most a close frame's reason may hold (RFC 6455 §5.5).
const MAX_REASON: usize = 123;

/// How a request asks for a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    WebSocket,
    EventStream,
}

/// Whether the request asks for a stream (cheap: runs on every request).
pub(crate) fn wanted(headers: &HeaderMap) -> Option<Wanted> {
    if let Some(upgrade) = headers.get(header::UPGRADE) {
        return upgrade
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
            .then_some(Wanted::WebSocket)
            .filter(|_| has_token(headers, header::CONNECTION, "upgrade"));
    }
    // Most requests carry no `Accept`, or a short one.
    let accept = headers.get(header::ACCEPT)?;
    if accept.len() < "text/event-stream".len() {
        return None;
    }
    has_token(headers, header::ACCEPT, "text/event-stream").then_some(Wanted::EventStream)
}

/// Whether a comma-separated header holds `token` (parameters ignored).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(token))
        })
}

/// Whether the registry marks `route`'s endpoint `stream` (as go-micro's
/// gateway decides, from the service's registered endpoints).
async fn is_stream_endpoint(inner: &Inner, route: &Route, until: Instant) -> bool {
    let endpoint = format!("{}.{}", route.handler, route.method);
    let lookup = inner.client.registry().get_service(&route.service);
    match tokio::time::timeout_at(until, lookup).await {
        Ok(Ok(services)) => services.iter().any(|service| {
            service.endpoints.iter().any(|e| {
                e.name == endpoint && e.metadata.get("stream").is_some_and(|v| v == "true")
            })
        }),
        Ok(Err(e)) => {
            tracing::debug!(service = %route.service, "registry lookup for a stream failed: {e}");
            false
        }
        Err(_) => false,
    }
}

/// The stream `request` asks for, if its endpoint streams; `Ok(Err(request))`
/// gives the request back for the unary path (as go-micro does with a
/// WebSocket to an endpoint that does not stream).
pub(crate) async fn serve(
    inner: &Arc<Inner>,
    request: Request,
    resolved: &Resolved,
    wanted: Wanted,
) -> Result<Result<Response, Request>, ApiError> {
    let route = &resolved.route;
    let deadline = deadline(inner, &request);
    ensure_registered(inner, &route.service, deadline).await?;
    if !is_stream_endpoint(inner, route, deadline).await {
        return Ok(Err(request));
    }
    let response = match wanted {
        Wanted::WebSocket => websocket(inner, request, resolved).await?,
        Wanted::EventStream => event_stream(inner, request, resolved).await?,
    };
    Ok(Ok(routed(response, resolved.name.clone())))
}

/// What a relay needs of the request that opened it.
struct Opening {
    inner: Arc<Inner>,
    service: String,
    endpoint: String,
    /// The first message, if the request carries one.
    first: Option<Vec<u8>>,
    metadata: tonic::metadata::MetadataMap,
    telemetry: ApiStream,
}

impl Opening {
    fn new(
        inner: &Arc<Inner>,
        resolved: &Resolved,
        first: Option<Vec<u8>>,
        headers: &HeaderMap,
        kind: &'static str,
    ) -> Self {
        let mut metadata = to_metadata(headers);
        for name in [
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-protocol",
            "sec-websocket-extensions",
        ] {
            metadata.remove(name);
        }
        let route = &resolved.route;
        Opening {
            inner: inner.clone(),
            service: route.service.clone(),
            endpoint: format!("{}.{}", route.handler, route.method),
            first,
            metadata,
            telemetry: ApiStream::open(kind, &resolved.name),
        }
    }

    /// Opens the service's stream, sending what `requests` yields.
    async fn open(
        &self,
        requests: impl futures::Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<JsonStream, ApiError> {
        let options = CallOptions {
            // No deadline: the stream lasts as long as both ends want
            // (the client's --client_stream_timeout aside).
            timeout: Duration::ZERO,
            idempotent: false,
            metadata: self.metadata.clone(),
        };
        let first = futures::stream::iter(self.first.clone());
        self.inner
            .dynamic
            .stream_endpoint(
                &self.service,
                &self.endpoint,
                first.chain(requests),
                options,
            )
            .await
            .map_err(ApiError::from)
    }
}

/// The URL query as go-micro's first message: `None` when it is empty.
fn query_message(query: Option<&str>) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let value = micro_json::transcode::query_to_untyped_json(query)
        .map_err(|e| ApiError::bad_request(e.detail().to_string()))?;
    if value.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    serde_json::to_vec(&value)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("bad query: {e}")))
}

async fn websocket(
    inner: &Arc<Inner>,
    request: Request,
    resolved: &Resolved,
) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    // go-micro: text frames for `Content-Type: application/json`, binary
    // for anything else; a JSON-speaking service behind it either way.
    let text = match parts.headers.get(header::CONTENT_TYPE) {
        None => false,
        Some(ct) if is_json(ct) => true,
        Some(ct) => {
            return Err(ApiError::new(
                415,
                format!(
                    "streams carry JSON messages (Content-Type: application/json, or none), not {}",
                    crate::error::shown(ct.to_str().unwrap_or("?"))
                ),
            ));
        }
    };
    let first = query_message(parts.uri.query())?;
    let hold = parts
        .extensions
        .get::<ConnectionHold>()
        .map(ConnectionHold::hold);
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|rejection| ApiError::new(rejection.status().as_u16(), rejection.body_text()))?;
    let limit = inner.options.stream_max_message_bytes;
    let upgrade = upgrade
        .protocols(["binary"])
        .max_message_size(limit)
        .max_frame_size(limit)
        // Written out past WRITE_BUFFER, and the relay feeds the next reply
        // only once the socket takes more: at most one reply waits beyond
        // it (a client that does not read holds up the relay, not memory).
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(LARGEST_REPLY + WRITE_BUFFER);
    let binary = !text || upgrade.selected_protocol().is_some();
    let opening = Opening::new(inner, resolved, first, &parts.headers, "websocket");
    let idle = inner.options.stream_idle_timeout;
    Ok(upgrade.on_upgrade(move |socket| relay(socket, opening, binary, idle, hold)))
}

fn is_json(content_type: &HeaderValue) -> bool {
    content_type
        .to_str()
        .ok()
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"))
}

/// How a relay ended.
enum End {
    /// The service ended the stream.
    Done,
    /// The stream failed (the service's error, or the gateway's).
    Failed(ApiError),
    /// A frame that is not JSON.
    BadFrame(String),
    /// A message past the size limit.
    TooBig,
    /// The client sent a close frame (answered in kind).
    ClientClosed,
    /// The client went away.
    ClientGone,
    Idle(Duration),
    Stopping,
}

/// Relays `socket` ↔ the service's stream until either ends.
async fn relay(
    socket: WebSocket,
    mut opening: Opening,
    binary: bool,
    idle: Duration,
    mut hold: Option<Held>,
) {
    let (mut sink, mut source) = socket.split();
    let (requests, pending) = mpsc::channel::<Vec<u8>>(REQUEST_BUFFER);
    let pending = futures::stream::unfold(pending, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    });
    let last = Activity::new();
    let telemetry = &opening.telemetry;

    let from_client = async {
        loop {
            let message = match source.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    return if is_capacity(&e) {
                        End::TooBig
                    } else {
                        tracing::debug!("websocket read failed: {e}");
                        End::ClientGone
                    };
                }
                None => return End::ClientGone,
            };
            last.touch();
            let data = match message {
                Message::Text(text) => Bytes::from(text),
                Message::Binary(data) => data,
                Message::Close(_) => return End::ClientClosed,
                // Answered by the socket itself.
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&data) {
                return End::BadFrame(format!("a message is not JSON: {e}"));
            }
            telemetry.received();
            if requests.send(data.to_vec()).await.is_err() {
                // The service's side ended; the other branch says how.
                return std::future::pending::<End>().await;
            }
        }
    };

    let to_client = telemetry.instrument(async {
        let mut replies = match opening.open(pending).await {
            Ok(replies) => replies,
            Err(e) => return End::Failed(e),
        };
        loop {
            // Replies already here go out in one write; the socket is
            // flushed when none is (and waits while the client does not
            // read: the service's stream then waits too).
            let reply = match replies.next().now_or_never() {
                Some(reply) => reply,
                None => {
                    if sink.flush().await.is_err() {
                        return End::ClientGone;
                    }
                    replies.next().await
                }
            };
            let reply = match reply {
                Ok(Some(reply)) => reply,
                Ok(None) => return End::Done,
                Err(e) => return End::Failed(e.into()),
            };
            last.touch();
            if sink.feed(frame(reply, binary)).await.is_err() {
                return End::ClientGone;
            }
            telemetry.sent();
        }
    });

    let idle_out = async {
        loop {
            let at = last.last() + idle;
            if at <= Instant::now() {
                return End::Idle(idle);
            }
            tokio::time::sleep_until(at).await;
        }
    };
    let stopping = async {
        match hold.as_mut() {
            Some(held) => held.stopping().await,
            None => std::future::pending().await,
        }
        End::Stopping
    };

    let end = {
        tokio::pin!(from_client, to_client, idle_out, stopping);
        tokio::select! {
            end = &mut to_client => end,
            end = &mut from_client => end,
            end = &mut idle_out => end,
            end = &mut stopping => end,
        }
    };
    let (close, error) = close_frame(&end);
    // The split sink holds the last reply fed until flushed: it goes out
    // before the close frame (reuniting would drop it).
    if !matches!(end, End::ClientGone) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
    }
    let mut socket = sink.reunite(source).ok();
    if let Some(socket) = socket.as_mut() {
        let closing = async {
            match close {
                Some(frame) => socket.send(Message::Close(Some(frame))).await,
                // The socket answers a client's close frame itself.
                None if matches!(end, End::ClientClosed) => socket.close().await,
                None => Ok(()),
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
    drop(socket);
    opening.telemetry.end(error.as_deref());
    drop(hold);
}

/// When a relay last moved a message or frame (shared by its halves).
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            since: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

fn is_capacity(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// One message of the service as a frame.
fn frame(reply: Vec<u8>, binary: bool) -> Message {
    let data = Bytes::from(reply);
    if binary {
        return Message::Binary(data);
    }
    // The reply was checked to be JSON, hence UTF-8.
    match Utf8Bytes::try_from(data.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(data),
    }
}

/// The close frame telling the client how the stream ended (none when the
/// client is gone), and the error for the stream's span.
fn close_frame(end: &End) -> (Option<CloseFrame>, Option<String>) {
    let error = |code: u16, err: &MicroError| {
        let ws_code = u16::try_from(err.code)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map_or(1011, |c| 4000 + c);
        let reason = close_reason(err);
        (
            Some(CloseFrame {
                code: if code == 0 { ws_code } else { code },
                reason: reason.clone().into(),
            }),
            Some(reason),
        )
    };
    match end {
        End::Done => (
            Some(CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from_static(""),
            }),
            None,
        ),
        End::Failed(err) => error(0, &err.0),
        End::BadFrame(detail) => error(1007, &ApiError::bad_request(detail.clone()).0),
        End::TooBig => error(
            1009,
            &ApiError::new(413, "a message is larger than the gateway's limit").0,
        ),
        End::Idle(idle) => error(
            0,
            &ApiError::new(408, format!("no message either way for {idle:?}")).0,
        ),
        End::Stopping => (
            Some(CloseFrame {
                code: 1001,
                reason: Utf8Bytes::from_static("gateway stopping"),
            }),
            None,
        ),
        End::ClientClosed | End::ClientGone => (None, None),
    }
}

/// `err` as JSON in at most [`MAX_REASON`] bytes: its detail cut (at a
/// character boundary) until it fits.
fn close_reason(err: &MicroError) -> String {
    let full = err.to_json();
    if full.len() <= MAX_REASON {
        return full;
    }
    let mut cut = err.clone();
    let mut detail = err.detail.clone();
    loop {
        let over = cut.to_json().len().saturating_sub(MAX_REASON);
        if over == 0 || detail.is_empty() {
            return cut.to_json();
        }
        let mut end = detail.len().saturating_sub(over.max(1) + 1);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        cut.detail = format!("{detail}…");
    }
}

/// Server-Sent Events: the request is the one message; each reply one
/// `data:` line.
async fn event_stream(
    inner: &Arc<Inner>,
    request: Request,
    resolved: &Resolved,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, inner.options.max_body_bytes).await?;
    let first = if body.iter().all(u8::is_ascii_whitespace) {
        match parts.method {
            Method::GET | Method::HEAD => query_message(parts.uri.query())?,
            _ => None,
        }
        .unwrap_or_else(|| b"{}".to_vec())
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        body.to_vec()
    };
    let opening = Opening::new(inner, resolved, Some(first), &parts.headers, "sse");
    let idle = inner.options.stream_idle_timeout;

    enum State {
        Opening(Box<Opening>),
        Open(Box<(Box<Opening>, JsonStream)>),
        Ended,
    }
    fn failed(mut opening: Box<Opening>, err: &ApiError) -> Option<(Bytes, State)> {
        let event = error_event(&opening, err);
        opening.telemetry.end(Some(&err.0.to_json()));
        Some((event, State::Ended))
    }
    let events =
        futures::stream::unfold(State::Opening(Box::new(opening)), move |state| async move {
            let (opening, mut replies) = match state {
                State::Ended => return None,
                State::Opening(opening) => {
                    let opened = opening
                        .telemetry
                        .instrument(opening.open(futures::stream::empty()))
                        .await;
                    match opened {
                        Ok(replies) => (opening, replies),
                        Err(e) => return failed(opening, &e),
                    }
                }
                State::Open(open) => *open,
            };
            match tokio::time::timeout(idle, replies.next()).await {
                Ok(Ok(Some(reply))) => {
                    opening.telemetry.sent();
                    Some((data_event(reply), State::Open(Box::new((opening, replies)))))
                }
                Ok(Ok(None)) => {
                    let mut opening = opening;
                    opening.telemetry.end(None);
                    None
                }
                Ok(Err(e)) => failed(opening, &e.into()),
                Err(_) => failed(
                    opening,
                    &ApiError::new(408, format!("no message for {idle:?}")),
                ),
            }
        });
    let mut response = Response::new(Body::from_stream(
        events.map(Ok::<_, std::convert::Infallible>),
    ));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `data: <json>\n\n`, the JSON on one line (a newline in JSON is
/// whitespace outside strings, and cannot be inside one).
fn data_event(json: Vec<u8>) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend(json.into_iter().map(|b| match b {
        b'\n' | b'\r' => b' ',
        b => b,
    }));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `event: error` with the error JSON.
fn error_event(opening: &Opening, err: &ApiError) -> Bytes {
    let json = err.0.to_json();
    tracing::debug!(service = %opening.service, endpoint = %opening.endpoint, "event stream failed: {json}");
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: error\n");
    out.extend_from_slice(&data_event(json.into_bytes()));
    Bytes::from(out)
}
