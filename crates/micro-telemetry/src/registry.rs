//! A registry that counts its operations:
//! `micro_registry_operations_total{registry,op,result}`.

use micro_registry::{
    Detail, Error, RegisterOptions, Registry, Service, SharedRegistry, WatchOptions, Watcher,
};

use crate::metrics::registry_operation;

/// Wraps any registry; every operation is counted by result (`ok`,
/// `not_found`, `error`).
#[derive(Debug)]
pub struct MeteredRegistry {
    inner: SharedRegistry,
}

impl MeteredRegistry {
    pub fn new(inner: SharedRegistry) -> Self {
        MeteredRegistry { inner }
    }

    pub fn shared(inner: SharedRegistry) -> SharedRegistry {
        std::sync::Arc::new(MeteredRegistry::new(inner))
    }

    fn count<T>(&self, op: &str, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.is_not_found() => "not_found",
            Err(_) => "error",
        };
        registry_operation(self.inner.name(), op, outcome);
    }
}

#[async_trait::async_trait]
impl Registry for MeteredRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        let result = self.inner.register(service, options).await;
        self.count("register", &result);
        result
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        let result = self.inner.deregister(service).await;
        self.count("deregister", &result);
        result
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let result = self.inner.get_service(name).await;
        self.count("get_service", &result);
        result
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        let result = self.inner.list_services().await;
        self.count("list_services", &result);
        result
    }

    async fn list_services_with(&self, detail: Detail) -> Result<Vec<Service>, Error> {
        let result = self.inner.list_services_with(detail).await;
        self.count("list_services", &result);
        result
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        let result = self.inner.watch(options).await;
        self.count("watch", &result);
        result
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use micro_registry::memory::MemoryRegistry;
    use micro_registry::{Node, Registry};

    use super::*;
    use crate::metrics::metrics;

    #[tokio::test]
    async fn operations_are_counted_by_result() {
        let registry = MeteredRegistry::new(Arc::new(MemoryRegistry::new()));
        let count = |op: &str, result: &str| {
            metrics()
                .registry_operations
                .with_label_values(&["memory", op, result])
                .get()
        };
        let before = count("get_service", "not_found");
        assert!(registry.get_service("nobody").await.is_err());
        assert_eq!(count("get_service", "not_found"), before + 1);
        let service = Service::new("s", "latest").with_node(Node::new("s-1", "127.0.0.1:1"));
        let before = count("register", "ok");
        registry
            .register(&service, RegisterOptions::default())
            .await
            .expect("register");
        assert_eq!(count("register", "ok"), before + 1);
    }
}
