//! The `nats` broker (feature `nats`): go-micro's NATS broker wire on a
//! NATS server, through async-nats.
//!
//! As go-micro's (`broker/nats/nats.go`): the subject is the topic,
//! unchanged; the payload is go-micro's JSON envelope (no NATS headers); a
//! queue group is a NATS queue subscription. So go-micro services on
//! `--broker=nats` and these publish to each other.
//!
//! Delivery is **at most once**, as with go-micro: core NATS keeps nothing
//! for a subscriber that is not connected, and a handler's refusal is
//! counted and logged, not redelivered (`jetstream` is the backend for at
//! least once). A payload that is not an envelope reaches no handler; it is
//! counted as a failed delivery. Each subscription runs its handler on one
//! message at a time, in order.
//!
//! The connection is made on first use (a process that never publishes or
//! subscribes connects to nothing), and async-nats reconnects by itself,
//! without a limit (a restarted server or cluster member is found again).
//! [`Broker::close`] stops the subscriptions and flushes what was
//! published, so a short-lived publisher (`micro publish`) loses nothing it
//! was told went out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::dispatch::{Gate, Outcome, StopSignal, deliver};
use crate::{
    Broker, BrokerObserver, Error, Event, Handler, Message, SubscribeOptions, Subscription,
    check_subscription, envelope,
};

/// go-micro's default server (nats.go's `DefaultURL`).
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Server URLs, `nats://host:port`.
    pub servers: Vec<String>,
    /// Bound on connecting to a server.
    pub connect_timeout: Duration,
    /// Bound on [`Broker::close`]'s drain and flush.
    pub close_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            servers: vec![DEFAULT_SERVER.into()],
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsOptions {
    /// Servers from `--broker_address`, as go-micro reads it: comma
    /// separated, `host:port` with or without `nats://`; none: the default.
    pub fn from_addresses(text: &str) -> Result<NatsOptions, Error> {
        let mut servers = Vec::new();
        for address in text.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let url = if address.contains("://") {
                address.to_string()
            } else {
                format!("nats://{address}")
            };
            url.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::Invalid(format!(
                    "--broker_address: invalid NATS server {address:?}: {e}"
                ))
            })?;
            servers.push(url);
        }
        let mut options = NatsOptions::default();
        if !servers.is_empty() {
            options.servers = servers;
        }
        Ok(options)
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct NatsBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    options: NatsOptions,
    client: OnceCell<async_nats::Client>,
    observer: Option<Arc<dyn BrokerObserver>>,
    /// Running subscriptions by id: how to stop each.
    subs: Mutex<HashMap<String, Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    stop: Arc<StopSignal>,
    gate: Arc<Gate>,
}

impl NatsBroker {
    pub fn new(options: NatsOptions) -> NatsBroker {
        NatsBroker::build(options, None)
    }

    /// A broker whose publishes and deliveries `observer` sees.
    pub fn with_observer(options: NatsOptions, observer: Arc<dyn BrokerObserver>) -> NatsBroker {
        NatsBroker::build(options, Some(observer))
    }

    fn build(options: NatsOptions, observer: Option<Arc<dyn BrokerObserver>>) -> NatsBroker {
        NatsBroker {
            shared: Arc::new(Shared {
                options,
                client: OnceCell::new(),
                observer,
                subs: Mutex::default(),
            }),
        }
    }

    /// The connection, made on first use.
    async fn client(&self) -> Result<&async_nats::Client, Error> {
        let options = &self.shared.options;
        self.shared
            .client
            .get_or_try_init(|| connect("nats", options))
            .await
    }
}

/// A connection to `options`' servers, for the broker named `broker`.
pub(crate) async fn connect(
    broker: &'static str,
    options: &NatsOptions,
) -> Result<async_nats::Client, Error> {
    let servers: Vec<async_nats::ServerAddr> = options
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Invalid(format!("NATS server: {e}")))?;
    let client = async_nats::ConnectOptions::new()
        .name("micro")
        .connection_timeout(options.connect_timeout)
        .connect(servers)
        .await
        .map_err(|e| Error::Unavailable {
            broker,
            detail: format!("cannot connect to {}: {e}", options.servers.join(",")),
        })?;
    tracing::info!(
        "Broker [{broker}] Connected to {}",
        options.servers.join(",")
    );
    Ok(client)
}

impl Shared {
    fn subs(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Broker for NatsBroker {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        let payload = envelope("nats", topic, message, self.shared.observer.as_deref())?;
        let client = self.client().await?;
        let result = client
            .publish(topic.to_string(), payload)
            .await
            .map_err(|e| Error::Unavailable {
                broker: "nats",
                detail: format!("publish {topic}: {e}"),
            });
        if let Some(observer) = &self.shared.observer {
            observer.published("nats", topic, result.is_ok());
        }
        result
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> Result<Subscription, Error> {
        check_subscription(topic, &options)?;
        let client = self.client().await?;
        let subscribed = match &options.queue {
            Some(queue) => {
                client
                    .queue_subscribe(topic.to_string(), queue.clone())
                    .await
            }
            None => client.subscribe(topic.to_string()).await,
        };
        let subscriber = subscribed.map_err(|e| Error::Unavailable {
            broker: "nats",
            detail: format!("subscribe {topic}: {e}"),
        })?;
        // Subscribed means on the server: what is published from now on
        // reaches it.
        client.flush().await.map_err(|e| Error::Unavailable {
            broker: "nats",
            detail: format!("subscribe {topic}: {e}"),
        })?;
        let id = format!("{topic}-{}", uuid::Uuid::new_v4());
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(StopSignal::default());
        let task = tokio::spawn(receive(
            subscriber,
            Arc::from(topic),
            handler,
            gate.clone(),
            stop.clone(),
            self.shared.observer.clone(),
        ));
        self.shared.subs().insert(
            id.clone(),
            Running {
                stop: stop.clone(),
                gate: gate.clone(),
            },
        );
        tracing::info!("Broker [nats] Subscribed to {topic} as {id}");
        let stop = NatsStop {
            shared: Arc::downgrade(&self.shared),
            id: id.clone(),
            running: Running { stop, gate },
            task: Mutex::new(Some(task)),
        };
        Ok(Subscription::new(topic, options.queue, id, Box::new(stop)))
    }

    /// Stops every subscription (drained, bounded), then flushes what was
    /// published.
    async fn close(&self) {
        let running: Vec<Running> = self.shared.subs().drain().map(|(_, r)| r).collect();
        let limit = self.shared.options.close_timeout;
        let drains = running.iter().map(|r| {
            r.stop.stop();
            r.gate.drain()
        });
        if tokio::time::timeout(limit, futures::future::join_all(drains))
            .await
            .is_err()
        {
            tracing::warn!(
                "Broker [nats] subscribers still running after {limit:?}; closing anyway"
            );
        }
        if let Some(client) = self.shared.client.get()
            && let Err(e) = tokio::time::timeout(limit, client.flush())
                .await
                .unwrap_or(Ok(()))
        {
            tracing::warn!("Broker [nats] flush: {e}");
        }
    }
}

/// One subscription's loop: each message decoded and handed to the handler,
/// one at a time, until stopped.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    topic: Arc<str>,
    handler: Arc<dyn Handler>,
    gate: Arc<Gate>,
    stop: Arc<StopSignal>,
    observer: Option<Arc<dyn BrokerObserver>>,
) {
    loop {
        // The stop is seen before each message; a message in hand is taken
        // without registering a waker for the stop.
        let received = std::future::poll_fn(|cx| {
            if stop.is_stopped() {
                return Poll::Ready(None);
            }
            match subscriber.poll_next_unpin(cx) {
                Poll::Ready(received) => Poll::Ready(received),
                Poll::Pending => stop.poll_stopped(cx).map(|()| None),
            }
        })
        .await;
        let Some(received) = received else {
            break;
        };
        let Some(pass) = gate.enter() else {
            break;
        };
        // The subscription's own topic (shared) unless a wildcard matched
        // another subject.
        let subject = received.subject.as_str();
        let topic = if subject == &*topic {
            topic.clone()
        } else {
            Arc::from(subject)
        };
        match Message::from_envelope(&received.payload) {
            Ok(message) => {
                deliver(
                    "nats",
                    &*handler,
                    Event::new(topic, message),
                    pass,
                    observer.as_deref(),
                )
                .await;
            }
            Err(e) => {
                drop(pass);
                // go-micro logs it and calls no handler: the same, counted.
                tracing::warn!("Broker [nats] {topic}: message dropped: {e}");
                if let Some(observer) = &observer {
                    observer.delivered(
                        "nats",
                        &topic,
                        &Outcome::Error(e.to_string()),
                        Duration::ZERO,
                    );
                }
            }
        }
    }
    if let Err(e) = subscriber.unsubscribe().await {
        tracing::debug!("Broker [nats] unsubscribe: {e}");
    }
}

struct NatsStop {
    shared: std::sync::Weak<Shared>,
    id: String,
    running: Running,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl NatsStop {
    fn signal(&self) {
        self.running.stop.stop();
        if let Some(shared) = self.shared.upgrade() {
            shared.subs().remove(&self.id);
        }
    }
}

#[async_trait::async_trait]
impl crate::Stop for NatsStop {
    async fn stop(&self) {
        self.signal();
        // The loop ends after the message in hand: that is the drain.
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.running.gate.drain().await;
    }

    fn stop_now(&self) {
        self.running.gate.close();
        self.signal();
    }
}
