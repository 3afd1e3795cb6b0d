//! The client side: hooks a name-based client calls around each call.
//!
//! [`start_call`] injects the current trace context (a client span of its
//! own when spans are exported) into the request's headers and starts the
//! clock; [`CallRecord::finish`] counts the call by its final gRPC code once
//! the response ends. [`attempt`] counts each try on a node, [`nodes`] sets
//! how many nodes of a service are up, down or ejected.
//!
//! [`ClientTelemetry`] puts all of them on a [`micro_client::Client`]:
//! `Client::with_observer(registry, options, Arc::new(ClientTelemetry))`.

use http::HeaderMap;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::body::Finish;
use crate::metrics::{code_name, metrics};
use crate::trace;

/// `/go.micro.srv.user.User/Login` → `User.Login`; anything else → `other`.
pub fn endpoint_of(path: &str) -> String {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return "other".into();
    };
    let handler = service.rsplit_once('.').map_or(service, |(_, h)| h);
    if handler.is_empty() || method.is_empty() || method.contains('/') {
        return "other".into();
    }
    format!("{handler}.{method}")
}

/// One call in flight; see the module docs.
#[derive(Debug)]
pub struct CallRecord {
    /// (service, endpoint) when metrics are recorded.
    labels: Option<(String, String)>,
    span: Option<Context>,
}

/// Starts recording a call of `service` at gRPC `path`, and writes the
/// trace context into `headers`.
pub fn start_call(service: &str, path: &str, headers: &mut HeaderMap) -> CallRecord {
    let current = Context::current();
    if !crate::metrics::enabled() && !trace::enabled() {
        trace::inject(&current, headers);
        return CallRecord {
            labels: None,
            span: None,
        };
    }
    let m = metrics();
    let endpoint = endpoint_of(path);
    let endpoint = m.client_endpoint(&endpoint).to_string();
    let service_label = m.client_endpoint(service).to_string();
    let span = if trace::enabled() {
        let tracer = trace::tracer();
        let span = tracer
            .span_builder(format!("{service}/{endpoint}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_string()),
                KeyValue::new("rpc.method", endpoint.clone()),
            ])
            .start_with_context(&tracer, &current);
        let cx = current.with_span(span);
        trace::inject(&cx, headers);
        Some(cx)
    } else {
        trace::inject(&current, headers);
        None
    };
    CallRecord {
        labels: crate::metrics::enabled().then_some((service_label, endpoint)),
        span,
    }
}

impl Finish for CallRecord {
    fn finish(self, code: Option<Code>) {
        let code = code.unwrap_or(Code::Cancelled);
        if let Some((service, endpoint)) = &self.labels {
            metrics()
                .client_requests
                .with_label_values(&[service, endpoint, code_name(code)])
                .inc();
        }
        if let Some(cx) = &self.span {
            crate::server::end_span(cx, code);
        }
    }
}

impl CallRecord {
    /// Records the call's outcome: at once for an error or a trailers-only
    /// answer, else when the response body ends.
    pub fn finish(
        self,
        result: Result<http::Response<Body>, Status>,
    ) -> Result<http::Response<Body>, Status> {
        match result {
            Ok(response) => Ok(crate::server::observe(response, self)),
            Err(status) => {
                Finish::finish(self, Some(status.code()));
                Err(status)
            }
        }
    }
}

/// Counts one attempt on a node of `service`; `outcome` is one of
/// [`micro_client::AttemptResult`]'s labels.
pub fn attempt(service: &str, outcome: &'static str) {
    if !crate::metrics::enabled() {
        return;
    }
    let service = metrics().client_endpoint(service);
    metrics()
        .client_attempts
        .with_label_values(&[service, outcome])
        .inc();
}

/// Sets how many nodes of `service` the client holds, by state.
pub fn nodes(service: &str, up: usize, down: usize, ejected: usize) {
    if !crate::metrics::enabled() {
        return;
    }
    let m = metrics();
    let service = m.client_endpoint(service);
    for (state, n) in [("up", up), ("down", down), ("ejected", ejected)] {
        m.client_nodes
            .with_label_values(&[service, state])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Metrics and trace context for every call of a [`micro_client::Client`]:
/// give it to `Client::with_observer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTelemetry;

impl micro_client::CallObserver for ClientTelemetry {
    fn start(
        &self,
        nodes: &micro_client::NodeSet,
        path: &str,
        headers: &mut HeaderMap,
    ) -> Box<dyn micro_client::CallEnd> {
        let states = nodes.states();
        self::nodes(nodes.service(), states.up, states.down, states.ejected);
        Box::new(start_call(nodes.service(), path, headers))
    }

    fn on_attempt(&self, service: &str, result: micro_client::AttemptResult) {
        attempt(service, result.as_str());
    }
}

impl micro_client::CallEnd for CallRecord {
    fn answered(self: Box<Self>, response: http::Response<Body>) -> http::Response<Body> {
        crate::server::observe(response, *self)
    }

    fn failed(self: Box<Self>, error: &micro_client::ClientError) {
        Finish::finish(*self, Some(error.code()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_handler_dot_method() {
        assert_eq!(endpoint_of("/go.micro.srv.user.User/Login"), "User.Login");
        assert_eq!(endpoint_of("/Say/Hello"), "Say.Hello");
        for bad in ["", "/", "/x", "/a/b/c", "/./x"] {
            assert_eq!(endpoint_of(bad), "other", "{bad}");
        }
    }

    #[test]
    fn calls_carry_the_current_trace_and_are_counted_by_code() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            trace::TRACEPARENT,
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let cx = trace::extract(&incoming).expect("valid");
        let _attached = cx.attach();
        let mut headers = HeaderMap::new();
        let record = start_call("go.micro.srv.t", "/t.T/Get", &mut headers);
        assert!(
            crate::metrics::enabled(),
            "MICRO_METRICS=off in the environment"
        );
        assert_eq!(headers[trace::TRACEPARENT], incoming[trace::TRACEPARENT]);
        let _ = record.finish(Err(Status::not_found("x")));
        assert_eq!(
            metrics()
                .client_requests
                .with_label_values(&["go.micro.srv.t", "T.Get", "NotFound"])
                .get(),
            1
        );
    }
}
