//! The broker flags: which backend carries events, and where it listens.

use std::fmt;
use std::str::FromStr;

use std::time::Duration;

use clap::Args;
use micro_broker::http::HttpOptions;

use crate::positive_duration;

/// Which broker backend (`--broker`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BrokerKind {
    /// go-micro v2.9.1's default: subscribers register in the registry,
    /// publishers POST to them. Needs no broker server.
    #[default]
    Http,
    /// This process only (tests, single-binary programs).
    Memory,
    /// go-micro's NATS broker wire on a NATS server: at most once.
    Nats,
    /// The same wire on NATS JetStream: at least once, durable.
    JetStream,
}

impl BrokerKind {
    pub const NAMES: [&'static str; 4] = ["http", "memory", "nats", "jetstream"];

    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Http => "http",
            BrokerKind::Memory => "memory",
            BrokerKind::Nats => "nats",
            BrokerKind::JetStream => "jetstream",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BrokerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" => Ok(BrokerKind::Http),
            "memory" => Ok(BrokerKind::Memory),
            "nats" => Ok(BrokerKind::Nats),
            "jetstream" => Ok(BrokerKind::JetStream),
            other => Err(format!(
                "unknown broker {other:?} (expected one of: {})",
                BrokerKind::NAMES.join(", ")
            )),
        }
    }
}

/// How events are published and received.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Broker")]
pub struct BrokerArgs {
    /// Broker backend: http (go-micro's default: through the registry, no broker server), memory (this process only), nats (a NATS server; at most once), jetstream (NATS JetStream; at least once, durable)
    #[arg(
        long = "broker",
        env = "MICRO_BROKER",
        default_value = "http",
        value_name = "NAME"
    )]
    pub broker: BrokerKind,

    /// Broker address: for http, the address its listener binds (":0" = every interface, random port); for nats and jetstream, the servers, comma separated, host:port with or without nats:// (default nats://127.0.0.1:4222)
    #[arg(
        long = "broker_address",
        visible_alias = "broker-address",
        env = "MICRO_BROKER_ADDRESS",
        value_name = "ADDR"
    )]
    pub broker_address: Option<String>,

    /// Address the http broker registers for publishers to dial (default: the bound IP, or the best interface address)
    #[arg(
        long = "broker_advertise",
        visible_alias = "broker-advertise",
        env = "MICRO_BROKER_ADVERTISE",
        value_name = "HOST[:PORT]"
    )]
    pub broker_advertise: Option<String>,

    /// jetstream: replicas of each stream it makes (3 on a 3-member cluster)
    #[arg(
        long = "broker_replicas",
        visible_alias = "broker-replicas",
        env = "MICRO_BROKER_REPLICAS",
        default_value = "1",
        value_parser = clap::value_parser!(u8).range(1..=5),
        value_name = "N"
    )]
    pub broker_replicas: u8,

    /// jetstream: deliveries of a message before it goes to the dead-letter subject micro.deadletter.<topic>
    #[arg(
        long = "broker_max_deliveries",
        visible_alias = "broker-max-deliveries",
        env = "MICRO_BROKER_MAX_DELIVERIES",
        default_value = "5",
        value_parser = clap::value_parser!(u32).range(1..=1000),
        value_name = "N"
    )]
    pub broker_max_deliveries: u32,

    /// jetstream: how long a stream it makes keeps a message
    #[arg(
        long = "broker_max_age",
        visible_alias = "broker-max-age",
        env = "MICRO_BROKER_MAX_AGE",
        default_value = "168h",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub broker_max_age: Duration,

    /// jetstream: bytes a stream it makes keeps (the oldest messages are discarded past it)
    #[arg(
        long = "broker_max_bytes",
        visible_alias = "broker-max-bytes",
        env = "MICRO_BROKER_MAX_BYTES",
        default_value = "1073741824",
        value_parser = clap::value_parser!(i64).range(1..),
        value_name = "BYTES"
    )]
    pub broker_max_bytes: i64,

    /// jetstream: messages a stream it makes keeps (the oldest are discarded past it)
    #[arg(
        long = "broker_max_msgs",
        visible_alias = "broker-max-msgs",
        env = "MICRO_BROKER_MAX_MSGS",
        default_value = "1000000",
        value_parser = clap::value_parser!(i64).range(1..),
        value_name = "N"
    )]
    pub broker_max_msgs: i64,

    /// jetstream: unacknowledged messages one subscription may hold
    #[arg(
        long = "broker_max_ack_pending",
        visible_alias = "broker-max-ack-pending",
        env = "MICRO_BROKER_MAX_ACK_PENDING",
        default_value = "256",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        value_name = "N"
    )]
    pub broker_max_ack_pending: u32,

    /// jetstream: a delivery not acknowledged in this time (a handler still running, a crashed subscriber) is delivered again
    #[arg(
        long = "broker_ack_wait",
        visible_alias = "broker-ack-wait",
        env = "MICRO_BROKER_ACK_WAIT",
        default_value = "30s",
        value_parser = positive_duration,
        value_name = "DURATION"
    )]
    pub broker_ack_wait: Duration,
}

impl Default for BrokerArgs {
    /// The flags' defaults (environment variables ignored).
    fn default() -> Self {
        super::defaults()
    }
}

impl BrokerArgs {
    /// The http broker's options these flags describe.
    pub fn http_options(&self) -> HttpOptions {
        let mut options = HttpOptions::default();
        if let Some(address) = self.broker_address.as_deref().map(str::trim)
            && !address.is_empty()
        {
            options.address = address.to_string();
        }
        options.advertise = self.broker_advertise.clone();
        options
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    #[test]
    fn defaults_and_values() {
        let cli = Cli::try_parse_from(["t"]).expect("parse");
        assert_eq!(cli.broker.broker, BrokerKind::Http);
        assert_eq!(cli.broker.http_options().address, HttpOptions::ADDRESS);
        let cli = Cli::try_parse_from([
            "t",
            "--broker=memory",
            "--broker-address=127.0.0.1:0",
            "--broker_advertise=10.0.0.5",
        ])
        .expect("parse");
        assert_eq!(cli.broker.broker, BrokerKind::Memory);
        let options = cli.broker.http_options();
        assert_eq!(options.address, "127.0.0.1:0");
        assert_eq!(options.advertise.as_deref(), Some("10.0.0.5"));
        let err = Cli::try_parse_from(["t", "--broker=kafka"]).expect_err("unknown");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("http, memory, nats, jetstream"),
            "{err}"
        );
        let cli = Cli::try_parse_from([
            "t",
            "--broker=jetstream",
            "--broker_replicas=3",
            "--broker_max_deliveries=2",
            "--broker_max_age=1h",
        ])
        .expect("parse");
        assert_eq!(cli.broker.broker, BrokerKind::JetStream);
        assert_eq!(cli.broker.broker_replicas, 3);
        assert_eq!(cli.broker.broker_max_deliveries, 2);
        assert_eq!(cli.broker.broker_max_age, Duration::from_secs(3600));
        assert_eq!(cli.broker.broker_max_msgs, 1_000_000);
        let err = Cli::try_parse_from(["t", "--broker_replicas=0"]).expect_err("0 replicas");
        assert_eq!(err.exit_code(), 2);
    }
}
