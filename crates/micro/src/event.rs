//! Publishing events, like go-micro's `micro.NewEvent(topic, client)`.
//!
//! An [`Event`] publishes on one topic through the service's broker, with
//! the headers a go-micro v2.9.1 service sends: `Content-Type` (the codec:
//! `application/grpc+proto` for a protobuf message, go-micro's default, or
//! `application/json`), `Micro-Topic`, `Micro-From-Service` (the publishing
//! service) and the metadata given (keys Title-Cased as go-micro's
//! `metadata.FromContext` does).
//!
//! ```no_run
//! # async fn demo(service: &micro::Service) -> Result<(), micro::broker::Error> {
//! let event = service.event("go.micro.evt.user");
//! event.publish_json(r#"{"id":"1","username":"huohuo"}"#).await?;
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use micro_broker::{
    CONTENT_TYPE_HEADER, FROM_SERVICE_HEADER, Header, Message, SharedBroker, title_case,
};
use micro_config::{BrokerArgs, BrokerKind};
use micro_registry::SharedRegistry;

use crate::Error;

/// The content type of protobuf messages (go-micro's default client's).
pub const PROTO_CONTENT_TYPE: &str = "application/grpc+proto";
/// The content type of JSON messages.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Builds the broker the flags name on `registry` (the http broker finds
/// its subscribers there); its publishes and deliveries are counted
/// (`micro_broker_*` metrics). Nothing is connected or bound yet: the http
/// broker listens from its first subscription, the nats and jetstream
/// brokers connect on first use.
pub fn connect_broker(args: &BrokerArgs, registry: SharedRegistry) -> Result<SharedBroker, Error> {
    let telemetry = std::sync::Arc::new(micro_telemetry::broker::BrokerTelemetry);
    Ok(match args.broker {
        BrokerKind::Http => std::sync::Arc::new(micro_broker::http::HttpBroker::with_observer(
            registry,
            args.http_options(),
            telemetry,
        )),
        BrokerKind::Memory => {
            std::sync::Arc::new(micro_broker::memory::MemoryBroker::with_observer(telemetry))
        }
        #[cfg(feature = "nats")]
        BrokerKind::Nats => {
            let options = micro_broker::nats::NatsOptions::from_addresses(
                args.broker_address.as_deref().unwrap_or_default(),
            )
            .map_err(|e| Error::Config(e.to_string()))?;
            if args.broker_advertise.is_some() {
                tracing::warn!("--broker_advertise is ignored by the nats broker");
            }
            std::sync::Arc::new(micro_broker::nats::NatsBroker::with_observer(
                options, telemetry,
            ))
        }
        #[cfg(feature = "nats")]
        BrokerKind::JetStream => {
            let mut options = micro_broker::jetstream::JetStreamOptions::from_addresses(
                args.broker_address.as_deref().unwrap_or_default(),
            )
            .map_err(|e| Error::Config(e.to_string()))?;
            options.replicas = args.broker_replicas.into();
            options.max_deliveries = args.broker_max_deliveries;
            options.max_age = args.broker_max_age;
            options.max_bytes = args.broker_max_bytes;
            options.max_messages = args.broker_max_msgs;
            options.max_ack_pending = args.broker_max_ack_pending as usize;
            options.ack_wait = args.broker_ack_wait;
            if args.broker_advertise.is_some() {
                tracing::warn!("--broker_advertise is ignored by the jetstream broker");
            }
            std::sync::Arc::new(
                micro_broker::jetstream::JetStreamBroker::with_observer(options, telemetry)
                    .map_err(|e| Error::Config(e.to_string()))?,
            )
        }
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::Config(format!(
                "broker {other} is not compiled into this binary (build micro with the {other} feature)"
            )));
        }
    })
}

/// A topic to publish on; see the module docs.
#[derive(Clone, Debug)]
pub struct Event {
    topic: String,
    broker: SharedBroker,
    header: Header,
}

impl Event {
    /// Publishes on `topic` through `broker`.
    pub fn new(topic: impl Into<String>, broker: SharedBroker) -> Event {
        Event {
            topic: topic.into(),
            broker,
            header: Header::new(),
        }
    }

    /// Sent as `Micro-From-Service` (a service's events carry its name).
    pub fn from_service(mut self, name: impl Into<String>) -> Event {
        self.header.insert(FROM_SERVICE_HEADER.into(), name.into());
        self
    }

    /// Metadata sent with every message, its key Title-Cased as go-micro's.
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Event {
        self.header.insert(title_case(key), value.into());
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes a protobuf message (`application/grpc+proto`).
    pub async fn publish<M: prost::Message>(&self, message: &M) -> Result<(), micro_broker::Error> {
        self.publish_raw(PROTO_CONTENT_TYPE, message.encode_to_vec())
            .await
    }

    /// Publishes JSON bytes (`application/json`).
    pub async fn publish_json(&self, json: impl Into<Bytes>) -> Result<(), micro_broker::Error> {
        self.publish_raw(JSON_CONTENT_TYPE, json).await
    }

    /// Publishes `body` as `content_type`.
    pub async fn publish_raw(
        &self,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(), micro_broker::Error> {
        let mut message = Message::new(body);
        message.header = self.header.clone();
        message
            .header
            .insert(CONTENT_TYPE_HEADER.into(), content_type.into());
        self.broker.publish(&self.topic, message).await
    }
}
