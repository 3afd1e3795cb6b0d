//! What every request meets first: header limits, a declared body over the
//! limit, CORS, the deadline, then the rate limits ([`crate::ratelimit`]),
//! admission control (the concurrency limit, [`micro_serve::admission`]:
//! 503 with `Retry-After` over it, at once) and, in the gateway, auth
//! ([`crate::auth`]).
//!
//! Connection-level limits (header read timeout, hyper's own header caps,
//! connection count) are set where the listener is served
//! ([`micro_serve`]); these checks repeat the header caps so that the router
//! alone (as tests drive it) enforces them too.
//!
//! [`EdgeLayer::new`] is the same layer for any HTTP service: a web service
//! (`micro::web`) puts the gateway's protections in front of its own router.
//! Refusals are go-micro's error JSON, as the gateway's.
//!
//! ```
//! use micro_api::edge::{EdgeLayer, EdgeOptions};
//!
//! let router: axum::Router = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .layer(EdgeLayer::new(EdgeOptions::default()));
//! # let _ = router;
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode, header};
use tokio::time::Instant;
use tower::{Layer, Service};

use micro_serve::admission::{Admission, ConcurrencyLimit, Shed};

use crate::error::ApiError;
use crate::handler::Deadline;
use crate::ratelimit::{Limiter, RateLimits};
use crate::{ApiOptions, Inner};

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const DEFAULT_ALLOWED_HEADERS: &str = "Accept, Authorization, Content-Type";
const PREFLIGHT_MAX_AGE: &str = "600";

/// The limits [`EdgeLayer`] enforces; the gateway's flags fill them in
/// (`--max_body_bytes`, `--rate_limit`, ...), and their defaults are its.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Largest total size of request headers (431 beyond; a longer URI is 414).
    pub max_header_bytes: usize,
    /// Largest request body a `Content-Length` may declare (413 beyond). A
    /// body sent without one is the reader's to cap.
    pub max_body_bytes: usize,
    /// Time to answer a request (504 beyond).
    pub request_timeout: std::time::Duration,
    /// Origins allowed cross-origin (`*` for any); empty: CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// Request rates per client IP and per route (429 beyond).
    pub rate_limits: RateLimits,
    /// Requests worked on at once (503 with `Retry-After` beyond).
    pub max_concurrent: ConcurrencyLimit,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions::from(&ApiOptions::default())
    }
}

impl From<&ApiOptions> for EdgeOptions {
    fn from(options: &ApiOptions) -> Self {
        EdgeOptions {
            max_headers: options.max_headers,
            max_header_bytes: options.max_header_bytes,
            max_body_bytes: options.max_body_bytes,
            request_timeout: options.request_timeout,
            cors_allowed_origins: options.cors_allowed_origins.clone(),
            rate_limits: options.rate_limits,
            max_concurrent: options.max_concurrent,
        }
    }
}

/// What every [`Edge`] of one listener shares.
struct EdgeState {
    options: EdgeOptions,
    limiter: Option<Arc<Limiter>>,
    /// Admission control: the concurrency limit.
    admission: Option<Arc<Admission>>,
    /// The gateway, whose auth runs after the rate limits.
    gateway: Option<Arc<Inner>>,
}

/// The layer running [`edge`] in front of the router's handlers: a plain
/// tower layer rather than axum's `from_fn` (which boxes the next service,
/// its future and the response body on every request).
#[derive(Clone)]
pub struct EdgeLayer(Arc<EdgeState>);

impl EdgeLayer {
    /// The gateway's edge protections, for any router.
    pub fn new(options: EdgeOptions) -> Self {
        EdgeLayer(Arc::new(EdgeState {
            limiter: Limiter::new(options.rate_limits),
            admission: Admission::new(options.max_concurrent, None),
            options,
            gateway: None,
        }))
    }
}

/// The gateway's edge and its handlers as one service: its limits, its
/// rate limiter, its auth, then [`crate::handler::handle`], all in one
/// future (an [`Edge`] over a handler service would box the handler's
/// future too, on every request).
#[derive(Clone)]
pub(crate) struct GatewayEdge {
    state: Arc<EdgeState>,
    inner: Arc<Inner>,
}

impl GatewayEdge {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        GatewayEdge {
            state: Arc::new(EdgeState {
                options: EdgeOptions::from(&inner.options),
                limiter: inner.limiter.clone(),
                admission: inner.admission.clone(),
                gateway: Some(inner.clone()),
            }),
            inner,
        }
    }
}

impl Service<Request> for GatewayEdge {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(
            edge(self.state.clone(), request, move |request| {
                crate::handler::handle(inner, request)
            })
            .map(Ok),
        )
    }
}

impl std::fmt::Debug for EdgeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeLayer")
            .field("options", &self.0.options)
            .field("gateway", &self.0.gateway.is_some())
            .finish()
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, next: S) -> Edge<S> {
        Edge {
            state: self.0.clone(),
            next,
        }
    }
}

/// The service [`EdgeLayer`] makes.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Edge<S> {
    state: Arc<EdgeState>,
    next: S,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.next.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The service made ready is the one called; a clone stays behind.
        let clone = self.next.clone();
        let mut next = std::mem::replace(&mut self.next, clone);
        Box::pin(
            edge(self.state.clone(), request, move |request| {
                next.call(request).map(|answer| match answer {
                    Ok(response) => response,
                })
            })
            .map(Ok),
        )
    }
}

/// The edge's checks, then `next` for what passes them.
async fn edge<F, Fut>(state: Arc<EdgeState>, mut request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let options = &state.options;
    if let Some(error) = check_head(&request, options.max_headers, options.max_header_bytes) {
        return error.into_response();
    }
    if let Some(error) = check_declared_body(&request, options.max_body_bytes) {
        return error.into_response();
    }

    let allowed_origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| cors_allow(&options.cors_allowed_origins, origin));
    if request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return match allowed_origin {
            Some(origin) => preflight(origin, &request),
            None => ApiError::new(
                403,
                "cross-origin requests from this origin are not allowed (see --cors_allowed_origins)",
            )
            .into_response(),
        };
    }

    let timeout = options.request_timeout;
    let deadline = Instant::now() + timeout;
    request.extensions_mut().insert(Deadline(deadline));
    // Rate limits, then auth, then the handler: one layer (each axum
    // `from_fn` layer costs a boxed future and a service clone per request).
    let handled = async {
        if let Some(refused) = crate::ratelimit::check(state.limiter.as_deref(), &request) {
            return refused;
        }
        // Held until the handler answers (the response head).
        let _permit = match state.admission.as_ref().map(|a| a.try_acquire()) {
            Some(Err(shed)) => return overloaded(shed),
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        if let Some(inner) = &state.gateway
            && let Some(refused) = crate::auth::authenticate(inner, &mut request)
        {
            return refused;
        }
        next(request).await
    };
    let mut response = match tokio::time::timeout_at(deadline, handled).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            504,
            format!("no answer within the gateway's request timeout of {timeout:?}"),
        )
        .into_response(),
    };
    if let Some(origin) = allowed_origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// 503 with `Retry-After` (whole seconds, at least 1) for a request over
/// the concurrency limit: refused before any work.
fn overloaded(shed: Shed) -> Response {
    let mut response = ApiError::unavailable(format!(
        "gateway overloaded: {} requests in flight, the limit; not started, retry later",
        shed.limit
    ))
    .into_response();
    let seconds = shed.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// 431 for too many or too large headers, 414 for a URI longer than the
/// header budget.
fn check_head(request: &Request, max_headers: usize, max_header_bytes: usize) -> Option<ApiError> {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > max_header_bytes {
        return Some(ApiError::new(
            414,
            format!("request URI longer than {max_header_bytes} bytes"),
        ));
    }
    let headers = request.headers();
    if headers.len() > max_headers {
        return Some(ApiError::new(
            431,
            format!("more than {max_headers} request headers"),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > max_header_bytes {
        return Some(ApiError::new(
            431,
            format!("request headers larger than {max_header_bytes} bytes"),
        ));
    }
    None
}

/// 413 for a `Content-Length` over `max_body_bytes`: refused before a byte
/// of the body is read (the handlers cap what arrives without one).
fn check_declared_body(request: &Request, max_body_bytes: usize) -> Option<ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (declared > max_body_bytes as u64).then(|| ApiError::body_too_large(max_body_bytes))
}

/// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
fn cors_allow(allowed: &[String], origin: &HeaderValue) -> Option<HeaderValue> {
    if allowed.is_empty() {
        return None;
    }
    let text = origin.to_str().ok()?;
    let matches = allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(text));
    matches.then(|| origin.clone())
}

fn preflight(origin: HeaderValue, request: &Request) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    let requested = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.to_str().is_ok_and(|s| {
                s.len() <= 1024
                    && s.split(',').all(|h| {
                        let h = h.trim();
                        !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
            })
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}
