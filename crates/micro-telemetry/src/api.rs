//! The gateway side: a tower layer around the gateway's router that counts
//! and times every HTTP request by handler and status, and continues (or
//! starts) the caller's trace so the calls the handlers make carry it on.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures::future::Either;
use opentelemetry::trace::{
    FutureExt as _, Span as _, SpanKind, Status as SpanStatus, TraceContextExt, Tracer, WithContext,
};
use opentelemetry::{Context, KeyValue};
use prometheus::{Histogram, IntCounter};
use tower::{Layer, Service};

use crate::metrics::metrics;
use crate::trace;

/// What a gateway request reached, put in the response's extensions by the
/// handler: `<service>/<Handler.Method>` (api, rpc) or `<service>` (http).
/// Handlers set it only once the service is registered and the endpoint
/// exists, so span names stay bounded by what is registered, whatever paths
/// arrive. Without it, a request that matched an axum route pattern (a web
/// service's, the layer added with `Router::layer`) is named by the pattern,
/// else by the method alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route(pub Arc<str>);

/// Layer for a gateway whose handler kind is `handler` (`api`, `rpc`, `http`).
#[derive(Clone, Debug)]
pub struct ApiLayer {
    info: Arc<ApiInfo>,
}

#[derive(Debug)]
struct ApiInfo {
    handler: String,
    span_prefix: String,
    duration: Histogram,
    /// `micro_api_requests_total{handler,code}` by status 100–599, resolved once.
    requests: Box<[OnceLock<IntCounter>]>,
}

impl ApiInfo {
    fn requests(&self, status: http::StatusCode) -> Option<&IntCounter> {
        let slot = self
            .requests
            .get(usize::from(status.as_u16()).checked_sub(100)?)?;
        Some(slot.get_or_init(|| {
            metrics()
                .api_requests
                .with_label_values(&[&self.handler, status.as_str()])
        }))
    }
}

impl ApiLayer {
    /// `gateway`: the name spans carry (e.g. `go.micro.api`); `handler`: the label.
    pub fn new(gateway: &str, handler: &str) -> Self {
        ApiLayer {
            info: Arc::new(ApiInfo {
                handler: handler.to_string(),
                span_prefix: gateway.to_string(),
                duration: metrics().api_duration.with_label_values(&[handler]),
                requests: (100..600).map(|_| OnceLock::new()).collect(),
            }),
        }
    }
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiTelemetry {
            inner,
            info: self.info.clone(),
        }
    }
}

/// The service [`ApiLayer`] makes.
#[derive(Clone, Debug)]
pub struct ApiTelemetry<S> {
    inner: S,
    info: Arc<ApiInfo>,
}

impl<S, B, R> Service<http::Request<B>> for ApiTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = ApiFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let parent = trace::extract(request.headers());
        // A span the sampler would drop is not made (see `trace`).
        let span = if trace::enabled() && !trace::certainly_dropped_under(parent.as_ref()) {
            let parent = parent.clone().unwrap_or_default();
            let tracer = trace::tracer();
            // The raw path is unbounded: it goes in an attribute, never the
            // name (see `Route`).
            let mut span = tracer
                .span_builder(format!("{}/{}", self.info.span_prefix, request.method()))
                .with_kind(SpanKind::Server)
                .start_with_context(&*tracer, &parent);
            // Attributes only on spans that are kept.
            if span.is_recording() {
                span.set_attributes([
                    KeyValue::new("http.request.method", request.method().as_str().to_string()),
                    KeyValue::new("url.path", request.uri().path().to_string()),
                    KeyValue::new("micro.api.handler", self.info.handler.clone()),
                ]);
            }
            Some(parent.with_span(span))
        } else {
            None
        };
        let context = span.clone().or(parent);
        let method = request.method().clone();
        // Only for a span: the pattern, never the raw path.
        let pattern = span.as_ref().and_then(|_| {
            request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|m| m.as_str().to_string())
        });
        let future = self.inner.call(request);
        // Not boxed: this runs on every request.
        ApiFuture {
            call: match context {
                Some(cx) => Either::Left(future.with_context(cx)),
                None => Either::Right(future),
            },
            pending: Some(Pending {
                info: self.info.clone(),
                started,
                span,
                method,
                pattern,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ApiTelemetry`]: the request, then its count, time
    /// and span end (none of them if the request is dropped unanswered).
    pub struct ApiFuture<F> {
        #[pin]
        call: Either<WithContext<F>, F>,
        pending: Option<Pending>,
    }
}

/// What [`ApiFuture`] records once the answer is there.
struct Pending {
    info: Arc<ApiInfo>,
    started: Instant,
    span: Option<Context>,
    method: http::Method,
    /// The axum route pattern the request matched, if any.
    pattern: Option<String>,
}

impl<F, R, E> Future for ApiFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.call.poll(cx));
        if let (Ok(response), Some(pending)) = (&result, this.pending.take()) {
            pending.finish(response);
        }
        Poll::Ready(result)
    }
}

impl Pending {
    fn finish<R>(self, response: &http::Response<R>) {
        let Pending {
            info,
            started,
            span,
            method,
            pattern,
        } = self;
        let status = response.status();
        if crate::metrics::enabled() {
            match info.requests(status) {
                Some(counter) => counter.inc(),
                // 600–999: valid in HTTP, never cached.
                None => metrics()
                    .api_requests
                    .with_label_values(&[&info.handler, status.as_str()])
                    .inc(),
            }
            info.duration.observe(started.elapsed().as_secs_f64());
        }
        if let Some(cx) = span.as_ref().filter(|cx| cx.span().is_recording()) {
            let span = cx.span();
            let route = response
                .extensions()
                .get::<Route>()
                .map(|Route(route)| route.to_string())
                .or(pattern);
            if let Some(route) = route {
                span.update_name(format!("{}/{method} {route}", info.span_prefix));
                span.set_attribute(KeyValue::new("http.route", route));
            }
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if status.is_server_error() {
                span.set_status(SpanStatus::error(status.as_str().to_string()));
            }
            span.end();
        } else if let Some(cx) = &span {
            cx.span().end();
        }
    }
}

/// Counts one open gateway connection while alive (`micro_api_open_connections`).
#[derive(Debug)]
pub struct OpenConnection(());

impl OpenConnection {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        if crate::metrics::enabled() {
            metrics().api_open_connections.inc();
        }
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if crate::metrics::enabled() {
            metrics().api_open_connections.dec();
        }
    }
}

/// One stream the gateway relays (a WebSocket or Server-Sent Events) on
/// `route`: counted open while alive (`micro_api_open_streams{kind}`), its
/// messages counted (`micro_api_stream_messages_total{route,direction}`),
/// and one span from open to end, child of the upgrade request's trace.
#[derive(Debug)]
pub struct ApiStream {
    kind: &'static str,
    counters: Option<(IntCounter, IntCounter)>,
    span: Option<Context>,
}

impl ApiStream {
    /// `kind`: `websocket` or `sse`; `route`: `<service>/<Handler.Method>`.
    /// Called in the request's handler: its trace is the stream's parent.
    pub fn open(kind: &'static str, route: &str) -> Self {
        let parent = Context::current();
        let counters = crate::metrics::enabled().then(|| {
            metrics().api_open_streams.with_label_values(&[kind]).inc();
            (
                metrics()
                    .api_stream_messages
                    .with_label_values(&[route, "received"]),
                metrics()
                    .api_stream_messages
                    .with_label_values(&[route, "sent"]),
            )
        });
        let span = trace::enabled().then(|| {
            let tracer = trace::tracer();
            let span = tracer
                .span_builder(format!("go.micro.api/stream {route}"))
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.route", route.to_string()),
                    KeyValue::new("micro.stream.kind", kind),
                ])
                .start_with_context(&*tracer, &parent);
            parent.with_span(span)
        });
        ApiStream {
            kind,
            counters,
            span,
        }
    }

    /// `future` run in the stream's trace: the calls it makes continue it.
    pub fn instrument<F: Future>(&self, future: F) -> WithContext<F> {
        future.with_context(self.span.clone().unwrap_or_else(Context::current))
    }

    /// A message from the HTTP client went to the service.
    pub fn received(&self) {
        if let Some((received, _)) = &self.counters {
            received.inc();
        }
    }

    /// A message from the service went to the HTTP client.
    pub fn sent(&self) {
        if let Some((_, sent)) = &self.counters {
            sent.inc();
        }
    }

    /// Ends the stream's span with how it ended (`error`: why it failed).
    pub fn end(&mut self, error: Option<&str>) {
        if let Some(cx) = self.span.take() {
            let span = cx.span();
            if let Some(error) = error {
                span.set_status(SpanStatus::error(error.to_string()));
            }
            span.end();
        }
    }
}

impl Drop for ApiStream {
    fn drop(&mut self) {
        if self.counters.is_some() {
            metrics()
                .api_open_streams
                .with_label_values(&[self.kind])
                .dec();
        }
        if let Some(cx) = self.span.take() {
            cx.span().end();
        }
    }
}
