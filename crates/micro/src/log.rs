//! Log lines in go-micro's shape: `2020-03-14 16:17:07 Starting [service] go.micro.srv.user`,
//! or JSON lines (`--log_format=json`, see `micro_telemetry::log`).
//!
//! Info lines are the timestamp and the message; warnings and errors carry
//! their level. `RUST_LOG` (or `MICRO_LOG_LEVEL`) filters, e.g. `debug` or
//! `micro_client=debug`; the default is `info`.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// go-micro's line format.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoMicroFormat;

impl<S, N> FormatEvent<S, N> for GoMicroFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now();
        write!(writer, "{} ", now.format("%Y-%m-%d %H:%M:%S"))?;
        let level = *event.metadata().level();
        if level != Level::INFO {
            write!(writer, "{level} ")?;
        }
        if level > Level::INFO {
            write!(writer, "{}: ", event.metadata().target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the log format `MICRO_LOG_FORMAT` names (default go-micro's
/// text) on stderr. Safe to call more than once.
pub fn init() {
    let format = std::env::var("MICRO_LOG_FORMAT")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_default();
    init_with(format);
}

/// Installs `format` (`--log_format`) on stderr. Safe to call more than once.
pub fn init_with(format: micro_config::LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("MICRO_LOG_LEVEL"))
        .unwrap_or_else(|_| "info".into());
    // Transport crates are chatty at debug; keep them at warn unless asked.
    let filter = if filter.contains("h2") || filter.contains("hyper") || filter.contains("tower") {
        filter
    } else {
        format!("{filter},h2=warn,hyper=warn,hyper_util=warn,tower=warn")
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    let _ = match format {
        micro_config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(GoMicroFormat)
            .try_init(),
        micro_config::LogFormat::Json => builder
            .with_ansi(false)
            .event_format(micro_telemetry::log::JsonFormat)
            .try_init(),
    };
}
