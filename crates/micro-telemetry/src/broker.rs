//! The broker's plug (feature `broker`): [`BrokerTelemetry`], a
//! [`micro_broker::BrokerObserver`] counting publishes, deliveries by
//! result, handler time and drops.
//!
//! Topics label the metrics: they are named by the services' own code
//! (what they publish and subscribe to), not by callers; a message to a
//! topic nobody here subscribes to reaches no handler and is not counted.

use std::time::Duration;

use micro_broker::{BrokerObserver, Outcome};

use crate::metrics::{enabled, metrics};

/// See the module docs; the `micro` facade's brokers have it.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerTelemetry;

impl BrokerObserver for BrokerTelemetry {
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use micro_broker::memory::MemoryBroker;
    use micro_broker::{Broker, Event, HandlerError, Message, SubscribeOptions};

    use super::*;

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
