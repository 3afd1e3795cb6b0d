//! go-micro's method paths.
//!
//! A go-micro client calls endpoint `Handler.Method` of service `S` at
//! `/S.Handler/Method` (`/go.micro.srv.user.User/QueryUserByName`), and a
//! go-micro server ignores everything before the last dot of the first path
//! segment. [`HandlerPaths`] does the same in front of tonic's router, so a
//! proto package that differs from the registered service name still routes,
//! and plain gRPC clients using the proto package work too.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use tower::{Layer, Service};

/// Maps a handler name (`User`) to the full proto service name
/// (`go.micro.srv.user.User`) tonic routes on.
#[derive(Clone, Debug, Default)]
pub(crate) struct HandlerPaths {
    by_handler: Arc<HashMap<String, String>>,
}

impl HandlerPaths {
    pub(crate) fn new(by_handler: HashMap<String, String>) -> Self {
        HandlerPaths {
            by_handler: Arc::new(by_handler),
        }
    }

    /// The path tonic should route `path` to, if it differs.
    pub(crate) fn rewrite(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix('/')?;
        let (service, method) = rest.split_once('/')?;
        let handler = service.rsplit_once('.').map_or(service, |(_, h)| h);
        let full = self.by_handler.get(handler)?;
        (full != service).then(|| format!("/{full}/{method}"))
    }
}

impl<S> Layer<S> for HandlerPaths {
    type Service = Rewrite<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite {
            inner,
            paths: self.clone(),
        }
    }
}

/// The service [`HandlerPaths`] produces.
#[derive(Clone, Debug)]
pub(crate) struct Rewrite<S> {
    inner: S,
    paths: HandlerPaths,
}

impl<S, B> Service<http::Request<B>> for Rewrite<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(path) = self.paths.rewrite(request.uri().path()) {
            let mut parts = request.uri().clone().into_parts();
            if let Ok(pq) = PathAndQuery::try_from(path) {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> HandlerPaths {
        HandlerPaths::new(HashMap::from([(
            "User".to_string(),
            "go.micro.srv.user.User".to_string(),
        )]))
    }

    #[test]
    fn any_prefix_before_the_handler_routes_to_it() {
        let p = paths();
        assert_eq!(p.rewrite("/go.micro.srv.user.User/QueryUserByName"), None);
        assert_eq!(
            p.rewrite("/go.micro.api.user.User/QueryUserByName")
                .as_deref(),
            Some("/go.micro.srv.user.User/QueryUserByName")
        );
        assert_eq!(
            p.rewrite("/User/QueryUserByName").as_deref(),
            Some("/go.micro.srv.user.User/QueryUserByName")
        );
    }

    #[test]
    fn unknown_or_malformed_paths_pass_through() {
        let p = paths();
        for path in ["/", "", "/x.Post/Get", "/nothing", "/.User", "User/X"] {
            assert_eq!(p.rewrite(path), None, "{path}");
        }
    }
}
