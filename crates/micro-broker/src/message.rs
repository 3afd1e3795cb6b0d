//! A broker message (headers and a body) and go-micro's JSON envelope.
//!
//! go-micro's http and nats brokers put `broker.Message{Header, Body}`
//! through Go's `encoding/json`: `{"Header":{…},"Body":"<base64>"}`, the
//! header keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`
//! and friends, control characters as `\u00XX` (but `\n`, `\r`, `\t`). The
//! envelope written here is byte for byte that; the one read is what Go's
//! decoder accepts (keys matched without regard to case, unknown keys
//! ignored, `null` for no header or no body).
//!
//! ```
//! use micro_broker::Message;
//!
//! let message = Message::new(r#"{"name":"John"}"#)
//!     .with_header("Content-Type", "application/json")
//!     .with_header("Micro-Topic", "go.micro.topic.greet");
//! assert_eq!(
//!     message.to_envelope(),
//!     br#"{"Header":{"Content-Type":"application/json","Micro-Topic":"go.micro.topic.greet"},"Body":"eyJuYW1lIjoiSm9obiJ9"}"#
//! );
//! assert_eq!(Message::from_envelope(&message.to_envelope()).unwrap(), message);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use bytes::Bytes;

/// Headers of a message: sorted, as Go writes a map.
pub type Header = BTreeMap<String, String>;

/// The header naming a message's topic (set by every publisher).
pub const TOPIC_HEADER: &str = "Micro-Topic";
/// The header naming the body's codec.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// The header naming the publishing service.
pub const FROM_SERVICE_HEADER: &str = "Micro-From-Service";

/// Headers and a body: go-micro's `broker.Message`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub body: Bytes,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("header", &self.header)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why bytes are not a go-micro envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a go-micro broker message: {0}")]
pub struct EnvelopeError(String);

impl Message {
    pub fn new(body: impl Into<Bytes>) -> Message {
        Message {
            header: Header::new(),
            body: body.into(),
        }
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Message {
        self.header.insert(key.into(), value.into());
        self
    }

    /// A header's value.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.header.get(key).map(String::as_str)
    }

    /// The envelope go-micro's http and nats brokers send: Go's
    /// `encoding/json` output, byte for byte (see the module docs).
    pub fn to_envelope(&self) -> Vec<u8> {
        self.write_envelope(None)
    }

    /// The envelope of this message published on `topic`: its headers
    /// with [`TOPIC_HEADER`] set to `topic` (in its sorted place, replacing
    /// one there), as if inserted first, without touching the map.
    pub fn to_envelope_on(&self, topic: &str) -> Vec<u8> {
        self.write_envelope(Some(topic))
    }

    fn write_envelope(&self, topic: Option<&str>) -> Vec<u8> {
        let engine = &base64::engine::general_purpose::STANDARD;
        let body_len = base64::encoded_len(self.body.len(), true).unwrap_or(0);
        let headers_len: usize = self.header.iter().map(|(k, v)| k.len() + v.len()).sum();
        let topic_len = topic.map_or(0, |t| TOPIC_HEADER.len() + t.len());
        let mut out =
            Vec::with_capacity(32 + body_len + headers_len + topic_len + self.header.len() * 8);
        out.extend_from_slice(b"{\"Header\":{");
        let mut first = true;
        let mut entry = |out: &mut Vec<u8>, key: &str, value: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            go_json_string(out, key);
            out.push(b':');
            go_json_string(out, value);
        };
        let mut topic = topic;
        for (key, value) in &self.header {
            if let Some(t) = topic
                && key.as_str() >= TOPIC_HEADER
            {
                entry(&mut out, TOPIC_HEADER, t);
                topic = None;
                if key == TOPIC_HEADER {
                    continue;
                }
            }
            entry(&mut out, key, value);
        }
        if let Some(t) = topic {
            entry(&mut out, TOPIC_HEADER, t);
        }
        out.extend_from_slice(b"},\"Body\":\"");
        let start = out.len();
        out.resize(start + body_len, 0);
        let written = engine
            .encode_slice(&self.body, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.extend_from_slice(b"\"}");
        out
    }

    /// Reads an envelope as Go's `json.Unmarshal` into `broker.Message`
    /// would; a JSON `null` (which go-micro's listener crashed on) and
    /// anything but an object are errors.
    pub fn from_envelope(bytes: &[u8]) -> Result<Message, EnvelopeError> {
        // The envelope go-micro writes, in one pass; anything else (keys
        // in another case, a key twice, a wrong type, bad base64) goes the
        // long way, which explains what is wrong.
        match fast::decode(bytes) {
            Some(message) => Ok(message),
            None => Message::from_envelope_slow(bytes),
        }
    }

    fn from_envelope_slow(bytes: &[u8]) -> Result<Message, EnvelopeError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError(e.to_string()))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(EnvelopeError(format!(
                "expected a JSON object {{\"Header\":{{…}},\"Body\":\"<base64>\"}}, got {}",
                kind(&value)
            )));
        };
        let mut message = Message::default();
        if let Some(header) = field(&fields, "Header") {
            match header {
                serde_json::Value::Null => {}
                serde_json::Value::Object(entries) => {
                    for (key, value) in entries {
                        match value {
                            serde_json::Value::String(text) => {
                                message.header.insert(key.clone(), text.clone());
                            }
                            other => {
                                return Err(EnvelopeError(format!(
                                    "header {key:?} is {}, not a string",
                                    kind(other)
                                )));
                            }
                        }
                    }
                }
                other => {
                    return Err(EnvelopeError(format!(
                        "Header is {}, not an object",
                        kind(other)
                    )));
                }
            }
        }
        if let Some(body) = field(&fields, "Body") {
            match body {
                serde_json::Value::Null => {}
                serde_json::Value::String(text) => {
                    message.body = Bytes::from(
                        decode_base64(text)
                            .map_err(|e| EnvelopeError(format!("Body is not base64: {e}")))?,
                    );
                }
                other => {
                    return Err(EnvelopeError(format!(
                        "Body is {}, not a base64 string",
                        kind(other)
                    )));
                }
            }
        }
        Ok(message)
    }
}

/// A body as Go's decoder reads it: standard base64, line breaks skipped.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    if text.contains(['\r', '\n']) {
        let clean: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        engine.decode(clean)
    } else {
        engine.decode(text)
    }
}

/// The envelope as go-micro writes it, read without a `serde_json::Value`
/// tree: `Header` and `Body` spelled so, each at most once (unknown keys
/// skipped). `None` for anything else, which the long way reads or
/// explains.
mod fast {
    use std::fmt;

    use bytes::Bytes;
    use serde::Deserializer as _;
    use serde::de::{self, IgnoredAny, MapAccess, Visitor};

    use super::{Header, Message, decode_base64};

    pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        let message = reader.deserialize_map(EnvelopeVisitor).ok()?;
        reader.end().ok()?;
        Some(message)
    }

    /// Not this path's: the caller takes the long way.
    fn other<E: de::Error>() -> E {
        E::custom("not the plain envelope")
    }

    enum Key {
        Header,
        Body,
        /// Another spelling of `Header` or `Body`: Go's rules for which wins.
        Folded,
        Unknown,
    }

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = Key;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }

        fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
            Ok(match key {
                "Header" => Key::Header,
                "Body" => Key::Body,
                _ if key.eq_ignore_ascii_case("Header") || key.eq_ignore_ascii_case("Body") => {
                    Key::Folded
                }
                _ => Key::Unknown,
            })
        }
    }

    impl<'de> de::Deserialize<'de> for Key {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
            d.deserialize_str(KeyVisitor)
        }
    }

    /// A body: `null` or base64 text (borrowed when it has no escapes).
    struct Body(Option<Vec<u8>>);

    struct BodyVisitor;

    impl Visitor<'_> for BodyVisitor {
        type Value = Body;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("base64 text")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Body, E> {
            decode_base64(text)
                .map(|b| Body(Some(b)))
                .map_err(|_| other())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Body, E> {
            Ok(Body(None))
        }
    }

    impl<'de> de::Deserialize<'de> for Body {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
            d.deserialize_any(BodyVisitor)
        }
    }

    struct EnvelopeVisitor;

    impl<'de> Visitor<'de> for EnvelopeVisitor {
        type Value = Message;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an envelope")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
            let mut header: Option<Option<Header>> = None;
            let mut body: Option<Body> = None;
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Header if header.is_none() => header = Some(map.next_value()?),
                    Key::Body if body.is_none() => body = Some(map.next_value()?),
                    Key::Unknown => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    _ => return Err(other()),
                }
            }
            Ok(Message {
                header: header.flatten().unwrap_or_default(),
                body: body.and_then(|b| b.0).map(Bytes::from).unwrap_or_default(),
            })
        }
    }
}

/// A field as Go's decoder finds it: the exact key first, else one equal
/// but for case.
fn field<'a>(
    fields: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A metadata key as go-micro sends it: Go's `strings.Title`, which
/// upper-cases each letter that follows a separator (any character but a
/// letter, a digit or `_`), as `metadata.FromContext` does to every key:
/// `micro-from-service` → `Micro-From-Service`.
pub fn title_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut start = true;
    for c in key.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '_');
    }
    out
}

/// Appends `text` as a JSON string the way Go's `encoding/json` writes it
/// (HTML-safe escaping; see the module docs).
pub fn go_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Runs of bytes written as they are are copied whole; only what Go
    // escapes stops one. `text` is UTF-8, so U+2028 and U+2029 are the
    // bytes E2 80 A8 and E2 80 A9, and no other sequence holds them.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (escaped, width): (&[u8], usize) = match b {
            b'"' => (b"\\\"", 1),
            b'\\' => (b"\\\\", 1),
            b'\n' => (b"\\n", 1),
            b'\r' => (b"\\r", 1),
            b'\t' => (b"\\t", 1),
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => {
                (b"\\u2028", 3)
            }
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => {
                (b"\\u2029", 3)
            }
            b'<' | b'>' | b'&' | 0..0x20 => (&[], 1),
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[run..i]);
        if escaped.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escaped);
        }
        i += width;
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_title_cased_as_go_micro_does() {
        assert_eq!(title_case("foo"), "Foo");
        assert_eq!(title_case("micro-from-service"), "Micro-From-Service");
        assert_eq!(title_case("X-Request-Id"), "X-Request-Id");
        assert_eq!(title_case("traceparent"), "Traceparent");
        // `_` is no separator to Go's strings.Title.
        assert_eq!(title_case("x_request id"), "X_request Id");
    }

    #[test]
    fn the_topic_header_is_written_in_its_sorted_place() {
        for header in [
            &[][..],
            &[("A", "1")],
            &[("Z", "1")],
            &[("A", "1"), ("Micro-Topic", "old"), ("Z", "2")],
            &[("Micro-From-Service", "s"), ("Micro-Topicz", "x")],
            &[
                ("Content-Type", "application/json"),
                ("micro-topic", "lower"),
            ],
        ] {
            let mut message = Message::new(&b"some body"[..]);
            for (k, v) in header {
                message = message.with_header(*k, *v);
            }
            let on = message.to_envelope_on("t.1");
            let inserted = message.with_header(TOPIC_HEADER, "t.1").to_envelope();
            assert_eq!(
                String::from_utf8(on).expect("utf-8"),
                String::from_utf8(inserted).expect("utf-8")
            );
        }
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let message =
            Message::new(Vec::new()).with_header("K", "a<b>&c\"d\\e\nf\u{1}g\u{2028}h\u{7f}é");
        assert_eq!(
            String::from_utf8(message.to_envelope()).expect("utf-8"),
            r#"{"Header":{"K":"a\u003cb\u003e\u0026c\"d\\e\nf\u0001g\u2028h"#.to_string()
                + "\u{7f}é\"},\"Body\":\"\"}"
        );
    }

    /// Go's escaping, one character at a time (what `go_json_string`
    /// does in runs).
    fn go_json_string_per_char(text: &str) -> Vec<u8> {
        let mut out = vec![b'"'];
        for c in text.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{2028}' => out.extend_from_slice(b"\\u2028"),
                '\u{2029}' => out.extend_from_slice(b"\\u2029"),
                c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.push(b'"');
        out
    }

    #[test]
    fn strings_are_escaped_in_runs_as_per_character() {
        let texts = [
            "",
            "go.micro.topic.greet",
            "a<b>&c\"d\\e\nf\rg\th",
            "\u{0}\u{1f}\u{7f} é€–—\u{2027}\u{2028}\u{2029}\u{202a}",
            "\u{2028}",
            "x\u{2029}",
            "日本語 🦀 <&>",
            "\u{e2}",
        ];
        for text in texts {
            let mut out = b"prefix".to_vec();
            go_json_string(&mut out, text);
            assert_eq!(&out[6..], &go_json_string_per_char(text)[..], "{text:?}");
        }
    }

    #[test]
    fn the_one_pass_reader_agrees_with_the_long_way() {
        let read = [
            &br#"{"Header":{"Micro-Topic":"t","A":"<&>\u0041"},"Body":"aGk="}"#[..],
            br#"{"Body":"aGk=","Header":{"A":"1","A":"2"},"Other":[1,{"x":null}]}"#,
            br#"{"Header":null,"Body":null}"#,
            br#"{"Body":"aG\r\nk="}"#,
            b" {} ",
        ];
        for bytes in read {
            let fast = fast::decode(bytes).expect("the one pass reads it");
            assert_eq!(Ok(fast), Message::from_envelope_slow(bytes), "{bytes:?}");
        }
        // Left to the long way: Go's rules for keys in another case or
        // twice, and every error's explanation.
        let left = [
            &br#"{"header":{"A":"1"}}"#[..],
            br#"{"Header":{"A":"1"},"header":{"B":"2"}}"#,
            br#"{"Body":"aGk=","Body":"aGk="}"#,
            br#"{"Header":{"A":1}}"#,
            br#"{"Body":"not base64!"}"#,
            br#"{"Body":5}"#,
            b"null",
            b"[1]",
            br#"{"Body":"aGk="} x"#,
        ];
        for bytes in left {
            assert_eq!(fast::decode(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn decoding_follows_go() {
        let message =
            Message::from_envelope(br#"{"header":{"A":"1"},"BODY":"aGk=","Other":5}"#).expect("ok");
        assert_eq!(message.header("A"), Some("1"));
        assert_eq!(&message.body[..], b"hi");
        let empty = Message::from_envelope(br#"{"Header":null,"Body":null}"#).expect("ok");
        assert_eq!(empty, Message::default());
        for bad in [
            &b"null"[..],
            b"",
            b"hello, not json",
            b"[1]",
            br#"{"Header":{"A":1}}"#,
            br#"{"Body":"not base64!"}"#,
            br#"{"Body":5}"#,
        ] {
            assert!(Message::from_envelope(bad).is_err(), "{bad:?}");
        }
    }
}
