//! The `http` handler: a reverse proxy to the HTTP service named by the
//! first path part (`/foo/...` → `<namespace>.foo`; `/v1/foo/...` →
//! `<namespace>.v1.foo`), balanced over its registered nodes by the same
//! node set, selector, health and load as the client's gRPC calls
//! ([`Picker::pick_node`](micro_client::Picker::pick_node)).
//!
//! Only addresses of registered nodes are dialled, and only when they are a
//! plain `host:port`. The request goes upstream with its original path and
//! query; hop-by-hop headers are dropped both ways and `X-Forwarded-For`
//! gains the peer. A node that refuses the connection is skipped for the
//! next one (the request was not sent). A node that does not answer within
//! the attempt timeout, or whose connection breaks, is tried again elsewhere
//! for GET and HEAD; otherwise that is a 504 or 502. Answers name the
//! service, never the node: that is logged under the request id.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use micro_client::{Pick, PickOutcome};

use super::{deadline, ensure_registered, is_safe, read_body, routed};
use crate::Inner;
use crate::convert::is_hop_by_hop;
use crate::error::ApiError;
use crate::serve::RemoteAddr;

/// The HTTP/1 client the proxy dials nodes with.
#[derive(Clone, Debug)]
pub(crate) struct ProxyClient {
    client: HyperClient<HttpConnector, Full<Bytes>>,
}

impl ProxyClient {
    pub(crate) fn new(dial_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(dial_timeout));
        connector.set_nodelay(true);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        ProxyClient { client }
    }
}

pub(crate) async fn handle(inner: &Inner, request: Request) -> Result<Response, ApiError> {
    let deadline = deadline(inner, &request);
    let service = inner
        .resolver
        .resolve_proxy(request.uri().path())
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let remote = request.extensions().get::<RemoteAddr>().map(|r| r.0);
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, inner.options.max_body_bytes).await?;
    ensure_registered(inner, &service, deadline).await?;

    let set = inner
        .client
        .node_set_ready(&service, deadline)
        .await
        .ok_or_else(|| {
            ApiError::new(
                504,
                format!("service {service}: registry did not answer in time"),
            )
        })?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let headers = forward_headers(&parts.headers, &parts.uri, remote);
    let safe = is_safe(&parts.method);
    let options = inner.client.options();
    let attempts = 1 + options.retries as usize;
    let mut tried: Vec<String> = Vec::new();
    let mut last: Option<ApiError> = None;
    for attempt in 0..attempts {
        let Some(pick) = set.pick_node(&tried) else {
            break;
        };
        tried.push(pick.node().id.clone());
        let Some(authority) = node_authority(&pick.node().address) else {
            // Not a plain host:port: never dialled.
            continue;
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path.as_str())
            .build()
            .map_err(|e| ApiError::bad_request(format!("cannot forward {path}: {e}")))?;
        let mut upstream = http::Request::new(Full::new(body.clone()));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers.clone();

        let now = tokio::time::Instant::now();
        let more = attempt + 1 < attempts;
        // As the client does: the attempt timeout leaves time for another
        // node, and makes an unsafe request fail fast.
        let bounded = !safe || (more && set.node_set().len() > tried.len());
        let attempt_deadline = if bounded {
            (now + options.attempt_timeout).min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(attempt_deadline, inner.proxy.client.request(upstream)).await
        {
            Err(_) => {
                let request_id = pick_failed(&pick, &"no answer in time");
                let out_of_time = attempt_deadline >= deadline;
                pick.finish(PickOutcome::Timeout);
                let error = ApiError::new(
                    504,
                    format!("service {service}: no answer in time (request id {request_id})"),
                );
                if out_of_time || !safe || !more {
                    return Err(error);
                }
                last = Some(error);
            }
            Ok(Ok(response)) => {
                pick.finish(
                    if response.status() == http::StatusCode::SERVICE_UNAVAILABLE {
                        PickOutcome::Unavailable
                    } else {
                        PickOutcome::Answered
                    },
                );
                let (mut head, incoming) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                return Ok(routed(
                    Response::from_parts(head, Body::new(incoming)),
                    service,
                ));
            }
            Ok(Err(e)) if e.is_connect() => {
                pick_failed(&pick, &e);
                pick.finish(PickOutcome::ConnectFailed);
                last = Some(ApiError::unavailable(format!(
                    "service {service}: no node reachable"
                )));
            }
            Ok(Err(e)) => {
                let request_id = pick_failed(&pick, &e);
                pick.finish(PickOutcome::ConnectionFailed);
                let error = ApiError::new(
                    502,
                    format!("service {service}: the node failed (request id {request_id})"),
                );
                if !safe || !more {
                    return Err(error);
                }
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ApiError::unavailable(format!("service {service}: no nodes with a usable address"))
    }))
}

/// Logs a failed attempt with the node, under a new request id, returned for
/// the answer (which does not name the node).
fn pick_failed(pick: &Pick, error: &dyn std::fmt::Display) -> String {
    let request_id = format!("{:016x}", fastrand::u64(..));
    tracing::warn!(
        request_id,
        node = %pick.node().id,
        address = %pick.node().address,
        "proxy attempt failed: {error}"
    );
    request_id
}

/// `host:port` of a registered address, if it is exactly that.
fn node_authority(address: &str) -> Option<http::uri::Authority> {
    if address.contains(['@', '/', '?', '#']) {
        return None;
    }
    let authority: http::uri::Authority = address.parse().ok()?;
    let port_ok = authority.port_u16().is_some_and(|p| p != 0);
    (port_ok && !authority.host().is_empty()).then_some(authority)
}

/// The request headers to send upstream.
fn forward_headers(
    incoming: &HeaderMap,
    uri: &Uri,
    remote: Option<std::net::SocketAddr>,
) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    if !headers.contains_key(header::HOST)
        && let Some(authority) = uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    if let Some(remote) = remote {
        let ip = remote.ip().to_string();
        let value = match incoming
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
        {
            earlier if earlier.is_empty() => ip,
            earlier => format!("{}, {ip}", earlier.join(", ")),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    headers
}

/// Drops hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_host_port_addresses_are_dialled() {
        assert!(node_authority("127.0.0.1:8080").is_some());
        assert!(node_authority("[::1]:8080").is_some());
        assert!(node_authority("example:1").is_some());
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "user@host:1",
            "host:1/path",
            "http://h:1",
            ":80",
        ] {
            assert!(node_authority(bad).is_none(), "{bad}");
        }
    }
}
