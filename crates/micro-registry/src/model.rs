//! The go-micro v2 registry data model.
//!
//! These types serialise to exactly the JSON go-micro v2 writes (same keys, same
//! order, `null` where Go writes a nil map or slice), so that an entry written by
//! a go-micro service can be read here and ours can be read there:
//!
//! ```
//! use micro_registry::{Node, Service};
//!
//! let service = Service::new("go.micro.srv.greeter", "latest")
//!     .with_node(Node::new("go.micro.srv.greeter-1", "127.0.0.1:4242"));
//! let json = serde_json::to_string(&service).unwrap();
//! assert!(json.starts_with(r#"{"name":"go.micro.srv.greeter","version":"latest","metadata":null"#));
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// String key/value metadata. Sorted, as Go's `encoding/json` sorts map keys.
pub type Metadata = BTreeMap<String, String>;

/// A named service: one or more nodes running the same version.
///
/// A registry lookup returns one `Service` per version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// go-micro writes `null` for a service without metadata.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        serialize_with = "map_or_null"
    )]
    pub metadata: Metadata,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        serialize_with = "seq_or_null"
    )]
    pub endpoints: Vec<Endpoint>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        serialize_with = "seq_or_null"
    )]
    pub nodes: Vec<Node>,
}

/// One running instance of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `<service name>-<uuid v4>` for nodes started by a toolkit server.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// `host:port` (IPv6 hosts in brackets).
    #[serde(default, deserialize_with = "null_as_default")]
    pub address: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}

/// A callable method, named `Handler.Method`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub request: Option<Value>,
    #[serde(default)]
    pub response: Option<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
}

/// The shape of a request or response message: a tree of named, typed values.
///
/// go-micro describes at most three levels; deeper fields are omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        serialize_with = "seq_or_null"
    )]
    pub values: Vec<Value>,
}

impl Service {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Service {
            name: name.into(),
            version: version.into(),
            ..Service::default()
        }
    }

    pub fn with_node(mut self, node: Node) -> Self {
        self.nodes.push(node);
        self
    }

    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// This service with only the given node: the unit a registry stores per node.
    pub fn for_node(&self, node: &Node) -> Service {
        Service {
            name: self.name.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            endpoints: self.endpoints.clone(),
            nodes: vec![node.clone()],
        }
    }
}

impl Node {
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        Node {
            id: id.into(),
            address: address.into(),
            metadata: Metadata::new(),
        }
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl Endpoint {
    pub fn new(name: impl Into<String>) -> Self {
        Endpoint {
            name: name.into(),
            ..Endpoint::default()
        }
    }
}

impl Value {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Value {
            name: name.into(),
            kind: kind.into(),
            values: Vec::new(),
        }
    }

    pub fn with_values(mut self, values: Vec<Value>) -> Self {
        self.values = values;
        self
    }
}

/// Merges services that share a version into one `Service` per version, keeping
/// the newest endpoints seen and one entry per node id. Order: first appearance.
pub fn group_by_version(services: impl IntoIterator<Item = Service>) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    // name → positions in `out` (one per version): a listing of every node
    // of every service is grouped in one pass, not a scan of `out` per entry.
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for service in services {
        let found = by_name.get(&service.name).and_then(|at| {
            at.iter()
                .copied()
                .find(|&i| out[i].version == service.version)
        });
        match found {
            Some(i) => {
                let existing = &mut out[i];
                if !service.endpoints.is_empty() {
                    existing.endpoints = service.endpoints;
                }
                if !service.metadata.is_empty() {
                    existing.metadata = service.metadata;
                }
                for node in service.nodes {
                    match existing.nodes.iter_mut().find(|n| n.id == node.id) {
                        Some(slot) => *slot = node,
                        None => existing.nodes.push(node),
                    }
                }
            }
            None => {
                by_name
                    .entry(service.name.clone())
                    .or_default()
                    .push(out.len());
                out.push(service);
            }
        }
    }
    out
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn map_or_null<S: Serializer>(map: &Metadata, serializer: S) -> Result<S::Ok, S::Error> {
    if map.is_empty() {
        serializer.serialize_none()
    } else {
        map.serialize(serializer)
    }
}

fn seq_or_null<S: Serializer, T: Serialize>(seq: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    if seq.is_empty() {
        serializer.serialize_none()
    } else {
        seq.serialize(serializer)
    }
}
