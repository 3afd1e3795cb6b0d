//! The broker's plug (feature `broker`): [`BrokerTelemetry`], a
//! [`micro_broker::BrokerObserver`] counting publishes, deliveries by
//! result, handler time and drops, and carrying traces across the broker:
//! a published message gets the current trace context as `traceparent`
//! (and `tracestate`) headers, unless it has one already, and each handler
//! runs in a consumer span (`<topic> process`) under it, so a trace runs
//! from the publisher's span to every subscriber's. go-micro's metadata
//! keys come Title-Cased (`Traceparent`): any case is read.
//!
//! Topics label the metrics: they are named by the services' own code
//! (what they publish and subscribe to), not by callers; a message to a
//! topic nobody here subscribes to reaches no handler and is not counted.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use micro_broker::{BrokerObserver, Event, HandlerFuture, Header, Outcome};
use opentelemetry::trace::{
    FutureExt as _, Span as _, SpanKind, Status as SpanStatus, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};

use crate::metrics::{enabled, metrics};
use crate::trace::{self, TRACEPARENT, TRACESTATE};

/// See the module docs; the `micro` facade's brokers have it.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerTelemetry;

/// The current trace context as message headers (`traceparent`,
/// `tracestate`): for a message published later from another task (a
/// queue of events), which then continues this trace.
pub fn trace_headers() -> Header {
    let mut headers = HeaderMap::new();
    trace::inject(&Context::current(), &mut headers);
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

impl BrokerObserver for BrokerTelemetry {
    fn publishing(&self, _broker: &'static str, _topic: &str, header: &mut Header) {
        if !header
            .keys()
            .any(|k| k.eq_ignore_ascii_case(TRACEPARENT.as_str()))
        {
            header.extend(trace_headers());
        }
    }

    fn handling(&self, broker: &'static str, event: &Event, run: HandlerFuture) -> HandlerFuture {
        let parent = publisher_context(&event.message().header);
        if !trace::enabled() || trace::certainly_dropped_under(parent.as_ref()) {
            // No span: the publisher's context, continued as is.
            return match parent {
                Some(cx) => Box::pin(run.with_context(cx)),
                None => run,
            };
        }
        let parent = parent.unwrap_or_default();
        let tracer = trace::tracer();
        let mut span = tracer
            .span_builder(format!("{} process", event.topic()))
            .with_kind(SpanKind::Consumer)
            .start_with_context(&*tracer, &parent);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("messaging.system", broker),
                KeyValue::new("messaging.destination.name", event.topic().to_string()),
                KeyValue::new("messaging.operation.type", "process"),
            ]);
        }
        let cx = parent.with_span(span);
        Box::pin(async move {
            let result = run.with_context(cx.clone()).await;
            let span = cx.span();
            if let Err(e) = &result {
                span.set_status(SpanStatus::error(e.to_string()));
            }
            span.end();
            result
        })
    }

    fn published(&self, broker: &'static str, topic: &str, ok: bool) {
        if enabled() {
            let result = if ok { "ok" } else { "error" };
            metrics()
                .broker_published
                .with_label_values(&[broker, topic, result])
                .inc();
        }
    }

    fn delivered(&self, broker: &'static str, topic: &str, outcome: &Outcome, elapsed: Duration) {
        if enabled() {
            let m = metrics();
            m.broker_delivered
                .with_label_values(&[broker, topic, outcome.label()])
                .inc();
            m.broker_handler_duration
                .with_label_values(&[broker, topic])
                .observe(elapsed.as_secs_f64());
        }
    }

    fn dropped(&self, broker: &'static str, topic: &str) {
        if enabled() {
            metrics()
                .broker_dropped
                .with_label_values(&[broker, topic])
                .inc();
        }
    }

    fn redelivered(&self, broker: &'static str, topic: &str) {
        if enabled() {
            metrics()
                .broker_redelivered
                .with_label_values(&[broker, topic])
                .inc();
        }
    }

    fn dead_lettered(&self, broker: &'static str, topic: &str) {
        if enabled() {
            metrics()
                .broker_dead_lettered
                .with_label_values(&[broker, topic])
                .inc();
        }
    }
}

/// The trace context a message's headers carry, in any case.
fn publisher_context(header: &Header) -> Option<Context> {
    let mut headers = HeaderMap::new();
    for (name, value) in header {
        for wanted in [TRACEPARENT, TRACESTATE] {
            if name.eq_ignore_ascii_case(wanted.as_str())
                && let Ok(value) = HeaderValue::from_str(value)
            {
                headers.insert(wanted, value);
            }
        }
    }
    trace::extract(&headers)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use micro_broker::memory::MemoryBroker;
    use micro_broker::{Broker, Event, HandlerError, Message, SubscribeOptions};

    use super::*;

    #[tokio::test]
    async fn the_publishers_trace_context_reaches_the_handler() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let broker = MemoryBroker::with_observer(Arc::new(BrokerTelemetry));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _sub = broker
            .subscribe(
                "trace.test",
                SubscribeOptions::default(),
                Arc::new(move |event: Event| {
                    let tx = tx.clone();
                    async move {
                        // The handler runs in the publisher's trace.
                        let _ = tx.send((
                            event.message().header("traceparent").map(str::to_string),
                            crate::trace::current_trace_id(),
                        ));
                        Ok::<(), HandlerError>(())
                    }
                }),
            )
            .await
            .expect("subscribe");
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id");
        let publisher = SpanContext::new(
            trace_id,
            SpanId::from_hex("00f067aa0ba902b7").expect("id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let cx = Context::new().with_remote_span_context(publisher);
        broker
            .publish("trace.test", Message::new("x"))
            .with_context(cx)
            .await
            .expect("published");
        let (header, current) = rx.recv().await.expect("delivered");
        assert_eq!(
            header.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(current, Some(trace_id));

        // go-micro's Title-Cased key is read too; one already there is kept.
        let message = Message::new("y").with_header(
            "Traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        );
        broker
            .publish("trace.test", message)
            .await
            .expect("published");
        let (header, current) = rx.recv().await.expect("delivered");
        assert_eq!(header, None, "no second traceparent added");
        assert_eq!(current, Some(trace_id));
    }

    #[tokio::test]
    async fn publishes_and_deliveries_are_counted_by_result() {
        let broker = MemoryBroker::with_observer(Arc::new(BrokerTelemetry));
        let _sub = broker
            .subscribe(
                "telemetry.test",
                SubscribeOptions::default(),
                Arc::new(|event: Event| async move {
                    match &event.message().body[..] {
                        b"fail" => Err(HandlerError::new("no")),
                        _ => Ok(()),
                    }
                }),
            )
            .await
            .expect("subscribe");
        broker
            .publish("telemetry.test", Message::new("ok"))
            .await
            .expect("ok");
        broker
            .publish("telemetry.test", Message::new("fail"))
            .await
            .expect_err("refused");
        let text = crate::metrics::encode();
        for line in [
            r#"micro_broker_published_total{broker="memory",result="ok",topic="telemetry.test"} 1"#,
            r#"micro_broker_published_total{broker="memory",result="error",topic="telemetry.test"} 1"#,
            r#"micro_broker_delivered_total{broker="memory",result="ok",topic="telemetry.test"} 1"#,
            r#"micro_broker_delivered_total{broker="memory",result="error",topic="telemetry.test"} 1"#,
            r#"micro_broker_handler_duration_seconds_count{broker="memory",topic="telemetry.test"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
