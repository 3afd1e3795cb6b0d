//! One node: its connection, its health and its load.
//!
//! Two ways out of the rotation, for two kinds of failure:
//!
//! - **Down** (the connection was refused or broke): the node is crashed or
//!   gone. It stays out until a TCP probe connects to it (first after
//!   `backoff_min`, then doubling up to `backoff_max` while it refuses), so a
//!   crashed node costs each client one failed attempt.
//! - **Ejected** (an outlier): it accepts connections but fails calls or does
//!   not answer them — `eject_after` failures in a row (attempt timeouts,
//!   `Unavailable`, connections lost mid-call). It is out for `ejection_min`,
//!   twice as long the next time, up to `ejection_max`, then simply gets calls
//!   again. Never more than half a node set is ejected at once
//!   ([`NodeSet`](crate::NodeSet) checks), so ejection cannot empty a service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use micro_registry::{Backoff, Node};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use crate::connection::NodeConnection;
use crate::load::Load;
use crate::options::ClientOptions;
use crate::tls::TlsConnector;

/// Where a node stands in the rotation, as one client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Gets calls.
    Up,
    /// Refused or dropped a connection; out until a probe connects.
    Down,
    /// Failed too many calls in a row; out for its ejection time.
    Ejected,
}

impl NodeState {
    pub const ALL: [NodeState; 3] = [NodeState::Up, NodeState::Down, NodeState::Ejected];

    /// `up`, `down` or `ejected` (metric label values).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Ejected => "ejected",
        }
    }
}

/// One node and the connection to it, with what a client learnt of its
/// health and load.
#[derive(Debug)]
pub struct NodeEntry {
    pub node: Node,
    pub(crate) connection: NodeConnection,
    /// Why no attempt can succeed (a TLS node and no client TLS): attempts
    /// fail at once with it.
    pub(crate) refusal: Option<Box<str>>,
    /// Shared by the copies of an entry (same node, same connection).
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    health: Mutex<Health>,
    load: Load,
    attempts: AtomicU64,
    failures: AtomicU64,
}

#[derive(Debug)]
struct Health {
    /// Period of the next connection probe.
    probe: Backoff,
    /// Out of the rotation until a connection probe succeeds.
    down: bool,
    /// A probe task is running for this node.
    probing: bool,
    /// Failed attempts in a row (reset by any answer that is not a failure).
    consecutive: u32,
    ejected_until: Option<Instant>,
    /// Length of the next ejection.
    ejection: Backoff,
}

impl NodeEntry {
    /// A node, its connection (made when first used) and a fresh health
    /// record; an error for an address that cannot be dialled.
    pub fn new(node: Node, options: &ClientOptions) -> Result<NodeEntry, String> {
        let connection = connection_for(&node.address, options)?;
        Ok(NodeEntry {
            refusal: crate::tls::refusal(&node, options.tls.as_ref()).map(Into::into),
            node,
            connection,
            shared: Arc::new(Shared {
                health: Mutex::new(Health {
                    probe: Backoff::new(options.backoff_min, options.backoff_max),
                    down: false,
                    probing: false,
                    consecutive: 0,
                    ejected_until: None,
                    ejection: Backoff::new(options.ejection_min, options.ejection_max),
                }),
                load: Load::default(),
                attempts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }

    /// The same node and connection, with new metadata.
    pub(crate) fn with_node(&self, node: Node, options: &ClientOptions) -> NodeEntry {
        NodeEntry {
            refusal: crate::tls::refusal(&node, options.tls.as_ref()).map(Into::into),
            node,
            connection: self.connection.clone(),
            shared: self.shared.clone(),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        lock(&self.shared.health)
    }

    pub(crate) fn load(&self) -> &Load {
        &self.shared.load
    }

    /// Why no attempt on this node can succeed with this client's
    /// settings (it serves TLS and the client has none), if so.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    pub fn state(&self) -> NodeState {
        let health = self.health();
        if health.down {
            NodeState::Down
        } else if health.ejected_until.is_some_and(|t| t > Instant::now()) {
            NodeState::Ejected
        } else {
            NodeState::Up
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.state() == NodeState::Up
    }

    pub(crate) fn count_attempt(&self) {
        self.shared.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> NodeStats {
        let state = self.state();
        NodeStats {
            node: self.node.clone(),
            attempts: self.shared.attempts.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            backing_off: state == NodeState::Down,
            state,
            in_flight: self.shared.load.in_flight(),
            rtt: self.shared.load.rtt(),
        }
    }

    /// The connection to the node failed: out of the rotation until a probe
    /// reaches it again.
    pub(crate) fn mark_refused(&self, options: &ClientOptions) {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health();
        // Calls in flight when the node failed all fail together: one
        // outage, one probe (not one per call).
        if health.down {
            return;
        }
        health.down = true;
        let period = health.probe.next_delay();
        tracing::debug!(node = %self.node.id, address = %self.node.address, ?period, "node refused a connection; out of the rotation until it accepts one");
        if !health.probing {
            health.probing = true;
            tokio::spawn(probe(
                Arc::downgrade(&self.shared),
                self.node.address.clone(),
                period,
                options.dial_timeout,
            ));
        }
    }

    /// The node answered (whatever the answer, short of a failure of the
    /// node itself): back in the rotation, failures in a row forgotten.
    pub(crate) fn mark_answered(&self) {
        let mut health = self.health();
        health.consecutive = 0;
        if health.down {
            health.down = false;
            health.probe.reset();
        }
        // A node that has stayed in since its last ejection for as long as
        // the longest ejection starts over at the shortest.
        if health.ejection.failures() > 0
            && health
                .ejected_until
                .is_some_and(|t| t + health.ejection.max() <= Instant::now())
        {
            health.ejection.reset();
        }
    }

    /// The node failed an attempt (timeout, `Unavailable`, connection lost
    /// mid-call). Returns whether that makes `eject_after` in a row.
    pub(crate) fn mark_failed(&self, options: &ClientOptions) -> bool {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health();
        health.consecutive = health.consecutive.saturating_add(1);
        options.eject_after > 0
            && health.consecutive >= options.eject_after
            && health.ejected_until.is_none_or(|t| t <= Instant::now())
    }

    /// Takes the node out for its next ejection time.
    pub(crate) fn eject(&self) -> Duration {
        let mut health = self.health();
        let period = health.ejection.next_delay();
        health.ejected_until = Some(Instant::now() + period);
        health.consecutive = 0;
        tracing::warn!(node = %self.node.id, address = %self.node.address, ?period, "node failed calls in a row; ejected");
        period
    }
}

/// What one client has seen of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStats {
    pub node: Node,
    /// Calls (attempts) sent to the node.
    pub attempts: u64,
    /// Attempts that failed because of the node (connection, timeout,
    /// `Unavailable`).
    pub failures: u64,
    /// Whether the node is down (it refused a connection and no probe has
    /// reached it since).
    pub backing_off: bool,
    pub state: NodeState,
    /// Attempts waiting for an answer now.
    pub in_flight: u32,
    /// The peak-EWMA latency estimate.
    pub rtt: Duration,
}

fn lock(health: &Mutex<Health>) -> MutexGuard<'_, Health> {
    health
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tries to connect to a node that is down, every `period` (doubling), until
/// it accepts a connection (it is back in the rotation), a call answered
/// meanwhile, or the node left the set (nothing holds its state any more).
async fn probe(
    shared: Weak<Shared>,
    address: String,
    mut period: Duration,
    dial_timeout: Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if !lock(&strong.health).down {
            lock(&strong.health).probing = false;
            return;
        }
        drop(strong);
        let reachable = matches!(
            tokio::time::timeout(
                dial_timeout,
                tokio::net::TcpStream::connect(address.as_str())
            )
            .await,
            Ok(Ok(_))
        );
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let mut health = lock(&strong.health);
        if reachable || !health.down {
            tracing::debug!(%address, "node accepts connections again; back in the rotation");
            health.down = false;
            health.probing = false;
            return;
        }
        period = health.probe.next_delay();
    }
}

/// Checks a registered address and makes a lazily made connection to it.
/// Only addresses of registered nodes are ever dialled.
fn connection_for(address: &str, options: &ClientOptions) -> Result<NodeConnection, String> {
    let uri = node_uri(address)?;
    let authority = uri.authority().cloned().expect("checked: host and port");
    Ok(NodeConnection::new(
        authority,
        tcp_connector(),
        options.tls.as_ref(),
        options.dial_timeout,
        CONNECTION_WINDOW,
    ))
}

/// `http://host:port` for a node's address: an error unless it is exactly a
/// host and a non-zero port.
fn node_uri(address: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = format!("http://{address}")
        .parse()
        .map_err(|e| format!("bad node address {address:?}: {e}"))?;
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    let port_ok = uri.port_u16().is_some_and(|p| p != 0);
    if !host_ok || !port_ok || uri.path() != "/" {
        return Err(format!(
            "bad node address {address:?}: expected host:port with a non-zero port"
        ));
    }
    Ok(uri)
}

/// TCP to nodes: no Nagle delay, and keepalive probes (see below).
fn tcp_connector() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(TCP_KEEPALIVE_IDLE));
    tcp.set_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL));
    tcp.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
    tcp
}

/// Idle time before the first TCP keepalive probe, time between probes, and
/// probes unanswered before the kernel drops the connection: a dead peer is
/// found within 30 + 3 × 10 seconds of silence.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// The HTTP/2 connection window to a node: as large as HTTP/2 allows. A
/// stream whose reader stalls (a gateway's WebSocket client that stops
/// reading) keeps up to its stream window unread, and unread data holds the
/// connection's window too (h2 credits it when read, where grpc-go credits
/// the connection on receipt): with hyper's 5 MB default, three stalled
/// streams stop every other stream on the connection. Memory stays bounded
/// by each stream's own window.
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// The way to one node: tonic's endpoint (address, timeouts, TCP and
/// HTTP/2 options) and, with TLS, the connector that dials it with the
/// client's current TLS configuration (read again on SIGHUP).
#[derive(Clone, Debug)]
pub struct NodeEndpoint {
    endpoint: TonicEndpoint,
    tls: Option<TlsConnector>,
}

impl NodeEndpoint {
    /// Each request on the channel bounded by `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint = self.endpoint.timeout(timeout);
        self
    }

    /// A channel that connects on first use (and again after a lost
    /// connection, with the TLS configuration current then).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(connector) => self.endpoint.connect_with_connector_lazy(connector.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }

    /// A channel, connected now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(connector) => {
                self.endpoint
                    .connect_with_connector(connector.clone())
                    .await
            }
            None => self.endpoint.connect().await,
        }
    }
}

/// The endpoint for a node at `address` (`host:port`), over TLS when
/// `options.tls` is set: for callers that dial one node themselves (`micro
/// call --address`, `micro health`).
pub fn endpoint_for(address: &str, options: &ClientOptions) -> Result<NodeEndpoint, String> {
    let uri = node_uri(address)?;
    let mut endpoint = TonicEndpoint::from(uri)
        .connect_timeout(options.dial_timeout)
        .tcp_nodelay(true)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // A peer that vanished (host down, network cut) is found by TCP
        // keepalive, in the kernel, at no cost per call. HTTP/2 PING
        // keepalive would find it too, but hyper then reads the clock and
        // locks a mutex on every frame received (~1,800 instructions per
        // call, callgrind), and grpc-go servers by default count pings more
        // frequent than every 5 minutes as strikes (GOAWAY `too_many_pings`
        // after a few). A process that is alive but hung is the attempt
        // timeout's and ejection's to handle.
        .tcp_keepalive(Some(TCP_KEEPALIVE_IDLE))
        .tcp_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
        .tcp_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
    let Some(tls) = &options.tls else {
        return Ok(NodeEndpoint {
            endpoint,
            tls: None,
        });
    };
    // Our connector dials TLS (tonic sees `http`); requests say `https`.
    let origin: http::Uri = format!("https://{address}")
        .parse()
        .map_err(|e| format!("bad node address {address:?}: {e}"))?;
    endpoint = endpoint.origin(origin);
    // The TCP options tonic gives its own connector; tonic's connect
    // timeout bounds TCP and the handshake together.
    Ok(NodeEndpoint {
        endpoint,
        tls: Some(TlsConnector::new(tcp_connector(), tls.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ClientOptions {
        ClientOptions {
            eject_after: 3,
            ejection_min: Duration::from_secs(10),
            ejection_max: Duration::from_secs(40),
            ..ClientOptions::default()
        }
    }

    fn entry(options: &ClientOptions) -> NodeEntry {
        NodeEntry::new(Node::new("n", "127.0.0.1:9"), options).expect("entry")
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_eject_for_a_growing_time() {
        let options = options();
        let node = entry(&options);
        assert!(!node.mark_failed(&options));
        node.mark_answered();
        assert!(!node.mark_failed(&options));
        assert!(!node.mark_failed(&options), "an answer broke the run");
        assert!(node.mark_failed(&options));
        assert_eq!(node.eject(), Duration::from_secs(10));
        assert_eq!(node.state(), NodeState::Ejected);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(node.state(), NodeState::Up);
        for _ in 0..2 {
            node.mark_failed(&options);
        }
        assert!(node.mark_failed(&options));
        assert_eq!(node.eject(), Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(20)).await;
        for _ in 0..3 {
            node.mark_failed(&options);
        }
        assert_eq!(node.eject(), Duration::from_secs(40));
        assert_eq!(node.eject(), Duration::from_secs(40), "bounded");
        // In for as long as the longest ejection: the next one is short.
        tokio::time::advance(Duration::from_secs(80)).await;
        node.mark_answered();
        assert_eq!(node.eject(), Duration::from_secs(10));
    }
}
