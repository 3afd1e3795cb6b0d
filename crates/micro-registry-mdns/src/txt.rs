//! go-micro v2's TXT payload: what a node's TXT record carries.
//!
//! JSON `{"Service","Version","Endpoints","Metadata"}` (capitalised keys; the
//! endpoints inside keep the model's lowercase keys; `Metadata` is the *node's*
//! metadata), zlib-compressed, hex-encoded and cut into character-strings of at
//! most 255 bytes. Decoding joins the strings again, so any split is accepted.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use micro_registry::{Endpoint, Metadata};
use serde::{Deserialize, Serialize, Serializer};

/// A DNS character-string holds at most 255 bytes.
pub(crate) const MAX_STRING: usize = 255;
/// The most hex text we accept: more than fits in one mDNS message anyway.
pub(crate) const MAX_HEX: usize = 64 * 1024;
/// The most JSON a TXT may inflate to (against zlib bombs).
pub(crate) const MAX_JSON: u64 = 1024 * 1024;

/// The decoded TXT of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxtInfo {
    /// The node id, when the instance name cannot carry it (a DNS label holds
    /// at most 63 bytes). Not a go-micro field; go-micro ignores it.
    pub id: Option<String>,
    pub service: String,
    pub version: String,
    pub endpoints: Vec<Endpoint>,
    /// The node's metadata.
    pub metadata: Metadata,
}

#[derive(Serialize)]
struct TxtOut<'a> {
    #[serde(rename = "Id", skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "Service")]
    service: &'a str,
    #[serde(rename = "Version")]
    version: &'a str,
    /// Go writes `null` for a nil slice.
    #[serde(rename = "Endpoints", serialize_with = "seq_or_null")]
    endpoints: &'a [Endpoint],
    #[serde(rename = "Metadata")]
    metadata: &'a Metadata,
}

#[derive(Deserialize)]
struct TxtIn {
    #[serde(rename = "Id", default)]
    id: Option<String>,
    #[serde(rename = "Service", default)]
    service: Option<String>,
    #[serde(rename = "Version", default)]
    version: Option<String>,
    #[serde(rename = "Endpoints", default)]
    endpoints: Option<Vec<Endpoint>>,
    #[serde(rename = "Metadata", default)]
    metadata: Option<Metadata>,
}

fn seq_or_null<S: Serializer>(items: &&[Endpoint], serializer: S) -> Result<S::Ok, S::Error> {
    if items.is_empty() {
        serializer.serialize_none()
    } else {
        serializer.collect_seq(items.iter())
    }
}

/// Why a TXT could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxtError {
    #[error("TXT is empty")]
    Empty,
    #[error("TXT is too large ({0} bytes of hex)")]
    TooLarge(usize),
    #[error("TXT is not hex: {0}")]
    Hex(#[from] hex::FromHexError),
    #[error("TXT is not zlib data: {0}")]
    Zlib(std::io::Error),
    #[error("TXT inflates to more than {MAX_JSON} bytes")]
    Inflated,
    #[error("TXT is not go-micro JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("TXT names no service")]
    NoService,
}

impl TxtInfo {
    /// Encodes as go-micro does: JSON → zlib → hex → ≤255-byte strings.
    pub(crate) fn encode(&self) -> Result<Vec<String>, std::io::Error> {
        let json = serde_json::to_vec(&TxtOut {
            id: self.id.as_deref(),
            service: &self.service,
            version: &self.version,
            endpoints: &self.endpoints,
            metadata: &self.metadata,
        })?;
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&json)?;
        let compressed = encoder.finish()?;
        let text = hex::encode(compressed);
        // Hex is ASCII, so byte chunks are valid strings.
        Ok(text
            .as_bytes()
            .chunks(MAX_STRING)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect())
    }

    /// Decodes the character-strings of a TXT record.
    pub(crate) fn decode<S: AsRef<[u8]>>(strings: &[S]) -> Result<TxtInfo, TxtError> {
        let total: usize = strings.iter().map(|s| s.as_ref().len()).sum();
        if total == 0 {
            return Err(TxtError::Empty);
        }
        if total > MAX_HEX {
            return Err(TxtError::TooLarge(total));
        }
        let mut text = Vec::with_capacity(total);
        for s in strings {
            text.extend_from_slice(s.as_ref());
        }
        let compressed = hex::decode(&text)?;
        let mut json = Vec::new();
        ZlibDecoder::new(compressed.as_slice())
            .take(MAX_JSON + 1)
            .read_to_end(&mut json)
            .map_err(TxtError::Zlib)?;
        if json.len() as u64 > MAX_JSON {
            return Err(TxtError::Inflated);
        }
        let raw: TxtIn = serde_json::from_slice(&json)?;
        let service = raw.service.unwrap_or_default();
        if service.trim().is_empty() {
            return Err(TxtError::NoService);
        }
        Ok(TxtInfo {
            id: raw.id.filter(|id| !id.is_empty()),
            service,
            version: raw.version.unwrap_or_default(),
            endpoints: raw.endpoints.unwrap_or_default(),
            metadata: raw.metadata.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_registry::Value;

    fn sample() -> TxtInfo {
        TxtInfo {
            id: None,
            service: "go.micro.srv.greeter".into(),
            version: "latest".into(),
            endpoints: vec![Endpoint {
                name: "Greeter.Hello".into(),
                request: Some(
                    Value::new("Request", "Request")
                        .with_values(vec![Value::new("name", "string")]),
                ),
                response: Some(
                    Value::new("Response", "Response")
                        .with_values(vec![Value::new("msg", "string")]),
                ),
                metadata: Metadata::new(),
            }],
            metadata: [("protocol", "grpc"), ("server", "grpc")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_string_limit() {
        let mut info = sample();
        for i in 0..50 {
            info.metadata
                .insert(format!("key{i}"), format!("value {i}"));
        }
        let strings = info.encode().expect("encode");
        assert!(strings.len() > 1, "long TXT is split: {}", strings.len());
        assert!(strings.iter().all(|s| s.len() <= MAX_STRING));
        assert_eq!(TxtInfo::decode(&strings).expect("decode"), info);
    }

    #[test]
    fn json_keys_are_go_micro_shaped() {
        let strings = sample().encode().expect("encode");
        let compressed = hex::decode(strings.concat()).expect("hex");
        let mut json = String::new();
        ZlibDecoder::new(compressed.as_slice())
            .read_to_string(&mut json)
            .expect("zlib");
        assert!(
            json.starts_with(r#"{"Service":"go.micro.srv.greeter","Version":"latest","Endpoints":[{"name":"Greeter.Hello""#),
            "{json}"
        );
        assert!(json.contains(r#""Metadata":{"protocol":"grpc","server":"grpc"}"#));
        let empty = TxtInfo {
            service: "s".into(),
            ..TxtInfo::default()
        };
        let compressed = hex::decode(empty.encode().expect("encode").concat()).expect("hex");
        let mut json = String::new();
        ZlibDecoder::new(compressed.as_slice())
            .read_to_string(&mut json)
            .expect("zlib");
        assert_eq!(
            json,
            r#"{"Service":"s","Version":"","Endpoints":null,"Metadata":{}}"#
        );
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![b"".to_vec()],
            vec![b"zz".to_vec()],
            vec![b"abc".to_vec()],
            vec![b"0011223344".to_vec()],
            vec![vec![0xff; 200]],
            vec![vec![b'a'; MAX_HEX + 2]],
        ];
        for case in cases {
            assert!(TxtInfo::decode(&case).is_err(), "{case:?}");
        }
        // Valid zlib, JSON that is not an object, or has no service.
        for json in [&b"[1,2]"[..], b"{}", b"{\"Service\":5}", b"not json"] {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(json).expect("write");
            let text = hex::encode(encoder.finish().expect("finish"));
            assert!(TxtInfo::decode(&[text]).is_err(), "{json:?}");
        }
    }

    #[test]
    fn zlib_bomb_is_refused() {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        encoder.write_all(b"{\"Service\":\"x\"").expect("write");
        for _ in 0..4 {
            encoder.write_all(&zeros).expect("write");
        }
        encoder.write_all(b"}").expect("write");
        let text = hex::encode(encoder.finish().expect("finish"));
        assert!(text.len() < MAX_HEX, "bomb fits: {}", text.len());
        assert!(matches!(TxtInfo::decode(&[text]), Err(TxtError::Inflated)));
    }
}
