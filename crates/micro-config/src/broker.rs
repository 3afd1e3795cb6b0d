//! The broker flags: which backend carries events, and where it listens.

use std::fmt;
use std::str::FromStr;

use clap::Args;
use micro_broker::http::HttpOptions;

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
}

impl BrokerKind {
    pub const NAMES: [&'static str; 3] = ["http", "memory", "nats"];

    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Http => "http",
            BrokerKind::Memory => "memory",
            BrokerKind::Nats => "nats",
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
    /// Broker backend: http (go-micro's default: through the registry, no broker server), memory (this process only), nats (a NATS server; at most once)
    #[arg(
        long = "broker",
        env = "MICRO_BROKER",
        default_value = "http",
        value_name = "NAME"
    )]
    pub broker: BrokerKind,

    /// Broker address: for http, the address its listener binds (":0" = every interface, random port); for nats, the servers, comma separated, host:port with or without nats:// (default nats://127.0.0.1:4222)
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
        assert!(err.to_string().contains("http, memory, nats"), "{err}");
    }
}
