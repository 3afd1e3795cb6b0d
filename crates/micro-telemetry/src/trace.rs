//! Distributed tracing: W3C `traceparent`/`tracestate` propagation and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry spans exported over
//! OTLP/gRPC.
//!
//! Without an endpoint nothing is exported and no span is made: a server
//! still continues an incoming trace context (so its own calls pass the same
//! `traceparent` on), at the cost of parsing one header.
//!
//! With an endpoint, a span the sampler is certain to drop is not made
//! either: the toolkit builds the SDK's sampler itself (from
//! [`Sampling`]), so it knows without asking it that a parent-based sampler
//! drops every child of an unsampled parent, and that `always_off` (or a
//! ratio of 0) drops every root. Such a call costs what it costs with
//! tracing off: the caller's context is passed on unchanged. Only spans the
//! sampler may keep go through the SDK (and an unsampled root it makes is
//! still passed on, so the services behind see one trace id).
//!
//! Propagation works on any [`http::HeaderMap`], and so on gRPC metadata:
//!
//! ```
//! use micro_telemetry::trace;
//! let mut headers = http::HeaderMap::new();
//! headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
//! let cx = trace::extract(&headers).expect("a valid traceparent");
//! let mut out = http::HeaderMap::new();
//! trace::inject(&cx, &mut out);
//! assert_eq!(out["traceparent"], headers["traceparent"]);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made (an exporter is installed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What the installed sampler does, as bits: see [`certainly_dropped`].
static POLICY: AtomicU8 = AtomicU8::new(0);
/// A span without a parent may be kept.
const ROOTS_MAY_BE_KEPT: u8 = 1;
/// A span with a valid parent is kept exactly when its parent is sampled.
const FOLLOWS_PARENT: u8 = 2;

/// Whether a span started now under `parent` (its span context; invalid
/// for none) would certainly be dropped by the installed sampler, so that
/// nothing need be made for it. `false` whenever the sampler might keep it.
#[inline]
pub fn certainly_dropped(parent: &SpanContext) -> bool {
    dropped_by(POLICY.load(Ordering::Relaxed), parent)
}

/// [`certainly_dropped`] for a parent context, if any.
#[inline]
pub fn certainly_dropped_under(parent: Option<&Context>) -> bool {
    match parent {
        Some(cx) => certainly_dropped(cx.span().span_context()),
        None => certainly_dropped(&SpanContext::NONE),
    }
}

#[inline]
fn dropped_by(policy: u8, parent: &SpanContext) -> bool {
    if parent.is_valid() && policy & FOLLOWS_PARENT != 0 {
        return !parent.is_sampled();
    }
    policy & ROOTS_MAY_BE_KEPT == 0
}

/// The sampler [`Sampling`] asks for, in a form the toolkit can reason about.
#[cfg(any(feature = "otlp", test))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct SamplerSpec {
    /// `parentbased_*`: children follow their parent's decision.
    parent_based: bool,
    /// Roots (and, if not parent-based, every span) are kept with this
    /// probability (1 = always, 0 or less = never).
    ratio: f64,
}

#[cfg(any(feature = "otlp", test))]
impl SamplerSpec {
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, read as the
    /// OpenTelemetry SDK reads them (an unknown or unsupported sampler is
    /// parent-based always-on, a missing or bad ratio is 1).
    fn from_env(name: Option<&str>, arg: Option<&str>) -> Result<SamplerSpec, SamplerSpec> {
        let ratio = || {
            arg.and_then(|a| a.trim().parse::<f64>().ok())
                .unwrap_or(1.0)
        };
        let spec = |parent_based, ratio| SamplerSpec {
            parent_based,
            ratio,
        };
        Ok(match name.map(str::trim).filter(|n| !n.is_empty()) {
            None | Some("parentbased_always_on") => spec(true, 1.0),
            Some("always_on") => spec(false, 1.0),
            Some("always_off") => spec(false, 0.0),
            Some("traceidratio") => spec(false, ratio()),
            Some("parentbased_always_off") => spec(true, 0.0),
            Some("parentbased_traceidratio") => spec(true, ratio()),
            Some(_) => return Err(spec(true, 1.0)),
        })
    }

    fn policy(self) -> u8 {
        let mut policy = 0;
        // NaN and anything ≤ 0 keep nothing (as the SDK's ratio sampler).
        if self.ratio > 0.0 {
            policy |= ROOTS_MAY_BE_KEPT;
        }
        if self.parent_based {
            policy |= FOLLOWS_PARENT;
        }
        policy
    }

    #[cfg(feature = "otlp")]
    fn sampler(self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler;
        let root = if self.ratio >= 1.0 {
            Sampler::AlwaysOn
        } else if self.ratio > 0.0 {
            Sampler::TraceIdRatioBased(self.ratio)
        } else {
            Sampler::AlwaysOff
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// The tracer of the installed provider, made once per [`init_with`]:
/// `global::tracer` takes a lock and allocates on every call.
static TRACER: std::sync::RwLock<Option<Arc<BoxedTracer>>> = std::sync::RwLock::new(None);

/// The OpenTelemetry tracer the toolkit's spans come from.
pub fn tracer() -> Arc<BoxedTracer> {
    if let Some(tracer) = TRACER.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return tracer.clone();
    }
    Arc::new(opentelemetry::global::tracer("micro"))
}

#[cfg(feature = "otlp")]
fn set_tracer(tracer: Option<BoxedTracer>) {
    *TRACER.write().unwrap_or_else(|p| p.into_inner()) = tracer.map(Arc::new);
}

/// The remote span context in `traceparent` (and `tracestate`), if valid.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    let parent = headers.get(TRACEPARENT)?.to_str().ok()?;
    let span_context = parse_traceparent(parent.trim(), headers.get(TRACESTATE))?;
    Some(Context::new().with_remote_span_context(span_context))
}

/// Writes the span context of `cx` (if it has a valid one) as `traceparent`
/// and `tracestate`, replacing any there.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let value = traceparent(
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8(),
    );
    // A traceparent is new on every call: marked sensitive, HTTP/2 sends it
    // as a literal never added to the HPACK table. Indexed, each call's
    // value would push the stable headers (content-type, grpc-timeout,
    // authority) out of the table, and every call would pay to send them
    // in full again.
    if let Ok(mut value) = HeaderValue::from_bytes(&value) {
        value.set_sensitive(true);
        headers.insert(TRACEPARENT, value);
    }
    let state = sc.trace_state().header();
    if state.is_empty() {
        headers.remove(TRACESTATE);
    } else if let Ok(mut value) = HeaderValue::from_str(&state) {
        value.set_sensitive(true);
        headers.insert(TRACESTATE, value);
    }
}

/// `00-<trace id>-<span id>-<flags>` in lower-case hex, written by hand:
/// `format!` with `{:032x}` costs about 2,500 instructions a call, this
/// about a tenth of that.
fn traceparent(trace_id: TraceId, span_id: SpanId, flags: u8) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    let mut put = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[usize::from(b >> 4)];
            out[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
    };
    put(3, &trace_id.to_bytes());
    put(36, &span_id.to_bytes());
    put(53, &[flags]);
    out
}

/// Ends the span of `cx` with the call's code (server-side failures are
/// errors): the end of a server or client call's span.
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) fn end_span(cx: &Context, code: tonic::Code) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::Status as SpanStatus;
    use tonic::Code;
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
        span.set_status(SpanStatus::error(crate::metrics::code_name(code)));
    }
    span.end();
}

/// The trace id of the current context, if there is one (for log lines).
pub fn current_trace_id() -> Option<TraceId> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id())
}

/// `version-traceid-spanid-flags`, per W3C Trace Context level 1: version 00
/// exactly four fields; a higher version at least four (later fields ignored);
/// version ff, all-zero ids and upper-case hex are invalid.
fn parse_traceparent(value: &str, state: Option<&HeaderValue>) -> Option<SpanContext> {
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !lower_hex(trace_id, 32) || !lower_hex(span_id, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let trace_state = state
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        trace_state,
    ))
}

/// Keeps the tracer provider; flushes and shuts it down when dropped.
#[derive(Debug, Default)]
pub struct TraceGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            ENABLED.store(false, Ordering::Relaxed);
            POLICY.store(0, Ordering::Relaxed);
            set_tracer(None);
            if let Err(e) = provider.shutdown() {
                tracing::warn!("OpenTelemetry: flushing spans failed: {e}");
            }
        }
    }
}

/// Where spans go and which are kept.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The `service.name` resource (`OTEL_SERVICE_NAME` overrides it).
    pub service_name: String,
    pub export: Export,
    pub sampling: Sampling,
}

/// Whether and where spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// No spans made, nothing exported (context is still passed on).
    Off,
    /// Over OTLP/gRPC to `OTEL_EXPORTER_OTLP_ENDPOINT` (or `_TRACES_ENDPOINT`).
    FromEnv,
    /// Over OTLP/gRPC to this endpoint (`http://host:4317`).
    To(String),
}

/// Which spans are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// `OTEL_TRACES_SAMPLER` and `_ARG` (default: parent-based, always on).
    FromEnv,
    /// Parent-based: a trace's first span is kept with this probability,
    /// later ones follow their parent (`parentbased_traceidratio`).
    ParentRatio(f64),
}

impl TraceConfig {
    /// What the standard `OTEL_*` variables ask for.
    pub fn from_env(service_name: &str) -> TraceConfig {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let export =
            if set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Export::FromEnv
            } else {
                Export::Off
            };
        TraceConfig {
            service_name: service_name.to_string(),
            export,
            sampling: Sampling::FromEnv,
        }
    }
}

/// Starts exporting spans over OTLP/gRPC if `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; `OTEL_SERVICE_NAME`
/// overrides `service_name`, `OTEL_TRACES_SAMPLER` (and `_ARG`) pick the
/// sampler (default: parent-based, always on). Call inside a tokio runtime;
/// keep the guard until exit.
pub fn init(service_name: &str) -> Result<TraceGuard, String> {
    init_with(TraceConfig::from_env(service_name))
}

/// [`init`] with the configuration given rather than read from the
/// environment (`OTEL_SERVICE_NAME` still applies).
pub fn init_with(config: TraceConfig) -> Result<TraceGuard, String> {
    if config.export == Export::Off {
        return Ok(TraceGuard::default());
    }
    #[cfg(feature = "otlp")]
    {
        use opentelemetry_otlp::WithExportConfig as _;

        let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        let builder = match &config.export {
            Export::To(endpoint) => builder.with_endpoint(endpoint.clone()),
            _ => builder,
        };
        let exporter = builder.build().map_err(|e| format!("OTLP exporter: {e}"))?;
        let name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| config.service_name.clone());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(name.clone())
            .build();
        let spec = match config.sampling {
            Sampling::FromEnv => {
                let name = std::env::var("OTEL_TRACES_SAMPLER").ok();
                let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
                SamplerSpec::from_env(name.as_deref(), arg.as_deref()).unwrap_or_else(|fallback| {
                    tracing::warn!(
                        "OTEL_TRACES_SAMPLER={}: not a sampler this binary knows (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio); using parentbased_always_on",
                        name.unwrap_or_default()
                    );
                    fallback
                })
            }
            Sampling::ParentRatio(ratio) => SamplerSpec {
                parent_based: true,
                ratio: ratio.clamp(0.0, 1.0),
            },
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .with_sampler(spec.sampler())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        set_tracer(Some(opentelemetry::global::tracer("micro")));
        POLICY.store(spec.policy(), Ordering::Relaxed);
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!("Tracing [otlp] exporting spans of {name}");
        Ok(TraceGuard {
            provider: Some(provider),
        })
    }
    #[cfg(not(feature = "otlp"))]
    {
        Err(format!(
            "spans of {} are to be exported over OTLP but this binary was built without the otlp feature",
            config.service_name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_str(traceparent).expect("value"),
        );
        h
    }

    #[test]
    fn valid_traceparents_round_trip_with_tracestate() {
        let mut h = headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let cx = extract(&h).expect("valid");
        assert!(cx.span().span_context().is_remote());
        assert!(cx.span().span_context().is_sampled());
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out[TRACEPARENT], h[TRACEPARENT]);
        assert_eq!(out[TRACESTATE], "congo=t61rcWkgMzE");
        // Never indexed by HPACK (a new value every call).
        assert!(out[TRACEPARENT].is_sensitive());
        assert!(out[TRACESTATE].is_sensitive());
    }

    #[test]
    fn traceparent_is_w3c_lower_hex() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id");
        let span_id = SpanId::from_hex("00f067aa0ba902b7").expect("id");
        assert_eq!(
            &traceparent(trace_id, span_id, 1)[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            &traceparent(trace_id, span_id, 0)[..],
            format!("00-{trace_id}-{span_id}-00").as_bytes()
        );
    }

    #[test]
    fn future_versions_keep_four_fields_and_unknown_flags_drop() {
        let cx = extract(&headers(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-extra",
        ))
        .expect("a later version is read as 00");
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(
            out[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn samplers_are_read_as_the_sdk_reads_them() {
        let read = |name, arg| SamplerSpec::from_env(name, arg);
        let spec = |parent_based, ratio| SamplerSpec {
            parent_based,
            ratio,
        };
        assert_eq!(read(None, None), Ok(spec(true, 1.0)));
        assert_eq!(read(Some(" "), None), Ok(spec(true, 1.0)));
        assert_eq!(read(Some("always_off"), None), Ok(spec(false, 0.0)));
        assert_eq!(read(Some("always_on"), Some("0")), Ok(spec(false, 1.0)));
        assert_eq!(
            read(Some("traceidratio"), Some("0.25")),
            Ok(spec(false, 0.25))
        );
        assert_eq!(read(Some("traceidratio"), Some("x")), Ok(spec(false, 1.0)));
        assert_eq!(
            read(Some("parentbased_always_off"), None),
            Ok(spec(true, 0.0))
        );
        assert_eq!(
            read(Some("parentbased_traceidratio"), Some("0")),
            Ok(spec(true, 0.0))
        );
        assert_eq!(read(Some("jaeger_remote"), None), Err(spec(true, 1.0)));
    }

    #[test]
    fn only_spans_the_sampler_must_drop_are_skipped() {
        let sc = |flags| {
            SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("id"),
                SpanId::from_hex("00f067aa0ba902b7").expect("id"),
                flags,
                true,
                TraceState::default(),
            )
        };
        let (sampled, unsampled, none) = (
            sc(TraceFlags::SAMPLED),
            sc(TraceFlags::default()),
            SpanContext::empty_context(),
        );
        let dropped = |spec: SamplerSpec, parent: &SpanContext| dropped_by(spec.policy(), parent);
        let spec = |parent_based, ratio| SamplerSpec {
            parent_based,
            ratio,
        };
        // parentbased_traceidratio with 0: roots and unsampled children dropped.
        assert!(dropped(spec(true, 0.0), &none));
        assert!(dropped(spec(true, 0.0), &unsampled));
        assert!(!dropped(spec(true, 0.0), &sampled));
        // parentbased, some roots kept: the SDK decides roots.
        assert!(!dropped(spec(true, 0.1), &none));
        assert!(dropped(spec(true, 0.1), &unsampled));
        // always_off ignores the parent; always_on and ratios never skip.
        assert!(dropped(spec(false, 0.0), &sampled));
        assert!(!dropped(spec(false, 1.0), &unsampled));
        assert!(!dropped(spec(false, 0.5), &none));
        assert!(dropped(spec(false, f64::NAN), &none));
        // Nothing installed: POLICY is 0, and spans are not made anyway.
        assert!(certainly_dropped(&none) || enabled());
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(extract(&headers(bad)).is_none(), "{bad:?}");
        }
        assert!(extract(&HeaderMap::new()).is_none());
    }
}
