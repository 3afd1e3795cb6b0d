//! The routes: the page's files, and its JSON API (see `docs/web.md`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `/app.js`, `/app.css`, `/favicon.svg` | the page |
//! | `GET /api/services` | every service: name, versions, node and endpoint counts, revision |
//! | `GET /api/services/{name}` | one service: versions with nodes (and their health), endpoints with shapes and a request template |
//! | `POST /api/call` | `{"service", "endpoint", "request", "metadata"}` → `{"reply"}` or `{"error"}` |
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

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use micro_errors::MicroError;
use micro_json::CallOptions;
use micro_registry::Value;
use serde::Deserialize;
use serde_json::{Map, json};

use crate::live::Snapshot;
use crate::{Web, assets, health};

/// Every response body.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The id in error answers the dashboard itself makes.
const ID: &str = "go.micro.web";
/// At most this many nodes of a service are health-checked per request.
const MAX_HEALTH_CHECKS: usize = 64;

/// Answers one request. Never panics on any input.
pub async fn handle<B>(web: &Web, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut response = route(web, request).await;
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

async fn route<B>(web: &Web, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(why) = check_host(web, &request) {
        return error(StatusCode::MISDIRECTED_REQUEST, why);
    }
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    if let Some(asset) = assets::find(&path) {
        if !get {
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
        return response;
    }
    match path.as_str() {
        "/api/services" if get => json_response(StatusCode::OK, &services_summary(&web.snapshot())),
        "/api/events" if get => events(web),
        "/api/call" if method == Method::POST => call(web, request).await,
        "/api/services" | "/api/events" => not_allowed("GET, HEAD"),
        "/api/call" => not_allowed("POST"),
        _ => match path.strip_prefix("/api/services/") {
            Some(name) if get => match percent_decode(name) {
                Some(name) => service(web, &name).await,
                None => error(
                    StatusCode::BAD_REQUEST,
                    "the service name is not valid UTF-8".into(),
                ),
            },
            Some(_) => not_allowed("GET, HEAD"),
            None => error(StatusCode::NOT_FOUND, format!("no page {path}")),
        },
    }
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
            json!({
                "name": name,
                "versions": versions,
                "nodes": nodes,
                "endpoints": endpoints_of(&entry.versions).len(),
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
/// wins, as `micro get service` shows the first).
fn endpoints_of(versions: &[micro_registry::Service]) -> Vec<&micro_registry::Endpoint> {
    let mut seen = std::collections::HashSet::new();
    versions
        .iter()
        .flat_map(|v| v.endpoints.iter())
        .filter(|e| seen.insert(e.name.as_str()))
        .collect()
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
            let result = health::check(&node.address, name, timeout).await;
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
    json_response(
        StatusCode::OK,
        &json!({"name": name, "rev": entry.rev, "versions": versions, "endpoints": endpoints}),
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

/// `POST /api/call`: the call through `micro call`'s JSON path.
async fn call<B>(web: &Web, request: Request<B>) -> Response<Body>
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
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /api/call takes Content-Type: application/json".into(),
        );
    }
    if let Err(why) = check_origin(headers) {
        return error(StatusCode::FORBIDDEN, why);
    }
    let max = web.options.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(max);
    }
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(max),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let call: CallRequest = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a call ({{\"service\", \"endpoint\", \"request\", \"metadata\"}}): {e}"
                ),
            );
        }
    };
    let text = match &call.request {
        None => b"{}".to_vec(),
        Some(serde_json::Value::String(text)) => text.clone().into_bytes(),
        Some(value) => value.to_string().into_bytes(),
    };
    if !web.snapshot().services.contains_key(&call.service) {
        return not_found(web, &call.service);
    }
    let metadata = match micro_json::call_metadata(
        call.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ) {
        Ok(metadata) => metadata,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
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
    let body = crate::sse::stream(web.snapshot.clone(), web.options.keep_alive, permit);
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
