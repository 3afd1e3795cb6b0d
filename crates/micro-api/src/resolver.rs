//! The `micro` resolver: an HTTP path → a service name and an endpoint,
//! with go-micro v2's rules (`api/resolver/micro`).
//!
//! | path | service | endpoint |
//! | --- | --- | --- |
//! | `/foo` | `foo` | `Foo.Call` |
//! | `/foo/bar` | `foo` | `Foo.Bar` |
//! | `/foo/bar/baz` | `foo` | `Bar.Baz` |
//! | `/v1/foo/bar` | `v1.foo` | `Foo.Bar` |
//! | `/a/b/c/d` | `a.b` | `C.D` (all parts but the last two, joined by `.`) |
//! | `/user/say-hello` | `user` | `User.SayHello` (each `-` word capitalised) |
//!
//! The full service name is `<namespace>.<service>`:
//!
//! ```
//! use micro_api::Resolver;
//!
//! let route = Resolver::new("go.micro.api").resolve("/user/say/hello").unwrap();
//! assert_eq!(route.service, "go.micro.api.user");
//! assert_eq!(route.endpoint(), "Say.Hello");
//! assert_eq!(route.grpc_path(), "/go.micro.api.user.Say/Hello");
//! ```
//!
//! Beyond go-micro, a path that cannot name a callable endpoint (empty, with
//! characters a service or method name never has, a method that is not an
//! identifier) is rejected here rather than sent to the registry.

use std::borrow::Cow;

/// A resolved route: which service to call and which endpoint of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The full service name, `<namespace>.<service>`.
    pub service: String,
    /// The handler (proto service) name: `Say` in `Say.Hello`.
    pub handler: String,
    /// The method name: `Hello` in `Say.Hello`.
    pub method: String,
}

impl Route {
    /// The go-micro endpoint name, `Handler.Method`.
    pub fn endpoint(&self) -> String {
        format!("{}.{}", self.handler, self.method)
    }

    /// The gRPC path go-micro calls the endpoint at: `/<service>.<Handler>/<Method>`.
    pub fn grpc_path(&self) -> String {
        format!("/{}.{}/{}", self.service, self.handler, self.method)
    }
}

/// Why a path names no endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("path {} does not name a service", crate::error::shown(.0))]
    NoService(String),
    #[error("path {} does not name a valid endpoint", crate::error::shown(.0))]
    BadEndpoint(String),
    #[error("path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

/// go-micro's `micro` resolver, with a namespace.
#[derive(Clone, Debug)]
pub struct Resolver {
    namespace: String,
}

impl Resolver {
    /// A resolver that prefixes service names with `namespace`
    /// (`go.micro.api` by default in `micro api`). An empty namespace adds nothing.
    pub fn new(namespace: impl Into<String>) -> Self {
        Resolver {
            namespace: namespace.into().trim_matches('.').to_string(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The route of `path` for the `api` and `rpc` handlers.
    pub fn resolve(&self, path: &str) -> Result<Route, ResolveError> {
        let decoded = decode(path)?;
        let (service, handler, method) = api_route(&decoded);
        if service.is_empty() || !service.split('.').all(is_service_part) {
            return Err(ResolveError::NoService(decoded.into_owned()));
        }
        if !is_identifier(&handler) || !is_identifier(&method) {
            return Err(ResolveError::BadEndpoint(decoded.into_owned()));
        }
        Ok(Route {
            service: self.full_name(&service),
            handler,
            method,
        })
    }

    /// The full name of the service the `http` handler proxies `path` to:
    /// the first part (`/foo/...` → `foo`), or the first two for a version
    /// (`/v1/foo/...` → `v1.foo`). The part must be letters and digits,
    /// optionally in `-`-separated words, as go-micro requires.
    pub fn resolve_proxy(&self, path: &str) -> Result<String, ResolveError> {
        let decoded = decode(path)?;
        let cleaned = clean(&decoded);
        let parts: Vec<&str> = cleaned.split('/').collect();
        // `cleaned` starts with '/', so parts[0] is "".
        let (service, alias) = match parts.as_slice() {
            [_, version, name, ..] if is_version(version) => (format!("{version}.{name}"), *name),
            [_, name, ..] => ((*name).to_string(), *name),
            _ => return Err(ResolveError::NoService(decoded.into_owned())),
        };
        if !is_proxy_name(alias) {
            return Err(ResolveError::NoService(decoded.into_owned()));
        }
        Ok(self.full_name(&service))
    }

    fn full_name(&self, service: &str) -> String {
        if self.namespace.is_empty() {
            return service.to_string();
        }
        // Not format!: this runs on every request.
        let mut name = String::with_capacity(self.namespace.len() + 1 + service.len());
        name.push_str(&self.namespace);
        name.push('.');
        name.push_str(service);
        name
    }
}

/// go-micro's `apiRoute`: (service, handler, method) of a decoded path,
/// without validation.
fn api_route(path: &str) -> (String, String, String) {
    let cleaned = clean_cow(path);
    let trimmed = cleaned.strip_prefix('/').unwrap_or(&cleaned);
    let parts: Vec<&str> = trimmed.split('/').collect();
    match parts.as_slice() {
        // One part: Name.Call.
        [one] if !one.is_empty() => (one.to_string(), to_camel(one), "Call".into()),
        // Two or fewer: the first part is the service, all parts the method.
        [_] | [] => (String::new(), String::new(), String::new()),
        [first, second] => (first.to_string(), to_camel(first), to_camel(second)),
        // Three parts starting with v[0-9]+: /v1/foo/bar → v1.foo, Foo.Bar.
        [version, name, method] if is_version(version) => (
            format!("{version}.{name}"),
            to_camel(name),
            to_camel(method),
        ),
        // Everything but the last two parts is the service.
        [service @ .., handler, method] => (service.join("."), to_camel(handler), to_camel(method)),
    }
}

/// Percent-decodes a URL path, as Go's `URL.Path` is.
fn decode(path: &str) -> Result<Cow<'_, str>, ResolveError> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| ResolveError::NotUtf8)
}

/// Go's `path.Clean` for a path made rooted: one slash between parts, no `.`
/// parts, `..` removes the part before it, and never climbs above the root.
pub(crate) fn clean(path: &str) -> String {
    clean_cow(path).into_owned()
}

/// [`clean`], borrowing `path` when it is clean already (the usual case:
/// rooted, no empty, `.` or `..` part), so a request's path is not copied.
fn clean_cow(path: &str) -> Cow<'_, str> {
    let is_clean = path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|part| !matches!(part, "" | "." | ".."));
    if is_clean {
        return Cow::Borrowed(path);
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&parts.join("/"));
    Cow::Owned(out)
}

/// go-micro's `toCamel`: split on `-`, `strings.Title` each word, join
/// (into one string: no allocation per word).
fn to_camel(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for word in part.split('-') {
        title_into(&mut out, word);
    }
    out
}

/// Go's `strings.Title`: upper-cases each letter that starts a word (follows
/// a separator: a space or an ASCII character other than a letter, digit or `_`).
#[cfg(test)]
fn title(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    title_into(&mut out, word);
    out
}

/// [`title`] of `word`, appended to `out`.
fn title_into(out: &mut String, word: &str) {
    let mut previous_separates = true;
    for c in word.chars() {
        if previous_separates {
            // ASCII (nearly every path) without the Unicode tables.
            if c.is_ascii() {
                out.push(c.to_ascii_uppercase());
            } else {
                out.extend(c.to_uppercase());
            }
        } else {
            out.push(c);
        }
        previous_separates = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        };
    }
}

/// `^v[0-9]+$`
fn is_version(part: &str) -> bool {
    part.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$`, go-micro's rule for proxied service names.
fn is_proxy_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// One dot-separated part of a service name.
fn is_service_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A handler or method name that can appear in a gRPC path.
fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "/"),
            ("/", "/"),
            ("//a//b/", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("a/b", "/a/b"),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn title_matches_go() {
        assert_eq!(title("hello"), "Hello");
        assert_eq!(title("hello_world"), "Hello_world");
        assert_eq!(title("a.b"), "A.B");
        assert_eq!(title("2fa"), "2fa");
        assert_eq!(title(""), "");
    }
}
