//! The publishing side: the `micro.http.broker` nodes (a registry
//! resolution kept live), the POSTs, and the bounded retry buffer.
//!
//! A message goes to every broadcast node of its topic and to one node of
//! each queue group (a random one; on a failure to reach it, or an answer
//! that it is stopping or gone, the next one). Nodes that cannot be reached
//! keep the message in the retry buffer, tried again every
//! `retry_interval` while the node is registered, for at most `retry_for`;
//! the buffer holds `retry_buffer` messages and drops the oldest when full
//! (counted: [`HttpBroker::dropped`](super::HttpBroker::dropped)). go-micro's
//! kept 64 and dropped the newest.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use micro_registry::{Node, ResolveOptions, SharedRegistry, Update};
use tokio::sync::watch;
use tokio::time::Instant;

use super::inbox::query_escape;
use super::{BROADCAST_VERSION, HttpOptions, SERVICE_NAME};
use crate::{BrokerObserver, Error, Undelivered};

/// The `micro.http.broker` nodes by id, each with its version (queue).
#[derive(Debug, Default)]
struct Nodes {
    by_id: BTreeMap<String, (String, Node)>,
    /// Why the registry could not be listed, while it never could.
    error: Option<String>,
}

/// Where a message must go: one node, or one of a queue group's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Node(String),
    Group(String),
}

/// A message waiting for another try.
#[derive(Debug)]
struct Pending {
    topic: String,
    envelope: Bytes,
    target: Target,
    since: Instant,
}

/// How one POST ended.
enum Sent {
    Delivered,
    /// The handler (or the listener) refused it: not retried.
    Refused(String),
    /// The node is stopping or no longer has the subscription: another
    /// node of the group may take it.
    Gone(String),
    /// No answer: the node may come back.
    Unreachable(String),
}

pub(super) struct Outbox {
    registry: SharedRegistry,
    options: HttpOptions,
    client: Client<HttpConnector, Full<Bytes>>,
    nodes: Mutex<Nodes>,
    listed: watch::Sender<bool>,
    buffer: Mutex<VecDeque<Pending>>,
    dropped: AtomicU64,
    observer: Option<Arc<dyn BrokerObserver>>,
    tasks: tokio::sync::OnceCell<(micro_serve::AbortOnDrop<()>, micro_serve::AbortOnDrop<()>)>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("nodes", &self.nodes().by_id.len())
            .field("buffered", &self.buffer().len())
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub(super) fn new(
        registry: SharedRegistry,
        options: HttpOptions,
        observer: Option<Arc<dyn BrokerObserver>>,
    ) -> Outbox {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.request_timeout));
        Outbox {
            registry,
            client: Client::builder(TokioExecutor::new()).build(connector),
            options,
            nodes: Mutex::default(),
            listed: watch::channel(false).0,
            buffer: Mutex::default(),
            dropped: AtomicU64::new(0),
            observer,
            tasks: tokio::sync::OnceCell::new(),
        }
    }

    fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn buffer(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn buffered(&self) -> usize {
        self.buffer().len()
    }

    /// Starts following the registry and the retry loop (once), and waits
    /// for the first listing (bounded by the request timeout).
    async fn ready(self: &Arc<Self>) -> Result<(), Error> {
        self.tasks
            .get_or_init(|| async {
                let weak = Arc::downgrade(self);
                let follow = micro_serve::AbortOnDrop::spawn(follow(
                    weak.clone(),
                    self.registry.clone(),
                    self.listed.clone(),
                ));
                let retry =
                    micro_serve::AbortOnDrop::spawn(retry_loop(weak, self.options.retry_interval));
                (follow, retry)
            })
            .await;
        let mut listed = self.listed.subscribe();
        let waited =
            tokio::time::timeout(self.options.request_timeout, listed.wait_for(|l| *l)).await;
        if waited.is_err() {
            return Err(Error::Registry(micro_registry::Error::Unavailable {
                registry: self.registry.name().to_string(),
                detail: format!(
                    "{SERVICE_NAME} not listed within {:?}",
                    self.options.request_timeout
                ),
            }));
        }
        match self.nodes().error.clone() {
            Some(detail) => Err(Error::Registry(micro_registry::Error::Unavailable {
                registry: self.registry.name().to_string(),
                detail,
            })),
            None => Ok(()),
        }
    }

    /// Sends `envelope` to every subscriber of `topic` (see the module docs).
    pub(super) async fn publish(
        self: &Arc<Self>,
        topic: &str,
        envelope: Bytes,
    ) -> Result<(), Error> {
        self.ready().await?;
        let mut targets: Vec<Target> = Vec::new();
        for (version, node) in self.nodes().by_id.values() {
            if !serves(node, topic) {
                continue;
            }
            let target = if version == BROADCAST_VERSION {
                Target::Node(node.id.clone())
            } else {
                Target::Group(version.clone())
            };
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        if targets.is_empty() {
            tracing::debug!("Broker [http] {topic}: no subscriber");
        }
        let sends = targets
            .into_iter()
            .map(|target| self.send_to(topic, &envelope, target));
        let failures: Vec<Undelivered> = futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Some(observer) = &self.observer {
            observer.published("http", topic, failures.is_empty());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Delivery(failures))
        }
    }

    /// One target: its node, or a group's nodes in random order until one
    /// takes it. Unreachable → into the retry buffer.
    async fn send_to(&self, topic: &str, envelope: &Bytes, target: Target) -> Option<Undelivered> {
        let (label, result) = self.attempt(topic, envelope, &target).await;
        let (reason, queue) = match result {
            Sent::Delivered => return None,
            Sent::Refused(reason) | Sent::Gone(reason) => (reason, false),
            Sent::Unreachable(reason) => (reason, true),
        };
        if queue {
            self.push(Pending {
                topic: topic.to_string(),
                envelope: envelope.clone(),
                target,
                since: Instant::now(),
            });
        }
        Some(Undelivered {
            target: label,
            reason,
            queued: queue,
        })
    }

    async fn attempt(&self, topic: &str, envelope: &Bytes, target: &Target) -> (String, Sent) {
        let mut candidates: Vec<Node> = {
            let nodes = self.nodes();
            nodes
                .by_id
                .values()
                .filter(|(version, node)| match target {
                    Target::Node(id) => &node.id == id,
                    Target::Group(queue) => version == queue && serves(node, topic),
                })
                .map(|(_, node)| node.clone())
                .collect()
        };
        let label = match target {
            Target::Node(id) => id.clone(),
            Target::Group(queue) => format!("queue {queue}"),
        };
        if candidates.is_empty() {
            return (label, Sent::Gone("no longer registered".into()));
        }
        fastrand::shuffle(&mut candidates);
        let mut last = Sent::Gone("no node".into());
        for node in &candidates {
            last = self.post(node, envelope.clone()).await;
            match &last {
                Sent::Delivered | Sent::Refused(_) => break,
                Sent::Gone(reason) | Sent::Unreachable(reason) => {
                    tracing::debug!("Broker [http] {topic} → {}: {reason}", node.id);
                }
            }
        }
        (label, last)
    }

    /// `POST http://<address>/?id=<node id>` with the envelope.
    async fn post(&self, node: &Node, envelope: Bytes) -> Sent {
        if node.metadata.get("secure").map(String::as_str) == Some("true") {
            return Sent::Refused(format!(
                "{} is a secure (https) broker node, which this broker cannot reach yet",
                node.id
            ));
        }
        let uri = format!("http://{}/?id={}", node.address, query_escape(&node.id));
        let request = match http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(envelope))
        {
            Ok(request) => request,
            Err(e) => return Sent::Refused(format!("bad node address {:?}: {e}", node.address)),
        };
        let timeout = self.options.request_timeout;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // The answer's first KiB: an error's detail.
            let body = http_body_util::Limited::new(response.into_body(), 1024)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Sent::Unreachable(format!(
                "no answer from {} within {timeout:?}",
                node.address
            )),
            Ok(Err(e)) => Sent::Unreachable(format!("{}: {}", node.address, error_chain(&e))),
            Ok(Ok((status, body))) => {
                let detail = detail(&body).unwrap_or_else(|| status.to_string());
                match status {
                    s if s.is_success() => Sent::Delivered,
                    StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE => Sent::Gone(detail),
                    _ => Sent::Refused(detail),
                }
            }
        }
    }

    fn push(&self, pending: Pending) {
        let mut buffer = self.buffer();
        if buffer.len() >= self.options.retry_buffer.max(1)
            && let Some(oldest) = buffer.pop_front()
        {
            self.drop_pending(&oldest, "the retry buffer is full");
        }
        buffer.push_back(pending);
    }

    fn drop_pending(&self, pending: &Pending, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "Broker [http] {}: message for {:?} dropped: {why}",
            pending.topic,
            pending.target
        );
        if let Some(observer) = &self.observer {
            observer.dropped("http", &pending.topic);
        }
    }

    /// One pass over the retry buffer.
    async fn retry_pass(&self) {
        let pending: Vec<Pending> = self.buffer().drain(..).collect();
        for item in pending {
            if item.since.elapsed() > self.options.retry_for {
                self.drop_pending(&item, "retried for too long");
                continue;
            }
            let (_, sent) = self
                .attempt(&item.topic, &item.envelope, &item.target)
                .await;
            match sent {
                Sent::Delivered => {
                    tracing::debug!("Broker [http] {}: delivered on retry", item.topic)
                }
                Sent::Unreachable(_) => self.push(item),
                Sent::Refused(reason) | Sent::Gone(reason) => {
                    self.drop_pending(&item, &reason);
                }
            }
        }
    }
}

/// Whether `node` is an http broker node subscribed to `topic`.
fn serves(node: &Node, topic: &str) -> bool {
    node.metadata.get("broker").map(String::as_str) == Some("http")
        && node.metadata.get("topic").map(String::as_str) == Some(topic)
}

/// The go-micro error's detail in an answer, if it is one.
fn detail(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    micro_errors::MicroError::parse(text).map(|e| e.detail)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Keeps `outbox.nodes` the registry's `micro.http.broker` nodes.
async fn follow(
    outbox: std::sync::Weak<Outbox>,
    registry: SharedRegistry,
    listed: watch::Sender<bool>,
) {
    let mut resolution =
        micro_registry::Resolution::service(registry, SERVICE_NAME, ResolveOptions::default());
    loop {
        let update = resolution.next().await;
        let Some(outbox) = outbox.upgrade() else {
            return;
        };
        let mut nodes = outbox.nodes();
        match update {
            Update::Reset(services) => {
                nodes.by_id.clear();
                nodes.error = None;
                for service in services {
                    for node in service.nodes {
                        nodes
                            .by_id
                            .insert(node.id.clone(), (service.version.clone(), node));
                    }
                }
            }
            Update::Add(service) => {
                for node in service.nodes {
                    nodes
                        .by_id
                        .insert(node.id.clone(), (service.version.clone(), node));
                }
            }
            Update::Remove(service) => {
                for node in &service.nodes {
                    nodes.by_id.remove(&node.id);
                }
            }
            Update::Unavailable(e) => {
                if !*listed.borrow() {
                    nodes.error = Some(e.to_string());
                }
            }
        }
        drop(nodes);
        listed.send_replace(true);
    }
}

async fn retry_loop(outbox: std::sync::Weak<Outbox>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(outbox) = outbox.upgrade() else {
            return;
        };
        if outbox.buffered() > 0 {
            outbox.retry_pass().await;
        }
    }
}
