//! The mDNS registry: micro's default, wire-compatible with go-micro v2.
//!
//! Every process runs a small mDNS responder and querier on UDP 5353
//! (224.0.0.251 and ff02::fb) in the domain `micro.`:
//!
//! - **Register** announces each node as the instance `<node id>.<service>.micro.`
//!   with SRV (port, host name), A/AAAA (the node's address) and TXT (the
//!   service's name, version and endpoints and the node's metadata, as JSON,
//!   zlib, hex, in ≤255-byte strings). Like go-micro it sends 3 probes 250 ms
//!   apart, then 3 announcements 1 s and 2 s apart, and answers queries for
//!   the service, the instance and `_services.micro.` (the list of services).
//! - **Deregister**, [`MdnsRegistry::shutdown`] and dropping the registry send a
//!   goodbye (the same records with TTL 0): peers forget the node at once.
//! - **Lookups** answer from a live cache of every node heard about
//!   (announcements, goodbyes, anyone's answers), expired by record TTL and
//!   refreshed by a query at 80 % of it. The first lookup of a service (or one
//!   the cache has no node for) queries and waits [`MdnsOptions::timeout`]
//!   (1 s by default; go-micro's 100 ms lost answers on a busy host).
//! - **Watch** streams the cache's changes: create, update, delete per node.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), micro_registry::Error> {
//! use micro_registry::{Node, RegisterOptions, Registry, Service};
//! use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
//!
//! let registry = MdnsRegistry::new(MdnsOptions::default())?;
//! let service = Service::new("go.micro.srv.greeter", "latest")
//!     .with_node(Node::new("go.micro.srv.greeter-1", "127.0.0.1:4242"));
//! registry.register(&service, RegisterOptions::default()).await?;
//! let found = registry.get_service("go.micro.srv.greeter").await?;
//! assert_eq!(found[0].nodes[0].address, "127.0.0.1:4242");
//! registry.shutdown().await; // goodbyes
//! # Ok(())
//! # }
//! ```
//!
//! # Interfaces
//! Every interface that is up and can multicast, or only
//! [`MdnsOptions::interface`]. When no interface can multicast (an offline
//! laptop, a network namespace whose loopback lacks the flag) one warning says
//! so and loopback is used, so processes on one host still find each other.
//! Sockets are opened in [`MdnsRegistry::new`] on the calling thread.
//!
//! # What mDNS cannot tell
//! - A node that crashes (`kill -9`, power loss) sends no goodbye: peers keep
//!   it until its records expire (120 s, the TTL go-micro uses). Clients must
//!   evict nodes that refuse connections rather than trust the registry.
//! - Service metadata is not carried (go-micro's TXT has only node metadata):
//!   other processes see it empty.
//! - [`RegisterOptions::ttl`] is honoured locally: a node not registered again
//!   in time says goodbye. The records' own TTL is always 120 s.
//!
//! # Malformed input
//! Foreign records and malformed ones (bad hex, zlib, JSON, absurd sizes, port
//! 0, unusable addresses) are ignored and counted in [`MdnsStats`]. A peer that
//! announces different records under one of our instance names is a name
//! conflict: it is logged and counted, and our records stay as they are (node
//! ids carry a UUID, so a real conflict means a copied id).

mod cache;
mod net;
#[cfg(feature = "testing")]
pub mod testing;
mod txt;
mod wire;

#[cfg(test)]
mod golden;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData, RecordType};
use micro_registry::{
    Action, Detail, Error, Event, RegisterOptions, Registry, Service, WatchOptions, Watcher,
    group_by_version, validate,
};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

pub use net::{Interface, interfaces};

use crate::cache::Cache;
use crate::net::{From, MDNS_PORT, Transport};
use crate::wire::{LocalInstance, TTL};

/// Buffered events per watcher before it is told it lagged.
const WATCH_BUFFER: usize = 1024;
/// Probes before announcing, and their spacing (RFC 6762 §8.1).
const PROBES: u32 = 3;
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Gaps before each announcement, as go-micro: at once, then 1 s, then 2 s.
const ANNOUNCE_GAPS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// How often expiry and refresh run.
const TICK: Duration = Duration::from_millis(250);
/// Largest datagram we read.
const MAX_PACKET: usize = 65_536;
/// The key under which the `_services` lookup is remembered.
const LIST_KEY: &str = "_services";

/// Configuration of an [`MdnsRegistry`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MdnsOptions {
    /// How long a cold lookup waits for answers (`--mdns_timeout`).
    pub timeout: Duration,
    /// Run only on this interface (`--mdns_interface`); `None`: every
    /// multicast-capable one.
    pub interface: Option<String>,
}

impl Default for MdnsOptions {
    fn default() -> Self {
        MdnsOptions {
            timeout: Duration::from_secs(1),
            interface: None,
        }
    }
}

impl MdnsOptions {
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_interface(mut self, interface: impl Into<String>) -> Self {
        self.interface = Some(interface.into());
        self
    }
}

/// Counters of what the registry received and could not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MdnsStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams that were not DNS, and `micro.` records that were unusable
    /// (bad TXT, port 0, no service, ...).
    pub malformed: u64,
    /// Records outside the `micro.` domain (other mDNS users on the network).
    pub foreign: u64,
    /// Records from another responder that contradict ours for one of our names.
    pub conflicts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    malformed: AtomicU64,
    foreign: AtomicU64,
    conflicts: AtomicU64,
}

/// The mDNS registry. Dropping it sends goodbyes (best effort); prefer
/// [`MdnsRegistry::shutdown`], which waits until they are sent.
#[derive(Debug)]
pub struct MdnsRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: MdnsOptions,
    host: Name,
    transport: Transport,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    counters: Counters,
    tasks: Mutex<Vec<AbortHandle>>,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Our nodes, by instance key.
    local: BTreeMap<String, Local>,
    cache: Cache,
    /// Lookup key → when its last query window ended.
    queried: HashMap<String, Instant>,
    /// Lookup key → when the query window in progress ends.
    inflight: HashMap<String, Instant>,
}

#[derive(Debug)]
struct Local {
    instance: LocalInstance,
    expires: Option<Instant>,
    announcer: Option<AbortHandle>,
}

impl MdnsRegistry {
    /// Opens the sockets and starts the responder. Needs a tokio runtime.
    pub fn new(options: MdnsOptions) -> Result<MdnsRegistry, Error> {
        let unavailable = |detail: String| Error::Unavailable {
            registry: "mdns".into(),
            detail,
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(unavailable("needs a tokio runtime".into()));
        }
        let all = interfaces().map_err(|e| unavailable(format!("list interfaces: {e}")))?;
        let chosen = net::choose(all, options.interface.as_deref())?;
        let transport = Transport::open(chosen)?;
        let names: Vec<String> = transport
            .interfaces
            .iter()
            .map(|i| i.name.clone())
            .collect();
        tracing::debug!(
            interfaces = %names.join(","),
            ipv4 = transport.v4.is_some(),
            ipv6 = transport.v6.is_some(),
            "Registry [mdns] listening on port {MDNS_PORT}"
        );
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let inner = Arc::new(Inner {
            options,
            host: wire::host_name(),
            transport,
            state: Mutex::new(State::default()),
            events,
            counters: Counters::default(),
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        for index in 0..inner.transport.receivers().len() {
            tasks.push(tokio::spawn(receive(Arc::downgrade(&inner), index)).abort_handle());
        }
        tasks.push(tokio::spawn(maintain(Arc::downgrade(&inner))).abort_handle());
        *lock(&inner.tasks) = tasks;
        Ok(MdnsRegistry { inner })
    }

    /// Sends goodbyes for every registered node, waits until they are out, and
    /// stops the responder. Later calls are no-ops; other methods then fail
    /// with [`Error::Unavailable`].
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let goodbyes = self.inner.take_all_goodbyes();
        for bytes in &goodbyes {
            self.inner.transport.multicast(From::Mdns, bytes).await;
        }
        self.inner.stop_tasks();
        tracing::debug!(
            "Registry [mdns] shut down ({} goodbyes sent)",
            goodbyes.len()
        );
    }

    /// What was received and could not be used so far.
    pub fn stats(&self) -> MdnsStats {
        let c = &self.inner.counters;
        MdnsStats {
            received: c.received.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            foreign: c.foreign.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
        }
    }

    /// The interfaces the registry runs on.
    pub fn interfaces(&self) -> &[Interface] {
        &self.inner.transport.interfaces
    }

    /// The options it was built with.
    pub fn options(&self) -> &MdnsOptions {
        &self.inner.options
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                registry: "mdns".into(),
                detail: "the registry was shut down".into(),
            });
        }
        Ok(())
    }

    /// Queries `name` (unless a query for it is already out) and waits for the
    /// end of the answer window.
    async fn lookup(&self, key: &str, question: Name) {
        let now = Instant::now();
        let (deadline, send) = {
            let mut state = self.inner.state();
            match state.inflight.get(key) {
                Some(deadline) if *deadline > now => (*deadline, false),
                _ => {
                    let deadline = now + self.inner.options.timeout;
                    state.inflight.insert(key.to_string(), deadline);
                    (deadline, true)
                }
            }
        };
        if send {
            let query = wire::query(question, RecordType::PTR);
            if let Ok(bytes) = query.to_vec() {
                self.inner.transport.multicast(From::Querier, &bytes).await;
                // Once more a third into the window, against a lost datagram.
                let again = now + self.inner.options.timeout / 3;
                tokio::time::sleep_until(again.min(deadline)).await;
                self.inner.transport.multicast(From::Querier, &bytes).await;
            }
        }
        tokio::time::sleep_until(deadline).await;
        let mut state = self.inner.state();
        state.queried.insert(key.to_string(), deadline);
        if state.inflight.get(key).is_some_and(|d| *d <= deadline) {
            state.inflight.remove(key);
        }
    }

    fn known_nodes(&self, name: &str) -> Vec<Service> {
        let state = self.inner.state();
        let mut nodes: Vec<Service> = state
            .local
            .values()
            .filter(|l| l.instance.service.name == name)
            .map(|l| l.instance.service.clone())
            .collect();
        nodes.extend(state.cache.nodes(name));
        nodes
    }
}

impl Drop for MdnsRegistry {
    fn drop(&mut self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for bytes in self.inner.take_all_goodbyes() {
            self.inner.transport.try_multicast(&bytes);
        }
        self.inner.stop_tasks();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here leaves the state half-updated across a panic in a way that
    // matters more than losing the registry: keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn stop_tasks(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            task.abort();
        }
        let mut state = self.state();
        for local in state.local.values_mut() {
            if let Some(announcer) = local.announcer.take() {
                announcer.abort();
            }
        }
    }

    /// Removes every local node; the goodbyes to send.
    fn take_all_goodbyes(&self) -> Vec<Vec<u8>> {
        let mut state = self.state();
        let keys: Vec<String> = state.local.keys().cloned().collect();
        let (goodbyes, _events) = self.remove_locals(&mut state, &keys);
        goodbyes
    }

    /// Removes local nodes by key. Returns goodbye datagrams (one per node,
    /// plus the `_services` PTR of each service left without nodes) and
    /// delete events.
    fn remove_locals(&self, state: &mut State, keys: &[String]) -> (Vec<Vec<u8>>, Vec<Event>) {
        let mut goodbyes = Vec::new();
        let mut events = Vec::new();
        let mut services = Vec::new();
        for key in keys {
            let Some(mut local) = state.local.remove(key) else {
                continue;
            };
            if let Some(announcer) = local.announcer.take() {
                announcer.abort();
            }
            if let Ok(bytes) = local.instance.announcement(0).to_vec() {
                goodbyes.push(bytes);
            }
            services.push(local.instance.service.name.clone());
            events.push(Event {
                action: Action::Delete,
                service: local.instance.service,
            });
        }
        services.sort();
        services.dedup();
        for name in services {
            let still = state
                .local
                .values()
                .any(|l| l.instance.service.name == name);
            if still {
                continue;
            }
            if let Some(records) = wire::services_records(&name, &self.host, 0) {
                let mut msg =
                    Message::new(0, MessageType::Response, hickory_proto::op::OpCode::Query);
                msg.metadata.authoritative = true;
                // Only the PTR: the host's A record is not ours to retract.
                msg.add_answers(records.into_iter().take(1));
                if let Ok(bytes) = msg.to_vec() {
                    goodbyes.push(bytes);
                }
            }
        }
        (goodbyes, events)
    }

    fn publish(&self, events: Vec<Event>) {
        for event in events {
            // No receiver is not an error: nobody watches.
            let _ = self.events.send(event);
        }
    }

    fn count(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    async fn handle(&self, bytes: &[u8], from: SocketAddr, via: From) {
        self.count(&self.counters.received, 1);
        let Ok(msg) = wire::decode(bytes) else {
            self.count(&self.counters.malformed, 1);
            micro_registry::skipped::record("mdns", "not_dns", 1);
            return;
        };
        match msg.metadata.message_type {
            MessageType::Query if via == From::Mdns => {
                self.check_probe(&msg, from);
                self.answer(&msg, from).await;
            }
            MessageType::Query => {}
            MessageType::Response => self.learn(&msg, from),
        }
    }

    /// Answers the questions of `query` about our nodes: one message per node
    /// (go-micro's client reads one instance per message), question echoed.
    async fn answer(&self, query: &Message, from: SocketAddr) {
        if query.queries.is_empty() {
            return;
        }
        // A querier not on 5353 is a one-shot ("legacy") querier such as
        // go-micro's client or dig: answer it directly, with its ID. Queries
        // from 5353 are answered by multicast, which every process sharing
        // the port hears.
        let legacy = from.port() != MDNS_PORT;
        let id = if legacy { query.metadata.id } else { 0 };
        let replies = {
            let state = self.state();
            let locals: Vec<&LocalInstance> = state.local.values().map(|l| &l.instance).collect();
            wire::answers(&locals, &self.host, query, id)
        };
        for reply in replies {
            let Ok(bytes) = reply.to_vec() else { continue };
            if legacy {
                if let Err(e) = self.transport.unicast(from, &bytes).await {
                    tracing::debug!("Registry [mdns] answer to {from}: {e}");
                }
            } else {
                self.transport.multicast(From::Mdns, &bytes).await;
            }
        }
    }

    /// A probe from someone else for one of our names, with other records.
    fn check_probe(&self, query: &Message, from: SocketAddr) {
        if query.authorities.is_empty() {
            return;
        }
        let state = self.state();
        for record in &query.authorities {
            let Some(local) = state.local.get(&wire::key(&record.name)) else {
                continue;
            };
            let ours = &local.instance;
            let differs = match &record.data {
                RData::SRV(srv) => srv.port != ours.port || srv.target != ours.host,
                RData::TXT(txt) => {
                    txt.txt_data.len() != ours.txt.len()
                        || txt
                            .txt_data
                            .iter()
                            .zip(&ours.txt)
                            .any(|(a, b)| **a != *b.as_bytes())
                }
                _ => false,
            };
            if differs {
                self.conflict(&ours.service, from, "probes for");
                return;
            }
        }
    }

    fn conflict(&self, service: &Service, from: SocketAddr, what: &str) {
        self.count(&self.counters.conflicts, 1);
        let node = service.nodes.first().map(|n| n.id.as_str()).unwrap_or("");
        tracing::warn!(
            "Registry [mdns] name conflict: {from} {what} our node {node} of {} with other records; \
             two processes use the same node id (keeping ours)",
            service.name
        );
    }

    /// Takes what a response says into the cache.
    fn learn(&self, msg: &Message, from: SocketAddr) {
        let parsed = wire::parse_response(msg);
        self.count(&self.counters.malformed, parsed.malformed);
        micro_registry::skipped::record("mdns", "malformed", parsed.malformed);
        self.count(&self.counters.foreign, parsed.foreign);
        let now = Instant::now();
        let mut events = Vec::new();
        {
            let mut state = self.state();
            for update in parsed.instances {
                if let Some(local) = state.local.get(&update.key) {
                    // Our own name: an echo of ours, or a conflict.
                    let ours = &local.instance;
                    let differs = !update.goodbye
                        && (update.srv.is_some_and(|(port, _)| port != ours.port)
                            || update.addr.is_some_and(|(ip, _)| ip != ours.ip)
                            || update.txt.as_ref().is_some_and(|(txt, _)| {
                                ours.service.nodes.first().is_some_and(|node| {
                                    txt.metadata != node.metadata
                                        || txt.version != ours.service.version
                                })
                            }));
                    if differs {
                        let service = ours.service.clone();
                        drop(state);
                        self.conflict(&service, from, "announces");
                        state = self.state();
                    }
                    continue;
                }
                events.extend(state.cache.apply(update, now));
            }
            for (name, ttl) in parsed.service_names {
                state.cache.note_service(name, ttl, now);
            }
        }
        self.publish(events);
    }
}

/// Receives on one socket until the registry goes away.
async fn receive(inner: Weak<Inner>, index: usize) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let receivers = strong.transport.receivers();
        let Some((socket, via)) = receivers.get(index).copied() else {
            return;
        };
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("Registry [mdns] receive: {e}");
                drop(receivers);
                drop(strong);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let bytes = &buf[..len];
        strong.handle(bytes, from, via).await;
    }
}

/// Expires TTL registrations and cache entries, and sends refresh queries.
async fn maintain(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let (goodbyes, mut events, refresh) = {
            let mut state = inner.state();
            let expired: Vec<String> = state
                .local
                .iter()
                .filter(|(_, l)| l.expires.is_some_and(|at| at <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for key in &expired {
                tracing::debug!("Registry [mdns] TTL expired: {key}");
            }
            let (goodbyes, events) = inner.remove_locals(&mut state, &expired);
            let (cache_events, refresh) = state.cache.expire(now);
            let mut all = events;
            all.extend(cache_events);
            (goodbyes, all, refresh)
        };
        for bytes in &goodbyes {
            inner.transport.multicast(From::Mdns, bytes).await;
        }
        for service in refresh {
            let Ok(name) = wire::service_name(&service) else {
                continue;
            };
            if let Ok(bytes) = wire::query(name, RecordType::PTR).to_vec() {
                inner.transport.multicast(From::Querier, &bytes).await;
            }
        }
        inner.publish(std::mem::take(&mut events));
    }
}

/// Probes (for a new name), then announces a local node.
async fn announce(inner: Weak<Inner>, instance: LocalInstance, probe: bool) {
    if probe && let Ok(bytes) = instance.probe().to_vec() {
        for _ in 0..PROBES {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            strong.transport.multicast(From::Mdns, &bytes).await;
            drop(strong);
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    let Ok(bytes) = instance.announcement(TTL).to_vec() else {
        return;
    };
    for gap in ANNOUNCE_GAPS {
        tokio::time::sleep(gap).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        strong.transport.multicast(From::Mdns, &bytes).await;
    }
}

#[async_trait::async_trait]
impl Registry for MdnsRegistry {
    fn name(&self) -> &str {
        "mdns"
    }

    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        validate(service)?;
        self.ensure_open()?;
        let instances = service
            .nodes
            .iter()
            .map(|node| LocalInstance::new(service, node, &self.inner.host))
            .collect::<Result<Vec<_>, Error>>()?;
        let expires = options.ttl.map(|ttl| Instant::now() + ttl);
        let mut events = Vec::new();
        {
            let mut state = self.inner.state();
            for instance in instances {
                let key = instance.key();
                let (announcer, action) = match state.local.get_mut(&key) {
                    Some(existing) if existing.instance.same_records(&instance) => {
                        // A refresh: same records, nothing to announce.
                        existing.expires = expires;
                        if existing.instance.service != instance.service {
                            existing.instance = instance.clone();
                            events.push(Event {
                                action: Action::Update,
                                service: instance.service,
                            });
                        }
                        continue;
                    }
                    Some(existing) => {
                        if let Some(old) = existing.announcer.take() {
                            old.abort();
                        }
                        // We own the name already: announce the change at once.
                        (
                            tokio::spawn(announce(
                                Arc::downgrade(&self.inner),
                                instance.clone(),
                                false,
                            )),
                            Action::Update,
                        )
                    }
                    None => {
                        let known = state.cache.remove(&key).is_some();
                        (
                            tokio::spawn(announce(
                                Arc::downgrade(&self.inner),
                                instance.clone(),
                                true,
                            )),
                            if known {
                                Action::Update
                            } else {
                                Action::Create
                            },
                        )
                    }
                };
                events.push(Event {
                    action,
                    service: instance.service.clone(),
                });
                state.local.insert(
                    key,
                    Local {
                        instance,
                        expires,
                        announcer: Some(announcer.abort_handle()),
                    },
                );
            }
        }
        self.inner.publish(events);
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            // Shutdown already said goodbye for everything.
            return Ok(());
        }
        let keys: Vec<String> = service
            .nodes
            .iter()
            .filter_map(|node| wire::instance_name(&node.id, &service.name).ok())
            .map(|(name, _)| wire::key(&name))
            .collect();
        let (goodbyes, events) = {
            let mut state = self.inner.state();
            self.inner.remove_locals(&mut state, &keys)
        };
        for bytes in &goodbyes {
            self.inner.transport.multicast(From::Mdns, bytes).await;
        }
        self.inner.publish(events);
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.ensure_open()?;
        let Ok(question) = wire::service_name(name) else {
            return Err(Error::NotFound(name.to_string()));
        };
        let now = Instant::now();
        let nodes = self.known_nodes(name);
        let fresh = {
            let state = self.inner.state();
            match state.queried.get(name) {
                // Warm: the cache has followed this service since a full query.
                Some(_) if !nodes.is_empty() => true,
                // Recently asked and nobody answered.
                Some(at) => now.saturating_duration_since(*at) < self.inner.options.timeout,
                None => false,
            }
        };
        let nodes = if fresh {
            nodes
        } else {
            self.lookup(name, question).await;
            self.known_nodes(name)
        };
        if nodes.is_empty() {
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(group_by_version(nodes))
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.ensure_open()?;
        let listed = self.inner.state().queried.contains_key(LIST_KEY);
        if !listed {
            self.lookup(LIST_KEY, wire::services_name()).await;
        }
        let state = self.inner.state();
        let mut by_name = state.cache.services();
        for local in state.local.values() {
            by_name
                .entry(local.instance.service.name.clone())
                .or_default()
                .push(local.instance.service.clone());
        }
        let mut out = Vec::new();
        for (name, nodes) in by_name {
            if nodes.is_empty() {
                out.push(Service::new(name, ""));
                continue;
            }
            for mut service in group_by_version(nodes) {
                service.nodes.clear();
                out.push(service);
            }
        }
        Ok(out)
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        self.ensure_open()?;
        let receiver = self.inner.events.subscribe();
        let filter = options.service;
        let nodes_only = options.detail == Detail::Nodes;
        let stream = BroadcastStream::new(receiver).filter_map(move |item| match item {
            Ok(mut event) => match &filter {
                Some(name) if *name != event.service.name => None,
                _ => {
                    if nodes_only {
                        // The watcher keeps what it is given: not the endpoints
                        // it did not ask for.
                        event.service.endpoints = Vec::new();
                    }
                    Some(Ok(event))
                }
            },
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Error::Lagged(missed))),
        });
        Ok(Watcher::new(stream))
    }

    async fn close(&self) {
        self.shutdown().await;
    }
}
