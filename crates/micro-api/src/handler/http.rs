//! The `http` handler: a reverse proxy to the HTTP service named by the
//! first path part (`/foo/...` → `<namespace>.foo`; `/v1/foo/...` →
//! `<namespace>.v1.foo`), through the client's own stages: the retry stage
//! (its policy, the service's retry budget shared with gRPC calls), the
//! balance stage (the same node set, selector, health and load as the
//! client's gRPC calls), and [`HttpAttempt`], the attempt stage over HTTP/1.
//! Only what is HTTP lives here: the attempt, headers, and the error's
//! mapping, which is [`ApiError::from_client`]'s as for every handler.
//!
//! Only addresses of registered nodes are dialled, and only when they are a
//! plain `host:port`; a node registered `secure=true` is dialled over TLS
//! with the client's TLS settings (`--client_tls_*`). The request goes
//! upstream with its original path and query; hop-by-hop headers are
//! dropped both ways and `X-Forwarded-For` gains the peer. A node that
//! refuses the connection, or answers 503, is skipped for the next one (the
//! request was not processed). A node that does not answer within the
//! attempt timeout, or whose connection breaks, is tried again elsewhere for
//! GET and HEAD (idempotent); otherwise the call fails. Answers name the
//! service, never the node: that is logged under the request id.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use micro_client::call::{AttemptContext, CallDeadline};
use micro_client::outcome::{Outcome, Sent};
use micro_client::{
    ClientOptions, Idempotent, NodeFailure, NodeSet, Pick, PickOutcome, error_chain, find_rustls,
};
use tonic::Code;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::dial::Dialer;
use super::{deadline, ensure_registered, is_safe, read_body, routed};
use crate::Inner;
use crate::convert::is_hop_by_hop;
use crate::error::ApiError;
use crate::serve::RemoteAddr;

/// The HTTP/1 client the proxy dials nodes with.
#[derive(Clone, Debug)]
pub(crate) struct ProxyClient {
    client: HyperClient<Dialer, tonic::body::Body>,
}

impl ProxyClient {
    pub(crate) fn new(options: &ClientOptions) -> Self {
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(Dialer::new(options.dial_timeout, options.tls.as_ref()));
        ProxyClient { client }
    }
}

pub(crate) async fn handle(inner: &Inner, request: Request) -> Result<Response, ApiError> {
    let deadline = deadline(inner, &request);
    let service = inner
        .resolver
        .resolve_proxy(request.uri().path())
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    ensure_registered(inner, &service, deadline).await?;
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let upstream = Upstream {
        service: &service,
        path,
        deadline,
        max_body_bytes: inner.options.max_body_bytes,
        base_path: None,
    };
    let response = forward(&inner.client, &inner.proxy, upstream, request).await?;
    Ok(routed(response, service.into()))
}

/// Where [`forward`] sends a request.
pub(crate) struct Upstream<'a> {
    pub(crate) service: &'a str,
    /// The path and query to send (the request's own, or with a prefix cut).
    pub(crate) path: String,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) max_body_bytes: usize,
    /// Sent as `X-Micro-Web-Base-Path` (the prefix `micro web` cut).
    pub(crate) base_path: Option<&'a str>,
}

/// The header telling a web service the path prefix it is served under, as
/// go-micro's dashboard sent it.
pub(crate) const BASE_PATH_HEADER: &str = "x-micro-web-base-path";

/// Sends `request` to a node of `upstream.service` through the client's
/// retry and balance stages over an HTTP attempt. A WebSocket upgrade the
/// node accepts (101) is joined to the client's connection.
pub(crate) async fn forward(
    client: &micro_client::Client,
    proxy: &ProxyClient,
    upstream: Upstream<'_>,
    request: Request,
) -> Result<Response, ApiError> {
    let Upstream {
        service,
        path,
        deadline,
        max_body_bytes,
        base_path,
    } = upstream;
    let remote = request.extensions().get::<RemoteAddr>().map(|r| r.0);
    let (mut parts, body) = request.into_parts();
    let websocket = is_websocket(&parts.headers);
    let client_upgrade = websocket
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    // The tunnel keeps its connection's slot in the budget, and shutdown
    // waits for it (see `micro_serve::ConnectionHold`).
    let hold = websocket
        .then(|| parts.extensions.remove::<micro_serve::ConnectionHold>())
        .flatten();
    let body = read_body(&parts.headers, body, max_body_bytes).await?;

    // Waits for the registry's first answer (and a node on its way).
    client
        .node_set_ready(service, deadline)
        .await
        .ok_or_else(|| {
            ApiError::new(
                504,
                format!("service {service}: registry did not answer in time"),
            )
        })?;
    // The service's own retry and balance stages (its budget, selector and
    // node health, shared with gRPC calls), over the HTTP attempt.
    let layers = client.layers(service);
    let mut stack = ServiceBuilder::new()
        .layer(layers.retry)
        .layer(layers.balance)
        .service(HttpAttempt {
            client: proxy.clone(),
            set: layers.set,
            timeout: client.options().attempt_timeout,
        });

    let mut upstream = http::Request::new(tonic::body::Body::new(Full::new(body)));
    *upstream.method_mut() = parts.method.clone();
    *upstream.uri_mut() = path
        .parse()
        .map_err(|e| ApiError::bad_request(format!("cannot forward {path}: {e}")))?;
    let mut headers = forward_headers(&parts.headers, &parts.uri, remote);
    if let Some(base) = base_path.and_then(|b| HeaderValue::from_str(b).ok()) {
        headers.insert(HeaderName::from_static(BASE_PATH_HEADER), base);
    }
    if websocket {
        upgrade_headers(&mut headers);
    }
    *upstream.headers_mut() = headers;
    let now = tokio::time::Instant::now();
    upstream.extensions_mut().insert(CallDeadline {
        started: now,
        at: deadline.max(now),
    });
    if is_safe(&parts.method) {
        upstream.extensions_mut().insert(Idempotent);
    }
    let mut response = stack
        .ready()
        .await
        .map_err(|e| ApiError::from_client(&e))?
        .call(upstream)
        .await
        .map_err(|e| ApiError::from_client(&e))?;
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        let node_upgrade = hyper::upgrade::on(&mut response);
        let held = hold.as_ref().map(micro_serve::ConnectionHold::hold);
        tokio::spawn(tunnel(client_upgrade, node_upgrade, held));
    }
    let (mut head, body) = response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if switching {
        upgrade_headers(&mut head.headers);
    }
    Ok(Response::from_parts(head, Body::new(body)))
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`).
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `Connection: upgrade` and `Upgrade: websocket`, the hop-by-hop headers a
/// WebSocket handshake must carry on each hop.
fn upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Copies bytes both ways between the client's upgraded connection and the
/// node's, until either side closes or the server stops (`held`: the
/// connection's slot, kept until the tunnel ends).
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    node: hyper::upgrade::OnUpgrade,
    mut held: Option<micro_serve::Held>,
) {
    let (client, node) = match tokio::try_join!(client, node) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!("WebSocket upgrade failed: {e}");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut node = hyper_util::rt::TokioIo::new(node);
    let stopping = async {
        match held.as_mut() {
            Some(held) => held.stopping().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut node) => {
            if let Err(e) = copied {
                tracing::debug!("WebSocket tunnel ended: {e}");
            }
        }
        // The bytes are the node's own protocol: the tunnel closes, and the
        // node's WebSocket sees its peer gone.
        () = stopping => tracing::debug!("WebSocket tunnel closed: the server is stopping"),
    }
}

/// The attempt stage over HTTP/1: sends the request to the node the balance
/// stage chose (in its [`AttemptContext`]), bounded by the attempt timeout
/// unless told otherwise, and credits the node with how it went.
#[derive(Clone, Debug)]
pub(crate) struct HttpAttempt {
    client: ProxyClient,
    set: Arc<NodeSet>,
    timeout: Duration,
}

impl Service<http::Request<tonic::body::Body>> for HttpAttempt {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let context = request.extensions_mut().remove::<AttemptContext>();
        let client = self.client.client.clone();
        let set = self.set.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let Some(mut context) = context else {
                return Ok(not_sent("no node was chosen for the attempt".into()));
            };
            let Some(node) = context.node.take() else {
                return Ok(not_sent("no node was chosen for the attempt".into()));
            };
            let Some(authority) = node_authority(&node.node.address) else {
                return Ok(not_sent(format!(
                    "{} is not a plain host:port",
                    node.node.address
                )));
            };
            // The pool already knows a TLS node this client cannot dial.
            if let Some(reason) = node.refusal() {
                return Ok(Outcome::Failed {
                    failure: NodeFailure::Tls(reason.to_string()),
                    sent: Sent::No,
                });
            }
            let secure = node
                .node
                .metadata
                .get(micro_tls::SECURE_METADATA)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string();
            let uri = Uri::builder()
                .scheme(if secure { "https" } else { "http" })
                .authority(authority)
                .path_and_query(path)
                .build();
            match uri {
                Ok(uri) => *request.uri_mut() = uri,
                Err(e) => return Ok(not_sent(e.to_string())),
            }
            let pick = Pick::start(set, node);
            let (until, deadline) = (context.until(timeout), context.deadline);
            Ok(
                match tokio::time::timeout_at(until, client.request(request)).await {
                    Err(_) if until < deadline => {
                        logged(&pick, &"no answer in time");
                        pick.finish(PickOutcome::Timeout);
                        Outcome::Failed {
                            failure: NodeFailure::Timeout(timeout),
                            sent: Sent::Maybe,
                        }
                    }
                    // The call's own deadline: not the node's fault.
                    Err(_) => {
                        drop(pick);
                        Outcome::Deadline
                    }
                    Ok(Ok(response)) => {
                        let unavailable =
                            response.status() == http::StatusCode::SERVICE_UNAVAILABLE;
                        pick.finish(if unavailable {
                            PickOutcome::Unavailable
                        } else {
                            PickOutcome::Answered
                        });
                        Outcome::Answered {
                            response: response.map(tonic::body::Body::new),
                            status: unavailable.then_some(Code::Unavailable),
                        }
                    }
                    Ok(Err(e)) if e.is_connect() => {
                        let detail = error_chain(&e);
                        logged(&pick, &detail);
                        match tls_failure(&e) {
                            Some(reason) => {
                                pick.finish(PickOutcome::Unavailable);
                                Outcome::Failed {
                                    failure: NodeFailure::Tls(reason),
                                    sent: Sent::No,
                                }
                            }
                            None => {
                                pick.finish(PickOutcome::ConnectFailed);
                                Outcome::Failed {
                                    failure: NodeFailure::Connect(detail),
                                    sent: Sent::No,
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        let detail = error_chain(&e);
                        logged(&pick, &detail);
                        pick.finish(PickOutcome::ConnectionFailed);
                        Outcome::Failed {
                            failure: NodeFailure::Connection(detail),
                            sent: Sent::Maybe,
                        }
                    }
                },
            )
        })
    }
}

/// An attempt that could not be sent to its node.
fn not_sent(reason: String) -> Outcome {
    Outcome::Failed {
        failure: NodeFailure::Connect(reason),
        sent: Sent::No,
    }
}

/// Logs a failed attempt with its node (answers never name it).
fn logged(pick: &Pick, error: &dyn std::fmt::Display) {
    tracing::warn!(
        node = %pick.node().id,
        address = %pick.node().address,
        "proxy attempt failed: {error}"
    );
}

/// The TLS handshake's verdict, if that is how connecting failed.
fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    find_rustls(error).map(ToString::to_string)
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
