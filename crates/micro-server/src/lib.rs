//! A gRPC server that registers itself.
//!
//! [`Server::builder`] wraps tonic: add tonic-generated services and the
//! encoded `FileDescriptorSet` they were built from (see `micro-build`), then
//! [`bind`](ServerBuilder::bind) and [`run`](Server::run). The lifecycle is
//! go-micro's:
//!
//! 1. listen (`--server_address`, default `:0`, a random port);
//! 2. register node `<name>-<uuid>` at the advertised address, with one
//!    endpoint per method (`Handler.Method` and its request/response shape);
//! 3. serve, registering again every `register_interval` with `register_ttl`;
//! 4. on SIGTERM, SIGINT or SIGQUIT: deregister **first**, then stop accepting
//!    and let in-flight calls finish (for at most `shutdown_grace`), then return.
//!
//! With [`ServerOptions::tls`] ([`ServerTls`]: `--server_tls_cert_file`,
//! `--server_tls_key_file`, and `--server_tls_client_ca` for mutual TLS) it
//! serves gRPC over TLS and registers `secure=true` (see [`tls`]).
//!
//! It also serves gRPC server reflection from the descriptors (so gateways and
//! tools like `grpcurl` can call any method without generated code), and
//! accepts go-micro's path forms: `/anything.Handler/Method` reaches `Handler`,
//! and go-micro's codecs: every unary method takes `application/grpc+json`
//! as well as protobuf, transcoded through the same descriptors (see
//! [`SUPPORTED_CONTENT_TYPES`]).
//!
//! It serves `grpc.health.v1.Health` from its [`Readiness`] (registered,
//! dependency checks passing, not stopping; see [`health`]), and shows every
//! call of a registered endpoint to a [`ServerObserver`] if given one
//! ([`ServerBuilder::observer`]): the hook metrics and tracing plug into
//! (see [`observer`]).
//!
//! ```no_run
//! # async fn demo(greeter: impl tonic::server::NamedService + Clone + Send + Sync + 'static
//! #     + tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible, Future: Send>,
//! #     descriptors: &'static [u8]) -> Result<(), micro_server::ServerError> {
//! use std::sync::Arc;
//! use micro_registry::memory::MemoryRegistry;
//! use micro_server::{Server, ServerOptions};
//!
//! Server::builder("go.micro.srv.greeter")
//!     .registry(Arc::new(MemoryRegistry::new()))
//!     .options(ServerOptions::default())
//!     .file_descriptor_set(descriptors)
//!     .add_service(greeter)
//!     .bind()
//!     .await?
//!     .run()
//!     .await
//! # }
//! ```

mod admission;
mod codecs;
mod endpoints;
pub mod health;
pub mod lifecycle;
mod messages;
pub mod observer;
mod ops;
mod paths;
mod subscriber;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use micro_broker::SharedBroker;
use micro_registry::{Metadata, Node, Service as Registration, SharedRegistry};
use micro_serve::AbortOnDrop;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;

use crate::codecs::Codecs;
use crate::paths::HandlerPaths;

pub use crate::admission::PUSHBACK;
pub use crate::codecs::SUPPORTED as SUPPORTED_CONTENT_TYPES;
pub use crate::health::Readiness;
pub use crate::lifecycle::{DEREGISTER_WHEN_UNREACHABLE, Registrar};
pub use crate::observer::ServerObserver;
pub use crate::subscriber::Received;
pub use crate::tls::ServerTls;
pub use micro_serve::admission::ConcurrencyLimit;

/// Server behaviour, as set by go-micro's flags.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Listen address (`--server_address`): `:0` = every interface, random port.
    pub address: String,
    /// Address to register instead of the one found (`--server_advertise`).
    pub advertise: Option<String>,
    /// Lifetime of a registration unless renewed (`--register_ttl`).
    pub register_ttl: Duration,
    /// How often to renew it (`--register_interval`).
    pub register_interval: Duration,
    /// Longest wait for in-flight calls on shutdown.
    pub shutdown_grace: Duration,
    /// Bound on the deregistration at shutdown (a registry may be unreachable).
    pub deregister_timeout: Duration,
    /// How often readiness checks run (see [`ServerBuilder::readiness_check`]).
    pub health_check_interval: Duration,
    /// TLS on the listener (`--server_tls_*`); plaintext if `None`.
    pub tls: Option<ServerTls>,
    /// How many unary calls run at once (`--server_max_concurrent`):
    /// adaptive by default; calls over it are refused at once (see
    /// [`PUSHBACK`] and [`micro_serve::admission`]).
    pub max_concurrent: ConcurrencyLimit,
}

impl ServerOptions {
    /// Every interface, a random port.
    pub const ADDRESS: &'static str = ":0";
    pub const REGISTER_TTL: Duration = Duration::from_secs(60);
    pub const REGISTER_INTERVAL: Duration = Duration::from_secs(30);
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);
    pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            address: Self::ADDRESS.into(),
            advertise: None,
            register_ttl: Self::REGISTER_TTL,
            register_interval: Self::REGISTER_INTERVAL,
            shutdown_grace: Self::SHUTDOWN_GRACE,
            deregister_timeout: Self::DEREGISTER_TIMEOUT,
            health_check_interval: Self::HEALTH_CHECK_INTERVAL,
            tls: None,
            max_concurrent: ConcurrencyLimit::default(),
        }
    }
}

/// Why a server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("no registry: call ServerBuilder::registry")]
    NoRegistry,
    #[error("invalid server options: {0}")]
    Options(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad service descriptors: {0}")]
    Descriptors(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// An HTTP listener (a web service's) failed.
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    /// The task serving calls panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A subscription could not be made.
    #[error("cannot subscribe: {0}")]
    Broker(#[source] micro_broker::Error),
}

/// Builds a [`Server`]. See the crate docs.
pub struct ServerBuilder {
    name: String,
    version: String,
    metadata: Metadata,
    registry: Option<SharedRegistry>,
    options: ServerOptions,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    descriptors: Vec<Vec<u8>>,
    reflection: bool,
    readiness: Option<Readiness>,
    observer: Option<Arc<dyn ServerObserver>>,
    broker: Option<SharedBroker>,
    subscribers: Vec<subscriber::Subscriber>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("services", &self.services)
            .field("options", &self.options)
            .field("observer", &self.observer)
            .field("broker", &self.broker)
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The broker subscribers use; its name is registered as node
    /// metadata `broker`, as go-micro does.
    pub fn broker(mut self, broker: SharedBroker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Runs `handler` for each message on `topic` (every instance gets each
    /// message), decoded by its content type (see [`Received`] and the
    /// `subscriber` module docs: protobuf, or JSON through the
    /// descriptors). An error or a panic refuses the message. Needs a
    /// [`broker`](Self::broker).
    pub fn subscribe<M, F, Fut>(self, topic: impl Into<String>, handler: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(Received<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), micro_broker::HandlerError>> + Send + 'static,
    {
        self.subscribe_with(topic, micro_broker::SubscribeOptions::default(), handler)
    }

    /// [`subscribe`](Self::subscribe) with options: a queue group
    /// (`SubscribeOptions::queue("name")`) shares the messages among its
    /// members, one copy each.
    pub fn subscribe_with<M, F, Fut>(
        mut self,
        topic: impl Into<String>,
        options: micro_broker::SubscribeOptions,
        handler: F,
    ) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(Received<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), micro_broker::HandlerError>> + Send + 'static,
    {
        self.subscribers
            .push(subscriber::Subscriber::new(topic.into(), options, handler));
        self
    }

    /// The version to register (default `latest`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Node metadata to register, besides the `registry`, `server`,
    /// `transport` and `protocol` keys go-micro writes.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn registry(mut self, registry: SharedRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// The readiness this server reports over gRPC health (and an admin
    /// listener over `/health/ready`); a fresh one if not set.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// What sees every call of a registered endpoint: metrics and traces
    /// plug in here (`micro_telemetry::server::ServerTelemetry`; the `micro`
    /// facade's servers have it). None by default.
    pub fn observer(mut self, observer: Arc<dyn ServerObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A dependency check: the server is SERVING only while it passes (run
    /// every `health_check_interval`, bounded by it). user-srv checks its store.
    pub fn readiness_check<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.readiness
            .get_or_insert_with(Readiness::new)
            .add_check(name, check);
        self
    }

    /// An encoded `FileDescriptorSet` describing the services added: the
    /// source of registered endpoints and of gRPC reflection.
    pub fn file_descriptor_set(mut self, encoded: &[u8]) -> Self {
        self.descriptors.push(encoded.to_vec());
        self
    }

    /// Whether to serve gRPC reflection from the descriptors (default yes).
    /// Without it, JSON callers (`micro call`, the rpc handler) reach the
    /// service as they reach a go-micro one: with `application/grpc+json`,
    /// which it still accepts.
    pub fn reflection(mut self, serve: bool) -> Self {
        self.reflection = serve;
        self
    }

    /// Adds a tonic-generated service (`GreeterServer::new(handler)`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Binds the listener and prepares the registration; nothing is
    /// registered until [`Server::run`].
    pub async fn bind(self) -> Result<Server, ServerError> {
        let registry = self.registry.ok_or(ServerError::NoRegistry)?;
        let options = self.options;
        lifecycle::check_options(&options)?;

        tracing::info!("Starting [service] {}", self.name);

        let pool = endpoints::pool(&self.descriptors).map_err(ServerError::Descriptors)?;
        let mut endpoint_list = Vec::new();
        let mut by_handler = HashMap::new();
        for full_name in &self.services {
            let handler = endpoints::handler_name(full_name).to_string();
            if let Some(previous) = by_handler.insert(handler.clone(), full_name.to_string()) {
                tracing::warn!(
                    "handlers {previous} and {full_name} share the name {handler}; go-micro paths reach {full_name}"
                );
            }
            match pool.get_service_by_name(full_name) {
                Some(descriptor) => endpoint_list.extend(endpoints::endpoints(&descriptor)),
                None => tracing::warn!(
                    "no descriptor for {full_name}: its endpoints are not registered; pass its FileDescriptorSet to file_descriptor_set()"
                ),
            }
        }

        if !self.subscribers.is_empty() && self.broker.is_none() {
            return Err(ServerError::Options(
                "subscribers need a broker: call ServerBuilder::broker".into(),
            ));
        }
        // After the handlers', by topic descending (go-micro's order).
        let mut subscribers = self.subscribers;
        subscribers.sort_by(|a, b| b.topic.cmp(&a.topic));
        for subscriber in &subscribers {
            let message = pool.get_message_by_name(&subscriber.message);
            endpoint_list.push(endpoints::subscriber_endpoint(
                &subscriber.topic,
                message.as_ref(),
            ));
        }
        let subscriptions: Vec<Subscription> = subscribers
            .iter()
            .map(|s| Subscription {
                topic: s.topic.clone(),
                options: s.options.clone(),
                handler: s.handler(&pool),
            })
            .collect();

        let readiness = self.readiness.unwrap_or_default();
        readiness.set("registry", Err(ops::NOT_REGISTERED.into()));
        let observe = self
            .observer
            .as_deref()
            .map(|observer| ops::observe_layer(observer, &self.name, &pool, &self.services));
        let admission = micro_serve::admission::Admission::new(
            options.max_concurrent,
            self.observer
                .as_deref()
                .and_then(|observer| observer.admission(&self.name)),
        )
        .map(|admission| {
            admission::AdmissionLayer::new(admission, ops::stream_paths(&pool, &self.services))
        });
        let mut routes = self.routes;
        routes.add_service(ops::health_service(&readiness, &self.name, &self.services));
        if self.reflection && !self.descriptors.is_empty() {
            // Reflection lists what this server serves, not every service
            // in the descriptor sets it was given.
            let mut v1 = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(ops::HEALTH_SERVICE)
                .with_service_name("grpc.reflection.v1.ServerReflection");
            let mut v1alpha = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(ops::HEALTH_SERVICE)
                .with_service_name("grpc.reflection.v1alpha.ServerReflection");
            for set in &self.descriptors {
                v1 = v1.register_encoded_file_descriptor_set(set);
                v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
            }
            for name in &self.services {
                v1 = v1.with_service_name(*name);
                v1alpha = v1alpha.with_service_name(*name);
            }
            let v1 = v1
                .build_v1()
                .map_err(|e| ServerError::Descriptors(e.to_string()))?;
            let v1alpha = v1alpha
                .build_v1alpha()
                .map_err(|e| ServerError::Descriptors(e.to_string()))?;
            routes.add_service(v1).add_service(v1alpha);
        }

        let (listener, local_addr) = lifecycle::listen(&options).await?;
        match &options.tls {
            None => tracing::info!("Server [grpc] Listening on {local_addr}"),
            Some(tls) => {
                // Checked here, so that a bad configuration stops the start.
                tls.reloadable()
                    .map_err(|e| ServerError::Options(format!("server TLS: {e}")))?;
                let mode = if tls.is_mutual() {
                    "mutual TLS: client certificates required"
                } else {
                    "TLS"
                };
                tracing::info!("Server [grpc] Listening on {local_addr} ({mode})");
            }
        }

        let advertised = lifecycle::advertise(&options, local_addr, "grpc")?;

        let mut node_metadata = self.metadata;
        node_metadata.insert("registry".into(), registry.name().to_string());
        node_metadata.insert("server".into(), "grpc".into());
        node_metadata.insert("transport".into(), "grpc".into());
        node_metadata.insert("protocol".into(), "grpc".into());
        if options.tls.is_some() {
            node_metadata.insert(tls::SECURE_METADATA.into(), "true".into());
        }
        if let Some(broker) = &self.broker {
            node_metadata.insert("broker".into(), broker.name().to_string());
        }
        let node = Node {
            id: format!("{}-{}", self.name, uuid::Uuid::new_v4()),
            address: advertised,
            metadata: node_metadata,
        };
        let registration = Registration {
            name: self.name,
            version: self.version,
            metadata: Metadata::new(),
            endpoints: endpoint_list,
            nodes: vec![node],
        };

        Ok(Server {
            registered: tokio::sync::watch::channel(false).0,
            registry,
            options,
            registration,
            listener,
            local_addr,
            routes: routes.routes(),
            paths: HandlerPaths::new(by_handler),
            codecs: Codecs::new(&pool, &self.services),
            readiness,
            admission,
            observe,
            broker: self.broker,
            subscriptions,
        })
    }
}

/// A subscription a server makes when it runs.
struct Subscription {
    topic: String,
    options: micro_broker::SubscribeOptions,
    handler: Arc<dyn micro_broker::Handler>,
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    registered: tokio::sync::watch::Sender<bool>,
    registry: SharedRegistry,
    options: ServerOptions,
    registration: Registration,
    listener: TcpListener,
    local_addr: SocketAddr,
    routes: tonic::service::Routes,
    paths: HandlerPaths,
    codecs: Codecs,
    readiness: Readiness,
    admission: Option<admission::AdmissionLayer>,
    observe: Option<observer::ObserveLayer>,
    broker: Option<SharedBroker>,
    subscriptions: Vec<Subscription>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.registration.name)
            .field("node", &self.node().id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts building a server for the service `name`
    /// (e.g. `go.micro.srv.user`).
    pub fn builder(name: impl Into<String>) -> ServerBuilder {
        ServerBuilder {
            name: name.into(),
            version: "latest".into(),
            metadata: Metadata::new(),
            registry: None,
            options: ServerOptions::default(),
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            descriptors: Vec::new(),
            reflection: true,
            readiness: None,
            observer: None,
            broker: None,
            subscribers: Vec::new(),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This server's node, as registered.
    pub fn node(&self) -> &Node {
        &self.registration.nodes[0]
    }

    /// What this server registers: the service, its endpoints and its node.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Turns true once the node is registered (and false after it is
    /// deregistered): a readiness signal.
    pub fn registered(&self) -> tokio::sync::watch::Receiver<bool> {
        self.registered.subscribe()
    }

    /// What this server reports over gRPC health: registered, dependency
    /// checks passing, not stopping.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Serves until SIGTERM, SIGINT or SIGQUIT, then stops gracefully.
    pub async fn run(self) -> Result<(), ServerError> {
        let signal = shutdown_signal().map_err(ServerError::Signals)?;
        self.run_until(signal).await
    }

    /// Serves until `shutdown` completes, then stops gracefully: deregister,
    /// stop accepting, drain in-flight calls (bounded), return.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            registered,
            registry,
            options,
            registration,
            listener,
            local_addr: _,
            routes,
            paths,
            codecs,
            readiness,
            admission,
            observe,
            broker,
            subscriptions,
        } = self;

        // Subscribed before registering (go-micro's order): a node that is
        // listed takes its messages.
        let mut running = Vec::with_capacity(subscriptions.len());
        if let Some(broker) = &broker {
            for subscription in subscriptions {
                // Made by this service: a durable broker keeps what
                // comes while it is down under its name.
                let mut subscribe_options = subscription.options;
                if subscribe_options.service.is_none() {
                    subscribe_options = subscribe_options.with_service(registration.name.clone());
                }
                let subscribed = broker
                    .subscribe(&subscription.topic, subscribe_options, subscription.handler)
                    .await
                    .map_err(ServerError::Broker)?;
                running.push(subscribed);
            }
        }

        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let layers = tower::ServiceBuilder::new()
            .layer(paths)
            .option_layer(admission)
            .option_layer(observe)
            .layer(codecs);
        let stopped = async {
            let _ = stopped.await;
        };
        let builder = tonic::transport::Server::builder().layer(layers);
        let serve = match &options.tls {
            None => {
                AbortOnDrop::spawn(builder.serve_with_incoming_shutdown(routes, incoming, stopped))
            }
            Some(tls) => {
                let reloadable = tls
                    .reloadable()
                    .map_err(|e| ServerError::Options(format!("server TLS: {e}")))?;
                let incoming = tls::incoming(incoming, reloadable);
                AbortOnDrop::spawn(builder.serve_with_incoming_shutdown(routes, incoming, stopped))
            }
        };
        // If this future is dropped (the caller gave up on it, or crashed),
        // the tasks below must not outlive it.
        let mut serving = serve;
        let registrar = Registrar::start(
            registry,
            registration,
            options.clone(),
            readiness.clone(),
            registered,
        );
        // Subscriptions drain (nothing new starts, handlers in flight
        // finish) after the node turns not ready and before it is
        // deregistered, bounded by the grace.
        let grace = options.shutdown_grace;
        let drain = async move {
            let drain = futures::future::join_all(running.into_iter().map(|s| s.unsubscribe()));
            if tokio::time::timeout(grace, drain).await.is_err() {
                tracing::warn!(
                    "Server [grpc] subscribers still running after {grace:?}; stopping anyway"
                );
            }
        };
        let early_exit =
            lifecycle::serve_registered(&mut serving, registrar, shutdown, drain).await;

        if let Some(result) = early_exit {
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServerError::Serve(e)),
                Err(join) => Err(ServerError::Task(join)),
            };
        }

        // Health watches end (after saying NOT_SERVING) so they do not hold
        // the graceful stop open.
        readiness.close();
        let _ = stop.send(());
        match tokio::time::timeout(options.shutdown_grace, &mut serving).await {
            Ok(Ok(Ok(()))) => {
                tracing::info!("Server [grpc] Stopped");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(ServerError::Serve(e)),
            Ok(Err(join)) => Err(ServerError::Task(join)),
            Err(_) => {
                serving.abort();
                tracing::warn!(
                    "Server [grpc] calls still in flight after {:?}; stopping anyway",
                    options.shutdown_grace
                );
                Ok(())
            }
        }
    }
}

/// Completes on the first SIGTERM, SIGINT or SIGQUIT. Installs, once per
/// process, the SIGHUP listener that reads the TLS certificates again
/// ([`micro_tls::reload_on_sighup`]).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    micro_tls::reload_on_sighup()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "terminated",
            _ = int.recv() => "interrupt",
            _ = quit.recv() => "quit",
        };
        tracing::info!("Received signal {name}");
    })
}
