//! The registry conformance suite: one set of behaviour checks that every
//! backend (memory, mDNS, etcd) must pass.
//!
//! A backend's test file provides a [`Setup`] (a writer and a reader handle on
//! the same registry, e.g. two etcd clients, two mDNS responders in one network
//! namespace, or two clones of one memory registry) and expands
//! [`registry_conformance_tests!`]:
//!
//! ```ignore
//! async fn setup() -> micro_registry_conformance::Setup {
//!     let registry = std::sync::Arc::new(MemoryRegistry::new());
//!     micro_registry_conformance::Setup::new(registry.clone(), registry)
//! }
//! micro_registry_conformance::registry_conformance_tests!(setup(), Options::default());
//! ```
//!
//! Every case uses service names unique to the run, so backends shared between
//! cases (one etcd, one namespace) do not see each other's entries.

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use micro_registry::{
    Action, Detail, Error, Event, Node, RegisterOptions, Service, SharedRegistry, WatchOptions,
    Watcher,
};
use tokio::time::{Instant, timeout};

/// What a backend needs the suite to allow for.
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest a write may take to become visible to the reader.
    pub propagation: Duration,
    /// The shortest TTL the backend honours, for the expiry case. Every
    /// backend must honour one (go-micro's servers re-register within their
    /// TTL and rely on it): etcd as a lease, memory as a deadline, mDNS as a
    /// goodbye when a registration is not renewed in time.
    pub ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            propagation: Duration::from_secs(5),
            ttl: Duration::from_secs(2),
        }
    }
}

/// Two handles on one registry, plus whatever must live as long as the test
/// (a temp dir, a child process).
pub struct Setup {
    pub writer: SharedRegistry,
    pub reader: SharedRegistry,
    pub guard: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("writer", &self.writer)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl Setup {
    pub fn new(writer: SharedRegistry, reader: SharedRegistry) -> Self {
        Setup {
            writer,
            reader,
            guard: None,
        }
    }

    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

/// Expands to one `#[tokio::test]` per conformance case.
///
/// `$setup` is an expression evaluating to a future of [`Setup`]; `$options` an
/// expression of type [`Options`].
#[macro_export]
macro_rules! registry_conformance_tests {
    ($setup:expr, $options:expr) => {
        $crate::registry_conformance_tests!(@cases $setup, $options;
            register_then_get,
            get_unknown_is_not_found,
            list_includes_registered,
            nodes_of_one_version_are_grouped,
            versions_are_separate,
            deregister_removes_only_that_node,
            reregister_replaces_node,
            watch_sees_create_and_delete,
            watch_filters_by_service,
            nodes_detail_names_services_and_nodes,
            ttl_expiry_removes_node,
            concurrent_registrations,
            invalid_registrations_are_rejected,
        );
    };
    (@cases $setup:expr, $options:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let setup: $crate::Setup = $setup.await;
                let options: $crate::Options = $options;
                $crate::$case(&setup, &options).await;
            }
        )*
    };
}

fn unique(prefix: &str) -> String {
    format!("conformance.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

fn node(service: &str, port: u16) -> Node {
    Node::new(
        format!("{service}-{}", uuid::Uuid::new_v4()),
        format!("127.0.0.1:{port}"),
    )
    .with_metadata("protocol", "grpc")
    .with_metadata("server", "grpc")
    .with_metadata("transport", "grpc")
}

fn sample_service(name: &str, version: &str, node: Node) -> Service {
    Service::new(name, version)
        .with_node(node)
        .with_endpoint(golden::greeter_endpoint())
}

const NO_TTL: RegisterOptions = RegisterOptions { ttl: None };

async fn register(setup: &Setup, service: &Service) {
    setup
        .writer
        .register(service, NO_TTL)
        .await
        .unwrap_or_else(|e| panic!("register {}: {e}", service.name));
}

/// Polls `get_service` on the reader until `accept` holds, for at most
/// `propagation`. Returns the last answer.
async fn eventually<F>(
    setup: &Setup,
    options: &Options,
    name: &str,
    what: &str,
    accept: F,
) -> Result<Vec<Service>, Error>
where
    F: Fn(&Result<Vec<Service>, Error>) -> bool,
{
    let deadline = Instant::now() + options.propagation;
    let mut pause = Duration::from_millis(10);
    loop {
        let got = setup.reader.get_service(name).await;
        if accept(&got) {
            return got;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not true within {:?}; last answer: {got:?}",
                options.propagation
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn node_ids(services: &Result<Vec<Service>, Error>) -> Vec<String> {
    let mut ids: Vec<String> = services
        .as_ref()
        .map(|s| {
            s.iter()
                .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Waits for the next event on `watcher` that satisfies `accept`, skipping
/// others, for at most `limit`.
async fn next_event<F>(watcher: &mut Watcher, limit: Duration, what: &str, accept: F) -> Event
where
    F: Fn(&Event) -> bool,
{
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, watcher.next()).await {
            Err(_) => panic!("{what}: no such event within {limit:?}"),
            Ok(None) => panic!("{what}: the watcher ended"),
            Ok(Some(Err(e))) => panic!("{what}: the watcher failed: {e}"),
            Ok(Some(Ok(event))) if accept(&event) => return event,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn cleanup(setup: &Setup, services: &[&Service]) {
    for service in services {
        let _ = setup.writer.deregister(service).await;
    }
}

/// A registered service is found with its version, metadata, endpoints and node.
pub async fn register_then_get(setup: &Setup, options: &Options) {
    let name = unique("get");
    let service = sample_service(&name, "1.0.0", node(&name, 4001)).with_metadata("team", "users");
    register(setup, &service).await;
    let got = eventually(setup, options, &name, "registered service visible", |r| {
        r.is_ok()
    })
    .await
    .expect("found");
    assert_eq!(got.len(), 1, "one version: {got:?}");
    let found = &got[0];
    assert_eq!(found.name, name);
    assert_eq!(found.version, "1.0.0");
    assert_eq!(found.endpoints, service.endpoints);
    assert_eq!(found.nodes.len(), 1);
    assert_eq!(found.nodes[0].id, service.nodes[0].id);
    assert_eq!(found.nodes[0].address, service.nodes[0].address);
    for (key, value) in &service.nodes[0].metadata {
        assert_eq!(
            found.nodes[0].metadata.get(key),
            Some(value),
            "node metadata {key}"
        );
    }
    cleanup(setup, &[&service]).await;
}

/// Asking for a service nobody registered is `NotFound`, not an empty success.
pub async fn get_unknown_is_not_found(setup: &Setup, _options: &Options) {
    let name = unique("missing");
    match setup.reader.get_service(&name).await {
        Err(e) if e.is_not_found() => {}
        other => panic!("expected NotFound for {name}, got {other:?}"),
    }
}

/// `list_services` names every registered service.
pub async fn list_includes_registered(setup: &Setup, options: &Options) {
    let a = unique("list-a");
    let b = unique("list-b");
    let sa = sample_service(&a, "latest", node(&a, 4002));
    let sb = sample_service(&b, "latest", node(&b, 4003));
    register(setup, &sa).await;
    register(setup, &sb).await;
    let deadline = Instant::now() + options.propagation;
    loop {
        let listed = setup.reader.list_services().await.expect("list");
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        if names.contains(&a.as_str()) && names.contains(&b.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "list_services lacks {a} or {b}: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cleanup(setup, &[&sa, &sb]).await;
}

/// Two nodes of one version come back as one service with two nodes.
pub async fn nodes_of_one_version_are_grouped(setup: &Setup, options: &Options) {
    let name = unique("group");
    let one = sample_service(&name, "latest", node(&name, 4004));
    let two = sample_service(&name, "latest", node(&name, 4005));
    register(setup, &one).await;
    register(setup, &two).await;
    let got = eventually(setup, options, &name, "both nodes visible", |r| {
        node_ids(r).len() == 2
    })
    .await
    .expect("found");
    assert_eq!(got.len(), 1, "one version: {got:?}");
    let mut expected = vec![one.nodes[0].id.clone(), two.nodes[0].id.clone()];
    expected.sort();
    assert_eq!(node_ids(&Ok(got)), expected);
    cleanup(setup, &[&one, &two]).await;
}

/// Different versions of a service are separate entries.
pub async fn versions_are_separate(setup: &Setup, options: &Options) {
    let name = unique("versions");
    let v1 = sample_service(&name, "1", node(&name, 4006));
    let v2 = sample_service(&name, "2", node(&name, 4007));
    register(setup, &v1).await;
    register(setup, &v2).await;
    let got = eventually(setup, options, &name, "both versions visible", |r| {
        r.as_ref().map(|s| s.len() == 2).unwrap_or(false)
    })
    .await
    .expect("found");
    let mut versions: Vec<&str> = got.iter().map(|s| s.version.as_str()).collect();
    versions.sort();
    assert_eq!(versions, ["1", "2"]);
    for service in &got {
        assert_eq!(service.nodes.len(), 1, "{service:?}");
    }
    cleanup(setup, &[&v1, &v2]).await;
}

/// Deregistering one node leaves the others; the last one takes the service away.
pub async fn deregister_removes_only_that_node(setup: &Setup, options: &Options) {
    let name = unique("deregister");
    let one = sample_service(&name, "latest", node(&name, 4008));
    let two = sample_service(&name, "latest", node(&name, 4009));
    register(setup, &one).await;
    register(setup, &two).await;
    eventually(setup, options, &name, "both nodes visible", |r| {
        node_ids(r).len() == 2
    })
    .await
    .expect("found");

    setup.writer.deregister(&one).await.expect("deregister one");
    let left = eventually(setup, options, &name, "first node gone", |r| {
        node_ids(r) == [two.nodes[0].id.clone()]
    })
    .await;
    assert_eq!(node_ids(&left), [two.nodes[0].id.clone()]);

    setup.writer.deregister(&two).await.expect("deregister two");
    let gone = eventually(
        setup,
        options,
        &name,
        "service gone",
        |r| matches!(r, Err(e) if e.is_not_found()),
    )
    .await;
    assert!(gone.is_err());
}

/// Registering a node again replaces it (one node, new metadata), not a duplicate.
pub async fn reregister_replaces_node(setup: &Setup, options: &Options) {
    let name = unique("reregister");
    let first = sample_service(&name, "latest", node(&name, 4010));
    register(setup, &first).await;
    let mut second = first.clone();
    second.nodes[0]
        .metadata
        .insert("generation".into(), "2".into());
    register(setup, &second).await;
    let got = eventually(setup, options, &name, "updated node visible", |r| {
        r.as_ref()
            .map(|s| {
                s.iter()
                    .flat_map(|s| &s.nodes)
                    .any(|n| n.metadata.get("generation").map(String::as_str) == Some("2"))
            })
            .unwrap_or(false)
    })
    .await;
    assert_eq!(node_ids(&got), [first.nodes[0].id.clone()], "{got:?}");
    cleanup(setup, &[&second]).await;
}

/// A watcher sees a node arrive and leave, with the node in the event.
pub async fn watch_sees_create_and_delete(setup: &Setup, options: &Options) {
    let name = unique("watch");
    let mut watcher = setup
        .reader
        .watch(WatchOptions::service(&name))
        .await
        .expect("watch");
    let service = sample_service(&name, "latest", node(&name, 4011));
    let id = service.nodes[0].id.clone();
    register(setup, &service).await;
    let created = next_event(&mut watcher, options.propagation, "create", |e| {
        e.action != Action::Delete && e.service.nodes.iter().any(|n| n.id == id)
    })
    .await;
    assert_eq!(created.service.name, name);

    setup.writer.deregister(&service).await.expect("deregister");
    let deleted = next_event(&mut watcher, options.propagation, "delete", |e| {
        e.action == Action::Delete
    })
    .await;
    assert_eq!(deleted.service.name, name);
    assert!(
        deleted.service.nodes.iter().any(|n| n.id == id),
        "delete names the node: {deleted:?}"
    );
}

/// Asked for [`Detail::Nodes`], a listing names every service (with, where
/// it lists nodes at all, each node's id and address) and a watch of every
/// service reports a node coming and going by service name and node id.
pub async fn nodes_detail_names_services_and_nodes(setup: &Setup, options: &Options) {
    let name = unique("brief");
    let mut watcher = setup
        .reader
        .watch(WatchOptions::default().with_detail(Detail::Nodes))
        .await
        .expect("watch");
    let service = sample_service(&name, "v1", node(&name, 4012));
    let id = service.nodes[0].id.clone();
    let address = service.nodes[0].address.clone();
    register(setup, &service).await;
    let created = next_event(&mut watcher, options.propagation, "create", |e| {
        e.action != Action::Delete
            && e.service.name == name
            && e.service.nodes.iter().any(|n| n.id == id)
    })
    .await;
    assert_eq!(created.service.version, "v1");
    let deadline = Instant::now() + options.propagation;
    loop {
        let listed = setup
            .reader
            .list_services_with(Detail::Nodes)
            .await
            .expect("list");
        if let Some(found) = listed.iter().find(|s| s.name == name) {
            if !found.nodes.is_empty() {
                assert_eq!(found.nodes.len(), 1, "{found:?}");
                assert_eq!(found.nodes[0].id, id);
                assert_eq!(found.nodes[0].address, address);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "list_services_with(Nodes) lacks {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.writer.deregister(&service).await.expect("deregister");
    next_event(&mut watcher, options.propagation, "delete", |e| {
        e.action == Action::Delete
            && e.service.name == name
            && e.service.nodes.iter().any(|n| n.id == id)
    })
    .await;
}

/// A watcher for one service hears nothing about another.
pub async fn watch_filters_by_service(setup: &Setup, options: &Options) {
    let wanted = unique("watch-wanted");
    let other = unique("watch-other");
    let mut watcher = setup
        .reader
        .watch(WatchOptions::service(&wanted))
        .await
        .expect("watch");
    let so = sample_service(&other, "latest", node(&other, 4012));
    let sw = sample_service(&wanted, "latest", node(&wanted, 4013));
    register(setup, &so).await;
    register(setup, &sw).await;
    let first = next_event(&mut watcher, options.propagation, "any event", |_| true).await;
    assert_eq!(first.service.name, wanted, "filtered watcher got {first:?}");
    cleanup(setup, &[&so, &sw]).await;
}

/// A node registered with a TTL and never refreshed disappears, and watchers
/// are told.
pub async fn ttl_expiry_removes_node(setup: &Setup, options: &Options) {
    let ttl = options.ttl;
    let name = unique("ttl");
    let mut watcher = setup
        .reader
        .watch(WatchOptions::service(&name))
        .await
        .expect("watch");
    let service = sample_service(&name, "latest", node(&name, 4014));
    setup
        .writer
        .register(&service, RegisterOptions::with_ttl(ttl))
        .await
        .expect("register with ttl");
    let limit = ttl * 3 + options.propagation;
    next_event(&mut watcher, limit, "delete after TTL", |e| {
        e.action == Action::Delete
    })
    .await;
    let gone = setup.reader.get_service(&name).await;
    assert!(
        matches!(&gone, Err(e) if e.is_not_found()),
        "after TTL: {gone:?}"
    );
}

/// Registrations racing each other are all kept.
pub async fn concurrent_registrations(setup: &Setup, options: &Options) {
    let name = unique("concurrent");
    let services: Vec<Service> = (0..16)
        .map(|i| sample_service(&name, "latest", node(&name, 5000 + i)))
        .collect();
    let writes = services.iter().map(|s| setup.writer.register(s, NO_TTL));
    for result in futures::future::join_all(writes).await {
        result.expect("concurrent register");
    }
    let got = eventually(setup, options, &name, "all 16 nodes visible", |r| {
        node_ids(r).len() == 16
    })
    .await;
    assert_eq!(node_ids(&got).len(), 16);
    let refs: Vec<&Service> = services.iter().collect();
    cleanup(setup, &refs).await;
}

/// What cannot be stored is refused with `Invalid`, and nothing is stored.
pub async fn invalid_registrations_are_rejected(setup: &Setup, _options: &Options) {
    let name = unique("invalid");
    let cases = [
        Service::new("", "latest").with_node(node("x", 4015)),
        Service::new(&name, "latest"),
        Service::new(&name, "latest").with_node(Node::new("", "127.0.0.1:4016")),
    ];
    for case in &cases {
        match setup.writer.register(case, NO_TTL).await {
            Err(Error::Invalid(_)) => {}
            other => panic!("expected Invalid for {case:?}, got {other:?}"),
        }
    }
    assert!(setup.reader.get_service(&name).await.is_err());
}

/// The service of the go-micro v2.9.1 golden captures in
/// `testdata/go-micro-v2/`, for every backend's wire tests.
pub mod golden {
    use micro_registry::{Endpoint, Node, Service, Value};

    /// The text of `testdata/go-micro-v2/<relative>`.
    pub fn file(relative: &str) -> String {
        let path = format!(
            "{}/../../testdata/go-micro-v2/{relative}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `Greeter.Hello`, `Request{name string}` → `Response{msg string}`.
    pub fn greeter_endpoint() -> Endpoint {
        Endpoint {
            name: "Greeter.Hello".into(),
            request: Some(
                Value::new("Request", "Request").with_values(vec![Value::new("name", "string")]),
            ),
            response: Some(
                Value::new("Response", "Response").with_values(vec![Value::new("msg", "string")]),
            ),
            metadata: Default::default(),
        }
    }

    /// The captured greeter node, registered through `registry` (`etcd`, `mdns`).
    pub fn greeter(registry: &str) -> Service {
        Service::new("go.micro.srv.greeter", "latest")
            .with_endpoint(greeter_endpoint())
            .with_node(
                Node::new(
                    "go.micro.srv.greeter-4b6e0b5e-6f7a-4c1d-9a2b-3c4d5e6f7a8b",
                    "127.0.0.1:4242",
                )
                .with_metadata("broker", "http")
                .with_metadata("protocol", "grpc")
                .with_metadata("registry", registry)
                .with_metadata("server", "grpc")
                .with_metadata("transport", "grpc"),
            )
    }
}

/// Runs `case` against `setup`; for backends that prefer a plain loop to the macro.
pub async fn run<F, Fut>(setup: &Setup, options: &Options, case: F)
where
    F: FnOnce(&Setup, &Options) -> Fut,
    Fut: Future<Output = ()>,
{
    case(setup, options).await
}
