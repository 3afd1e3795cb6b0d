//! The handlers behind every path but `/`, and what they share: reading the
//! body within its limit, the registry check, each call's time budget.

pub(crate) mod api;
mod dial;
pub(crate) mod event;
pub(crate) mod http;
pub(crate) mod rpc;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderValue, Method, header};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::{HandlerKind, Inner, VERSION};

/// When the answer to a request is due; set by [`crate::edge`] for the
/// handlers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(pub(crate) Instant);

/// `/`: `{"version": ...}`.
pub(crate) async fn version() -> Response {
    let body = serde_json::json!({ "version": VERSION }).to_string();
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The gateway's innermost step (after the edge, [`crate::edge`]): `/`
/// answers [`version`], every other path goes to the configured handler.
pub(crate) async fn handle(inner: Arc<Inner>, request: Request) -> Response {
    if request.uri().path() == "/" {
        return version().await;
    }
    dispatch(inner, request).await
}

/// Every other path: the configured handler.
async fn dispatch(inner: Arc<Inner>, request: Request) -> Response {
    // A WebSocket or an event stream to an endpoint that streams, under the
    // api and rpc handlers (go-micro's gateway routes streams to its rpc
    // handler whatever the endpoint's handler).
    let request = match stream::wanted(request.headers()) {
        Some(wanted)
            if !matches!(
                inner.options.handler,
                HandlerKind::Http | HandlerKind::Event
            ) =>
        {
            match open_stream(&inner, request, wanted).await {
                Ok(Ok(response)) => return response,
                Ok(Err(request)) => request,
                Err(e) => return e.into_response(),
            }
        }
        _ => request,
    };
    let result = match inner.options.handler {
        HandlerKind::Api => api::handle(&inner, request).await,
        HandlerKind::Rpc => rpc::handle(&inner, request).await,
        HandlerKind::Http | HandlerKind::Web => http::handle(&inner, request).await,
        HandlerKind::Event => event::handle(&inner, request).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The stream `request` asks for, or the request back if its path names no
/// streaming endpoint.
async fn open_stream(
    inner: &Arc<Inner>,
    request: Request,
    wanted: stream::Wanted,
) -> Result<Result<Response, Request>, ApiError> {
    let Ok(resolved) = inner.routes.resolve(request.uri().path()) else {
        return Ok(Err(request));
    };
    stream::serve(inner, request, &resolved, wanted).await
}

/// The whole body, or 413 past `limit` (checked against `Content-Length`
/// first, then while reading).
pub(crate) async fn read_body(
    headers: &::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::body_too_large(limit);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// When the request must be answered (the edge sets it; now + the default
/// otherwise).
pub(crate) fn deadline(inner: &Inner, request: &Request) -> Instant {
    request
        .extensions()
        .get::<Deadline>()
        .map_or_else(|| Instant::now() + inner.options.request_timeout, |d| d.0)
}

/// The budget of one call: the client's timeout, or less if the request is
/// due sooner.
pub(crate) fn call_timeout(inner: &Inner, deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(inner.client.options().request_timeout)
}

/// 404 unless `service` is registered; 503 if it was and has no live node.
pub(crate) async fn ensure_registered(
    inner: &Inner,
    service: &str,
    deadline: Instant,
) -> Result<(), ApiError> {
    use crate::catalog::Presence;
    let budget = deadline.saturating_duration_since(Instant::now());
    // The messages are built only when needed: this runs on every request.
    let registry = || inner.client.registry().name();
    let shown = || crate::error::shown(service);
    match inner.catalog.presence(service, budget).await {
        Presence::Live => Ok(()),
        Presence::Gone => Err(ApiError::unavailable(format!(
            "service {}: no live node in registry [{}]",
            shown(),
            registry()
        ))),
        Presence::Unknown => Err(ApiError::not_found(format!(
            "service {} not found in registry [{}]",
            shown(),
            registry()
        ))),
    }
}

/// Marks `response` with the route it reached (see
/// [`micro_telemetry::api::Route`]).
pub(crate) fn routed(mut response: Response, route: Arc<str>) -> Response {
    response
        .extensions_mut()
        .insert(micro_telemetry::api::Route(route));
    response
}

/// Safe methods: the only ones whose calls are marked idempotent, so retried
/// after a failure where the service may have started the work. (PUT and
/// DELETE are idempotent in HTTP's sense, but a service handler behind them
/// need not be.)
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}
