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
//!
//! Per publish, nothing is looked up twice: where a topic's messages go
//! (its broadcast nodes and queue groups, each node's request target and
//! `Host` made once) is kept per topic until the registry's next change,
//! and the POSTs go over keep-alive HTTP/1.1 connections kept per node
//! address (go-micro's listeners speak HTTP/1.1), taken and given back
//! without a task per request.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use micro_registry::{Node, ResolveOptions, SharedRegistry, Update};
use tokio::sync::watch;
use tokio::time::Instant;

use super::inbox::query_escape;
use super::{BROADCAST_VERSION, HttpOptions, SERVICE_NAME};
use crate::{BrokerObserver, Error, Undelivered};

/// Topics whose routes are kept at most; past that the cache starts again.
const MAX_ROUTES: usize = 1024;
/// Idle connections kept per node address at most.
const MAX_IDLE_PER_ADDRESS: usize = 32;

/// The `micro.http.broker` nodes by id, each with its version (queue), and
/// the routes made from them.
#[derive(Debug, Default)]
struct Nodes {
    by_id: BTreeMap<String, (String, Node)>,
    /// Why the registry could not be listed, while it never could.
    error: Option<String>,
    /// Each topic published to since the nodes last changed: where its
    /// messages go.
    routes: HashMap<String, Arc<Route>>,
}

/// Where a topic's messages go: each broadcast node, and one node of each
/// queue group.
#[derive(Debug, Default)]
struct Route {
    nodes: Vec<Arc<Endpoint>>,
    groups: Vec<(String, Vec<Arc<Endpoint>>)>,
}

/// A node as the publisher POSTs to it.
#[derive(Debug)]
struct Endpoint {
    id: String,
    address: String,
    secure: bool,
    /// `/?id=<node id>` and the `Host` header, or why the address makes
    /// no request.
    target: Result<(Uri, HeaderValue), String>,
    /// The idle connections to its address (shared by every endpoint of
    /// that address): found once, not per message.
    idle: Arc<Idle>,
}

impl Endpoint {
    fn new(node: &Node, idle: Arc<Idle>) -> Endpoint {
        let path = format!("/?id={}", query_escape(&node.id));
        let target = match (
            Uri::try_from(path),
            HeaderValue::from_str(&node.address),
            format!("http://{}/", node.address).parse::<Uri>(),
        ) {
            (Ok(uri), Ok(host), Ok(_)) => Ok((uri, host)),
            (Err(e), _, _) => Err(e.to_string()),
            (_, Err(e), _) => Err(e.to_string()),
            (_, _, Err(e)) => Err(e.to_string()),
        };
        Endpoint {
            id: node.id.clone(),
            address: node.address.clone(),
            secure: node.metadata.get("secure").map(String::as_str) == Some("true"),
            target,
            idle,
        }
    }
}

/// Where a message must go: one node, or one of a queue group's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Node(String),
    Group(String),
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Node(id) => id.clone(),
            Target::Group(queue) => format!("queue {queue}"),
        }
    }
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
    pool: Pool,
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
        Outbox {
            registry,
            pool: Pool::default(),
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

    fn unavailable(&self, detail: String) -> Error {
        Error::Registry(micro_registry::Error::Unavailable {
            registry: self.registry.name().to_string(),
            detail,
        })
    }

    /// Starts following the registry and the retry loop (once), and waits
    /// for the first listing (bounded by the request timeout).
    async fn ready(self: &Arc<Self>) -> Result<(), Error> {
        if self.tasks.initialized() && *self.listed.borrow() {
            return Ok(());
        }
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
            return Err(self.unavailable(format!(
                "{SERVICE_NAME} not listed within {:?}",
                self.options.request_timeout
            )));
        }
        Ok(())
    }

    /// Where `topic`'s messages go: kept until the nodes change.
    fn route(&self, topic: &str) -> Result<Arc<Route>, Error> {
        let mut nodes = self.nodes();
        if let Some(detail) = &nodes.error {
            let detail = detail.clone();
            drop(nodes);
            return Err(self.unavailable(detail));
        }
        if let Some(route) = nodes.routes.get(topic) {
            return Ok(route.clone());
        }
        let mut route = Route::default();
        for (version, node) in nodes.by_id.values() {
            if !serves(node, topic) {
                continue;
            }
            let endpoint = Arc::new(Endpoint::new(node, self.pool.slot(&node.address)));
            if version == BROADCAST_VERSION {
                route.nodes.push(endpoint);
            } else if let Some((_, members)) = route.groups.iter_mut().find(|(q, _)| q == version) {
                members.push(endpoint);
            } else {
                route.groups.push((version.clone(), vec![endpoint]));
            }
        }
        let route = Arc::new(route);
        if nodes.routes.len() >= MAX_ROUTES {
            nodes.routes.clear();
        }
        nodes.routes.insert(topic.to_string(), route.clone());
        Ok(route)
    }

    /// Sends `envelope` to every subscriber of `topic` (see the module docs).
    pub(super) async fn publish(
        self: &Arc<Self>,
        topic: &str,
        envelope: Bytes,
    ) -> Result<(), Error> {
        self.ready().await?;
        let route = self.route(topic)?;
        let targets = route.nodes.len() + route.groups.len();
        let failures: Vec<Undelivered> = match targets {
            0 => {
                tracing::debug!("Broker [http] {topic}: no subscriber");
                Vec::new()
            }
            // The usual case (one subscriber or one group): no join.
            1 => match (route.nodes.first(), route.groups.first()) {
                (Some(node), _) => self
                    .send_to(topic, &envelope, std::slice::from_ref(node), || {
                        Target::Node(node.id.clone())
                    })
                    .await
                    .into_iter()
                    .collect(),
                (None, Some((queue, members))) => self
                    .send_to(topic, &envelope, members, || Target::Group(queue.clone()))
                    .await
                    .into_iter()
                    .collect(),
                (None, None) => Vec::new(),
            },
            _ => {
                let nodes = route.nodes.iter().map(|node| {
                    self.send_to(topic, &envelope, std::slice::from_ref(node), || {
                        Target::Node(node.id.clone())
                    })
                });
                let groups = route.groups.iter().map(|(queue, members)| {
                    self.send_to(topic, &envelope, members, || Target::Group(queue.clone()))
                });
                let (nodes, groups) = futures::future::join(
                    futures::future::join_all(nodes),
                    futures::future::join_all(groups),
                )
                .await;
                nodes.into_iter().chain(groups).flatten().collect()
            }
        };
        if let Some(observer) = &self.observer {
            observer.published("http", topic, failures.is_empty());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Delivery(failures))
        }
    }

    /// One target: its node, or a group's nodes from a random one on until
    /// one takes it. Unreachable → into the retry buffer.
    async fn send_to(
        &self,
        topic: &str,
        envelope: &Bytes,
        candidates: &[Arc<Endpoint>],
        target: impl FnOnce() -> Target,
    ) -> Option<Undelivered> {
        let (reason, queue) = match self.attempt(topic, envelope, candidates).await {
            Sent::Delivered => return None,
            Sent::Refused(reason) | Sent::Gone(reason) => (reason, false),
            Sent::Unreachable(reason) => (reason, true),
        };
        let target = target();
        let label = target.label();
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

    /// Tries `candidates` from a random one on, each once, until one takes
    /// the message or refuses it.
    async fn attempt(&self, topic: &str, envelope: &Bytes, candidates: &[Arc<Endpoint>]) -> Sent {
        if candidates.is_empty() {
            return Sent::Gone("no longer registered".into());
        }
        let first = fastrand::usize(..candidates.len());
        let mut last = Sent::Gone("no node".into());
        for i in 0..candidates.len() {
            let node = &candidates[(first + i) % candidates.len()];
            last = self.post(node, envelope.clone()).await;
            match &last {
                Sent::Delivered | Sent::Refused(_) => break,
                Sent::Gone(reason) | Sent::Unreachable(reason) => {
                    tracing::debug!("Broker [http] {topic} → {}: {reason}", node.id);
                }
            }
        }
        last
    }

    /// `POST /?id=<node id>` with the envelope, to the node's address.
    async fn post(&self, node: &Endpoint, envelope: Bytes) -> Sent {
        if node.secure {
            return Sent::Refused(format!(
                "{} is a secure (https) broker node, which this broker cannot reach yet",
                node.id
            ));
        }
        let (uri, host) = match &node.target {
            Ok(target) => target,
            Err(e) => return Sent::Refused(format!("bad node address {:?}: {e}", node.address)),
        };
        let mut request = http::Request::new(Full::new(envelope.clone()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.insert(http::header::HOST, host.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let timeout = self.options.request_timeout;
        let exchange = async {
            let (status, body) = send(&node.idle, &node.address, request).await?;
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Sent::Unreachable(format!(
                "no answer from {} within {timeout:?}",
                node.address
            )),
            Ok(Err(e)) => Sent::Unreachable(format!("{}: {e}", node.address)),
            Ok(Ok((status, _))) if status.is_success() => Sent::Delivered,
            Ok(Ok((status, body))) => {
                let detail = detail(&body).unwrap_or_else(|| status.to_string());
                match status {
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
            let route = self.route(&item.topic).unwrap_or_default();
            let candidates: &[Arc<Endpoint>] = match &item.target {
                Target::Node(id) => match route.nodes.iter().position(|n| &n.id == id) {
                    Some(i) => std::slice::from_ref(&route.nodes[i]),
                    None => &[],
                },
                Target::Group(queue) => route
                    .groups
                    .iter()
                    .find(|(q, _)| q == queue)
                    .map(|(_, members)| members.as_slice())
                    .unwrap_or_default(),
            };
            match self.attempt(&item.topic, &item.envelope, candidates).await {
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

/// Keep-alive HTTP/1.1 connections to broker nodes, idle ones kept by
/// address: a POST takes one (or opens one) and gives it back answered.
/// Each route's endpoint holds its address's [`Idle`] (looked up when the
/// route is made), so a POST touches only that one's lock.
#[derive(Default)]
struct Pool {
    by_address: Mutex<HashMap<String, Arc<Idle>>>,
}

/// The idle connections to one address.
#[derive(Default)]
struct Idle(Mutex<Vec<SendRequest<Full<Bytes>>>>);

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("kept", &self.kept().len())
            .finish()
    }
}

impl Pool {
    fn by_address(&self) -> MutexGuard<'_, HashMap<String, Arc<Idle>>> {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The idle connections to `address` (made empty on first use).
    fn slot(&self, address: &str) -> Arc<Idle> {
        let mut by_address = self.by_address();
        if let Some(idle) = by_address.get(address) {
            return idle.clone();
        }
        let idle = Arc::new(Idle::default());
        by_address.insert(address.to_string(), idle.clone());
        idle
    }

    /// Drops the connections to addresses no longer registered.
    fn retain(&self, addresses: &HashSet<&str>) {
        self.by_address()
            .retain(|address, _| addresses.contains(address.as_str()));
    }
}

impl Idle {
    fn kept(&self) -> MutexGuard<'_, Vec<SendRequest<Full<Bytes>>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A kept connection ready for a request, if there is one.
    async fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = self.kept().pop()?;
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut kept = self.kept();
        if kept.len() < MAX_IDLE_PER_ADDRESS {
            kept.push(sender);
        }
    }
}

/// Sends `request` to `address` on a connection of `idle` (or a new one):
/// the answer's status and first KiB. A kept connection that closed before
/// taking the request is left for a new one (the request was not sent).
async fn send(
    idle: &Idle,
    address: &str,
    mut request: http::Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    loop {
        let (mut sender, reused) = match idle.take().await {
            Some(sender) => (sender, true),
            None => (connect(address).await?, false),
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // Never sent: a kept connection the node closed meanwhile.
                Some(unsent) if reused => {
                    request = unsent;
                    continue;
                }
                _ => return Err(error_chain(e.error())),
            },
        };
        let status = response.status();
        // The answer's first KiB: an error's detail.
        let body = http_body_util::Limited::new(response.into_body(), 1024)
            .collect()
            .await
            .map(|c| c.to_bytes());
        match body {
            Ok(body) => {
                idle.give_back(sender);
                return Ok((status, body));
            }
            Err(_) => return Ok((status, Bytes::new())),
        }
    }
}

/// A new HTTP/1.1 connection to `address` (its task spawned).
async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("Broker [http] connection: {e}");
        }
    });
    Ok(sender)
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
        // Routes are made again from the nodes as they are now.
        nodes.routes.clear();
        let addresses: HashSet<&str> = nodes
            .by_id
            .values()
            .map(|(_, node)| node.address.as_str())
            .collect();
        outbox.pool.retain(&addresses);
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
