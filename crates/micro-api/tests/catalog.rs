//! One rule for every registry: a service never seen registered is unknown
//! (404 at the gateway); one that was registered and has no live node now is
//! gone (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_api::catalog::{Catalog, Presence};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Error, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher};

const BUDGET: Duration = Duration::from_secs(2);

#[tokio::test(start_paused = true)]
async fn unknown_live_and_gone_services_are_told_apart() {
    let registry = Arc::new(MemoryRegistry::new());
    let service = Service::new("go.micro.api.greeter", "latest")
        .with_node(Node::new("greeter-1", "127.0.0.1:1"));
    registry
        .register(&service, RegisterOptions::default())
        .await
        .expect("register");
    let catalog = Catalog::spawn(registry.clone());
    assert_eq!(
        catalog.presence("go.micro.api.greeter", BUDGET).await,
        Presence::Live
    );
    assert_eq!(
        catalog.presence("go.micro.api.nobody", BUDGET).await,
        Presence::Unknown
    );

    registry.deregister(&service).await.expect("deregister");
    // The watch reports the delete; paused time runs the catalog's task.
    let mut presence = Presence::Live;
    for _ in 0..100 {
        presence = catalog.presence("go.micro.api.greeter", BUDGET).await;
        if presence != Presence::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(presence, Presence::Gone);
    assert_eq!(
        catalog.presence("go.micro.api.nobody", BUDGET).await,
        Presence::Unknown
    );

    // Back: live again.
    registry
        .register(&service, RegisterOptions::default())
        .await
        .expect("register again");
    for _ in 0..100 {
        presence = catalog.presence("go.micro.api.greeter", BUDGET).await;
        if presence == Presence::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(presence, Presence::Live);
}

/// The in-memory registry, counting lookups; its listings carry every node
/// (as etcd's do) or, with `names_only`, name the services without their
/// nodes (as mDNS's and the memory registry's do, like go-micro's).
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryRegistry,
    names_only: bool,
    lookups: AtomicUsize,
}

#[async_trait::async_trait]
impl Registry for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    async fn register(&self, s: &Service, o: RegisterOptions) -> Result<(), Error> {
        self.inner.register(s, o).await
    }
    async fn deregister(&self, s: &Service) -> Result<(), Error> {
        self.inner.deregister(s).await
    }
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.get_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        // The memory registry lists names only; etcd lists every node.
        let names = self.inner.list_services().await?;
        if self.names_only {
            return Ok(names);
        }
        let mut services = Vec::new();
        for name in names {
            services.extend(self.inner.get_service(&name.name).await?);
        }
        Ok(services)
    }
    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        self.inner.watch(options).await
    }
}

async fn settle(catalog: &Catalog, name: &str, wanted: Presence) -> Presence {
    let mut presence = Presence::Unknown;
    for _ in 0..100 {
        presence = catalog.presence(name, BUDGET).await;
        if presence == wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    presence
}

/// Two nodes of a service, then each leaves in turn. `marker` registered
/// after each departure tells when the catalog has applied it (a watch
/// delivers in order). Returns the presence after each departure and how
/// often the registry was asked about the service.
async fn nodes_leave_one_by_one(names_only: bool) -> (Presence, Presence, usize) {
    let registry = Arc::new(Counting {
        names_only,
        ..Counting::default()
    });
    let service = |id: &str| {
        Service::new("go.micro.api.greeter", "latest").with_node(Node::new(id, "127.0.0.1:1"))
    };
    for id in ["greeter-1", "greeter-2"] {
        registry
            .register(&service(id), RegisterOptions::default())
            .await
            .expect("register");
    }
    let catalog = Catalog::spawn(registry.clone());
    assert_eq!(
        settle(&catalog, "go.micro.api.greeter", Presence::Live).await,
        Presence::Live
    );
    let mut after = Vec::new();
    for (round, id) in ["greeter-1", "greeter-2"].into_iter().enumerate() {
        registry.deregister(&service(id)).await.expect("deregister");
        let marker = format!("go.micro.api.marker{round}");
        registry
            .register(
                &Service::new(&marker, "latest").with_node(Node::new("m", "127.0.0.1:2")),
                RegisterOptions::default(),
            )
            .await
            .expect("register marker");
        // Not `presence`, which would look the marker up: the watch must
        // bring it.
        let mut seen = false;
        for _ in 0..100 {
            if catalog.names().contains(&marker) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "the watch brought {marker}");
        let names = catalog.names();
        after.push(if names.iter().any(|n| n == "go.micro.api.greeter") {
            Presence::Live
        } else {
            Presence::Gone
        });
    }
    (after[0], after[1], registry.lookups.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_leaving_node_is_settled_from_the_nodes_known_without_asking_the_registry() {
    let (one_left, none_left, lookups) = nodes_leave_one_by_one(false).await;
    assert_eq!(one_left, Presence::Live, "one node remains");
    assert_eq!(none_left, Presence::Gone, "the last node left");
    assert_eq!(lookups, 0, "the registry was asked about the service");
}

#[tokio::test(start_paused = true)]
async fn a_registry_that_lists_names_only_is_asked_whether_nodes_remain() {
    let (one_left, none_left, lookups) = nodes_leave_one_by_one(true).await;
    assert_eq!(one_left, Presence::Live, "one node remains");
    assert_eq!(none_left, Presence::Gone, "the last node left");
    assert!(lookups >= 2, "each departure is checked: {lookups} lookups");
}
