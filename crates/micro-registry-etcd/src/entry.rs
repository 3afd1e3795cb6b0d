//! The etcd layout go-micro v2 uses, and the checks an entry read from etcd
//! must pass before anyone may dial its nodes.
//!
//! One key per node, `/micro/registry/<service>/<node id>` (`/` inside a name
//! becomes `-`), holding the JSON of the service with only that node.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use micro_registry::{Detail, Node, Service};
use serde::{Deserialize, Deserializer};

/// Where go-micro v2 keeps its registry.
pub const PREFIX: &str = "/micro/registry/";

/// How many distinct bad entries are remembered so each is warned about once.
const WARNED_CAPACITY: usize = 4096;

/// A name as go-micro puts it in a key.
pub fn encode(name: &str) -> String {
    name.replace('/', "-")
}

/// The key of one node of a service.
pub fn node_key(service: &str, node_id: &str) -> String {
    format!("{PREFIX}{}/{}", encode(service), encode(node_id))
}

/// The prefix under which all nodes of a service live.
pub fn service_prefix(service: &str) -> String {
    format!("{PREFIX}{}/", encode(service))
}

/// Splits a registry key into its service and node parts.
pub fn split_key(key: &[u8]) -> Option<(&str, &str)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(PREFIX)?;
    let (service, node) = rest.split_once('/')?;
    if service.is_empty() || node.is_empty() || node.contains('/') {
        return None;
    }
    Some((service, node))
}

/// Checks a node address is something one can dial: `host:port` with a
/// non-empty host (IPv6 in brackets) and a port from 1 to 65535.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("empty address".into());
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("address {address:?} is not [ipv6]:port"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("address {address:?} has a bad IPv6 host"))?;
        (host, port)
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("address {address:?} has no port"))?;
        if host.contains(':') {
            return Err(format!("address {address:?}: IPv6 host without brackets"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(format!("address {address:?} has no host"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#@[]".contains(c))
    {
        return Err(format!("address {address:?} has a bad host"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!("address {address:?} has port 0")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("address {address:?} has a bad port")),
    }
}

/// The bounded `reason` label of a skipped entry (the reason text itself
/// carries names and sizes).
fn skip_label(reason: &str) -> &'static str {
    if reason.starts_with("key is not") {
        "bad_key"
    } else if reason.starts_with("value of") {
        "oversized"
    } else if reason.starts_with("value is not") {
        "bad_json"
    } else if reason.contains("node") {
        "bad_node"
    } else {
        "bad_service"
    }
}

/// Decodes entries read from etcd, skipping (and counting) the bad ones.
#[derive(Debug)]
pub struct Decoder {
    max_value_bytes: usize,
    skipped: AtomicU64,
    /// (key, mod revision) of bad entries already warned about.
    warned: Mutex<HashSet<(Vec<u8>, i64)>>,
}

impl Decoder {
    pub fn new(max_value_bytes: usize) -> Self {
        Decoder {
            max_value_bytes,
            skipped: AtomicU64::new(0),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// How many entries or nodes were skipped so far (each read counts).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The service an entry holds, with only its valid nodes; `None` (counted
    /// and logged) if nothing usable is left. `expected` is the service name
    /// asked for, if any.
    pub fn decode(
        &self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
        expected: Option<&str>,
    ) -> Option<Service> {
        self.decode_as(key, value, mod_revision, expected, Detail::Full)
    }

    /// [`decode`](Self::decode), reading only what `detail` asks: with
    /// [`Detail::Nodes`], the name, version and each node's id and address
    /// (metadata and endpoint descriptions are skipped, not decoded).
    pub fn decode_as(
        &self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
        expected: Option<&str>,
        detail: Detail,
    ) -> Option<Service> {
        match self.try_decode(key, value, expected, detail) {
            Ok((service, dropped)) => {
                for reason in dropped {
                    self.skip(key, mod_revision, &reason);
                }
                Some(service)
            }
            Err(reason) => {
                self.skip(key, mod_revision, &reason);
                None
            }
        }
    }

    /// An entry read without the checks (a deleted node's previous value):
    /// `None` if it is too large or not a service.
    pub fn read_leniently(&self, value: &[u8], detail: Detail) -> Option<Service> {
        if value.len() > self.max_value_bytes {
            return None;
        }
        match detail {
            Detail::Full => serde_json::from_slice(value).ok(),
            Detail::Nodes => Brief::read(value).ok().map(Brief::into_service),
        }
    }

    fn try_decode(
        &self,
        key: &[u8],
        value: &[u8],
        expected: Option<&str>,
        detail: Detail,
    ) -> Result<(Service, Vec<String>), String> {
        let (key_service, key_node) = split_key(key)
            .ok_or_else(|| "key is not /micro/registry/<service>/<node>".to_string())?;
        if value.len() > self.max_value_bytes {
            return Err(format!(
                "value of {} bytes exceeds the {}-byte limit",
                value.len(),
                self.max_value_bytes
            ));
        }
        let mut service: Service = match detail {
            Detail::Full => serde_json::from_slice(value),
            Detail::Nodes => Brief::read(value).map(Brief::into_service),
        }
        .map_err(|e| format!("value is not a service: {e}"))?;
        if service.name.is_empty() {
            return Err("service has no name".into());
        }
        if encode(&service.name) != key_service {
            return Err(format!(
                "service {:?} does not belong under key segment {key_service:?}",
                service.name
            ));
        }
        if let Some(expected) = expected
            && service.name != expected
        {
            return Err(format!(
                "service {:?} found under the prefix of {expected:?}",
                service.name
            ));
        }
        if service.nodes.is_empty() {
            return Err("entry has no node".into());
        }
        let mut dropped = Vec::new();
        let nodes = std::mem::take(&mut service.nodes);
        service.nodes = nodes
            .into_iter()
            .filter(|node| match check_node(node, key_node) {
                Ok(()) => true,
                Err(reason) => {
                    dropped.push(reason);
                    false
                }
            })
            .collect();
        if service.nodes.is_empty() {
            // Every node was bad: one skip per entry is enough.
            return Err(dropped.join("; "));
        }
        Ok((service, dropped))
    }

    fn skip(&self, key: &[u8], mod_revision: i64, reason: &str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        micro_registry::skipped::record("etcd", skip_label(reason), 1);
        let key_text = String::from_utf8_lossy(key);
        let first_time = {
            let mut warned = self
                .warned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if warned.len() >= WARNED_CAPACITY {
                warned.clear();
            }
            warned.insert((key.to_vec(), mod_revision))
        };
        if first_time {
            tracing::warn!(key = %key_text, reason, "Registry [etcd] skipping bad entry");
        } else {
            tracing::debug!(key = %key_text, reason, "Registry [etcd] skipping bad entry");
        }
    }
}

/// What [`Detail::Nodes`] reads of an entry; every other field is skipped.
#[derive(Deserialize)]
struct Brief {
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    nodes: Vec<BriefNode>,
}

#[derive(Default, Deserialize)]
struct BriefNode {
    #[serde(default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    address: String,
}

impl Brief {
    /// Reads an entry's name, version and nodes. go-micro (and this crate)
    /// write an entry's fields in one order, `{"name":…,"version":…,
    /// "metadata":…,"endpoints":…,"nodes":[…]}`, and the endpoint
    /// descriptions between are most of its bytes: in that shape the name
    /// and version are read from the start and the nodes from the last
    /// `,"nodes":`, and the descriptions are not scanned (so a value
    /// malformed only inside them is not noticed at this detail). Any other
    /// shape is decoded whole.
    fn read(value: &[u8]) -> serde_json::Result<Brief> {
        match Self::read_canonical(value) {
            Some(brief) => Ok(brief),
            None => serde_json::from_slice(value),
        }
    }

    fn read_canonical(value: &[u8]) -> Option<Brief> {
        let rest = value.strip_prefix(b"{\"name\":\"")?;
        let (name, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(b",\"version\":")?;
        let version = match rest.strip_prefix(b"\"") {
            Some(rest) => plain_string(rest)?.0,
            None if rest.starts_with(b"null") => String::new(),
            None => return None,
        };
        const NODES: &[u8] = b",\"nodes\":";
        let body = value.strip_suffix(b"}")?;
        // The nodes come last: search from the end (a quote inside a JSON
        // string is escaped, so this text only occurs as a key).
        let at = memchr::memmem::rfind(body, NODES)?;
        let nodes: Option<Vec<BriefNode>> =
            serde_json::from_slice(&body[at + NODES.len()..]).ok()?;
        Some(Brief {
            name,
            version,
            nodes: nodes.unwrap_or_default(),
        })
    }

    fn into_service(self) -> Service {
        Service {
            name: self.name,
            version: self.version,
            nodes: self
                .nodes
                .into_iter()
                .map(|n| Node::new(n.id, n.address))
                .collect(),
            ..Service::default()
        }
    }
}

/// A JSON string's text up to its closing quote, and what follows; `None`
/// if it has an escape (the whole entry is decoded then).
fn plain_string(text: &[u8]) -> Option<(String, &[u8])> {
    let end = text
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if text[end] != b'"' {
        return None;
    }
    let string = std::str::from_utf8(&text[..end]).ok()?.to_string();
    Some((string, &text[end + 1..]))
}

/// go-micro writes `null` for an absent map or list (and a value may be null).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn check_node(node: &Node, key_node: &str) -> Result<(), String> {
    if node.id.trim().is_empty() {
        return Err("node has an empty id".into());
    }
    if encode(&node.id) != key_node {
        return Err(format!(
            "node {:?} does not belong under key segment {key_node:?}",
            node.id
        ));
    }
    check_address(&node.address).map_err(|e| format!("node {}: {e}", node.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_go_micro() {
        assert_eq!(
            node_key("go.micro.srv.greeter", "go.micro.srv.greeter-1"),
            "/micro/registry/go.micro.srv.greeter/go.micro.srv.greeter-1"
        );
        assert_eq!(node_key("a/b", "a/b-1"), "/micro/registry/a-b/a-b-1");
        assert_eq!(service_prefix("a/b"), "/micro/registry/a-b/");
        assert_eq!(split_key(b"/micro/registry/a/b"), Some(("a", "b")));
        assert_eq!(split_key(b"/micro/registry/a/b/c"), None);
        assert_eq!(split_key(b"/micro/registry/a"), None);
        assert_eq!(split_key(b"/other/a/b"), None);
    }

    #[test]
    fn addresses() {
        for good in [
            "127.0.0.1:1",
            "host:65535",
            "[::1]:8080",
            "my-host.local:80",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            ":8080",
            "127.0.0.1:x",
            "127.0.0.1:70000",
            "::1:80",
            "[::1]",
            "[zz]:80",
            "a b:80",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    fn entry(name: &str, id: &str, address: &str) -> Vec<u8> {
        let service = Service::new(name, "latest").with_node(Node::new(id, address));
        serde_json::to_vec(&service).expect("json")
    }

    #[test]
    fn bad_entries_are_skipped_and_counted() {
        let decoder = Decoder::new(1024);
        let key = node_key("svc", "svc-1");
        let good = entry("svc", "svc-1", "127.0.0.1:80");
        assert!(
            decoder
                .decode(key.as_bytes(), &good, 1, Some("svc"))
                .is_some()
        );
        assert_eq!(decoder.skipped(), 0);

        let bad: Vec<Vec<u8>> = vec![
            b"{not json".to_vec(),
            entry("svc", "svc-1", ""),
            entry("svc", "svc-1", "127.0.0.1:0"),
            entry("other", "svc-1", "127.0.0.1:80"),
            entry("svc", "svc-2", "127.0.0.1:80"),
            br#"{"name":"svc","nodes":[]}"#.to_vec(),
            vec![b' '; 2048],
        ];
        for (i, value) in bad.iter().enumerate() {
            assert!(
                decoder.decode(key.as_bytes(), value, 1, None).is_none(),
                "case {i}"
            );
        }
        assert_eq!(decoder.skipped(), bad.len() as u64);
        assert!(
            decoder
                .decode(b"/micro/registry/x", &good, 1, None)
                .is_none()
        );
    }

    #[test]
    fn bad_nodes_are_dropped_from_a_good_entry() {
        let decoder = Decoder::new(1 << 20);
        let key = node_key("svc", "svc-1");
        let service = Service::new("svc", "latest")
            .with_node(Node::new("svc-1", "127.0.0.1:80"))
            .with_node(Node::new("svc-1", "127.0.0.1:0"));
        let value = serde_json::to_vec(&service).expect("json");
        let got = decoder
            .decode(key.as_bytes(), &value, 1, None)
            .expect("decoded");
        assert_eq!(got.nodes.len(), 1);
        assert_eq!(decoder.skipped(), 1);
    }

    /// What the canonical reading gives equals a whole decode, and it is
    /// taken for the entries go-micro and this crate write.
    #[test]
    fn the_canonical_reading_agrees_with_a_whole_decode() {
        use micro_registry::{Endpoint, Value};
        let whole = |v: &[u8]| {
            serde_json::from_slice::<Brief>(v)
                .expect("decodes")
                .into_service()
        };
        let canonical = |v: &[u8]| Brief::read_canonical(v).map(Brief::into_service);
        let ours = serde_json::to_vec(
            &Service::new("svc", "v2")
                .with_metadata("nodes", "[1]")
                .with_endpoint(Endpoint {
                    request: Some(Value::new("nodes", "Request")),
                    metadata: [("x".to_string(), r#","nodes":["#.to_string())].into(),
                    ..Endpoint::new("Svc.Call")
                })
                .with_node(Node::new("svc-1", "127.0.0.1:80").with_metadata("a", "b"))
                .with_node(Node::new("svc-2", "[::1]:80")),
        )
        .expect("json");
        let golden = go_micro_golden_entry();
        let null_version = br#"{"name":"svc","version":null,"metadata":null,"endpoints":null,"nodes":[{"id":"svc-1","address":"127.0.0.1:80","metadata":null}]}"#;
        let null_nodes =
            br#"{"name":"svc","version":"1","metadata":null,"endpoints":null,"nodes":null}"#;
        for value in [&ours[..], golden.as_bytes(), null_version, null_nodes] {
            assert_eq!(
                canonical(value),
                Some(whole(value)),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        // Other shapes are decoded whole.
        for other in [
            &br#"{"nodes":[{"id":"svc-1","address":"127.0.0.1:80"}],"name":"svc","version":"1"}"#[..],
            br#"{"name":"s\u0076c","version":"1","nodes":[]}"#,
            br#"{"name":"svc","version":"1","nodes":[],"extra":1}"#,
            br#" {"name":"svc","version":"1","nodes":[]}"#,
        ] {
            assert!(
                canonical(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
            assert!(Brief::read(other).is_ok());
        }
    }

    /// go-micro v2.9.1's own entry (testdata/go-micro-v2/etcd/value.json).
    fn go_micro_golden_entry() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/go-micro-v2/etcd/value.json");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim_end()
            .to_string()
    }

    #[test]
    fn nodes_detail_reads_names_and_nodes_and_skips_the_rest() {
        use micro_registry::{Endpoint, Value};
        let decoder = Decoder::new(1 << 20);
        let key = node_key("svc", "svc-1");
        let full = Service::new("svc", "v2")
            .with_metadata("team", "core")
            .with_endpoint(Endpoint {
                request: Some(Value::new("Request", "Request")),
                ..Endpoint::new("Svc.Call")
            })
            .with_node(Node::new("svc-1", "127.0.0.1:80").with_metadata("server", "grpc"));
        let value = serde_json::to_vec(&full).expect("json");
        let got = decoder
            .decode_as(key.as_bytes(), &value, 1, None, Detail::Nodes)
            .expect("decoded");
        assert_eq!(
            got,
            Service::new("svc", "v2").with_node(Node::new("svc-1", "127.0.0.1:80"))
        );
        // The same checks as a full read: a node under another key is dropped.
        let other = node_key("svc", "svc-2");
        assert!(
            decoder
                .decode_as(other.as_bytes(), &value, 1, None, Detail::Nodes)
                .is_none()
        );
        assert_eq!(decoder.skipped(), 1);
        // go-micro's nulls are read as empty.
        let nulls = br#"{"name":"svc","version":null,"metadata":null,"endpoints":null,"nodes":[{"id":"svc-1","address":"127.0.0.1:80","metadata":null}]}"#;
        let got = decoder
            .decode_as(key.as_bytes(), nulls, 2, None, Detail::Nodes)
            .expect("decoded");
        assert_eq!(got.version, "");
        assert_eq!(got.nodes[0].id, "svc-1");
    }
}
