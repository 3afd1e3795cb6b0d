//! How to reach etcd: endpoints, credentials, TLS and timeouts.
//!
//! [`parse_addresses`] turns the `--registry_address` text into endpoints:
//!
//! ```
//! use micro_registry_etcd::parse_addresses;
//!
//! let endpoints = parse_addresses("127.0.0.1, http://10.0.0.2:3379,[::1]").unwrap();
//! assert_eq!(endpoints, ["127.0.0.1:2379", "http://10.0.0.2:3379", "[::1]:2379"]);
//! assert!(parse_addresses("127.0.0.1:notaport").is_err());
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use micro_registry::Error;

/// The port etcd clients use unless told otherwise.
pub const DEFAULT_PORT: u16 = 2379;

/// The endpoint used when none is given, as in go-micro.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2379";

/// Entries larger than this are skipped when read (etcd itself accepts up to
/// 1.5 MiB per request by default).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// How to reach etcd. Build with [`EtcdOptions::new`] or
/// [`EtcdOptions::from_addresses`] and the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use micro_registry_etcd::EtcdOptions;
///
/// let options = EtcdOptions::from_addresses("127.0.0.1:2379,127.0.0.1:3379")
///     .unwrap()
///     .with_user("micro", "secret")
///     .with_request_timeout(Duration::from_secs(3));
/// assert_eq!(options.endpoints.len(), 2);
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Endpoints as returned by [`parse_addresses`]: `host:port`, or with an
    /// explicit `http://` / `https://` scheme. Without a scheme, `https` is
    /// used when [`tls`](Self::tls) is set, `http` otherwise.
    pub endpoints: Vec<String>,
    /// etcd user name (etcd's auth must be enabled for it to matter).
    pub username: Option<String>,
    /// Password of [`username`](Self::username).
    pub password: Option<String>,
    /// TLS to etcd; needs the `tls` feature (on by default).
    pub tls: Option<EtcdTls>,
    /// The longest a TCP (and TLS) connection to one endpoint may take.
    pub dial_timeout: Duration,
    /// The longest one registry operation may take, retries included.
    pub request_timeout: Duration,
    /// Entries larger than this are skipped when read.
    pub max_value_bytes: usize,
}

/// TLS settings for etcd endpoints. Paths are PEM files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate(s) to trust for the etcd servers.
    pub ca: Option<PathBuf>,
    /// Client certificate, for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// Key of [`cert`](Self::cert).
    pub key: Option<PathBuf>,
    /// Server name to verify, if not the endpoint's host.
    pub domain: Option<String>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec![DEFAULT_ADDRESS.to_string()],
            username: None,
            password: None,
            tls: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_value_bytes", &self.max_value_bytes)
            .finish()
    }
}

impl EtcdOptions {
    /// Options for these endpoints (already in [`parse_addresses`] form), with
    /// default timeouts.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdOptions::default()
        }
    }

    /// Options for a comma-separated address list (see [`parse_addresses`]);
    /// an empty text means [`DEFAULT_ADDRESS`].
    pub fn from_addresses(addresses: &str) -> Result<Self, Error> {
        if addresses.trim().is_empty() {
            return Ok(EtcdOptions::default());
        }
        Ok(EtcdOptions::new(parse_addresses(addresses)?))
    }

    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The endpoints as URLs the client dials, checked against the TLS setting.
    pub(crate) fn endpoint_urls(&self) -> Result<Vec<String>, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Invalid("no etcd endpoint given".into()));
        }
        let mut urls = Vec::with_capacity(self.endpoints.len());
        for endpoint in &self.endpoints {
            let parsed = parse_address(endpoint)?;
            let scheme = match parsed.scheme {
                Some(Scheme::Http) if self.tls.is_some() => {
                    return Err(Error::Invalid(format!(
                        "etcd endpoint {endpoint} is plain http:// but TLS options are set; \
                         write https:// or leave the scheme out"
                    )));
                }
                Some(Scheme::Http) => "http",
                Some(Scheme::Https) => "https",
                None if self.tls.is_some() => "https",
                None => "http",
            };
            urls.push(format!("{scheme}://{}", parsed.authority()));
        }
        Ok(urls)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

#[derive(Debug)]
struct Address {
    scheme: Option<Scheme>,
    /// IPv6 literals without brackets.
    host: String,
    port: u16,
}

impl Address {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn normalised(&self) -> String {
        match self.scheme {
            None => self.authority(),
            Some(Scheme::Http) => format!("http://{}", self.authority()),
            Some(Scheme::Https) => format!("https://{}", self.authority()),
        }
    }
}

/// Parses a comma-separated list of etcd addresses, as given to
/// `--registry_address`.
///
/// Each address is `host`, `host:port`, `[ipv6]` or `[ipv6]:port`, optionally
/// prefixed by `http://` or `https://` (kept in the result) and followed by a
/// `/`. The port defaults to [`DEFAULT_PORT`]. Empty items are ignored; a
/// malformed address is an [`Error::Invalid`] that names it.
pub fn parse_addresses(addresses: &str) -> Result<Vec<String>, Error> {
    let parsed: Vec<String> = addresses
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| parse_address(item).map(|a| a.normalised()))
        .collect::<Result<_, _>>()?;
    if parsed.is_empty() {
        return Err(Error::Invalid(format!(
            "no etcd address in {addresses:?}; expected e.g. 127.0.0.1:2379"
        )));
    }
    Ok(parsed)
}

fn parse_address(text: &str) -> Result<Address, Error> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "bad etcd address {text:?}: {why} (expected host[:port], [ipv6][:port], \
             optionally with http:// or https://)"
        ))
    };
    let trimmed = text.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        None => (None, trimmed),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (Some(Scheme::Http), rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (Some(Scheme::Https), rest),
        Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
        return Err(bad("only host and port are allowed"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed '['"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| bad(&format!("{host:?} is not an IPv6 address")))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("expected ':' after ']'"))?,
            ),
        };
        (host.to_string(), port)
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        // A bare IPv6 literal: unambiguous only without a port.
        (rest.to_string(), None)
    } else {
        match rest.split_once(':') {
            Some((_, after)) if after.contains(':') => {
                return Err(bad("an IPv6 address needs brackets, e.g. [::1]:2379"));
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (rest.to_string(), None),
        }
    };
    if !host.contains(':') && !valid_host_name(&host) {
        return Err(bad(&format!("{host:?} is not a host name or IP address")));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(0) => return Err(bad("port 0")),
            Ok(port) => port,
            Err(_) => return Err(bad(&format!("{port:?} is not a port number"))),
        },
    };
    Ok(Address { scheme, host, port })
}

fn valid_host_name(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
        })
        // All-numeric dotted text that is not an IPv4 address (e.g. 1.2.3.999).
        && !host.split('.').all(|label| label.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<String> {
        parse_addresses(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match parse_addresses(text) {
            Ok(parsed) => panic!("{text} parsed as {parsed:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_addresses_get_the_default_port() {
        assert_eq!(ok("127.0.0.1"), ["127.0.0.1:2379"]);
        assert_eq!(ok("127.0.0.1:3379"), ["127.0.0.1:3379"]);
        assert_eq!(ok("etcd-1.example.com"), ["etcd-1.example.com:2379"]);
        assert_eq!(ok("localhost:4379/"), ["localhost:4379"]);
    }

    #[test]
    fn schemes_are_kept_not_dropped() {
        assert_eq!(ok("http://127.0.0.1:3379"), ["http://127.0.0.1:3379"]);
        assert_eq!(ok("HTTPS://etcd:2379/"), ["https://etcd:2379"]);
        assert_eq!(ok("http://127.0.0.1"), ["http://127.0.0.1:2379"]);
    }

    #[test]
    fn lists_are_comma_separated_with_spaces_and_empty_items_ignored() {
        assert_eq!(
            ok(" 127.0.0.1:2379 , http://127.0.0.1:3379,,127.0.0.1:4379,"),
            ["127.0.0.1:2379", "http://127.0.0.1:3379", "127.0.0.1:4379"]
        );
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(ok("[::1]"), ["[::1]:2379"]);
        assert_eq!(ok("[::1]:3379"), ["[::1]:3379"]);
        assert_eq!(ok("https://[fe80::1]:2379"), ["https://[fe80::1]:2379"]);
        assert_eq!(ok("::1"), ["[::1]:2379"]);
    }

    #[test]
    fn malformed_addresses_are_named() {
        for text in [
            "127.0.0.1:notaport",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "ftp://127.0.0.1",
            "http://",
            "[::1",
            "[nothex]:2379",
            "[::1]2379",
            "fe80::1:2379:x",
            "host name",
            "127.0.0.1:2379/path",
            "user@127.0.0.1",
            "1.2.3.999",
        ] {
            let message = err(text);
            assert!(message.contains(text), "{text}: {message}");
        }
        assert!(err("  , ").contains("no etcd address"));
    }

    #[test]
    fn urls_pick_the_scheme_from_tls() {
        let plain = EtcdOptions::from_addresses("127.0.0.1,https://127.0.0.1:3379").expect("parse");
        assert_eq!(
            plain.endpoint_urls().expect("urls"),
            ["http://127.0.0.1:2379", "https://127.0.0.1:3379"]
        );
        let tls = plain.clone().with_tls(EtcdTls::default());
        assert_eq!(
            tls.endpoint_urls().expect("urls"),
            ["https://127.0.0.1:2379", "https://127.0.0.1:3379"]
        );
        let mixed = EtcdOptions::new(["http://127.0.0.1:2379"]).with_tls(EtcdTls::default());
        assert!(mixed.endpoint_urls().is_err());
        assert!(
            EtcdOptions::new(Vec::<String>::new())
                .endpoint_urls()
                .is_err()
        );
    }

    #[test]
    fn empty_text_means_the_default_endpoint() {
        assert_eq!(
            EtcdOptions::from_addresses(" ").expect("default").endpoints,
            [DEFAULT_ADDRESS]
        );
    }
}
