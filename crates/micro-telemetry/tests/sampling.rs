//! Spans the sampler must drop are not made: with a parent-based sampler
//! of ratio 0 set up (the SDK and an OTLP exporter installed), a client call
//! and a server call under an unsampled parent pass that parent on
//! unchanged, a sampled parent gets a new child span, and a root is not
//! propagated at all. One test: tracing set-up is process-wide.

use std::convert::Infallible;

use http::{HeaderMap, HeaderValue};
use micro_telemetry::trace::{self, Export, Sampling, TraceConfig};
use opentelemetry::Context;
use tonic::body::Body;
use tower::{Layer, ServiceExt};

const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(traceparent: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        trace::TRACEPARENT,
        HeaderValue::from_str(traceparent).expect("value"),
    );
    h
}

/// The `traceparent` a client call injects under `parent` (none: a root).
fn client_traceparent(parent: Option<&str>) -> Option<String> {
    let cx = parent.and_then(|p| trace::extract(&headers(p)));
    let _attached = cx.map(Context::attach);
    let mut out = HeaderMap::new();
    let record = micro_telemetry::client::start_call("go.micro.srv.t", "/t.T/Get", &mut out);
    let _ = record.finish(Err(tonic::Status::not_found("x")));
    out.get(trace::TRACEPARENT)
        .map(|v| v.to_str().expect("ascii").to_string())
}

/// The span context a server handler runs under, for a call carrying `traceparent`.
async fn server_context(traceparent: &str) -> String {
    let layer = micro_server::observer::ObserveLayer::new(
        &micro_telemetry::server::ServerTelemetry,
        "go.micro.srv.t",
        [("/t.T/Get".to_string(), "T.Get".to_string())],
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let record = seen.clone();
    let inner = tower::service_fn(move |_request: http::Request<Body>| {
        let record = record.clone();
        async move {
            let mut out = HeaderMap::new();
            trace::inject(&Context::current(), &mut out);
            *record.lock().expect("lock") = out
                .get(trace::TRACEPARENT)
                .map(|v| v.to_str().expect("ascii").to_string())
                .unwrap_or_default();
            let response = http::Response::builder()
                .header("grpc-status", "0")
                .body(Body::empty())
                .expect("response");
            Ok::<_, Infallible>(response)
        }
    });
    let mut request = http::Request::builder()
        .uri("http://t/t.T/Get")
        .body(Body::empty())
        .expect("request");
    *request.headers_mut() = headers(traceparent);
    let _ = layer.layer(inner).oneshot(request).await;
    seen.lock().expect("lock").clone()
}

#[tokio::test]
async fn dropped_spans_are_not_made_and_contexts_pass_unchanged() {
    let _guard = trace::init_with(TraceConfig {
        service_name: "sampling-test".into(),
        // Never dialled: no span is sampled under an unsampled parent or a root.
        export: Export::To("http://127.0.0.1:9".into()),
        sampling: Sampling::ParentRatio(0.0),
    })
    .expect("tracing set up");
    assert!(trace::enabled());

    // Client: an unsampled parent goes on exactly as it came.
    assert_eq!(
        client_traceparent(Some(UNSAMPLED)).as_deref(),
        Some(UNSAMPLED)
    );
    // A sampled parent gets a child span of its own: same trace, new span id.
    let child = client_traceparent(Some(SAMPLED)).expect("propagated");
    assert_eq!(&child[..36], &SAMPLED[..36], "same trace id");
    assert_ne!(child, SAMPLED, "a new span id");
    assert!(child.ends_with("-01"), "sampled: {child}");
    // A root the sampler drops is not propagated.
    assert_eq!(client_traceparent(None), None);

    // Server: the handler runs under the caller's unsampled context as is,
    // and under a new child span of a sampled one.
    assert_eq!(server_context(UNSAMPLED).await, UNSAMPLED);
    let child = server_context(SAMPLED).await;
    assert_eq!(&child[..36], &SAMPLED[..36]);
    assert_ne!(child, SAMPLED);
}
