use std::sync::Arc;

use micro_client::Client;
use micro_config::{MicroArgs, RegistryArgs, RegistryKind};
use micro_registry::SharedRegistry;
use micro_registry::memory::MemoryRegistry;
use micro_server::{Server, ServerBuilder, ServerOptions};

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
            Error::Config(_) | Error::Server(micro_server::ServerError::Options(_))
        )
    }
}

/// Builds the registry the flags name.
pub async fn connect_registry(args: &RegistryArgs) -> Result<SharedRegistry, Error> {
    match args.registry {
        RegistryKind::Memory => Ok(Arc::new(MemoryRegistry::new())),
        other => Err(Error::Config(format!(
            "registry {other} is not available in this build (available: memory)"
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
}

impl Service {
    /// Sets up service `name` (`--server_name` overrides it) from the shared
    /// flags: connects the registry and makes a client on it.
    pub async fn new(name: &str, args: &MicroArgs) -> Result<Service, Error> {
        args.server.server_options().map_err(Error::Config)?;
        let registry = connect_registry(&args.registry).await?;
        Service::with_registry(name, args, registry)
    }

    /// Like [`new`](Self::new), on a registry you made.
    pub fn with_registry(
        name: &str,
        args: &MicroArgs,
        registry: SharedRegistry,
    ) -> Result<Service, Error> {
        let server_options = args.server.server_options().map_err(Error::Config)?;
        let client = Client::new(registry.clone(), args.client.client_options());
        Ok(Service {
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

    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// A client that calls other services through the same registry.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A server builder with this service's name, version, registry and
    /// server flags; add handlers, then `bind().await?.run().await`.
    pub fn server(&self) -> ServerBuilder {
        Server::builder(&self.name)
            .version(&self.version)
            .registry(self.registry.clone())
            .options(self.server_options.clone())
    }
}
