//! The client side: hooks a name-based client calls around each call.
//!
//! [`start_call`] injects the current trace context (a client span of its
//! own when spans are exported) into the request's headers and starts the
//! clock; [`CallRecord::finish`] counts the call by its final gRPC code once
//! the response ends, and counts each of its attempts on a node by outcome.
//! [`nodes`] sets how many nodes of a service are up, down or ejected
//! (refreshed at most once a second). Labels are resolved once per service
//! and endpoint, so a call does two map lookups and atomic increments, not
//! label hashing.
//!
//! [`ClientTelemetry`] puts all of them on a [`micro_client::Client`]:
//! `Client::with_observer(registry, options, Arc::new(ClientTelemetry))`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use http::HeaderMap;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tonic::body::Body;
use tonic::{Code, Status};

use prometheus::IntCounter;

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

/// The maps below are read on every call with keys the program chose
/// (service names, gRPC paths), not an attacker: a fast hash will do.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// One service's client metrics, resolved once: the per-call path does a
/// map lookup and atomic increments, not label hashing and allocation.
#[derive(Debug)]
struct ServiceMetrics {
    /// The (bounded) `service` label.
    label: String,
    /// Milliseconds since [`epoch`] of the last node-gauge update.
    nodes_updated: AtomicU64,
    attempts: [OnceLock<IntCounter>; 8],
    endpoints: RwLock<Map<Arc<EndpointMetrics>>>,
}

/// One endpoint's client metrics and span name.
#[derive(Debug)]
struct EndpointMetrics {
    service: Arc<ServiceMetrics>,
    /// The (bounded) `endpoint` label.
    label: String,
    span_name: String,
    codes: [OnceLock<IntCounter>; 17],
}

/// How often the node gauges are refreshed from a service's node set
/// (they are read by scrapes, seconds apart; a call need not pay for it).
const NODES_REFRESH_MS: u64 = 1000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn services() -> &'static RwLock<Map<Arc<ServiceMetrics>>> {
    static SERVICES: OnceLock<RwLock<Map<Arc<ServiceMetrics>>>> = OnceLock::new();
    SERVICES.get_or_init(Default::default)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The metrics of `service` (label bounded as [`Metrics::client_endpoint`]).
///
/// [`Metrics::client_endpoint`]: crate::metrics::Metrics::client_endpoint
fn service_metrics(service: &str) -> Arc<ServiceMetrics> {
    if let Some(found) = read(services()).get(service) {
        return found.clone();
    }
    let label = metrics().client_endpoint(service).to_string();
    let mut map = write(services());
    // Names past the label bound share the `other` entry: the map stays bounded too.
    let key = if label == "other" { "other" } else { service };
    map.entry(key.to_string())
        .or_insert_with(|| {
            Arc::new(ServiceMetrics {
                label,
                nodes_updated: AtomicU64::new(u64::MAX),
                attempts: Default::default(),
                endpoints: RwLock::new(Map::default()),
            })
        })
        .clone()
}

impl ServiceMetrics {
    fn endpoint(self: &Arc<Self>, path: &str) -> Arc<EndpointMetrics> {
        if let Some(found) = read(&self.endpoints).get(path) {
            return found.clone();
        }
        let endpoint = endpoint_of(path);
        let label = metrics().client_endpoint(&endpoint).to_string();
        let key = if label == "other" { "other" } else { path };
        write(&self.endpoints)
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(EndpointMetrics {
                    service: self.clone(),
                    span_name: format!("{}/{label}", self.label),
                    label,
                    codes: Default::default(),
                })
            })
            .clone()
    }

    fn attempt(&self, outcome: micro_client::AttemptResult) -> &IntCounter {
        use micro_client::AttemptResult as A;
        let index = match outcome {
            A::Answered => 0,
            A::Unavailable => 1,
            A::ConnectFailed => 2,
            A::ConnectionFailed => 3,
            A::Timeout => 4,
            A::Deadline => 5,
            A::Cancelled => 6,
            A::Shed => 7,
        };
        self.attempts[index].get_or_init(|| {
            metrics()
                .client_attempts
                .with_label_values(&[&self.label, outcome.as_str()])
        })
    }

    /// Whether the node gauges are due for a refresh (and claims it).
    fn nodes_due(&self) -> bool {
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.nodes_updated.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < NODES_REFRESH_MS {
            return false;
        }
        self.nodes_updated
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl EndpointMetrics {
    fn counter(&self, code: Code) -> &IntCounter {
        let index = (code as usize).min(16);
        self.codes[index].get_or_init(|| {
            metrics().client_requests.with_label_values(&[
                &self.service.label,
                &self.label,
                code_name(code),
            ])
        })
    }
}

/// One call in flight; see the module docs.
#[derive(Debug)]
pub struct CallRecord {
    /// Set when metrics are recorded.
    metrics: Option<Arc<EndpointMetrics>>,
    span: Option<Context>,
}

/// Starts recording a call of `service` at gRPC `path`, and writes the
/// trace context into `headers`.
pub fn start_call(service: &str, path: &str, headers: &mut HeaderMap) -> CallRecord {
    start_with(&service_metrics(service), path, headers)
}

fn start_with(service: &Arc<ServiceMetrics>, path: &str, headers: &mut HeaderMap) -> CallRecord {
    let current = Context::current();
    // A span the sampler would drop is not made: the context goes on as is.
    let traced = trace::enabled() && !trace::certainly_dropped(current.span().span_context());
    if !crate::metrics::enabled() && !traced {
        trace::inject(&current, headers);
        return CallRecord {
            metrics: None,
            span: None,
        };
    }
    let endpoint = service.endpoint(path);
    let span = if traced {
        let tracer = trace::tracer();
        let mut span = tracer
            .span_builder(endpoint.span_name.clone())
            .with_kind(SpanKind::Client)
            .start_with_context(&*tracer, &current);
        // Attributes only on spans that are kept: an unsampled call pays
        // for no strings.
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.label.clone()),
                KeyValue::new("rpc.method", endpoint.label.clone()),
            ]);
        }
        let cx = current.with_span(span);
        trace::inject(&cx, headers);
        Some(cx)
    } else {
        trace::inject(&current, headers);
        None
    };
    CallRecord {
        metrics: crate::metrics::enabled().then_some(endpoint),
        span,
    }
}

impl Finish for CallRecord {
    fn finish(self, code: Option<Code>) {
        self.record(code);
    }
}

/// The client's record of a call is shared with its attempts.
impl Finish for Arc<CallRecord> {
    fn finish(self, code: Option<Code>) {
        self.record(code);
    }
}

impl CallRecord {
    fn record(&self, code: Option<Code>) {
        let code = code.unwrap_or(Code::Cancelled);
        if let Some(endpoint) = &self.metrics {
            endpoint.counter(code).inc();
        }
        if let Some(cx) = &self.span {
            crate::trace::end_span(cx, code);
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
            Ok(response) => Ok(crate::body::observe(response, self)),
            Err(status) => {
                Finish::finish(self, Some(status.code()));
                Err(status)
            }
        }
    }
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
    ) -> Arc<dyn micro_client::CallEnd> {
        let service = service_metrics(nodes.service());
        if crate::metrics::enabled() && service.nodes_due() {
            let states = nodes.states();
            self::nodes(nodes.service(), states.up, states.down, states.ejected);
        }
        Arc::new(start_with(&service, path, headers))
    }
}

impl micro_client::CallEnd for CallRecord {
    fn attempt(&self, result: micro_client::AttemptResult) {
        if let Some(endpoint) = &self.metrics {
            endpoint.service.attempt(result).inc();
        }
    }

    fn answered(self: Arc<Self>, response: http::Response<Body>) -> http::Response<Body> {
        crate::body::observe(response, self)
    }

    fn failed(self: Arc<Self>, error: &micro_client::ClientError) {
        self.record(Some(error.code()));
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
