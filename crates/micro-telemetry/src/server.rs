//! The server side: [`ServerTelemetry`], the server's
//! [`ServerObserver`](micro_server::ServerObserver), counts and times every
//! call of a registered endpoint and continues the caller's trace.
//!
//! `Server::builder(name).observer(Arc::new(ServerTelemetry))` (the `micro`
//! facade's servers have it). Calls of paths that are not registered
//! endpoints (health checks, reflection, unknown methods) are not shown to
//! it, so the labels stay bounded and probes do not drown the request
//! counts.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderMap;
use micro_server::observer::{EndpointObserver, ServerCall, ServerObserver};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use prometheus::{Histogram, IntCounter, IntGauge};
use tonic::Code;

use crate::metrics::{code_name, metrics};
use crate::trace;

/// Metrics and trace continuation for every call of a
/// [`micro_server::Server`]'s registered endpoints: give it to
/// `ServerBuilder::observer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTelemetry;

impl ServerObserver for ServerTelemetry {
    fn endpoint(&self, service: &str, _path: &str, endpoint: &str) -> Arc<dyn EndpointObserver> {
        Arc::new(EndpointInfo::new(service, endpoint, None))
    }

    fn stream_endpoint(
        &self,
        service: &str,
        _path: &str,
        endpoint: &str,
    ) -> Arc<dyn EndpointObserver> {
        let labels = |direction| [service, endpoint, direction];
        let stream = StreamMetrics {
            open: metrics()
                .server_open_streams
                .with_label_values(&[service, endpoint]),
            received: metrics()
                .server_stream_messages
                .with_label_values(&labels("received")),
            sent: metrics()
                .server_stream_messages
                .with_label_values(&labels("sent")),
        };
        Arc::new(EndpointInfo::new(service, endpoint, Some(stream)))
    }

    fn admission(
        &self,
        service: &str,
    ) -> Option<Arc<dyn micro_serve::admission::AdmissionObserver>> {
        Some(crate::admission::AdmissionTelemetry::new(service))
    }
}

/// A streaming endpoint's metrics.
#[derive(Debug)]
struct StreamMetrics {
    open: IntGauge,
    received: IntCounter,
    sent: IntCounter,
}

/// Counts a stream open until dropped (with its call's record, whether
/// the call ended or was dropped).
struct OpenStream(Arc<EndpointInfo>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Some(stream) = &self.0.stream {
            stream.open.dec();
        }
    }
}

/// One endpoint's metrics, resolved once.
#[derive(Debug)]
struct EndpointInfo {
    service: String,
    endpoint: String,
    span_name: String,
    duration: Histogram,
    codes: [OnceLock<IntCounter>; 17],
    /// A streaming endpoint's.
    stream: Option<StreamMetrics>,
}

impl EndpointInfo {
    fn new(service: &str, endpoint: &str, stream: Option<StreamMetrics>) -> Self {
        EndpointInfo {
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            span_name: format!("{service}/{endpoint}"),
            duration: metrics()
                .server_duration
                .with_label_values(&[service, endpoint]),
            codes: Default::default(),
            stream,
        }
    }

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

impl EndpointObserver for EndpointInfo {
    fn start(self: Arc<Self>, headers: &HeaderMap) -> Option<Box<dyn ServerCall>> {
        let parent = trace::extract(headers);
        if !crate::metrics::enabled() && !trace::enabled() {
            // Nothing recorded: only pass the caller's trace context on.
            return parent.map(|context| Box::new(Continued(context)) as Box<dyn ServerCall>);
        }
        // A span the sampler would drop is not made: the caller's context
        // is continued as is.
        let traced = trace::enabled() && !trace::certainly_dropped_under(parent.as_ref());
        let context = if traced {
            let parent = parent.unwrap_or_default();
            let tracer = trace::tracer();
            let mut span = tracer
                .span_builder(self.span_name.clone())
                .with_kind(SpanKind::Server)
                .start_with_context(&*tracer, &parent);
            // Attributes only on spans that are kept.
            if span.is_recording() {
                span.set_attributes([
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", self.service.clone()),
                    KeyValue::new("rpc.method", self.endpoint.clone()),
                ]);
            }
            Some(parent.with_span(span))
        } else {
            parent
        };
        let open = match &self.stream {
            Some(stream) if crate::metrics::enabled() => {
                stream.open.inc();
                Some(OpenStream(self.clone()))
            }
            _ => None,
        };
        Some(Box::new(ServerRecord {
            info: self,
            context,
            traced,
            _open: open,
        }))
    }
}

/// A call only continued in the caller's trace context.
struct Continued(Context);

impl ServerCall for Continued {
    fn enter(&self, poll: &mut dyn FnMut()) {
        let _attached = self.0.clone().attach();
        poll();
    }

    fn end(self: Box<Self>, _code: Code, _elapsed: Duration) {}
}

/// One call being recorded.
struct ServerRecord {
    info: Arc<EndpointInfo>,
    /// The context the handler runs in: the call's span, or the caller's
    /// context continued.
    context: Option<Context>,
    /// Whether `context` holds a span of this call, to end.
    traced: bool,
    /// A stream's place in the open-streams gauge.
    _open: Option<OpenStream>,
}

impl ServerCall for ServerRecord {
    fn enter(&self, poll: &mut dyn FnMut()) {
        match &self.context {
            Some(cx) => {
                let _attached = cx.clone().attach();
                poll();
            }
            None => poll(),
        }
    }

    fn end(self: Box<Self>, code: Code, elapsed: Duration) {
        if crate::metrics::enabled() {
            self.info.counter(code).inc();
            self.info.duration.observe(elapsed.as_secs_f64());
        }
        if let (true, Some(cx)) = (self.traced, &self.context) {
            trace::end_span(cx, code);
        }
    }

    fn received(&self, messages: u64) {
        if let (Some(stream), true) = (&self.info.stream, crate::metrics::enabled()) {
            stream.received.inc_by(messages);
        }
    }

    fn sent(&self, messages: u64) {
        if let (Some(stream), true) = (&self.info.stream, crate::metrics::enabled()) {
            stream.sent.inc_by(messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use micro_server::observer::ObserveLayer;
    use tonic::body::Body;
    use tower::{Layer, ServiceExt};

    use super::*;

    async fn call(path: &str, status: &'static str) {
        let layer = ObserveLayer::new(
            &ServerTelemetry,
            "go.micro.srv.s",
            [("/s.S/Get".to_string(), "S.Get".to_string())],
        );
        let service = layer.layer(tower::service_fn(
            move |_: http::Request<Body>| async move {
                let response = http::Response::builder()
                    .header("grpc-status", status)
                    .body(Body::empty())
                    .expect("response");
                Ok::<_, Infallible>(response)
            },
        ));
        let request = http::Request::builder()
            .uri(format!("http://s{path}"))
            .body(Body::empty())
            .expect("request");
        service.oneshot(request).await.expect("answered");
    }

    #[tokio::test]
    async fn registered_calls_are_counted_by_code_and_timed() {
        assert!(
            crate::metrics::enabled(),
            "MICRO_METRICS=off in the environment"
        );
        call("/s.S/Get", "0").await;
        call("/s.S/Get", "5").await;
        // Not a registered endpoint: not counted.
        call("/grpc.health.v1.Health/Check", "0").await;
        let m = metrics();
        let count = |code| {
            m.server_requests
                .with_label_values(&["go.micro.srv.s", "S.Get", code])
                .get()
        };
        assert_eq!((count("OK"), count("NotFound")), (1, 1));
        assert_eq!(
            m.server_duration
                .with_label_values(&["go.micro.srv.s", "S.Get"])
                .get_sample_count(),
            2
        );
        assert!(!crate::metrics::encode().contains("Health"));
    }
}
