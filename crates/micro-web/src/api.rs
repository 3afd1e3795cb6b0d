//! The routes: the page's files, and its JSON API (see `docs/web.md`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `/app.js`, `/app.css`, `/favicon.svg` | the page |
//! | `GET /api/services` | every service: name, versions, node and endpoint counts, revision |
//! | `GET /api/services/{name}` | one service: versions with nodes (and their health), endpoints with shapes and a request template, subscriptions (topic, handler, message shape) |
//! | `POST /api/call` | `{"service", "endpoint", "request", "metadata"}` → `{"reply"}` or `{"error"}` |
//! | `POST /api/stream` | the same body, for a streaming endpoint → one JSON line per reply as it comes (`{"message"}`), then `{"end"}` or `{"error"}` |
//! | `GET /api/events` | Server-Sent Events: `services` (the summary) at once and after each change |
//!
//! Every answer carries a strict Content-Security-Policy and `nosniff`.
//! Requests must name an allowed host ([`crate::WebOptions::allowed_hosts`]:
//! loopback names when listening on loopback, against DNS rebinding).
//! `POST /api/call` takes only `application/json` (so a cross-site form
//! cannot send it and a cross-site script needs a CORS preflight, which is
//! never granted), refuses an `Origin` other than the dashboard's own, and
//! bodies past [`crate::WebOptions::max_body_bytes`]. Errors are go-micro's
//! error JSON under `"error"`: `{"id", "code", "detail", "status"}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use micro_errors::MicroError;
use micro_json::CallOptions;
use micro_json::client::JsonStream;
use micro_registry::Value;
use serde::Deserialize;
use serde_json::{Map, json};
use tower::ServiceExt;

use crate::live::Snapshot;
use crate::{Web, assets, health};

/// Every response body.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The id in error answers the dashboard itself makes.
const ID: &str = "go.micro.web";
/// At most this many nodes of a service are health-checked per request.
const MAX_HEALTH_CHECKS: usize = 64;

/// The dashboard's routes: the page and its assets, the JSON API and its
/// live events, each answer with the security headers, and no answer at all
/// for a `Host` that is not served here. Never panics on any input.
pub fn router(web: Arc<Web>) -> axum::Router {
    let get_only = || async { not_allowed("GET, HEAD") };
    axum::Router::new()
        .route(
            "/api/services",
            get(|State(web): State<Arc<Web>>| async move {
                json_response(StatusCode::OK, &services_summary(&web.snapshot()))
            })
            .fallback(get_only),
        )
        .route(
            "/api/events",
            get(|State(web): State<Arc<Web>>| async move { events(&web) }).fallback(get_only),
        )
        .route(
            "/api/call",
            post(
                |State(web): State<Arc<Web>>, request: axum::extract::Request| async move {
                    call(&web, request).await
                },
            )
            .fallback(|| async { not_allowed("POST") }),
        )
        .route(
            "/api/stream",
            post(
                |State(web): State<Arc<Web>>, request: axum::extract::Request| async move {
                    stream(&web, request).await
                },
            )
            .fallback(|| async { not_allowed("POST") }),
        )
        .route("/api/services/", get(named_service).fallback(get_only))
        .route(
            "/api/services/{*name}",
            get(named_service).fallback(get_only),
        )
        .fallback(web_service_or_asset)
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            host_allowed,
        ))
        .with_state(web)
}

/// Answers one request through [`router`] (for tests and embedding).
pub async fn handle<B>(web: &Arc<Web>, request: Request<B>) -> Response<axum::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request = request.map(axum::body::Body::new);
    match router(web.clone()).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The headers every answer carries.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(assets::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Refuses a request for a `Host` not served here (DNS rebinding).
async fn host_allowed(
    State(web): State<Arc<Web>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Err(why) = check_host(&web, &request) {
        return error(StatusCode::MISDIRECTED_REQUEST, why).into_response();
    }
    next.run(request).await
}

/// `GET /api/services/{name}`: one service, its name percent-decoded.
async fn named_service(State(web): State<Arc<Web>>, uri: http::Uri) -> Response<Body> {
    let name = uri
        .path()
        .strip_prefix("/api/services/")
        .unwrap_or_default();
    match percent_decode(name) {
        Some(name) => service(&web, &name).await,
        None => error(
            StatusCode::BAD_REQUEST,
            "the service name is not valid UTF-8".into(),
        ),
    }
}

/// The page and its assets; anything else is not found.
/// The namespace whose services the dashboard serves under `/NAME/`.
pub const WEB_NAMESPACE: &str = "go.micro.web";

/// `/NAME/…` of a registered web service (`go.micro.web.NAME`) goes to it,
/// as go-micro's dashboard did: the path without `/NAME` (`/` at least), the
/// prefix in `X-Micro-Web-Base-Path`, WebSockets too, through the client's
/// retry and balance stages ([`micro_api::WebProxy`]). Anything else is a
/// page of the dashboard, or 404.
async fn web_service_or_asset(
    State(web): State<Arc<Web>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    if let Some((name, rest)) = web_service_path(request.uri().path()) {
        let service = format!("{WEB_NAMESPACE}.{name}");
        if web.snapshot().services.contains_key(&service) {
            let query = request.uri().query().map(|q| format!("?{q}"));
            let path = format!("{rest}{}", query.unwrap_or_default());
            let base = format!("/{name}");
            return web.proxy.forward(&service, path, &base, request).await;
        }
    }
    asset(request.method().clone(), request.uri().clone())
        .await
        .into_response()
}

/// `/NAME/rest` → (`NAME`, `/rest`); `/NAME` → (`NAME`, `/`). Names are
/// what go-micro's resolver took: letters, digits, `-` and `_`.
fn web_service_path(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.strip_prefix('/')?;
    let (name, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some((name, rest))
}

async fn asset(method: Method, uri: http::Uri) -> Response<Body> {
    let path = uri.path();
    let Some(asset) = assets::find(path) else {
        return error(StatusCode::NOT_FOUND, format!("no page {path}"));
    };
    if method != Method::GET && method != Method::HEAD {
        return not_allowed("GET, HEAD");
    }
    let mut response = Response::new(full(Bytes::from_static(asset.body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The `Host` must be an allowed name (any port), when names are limited.
fn check_host<B>(web: &Web, request: &Request<B>) -> Result<(), String> {
    if web.options.allowed_hosts.is_empty() {
        return Ok(());
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("");
    let name = host_name(host);
    if web
        .options
        .allowed_hosts
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(name))
    {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not served here (the dashboard listens on loopback: use http://127.0.0.1 or http://localhost)"
        ))
    }
}

/// `host:port` → `host` (`[::1]:8082` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// `GET /api/services`: the summary the page lists (also each SSE event).
pub fn services_summary(snapshot: &Snapshot) -> serde_json::Value {
    let services: Vec<serde_json::Value> = snapshot
        .services
        .iter()
        .map(|(name, entry)| {
            let versions: Vec<&str> = entry.versions.iter().map(|v| v.version.as_str()).collect();
            let nodes: usize = entry.versions.iter().map(|v| v.nodes.len()).sum();
            let web = name
                .strip_prefix(WEB_NAMESPACE)
                .and_then(|n| n.strip_prefix('.'))
                .filter(|n| web_service_path(&format!("/{n}")).is_some())
                .map(|n| format!("/{n}/"));
            json!({
                "name": name,
                "web": web,
                "versions": versions,
                "nodes": nodes,
                "endpoints": endpoints_of(&entry.versions).len(),
                "subscriptions": subscriptions_of(&entry.versions).len(),
                "rev": entry.rev,
            })
        })
        .collect();
    json!({
        "services": services,
        "listed": snapshot.seq > 0,
        "registry_error": snapshot.registry_error,
        "omitted": snapshot.omitted,
    })
}

/// The endpoints of every version, each name once (the first version's
/// wins, as `micro get service` shows the first); subscriptions aside (see
/// [`subscriptions_of`]): they take events, not calls.
fn endpoints_of(versions: &[micro_registry::Service]) -> Vec<&micro_registry::Endpoint> {
    let mut seen = std::collections::HashSet::new();
    versions
        .iter()
        .flat_map(|v| v.endpoints.iter())
        .filter(|e| subscribed_topic(e).is_none())
        .filter(|e| seen.insert(e.name.as_str()))
        .collect()
}

/// The service's subscriptions, each topic once: the endpoints go-micro
/// (and the toolkit's server) register for them, metadata
/// `{"subscriber": "true", "topic": <topic>}`, named after the handler
/// (`Func` for every function), so told apart by topic.
fn subscriptions_of(versions: &[micro_registry::Service]) -> Vec<&micro_registry::Endpoint> {
    let mut seen = std::collections::HashSet::new();
    versions
        .iter()
        .flat_map(|v| v.endpoints.iter())
        .filter(|e| subscribed_topic(e).is_some_and(|topic| seen.insert(topic)))
        .collect()
}

/// The topic of a subscriber's endpoint; `None` for an endpoint to call.
fn subscribed_topic(endpoint: &micro_registry::Endpoint) -> Option<&str> {
    if endpoint.metadata.get("subscriber").map(String::as_str) != Some("true") {
        return None;
    }
    endpoint.metadata.get("topic").map(String::as_str)
}

/// `GET /api/services/{name}`: versions, nodes with health, endpoints.
async fn service(web: &Web, name: &str) -> Response<Body> {
    let snapshot = web.snapshot();
    let Some(entry) = snapshot.services.get(name) else {
        return not_found(web, name);
    };
    let timeout = web.options.health_timeout;
    let checks = entry
        .versions
        .iter()
        .flat_map(|v| v.nodes.iter())
        .take(MAX_HEALTH_CHECKS)
        .map(|node| async move {
            let started = Instant::now();
            let result = health::check(node, name, timeout, web.client.options()).await;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let health = match result {
                Ok(status) => json!({"status": status.as_str_name(), "latency_ms": latency}),
                Err(why) => json!({"status": "ERROR", "error": why, "latency_ms": latency}),
            };
            (node.id.clone(), health)
        });
    let mut health: BTreeMap<String, serde_json::Value> = futures::future::join_all(checks)
        .await
        .into_iter()
        .collect();
    let versions: Vec<serde_json::Value> = entry
        .versions
        .iter()
        .map(|v| {
            let nodes: Vec<serde_json::Value> = v
                .nodes
                .iter()
                .map(|n| {
                    json!({
                        "id": n.id,
                        "address": n.address,
                        "metadata": n.metadata,
                        "health": health.remove(&n.id).unwrap_or_else(|| json!({"status": "NOT_CHECKED"})),
                    })
                })
                .collect();
            json!({"version": v.version, "metadata": v.metadata, "nodes": nodes})
        })
        .collect();
    let endpoints: Vec<serde_json::Value> = endpoints_of(&entry.versions)
        .into_iter()
        .map(|e| {
            json!({
                "name": e.name,
                "metadata": e.metadata,
                "request": e.request,
                "response": e.response,
                "template": e.request.as_ref().map_or_else(|| json!({}), template),
            })
        })
        .collect();
    let subscriptions: Vec<serde_json::Value> = subscriptions_of(&entry.versions)
        .into_iter()
        .map(|e| {
            json!({
                "topic": subscribed_topic(e),
                "handler": e.name,
                "message": e.request,
                "metadata": e.metadata,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "name": name,
            "rev": entry.rev,
            "versions": versions,
            "endpoints": endpoints,
            "subscriptions": subscriptions,
        }),
    )
}

/// A request to start from, for a message of shape `value`: each field by
/// the name it is registered under (the name calls accept), with its zero
/// value.
pub fn template(value: &Value) -> serde_json::Value {
    let mut fields = Map::new();
    for field in &value.values {
        // A oneof (`isMsg_Field`): which member to set is the caller's choice.
        if field.kind.starts_with("is") && field.kind.contains('_') && field.values.is_empty() {
            continue;
        }
        fields.insert(field.name.clone(), zero(field));
    }
    serde_json::Value::Object(fields)
}

fn zero(field: &Value) -> serde_json::Value {
    if !field.values.is_empty() {
        return template(field);
    }
    match field.kind.as_str() {
        "string" | "[]uint8" => json!(""),
        "bool" => json!(false),
        "int32" | "int64" | "uint32" | "uint64" | "float32" | "float64" | "int" | "uint" => {
            json!(0)
        }
        // A map: go-micro writes no type for it.
        "" => json!({}),
        kind if kind.starts_with("[]") => json!([]),
        // An enum, or a message past the depth the registry describes.
        _ => serde_json::Value::Null,
    }
}

/// What `POST /api/call` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    service: String,
    endpoint: String,
    /// The request: a JSON text (as typed in the form) or a JSON value.
    #[serde(default)]
    request: Option<serde_json::Value>,
    /// Sent with the call as gRPC metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// A call from the form, read and checked: the call, its request text and
/// metadata, or the error answer.
struct FormCall {
    call: CallRequest,
    text: Vec<u8>,
    metadata: tonic::metadata::MetadataMap,
}

/// Reads `POST /api/call` or `/api/stream` (`route`): JSON only, the
/// dashboard's own origin, the body within its limit, a known service.
async fn read_call<B>(
    web: &Web,
    request: Request<B>,
    route: &str,
) -> Result<FormCall, Response<Body>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let headers = request.headers();
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("POST {route} takes Content-Type: application/json"),
        ));
    }
    if let Err(why) = check_origin(headers) {
        return Err(error(StatusCode::FORBIDDEN, why));
    }
    let max = web.options.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(max)),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ));
        }
    };
    let call: CallRequest = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a call ({{\"service\", \"endpoint\", \"request\", \"metadata\"}}): {e}"
                ),
            ));
        }
    };
    let text = match &call.request {
        None => b"{}".to_vec(),
        Some(serde_json::Value::String(text)) => text.clone().into_bytes(),
        Some(value) => value.to_string().into_bytes(),
    };
    if !web.snapshot().services.contains_key(&call.service) {
        return Err(not_found(web, &call.service));
    }
    let metadata =
        micro_json::call_metadata(call.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    Ok(FormCall {
        call,
        text,
        metadata,
    })
}

/// `POST /api/call`: the call through `micro call`'s JSON path.
async fn call<B>(web: &Web, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let FormCall {
        call,
        text,
        metadata,
    } = match read_call(web, request, "/api/call").await {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let timeout = web.options.call_timeout;
    let options = CallOptions {
        timeout,
        idempotent: false,
        metadata,
    };
    let started = Instant::now();
    let reply = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        web.dynamic
            .call_endpoint(&call.service, &call.endpoint, &text, options),
    )
    .await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    match reply {
        Ok(Ok(reply)) => match serde_json::from_slice::<serde_json::Value>(&reply) {
            Ok(reply) => {
                json_response(StatusCode::OK, &json!({"reply": reply, "took_ms": took_ms}))
            }
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                format!("the reply is not JSON: {e}"),
            ),
        },
        Ok(Err(e)) => {
            let err = e.to_micro_error("go.micro.client");
            let status = u16::try_from(err.code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(status, &json!({"error": err, "took_ms": took_ms}))
        }
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {timeout:?}"),
        ),
    }
}

/// `POST /api/stream`: the form's request as the one message of a streaming
/// endpoint's stream (the sending side then ends), and each reply as it
/// comes: one JSON line (`application/x-ndjson`) per reply
/// (`{"message": ...}`), then `{"end": {"took_ms"}}` or `{"error": ...}`.
/// Shares the live streams' cap; each reply must come within the call
/// timeout.
async fn stream<B>(web: &Web, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let FormCall {
        call,
        text,
        metadata,
    } = match read_call(web, request, "/api/stream").await {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&text) {
        return error(StatusCode::BAD_REQUEST, format!("request is not JSON: {e}"));
    }
    let Ok(permit) = web.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many streams open (at most {})",
                web.options.max_streams
            ),
        );
    };
    let options = CallOptions {
        // The stream's own bound is the time between replies.
        timeout: Duration::ZERO,
        idempotent: false,
        metadata,
    };
    let (dynamic, idle) = (web.dynamic.clone(), web.options.call_timeout);
    let started = Instant::now();
    let opening: futures::future::BoxFuture<'static, _> = Box::pin(async move {
        let first = futures::stream::iter([text]);
        dynamic
            .stream_endpoint(&call.service, &call.endpoint, first, options)
            .await
    });
    enum State {
        Opening(futures::future::BoxFuture<'static, Result<JsonStream, micro_json::Error>>),
        Open(Box<JsonStream>),
        Ended,
    }
    let lines = futures::stream::unfold(State::Opening(opening), move |state| async move {
        let mut replies = match state {
            State::Ended => return None,
            State::Opening(opening) => match opening.await {
                Ok(replies) => Box::new(replies),
                Err(e) => return Some((failed_line(&e, started), State::Ended)),
            },
            State::Open(replies) => replies,
        };
        match tokio::time::timeout(idle, replies.next()).await {
            Ok(Ok(Some(reply))) => {
                let message: serde_json::Value =
                    serde_json::from_slice(&reply).unwrap_or(serde_json::Value::Null);
                Some((ndjson(&json!({ "message": message })), State::Open(replies)))
            }
            Ok(Ok(None)) => {
                let took_ms = started.elapsed().as_secs_f64() * 1000.0;
                Some((ndjson(&json!({"end": {"took_ms": took_ms}})), State::Ended))
            }
            Ok(Err(e)) => Some((failed_line(&e, started), State::Ended)),
            Err(_) => {
                let e = micro_json::Error::new(
                    micro_json::ErrorKind::Timeout,
                    format!("no reply within {idle:?}"),
                );
                Some((failed_line(&e, started), State::Ended))
            }
        }
    });
    let body = http_body_util::StreamBody::new(futures::StreamExt::map(lines, move |bytes| {
        let _held = &permit;
        Ok::<_, Infallible>(http_body::Frame::data(bytes))
    }));
    let mut response = Response::new(body.boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `value` as one line of JSON.
fn ndjson(value: &serde_json::Value) -> Bytes {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// A stream's failure as its last line.
fn failed_line(e: &micro_json::Error, started: Instant) -> Bytes {
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    ndjson(&json!({"error": e.to_micro_error("go.micro.client"), "took_ms": took_ms}))
}

/// A browser sends `Origin` (and `Sec-Fetch-Site`) with every POST: it must
/// be this dashboard. Clients that send neither (curl) are not browsers a
/// page could drive, and are let through.
fn check_origin(headers: &http::HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(format!(
            "calls from other sites are refused (Sec-Fetch-Site: {site})"
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host));
    if same {
        Ok(())
    } else {
        Err(format!(
            "calls from other origins are refused (Origin {origin:?}, this is {host:?})"
        ))
    }
}

/// `GET /api/events`: a live stream, or 503 when too many are open.
fn events(web: &Web) -> Response<Body> {
    let Ok(permit) = web.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many live streams open (at most {})",
                web.options.max_streams
            ),
        );
    };
    let body = crate::sse::stream(
        web.snapshot.clone(),
        services_summary,
        web.options.keep_alive,
        permit,
    );
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn not_found(web: &Web, name: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "service {name} not found in registry [{}]",
            web.client.registry().name()
        ),
    )
}

fn too_large(max: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {max} bytes"),
    )
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// go-micro's error JSON, under `"error"`.
fn error(status: StatusCode, detail: String) -> Response<Body> {
    let err = MicroError::new(ID, i32::from(status.as_u16()), detail);
    json_response(status, &json!({ "error": err }))
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// `%2E` and the like decoded; `None` if the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use micro_client::{Client, ClientOptions};
    use micro_registry::memory::MemoryRegistry;
    use micro_registry::{SharedRegistry, Value};
    use micro_testing::{TestGreeter, TestServer, loopback_options};

    use super::*;
    use crate::{Web, WebOptions};

    const GREETER: &str = "go.micro.srv.greeter";

    fn web(registry: SharedRegistry) -> Arc<Web> {
        Web::new(
            Client::new(registry, ClientOptions::default()),
            WebOptions::default(),
        )
    }

    /// A dashboard on a memory registry with one real greeter registered.
    async fn with_greeter() -> (Arc<Web>, TestServer) {
        let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
        let server = tokio::task::spawn_blocking({
            let registry = registry.clone();
            move || TestServer::start(registry, GREETER, TestGreeter::new("a"), loopback_options())
        })
        .await
        .unwrap();
        let web = web(registry);
        let mut rx = web.snapshot.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.services.contains_key(GREETER)),
        )
        .await
        .expect("the greeter shows within 10 s")
        .unwrap();
        (web, server)
    }

    fn request(method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:8082")
    }

    fn post_call(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        request(Method::POST, "/api/call")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ORIGIN, "http://127.0.0.1:8082")
            .body(Full::new(body.into()))
            .unwrap()
    }

    async fn send(
        web: &Arc<Web>,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, serde_json::Value) {
        let response = handle(web, request).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    fn detail(value: &serde_json::Value) -> &str {
        value["error"]["detail"].as_str().unwrap_or("")
    }

    #[test]
    fn subscriptions_are_told_apart_by_topic_and_are_no_endpoints() {
        let subscriber = |topic: &str| micro_registry::Endpoint {
            name: "Func".into(),
            request: None,
            response: None,
            metadata: [
                ("subscriber".to_string(), "true".to_string()),
                ("topic".to_string(), topic.to_string()),
            ]
            .into(),
        };
        let hello = micro_registry::Endpoint {
            name: "Greeter.Hello".into(),
            ..subscriber("x")
        };
        let hello = micro_registry::Endpoint {
            metadata: Default::default(),
            ..hello
        };
        let versions = [
            micro_registry::Service {
                endpoints: vec![hello, subscriber("a"), subscriber("b")],
                ..Default::default()
            },
            micro_registry::Service {
                version: "2".into(),
                endpoints: vec![subscriber("a"), subscriber("c")],
                ..Default::default()
            },
        ];
        let names: Vec<&str> = endpoints_of(&versions)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["Greeter.Hello"]);
        let topics: Vec<Option<&str>> = subscriptions_of(&versions)
            .into_iter()
            .map(subscribed_topic)
            .collect();
        assert_eq!(topics, [Some("a"), Some("b"), Some("c")]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_services_and_shows_one_with_health_and_templates() {
        let (web, server) = with_greeter().await;
        let get = |path: &str| request(Method::GET, path).body(Full::default()).unwrap();
        let (status, list) = send(&web, get("/api/services")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["listed"], true);
        assert_eq!(list["services"][0]["name"], GREETER);
        assert_eq!(list["services"][0]["nodes"], 1);

        let (status, one) = send(&web, get("/api/services/go.micro.srv.greeter")).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        let node = &one["versions"][0]["nodes"][0];
        assert_eq!(node["id"], server.node_id.as_str());
        assert_eq!(node["address"], server.address.to_string());
        assert_eq!(node["health"]["status"], "SERVING", "{node}");
        let hello = one["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "Greeter.Hello")
            .expect("Greeter.Hello listed");
        assert_eq!(hello["template"], json!({"name": "", "count": 0}));
        assert_eq!(hello["request"]["values"][0]["name"], "name");
        // Percent-encoded names are decoded.
        let (status, _) = send(&web, get("/api/services/go%2Emicro.srv.greeter")).await;
        assert_eq!(status, StatusCode::OK);
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_through_the_json_path_and_shows_service_errors() {
        let (web, server) = with_greeter().await;
        let (status, answer) = send(
            &web,
            post_call(
                r#"{"service":"go.micro.srv.greeter","endpoint":"Greeter.Hello","request":"{\"name\":\"Web\"}","metadata":{"X-Who":"test"}}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["reply"]["msg"], "Hello Web from a");
        let sent = server.greeter.last_metadata().unwrap();
        assert_eq!(sent.get("x-who").unwrap(), "test");

        // A request given as a JSON value works the same.
        let (status, answer) = send(
            &web,
            post_call(r#"{"service":"go.micro.srv.greeter","endpoint":"Greeter.Hello","request":{"name":"fail"}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
        assert!(detail(&answer).contains("failed on purpose"), "{answer}");

        // The request text is checked as micro call checks it.
        let (status, answer) = send(
            &web,
            post_call(r#"{"service":"go.micro.srv.greeter","endpoint":"Greeter.Hello","request":"{name"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&answer).contains("request is not JSON"), "{answer}");
        let (status, answer) = send(
            &web,
            post_call(r#"{"service":"go.micro.srv.greeter","endpoint":"Hello","request":"{}"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&answer).contains("not Handler.Method"), "{answer}");
        let (status, answer) = send(
            &web,
            post_call(
                r#"{"service":"go.micro.srv.greeter","endpoint":"Greeter.Nope","request":"{}"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        let (status, answer) = send(
            &web,
            post_call(r#"{"service":"go.micro.srv.greeter","endpoint":"Greeter.Hello","metadata":{"grpc-timeout":"1S"}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&answer).contains("grpc-timeout"), "{answer}");
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn refuses_bad_json_unknown_services_and_unknown_pages() {
        let web = web(Arc::new(MemoryRegistry::new()));
        assert!(web.listed(Duration::from_secs(5)).await);
        let (status, answer) = send(&web, post_call("{not json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&answer).contains("not a call"), "{answer}");
        let (status, answer) = send(
            &web,
            post_call(r#"{"service":"x","endpoint":"A.B","extra":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["id"], "go.micro.web");
        assert_eq!(answer["error"]["code"], 400);

        let (status, answer) = send(
            &web,
            post_call(r#"{"service":"go.micro.srv.nobody","endpoint":"A.B","request":"{}"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            detail(&answer),
            "service go.micro.srv.nobody not found in registry [memory]"
        );
        let get = |path: &str| request(Method::GET, path).body(Full::default()).unwrap();
        let (status, _) = send(&web, get("/api/services/go.micro.srv.nobody")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(&web, get("/api/services/%FF")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = send(&web, get("/nothing-here")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(&web, get("/api/call")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let post = request(Method::POST, "/api/services")
            .body(Full::default())
            .unwrap();
        let response = handle(&web, post).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn refuses_oversize_bodies_declared_or_not() {
        let web = Web::new(
            Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default()),
            WebOptions {
                max_body_bytes: 64,
                ..WebOptions::default()
            },
        );
        let big = format!(
            r#"{{"service":"s","endpoint":"A.B","request":"{}"}}"#,
            "x".repeat(100)
        );
        let (status, answer) = send(&web, post_call(big.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        // Without a Content-Length (a chunked body), the read stops at the cap.
        let mut request = post_call(big);
        request.headers_mut().remove(header::CONTENT_LENGTH);
        let (status, _) = send(&web, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let mut request = post_call("{}");
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000000"));
        let (status, _) = send(&web, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn refuses_calls_from_other_origins_and_other_content_types() {
        let web = web(Arc::new(MemoryRegistry::new()));
        let body = r#"{"service":"go.micro.srv.nobody","endpoint":"A.B"}"#;
        let mut cross = post_call(body);
        cross.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        let (status, answer) = send(&web, cross).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(detail(&answer).contains("other origins"), "{answer}");
        let mut other_port = post_call(body);
        other_port.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9999"),
        );
        assert_eq!(send(&web, other_port).await.0, StatusCode::FORBIDDEN);
        let mut null = post_call(body);
        null.headers_mut()
            .insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(send(&web, null).await.0, StatusCode::FORBIDDEN);
        let mut site = post_call(body);
        site.headers_mut().remove(header::ORIGIN);
        site.headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(send(&web, site).await.0, StatusCode::FORBIDDEN);
        // The same origin, and no origin at all (curl), get through (to the 404).
        assert_eq!(send(&web, post_call(body)).await.0, StatusCode::NOT_FOUND);
        let mut curl = post_call(body);
        curl.headers_mut().remove(header::ORIGIN);
        assert_eq!(send(&web, curl).await.0, StatusCode::NOT_FOUND);

        let mut form = post_call(body);
        form.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(send(&web, form).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut text = post_call(body);
        text.headers_mut().remove(header::CONTENT_TYPE);
        assert_eq!(send(&web, text).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut charset = post_call(body);
        charset.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(send(&web, charset).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn loopback_dashboards_answer_only_loopback_host_names() {
        let web = web(Arc::new(MemoryRegistry::new()));
        for host in [
            "127.0.0.1:8082",
            "localhost:8082",
            "[::1]:8082",
            "LOCALHOST",
        ] {
            let page = Request::get("/")
                .header(header::HOST, host)
                .body(Full::default())
                .unwrap();
            assert_eq!(handle(&web, page).await.status(), StatusCode::OK, "{host}");
        }
        let rebound = Request::get("/api/services")
            .header(header::HOST, "attacker.example:8082")
            .body(Full::default())
            .unwrap();
        let (status, answer) = send(&web, rebound).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(detail(&answer).contains("attacker.example"), "{answer}");
    }

    #[tokio::test]
    async fn serves_the_page_with_types_and_a_strict_policy() {
        let web = web(Arc::new(MemoryRegistry::new()));
        for (path, kind) in [
            ("/", "text/html; charset=utf-8"),
            ("/index.html", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/app.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
        ] {
            let response = handle(
                &web,
                request(Method::GET, path).body(Full::default()).unwrap(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], kind, "{path}");
            let csp = response.headers()["content-security-policy"]
                .to_str()
                .unwrap();
            assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
            assert!(!csp.contains("unsafe"), "{csp}");
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        }
        // No inline scripts, styles or event handlers for the policy to block.
        let html = std::str::from_utf8(assets::find("/").unwrap().body).unwrap();
        assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains(" on"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing from the network"
        );
    }

    #[tokio::test]
    async fn event_streams_start_with_the_services_and_are_capped() {
        let web = Web::new(
            Client::new(Arc::new(MemoryRegistry::new()), ClientOptions::default()),
            WebOptions {
                max_streams: 2,
                ..WebOptions::default()
            },
        );
        assert!(web.listed(Duration::from_secs(5)).await);
        let open = || {
            handle(
                &web,
                request(Method::GET, "/api/events")
                    .body(Full::default())
                    .unwrap(),
            )
        };
        let mut first = open().await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CONTENT_TYPE], "text/event-stream");
        let frame = first.body_mut().frame().await.unwrap().unwrap();
        let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        assert!(
            text.starts_with("retry: 1000\nevent: services\ndata: {"),
            "{text}"
        );
        assert!(text.contains(r#""services":[]"#), "{text}");
        let second = open().await;
        assert_eq!(second.status(), StatusCode::OK);
        let third = open().await;
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A closed stream gives its place back.
        drop(first);
        assert_eq!(open().await.status(), StatusCode::OK);
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn event_streams_send_changes_and_keep_alive_comments() {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let mut body = crate::sse::stream(rx, services_summary, Duration::from_secs(15), permit);
        let mut next = async || {
            let frame = body.frame().await.unwrap().unwrap();
            String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
        };
        assert!(next().await.contains("event: services"));
        // Quiet: a comment after the keep-alive interval (paused time).
        let started = tokio::time::Instant::now();
        assert_eq!(next().await, ": keep-alive\n\n");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        let mut snapshot = Snapshot {
            seq: 1,
            ..Snapshot::default()
        };
        snapshot.services.insert(
            GREETER.into(),
            crate::live::Entry {
                versions: vec![micro_registry::Service::new(GREETER, "latest")],
                rev: 1,
            },
        );
        tx.send(Arc::new(snapshot)).unwrap();
        let event = next().await;
        assert!(event.starts_with("event: services\ndata: ") && event.ends_with("\n\n"));
        assert!(event.contains(GREETER), "{event}");
        // The dashboard stopping ends the stream.
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn templates_use_registered_names_and_zero_values() {
        let value = |name: &str, kind: &str| Value {
            name: name.into(),
            kind: kind.into(),
            values: vec![],
        };
        let mut nested = value("profile", "Profile");
        nested.values = vec![value("age", "int32"), value("tags", "[]string")];
        let mut request = value("Request", "Request");
        request.values = vec![
            value("userName", "string"),
            value("admin", "bool"),
            value("score", "float64"),
            value("labels", ""),
            value("blob", "[]uint8"),
            value("kind", "Kind"),
            value("Choice", "isRequest_Choice"),
            nested,
        ];
        assert_eq!(
            template(&request),
            json!({
                "userName": "", "admin": false, "score": 0, "labels": {}, "blob": "",
                "kind": null, "profile": {"age": 0, "tags": []}
            })
        );
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("127.0.0.1:8082"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8082"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("localhost"), "localhost");
    }
}
