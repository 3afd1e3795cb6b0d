//! The `http` broker, go-micro v2.9.1's default: no broker server, only the
//! registry.
//!
//! A subscription registers a node of service `micro.http.broker`: id
//! `<topic>-<uuid>`, the address of this process's broker listener,
//! metadata `{"broker":"http","secure":"false","topic":<topic>}`, version
//! its queue or `ff.http.broadcast`, with a TTL of 60 s renewed every 30 s,
//! and kept there as servers keep theirs ([`micro_registry::keep`]): a node
//! the registry lost (a lease lost, etcd restarted empty) is registered
//! again at once, and a registry that is down when a subscription starts
//! does not fail it: the listener serves, and the node is registered when
//! the registry answers.
//! A publisher lists those nodes and POSTs go-micro's JSON envelope to
//! `http://<address>/?id=<node id>`: to every broadcast node, and to one
//! node of each queue group. go-micro services subscribe and publish the
//! same way, so each side reaches the other.
//!
//! Beyond go-micro (which answered 200 whatever the handler did, and whose
//! publisher never looked): the listener answers a handler's failure with
//! 500 and the publisher returns it ([`Error::Delivery`]); a queue group's
//! next node is tried when one cannot be reached or is stopping; messages
//! for unreachable nodes wait in a bounded retry buffer (see
//! [`outbox`](self)); the listener advertises a reachable address as servers
//! do (never `0.0.0.0`; `--broker_advertise`), and it is served by
//! `micro_serve` with its connection budget and timeouts (it is an open
//! HTTP port). The listener is started by the first subscription: a
//! process that only publishes opens no port.

mod inbox;
mod outbox;

use std::sync::Arc;
use std::time::Duration;

use micro_registry::keep::{Keep, KeepStatus, keep_registered};
use micro_registry::{Node, Service, SharedRegistry};
use micro_serve::{AbortOnDrop, ServeOptions, address};
use tokio::sync::{OnceCell, watch};

use self::inbox::{Inbox, Sub};
use self::outbox::Outbox;
use crate::dispatch::Gate;
use crate::{
    Broker, BrokerObserver, Error, Handler, Message, SubscribeOptions, Subscription,
    check_subscription, envelope,
};

/// The registry service of http broker nodes.
pub const SERVICE_NAME: &str = "micro.http.broker";
/// The version of broadcast (queue-less) subscriptions.
pub const BROADCAST_VERSION: &str = "ff.http.broadcast";

/// How long `subscribe` waits for the first registration: a registry that
/// does not answer by then gets the node later, in the background.
const FIRST_REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// How the http broker listens, registers and sends.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Listen address (`--broker_address`): `:0` = every interface, a
    /// random port. go-micro's default was `127.0.0.1:0`, which other hosts
    /// cannot reach.
    pub address: String,
    /// Address to register instead of the one found (`--broker_advertise`).
    pub advertise: Option<String>,
    /// Lifetime of a subscription's registration unless renewed.
    pub register_ttl: Duration,
    /// How often it is renewed.
    pub register_interval: Duration,
    /// Bound on one POST, the subscriber's handler included.
    pub request_timeout: Duration,
    /// The largest envelope the listener takes.
    pub max_message_bytes: usize,
    /// How many messages for unreachable nodes wait for another try.
    pub retry_buffer: usize,
    /// How often they are tried again.
    pub retry_interval: Duration,
    /// How long one is tried before it is dropped.
    pub retry_for: Duration,
    /// The listener's connection budget and timeouts.
    pub serve: ServeOptions,
}

impl HttpOptions {
    pub const ADDRESS: &'static str = ":0";
    pub const REGISTER_TTL: Duration = Duration::from_secs(60);
    pub const REGISTER_INTERVAL: Duration = Duration::from_secs(30);
}

impl Default for HttpOptions {
    fn default() -> Self {
        let mut serve = ServeOptions::new("broker");
        serve.shutdown_grace = Duration::from_secs(5);
        HttpOptions {
            address: Self::ADDRESS.into(),
            advertise: None,
            register_ttl: Self::REGISTER_TTL,
            register_interval: Self::REGISTER_INTERVAL,
            request_timeout: Duration::from_secs(5),
            max_message_bytes: 1024 * 1024,
            retry_buffer: 1024,
            retry_interval: Duration::from_secs(1),
            retry_for: Duration::from_secs(60),
            serve,
        }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct HttpBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: SharedRegistry,
    options: HttpOptions,
    inbox: Arc<Inbox>,
    outbox: Arc<Outbox>,
    listener: OnceCell<Listening>,
    observer: Option<Arc<dyn BrokerObserver>>,
}

/// The running listener.
#[derive(Debug)]
struct Listening {
    advertised: String,
    stop: watch::Sender<bool>,
    _task: AbortOnDrop<()>,
}

impl HttpBroker {
    pub fn new(registry: SharedRegistry, options: HttpOptions) -> HttpBroker {
        HttpBroker::build(registry, options, None)
    }

    /// A broker whose publishes, deliveries and drops `observer` sees.
    pub fn with_observer(
        registry: SharedRegistry,
        options: HttpOptions,
        observer: Arc<dyn BrokerObserver>,
    ) -> HttpBroker {
        HttpBroker::build(registry, options, Some(observer))
    }

    fn build(
        registry: SharedRegistry,
        options: HttpOptions,
        observer: Option<Arc<dyn BrokerObserver>>,
    ) -> HttpBroker {
        HttpBroker {
            shared: Arc::new(Shared {
                inbox: Arc::new(Inbox::new(options.max_message_bytes, observer.clone())),
                outbox: Arc::new(Outbox::new(
                    registry.clone(),
                    options.clone(),
                    observer.clone(),
                )),
                registry,
                options,
                listener: OnceCell::new(),
                observer,
            }),
        }
    }

    /// Messages given up so far: pushed out of the full retry buffer, or
    /// retried for too long.
    pub fn dropped(&self) -> u64 {
        self.shared.outbox.dropped()
    }

    /// Messages waiting in the retry buffer.
    pub fn buffered(&self) -> usize {
        self.shared.outbox.buffered()
    }

    /// The address the listener registers, once a subscription started it.
    pub fn advertised(&self) -> Option<&str> {
        self.shared
            .listener
            .get()
            .map(|listening| listening.advertised.as_str())
    }

    /// Binds and serves the listener (once).
    async fn listen(&self) -> Result<&Listening, Error> {
        self.shared
            .listener
            .get_or_try_init(|| async {
                let options = &self.shared.options;
                let invalid = |e: String| Error::Invalid(format!("--broker_address: {e}"));
                let listen = address::parse_listen(&options.address).map_err(invalid)?;
                let listener = address::bind(listen).await.map_err(|source| Error::Listen {
                    address: options.address.clone(),
                    source,
                })?;
                let local = listener.local_addr().map_err(|source| Error::Listen {
                    address: options.address.clone(),
                    source,
                })?;
                let (advertised, chosen) =
                    address::advertise(options.advertise.as_deref(), local).map_err(|e| {
                        Error::Invalid(format!("--broker_advertise: {e}"))
                    })?;
                match chosen {
                    address::Chosen::Interface(name) => tracing::info!(
                        "Broker [http] Listening on {local}, advertising {advertised} (interface {name}; set --broker_advertise to override)"
                    ),
                    _ => tracing::info!("Broker [http] Listening on {local}, advertising {advertised}"),
                }
                let (stop, mut stopped) = watch::channel(false);
                let router = self.shared.inbox.clone().router();
                let serve_options = options.serve.clone();
                let task = AbortOnDrop::spawn(async move {
                    let shutdown = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    if let Err(e) = micro_serve::serve(listener, router, serve_options, shutdown).await {
                        tracing::error!("Broker [http] listener failed: {e}");
                    }
                });
                Ok(Listening {
                    advertised,
                    stop,
                    _task: task,
                })
            })
            .await
    }
}

#[async_trait::async_trait]
impl Broker for HttpBroker {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        let envelope = envelope("http", topic, message, self.shared.observer.as_deref())?;
        self.shared.outbox.publish(topic, envelope).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> Result<Subscription, Error> {
        check_subscription(topic, &options)?;
        let listening = self.listen().await?;
        let id = format!("{topic}-{}", uuid::Uuid::new_v4());
        let node = Node::new(&id, &listening.advertised)
            .with_metadata("broker", "http")
            .with_metadata("secure", "false")
            .with_metadata("topic", topic);
        let version = options.queue.as_deref().unwrap_or(BROADCAST_VERSION);
        let registration = Service::new(SERVICE_NAME, version).with_node(node);
        let sub = Arc::new(Sub {
            topic: Arc::from(topic),
            handler,
            gate: Arc::new(Gate::default()),
            registration: registration.clone(),
            renew: std::sync::Mutex::new(None),
        });
        self.shared.inbox.insert(id.clone(), sub.clone());
        // Kept registered as servers keep theirs (renewed, and registered
        // again at once when the registry loses it); a registry that is down
        // now does not fail the subscription: the listener serves, and the
        // node is registered once the registry answers.
        let status = KeepStatus::new();
        let keep = Keep::new(
            self.shared.options.register_ttl,
            self.shared.options.register_interval,
            "the subscription keeps listening and retries",
        );
        sub.renew_with(AbortOnDrop::spawn(keep_registered(
            self.shared.registry.clone(),
            registration.clone(),
            keep,
            status.clone(),
        )));
        // Registered once before returning when the registry answers: a
        // publisher may find it now.
        let registered = tokio::time::timeout(FIRST_REGISTRATION_WAIT, status.first_attempt())
            .await
            .unwrap_or(false);
        if registered {
            tracing::info!("Broker [http] Subscribed to {topic} as {id}");
        } else {
            tracing::warn!(
                "Broker [http] Subscribed to {topic} as {id}, not registered yet: publishers find it once registry [{}] takes the registration (retried in the background)",
                self.shared.registry.name()
            );
        }
        let stop = HttpStop {
            shared: Arc::downgrade(&self.shared),
            id: id.clone(),
            sub,
            registration,
        };
        Ok(Subscription::new(topic, options.queue, id, Box::new(stop)))
    }

    /// Every subscription stops as [`Subscription::unsubscribe`] stops
    /// one (deregistered, then drained, bounded by the listener's grace),
    /// then the listener stops (go-micro's `Disconnect`).
    async fn close(&self) {
        let subs = self.shared.inbox.all();
        for sub in &subs {
            sub.gate.close();
            sub.stop_renewing();
        }
        let grace = self.shared.options.serve.shutdown_grace;
        let stops = subs.iter().map(|sub| async {
            deregister(&self.shared.registry, &sub.registration).await;
            sub.gate.drain().await;
        });
        if tokio::time::timeout(grace, futures::future::join_all(stops))
            .await
            .is_err()
        {
            tracing::warn!(
                "Broker [http] subscribers still running after {grace:?}; closing anyway"
            );
        }
        for sub in &subs {
            self.shared.inbox.remove(&sub.registration.nodes[0].id);
        }
        if let Some(listening) = self.shared.listener.get() {
            let _ = listening.stop.send(true);
        }
    }
}

/// Deregisters `registration`, bounded: an unreachable registry lets it
/// lapse with its TTL.
async fn deregister(registry: &SharedRegistry, registration: &Service) {
    let id = &registration.nodes[0].id;
    match tokio::time::timeout(Duration::from_secs(5), registry.deregister(registration)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("Broker [http] deregistering {id}: {e}"),
        Err(_) => {
            tracing::warn!("Broker [http] deregistering {id}: no answer; it lapses with its TTL")
        }
    }
}

struct HttpStop {
    shared: std::sync::Weak<Shared>,
    id: String,
    sub: Arc<Sub>,
    registration: Service,
}

#[async_trait::async_trait]
impl crate::Stop for HttpStop {
    async fn stop(&self) {
        // Deregistered first, so publishers stop choosing it; messages
        // already on their way are still taken until the drain starts.
        self.sub.stop_renewing();
        if let Some(shared) = self.shared.upgrade() {
            deregister(&shared.registry, &self.registration).await;
        }
        self.sub.gate.drain().await;
        if let Some(shared) = self.shared.upgrade() {
            shared.inbox.remove(&self.id);
        }
    }

    fn stop_now(&self) {
        self.sub.stop_renewing();
        self.sub.gate.close();
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.inbox.remove(&self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let registration = self.registration.clone();
            runtime.spawn(async move { deregister(&shared.registry, &registration).await });
        }
    }
}
