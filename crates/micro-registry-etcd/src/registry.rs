//! [`EtcdRegistry`]: the [`Registry`] on etcd's v3 API.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, LeaseClient, PutOptions, Txn,
    TxnOp, WatchClient,
};
use micro_registry::{
    Backoff, Detail, Error, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher,
    group_by_version, validate,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::entry::{self, Decoder, PREFIX, node_key, service_prefix};
use crate::options::EtcdOptions;
use crate::reachability::{Reachability, describe};

const NAME: &str = "etcd";

/// gRPC messages up to this size are accepted from etcd (tonic's default, 4
/// MiB, would let a few big entries fail a whole listing).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// First pause between attempts of one operation; doubles up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(400);

/// One attempt may take a quarter of the request timeout, but at least this;
/// each further attempt may take twice as long as the one before.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 pings find a dead etcd under an idle watch.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a deregistration may take when etcd is already known to be
/// unreachable: a stopping server should not wait the whole request timeout
/// on an etcd that was down before it started to stop.
pub const DEREGISTER_WHEN_UNREACHABLE: Duration = Duration::from_secs(1);

/// A [`Registry`] on etcd, wire-compatible with go-micro v2.
///
/// Each node is one key, `/micro/registry/<service>/<node id>`, holding the
/// JSON go-micro writes, on a lease of the registration TTL. Registering an
/// unchanged node again (the server's heartbeat) refreshes its lease and puts
/// the key back if it disappeared; after the lease is lost (etcd restarted on
/// empty data, a partition longer than the TTL) it grants a new lease and
/// registers again. Entries that cannot be used (bad JSON, no address, port 0,
/// oversized) are skipped and counted in [`skipped_entries`](Self::skipped_entries).
///
/// `list_services` returns every service with its nodes, as go-micro's does.
///
/// Every operation is bounded by [`EtcdOptions::request_timeout`] and retried
/// within it across the endpoints, so one member of a cluster being down does
/// not fail calls. Cheap to clone; clones share the connection.
///
/// ```no_run
/// # async fn run() -> Result<(), micro_registry::Error> {
/// use micro_registry::{Node, RegisterOptions, Registry, Service};
/// use micro_registry_etcd::{EtcdOptions, EtcdRegistry};
///
/// let options = EtcdOptions::from_addresses("127.0.0.1:2379,127.0.0.1:3379")?;
/// // Succeeds even if etcd is down: operations fail (clearly) until it is up.
/// let registry = EtcdRegistry::connect(options).await?;
/// let service = Service::new("go.micro.srv.user", "latest")
///     .with_node(Node::new("go.micro.srv.user-1", "127.0.0.1:10507"));
/// registry
///     .register(&service, RegisterOptions::with_ttl(std::time::Duration::from_secs(60)))
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    options: EtcdOptions,
    /// What the client dials, for messages.
    urls: Vec<String>,
    client: Mutex<Client>,
    clients: Clients,
    /// Whether the client still has to log in (credentials given, not yet
    /// accepted).
    login_pending: Mutex<bool>,
    /// Per node key: what we last registered, so a heartbeat is cheap.
    nodes: StdMutex<HashMap<String, Arc<Mutex<NodeState>>>>,
    pub(crate) decoder: Arc<Decoder>,
    pub(crate) reachability: Arc<Reachability>,
}

#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) kv: KvClient,
    pub(crate) lease: LeaseClient,
    pub(crate) watch: WatchClient,
}

#[derive(Debug, Default)]
struct NodeState {
    registered: bool,
    value: Vec<u8>,
    /// Lease TTL in seconds; `None`: no lease.
    ttl: Option<i64>,
    /// Lease id; 0: none.
    lease: i64,
}

/// Why an operation failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// etcd answered with an error that retrying will not fix.
    Etcd(etcd_client::Error),
    /// The lease is gone (expired, revoked, or etcd lost its data).
    LeaseLost,
    /// No endpoint answered in time.
    Unavailable {
        attempts: u32,
        elapsed: Duration,
        last: Option<String>,
    },
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.urls)
            .field("skipped_entries", &self.inner.decoder.skipped())
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A registry on the etcd cluster `options` names.
    ///
    /// Fails only on bad options (malformed endpoint, unreadable TLS file), not
    /// when etcd is down: the server keeps serving and its next register
    /// attempt tries again.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdRegistry, Error> {
        let urls = options.endpoint_urls()?;
        let connect = connect_options(&options)?;
        // Without credentials this does no I/O: it only sets up the channel.
        let client = Client::connect(&urls, Some(connect))
            .await
            .map_err(|e| Error::Invalid(format!("etcd options: {}", describe(&e))))?;
        let clients = Clients {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            lease: client.lease_client(),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        };
        let login_pending = options.username.is_some();
        let registry = EtcdRegistry {
            inner: Arc::new(Inner {
                decoder: Arc::new(Decoder::new(options.max_value_bytes)),
                urls,
                client: Mutex::new(client),
                clients,
                login_pending: Mutex::new(login_pending),
                nodes: StdMutex::new(HashMap::new()),
                reachability: Arc::default(),
                options,
            }),
        };
        if login_pending {
            let deadline = Instant::now() + registry.inner.options.request_timeout;
            if let Err(e) = registry.inner.login(deadline).await {
                tracing::warn!(
                    "Registry [etcd] cannot log in to {} yet ({e}); will retry",
                    registry.inner.urls.join(",")
                );
            }
        }
        Ok(registry)
    }

    /// How long etcd has been unreachable, as far as this registry knows (an
    /// operation found no endpoint answering, or a watch stream broke);
    /// `None` while it answers.
    pub fn unreachable_for(&self) -> Option<Duration> {
        self.inner.reachability.since().map(|(for_, _)| for_)
    }

    /// The endpoint URLs this registry dials.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.urls
    }

    /// The options this registry was made with.
    pub fn options(&self) -> &EtcdOptions {
        &self.inner.options
    }

    /// How many bad entries (or bad nodes inside an entry) were skipped while
    /// reading, counting each read.
    pub fn skipped_entries(&self) -> u64 {
        self.inner.decoder.skipped()
    }

    fn slot(&self, key: &str) -> Arc<Mutex<NodeState>> {
        let mut nodes = self
            .inner
            .nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        nodes.entry(key.to_string()).or_default().clone()
    }

    async fn register_node(
        &self,
        service: &Service,
        node: &Node,
        ttl: Option<i64>,
    ) -> Result<(), Error> {
        let what = format!("register {} node {}", service.name, node.id);
        let key = node_key(&service.name, &node.id);
        let value = serde_json::to_vec(&service.for_node(node))
            .map_err(|e| Error::Invalid(format!("{what}: cannot encode: {e}")))?;
        if value.len() > self.inner.options.max_value_bytes {
            return Err(Error::Invalid(format!(
                "{what}: entry of {} bytes exceeds the {}-byte limit readers accept",
                value.len(),
                self.inner.options.max_value_bytes
            )));
        }
        let slot = self.slot(&key);
        let mut state = slot.lock().await;
        let unchanged = state.registered && state.value == value && state.ttl == ttl;
        if !unchanged {
            return self.put_fresh(&what, &key, value, ttl, &mut state).await;
        }

        // A heartbeat: refresh the lease, and put the key back if it is gone.
        if state.lease != 0 {
            match self.inner.keep_alive_once(&what, state.lease).await {
                Ok(()) => {}
                Err(Failure::LeaseLost) => {
                    tracing::warn!(
                        "Registry [etcd] lease of {key} was lost (etcd restarted, wiped or \
                         unreachable longer than the TTL); registering again"
                    );
                    return self.put_fresh(&what, &key, value, ttl, &mut state).await;
                }
                Err(failure) => return Err(self.inner.error(&what, failure)),
            }
        }
        let lease = state.lease;
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, value.clone()),
                Compare::lease(key.clone(), CompareOp::Equal, lease),
            ])
            .or_else([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let answer = self
            .inner
            .call(&what, |mut c| {
                let txn = txn.clone();
                async move { c.kv.txn(txn).await }
            })
            .await;
        match answer {
            Ok(response) => {
                if !response.succeeded() {
                    tracing::info!("Registry [etcd] {key} had disappeared or changed; put it back");
                }
                Ok(())
            }
            Err(Failure::LeaseLost) => {
                tracing::warn!("Registry [etcd] lease of {key} was lost; registering again");
                self.put_fresh(&what, &key, value, ttl, &mut state).await
            }
            Err(failure) => Err(self.inner.error(&what, failure)),
        }
    }

    /// Puts the node's entry on a new lease (or none), then revokes the
    /// previous lease.
    async fn put_fresh(
        &self,
        what: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<i64>,
        state: &mut NodeState,
    ) -> Result<(), Error> {
        let previous = state.lease;
        state.registered = false;
        let mut attempt = 0;
        let lease = loop {
            attempt += 1;
            let lease = match ttl {
                Some(ttl) => self
                    .inner
                    .grant(what, ttl)
                    .await
                    .map_err(|f| self.inner.error(what, f))?,
                None => 0,
            };
            let put = self
                .inner
                .call(what, |mut c| {
                    let (key, value) = (key.to_string(), value.clone());
                    async move {
                        c.kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                            .await
                    }
                })
                .await;
            match put {
                Ok(_) => break lease,
                // The new lease vanished before the put: etcd restarted in
                // between. Once more, then give up until the next heartbeat.
                Err(Failure::LeaseLost) if attempt < 2 => continue,
                Err(failure) => return Err(self.inner.error(what, failure)),
            }
        };
        if previous != 0 && previous != lease {
            self.inner.revoke(previous).await;
        }
        *state = NodeState {
            registered: true,
            value,
            ttl,
            lease,
        };
        Ok(())
    }
}

impl Inner {
    /// Runs `op` until it succeeds, fails for good, or the request timeout
    /// runs out; transient failures (an endpoint down, no leader yet) are
    /// retried with a short backoff, which lets the client's balancer move on
    /// to another endpoint.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Failure>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_within(what, self.options.request_timeout, op)
            .await
    }

    /// [`call`](Self::call) within `timeout` instead of the request timeout;
    /// records whether etcd answered.
    async fn call_within<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let result = self.try_within(what, timeout, op).await;
        match &result {
            Err(failure @ Failure::Unavailable { .. }) => {
                self.reachability.down(self.describe_failure(failure))
            }
            // Any answer, even a refusal, means etcd is there.
            _ => self.reachability.up(),
        }
        result
    }

    async fn try_within<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut pause = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
        let mut attempts = 0;
        let mut last: Option<String> = None;
        let mut patience = (timeout / 4).max(MIN_ATTEMPT_TIMEOUT);
        loop {
            attempts += 1;
            let attempt = async {
                self.login(deadline).await?;
                op(self.clients.clone()).await
            };
            let attempt_deadline = (Instant::now() + patience).min(deadline);
            let outcome = tokio::time::timeout_at(attempt_deadline, attempt).await;
            let description = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if is_lease_lost(&e) => return Err(Failure::LeaseLost),
                Ok(Err(e)) if !is_transient(&e) => return Err(Failure::Etcd(e)),
                Ok(Err(e)) => describe(&e),
                Err(_) if attempt_deadline < deadline => {
                    // A request stuck on a member that lost its leader (a
                    // proposal dropped in an election) is tried afresh.
                    patience *= 2;
                    format!("no answer within {:.1}s", patience.as_secs_f64() / 2.0)
                }
                Err(_) => {
                    return Err(Failure::Unavailable {
                        attempts,
                        elapsed: started.elapsed(),
                        last: last.or_else(|| Some("no answer".into())),
                    });
                }
            };
            tracing::debug!(attempt = attempts, "Registry [etcd] {what}: {description}");
            last = Some(description);
            let wait = pause.next_delay();
            if Instant::now() + wait >= deadline {
                return Err(Failure::Unavailable {
                    attempts,
                    elapsed: started.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Logs in if credentials are set and not yet accepted.
    async fn login(&self, deadline: Instant) -> Result<(), etcd_client::Error> {
        let mut pending = self.login_pending.lock().await;
        if !*pending {
            return Ok(());
        }
        let (Some(user), Some(password)) = (&self.options.username, &self.options.password) else {
            *pending = false;
            return Ok(());
        };
        let mut client = self.client.lock().await;
        let login = client.update_user(Some((user.clone(), password.clone())));
        match tokio::time::timeout_at(deadline, login).await {
            Ok(Ok(())) => {
                *pending = false;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(etcd_client::Error::GRpcStatus(
                tonic::Status::deadline_exceeded("login timed out"),
            )),
        }
    }

    async fn grant(&self, what: &str, ttl: i64) -> Result<i64, Failure> {
        self.call(what, |mut c| async move { c.lease.grant(ttl, None).await })
            .await
            .map(|response| response.id())
    }

    /// One keep-alive round trip for `lease`.
    async fn keep_alive_once(&self, what: &str, lease: i64) -> Result<(), Failure> {
        self.call(what, |mut c| async move {
            // The client reads the first answer and reports a lease that is
            // gone; dropping the handles closes the stream.
            let (_keeper, _stream) = c.lease.keep_alive(lease).await?;
            Ok(())
        })
        .await
    }

    /// Revokes a lease we no longer use; failure only delays its expiry.
    async fn revoke(&self, lease: i64) {
        let revoked = self
            .call("revoke lease", |mut c| async move {
                c.lease.revoke(lease).await
            })
            .await;
        match revoked {
            Ok(_) | Err(Failure::LeaseLost) => {}
            Err(failure) => tracing::debug!(
                lease,
                "Registry [etcd] could not revoke an old lease ({}); it will expire",
                self.describe_failure(&failure)
            ),
        }
    }

    /// One clear line: what failed, where, why, and what to check.
    pub(crate) fn error(&self, what: &str, failure: Failure) -> Error {
        let endpoints = self.urls.join(",");
        match failure {
            Failure::Unavailable { .. } => Error::Unavailable {
                registry: NAME.to_string(),
                detail: format!(
                    "{what}: {}; check that etcd is running there and that \
                     --registry_address is right",
                    self.describe_failure(&failure)
                ),
            },
            Failure::LeaseLost | Failure::Etcd(_) => Error::Backend {
                registry: NAME.to_string(),
                source: format!(
                    "{what}: etcd at {endpoints} refused: {}",
                    self.describe_failure(&failure)
                )
                .into(),
            },
        }
    }

    fn describe_failure(&self, failure: &Failure) -> String {
        match failure {
            Failure::Etcd(e) => describe(e),
            Failure::LeaseLost => "the lease is gone".to_string(),
            Failure::Unavailable {
                attempts,
                elapsed,
                last,
            } => {
                let plural = if *attempts == 1 { "" } else { "s" };
                let cause = last.as_deref().unwrap_or("no answer");
                format!(
                    "could not reach etcd at {} ({attempts} attempt{plural} in {:.1}s, \
                     last error: {cause})",
                    self.urls.join(","),
                    elapsed.as_secs_f64()
                )
            }
        }
    }
}

#[async_trait::async_trait]
impl Registry for EtcdRegistry {
    fn name(&self) -> &str {
        NAME
    }

    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        validate(service)?;
        check_registrable(service)?;
        let ttl = options.ttl.map(ttl_seconds);
        for node in &service.nodes {
            self.register_node(service, node, ttl).await?;
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        for node in service.nodes.iter().filter(|n| !n.id.is_empty()) {
            let what = format!("deregister {} node {}", service.name, node.id);
            let key = node_key(&service.name, &node.id);
            let slot = self.slot(&key);
            let mut state = slot.lock().await;
            let lease = state.lease;
            // etcd already unreachable (renewals failing, a watch broken):
            // one short try, so that a stopping server does not wait the
            // whole request timeout. The key goes with its lease anyway.
            let known_down = self.inner.reachability.since();
            let timeout = match &known_down {
                Some(_) => DEREGISTER_WHEN_UNREACHABLE.min(self.inner.options.request_timeout),
                None => self.inner.options.request_timeout,
            };
            self.inner
                .call_within(&what, timeout, |mut c| {
                    let key = key.clone();
                    async move { c.kv.delete(key, None).await }
                })
                .await
                .map_err(|f| match (&known_down, &f) {
                    (Some((for_, reason)), Failure::Unavailable { elapsed, .. }) => {
                        Error::Unavailable {
                            registry: NAME.to_string(),
                            detail: format!(
                                "{what}: etcd unreachable for {:.1}s ({reason}); gave up after \
                                 {:.1}s, the node stays listed until its lease (the registration \
                                 TTL) expires",
                                for_.as_secs_f64(),
                                elapsed.as_secs_f64()
                            ),
                        }
                    }
                    _ => self.inner.error(&what, f),
                })?;
            if lease != 0 {
                self.inner.revoke(lease).await;
            }
            *state = NodeState::default();
            drop(state);
            let mut nodes = self
                .inner
                .nodes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if nodes.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                nodes.remove(&key);
            }
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let what = format!("get service {name}");
        let prefix = service_prefix(name);
        let response = self
            .inner
            .call(&what, |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.kv.get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(|f| self.inner.error(&what, f))?;
        let services: Vec<Service> = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                self.inner
                    .decoder
                    .decode(kv.key(), kv.value(), kv.mod_revision(), Some(name))
            })
            .collect();
        if services.is_empty() {
            return Err(Error::NotFound(name.to_string()));
        }
        Ok(group_by_version(services))
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.list_services_with(Detail::Full).await
    }

    async fn list_services_with(&self, detail: Detail) -> Result<Vec<Service>, Error> {
        // In pages of the same revision (one consistent snapshot): neither
        // etcd nor this process holds every entry in one message, so a
        // listing of thousands of nodes costs its memory briefly, a page at
        // a time (a compaction between pages fails the listing; the caller
        // lists again).
        let what = "list services";
        let end = prefix_end(PREFIX.as_bytes());
        let mut start = PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        let mut services = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let response = self
                .inner
                .call(what, |mut c| {
                    let (start, end) = (start.clone(), end.clone());
                    async move {
                        let mut options = GetOptions::new().with_range(end).with_limit(LIST_PAGE);
                        if revision > 0 {
                            options = options.with_revision(revision);
                        }
                        c.kv.get(start, Some(options)).await
                    }
                })
                .await
                .map_err(|f| self.inner.error(what, f))?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let kvs = response.kvs();
            services.extend(kvs.iter().filter_map(|kv| {
                self.inner
                    .decoder
                    .decode_as(kv.key(), kv.value(), kv.mod_revision(), None, detail)
            }));
            match kvs.last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(group_by_version(services)),
            }
        }
        Err(Error::Unavailable {
            registry: "etcd".into(),
            detail: format!(
                "list services: more than {} entries",
                MAX_LIST_PAGES * LIST_PAGE as usize
            ),
        })
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        let prefix = crate::watch::prefix(options.service.as_deref());
        let what = format!("watch {prefix}");
        let stream = self
            .inner
            .call(&what, |c| crate::watch::open(c.watch, prefix.clone()))
            .await
            .map_err(|f| self.inner.error(&what, f))?;
        Ok(crate::watch::watcher(
            stream,
            options,
            prefix,
            self.inner.decoder.clone(),
            self.inner.reachability.clone(),
        ))
    }
}

/// Entries per page of a listing of every service.
const LIST_PAGE: i64 = 512;
/// A listing stops (and fails) after this many pages (5 million entries).
const MAX_LIST_PAGES: usize = 10_000;

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the key space.
    vec![0]
}

fn connect_options(options: &EtcdOptions) -> Result<ConnectOptions, Error> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(options.dial_timeout)
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        .with_keep_alive_while_idle(false)
        // A member cut off from the leader fails requests and cancels
        // watches instead of serving stale data.
        .with_require_leader(true);
    if options.username.is_some() {
        connect = connect.with_auto_token_refresh(true);
    }
    if options.username.is_some() != options.password.is_some() {
        return Err(Error::Invalid(
            "etcd username and password must be given together".into(),
        ));
    }
    if let Some(tls) = &options.tls {
        connect = with_tls(connect, tls)?;
    }
    Ok(connect)
}

#[cfg(feature = "tls")]
fn with_tls(connect: ConnectOptions, tls: &crate::EtcdTls) -> Result<ConnectOptions, Error> {
    use etcd_client::{Certificate, Identity, TlsOptions};

    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::Invalid(format!("etcd TLS {what} file {}: {e}", path.display())))
    };
    let mut config = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        config = config.ca_certificate(Certificate::from_pem(read("CA", ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read("certificate", cert)?,
                read("key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Invalid(
                "etcd TLS certificate and key must be given together".into(),
            ));
        }
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    Ok(connect.with_tls(config))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_: ConnectOptions, _: &crate::EtcdTls) -> Result<ConnectOptions, Error> {
    Err(Error::Invalid(
        "etcd TLS options given, but micro-registry-etcd was built without its `tls` feature"
            .into(),
    ))
}

/// Refuses what go-micro could not store the same way or readers would skip.
fn check_registrable(service: &Service) -> Result<(), Error> {
    let segment = |what: &str, name: &str| {
        let encoded = entry::encode(name);
        if encoded == "." || encoded == ".." {
            return Err(Error::Invalid(format!(
                "{what} {name:?} cannot be an etcd key segment"
            )));
        }
        Ok(())
    };
    segment("service name", &service.name)?;
    for node in &service.nodes {
        segment("node id", &node.id)?;
        entry::check_address(&node.address).map_err(|e| {
            Error::Invalid(format!(
                "service {} node {}: {e}; clients could not dial it",
                service.name, node.id
            ))
        })?;
    }
    Ok(())
}

/// etcd leases are whole seconds; round up so a node never expires early.
fn ttl_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
}

fn is_lease_lost(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

fn is_transient(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
                | Code::Aborted
                | Code::Internal
        ),
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_)
        | etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(60)), 60);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
    }

    #[test]
    fn registrable_checks_addresses_and_segments() {
        let good = Service::new("svc", "1").with_node(Node::new("svc-1", "127.0.0.1:80"));
        assert!(check_registrable(&good).is_ok());
        for bad in [
            Service::new("svc", "1").with_node(Node::new("svc-1", "")),
            Service::new("svc", "1").with_node(Node::new("svc-1", "127.0.0.1:0")),
            Service::new("..", "1").with_node(Node::new("svc-1", "127.0.0.1:80")),
            Service::new("svc", "1").with_node(Node::new(".", "127.0.0.1:80")),
        ] {
            assert!(
                matches!(check_registrable(&bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
