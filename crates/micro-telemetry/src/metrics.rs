//! The Prometheus metrics of a process, in one registry.
//!
//! Every metric follows the Prometheus naming rules: the unit in the name
//! (`_seconds`), `_total` on counters, histograms with buckets from 0.5 ms to
//! 10 s. Label values are bounded: service and registry names, endpoints a
//! server registered (others are `other`), gRPC code names, HTTP status codes,
//! handler kinds — never anything a caller can make up freely.
//!
//! ```
//! micro_telemetry::metrics::registry_operation("etcd", "register", "ok");
//! let text = micro_telemetry::metrics::encode();
//! assert!(text.contains("micro_registry_operations_total{op=\"register\",registry=\"etcd\",result=\"ok\"} 1"));
//! ```

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets, seconds: 0.5 ms … 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most distinct endpoint label values a client records per process; beyond
/// that, new ones are recorded as `other`.
pub const MAX_CLIENT_ENDPOINTS: usize = 1000;

/// Every metric of the toolkit, but `micro_registry_entries_skipped_total`,
/// which the registry counts and a scrape reads (see `SkippedEntries`).
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// `micro_server_requests_total{service,endpoint,code}`
    pub server_requests: IntCounterVec,
    /// `micro_server_request_duration_seconds{service,endpoint}`
    pub server_duration: HistogramVec,
    /// `micro_server_open_streams{service,endpoint}`
    pub server_open_streams: IntGaugeVec,
    /// `micro_server_stream_messages_total{service,endpoint,direction}`
    /// (received from the caller, sent to it)
    pub server_stream_messages: IntCounterVec,
    /// `micro_client_requests_total{service,endpoint,code}`
    pub client_requests: IntCounterVec,
    /// `micro_client_attempts_total{service,outcome}`
    pub client_attempts: IntCounterVec,
    /// `micro_client_nodes{service,state}`
    pub client_nodes: IntGaugeVec,
    /// `micro_registry_operations_total{registry,op,result}`
    pub registry_operations: IntCounterVec,
    /// `micro_api_requests_total{handler,code}`
    pub api_requests: IntCounterVec,
    /// `micro_api_request_duration_seconds{handler}`
    pub api_duration: HistogramVec,
    /// `micro_api_open_connections`
    pub api_open_connections: IntGauge,
    /// `micro_broker_published_total{broker,topic,result}`
    pub broker_published: IntCounterVec,
    /// `micro_broker_delivered_total{broker,topic,result}`
    pub broker_delivered: IntCounterVec,
    /// `micro_broker_handler_duration_seconds{broker,topic}`
    pub broker_handler_duration: HistogramVec,
    /// `micro_broker_dropped_total{broker,topic}`
    pub broker_dropped: IntCounterVec,
    /// `micro_broker_redelivered_total{broker,topic}`
    pub broker_redelivered: IntCounterVec,
    /// `micro_broker_dead_lettered_total{broker,topic}`
    pub broker_dead_lettered: IntCounterVec,
    /// `micro_api_open_streams{kind}` (websocket, sse)
    pub api_open_streams: IntGaugeVec,
    /// `micro_api_stream_messages_total{route,direction}` (received: from
    /// the HTTP client, sent: to it)
    pub api_stream_messages: IntCounterVec,
    /// `micro_admission_refused_total{scope,reason}` (shed, expired)
    pub admission_refused: IntCounterVec,
    /// `micro_admission_limit{scope}`
    pub admission_limit: IntGaugeVec,
    /// `micro_admission_in_flight{scope}`
    pub admission_in_flight: IntGaugeVec,
    client_endpoints: RwLock<HashSet<String>>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let metric =
        HistogramVec::new(opts, labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let client_nodes = IntGaugeVec::new(
            Opts::new(
                "micro_client_nodes",
                "Nodes of a called service the client knows, by state (up, down, ejected)",
            ),
            &["service", "state"],
        )
        .unwrap_or_else(|e| unreachable!("micro_client_nodes: {e}"));
        registry
            .register(Box::new(client_nodes.clone()))
            .unwrap_or_else(|e| unreachable!("micro_client_nodes: {e}"));
        let api_open_connections = IntGauge::new(
            "micro_api_open_connections",
            "HTTP connections the gateway is serving",
        )
        .unwrap_or_else(|e| unreachable!("micro_api_open_connections: {e}"));
        registry
            .register(Box::new(api_open_connections.clone()))
            .unwrap_or_else(|e| unreachable!("micro_api_open_connections: {e}"));
        let server_open_streams = IntGaugeVec::new(
            Opts::new(
                "micro_server_open_streams",
                "Streaming calls a server is serving, by service and endpoint",
            ),
            &["service", "endpoint"],
        )
        .unwrap_or_else(|e| unreachable!("micro_server_open_streams: {e}"));
        registry
            .register(Box::new(server_open_streams.clone()))
            .unwrap_or_else(|e| unreachable!("micro_server_open_streams: {e}"));
        let api_open_streams = IntGaugeVec::new(
            Opts::new(
                "micro_api_open_streams",
                "Streams the gateway relays, by kind (websocket, sse)",
            ),
            &["kind"],
        )
        .unwrap_or_else(|e| unreachable!("micro_api_open_streams: {e}"));
        registry
            .register(Box::new(api_open_streams.clone()))
            .unwrap_or_else(|e| unreachable!("micro_api_open_streams: {e}"));
        // `micro_registry_entries_skipped_total{registry,reason}`: the backends
        // count into `micro_registry::skipped`; each scrape reads it.
        SkippedEntries::register(r);
        Metrics {
            server_requests: counter(
                r,
                "micro_server_requests_total",
                "Calls a server answered, by service, endpoint (Handler.Method) and gRPC code",
                &["service", "endpoint", "code"],
            ),
            server_duration: histogram(
                r,
                "micro_server_request_duration_seconds",
                "Time a server took to answer a call, until its last byte",
                &["service", "endpoint"],
            ),
            server_open_streams,
            server_stream_messages: counter(
                r,
                "micro_server_stream_messages_total",
                "Messages of streaming calls, by service, endpoint and direction (received from the caller, sent to it)",
                &["service", "endpoint", "direction"],
            ),
            client_requests: counter(
                r,
                "micro_client_requests_total",
                "Calls made by name, retries included in one call, by service, endpoint and final gRPC code",
                &["service", "endpoint", "code"],
            ),
            client_attempts: counter(
                r,
                "micro_client_attempts_total",
                "Attempts on a node, by service and outcome (answered, unavailable, connect_failed, connection_failed, timeout, deadline, cancelled, shed)",
                &["service", "outcome"],
            ),
            client_nodes,
            registry_operations: counter(
                r,
                "micro_registry_operations_total",
                "Registry operations, by backend, operation and result (ok, not_found, error)",
                &["registry", "op", "result"],
            ),
            api_requests: counter(
                r,
                "micro_api_requests_total",
                "HTTP requests the gateway answered, by handler and HTTP status code",
                &["handler", "code"],
            ),
            api_duration: histogram(
                r,
                "micro_api_request_duration_seconds",
                "Time the gateway took to answer a request, until the response head",
                &["handler"],
            ),
            api_open_connections,
            broker_published: counter(
                r,
                "micro_broker_published_total",
                "Messages published, by broker, topic and result (ok: every subscriber took it; error)",
                &["broker", "topic", "result"],
            ),
            broker_delivered: counter(
                r,
                "micro_broker_delivered_total",
                "Messages handed to a subscriber's handler, by broker, topic and result (ok, error, panic)",
                &["broker", "topic", "result"],
            ),
            broker_handler_duration: histogram(
                r,
                "micro_broker_handler_duration_seconds",
                "Time a subscriber's handler took on a message",
                &["broker", "topic"],
            ),
            broker_dropped: counter(
                r,
                "micro_broker_dropped_total",
                "Messages a publisher gave up on (its retry buffer full, or retried too long)",
                &["broker", "topic"],
            ),
            broker_redelivered: counter(
                r,
                "micro_broker_redelivered_total",
                "Messages delivered to a subscription again (jetstream: refused, or not acknowledged in time)",
                &["broker", "topic"],
            ),
            broker_dead_lettered: counter(
                r,
                "micro_broker_dead_lettered_total",
                "Messages given up after their deliveries (or unreadable) and kept on the dead-letter subject",
                &["broker", "topic"],
            ),
            api_open_streams,
            api_stream_messages: counter(
                r,
                "micro_api_stream_messages_total",
                "Stream messages the gateway relayed, by route (service/Handler.Method) and direction (received from the HTTP client, sent to it)",
                &["route", "direction"],
            ),
            admission_refused: counter(
                r,
                "micro_admission_refused_total",
                "Requests refused unstarted by admission control, by scope (a server's service name, or api) and reason (shed: over the concurrency limit; expired: deadline passed)",
                &["scope", "reason"],
            ),
            admission_limit: gauge(
                r,
                "micro_admission_limit",
                "Admission control's concurrency limit now, by scope",
                &["scope"],
            ),
            admission_in_flight: gauge(
                r,
                "micro_admission_in_flight",
                "Requests admitted and not finished, by scope",
                &["scope"],
            ),
            client_endpoints: RwLock::new(HashSet::new()),
            registry,
        }
    }

    /// `endpoint` if it is among the first [`MAX_CLIENT_ENDPOINTS`] seen, else `other`.
    pub fn client_endpoint<'a>(&self, endpoint: &'a str) -> &'a str {
        {
            let seen = self
                .client_endpoints
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if seen.contains(endpoint) {
                return endpoint;
            }
            if seen.len() >= MAX_CLIENT_ENDPOINTS {
                return "other";
            }
        }
        let mut seen = self
            .client_endpoints
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() >= MAX_CLIENT_ENDPOINTS {
            return "other";
        }
        seen.insert(endpoint.to_string());
        endpoint
    }
}

/// Whether metrics are recorded: yes unless `MICRO_METRICS` is `off`
/// (`false`, `0`), read once. Off, the hooks cost one load of a flag.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        !std::env::var("MICRO_METRICS").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "false" | "0"
            )
        })
    })
}

/// The process's metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
pub fn encode() -> String {
    let families = metrics().registry.gather();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!("cannot encode metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Counts one registry operation.
pub fn registry_operation(registry: &str, op: &str, result: &str) {
    if !enabled() {
        return;
    }
    metrics()
        .registry_operations
        .with_label_values(&[registry, op, result])
        .inc();
}

/// `micro_registry_entries_skipped_total{registry,reason}`, exported from
/// the counts the registry backends keep in [`micro_registry::skipped`]
/// (etcd: `bad_key`, `oversized`, `bad_json`, `bad_service`, `bad_node`;
/// mDNS: `not_dns`, `malformed`): each collection brings the counter up to
/// those totals first. With metrics off, it has no samples.
#[derive(Debug)]
struct SkippedEntries {
    counter: IntCounterVec,
    /// Two scrapes at once must not both add the same difference.
    sync: Mutex<()>,
}

impl SkippedEntries {
    fn register(registry: &Registry) {
        let name = "micro_registry_entries_skipped_total";
        let counter = IntCounterVec::new(
            Opts::new(
                name,
                "Registry entries skipped as unusable, by backend and reason",
            ),
            &["registry", "reason"],
        )
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
        let skipped = SkippedEntries {
            counter,
            sync: Mutex::new(()),
        };
        registry
            .register(Box::new(skipped))
            .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    }

    /// Brings the counter up to the backends' totals (only this type adds to it).
    fn sync(&self) {
        if !enabled() {
            return;
        }
        let _one = self
            .sync
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for total in micro_registry::skipped::totals() {
            let counter = self
                .counter
                .with_label_values(&[total.registry, total.reason]);
            let seen = counter.get();
            if total.count > seen {
                counter.inc_by(total.count - seen);
            }
        }
    }
}

impl Collector for SkippedEntries {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.sync();
        self.counter.collect()
    }
}

/// Go's names of the gRPC codes (`OK`, `NotFound`, ...), as grpc-go and its
/// Prometheus middleware print them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = metrics();
        m.server_requests
            .with_label_values(&["s", "H.M", "OK"])
            .inc();
        m.server_duration
            .with_label_values(&["s", "H.M"])
            .observe(0.002);
        let text = encode();
        assert!(
            text.contains("# TYPE micro_server_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("micro_server_request_duration_seconds_bucket{endpoint=\"H.M\",service=\"s\",le=\"0.0025\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn registry_skips_are_exported_at_each_scrape() {
        let line = |n: u64| {
            format!(
                "micro_registry_entries_skipped_total{{reason=\"bad_json\",registry=\"skip-test\"}} {n}"
            )
        };
        micro_registry::skipped::record("skip-test", "bad_json", 2);
        let text = encode();
        assert!(
            text.contains("# TYPE micro_registry_entries_skipped_total counter"),
            "{text}"
        );
        assert!(text.contains(&line(2)), "{text}");
        micro_registry::skipped::record("skip-test", "bad_json", 3);
        assert!(encode().contains(&line(5)));
        assert!(encode().contains(&line(5)), "a scrape adds nothing twice");
    }

    #[test]
    fn client_endpoints_are_bounded() {
        let m = metrics();
        assert_eq!(m.client_endpoint("Greeter.Hello"), "Greeter.Hello");
        for i in 0..MAX_CLIENT_ENDPOINTS + 5 {
            let _ = m.client_endpoint(&format!("H.M{i}"));
        }
        assert_eq!(m.client_endpoint("Never.Seen"), "other");
        assert_eq!(m.client_endpoint("Greeter.Hello"), "Greeter.Hello");
    }
}
