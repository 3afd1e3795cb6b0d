//! [`Resolution`]: a registry watch that never ends, as a sequence of
//! [`Update`]s.
//!
//! Everything that follows the registry (a client's node set, the gateway's
//! catalog, a server watching its own node) needs the same loop: watch, then
//! list (so no change between the two is missed), apply events, and when the
//! watch fails or ends, wait a [`Backoff`] and do it all again. A
//! `Resolution` is that loop, once. Its consumer sees:
//!
//! - [`Update::Reset`]: the whole current state, after every (re)listing;
//! - [`Update::Add`] / [`Update::Remove`]: nodes that came or went;
//! - [`Update::Unavailable`]: the registry could not be asked; the last state
//!   still holds and the resolution keeps trying.
//!
//! After an outage, nodes the fresh listing lacks are kept for a grace period
//! ([`ResolveOptions::grace`]): services register again within about a
//! second of the registry coming back, and dropping them meanwhile would
//! leave callers with nothing. They are removed (an `Update::Remove`) if they
//! have not come back when it lapses.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use micro_registry::memory::MemoryRegistry;
//! use micro_registry::{Node, RegisterOptions, Registry, Resolution, ResolveOptions, Service, Update};
//!
//! let registry = Arc::new(MemoryRegistry::new());
//! let mut resolution = Resolution::service(registry.clone(), "greeter", ResolveOptions::default());
//! assert_eq!(resolution.next().await, Update::Reset(vec![]));
//!
//! let service = Service::new("greeter", "1").with_node(Node::new("greeter-1", "127.0.0.1:4242"));
//! registry.register(&service, RegisterOptions::default()).await.unwrap();
//! match resolution.next().await {
//!     Update::Add(added) => assert_eq!(added.nodes[0].id, "greeter-1"),
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Action, Backoff, Detail, Error, Node, Service, SharedRegistry, WatchOptions, Watcher};

/// A change in what a [`Resolution`] follows.
#[derive(Debug)]
pub enum Update {
    /// Everything there is now (one [`Service`] per name and version; for a
    /// single service, empty when it has no nodes). Replaces all earlier state.
    Reset(Vec<Service>),
    /// These nodes of `service` appeared or changed.
    Add(Service),
    /// These nodes of `service` are gone.
    Remove(Service),
    /// The registry could not be watched or listed; the state is unchanged
    /// and the resolution tries again after a backoff.
    Unavailable(Error),
}

impl PartialEq for Update {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Update::Reset(a), Update::Reset(b)) => a == b,
            (Update::Add(a), Update::Add(b)) | (Update::Remove(a), Update::Remove(b)) => a == b,
            (Update::Unavailable(a), Update::Unavailable(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

/// How a [`Resolution`] reconnects and heals.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolveOptions {
    /// Wait between reconnects while the registry fails.
    pub backoff: Backoff,
    /// After an outage, how long nodes missing from the fresh listing are
    /// kept. `None`: a listing is taken as it is.
    pub grace: Option<Duration>,
    /// List again this often even when the watch is healthy, to heal events a
    /// backend may have dropped silently. `None`: only after a failure.
    pub refresh: Option<Duration>,
    /// How much of each service the listings and events must describe
    /// (following every service for names only: [`Detail::Nodes`]).
    pub detail: Detail,
}

impl ResolveOptions {
    /// Reconnect after 100 ms, doubling up to 10 s (10 % jitter).
    pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
    /// Nodes missing from a listing after an outage stay this long.
    pub const GRACE: Duration = Duration::from_secs(10);
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            backoff: Backoff::new(Self::BACKOFF_MIN, Self::BACKOFF_MAX).with_jitter(0.1),
            grace: Some(Self::GRACE),
            refresh: None,
            detail: Detail::Full,
        }
    }
}

/// One node as the resolution last saw it.
#[derive(Clone, Debug)]
struct Known {
    /// Its service (name, version, metadata, endpoints), without nodes:
    /// shared by the nodes of one listed service (endpoint descriptions are
    /// most of an entry, and a resolution of every service holds them all).
    service: Arc<Service>,
    node: Node,
    /// Kept past a listing that lacked it, until then.
    stale_until: Option<Instant>,
}

/// A recovering registry watch; see the module docs. Call
/// [`next`](Resolution::next) in a loop; dropping it stops the watch.
pub struct Resolution {
    registry: SharedRegistry,
    /// One service, or every service (`None`).
    target: Option<String>,
    options: ResolveOptions,
    watcher: Option<Watcher>,
    /// When the current watch started (to reset the backoff once it held).
    connected_at: Option<Instant>,
    /// Whether a listing has succeeded before (grace applies only after).
    listed: bool,
    /// A reconnect must wait a backoff first.
    failed: bool,
    /// The registry could not be asked at the last attempt, and that was
    /// warned about: one warning an outage, then debug until it answers.
    outage: bool,
    /// (service, node id) → node.
    known: BTreeMap<(String, String), Known>,
    /// How many of `known` are stale (kept past a listing): while none are,
    /// an event costs no scan of `known` (it holds every node of every
    /// service when following them all).
    stale: usize,
    queued: VecDeque<Update>,
}

impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolution")
            .field("registry", &self.registry.name())
            .field("target", &self.target)
            .field("watching", &self.watcher.is_some())
            .field("nodes", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Resolution {
    /// Follows the nodes of one service.
    pub fn service(registry: SharedRegistry, name: &str, options: ResolveOptions) -> Self {
        Self::new(registry, Some(name.to_string()), options)
    }

    /// Follows every service (listings may carry no nodes: some backends list
    /// names only).
    pub fn all(registry: SharedRegistry, options: ResolveOptions) -> Self {
        Self::new(registry, None, options)
    }

    fn new(registry: SharedRegistry, target: Option<String>, options: ResolveOptions) -> Self {
        Resolution {
            registry,
            target,
            options,
            watcher: None,
            connected_at: None,
            listed: false,
            failed: false,
            outage: false,
            known: BTreeMap::new(),
            stale: 0,
            queued: VecDeque::new(),
        }
    }

    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// Whether any node of `service` is known now (in the last listing or
    /// added since, stale ones included). Names a backend listed without
    /// nodes have none here.
    pub fn has_nodes(&self, service: &str) -> bool {
        self.known
            .range((service.to_string(), String::new())..)
            .next()
            .is_some_and(|((name, _), _)| name == service)
    }

    /// The next update. Not cancel-safe: call it from one loop, not from a
    /// `select!` that may drop it.
    pub async fn next(&mut self) -> Update {
        loop {
            if let Some(update) = self.queued.pop_front() {
                return update;
            }
            let Some(watcher) = self.watcher.as_mut() else {
                if self.failed {
                    self.options.backoff.wait().await;
                }
                return self.connect().await;
            };
            let stale = if self.stale == 0 {
                None
            } else {
                self.known.values().filter_map(|k| k.stale_until).min()
            };
            let refresh = self
                .options
                .refresh
                .zip(self.connected_at)
                .map(|(every, since)| since + every);
            let wake = match (stale, refresh) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let event = match wake {
                Some(at) => tokio::select! {
                    event = watcher.next() => Some(event),
                    () = tokio::time::sleep_until(at) => None,
                },
                None => Some(watcher.next().await),
            };
            match event {
                None => {
                    if refresh.is_some_and(|at| at <= Instant::now()) {
                        // A healthy watch: list again at once, no grace
                        // needed (nothing was down).
                        self.watcher = None;
                        self.failed = false;
                        return self.relist_fresh().await;
                    }
                    self.expire_stale();
                }
                Some(Some(Ok(event))) => {
                    if let Some(update) = self.apply(event.action, event.service) {
                        return update;
                    }
                }
                Some(Some(Err(e))) => {
                    tracing::debug!(target = ?self.target, "registry watch interrupted, listing again: {e}");
                    self.lost_watch();
                }
                Some(None) => {
                    tracing::debug!(target = ?self.target, "registry watch ended, listing again");
                    self.lost_watch();
                }
            }
        }
    }

    fn lost_watch(&mut self) {
        self.watcher = None;
        self.failed = true;
        // A watch that held a while was a success: start the backoff over.
        if self
            .connected_at
            .is_some_and(|at| at.elapsed() >= self.options.backoff.max())
        {
            self.options.backoff.reset();
        }
        self.connected_at = None;
    }

    /// Watch, then list: the watch is open before the listing is taken, so
    /// no change between the two is missed.
    async fn connect(&mut self) -> Update {
        let watcher = self.registry.watch(self.watch_options()).await;
        let listing = list(&self.registry, self.target.as_deref(), self.options.detail).await;
        match (watcher, listing) {
            (Ok(watcher), Ok(services)) => {
                if std::mem::take(&mut self.outage) {
                    tracing::info!(registry = self.registry.name(), target = ?self.target, "registry answers again; watching");
                }
                self.watcher = Some(watcher);
                self.connected_at = Some(Instant::now());
                self.failed = false;
                self.reset(services)
            }
            (Err(e), Ok(services)) => {
                // A fresh listing is still worth having; the watch is tried
                // again after a backoff.
                self.warn_once(format_args!("registry watch failed: {e}"));
                self.failed = true;
                self.queued.push_back(Update::Unavailable(e));
                self.reset(services)
            }
            (_, Err(e)) => {
                self.warn_once(format_args!(
                    "registry lookup failed, keeping the nodes known: {e}"
                ));
                self.failed = true;
                Update::Unavailable(e)
            }
        }
    }

    /// The first failure of an outage is a warning; the retries that follow
    /// (every backoff) are debug lines, and the recovery one info line.
    fn warn_once(&mut self, what: fmt::Arguments<'_>) {
        if std::mem::replace(&mut self.outage, true) {
            tracing::debug!(registry = self.registry.name(), target = ?self.target, "{what} (still)");
        } else {
            tracing::warn!(registry = self.registry.name(), target = ?self.target, "{what}");
        }
    }

    /// A periodic re-listing under a healthy watch.
    async fn relist_fresh(&mut self) -> Update {
        let grace = self.options.grace.take();
        let update = self.connect().await;
        self.options.grace = grace;
        update
    }

    fn watch_options(&self) -> WatchOptions {
        WatchOptions {
            service: self.target.clone(),
            detail: self.options.detail,
        }
    }

    /// Replaces the state with a listing (keeping missing nodes for the grace
    /// period after an outage) and returns it as a `Reset`.
    fn reset(&mut self, services: Vec<Service>) -> Update {
        let now = Instant::now();
        let grace = self.options.grace.filter(|_| self.listed);
        self.listed = true;
        let mut next: BTreeMap<(String, String), Known> = BTreeMap::new();
        let mut out: Vec<Service> = Vec::new();
        let mut stale = 0;
        for service in services {
            let shared = Arc::new(without_nodes(&service));
            for node in &service.nodes {
                next.insert(
                    (service.name.clone(), node.id.clone()),
                    Known {
                        service: shared.clone(),
                        node: node.clone(),
                        stale_until: None,
                    },
                );
            }
            out.push(service);
        }
        if let Some(grace) = grace {
            for (key, known) in std::mem::take(&mut self.known) {
                if next.contains_key(&key) {
                    continue;
                }
                let until = known.stale_until.unwrap_or(now + grace);
                if until <= now {
                    continue;
                }
                tracing::debug!(service = %key.0, node = %key.1, "node missing from the listing after an outage; kept for {:?}", until - now);
                push_node(&mut out, &known.service, known.node.clone());
                stale += 1;
                next.insert(
                    key,
                    Known {
                        stale_until: Some(until),
                        ..known
                    },
                );
            }
        }
        self.known = next;
        self.stale = stale;
        Update::Reset(out)
    }

    fn apply(&mut self, action: Action, service: Service) -> Option<Update> {
        if service.nodes.is_empty() && action != Action::Delete {
            // Some backends report a service without nodes: nothing to add.
            return Some(Update::Add(service));
        }
        match action {
            Action::Create | Action::Update => {
                let shared = Arc::new(without_nodes(&service));
                for node in &service.nodes {
                    let replaced = self.known.insert(
                        (service.name.clone(), node.id.clone()),
                        Known {
                            service: shared.clone(),
                            node: node.clone(),
                            stale_until: None,
                        },
                    );
                    self.forget_stale(replaced);
                }
                Some(Update::Add(service))
            }
            Action::Delete => {
                for node in &service.nodes {
                    let removed = self.known.remove(&(service.name.clone(), node.id.clone()));
                    self.forget_stale(removed);
                }
                Some(Update::Remove(service))
            }
        }
    }

    /// Counts out a node that left `known`, if it was stale.
    fn forget_stale(&mut self, left: Option<Known>) {
        if left.is_some_and(|k| k.stale_until.is_some()) {
            self.stale -= 1;
        }
    }

    /// Queues a `Remove` for the stale nodes whose grace is over.
    fn expire_stale(&mut self) {
        let now = Instant::now();
        let expired: Vec<(String, String)> = self
            .known
            .iter()
            .filter(|(_, k)| k.stale_until.is_some_and(|t| t <= now))
            .map(|(key, _)| key.clone())
            .collect();
        let mut removed: Vec<Service> = Vec::new();
        for key in expired {
            if let Some(known) = self.known.remove(&key) {
                self.stale -= 1;
                tracing::debug!(service = %key.0, node = %key.1, "node did not come back after the registry outage; dropped");
                push_node(&mut removed, &known.service, known.node);
            }
        }
        self.queued.extend(removed.into_iter().map(Update::Remove));
    }
}

/// The nodes of `target`, or every service.
async fn list(
    registry: &SharedRegistry,
    target: Option<&str>,
    detail: Detail,
) -> Result<Vec<Service>, Error> {
    match target {
        Some(name) => match registry.get_service(name).await {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            other => other,
        },
        None => registry.list_services_with(detail).await,
    }
}

fn without_nodes(service: &Service) -> Service {
    Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone(),
        endpoints: service.endpoints.clone(),
        nodes: Vec::new(),
    }
}

/// Adds `node` to the entry of its service and version in `out`.
fn push_node(out: &mut Vec<Service>, service: &Service, node: Node) {
    match out
        .iter_mut()
        .find(|s| s.name == service.name && s.version == service.version)
    {
        Some(existing) => existing.nodes.push(node),
        None => {
            let mut service = without_nodes(service);
            service.nodes.push(node);
            out.push(service);
        }
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::memory::MemoryRegistry;
    use crate::{RegisterOptions, Registry};

    /// The in-memory registry, with an outage switch: while down, watch and
    /// list fail; going down also ends every open watch.
    #[derive(Debug)]
    struct Outage {
        registry: MemoryRegistry,
        down: tokio::sync::watch::Sender<bool>,
    }

    impl Default for Outage {
        fn default() -> Self {
            Outage {
                registry: MemoryRegistry::new(),
                down: tokio::sync::watch::channel(false).0,
            }
        }
    }

    impl Outage {
        fn set_down(&self, down: bool) {
            self.down.send_replace(down);
        }

        fn check(&self) -> Result<(), Error> {
            if *self.down.borrow() {
                return Err(Error::Unavailable {
                    registry: "memory".into(),
                    detail: "down for the test".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Registry for Outage {
        fn name(&self) -> &str {
            "outage"
        }
        async fn register(&self, s: &Service, o: RegisterOptions) -> Result<(), Error> {
            self.registry.register(s, o).await
        }
        async fn deregister(&self, s: &Service) -> Result<(), Error> {
            self.registry.deregister(s).await
        }
        async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
            self.check()?;
            self.registry.get_service(name).await
        }
        async fn list_services(&self) -> Result<Vec<Service>, Error> {
            self.check()?;
            self.registry.list_services().await
        }
        async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
            self.check()?;
            let inner = self.registry.watch(options).await?;
            let down = self.down.subscribe();
            let stream =
                futures::stream::unfold((inner, down), |(mut inner, mut down)| async move {
                    // An outage ends the watch before it delivers anything
                    // more, as a broken connection does.
                    let item = tokio::select! {
                        biased;
                        _ = down.wait_for(|d| *d) => None,
                        item = inner.next() => item,
                    };
                    item.map(|i| (i, (inner, down)))
                });
            Ok(Watcher::new(stream))
        }
    }

    fn node(id: &str) -> Service {
        Service::new("svc", "1").with_node(Node::new(id, "127.0.0.1:1"))
    }

    fn ids(update: &Update) -> Vec<String> {
        let services = match update {
            Update::Reset(s) => s.clone(),
            Update::Add(s) | Update::Remove(s) => vec![s.clone()],
            Update::Unavailable(_) => Vec::new(),
        };
        let mut ids: Vec<String> = services
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn lists_then_follows_the_watch() {
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .register(&node("a"), RegisterOptions::default())
            .await
            .expect("register");
        let mut r = Resolution::service(registry.clone(), "svc", ResolveOptions::default());
        let first = r.next().await;
        assert!(matches!(first, Update::Reset(_)), "{first:?}");
        assert_eq!(ids(&first), ["a"]);
        registry
            .register(&node("b"), RegisterOptions::default())
            .await
            .expect("register");
        let added = r.next().await;
        assert!(
            matches!(added, Update::Add(_)) && ids(&added) == ["b"],
            "{added:?}"
        );
        registry.deregister(&node("a")).await.expect("deregister");
        let removed = r.next().await;
        assert!(
            matches!(removed, Update::Remove(_)) && ids(&removed) == ["a"],
            "{removed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_lapse_is_a_remove() {
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .register(
                &node("a"),
                RegisterOptions::with_ttl(Duration::from_secs(3)),
            )
            .await
            .expect("register");
        let mut r = Resolution::service(registry.clone(), "svc", ResolveOptions::default());
        assert_eq!(ids(&r.next().await), ["a"]);
        let start = Instant::now();
        let removed = r.next().await;
        assert!(matches!(removed, Update::Remove(_)), "{removed:?}");
        let after = start.elapsed();
        assert!(
            after >= Duration::from_secs(3) && after < Duration::from_secs(4),
            "{after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_backoff_and_keeps_missing_nodes_for_the_grace() {
        let outage = Arc::new(Outage::default());
        outage
            .register(&node("a"), RegisterOptions::default())
            .await
            .expect("register");
        outage
            .register(&node("b"), RegisterOptions::default())
            .await
            .expect("register");
        let options = ResolveOptions {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            grace: Some(Duration::from_secs(10)),
            refresh: None,
            ..ResolveOptions::default()
        };
        let mut r = Resolution::service(outage.clone(), "svc", options);
        assert_eq!(ids(&r.next().await), ["a", "b"]);

        // The registry goes down and loses "b" meanwhile.
        outage.set_down(true);
        outage
            .registry
            .deregister(&node("b"))
            .await
            .expect("deregister");
        let start = Instant::now();
        // The watch breaks; reconnects fail after 100 ms, then 200 and
        // 400 ms more.
        for expected in [100, 300, 700] {
            let update = r.next().await;
            assert!(matches!(update, Update::Unavailable(_)), "{update:?}");
            assert_eq!(start.elapsed(), Duration::from_millis(expected));
        }
        outage.set_down(false);
        // Next try 800 ms later: "b" is not listed but kept for the grace.
        let reset = r.next().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert!(matches!(reset, Update::Reset(_)), "{reset:?}");
        assert_eq!(ids(&reset), ["a", "b"]);
        // It did not come back: removed when the grace lapses.
        let removed = r.next().await;
        assert!(
            matches!(removed, Update::Remove(_)) && ids(&removed) == ["b"],
            "{removed:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(11_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_back_within_the_grace_stays() {
        let outage = Arc::new(Outage::default());
        outage
            .register(&node("a"), RegisterOptions::default())
            .await
            .expect("register");
        let options = ResolveOptions {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            grace: Some(Duration::from_secs(10)),
            refresh: None,
            ..ResolveOptions::default()
        };
        let mut r = Resolution::service(outage.clone(), "svc", options);
        assert_eq!(ids(&r.next().await), ["a"]);
        outage.set_down(true);
        outage
            .registry
            .deregister(&node("a"))
            .await
            .expect("deregister");
        assert!(matches!(r.next().await, Update::Unavailable(_)));
        outage.set_down(false);
        assert_eq!(ids(&r.next().await), ["a"], "kept for the grace");
        outage
            .register(&node("a"), RegisterOptions::default())
            .await
            .expect("register again");
        assert!(matches!(r.next().await, Update::Add(_)));
        // No Remove at the end of the grace: the next thing is a real change.
        let later = tokio::time::timeout(Duration::from_secs(30), r.next()).await;
        assert!(later.is_err(), "unexpected {later:?}");
    }

    /// Events cost no scan of every known node unless some are stale: the
    /// count of stale nodes follows them in and out, and a stale node left
    /// over still expires.
    #[tokio::test(start_paused = true)]
    async fn stale_nodes_are_counted_in_and_out() {
        let outage = Arc::new(Outage::default());
        for id in ["a", "b", "c"] {
            outage
                .register(&node(id), RegisterOptions::default())
                .await
                .expect("register");
        }
        let options = ResolveOptions {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            grace: Some(Duration::from_secs(10)),
            refresh: None,
            ..ResolveOptions::default()
        };
        let mut r = Resolution::service(outage.clone(), "svc", options);
        assert_eq!(ids(&r.next().await), ["a", "b", "c"]);
        assert_eq!(r.stale, 0);
        // b and c vanish during an outage: kept, stale.
        outage.set_down(true);
        for id in ["b", "c"] {
            outage
                .registry
                .deregister(&node(id))
                .await
                .expect("deregister");
        }
        assert!(matches!(r.next().await, Update::Unavailable(_)));
        outage.set_down(false);
        assert_eq!(ids(&r.next().await), ["a", "b", "c"]);
        let start = Instant::now();
        assert_eq!(r.stale, 2);
        // b comes back: no longer stale.
        outage
            .register(&node("b"), RegisterOptions::default())
            .await
            .expect("register again");
        assert!(matches!(r.next().await, Update::Add(_)));
        assert_eq!(r.stale, 1);
        // a (never stale) goes: the count stays.
        outage.deregister(&node("a")).await.expect("deregister");
        assert!(matches!(r.next().await, Update::Remove(_)));
        assert_eq!(r.stale, 1);
        // c expires at the end of the grace.
        let removed = r.next().await;
        assert!(
            matches!(removed, Update::Remove(_)) && ids(&removed) == ["c"],
            "{removed:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(r.stale, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_listing_is_taken_as_it_is() {
        let outage = Arc::new(Outage::default());
        outage.set_down(true);
        let mut r = Resolution::service(outage.clone(), "svc", ResolveOptions::default());
        assert!(matches!(r.next().await, Update::Unavailable(_)));
        outage.set_down(false);
        assert_eq!(r.next().await, Update::Reset(vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_lists_again_under_a_healthy_watch() {
        let registry = Arc::new(MemoryRegistry::new());
        registry
            .register(&node("a"), RegisterOptions::default())
            .await
            .expect("register");
        let options = ResolveOptions {
            refresh: Some(Duration::from_secs(60)),
            ..ResolveOptions::default()
        };
        let mut r = Resolution::all(registry.clone(), options);
        assert!(matches!(r.next().await, Update::Reset(_)));
        let start = Instant::now();
        assert!(matches!(r.next().await, Update::Reset(_)));
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
