//! go-micro's broker: publish a [`Message`] (headers and a body) on a topic,
//! subscribe to a topic with an optional queue group.
//!
//! - **Broadcast**: every subscription without a queue gets each message.
//! - **Queue group**: the subscriptions sharing a queue name get one copy
//!   of each message between them (one random member; another if it cannot
//!   take it).
//! - **Acknowledgement**: a [`Handler`] returns `Ok` to acknowledge a
//!   message and an error to refuse it; panics are refusals too, never a
//!   crashed process. What a refusal does is the backend's: `memory` and
//!   `http` return it to the publisher; a durable backend (JetStream) will
//!   deliver the message again.
//! - **Stopping**: [`Subscription::unsubscribe`] stops new deliveries, then
//!   waits for the handlers in flight (a drain).
//!
//! Backends: [`memory`] (one process), [`http`] (go-micro v2.9.1's
//! default: subscribers register `micro.http.broker` nodes in the registry,
//! publishers POST go-micro's JSON envelope to them) and, with the `nats`
//! feature, `nats` (go-micro's NATS broker wire; at most once) and
//! `jetstream` (the same wire, at least once, durable). Every backend speaks
//! go-micro's envelope ([`Message::to_envelope`]), so go-micro services and
//! these publish to each other.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), micro_broker::Error> {
//! use std::sync::Arc;
//! use micro_broker::{Broker, Event, HandlerError, Message, SubscribeOptions, memory::MemoryBroker};
//!
//! let broker = MemoryBroker::new();
//! let subscription = broker
//!     .subscribe("go.micro.topic.greet", SubscribeOptions::default(), Arc::new(|event: Event| async move {
//!         assert_eq!(&event.message().body[..], b"hi");
//!         Ok::<(), HandlerError>(())
//!     }))
//!     .await?;
//! broker.publish("go.micro.topic.greet", Message::new("hi")).await?;
//! subscription.unsubscribe().await;
//! # Ok(())
//! # }
//! ```

mod dispatch;
pub mod http;
#[cfg(feature = "nats")]
pub mod jetstream;
pub mod memory;
mod message;
#[cfg(feature = "nats")]
pub mod nats;
pub mod observer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use crate::dispatch::Outcome;
pub use crate::message::{
    CONTENT_TYPE_HEADER, EnvelopeError, FROM_SERVICE_HEADER, Header, Message, TOPIC_HEADER,
    go_json_string, title_case,
};
pub use crate::observer::BrokerObserver;

/// A message delivered to a subscription.
#[derive(Clone, Debug)]
pub struct Event {
    /// Shared: a subscription hands its own topic to every delivery (no
    /// copy per message).
    topic: Arc<str>,
    message: Message,
}

impl Event {
    pub fn new(topic: impl Into<Arc<str>>, message: Message) -> Event {
        Event {
            topic: topic.into(),
            message,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn message(&self) -> &Message {
        &self.message
    }

    pub fn into_message(self) -> Message {
        self.message
    }
}

/// Why a handler refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(text: impl Into<String>) -> HandlerError {
        HandlerError(text.into())
    }
}

impl From<String> for HandlerError {
    fn from(text: String) -> Self {
        HandlerError(text)
    }
}

impl From<&str> for HandlerError {
    fn from(text: &str) -> Self {
        HandlerError(text.into())
    }
}

/// What a subscription runs for each message: `Ok` acknowledges it, an
/// error refuses it. Any `Fn(Event) -> impl Future<Output = Result<(), HandlerError>>`
/// is one.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, event: Event) -> HandlerFuture;
}

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

impl<F, Fut> Handler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, event: Event) -> HandlerFuture {
        Box::pin(self(event))
    }
}

/// How to subscribe. Non-exhaustive (backends to come add options, a
/// durable name for JetStream): start from `default()` or
/// [`queue`](Self::queue).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Subscriptions sharing a queue name share the messages (one copy to
    /// the group); none: every message (broadcast).
    pub queue: Option<String>,
    /// The subscribing service's name (a server passes its own): a durable
    /// backend (`jetstream`) keeps a subscription without a queue under
    /// it, so the service's messages wait for it while it is down. Other
    /// backends ignore it.
    pub service: Option<String>,
}

impl SubscribeOptions {
    /// In queue group `name`.
    pub fn queue(name: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            queue: Some(name.into()),
            service: None,
        }
    }

    /// Made by service `name` (see [`service`](Self::service)).
    pub fn with_service(mut self, name: impl Into<String>) -> SubscribeOptions {
        self.service = Some(name.into());
        self
    }

    /// In queue group `name`, or broadcast with `None`.
    pub fn with_queue(mut self, name: Option<String>) -> SubscribeOptions {
        self.queue = name;
        self
    }
}

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic, queue or option the broker cannot use.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] micro_registry::Error),
    #[error("broker cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// Some subscribers did not take the message (each named with why).
    #[error("{}", describe(.0))]
    Delivery(Vec<Undelivered>),
    /// The broker's server could not be reached or refused the request.
    #[error("broker [{broker}] unavailable: {detail}")]
    Unavailable {
        broker: &'static str,
        detail: String,
    },
}

/// One subscriber (or queue group) that did not take a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// The subscriber (node id) or `queue <name>`.
    pub target: String,
    pub reason: String,
    /// Kept in the backend's retry buffer, to be tried again.
    pub queued: bool,
}

fn describe(failures: &[Undelivered]) -> String {
    let mut text = format!(
        "not delivered to {} subscriber{}:",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" }
    );
    for failure in failures {
        text.push_str(&format!(" {}: {}", failure.target, failure.reason));
        if failure.queued {
            text.push_str(" (queued for retry)");
        }
        text.push(';');
    }
    text.pop();
    text
}

/// A message broker backend; see the crate docs for the semantics every
/// backend keeps.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// The backend's name, registered as node metadata `broker`: `http`,
    /// `memory`, `nats`, `jetstream`.
    fn name(&self) -> &'static str;

    /// Publishes `message` on `topic`; returns when the backend has done
    /// what it promises (for `memory` and `http`: every subscriber's
    /// handler answered).
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error>;

    /// Runs `handler` for each message on `topic` until the subscription is
    /// stopped or dropped.
    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> Result<Subscription, Error>;

    /// Stops the broker: deregisters what it registered, stops its
    /// listener. Subscriptions end with it.
    async fn close(&self) {}
}

/// A broker shared by a server, a client and their tasks.
pub type SharedBroker = Arc<dyn Broker>;

/// What a backend does to stop one subscription.
#[async_trait::async_trait]
pub(crate) trait Stop: Send + Sync + 'static {
    /// No new deliveries; handlers in flight finish; registrations removed.
    async fn stop(&self);
    /// No new deliveries, now (the subscription was dropped).
    fn stop_now(&self);
}

/// A running subscription. [`unsubscribe`](Self::unsubscribe) drains it;
/// dropping it stops deliveries at once (handlers in flight run on).
pub struct Subscription {
    topic: String,
    queue: Option<String>,
    id: String,
    stop: Option<Box<dyn Stop>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("queue", &self.queue)
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        topic: &str,
        queue: Option<String>,
        id: String,
        stop: Box<dyn Stop>,
    ) -> Subscription {
        Subscription {
            topic: topic.into(),
            queue,
            id,
            stop: Some(stop),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The backend's id of this subscription (the http broker's node id,
    /// `<topic>-<uuid>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops taking messages, then waits for the handlers in flight.
    pub async fn unsubscribe(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.stop().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.stop_now();
        }
    }
}

/// A message as every backend sends it on `topic`: the topic checked and
/// named in its `Micro-Topic` header (go-micro's publishers set it), and
/// the observer's headers added (the trace context).
pub(crate) fn addressed(
    broker: &'static str,
    topic: &str,
    mut message: Message,
    observer: Option<&dyn BrokerObserver>,
) -> Result<Message, Error> {
    check_name("topic", topic)?;
    message
        .header
        .insert(TOPIC_HEADER.to_string(), topic.to_string());
    if let Some(observer) = observer {
        observer.publishing(broker, topic, &mut message.header);
    }
    Ok(message)
}

/// The envelope every wire backend sends on `topic`: [`addressed`]'s
/// message, written without inserting the topic into its header map.
pub(crate) fn envelope(
    broker: &'static str,
    topic: &str,
    mut message: Message,
    observer: Option<&dyn BrokerObserver>,
) -> Result<bytes::Bytes, Error> {
    check_name("topic", topic)?;
    if let Some(observer) = observer {
        observer.publishing(broker, topic, &mut message.header);
    }
    Ok(bytes::Bytes::from(message.to_envelope_on(topic)))
}

/// Checks what a subscription names: its topic, queue and service.
pub(crate) fn check_subscription(topic: &str, options: &SubscribeOptions) -> Result<(), Error> {
    check_name("topic", topic)?;
    if let Some(queue) = &options.queue {
        check_name("queue", queue)?;
    }
    match &options.service {
        Some(service) => check_name("service", service),
        None => Ok(()),
    }
}

/// Checks a topic or queue name: not empty, no whitespace.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!(
            "invalid {what} {name:?}: expected a non-empty name without spaces"
        )));
    }
    Ok(())
}
