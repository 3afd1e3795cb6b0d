//! What this process knows about other processes' nodes.
//!
//! Fed by every response seen (announcements, answers to anyone's query,
//! goodbyes). A node is complete once its SRV, address and TXT are known; it
//! is reported (created, updated, deleted) only then. Each record expires by
//! its own TTL; at 80 % of a node's lifetime the service is queried again
//! (RFC 6762 §5.2), so a live node is refreshed and a silent one drops out
//! at 100 %. A goodbye (TTL 0) removes the node at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use micro_registry::{Action, Event, Node, Service};
use tokio::time::Instant;

use crate::txt::TxtInfo;
use crate::wire::{InstanceUpdate, format_address};

#[derive(Clone, Copy, Debug)]
struct Lifetime {
    expires: Instant,
    ttl: Duration,
}

impl Lifetime {
    fn new(now: Instant, ttl_secs: u32) -> Self {
        let ttl = Duration::from_secs(u64::from(ttl_secs));
        Lifetime {
            expires: now + ttl,
            ttl,
        }
    }

    fn refresh_at(&self) -> Instant {
        self.expires - self.ttl / 5
    }
}

#[derive(Debug)]
struct Remote {
    node_id: Option<String>,
    srv: Option<(u16, Lifetime)>,
    addr: Option<(IpAddr, Lifetime)>,
    txt: Option<(TxtInfo, Lifetime)>,
    /// The node as last reported to watchers, without its endpoints (the
    /// TXT holds them: one copy per node, not two).
    published: Option<Service>,
    refresh_sent: bool,
}

impl Remote {
    /// The node once its SRV, address and TXT are known, without endpoints.
    fn derive_bare(&self) -> Option<Service> {
        let id = self.node_id.as_ref()?;
        let (port, _) = self.srv.as_ref()?;
        let (ip, _) = self.addr.as_ref()?;
        let (txt, _) = self.txt.as_ref()?;
        Some(Service {
            name: txt.service.clone(),
            version: txt.version.clone(),
            metadata: Default::default(),
            endpoints: Vec::new(),
            nodes: vec![Node {
                id: id.clone(),
                address: format_address(*ip, *port),
                metadata: txt.metadata.clone(),
            }],
        })
    }

    /// `bare` with the endpoints of the TXT, when it is still known.
    fn with_endpoints(&self, mut bare: Service) -> Service {
        if let Some((txt, _)) = &self.txt {
            bare.endpoints = txt.endpoints.clone();
        }
        bare
    }

    /// The node as watchers and lookups see it, endpoints included.
    fn derive(&self) -> Option<Service> {
        self.derive_bare().map(|bare| self.with_endpoints(bare))
    }

    fn lifetimes(&self) -> impl Iterator<Item = &Lifetime> {
        self.srv
            .iter()
            .map(|(_, l)| l)
            .chain(self.addr.iter().map(|(_, l)| l))
            .chain(self.txt.iter().map(|(_, l)| l))
    }
}

/// The most remote instances kept: a flood of made-up names cannot grow the
/// cache without bound.
const MAX_INSTANCES: usize = 10_000;

/// Remote nodes and service names.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    instances: HashMap<String, Remote>,
    /// Names from `_services.micro.` answers, until they expire.
    service_names: HashMap<String, Instant>,
}

impl Cache {
    /// Applies what one message said about one instance.
    pub(crate) fn apply(&mut self, update: InstanceUpdate, now: Instant) -> Option<Event> {
        if update.goodbye {
            return self.remove(&update.key);
        }
        if self.instances.len() >= MAX_INSTANCES && !self.instances.contains_key(&update.key) {
            tracing::debug!("Registry [mdns] cache full, ignoring {}", update.key);
            return None;
        }
        let remote = self
            .instances
            .entry(update.key.clone())
            .or_insert_with(|| Remote {
                node_id: None,
                srv: None,
                addr: None,
                txt: None,
                published: None,
                refresh_sent: false,
            });
        if let Some((port, ttl)) = update.srv {
            remote.srv = Some((port, Lifetime::new(now, ttl)));
            remote.refresh_sent = false;
        }
        if let Some((ip, ttl)) = update.addr {
            remote.addr = Some((ip, Lifetime::new(now, ttl)));
        } else if let (Some(_), Some((ip, _))) = (update.srv, remote.addr) {
            // Same target, no address repeated: the address lives as long as the SRV.
            remote.addr = Some((ip, Lifetime::new(now, update.srv.map_or(0, |s| s.1))));
        }
        let mut txt_changed = false;
        if let Some((txt, ttl)) = update.txt {
            txt_changed = remote.txt.as_ref().is_none_or(|(known, _)| *known != txt);
            remote.txt = Some((txt, Lifetime::new(now, ttl)));
            remote.node_id = update.node_id;
            remote.refresh_sent = false;
        }
        let bare = remote.derive_bare()?;
        if !txt_changed && remote.published.as_ref() == Some(&bare) {
            return None;
        }
        let action = if remote.published.is_some() {
            Action::Update
        } else {
            Action::Create
        };
        remote.published = Some(bare.clone());
        Some(Event {
            action,
            service: remote.with_endpoints(bare),
        })
    }

    /// Forgets an instance; a delete event if it had been reported.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Event> {
        let remote = self.instances.remove(key)?;
        let service = remote.with_endpoints(remote.published.clone()?);
        // The service may be gone with it: let the list forget it too.
        let name = service.name.clone();
        if !self.has_service(&name) {
            self.service_names.remove(&name);
        }
        Some(Event {
            action: Action::Delete,
            service,
        })
    }

    /// Notes a service name from a `_services` answer.
    pub(crate) fn note_service(&mut self, name: String, ttl: u32, now: Instant) {
        if ttl == 0 {
            self.service_names.remove(&name);
        } else {
            self.service_names
                .insert(name, now + Duration::from_secs(u64::from(ttl)));
        }
    }

    /// Drops expired records. Returns delete events and the services whose
    /// nodes are due for a refresh query.
    pub(crate) fn expire(&mut self, now: Instant) -> (Vec<Event>, BTreeSet<String>) {
        let mut events = Vec::new();
        let mut refresh = BTreeSet::new();
        let mut gone = Vec::new();
        for (key, remote) in &mut self.instances {
            if remote.srv.as_ref().is_some_and(|(_, l)| l.expires <= now) {
                remote.srv = None;
            }
            if remote.addr.as_ref().is_some_and(|(_, l)| l.expires <= now) {
                remote.addr = None;
            }
            if remote.txt.as_ref().is_some_and(|(_, l)| l.expires <= now) {
                remote.txt = None;
            }
            if remote.derive_bare().is_none() {
                if let Some(bare) = remote.published.take() {
                    // Its endpoints too, while its TXT lives.
                    events.push(Event {
                        action: Action::Delete,
                        service: remote.with_endpoints(bare),
                    });
                }
                if remote.srv.is_none() && remote.txt.is_none() {
                    gone.push(key.clone());
                }
                continue;
            }
            let due = remote.lifetimes().map(Lifetime::refresh_at).min();
            if !remote.refresh_sent && due.is_some_and(|at| at <= now) {
                remote.refresh_sent = true;
                if let Some(service) = &remote.published {
                    refresh.insert(service.name.clone());
                }
            }
        }
        for key in gone {
            self.instances.remove(&key);
        }
        self.service_names.retain(|_, expires| *expires > now);
        (events, refresh)
    }

    /// The live nodes of `service`, one `Service` each.
    pub(crate) fn nodes(&self, service: &str) -> Vec<Service> {
        self.instances
            .values()
            .filter(|r| r.published.as_ref().is_some_and(|s| s.name == service))
            .filter_map(Remote::derive)
            .collect()
    }

    fn has_service(&self, service: &str) -> bool {
        self.instances
            .values()
            .filter_map(|r| r.published.as_ref())
            .any(|s| s.name == service)
    }

    /// Every service name known, with the versions of its live nodes
    /// (empty when only a `_services` answer named it).
    pub(crate) fn services(&self) -> BTreeMap<String, Vec<Service>> {
        let mut out: BTreeMap<String, Vec<Service>> = BTreeMap::new();
        for service in self
            .instances
            .values()
            .filter(|r| r.published.is_some())
            .filter_map(Remote::derive)
        {
            out.entry(service.name.clone()).or_default().push(service);
        }
        for name in self.service_names.keys() {
            out.entry(name.clone()).or_default();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::instance_name;

    fn update(id: &str, port: Option<u16>, txt_ttl: Option<u32>) -> InstanceUpdate {
        let (name, _) = instance_name(id, "svc").expect("name");
        InstanceUpdate {
            key: crate::wire::key(&name),
            name,
            node_id: txt_ttl.map(|_| id.to_string()),
            srv: port.map(|p| (p, 120)),
            addr: port.map(|_| ("127.0.0.1".parse().expect("ip"), 120)),
            txt: txt_ttl.map(|ttl| {
                (
                    TxtInfo {
                        service: "svc".into(),
                        version: "1".into(),
                        ..TxtInfo::default()
                    },
                    ttl,
                )
            }),
            goodbye: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle() {
        let mut cache = Cache::default();
        let now = Instant::now();
        // SRV alone is not a node yet.
        assert!(cache.apply(update("a", Some(1), None), now).is_none());
        let created = cache
            .apply(update("a", None, Some(120)), now)
            .expect("create");
        assert_eq!(created.action, Action::Create);
        assert_eq!(created.service.nodes[0].address, "127.0.0.1:1");
        // The same again: nothing new.
        assert!(cache.apply(update("a", Some(1), Some(120)), now).is_none());
        let updated = cache
            .apply(update("a", Some(2), Some(120)), now)
            .expect("update");
        assert_eq!(updated.action, Action::Update);
        assert_eq!(cache.nodes("svc").len(), 1);
        assert_eq!(cache.services().len(), 1);

        // Refresh due at 80 %, expiry at 100 %.
        let (events, refresh) = cache.expire(now + Duration::from_secs(97));
        assert!(events.is_empty());
        assert!(refresh.contains("svc"));
        let (_, refresh) = cache.expire(now + Duration::from_secs(100));
        assert!(refresh.is_empty(), "one refresh per lifetime");
        let (events, _) = cache.expire(now + Duration::from_secs(121));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, Action::Delete);
        assert!(cache.nodes("svc").is_empty());

        // Goodbye removes at once.
        cache.apply(update("b", Some(1), Some(120)), now);
        let mut bye = update("b", None, None);
        bye.goodbye = true;
        let deleted = cache.apply(bye, now).expect("delete");
        assert_eq!(deleted.action, Action::Delete);
        assert_eq!(deleted.service.nodes[0].id, "b");
        assert!(cache.services().is_empty());
    }

    fn with_endpoint(mut update: InstanceUpdate, endpoint: &str) -> InstanceUpdate {
        if let Some((txt, _)) = &mut update.txt {
            txt.endpoints = vec![micro_registry::Endpoint {
                name: endpoint.into(),
                ..Default::default()
            }];
        }
        update
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_are_reported_and_a_change_of_them_is_an_update() {
        let mut cache = Cache::default();
        let now = Instant::now();
        let first = with_endpoint(update("a", Some(1), Some(120)), "Say.Hello");
        let created = cache.apply(first.clone(), now).expect("create");
        assert_eq!(created.service.endpoints[0].name, "Say.Hello");
        assert_eq!(cache.nodes("svc")[0].endpoints[0].name, "Say.Hello");
        assert_eq!(cache.services()["svc"][0].endpoints[0].name, "Say.Hello");
        // The same TXT again: nothing new.
        assert!(cache.apply(first, now).is_none());
        // Only the endpoints changed: an update that carries the new ones.
        let changed = with_endpoint(update("a", Some(1), Some(120)), "Say.Bye");
        let updated = cache.apply(changed, now).expect("update");
        assert_eq!(updated.action, Action::Update);
        assert_eq!(updated.service.endpoints[0].name, "Say.Bye");
        // A delete while the TXT is known names them too.
        let mut bye = update("a", None, None);
        bye.goodbye = true;
        let deleted = cache.apply(bye, now).expect("delete");
        assert_eq!(deleted.service.endpoints[0].name, "Say.Bye");
    }

    #[tokio::test(start_paused = true)]
    async fn service_names_expire() {
        let mut cache = Cache::default();
        let now = Instant::now();
        cache.note_service("listed".into(), 10, now);
        assert!(cache.services().contains_key("listed"));
        cache.expire(now + Duration::from_secs(11));
        assert!(!cache.services().contains_key("listed"));
    }
}
