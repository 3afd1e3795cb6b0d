//! Resolved paths, kept. The api and rpc handlers see the same few paths on
//! every request: each is resolved once, and what a call to it needs (the
//! gRPC path, the route's name for telemetry) is built once with it.
//!
//! Only paths that resolve are kept, at most [`CAPACITY`]; past that the
//! whole table is dropped and refilled by the paths still in use, so a
//! flood of made-up paths costs memory for at most `CAPACITY` of them.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::uri::PathAndQuery;

use crate::error::ApiError;
use crate::resolver::{Resolver, Route};

/// How many resolved paths are kept.
pub(crate) const CAPACITY: usize = 1024;

/// One resolved path.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) route: Route,
    /// `/<service>.<Handler>/<Method>`; `None` if that is no valid URI path
    /// (the resolver's checks make this unreachable, but it is not assumed).
    pub(crate) grpc_path: Option<PathAndQuery>,
    /// `<service>/<Handler.Method>`, the route as telemetry names it.
    pub(crate) name: Arc<str>,
}

/// The gateway's resolver with its table of resolved paths.
#[derive(Debug)]
pub(crate) struct Routes {
    resolver: Resolver,
    known: RwLock<HashMap<Box<str>, Arc<Resolved>>>,
}

impl Routes {
    pub(crate) fn new(resolver: Resolver) -> Routes {
        Routes {
            resolver,
            known: RwLock::new(HashMap::new()),
        }
    }

    /// The route of `path` for the api and rpc handlers, or 404.
    pub(crate) fn resolve(&self, path: &str) -> Result<Arc<Resolved>, ApiError> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(hit) = known.get(path) {
            return Ok(hit.clone());
        }
        drop(known);
        let route = self
            .resolver
            .resolve(path)
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        let resolved = Arc::new(Resolved {
            grpc_path: PathAndQuery::try_from(route.grpc_path()).ok(),
            name: name(&route).into(),
            route,
        });
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= CAPACITY {
            known.clear();
        }
        known.insert(path.into(), resolved.clone());
        Ok(resolved)
    }

    /// How many paths are kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// `<service>/<Handler.Method>`.
fn name(route: &Route) -> String {
    let mut out =
        String::with_capacity(route.service.len() + route.handler.len() + route.method.len() + 2);
    out.push_str(&route.service);
    out.push('/');
    out.push_str(&route.handler);
    out.push('.');
    out.push_str(&route.method);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_resolves_to_its_route_and_call_path_once() {
        let routes = Routes::new(Resolver::new("go.micro.api"));
        let first = routes.resolve("/user/say/hello").expect("route");
        assert_eq!(first.route.service, "go.micro.api.user");
        assert_eq!(first.route.endpoint(), "Say.Hello");
        assert_eq!(
            first.grpc_path.as_ref().map(PathAndQuery::as_str),
            Some("/go.micro.api.user.Say/Hello")
        );
        assert_eq!(&*first.name, "go.micro.api.user/Say.Hello");
        let again = routes.resolve("/user/say/hello").expect("route");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second look-up is the kept one"
        );
        assert_eq!(routes.len(), 1);
    }

    #[test]
    fn paths_that_do_not_resolve_are_404_and_not_kept() {
        let routes = Routes::new(Resolver::new("go.micro.api"));
        let error = routes.resolve("/").expect_err("no service");
        assert_eq!(error.0.code, 404);
        let error = routes
            .resolve("/user/say/hel$lo")
            .expect_err("bad endpoint");
        assert_eq!(error.0.code, 404);
        assert_eq!(routes.len(), 0);
    }

    #[test]
    fn a_flood_of_paths_keeps_the_table_bounded() {
        let routes = Routes::new(Resolver::new("go.micro.api"));
        for i in 0..CAPACITY * 3 + 7 {
            routes
                .resolve(&format!("/svc{i}/say/hello"))
                .expect("route");
            assert!(routes.len() <= CAPACITY);
        }
        // Still answers, and keeps what it resolved last.
        let resolved = routes.resolve("/user/say/hello").expect("route");
        assert_eq!(resolved.route.service, "go.micro.api.user");
        assert!(routes.len() <= CAPACITY);
    }
}
