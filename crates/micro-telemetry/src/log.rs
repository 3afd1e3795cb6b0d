//! JSON log lines: one object per line with `timestamp` (RFC 3339, UTC),
//! `level`, `target`, `message`, the event's other fields, and `trace_id`
//! when the line is logged inside a traced call.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log_format=json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFormat;

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

/// The JSON object of one event (without the trace id).
pub fn event_json(event: &Event<'_>) -> Map<String, Value> {
    let mut fields = Map::new();
    event.record(&mut Fields(&mut fields));
    let mut line = Map::new();
    line.insert(
        "timestamp".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    line.insert("level".into(), event.metadata().level().as_str().into());
    line.insert("target".into(), event.metadata().target().into());
    line.insert(
        "message".into(),
        fields
            .remove("message")
            .unwrap_or(Value::String(String::new())),
    );
    for (key, value) in fields {
        line.entry(key).or_insert(value);
    }
    line
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = event_json(event);
        if let Some(trace_id) = crate::trace::current_trace_id() {
            line.insert("trace_id".into(), trace_id.to_string().into());
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}
