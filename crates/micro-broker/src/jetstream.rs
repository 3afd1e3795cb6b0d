//! The `jetstream` broker (feature `nats`): go-micro's NATS wire, **at
//! least once**, on NATS JetStream through async-nats.
//!
//! **Wire.** As the `nats` backend: the subject is the topic, the payload
//! go-micro's JSON envelope. A JetStream stream captures core-NATS
//! publishes on its subjects and core subscribers see what is published
//! into it, so go-micro services on `--broker=nats` still publish to and
//! receive from these.
//!
//! **Publish** returns `Ok` only once the stream acknowledged the message
//! (its PubAck): stored, on a majority of its replicas. No stream, no
//! acknowledgement within [`JetStreamOptions::publish_timeout`], a server
//! without JetStream: an error naming why. Within that time, a publish
//! that nobody took (no responders: the stream has no leader while its
//! members elect one) or that was sent on a live connection and not
//! answered within a quarter of the time (at least 1 s) is tried again
//! after a short pause (50 ms, doubled up to 500 ms); a retry after an
//! unanswered attempt may store the message twice (at least once). Nobody
//! taking it makes the stream looked up (made again if deleted); a lookup
//! unanswered (the JetStream API's leader lost too) gets an attempt's time
//! and is tried again with the publish. While
//! the connection is down nothing is retried: the message waits in the
//! client's buffer and its PubAck is awaited until the time is up.
//!
//! **Streams** are made on first use of a topic (publish or subscribe):
//! one per topic, named [`stream_name`] (`MICRO_` and the topic, `.` as
//! `_`, every other character but ASCII letters and digits as `-XX` hex:
//! no two topics share a name), file storage, the limits of
//! [`JetStreamOptions`] (age, bytes, messages; the oldest discarded first)
//! and its replicas. A stream that already captures the topic (made by an
//! operator, for several topics) is used as it is.
//!
//! **Consumers.** A subscription with a queue, or made by a service
//! (its name, [`SubscribeOptions::with_service`]), reads through a
//! durable pull consumer named [`consumer_name`] of (queue or service,
//! topic): every process subscribing with that name shares the messages
//! (a queue group), and what is published while none runs waits for them.
//! A new durable consumer starts at the first message the stream holds.
//! With neither (`micro subscribe` without `--queue`), an ephemeral
//! consumer gets what is published from then on.
//!
//! **Deliveries.** A subscription runs its handler on one message at a
//! time; it keeps one subscription on an inbox of its own for its whole
//! life and sends pull requests of [`JetStreamOptions::batch`] messages
//! answered there (no subscription made per batch), asks for the next
//! batch while less than half of one is still to come (so messages keep
//! flowing while the handler runs), and the server holds
//! back more than [`JetStreamOptions::max_ack_pending`] unacknowledged
//! ones. A handler's `Ok` acknowledges the message and waits
//! for the server to confirm the acknowledgement (then it is not delivered
//! again); an error or a panic hands it back (a NAK) to be delivered again
//! after a backoff doubling from [`JetStreamOptions::backoff_base`] up to
//! [`JetStreamOptions::backoff_max`]. The delivery numbered
//! [`JetStreamOptions::max_deliveries`] that fails, or a payload that is no
//! envelope, sends the message to the dead-letter subject
//! `micro.deadletter.<topic>` ([`DEAD_LETTER_PREFIX`], kept in the stream
//! [`DEAD_LETTER_STREAM`]) with headers saying why, then ends its
//! deliveries. Redeliveries and dead letters are shown to the
//! [`BrokerObserver`] (`micro_broker_redelivered_total`,
//! `micro_broker_dead_lettered_total`).
//!
//! **Stopping.** [`Subscription::unsubscribe`] pulls nothing more, lets
//! the handler in flight finish and its acknowledgement be confirmed, and
//! hands back what was pulled but not started, to be delivered again
//! after [`PULL_EXPIRES`] (a pull waits at most that long, so the last one
//! is over by then and another member gets it). The connection reconnects
//! by itself (a restarted server, another member of a cluster); a
//! subscription whose consumer was lost makes it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::dispatch::{Ending, Gate, Outcome, StopSignal, deliver};
use crate::nats::{NatsOptions, connect};
use crate::{
    Broker, BrokerObserver, Error, Event, Handler, Message, SubscribeOptions, Subscription,
    check_subscription, envelope,
};

const BROKER: &str = "jetstream";

/// Dead letters of topic `t` are published on `micro.deadletter.<t>`.
pub const DEAD_LETTER_PREFIX: &str = "micro.deadletter.";
/// The stream keeping every dead letter (subjects `micro.deadletter.>`).
pub const DEAD_LETTER_STREAM: &str = "MICRO-DEAD-LETTERS";
/// A dead letter's header: why it was given up.
pub const DEAD_LETTER_REASON: &str = "Micro-Dead-Letter-Reason";
/// A dead letter's header: how many times it was delivered.
pub const DEAD_LETTER_DELIVERIES: &str = "Micro-Dead-Letter-Deliveries";
/// A dead letter's header: its stream and sequence there (`<stream>:<seq>`).
pub const DEAD_LETTER_ORIGIN: &str = "Micro-Dead-Letter-Origin";
/// A dead letter's header: the consumer (queue or service) that gave up.
pub const DEAD_LETTER_CONSUMER: &str = "Micro-Dead-Letter-Consumer";

/// How long one pull waits for messages (and, when stopping, how long the
/// last pull may still bring some, handed back at once).
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The least time one publish attempt gets (a quarter of
/// [`JetStreamOptions::publish_timeout`] otherwise).
const ATTEMPT_MIN: Duration = Duration::from_secs(1);
/// The pause before a publish is tried again (no leader, no answer, a
/// connection lost), doubled each try up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// JetStream's limit on a stream or consumer name, kept well under.
const MAX_NAME: usize = 200;

/// Where to connect and how streams and consumers are made.
#[derive(Clone, Debug)]
pub struct JetStreamOptions {
    /// The servers (as the `nats` backend's, `--broker_address`).
    pub nats: NatsOptions,
    /// Replicas of each stream made here (`--broker_replicas`): 1 for one
    /// server, 3 on a 3-member cluster.
    pub replicas: usize,
    /// Deliveries of a message before it is dead-lettered
    /// (`--broker_max_deliveries`).
    pub max_deliveries: u32,
    /// A stream keeps messages this long (`--broker_max_age`).
    pub max_age: Duration,
    /// ... and at most this many bytes (`--broker_max_bytes`).
    pub max_bytes: i64,
    /// ... and at most this many messages (`--broker_max_msgs`).
    pub max_messages: i64,
    /// Unacknowledged messages a consumer may have out
    /// (`--broker_max_ack_pending`).
    pub max_ack_pending: usize,
    /// Messages pulled at once by a subscription.
    pub batch: usize,
    /// A delivery not acknowledged in this time is delivered again.
    pub ack_wait: Duration,
    /// First wait before a refused message is delivered again; doubled
    /// each delivery up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Bound on waiting for a PubAck (and for JetStream API answers).
    pub publish_timeout: Duration,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            nats: NatsOptions::default(),
            replicas: 1,
            max_deliveries: 5,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            max_messages: 1_000_000,
            max_ack_pending: 256,
            batch: 64,
            ack_wait: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

impl JetStreamOptions {
    /// Servers from `--broker_address` (see [`NatsOptions::from_addresses`]),
    /// every other option its default.
    pub fn from_addresses(text: &str) -> Result<JetStreamOptions, Error> {
        Ok(JetStreamOptions {
            nats: NatsOptions::from_addresses(text)?,
            ..JetStreamOptions::default()
        })
    }

    /// How long a message refused `delivered` times waits to come again.
    pub fn backoff(&self, delivered: u32) -> Duration {
        let doublings = delivered.saturating_sub(1).min(20);
        self.backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }

    fn check(&self) -> Result<(), Error> {
        let invalid = |what: &str| Err(Error::Invalid(format!("jetstream broker: {what}")));
        if !(1..=5).contains(&self.replicas) {
            return invalid("replicas must be 1 to 5");
        }
        if self.max_deliveries == 0 {
            return invalid("max deliveries must be at least 1");
        }
        if self.batch == 0 || self.max_ack_pending == 0 {
            return invalid("batch and max ack pending must be at least 1");
        }
        Ok(())
    }
}

/// The stream made for `topic`: `MICRO_` and the topic encoded so that
/// no two topics share a name (see the module docs).
pub fn stream_name(topic: &str) -> String {
    format!("MICRO_{}", encode(topic))
}

/// The durable consumer of `topic` for queue (or service) `durable`:
/// both encoded, joined by `--` (which no encoding contains).
pub fn consumer_name(durable: &str, topic: &str) -> String {
    format!("{}--{}", encode(durable), encode(topic))
}

/// ASCII letters and digits kept, `.` as `_`, every other byte as `-XX`:
/// a name JetStream takes (no `.`, `*`, `>`, spaces), one per text.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => out.push(byte as char),
            b'.' => out.push('_'),
            other => out.push_str(&format!("-{other:02X}")),
        }
    }
    out
}

fn checked_name(name: String) -> Result<String, Error> {
    if name.len() > MAX_NAME {
        return Err(Error::Invalid(format!(
            "jetstream broker: name {name:?} is longer than {MAX_NAME} characters (a shorter topic or queue)"
        )));
    }
    Ok(name)
}

fn unavailable(detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        broker: BROKER,
        detail: detail.to_string(),
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct JetStreamBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    options: JetStreamOptions,
    connection: OnceCell<(async_nats::Client, jetstream::Context)>,
    observer: Option<Arc<dyn BrokerObserver>>,
    /// The stream capturing each topic used so far.
    streams: Mutex<HashMap<String, String>>,
    dead_letters: OnceCell<()>,
    subs: Mutex<HashMap<String, Arc<StopSignal>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl JetStreamBroker {
    pub fn new(options: JetStreamOptions) -> Result<JetStreamBroker, Error> {
        JetStreamBroker::build(options, None)
    }

    /// A broker whose publishes, deliveries, redeliveries and dead letters
    /// `observer` sees.
    pub fn with_observer(
        options: JetStreamOptions,
        observer: Arc<dyn BrokerObserver>,
    ) -> Result<JetStreamBroker, Error> {
        JetStreamBroker::build(options, Some(observer))
    }

    fn build(
        options: JetStreamOptions,
        observer: Option<Arc<dyn BrokerObserver>>,
    ) -> Result<JetStreamBroker, Error> {
        options.check()?;
        Ok(JetStreamBroker {
            shared: Arc::new(Shared {
                options,
                connection: OnceCell::new(),
                observer,
                streams: Mutex::default(),
                dead_letters: OnceCell::new(),
                subs: Mutex::default(),
            }),
        })
    }

    pub fn options(&self) -> &JetStreamOptions {
        &self.shared.options
    }
}

impl Shared {
    /// The JetStream context, connected on first use.
    async fn js(&self) -> Result<&jetstream::Context, Error> {
        let (_, js) = self
            .connection
            .get_or_try_init(|| async {
                let client = connect(BROKER, &self.options.nats).await?;
                let js = jetstream::ContextBuilder::new()
                    .timeout(self.options.publish_timeout)
                    .ack_timeout(self.options.publish_timeout)
                    .build(client.clone());
                Ok::<_, Error>((client, js))
            })
            .await?;
        Ok(js)
    }

    fn stream_config(&self, name: String, subject: String) -> stream::Config {
        let o = &self.options;
        stream::Config {
            name,
            subjects: vec![subject],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: o.max_age,
            max_bytes: o.max_bytes,
            max_messages: o.max_messages,
            num_replicas: o.replicas,
            ..Default::default()
        }
    }

    /// The stream capturing `topic`: the one that does already, or one
    /// made for it.
    async fn stream_for(&self, topic: &str) -> Result<String, Error> {
        if let Some(name) = lock(&self.streams).get(topic) {
            return Ok(name.clone());
        }
        let name = self
            .ensure_stream(topic, || Ok(stream_name(topic)), topic)
            .await?;
        lock(&self.streams).insert(topic.to_string(), name.clone());
        Ok(name)
    }

    async fn ensure_stream(
        &self,
        subject: &str,
        name: impl FnOnce() -> Result<String, Error>,
        stream_subject: &str,
    ) -> Result<String, Error> {
        use async_nats::jetstream::context::GetStreamByNameErrorKind as Kind;
        let js = self.js().await?;
        match js.stream_by_subject(subject).await {
            Ok(name) => return Ok(name),
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => {
                return Err(unavailable(format!(
                    "looking up the stream of {subject} (is JetStream enabled on the server, `nats-server -js`?): {e}"
                )));
            }
        }
        let name = checked_name(name()?)?;
        let config = self.stream_config(name.clone(), stream_subject.to_string());
        match js.create_stream(config).await {
            Ok(_) => {
                tracing::info!("Broker [jetstream] created stream {name} for {stream_subject}");
                Ok(name)
            }
            // Made by another process meanwhile (or overlapping another
            // stream): use the one that captures the subject now.
            Err(create) => js
                .stream_by_subject(subject)
                .await
                .map_err(|_| unavailable(format!("creating stream {name}: {create}"))),
        }
    }

    async fn ensure_dead_letters(&self) -> Result<(), Error> {
        self.dead_letters
            .get_or_try_init(|| async {
                let subject = format!("{DEAD_LETTER_PREFIX}>");
                self.ensure_stream(
                    &format!("{DEAD_LETTER_PREFIX}x"),
                    || Ok(DEAD_LETTER_STREAM.to_string()),
                    &subject,
                )
                .await
                .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    /// Publishes `payload` on `subject` and waits for the stream's
    /// acknowledgement.
    async fn publish_acked(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError> {
        let js = self
            .connection
            .get()
            .map(|(_, js)| js)
            .expect("connected before publishing");
        let ack = match headers {
            Some(headers) => {
                js.publish_with_headers(subject.to_string(), headers, payload)
                    .await?
            }
            None => js.publish(subject.to_string(), payload).await?,
        };
        ack.await
    }

    /// Whether the connection is up now.
    fn connected(&self) -> bool {
        self.connection.get().is_some_and(|(client, _)| {
            client.connection_state() == async_nats::connection::State::Connected
        })
    }

    async fn observe_delivered(&self, topic: &str, outcome: Outcome) {
        if let Some(observer) = &self.observer {
            observer.delivered(BROKER, topic, &outcome, Duration::ZERO);
        }
    }
}

#[async_trait::async_trait]
impl Broker for JetStreamBroker {
    fn name(&self) -> &'static str {
        BROKER
    }

    /// Returns once the stream acknowledged the message.
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        let shared = &self.shared;
        let payload = envelope(BROKER, topic, message, shared.observer.as_deref())?;
        let result = async {
            use async_nats::jetstream::context::PublishErrorKind as Kind;
            let limit = shared.options.publish_timeout;
            let deadline = tokio::time::Instant::now() + limit;
            let bounded = |what: String| unavailable(format!("publish {topic}: {what}"));
            if !lock(&shared.streams).contains_key(topic) {
                shared.stream_for(topic).await?;
            }
            // Each attempt gets a part of the call's time, so one lost to a
            // stream without a leader (a member killed, an election) leaves
            // time for the next.
            let attempt = (limit / 4).max(ATTEMPT_MIN);
            let mut pause = RETRY_PAUSE_FIRST;
            let mut looked_up = false;
            let mut tries = 0u32;
            loop {
                tries += 1;
                let sent = shared.publish_acked(topic, None, payload.clone());
                tokio::pin!(sent);
                let sent = loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match tokio::time::timeout(attempt.min(left), &mut sent).await {
                        Ok(sent) => break Some(sent),
                        Err(_) if left <= attempt => break None,
                        // Sent and not answered: tried again. While the
                        // connection is down the message waits in the
                        // client's buffer (sent on reconnecting): its
                        // PubAck is awaited, no copy piled up behind it.
                        Err(_) if shared.connected() => break None,
                        Err(_) => {}
                    }
                };
                let (kind, mut error) = match sent {
                    Some(Ok(_)) => return Ok(()),
                    Some(Err(e)) => (e.kind(), e.to_string()),
                    None => (Kind::TimedOut, "no PubAck".to_string()),
                };
                match kind {
                    // No responder: the stream went away since (made again),
                    // or it has no leader (an election: tried again). Looked
                    // up until the lookup answers once; an unanswered one
                    // (the JetStream API's own leader lost too: its
                    // requests go unanswered until the election) gets an
                    // attempt's time and is tried again.
                    Kind::StreamNotFound if !looked_up => {
                        lock(&shared.streams).remove(topic);
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match tokio::time::timeout(attempt.min(left), shared.stream_for(topic)).await
                        {
                            Ok(Ok(_)) => {
                                looked_up = true;
                                continue;
                            }
                            Ok(Err(e)) => error = format!("{error}; {e}"),
                            Err(_) => error = format!("{error}; the stream's lookup unanswered"),
                        }
                    }
                    Kind::StreamNotFound | Kind::TimedOut => {}
                    _ => {
                        return Err(bounded(format!(
                            "not acknowledged by the stream: {error}"
                        )));
                    }
                }
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(bounded(format!(
                        "not acknowledged by the stream within {limit:?} ({tries} tries; the last: {error})"
                    )));
                }
                tracing::debug!("Broker [jetstream] publish {topic}: {error}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
        }
        .await;
        if let Some(observer) = &shared.observer {
            observer.published(BROKER, topic, result.is_ok());
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
        let shared = self.shared.clone();
        let stream = shared.stream_for(topic).await?;
        let durable = match options.queue.as_ref().or(options.service.as_ref()) {
            Some(name) => Some(checked_name(consumer_name(name, topic))?),
            None => None,
        };
        let o = &shared.options;
        let config = consumer::pull::Config {
            durable_name: durable.clone(),
            name: durable.clone(),
            deliver_policy: match durable {
                Some(_) => consumer::DeliverPolicy::All,
                None => consumer::DeliverPolicy::New,
            },
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: o.ack_wait,
            // Unbounded on the server: the subscription counts deliveries
            // and dead-letters (the server would only stop delivering).
            max_deliver: -1,
            filter_subject: topic.to_string(),
            max_ack_pending: o.max_ack_pending as i64,
            ..Default::default()
        };
        let consumer = make_consumer(&shared, &stream, &config).await?;
        let id = format!("{topic}-{}", uuid::Uuid::new_v4());
        let stop = Arc::new(StopSignal::default());
        let gate = Arc::new(Gate::default());
        let run = Run {
            shared: shared.clone(),
            topic: Arc::from(topic),
            stream,
            config,
            handler,
            gate: gate.clone(),
            label: options
                .queue
                .clone()
                .or(options.service.clone())
                .unwrap_or_default(),
        };
        let task = tokio::spawn(run.run(consumer, stop.clone()));
        lock(&shared.subs).insert(id.clone(), stop.clone());
        tracing::info!(
            "Broker [jetstream] Subscribed to {topic} as {id} ({})",
            durable
                .as_deref()
                .map(|d| format!("durable consumer {d}"))
                .unwrap_or_else(|| "ephemeral consumer".into())
        );
        Ok(Subscription::new(
            topic,
            options.queue,
            id.clone(),
            Box::new(JetStreamStop {
                shared: Arc::downgrade(&self.shared),
                id,
                stop,
                gate,
                task: Mutex::new(Some(task)),
            }),
        ))
    }

    /// Stops every subscription (drained, bounded), then flushes.
    async fn close(&self) {
        let stops: Vec<Arc<StopSignal>> = lock(&self.shared.subs).drain().map(|(_, s)| s).collect();
        for stop in &stops {
            stop.stop();
        }
        let limit = self.shared.options.nats.close_timeout;
        let closed = futures::future::join_all(stops.iter().map(|s| s.ended()));
        if tokio::time::timeout(limit, closed).await.is_err() {
            tracing::warn!(
                "Broker [jetstream] subscribers still running after {limit:?}; closing anyway"
            );
        }
        if let Some((client, _)) = self.shared.connection.get()
            && let Err(e) = tokio::time::timeout(limit, client.flush())
                .await
                .unwrap_or(Ok(()))
        {
            tracing::warn!("Broker [jetstream] flush: {e}");
        }
    }
}

async fn make_consumer(
    shared: &Shared,
    stream: &str,
    config: &consumer::pull::Config,
) -> Result<consumer::Consumer<consumer::pull::Config>, Error> {
    let js = shared.js().await?;
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| unavailable(format!("stream {stream}: {e}")))?;
    let made = match &config.durable_name {
        Some(name) => handle.get_or_create_consumer(name, config.clone()).await,
        None => handle.create_consumer(config.clone()).await,
    };
    made.map_err(|e| unavailable(format!("consumer on stream {stream}: {e}")))
}

/// One subscription's loop.
struct Run {
    shared: Arc<Shared>,
    /// Shared with every delivery's [`Event`].
    topic: Arc<str>,
    stream: String,
    config: consumer::pull::Config,
    handler: Arc<dyn Handler>,
    gate: Arc<Gate>,
    /// The queue or service, for dead letters' headers.
    label: String,
}

/// What the loop does after a message stream ends.
enum Next {
    Stop,
    Again,
}

/// A pull's status that ends it (the rest of its batch not coming).
const ENDED: [async_nats::StatusCode; 2] = [
    async_nats::StatusCode::TIMEOUT,
    async_nats::StatusCode::REQUEST_TERMINATED,
];

/// How long past its expiry a pull is still waited for when its end (a
/// 408) never came: a server restarted, a connection lost meanwhile.
const PULL_GRACE: Duration = Duration::from_secs(1);

/// A subscription's pulls: one inbox subscription for the subscription's
/// life, pull requests of [`JetStreamOptions::batch`] messages answered
/// on it (no subscription per batch). The server answers each pull with
/// up to its batch of messages, then, unless the batch was filled, a
/// status (408 on expiry) saying how many of it will not come.
struct Pulls {
    inbox: async_nats::Subject,
    messages: async_nats::Subscriber,
    /// What a message's acknowledgements go through.
    context: jetstream::Context,
    /// The subscription ended (the client closed): open another.
    closed: bool,
    /// Messages asked for, not yet brought, their pulls not ended.
    asked: usize,
    /// When the last pull sent is surely over: past it, none runs.
    until: Option<tokio::time::Instant>,
}

impl Pulls {
    async fn open(shared: &Shared) -> Result<Pulls, Error> {
        let context = shared.js().await?.clone();
        let client = context.client();
        let inbox = async_nats::Subject::from(client.new_inbox());
        let messages = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable(format!("subscribing to a pull inbox: {e}")))?;
        Ok(Pulls {
            inbox,
            messages,
            context,
            closed: false,
            asked: 0,
            until: None,
        })
    }

    /// Forgets pulls that are over though their end never came.
    fn expire(&mut self) {
        if self
            .until
            .is_some_and(|until| tokio::time::Instant::now() >= until)
        {
            self.asked = 0;
            self.until = None;
        }
    }
}

/// What came on the inbox.
enum Came {
    Message(async_nats::Message),
    /// A pull ended with `left` of its messages not coming.
    Ended {
        left: usize,
    },
    /// The pull (or the consumer) failed.
    Failed(String),
    /// Nothing before every pull was over.
    Quiet,
    /// The subscription ended (the client closed).
    Closed,
}

impl Run {
    async fn run(
        self,
        mut consumer: consumer::Consumer<consumer::pull::Config>,
        stopped: Arc<StopSignal>,
    ) {
        let _ending = Ending(stopped.clone());
        let mut failures: u32 = 0;
        let mut pulls: Option<Pulls> = None;
        loop {
            if pulls.is_none() {
                match Pulls::open(&self.shared).await {
                    Ok(opened) => pulls = Some(opened),
                    Err(e) => tracing::warn!("Broker [jetstream] {}: {e}", self.topic),
                }
            }
            if let Some(open) = pulls.as_mut() {
                match self.pull(&consumer, open, &stopped).await {
                    Next::Stop => break,
                    Next::Again if open.closed => pulls = None,
                    Next::Again => {}
                }
            } else if stopped.is_stopped() {
                break;
            }
            // The consumer is gone (a server that lost it) or its messages
            // ended: make it again, backing off up to 5 s, until stopped.
            loop {
                let wait = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(6))
                    .min(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    () = stopped.stopped() => return,
                }
                match make_consumer(&self.shared, &self.stream, &self.config).await {
                    Ok(made) => {
                        consumer = made;
                        failures = 0;
                        break;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!("Broker [jetstream] {}: {e}; trying again", self.topic);
                    }
                }
            }
        }
        drop(pulls);
        if self.config.durable_name.is_none()
            && let Ok(js) = self.shared.js().await
            && let Ok(info) = consumer.get_info().await.map(|i| i.name.clone())
        {
            let _ = js.delete_consumer_from_stream(&info, &self.stream).await;
        }
    }

    /// Pulls and handles messages until stopped, or until the consumer is
    /// lost.
    ///
    /// Each pull asks for [`JetStreamOptions::batch`] messages and expires
    /// after [`PULL_EXPIRES`]. The next pull goes out once less than half a
    /// batch is still asked for, so messages keep coming while the handler
    /// runs (no round trip between batches). Messages are handled one at a
    /// time, as they come. A stopping subscription asks for no more and
    /// hands back (NAK) what its last pulls still bring until they are
    /// over, so no pull of it is left on the server to take messages
    /// nobody will handle.
    async fn pull(
        &self,
        consumer: &consumer::Consumer<consumer::pull::Config>,
        pulls: &mut Pulls,
        stopped: &StopSignal,
    ) -> Next {
        let batch = self.shared.options.batch;
        let mut failed = false;
        loop {
            pulls.expire();
            if !failed && !stopped.is_stopped() && pulls.asked <= batch / 2 {
                let request = consumer::pull::BatchConfig {
                    batch,
                    expires: Some(PULL_EXPIRES),
                    ..Default::default()
                };
                match consumer.request_batch(request, pulls.inbox.clone()).await {
                    Ok(()) => {
                        pulls.asked += batch;
                        pulls.until = Some(tokio::time::Instant::now() + PULL_EXPIRES + PULL_GRACE);
                    }
                    Err(e) => {
                        tracing::warn!("Broker [jetstream] {}: pulling: {e}", self.topic);
                        failed = true;
                    }
                }
            }
            if pulls.asked == 0 {
                // No pull running: stopping, or a pull could not be made.
                return if failed || !stopped.is_stopped() {
                    Next::Again
                } else {
                    Next::Stop
                };
            }
            match next(pulls, batch).await {
                Came::Message(message) => {
                    pulls.asked = pulls.asked.saturating_sub(1);
                    let message = jetstream::Message {
                        message,
                        context: pulls.context.clone(),
                    };
                    if stopped.is_stopped() {
                        // Handed back to come again once this pull is over
                        // (at once, it would come straight back to it).
                        let _ = message.ack_with(AckKind::Nak(Some(PULL_EXPIRES))).await;
                    } else {
                        self.handle(message).await;
                    }
                }
                Came::Ended { left } => pulls.asked = pulls.asked.saturating_sub(left),
                Came::Quiet => {
                    pulls.asked = 0;
                    pulls.until = None;
                }
                Came::Failed(e) => {
                    // A pull failed (the consumer lost, its leader gone):
                    // no more pulls; the consumer is made again, after a
                    // backoff. What running pulls still bring comes on the
                    // same inbox and is handled then.
                    tracing::warn!("Broker [jetstream] {}: {e}", self.topic);
                    pulls.asked = 0;
                    pulls.until = None;
                    return Next::Again;
                }
                Came::Closed => {
                    pulls.closed = true;
                    pulls.asked = 0;
                    pulls.until = None;
                    return if stopped.is_stopped() {
                        Next::Stop
                    } else {
                        Next::Again
                    };
                }
            }
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let shared = &*self.shared;
        let options = &shared.options;
        let delivered = match message.info() {
            Ok(info) => u32::try_from(info.delivered).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!("Broker [jetstream] {}: no delivery info: {e}", self.topic);
                1
            }
        };
        // The subscription's own topic (shared), the subject it filters on.
        let topic = if message.subject.as_str() == &*self.topic {
            self.topic.clone()
        } else {
            Arc::from(message.subject.as_str())
        };
        if delivered > 1
            && let Some(observer) = &shared.observer
        {
            observer.redelivered(BROKER, &topic);
        }
        let decoded = match Message::from_envelope(&message.payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                // Never a handler's: straight to the dead letters.
                let reason = format!("not a go-micro envelope: {e}");
                tracing::warn!("Broker [jetstream] {topic}: message dropped: {reason}");
                shared
                    .observe_delivered(&topic, Outcome::Error(reason.clone()))
                    .await;
                self.dead_letter(&message, &topic, &reason, delivered).await;
                return;
            }
        };
        if delivered > options.max_deliveries {
            // Delivered again by the server (ack wait over, a crashed
            // subscriber) past the bound: no handler runs it again.
            let reason = format!("delivered {delivered} times without an acknowledgement");
            self.dead_letter(&message, &topic, &reason, delivered).await;
            return;
        }
        let Some(pass) = self.gate.enter() else {
            let _ = message.ack_with(AckKind::Nak(Some(PULL_EXPIRES))).await;
            return;
        };
        let outcome = deliver(
            BROKER,
            &*self.handler,
            Event::new(topic.clone(), decoded),
            pass,
            shared.observer.as_deref(),
        )
        .await;
        match outcome.failure() {
            None => confirm_ack(&message, &topic).await,
            Some(reason) if delivered >= options.max_deliveries => {
                self.dead_letter(&message, &topic, &reason, delivered).await;
            }
            Some(_) => {
                let wait = options.backoff(delivered);
                if let Err(e) = message.ack_with(AckKind::Nak(Some(wait))).await {
                    tracing::warn!(
                        "Broker [jetstream] {topic}: NAK: {e} (delivered again after the ack wait)"
                    );
                }
            }
        }
    }

    /// Publishes `message` on the dead-letter subject, then ends its
    /// deliveries; if the dead letter is not stored, hands it back.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        topic: &str,
        reason: &str,
        delivered: u32,
    ) {
        let origin = message
            .info()
            .map(|info| format!("{}:{}", info.stream, info.stream_sequence))
            .unwrap_or_default();
        let shared = &*self.shared;
        let subject = format!("{DEAD_LETTER_PREFIX}{topic}");
        let mut headers = message.headers.clone().unwrap_or_default();
        // One line: a header value cannot hold a line break.
        let reason_line: String = reason.chars().filter(|c| !c.is_control()).collect();
        headers.insert(DEAD_LETTER_REASON, reason_line.as_str());
        headers.insert(DEAD_LETTER_DELIVERIES, delivered.to_string().as_str());
        headers.insert(DEAD_LETTER_ORIGIN, origin.as_str());
        headers.insert(DEAD_LETTER_CONSUMER, self.label.as_str());
        let stored = match shared.ensure_dead_letters().await {
            Ok(()) => shared
                .publish_acked(&subject, Some(headers), message.payload.clone())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(_) => {
                tracing::warn!(
                    "Broker [jetstream] {topic}: dead-lettered to {subject} after {delivered} deliveries: {reason}"
                );
                if let Err(e) = message.double_ack_with(AckKind::Term).await {
                    tracing::warn!("Broker [jetstream] {topic}: TERM: {e}");
                }
                if let Some(observer) = &shared.observer {
                    observer.dead_lettered(BROKER, topic);
                }
            }
            Err(e) => {
                tracing::warn!(
                    "Broker [jetstream] {topic}: cannot dead-letter ({e}); delivered again later"
                );
                let _ = message
                    .ack_with(AckKind::Nak(Some(shared.options.backoff_max)))
                    .await;
            }
        }
    }
}

/// The next thing the inbox brings, waiting at most until every pull is
/// over (see [`async_nats`]'s own pull stream, whose accounting this is).
async fn next(pulls: &mut Pulls, batch: usize) -> Came {
    let until = pulls.until;
    let came = tokio::select! {
        came = pulls.messages.next() => came,
        () = async {
            match until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        } => return Came::Quiet,
    };
    let Some(message) = came else {
        return Came::Closed;
    };
    let status = message.status.unwrap_or(async_nats::StatusCode::OK);
    if status == async_nats::StatusCode::OK {
        return Came::Message(message);
    }
    if status == async_nats::StatusCode::IDLE_HEARTBEAT {
        return Came::Ended { left: 0 };
    }
    let description = message.description.as_deref().unwrap_or_default();
    if ENDED.contains(&status)
        && description != "Consumer Deleted"
        && description != "Consumer is push based"
        && !description.starts_with("Exceeded MaxRequest")
    {
        let left = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Pending-Messages"))
            .and_then(|left| left.as_str().parse().ok())
            .unwrap_or(batch);
        return Came::Ended { left };
    }
    Came::Failed(format!("pull answered {status} {description}"))
}

/// Acknowledges `message` and waits until the server confirms it (so it is
/// not delivered again); tries 3 times.
async fn confirm_ack(message: &jetstream::Message, topic: &str) {
    for attempt in 1..=3u32 {
        match message.double_ack().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "Broker [jetstream] {topic}: ack not confirmed ({e}), attempt {attempt}"
                );
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            }
        }
    }
    tracing::warn!("Broker [jetstream] {topic}: ack never confirmed: the message may come again");
}

struct JetStreamStop {
    shared: std::sync::Weak<Shared>,
    id: String,
    stop: Arc<StopSignal>,
    gate: Arc<Gate>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl JetStreamStop {
    fn signal(&self) {
        self.stop.stop();
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.subs).remove(&self.id);
        }
    }
}

#[async_trait::async_trait]
impl crate::Stop for JetStreamStop {
    async fn stop(&self) {
        self.signal();
        // The loop ends after the message in hand is acknowledged.
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.gate.drain().await;
    }

    fn stop_now(&self) {
        self.gate.close();
        self.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let topics = [
            "go.micro.topic.greet",
            "go_micro_topic_greet",
            "go-micro.topic",
            "go.micro-topic",
            "orders.*",
            "orders.>",
            "été",
            "a-2E",
        ];
        let names: Vec<String> = topics.iter().map(|t| stream_name(t)).collect();
        for name in &names {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{name}"
            );
        }
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(
            stream_name("go.micro.topic.greet"),
            "MICRO_go_micro_topic_greet"
        );
        assert_ne!(consumer_name("a--b", "c"), consumer_name("a", "b--c"));
        assert_ne!(consumer_name("q-", "x"), consumer_name("q", "-x"));
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let options = JetStreamOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..JetStreamOptions::default()
        };
        let waits: Vec<u128> = (1..=6).map(|d| options.backoff(d).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(options.backoff(u32::MAX), Duration::from_secs(1));
    }
}
