//! Operability flags every binary shares: the admin listener, readiness
//! checks and the log format.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use micro_server::ServerOptions;

use super::{duration_text, positive_duration};

/// How log lines look (`--log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// go-micro's lines: `2020-03-14 16:17:07 Starting [service] ...`.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, target, message, trace_id.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Where operators look: health, metrics, logs.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Operations")]
pub struct OpsArgs {
    /// Admin HTTP listener for /health/live, /health/ready and /metrics (off unless set), e.g. 127.0.0.1:9090
    #[arg(
        long = "admin_address",
        visible_alias = "admin-address",
        env = "MICRO_ADMIN_ADDRESS",
        value_name = "ADDR"
    )]
    pub admin_address: Option<String>,

    /// Log line format: text (go-micro's) or json
    #[arg(
        long = "log_format",
        visible_alias = "log-format",
        env = "MICRO_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// How often a server runs its readiness checks (user-srv: its store); each is bounded by it
    #[arg(
        long = "health_check_interval",
        visible_alias = "health-check-interval",
        env = "MICRO_HEALTH_CHECK_INTERVAL",
        default_value = duration_text(ServerOptions::HEALTH_CHECK_INTERVAL),
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub health_check_interval: Duration,
}

impl Default for OpsArgs {
    /// The flags' defaults (environment variables ignored).
    fn default() -> Self {
        super::defaults()
    }
}
