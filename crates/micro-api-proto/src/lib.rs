//! go-micro's `go.api` messages: the HTTP request `micro api --handler=api`
//! forwards to an API service, and the response it expects.
//!
//! ```
//! use micro_api_proto::{Pair, Request};
//!
//! let mut request = Request { method: "GET".into(), path: "/user/say/hello".into(), ..Default::default() };
//! request.get.insert("name".into(), Pair { key: "name".into(), values: vec!["huohuo".into()] });
//! assert_eq!(request.first_get("name"), Some("huohuo"));
//! ```

#[allow(missing_debug_implementations, clippy::all)]
mod generated {
    tonic::include_proto!("go.api");
}

pub use generated::{Event, Pair, Request, Response};

/// Encoded descriptors of `proto/go/api/api.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

fn first<'a>(map: &'a std::collections::HashMap<String, Pair>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(|pair| pair.values.first())
        .map(String::as_str)
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn first_get(&self, key: &str) -> Option<&str> {
        first(&self.get, key)
    }

    /// The first value of form field `key`.
    pub fn first_post(&self, key: &str) -> Option<&str> {
        first(&self.post, key)
    }

    /// The first value of header `key` (as the gateway wrote it, canonical case).
    pub fn first_header(&self, key: &str) -> Option<&str> {
        first(&self.header, key).or_else(|| {
            self.header
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, pair)| pair.values.first())
                .map(String::as_str)
        })
    }
}

impl Pair {
    pub fn new(key: impl Into<String>, values: Vec<String>) -> Self {
        Pair {
            key: key.into(),
            values,
        }
    }
}
