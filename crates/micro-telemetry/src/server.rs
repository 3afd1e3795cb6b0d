//! The server side: a tower layer in front of a gRPC server's routes that
//! counts and times every call of a registered endpoint and continues the
//! caller's trace.
//!
//! Calls of paths that are not registered endpoints (health checks,
//! reflection, unknown methods) pass through untouched, so the labels stay
//! bounded and probes do not drown the request counts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::trace::{
    FutureExt as _, Span as _, SpanKind, Status as SpanStatus, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use prometheus::{Histogram, IntCounter};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::body::{Finish, Observed, grpc_code};
use crate::metrics::{code_name, metrics};
use crate::trace;

/// One endpoint's metrics, resolved once.
#[derive(Debug)]
struct EndpointInfo {
    service: String,
    endpoint: String,
    span_name: String,
    duration: Histogram,
    codes: [OnceLock<IntCounter>; 17],
}

impl EndpointInfo {
    fn counter(&self, code: Code) -> &IntCounter {
        let index = (code as usize).min(16);
        self.codes[index].get_or_init(|| {
            metrics().server_requests.with_label_values(&[
                &self.service,
                &self.endpoint,
                code_name(code),
            ])
        })
    }
}

/// Layer for the routes of the server of `service`; see the module docs.
#[derive(Clone, Debug)]
pub struct ServerLayer {
    endpoints: Arc<Endpoints>,
}

/// By gRPC path. Looked up on every call with a key the caller sends, but
/// only ever holding the server's own paths: a fast hash will do (no
/// caller can grow the map to make collisions).
type Endpoints = HashMap<String, Arc<EndpointInfo>, foldhash::fast::RandomState>;

impl ServerLayer {
    /// `endpoints`: (gRPC path, `Handler.Method`), e.g.
    /// (`/go.micro.srv.user.User/QueryUserByName`, `User.QueryUserByName`).
    pub fn new(service: &str, endpoints: impl IntoIterator<Item = (String, String)>) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|(path, endpoint)| {
                let info = EndpointInfo {
                    service: service.to_string(),
                    span_name: format!("{service}/{endpoint}"),
                    duration: metrics()
                        .server_duration
                        .with_label_values(&[service, &endpoint]),
                    endpoint,
                    codes: Default::default(),
                };
                (path, Arc::new(info))
            })
            .collect();
        ServerLayer {
            endpoints: Arc::new(endpoints),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            endpoints: self.endpoints.clone(),
        }
    }
}

/// The service [`ServerLayer`] makes.
#[derive(Clone, Debug)]
pub struct ServerTelemetry<S> {
    inner: S,
    endpoints: Arc<Endpoints>,
}

struct ServerFinish {
    info: Arc<EndpointInfo>,
    started: Instant,
    span: Option<Context>,
}

impl Finish for ServerFinish {
    fn finish(self, code: Option<Code>) {
        let code = code.unwrap_or(Code::Cancelled);
        if crate::metrics::enabled() {
            self.info.counter(code).inc();
            self.info
                .duration
                .observe(self.started.elapsed().as_secs_f64());
        }
        if let Some(cx) = self.span {
            end_span(&cx, code);
        }
    }
}

/// Ends the span of `cx` with the call's code (server-side failures are errors).
pub(crate) fn end_span(cx: &Context, code: Code) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.set_status(SpanStatus::error(code_name(code)));
    }
    span.end();
}

impl<S, B> Service<http::Request<B>> for ServerTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !crate::metrics::enabled() && !trace::enabled() {
            // Nothing recorded: only pass the caller's trace context on.
            return match trace::extract(request.headers()) {
                Some(cx) => Box::pin(self.inner.call(request).with_context(cx)),
                None => Box::pin(self.inner.call(request)),
            };
        }
        let Some(info) = self.endpoints.get(request.uri().path()).cloned() else {
            return Box::pin(self.inner.call(request));
        };
        let started = Instant::now();
        let parent = trace::extract(request.headers());
        // A span the sampler would drop is not made: the caller's context
        // is continued as is.
        let traced = trace::enabled() && !trace::certainly_dropped_under(parent.as_ref());
        let (context, span) = if traced {
            let parent = parent.unwrap_or_default();
            let tracer = trace::tracer();
            let mut span = tracer
                .span_builder(info.span_name.clone())
                .with_kind(SpanKind::Server)
                .start_with_context(&*tracer, &parent);
            // Attributes only on spans that are kept.
            if span.is_recording() {
                span.set_attributes([
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", info.service.clone()),
                    KeyValue::new("rpc.method", info.endpoint.clone()),
                ]);
            }
            let cx = parent.with_span(span);
            (Some(cx.clone()), Some(cx))
        } else {
            (parent, None)
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = match context {
                Some(cx) => future.with_context(cx).await,
                None => future.await,
            }?;
            let finish = ServerFinish {
                info,
                started,
                span,
            };
            Ok(observe(response, finish))
        })
    }
}

/// Reports at once for a trailers-only response, else when the body ends.
pub(crate) fn observe<F: Finish + Unpin>(
    response: http::Response<Body>,
    finish: F,
) -> http::Response<Body> {
    if let Some(code) = grpc_code(response.headers()) {
        finish.finish(Some(code));
        return response;
    }
    response.map(|body| Body::new(Observed::new(body, finish)))
}
