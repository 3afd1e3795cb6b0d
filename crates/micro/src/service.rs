use std::sync::Arc;

use micro_client::Client;
use micro_config::{MicroArgs, RegistryArgs, RegistryKind};
use micro_registry::SharedRegistry;
use micro_registry::memory::MemoryRegistry;
use micro_serve::AbortOnDrop;
use micro_server::{Readiness, Server, ServerBuilder, ServerOptions};

/// Why a service could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The flags contradict each other or name something unusable.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Registry(#[from] micro_registry::Error),
    #[error(transparent)]
    Server(#[from] micro_server::ServerError),
}

impl Error {
    /// Whether the error is the user's input (exit code 2) rather than a
    /// runtime failure (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Registry(micro_registry::Error::Invalid(_))
                | Error::Server(micro_server::ServerError::Options(_))
        )
    }
}

/// A client whose calls are counted (`micro_client_*` metrics) and carry the
/// current trace context: the one every service and the gateway use.
pub fn telemetry_client(registry: SharedRegistry, options: micro_client::ClientOptions) -> Client {
    Client::with_observer(
        registry,
        options,
        Arc::new(micro_telemetry::client::ClientTelemetry),
    )
}

/// A server builder whose registered endpoints' calls are counted
/// (`micro_server_*` metrics) and continue the caller's trace: what
/// [`Service::server`] starts from.
pub fn telemetry_server(name: impl Into<String>) -> ServerBuilder {
    Server::builder(name).observer(Arc::new(micro_telemetry::server::ServerTelemetry))
}

/// Builds the registry the flags name; its operations are counted
/// (`micro_registry_operations_total`).
pub async fn connect_registry(args: &RegistryArgs) -> Result<SharedRegistry, Error> {
    connect_backend(args)
        .await
        .map(micro_telemetry::registry::MeteredRegistry::shared)
}

async fn connect_backend(args: &RegistryArgs) -> Result<SharedRegistry, Error> {
    match args.registry {
        RegistryKind::Memory => Ok(Arc::new(MemoryRegistry::new())),
        #[cfg(feature = "mdns")]
        RegistryKind::Mdns => {
            use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
            if args.registry_address.is_some() {
                tracing::warn!("--registry_address is ignored by the mdns registry");
            }
            let mut options = MdnsOptions::default().with_timeout(args.mdns_timeout);
            if let Some(interface) = &args.mdns_interface {
                options = options.with_interface(interface);
            }
            Ok(Arc::new(MdnsRegistry::new(options)?))
        }
        #[cfg(feature = "etcd")]
        RegistryKind::Etcd => {
            use micro_registry_etcd::{EtcdOptions, EtcdRegistry, EtcdTls};
            let addresses = args.registry_address.as_deref().unwrap_or_default();
            let mut options =
                EtcdOptions::from_addresses(addresses)?.with_request_timeout(args.registry_timeout);
            match (&args.registry_username, &args.registry_password) {
                (Some(user), Some(password)) => options = options.with_user(user, password),
                (None, None) => {}
                _ => {
                    return Err(Error::Config(
                        "--registry_username and --registry_password go together".into(),
                    ));
                }
            }
            if args.registry_tls_ca.is_some()
                || args.registry_tls_cert.is_some()
                || args.registry_tls_key.is_some()
            {
                options = options.with_tls(EtcdTls {
                    ca: args.registry_tls_ca.clone(),
                    cert: args.registry_tls_cert.clone(),
                    key: args.registry_tls_key.clone(),
                    domain: None,
                });
            }
            let registry = EtcdRegistry::connect(options).await?;
            // Routine: the flags say as much; `micro` commands would print it
            // before every answer.
            tracing::debug!(
                "Registry [etcd] Endpoints: {}",
                registry.endpoints().join(", ")
            );
            Ok(Arc::new(registry))
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::Config(format!(
            "registry {other} is not compiled into this binary (build micro with the {other:?} feature)"
        ))),
    }
}

/// A named service and what it needs to serve and to call others: the
/// registry the flags chose, a client on it, and server options.
#[derive(Clone, Debug)]
pub struct Service {
    name: String,
    version: String,
    server_options: ServerOptions,
    registry: SharedRegistry,
    client: Client,
    ops: Ops,
}

/// What a service runs for operators: readiness (shared by gRPC health and
/// the admin listener), the admin listener, the trace exporter.
#[derive(Clone, Debug)]
struct Ops {
    readiness: Readiness,
    admin: Option<Arc<Admin>>,
    _trace: Arc<micro_telemetry::trace::TraceGuard>,
}

/// The admin listener's task (stopped with the last clone of the service)
/// and its address.
#[derive(Debug)]
struct Admin {
    _task: AbortOnDrop<()>,
    address: std::net::SocketAddr,
}

/// Not ready until the server has registered (its own readiness says so).
fn not_registered() -> Readiness {
    let readiness = Readiness::new();
    readiness.set("registry", Err("not registered yet".into()));
    readiness
}

/// Starts what `--admin_address` and the `OTEL_*` variables ask for.
async fn start_ops(name: &str, args: &MicroArgs) -> Result<Ops, Error> {
    let readiness = not_registered();
    let trace = micro_telemetry::trace::init(name).map_err(Error::Config)?;
    let admin = match &args.ops.admin_address {
        Some(address) => {
            let admin = micro_telemetry::admin::AdminServer::bind(address, readiness.clone())
                .await
                .map_err(|e| Error::Config(e.to_string()))?;
            let address = admin.local_addr();
            Some(Arc::new(Admin {
                _task: AbortOnDrop::new(admin.spawn()),
                address,
            }))
        }
        None => None,
    };
    Ok(Ops {
        readiness,
        admin,
        _trace: Arc::new(trace),
    })
}

impl Service {
    /// Sets up service `name` (`--server_name` overrides it) from the shared
    /// flags: connects the registry and makes a client on it.
    pub async fn new(name: &str, args: &MicroArgs) -> Result<Service, Error> {
        args.server.server_options().map_err(Error::Config)?;
        let registry = connect_registry(&args.registry).await?;
        let mut service = Service::with_registry(name, args, registry)?;
        service.ops = start_ops(&service.name, args).await?;
        Ok(service)
    }

    /// Like [`new`](Self::new), on a registry you made.
    pub fn with_registry(
        name: &str,
        args: &MicroArgs,
        registry: SharedRegistry,
    ) -> Result<Service, Error> {
        let mut server_options = args.server.server_options().map_err(Error::Config)?;
        server_options.health_check_interval = args.ops.health_check_interval;
        let client = telemetry_client(
            registry.clone(),
            args.client.client_options().map_err(Error::Config)?,
        );
        Ok(Service {
            ops: Ops {
                readiness: not_registered(),
                admin: None,
                _trace: Arc::new(micro_telemetry::trace::TraceGuard::default()),
            },
            name: args
                .server
                .server_name
                .clone()
                .unwrap_or_else(|| name.to_string()),
            version: args.server.server_version.clone(),
            server_options,
            registry,
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This service's readiness: what gRPC health and `/health/ready`
    /// report. Add dependency checks with
    /// [`ServerBuilder::readiness_check`](micro_server::ServerBuilder::readiness_check).
    pub fn readiness(&self) -> &Readiness {
        &self.ops.readiness
    }

    /// Where the admin listener (`--admin_address`) listens, if it does.
    pub fn admin_address(&self) -> Option<std::net::SocketAddr> {
        self.ops.admin.as_ref().map(|a| a.address)
    }

    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// Closes the registry (mDNS sends its goodbyes): call once, after the
    /// server stopped.
    pub async fn shutdown(&self) {
        self.registry.close().await;
    }

    /// A client that calls other services through the same registry.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A web service builder with this service's name, version, registry,
    /// server flags, readiness and client (see [`crate::web`]); add routes,
    /// then `bind().await?.run().await`.
    pub fn web(&self) -> crate::web::WebBuilder {
        crate::web::WebBuilder::new(
            &self.name,
            &self.version,
            self.registry.clone(),
            self.server_options.clone(),
            self.ops.readiness.clone(),
            self.client.clone(),
        )
    }

    /// A server builder with this service's name, version, registry and
    /// server flags, and telemetry (see [`telemetry_server`]); add
    /// handlers, then `bind().await?.run().await`.
    pub fn server(&self) -> ServerBuilder {
        telemetry_server(&self.name)
            .version(&self.version)
            .registry(self.registry.clone())
            .options(self.server_options.clone())
            .readiness(self.ops.readiness.clone())
    }
}
