//! HTTP ↔ `go.api` messages, as go-micro's `api` handler converts them.
//!
//! - `method`, `path` (percent-decoded), `url` (as received);
//! - `header`: every header under its canonical name (`Content-Type`), plus
//!   `Host` and `X-Forwarded-For` (the peer appended to any it was sent);
//! - `get`: the query parameters; `post`: the fields of an
//!   `application/x-www-form-urlencoded` body of a POST, PUT or PATCH (whose
//!   `body` is then empty, as go-micro leaves it); `body`: any other body.
//!
//! `go.api` carries strings, so a body that is not UTF-8 reaches the service
//! with invalid sequences replaced by U+FFFD.
//!
//! For a GET without a `Content-Type`, the header gets go-micro's
//! `Content-Type: text/plain; charset=UTF-8`.
//!
//! The HTTP request headers also travel as gRPC metadata ([`to_metadata`]),
//! for the api and rpc handlers alike, as go-micro's did.
//!
//! The reply: `statusCode` 0 means 200; its headers are set (hop-by-hop ones
//! and invalid ones are dropped); `Content-Type` defaults to `application/json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;

use axum::body::Body;
use axum::response::Response;
use bytes::{Buf, Bytes};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::error::ApiError;
use crate::serve::{IP_TEXT_LEN, ip_text};

/// What go-micro's api handler puts in `Content-Type` for a GET without one.
pub const GET_CONTENT_TYPE: &str = "text/plain; charset=UTF-8";

/// The gRPC metadata a call made for an HTTP request carries: every request
/// header, as go-micro's `ctx.FromRequest` copied them (several values of one
/// name joined with `,`), minus what describes the HTTP exchange rather than
/// the request — hop-by-hop headers (and any the `Connection` header names),
/// `Content-Length` (go-micro#1079: the gRPC body has another length, and an
/// HTTP/2 server that checks resets the stream), `Host`, `Content-Type`,
/// `User-Agent`, `grpc-*` (gRPC's own) — and any name or value that is not
/// valid ASCII metadata (`-bin` keys included).
pub fn to_metadata(headers: &HeaderMap) -> tonic::metadata::MetadataMap {
    // Runs on every request: nothing allocated for what is not forwarded,
    // and a header sent once is forwarded as it is (a shared copy).
    let named: Vec<String> = if headers.contains_key(header::CONNECTION) {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let key = name.as_str();
        if is_hop_by_hop(name)
            || named.iter().any(|n| n == key)
            || matches!(
                *name,
                header::CONTENT_LENGTH | header::HOST | header::CONTENT_TYPE | header::USER_AGENT
            )
            || key.starts_with("grpc-")
            || key.starts_with(':')
            || key.ends_with("-bin")
        {
            continue;
        }
        let mut values = headers.get_all(name).iter();
        if let (Some(value), None) = (values.next(), values.next()) {
            // Metadata values are visible ASCII; anything else is dropped.
            if value.to_str().is_ok() {
                out.insert(name.clone(), value.clone());
            }
            continue;
        }
        let mut joined: Vec<u8> = Vec::new();
        for value in headers.get_all(name) {
            if !joined.is_empty() {
                joined.push(b',');
            }
            joined.extend_from_slice(value.as_bytes());
        }
        // Metadata values are visible ASCII; anything else is dropped.
        let Ok(value) = HeaderValue::from_bytes(&joined) else {
            continue;
        };
        if value.to_str().is_err() {
            continue;
        }
        out.insert(name.clone(), value);
    }
    tonic::metadata::MetadataMap::from_headers(out)
}

/// The `go.api.Request` for an HTTP request.
pub fn to_api_request(
    parts: &http::request::Parts,
    body: &[u8],
    remote: Option<SocketAddr>,
) -> ApiRequest {
    let uri = &parts.uri;
    let path = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8_lossy()
        .into_owned();
    // An origin-form target (what HTTP/1.1 clients send) is its own text:
    // no `Display` round trip.
    let url = match (uri.scheme(), uri.path_and_query()) {
        (None, Some(target)) if uri.authority().is_none() => target.as_str().to_string(),
        _ => uri.to_string(),
    };
    let mut request = ApiRequest {
        method: parts.method.as_str().to_string(),
        path,
        url,
        // Every header (Host included) plus `X-Forwarded-For` and a
        // `Content-Type`: sized once, no regrowth while filling.
        header: HashMap::with_capacity(parts.headers.keys_len() + 2),
        ..ApiRequest::default()
    };

    for (name, value) in &parts.headers {
        if name == header::HOST {
            continue;
        }
        push(
            &mut request.header,
            canonical_header(name.as_str()),
            lossy(value),
        );
    }
    if let Some(remote) = remote {
        let key = "X-Forwarded-For".to_string();
        let ip = remote.ip().to_string();
        let value = match request.header.get(&key) {
            Some(existing) if !existing.values.is_empty() => {
                format!("{}, {ip}", existing.values.join(", "))
            }
            _ => ip,
        };
        request
            .header
            .insert(key.clone(), Pair::new(key, vec![value]));
    }
    if parts.method == Method::GET && !parts.headers.contains_key(header::CONTENT_TYPE) {
        request.header.insert(
            "Content-Type".into(),
            Pair::new("Content-Type", vec![GET_CONTENT_TYPE.to_string()]),
        );
    }
    let host = parts
        .headers
        .get(header::HOST)
        .map(lossy)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    request
        .header
        .insert("Host".into(), Pair::new("Host", vec![host]));

    if let Some(query) = uri.query() {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            push(&mut request.get, key.into_owned(), value.into_owned());
        }
    }

    let form = is_form(&parts.headers)
        && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if form {
        for (key, value) in form_urlencoded::parse(body) {
            push(&mut request.post, key.into_owned(), value.into_owned());
        }
    } else {
        request.body = String::from_utf8_lossy(body).into_owned();
    }
    request
}

/// [`to_api_request`]'s message, encoded: the same `go.api.Request` (it
/// decodes equal), written straight into protobuf bytes. The headers go
/// from the `HeaderMap` to the wire without the message's
/// `HashMap<String, Pair>` (its hashing, key copies and growth): this runs
/// on every api handler request.
pub fn encode_api_request(
    parts: &http::request::Parts,
    body: &[u8],
    remote: Option<SocketAddr>,
) -> Vec<u8> {
    let uri = &parts.uri;
    let headers = &parts.headers;
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    let url: Cow<'_, str> = match (uri.scheme(), uri.path_and_query()) {
        (None, Some(target)) if uri.authority().is_none() => Cow::Borrowed(target.as_str()),
        _ => Cow::Owned(uri.to_string()),
    };
    // The peer's address as text, without an allocation.
    let mut ip_buf = [0u8; IP_TEXT_LEN];
    let ip = remote.map(|remote| ip_text(remote.ip(), &mut ip_buf));

    // The query and form maps are written straight from their text.
    let query = uri.query().unwrap_or("").as_bytes();
    let form =
        is_form(headers) && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    let (post, text_body): (&[u8], _) = if form {
        (body, Cow::Borrowed(""))
    } else {
        (b"", String::from_utf8_lossy(body))
    };

    // Room for everything in one allocation: each header costs its name
    // twice (map key and pair key), its value and a few bytes of framing.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| 2 * name.as_str().len() + value.len() + 12)
        .sum();
    let mut out = Vec::with_capacity(
        string_field_len(1, parts.method.as_str())
            + string_field_len(2, &path)
            + header_bytes
            + 128
            + form_map_len_hint(query)
            + form_map_len_hint(post)
            + string_field_len(6, &text_body)
            + string_field_len(7, &url),
    );
    put_string_field(&mut out, 1, parts.method.as_str());
    put_string_field(&mut out, 2, &path);

    // The header map, entry by entry, straight from the `HeaderMap`: every
    // name once (a `HeaderMap` key is unique, and so is its canonical
    // form), its values in order.
    let mut forwarded = false;
    // `HeaderMap::iter` gives a name's values one after another: grouped
    // here without a look-up per name.
    let mut pairs = headers.iter().peekable();
    while let Some((name, first)) = pairs.next() {
        let mut more: Vec<&HeaderValue> = Vec::new();
        while let Some((next, value)) = pairs.peek() {
            if *next != name {
                break;
            }
            more.push(value);
            pairs.next();
        }
        if name == header::HOST {
            continue;
        }
        let key = HeaderKey::Canonical(name.as_str());
        match ip {
            Some(ip) if name.as_str() == "x-forwarded-for" => {
                // The peer appended to the list it was sent.
                forwarded = true;
                let mut joined = String::new();
                for value in std::iter::once(first).chain(more) {
                    joined.push_str(&value_text(value));
                    joined.push_str(", ");
                }
                joined.push_str(ip);
                put_header_entry(&mut out, key, &[joined.as_str()]);
            }
            // The common case: one value, no `Vec` of texts.
            _ if more.is_empty() => put_header_entry(&mut out, key, &[value_text(first)]),
            _ => {
                let all: Vec<Cow<'_, str>> =
                    std::iter::once(first).chain(more).map(value_text).collect();
                put_header_entry(&mut out, key, &all);
            }
        }
    }
    if let (Some(ip), false) = (ip, forwarded) {
        put_header_entry(&mut out, HeaderKey::Exact("X-Forwarded-For"), &[ip]);
    }
    if parts.method == Method::GET && !headers.contains_key(header::CONTENT_TYPE) {
        put_header_entry(
            &mut out,
            HeaderKey::Exact("Content-Type"),
            &[GET_CONTENT_TYPE],
        );
    }
    let host = match headers.get(header::HOST) {
        Some(value) => value_text(value),
        None => Cow::Owned(uri.authority().map(|a| a.to_string()).unwrap_or_default()),
    };
    put_header_entry(&mut out, HeaderKey::Exact("Host"), &[host]);

    put_form_map(&mut out, 4, query);
    put_form_map(&mut out, 5, post);
    put_string_field(&mut out, 6, &text_body);
    put_string_field(&mut out, 7, &url);
    out
}

/// A header value as `go.api` text: borrowed when it is UTF-8 (nearly
/// always), invalid sequences replaced otherwise.
fn value_text(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// The key of a `go.api` header entry.
#[derive(Clone, Copy)]
enum HeaderKey<'a> {
    /// A `HeaderMap` name (lower case), written in Go's canonical form.
    Canonical(&'a str),
    /// Written as is.
    Exact(&'a str),
}

impl HeaderKey<'_> {
    fn len(self) -> usize {
        match self {
            HeaderKey::Canonical(name) | HeaderKey::Exact(name) => name.len(),
        }
    }

    /// A string field holding the key.
    fn put(self, out: &mut Vec<u8>, tag: u32) {
        match self {
            HeaderKey::Exact(name) => put_string_field(out, tag, name),
            HeaderKey::Canonical(name) => {
                if name.is_empty() {
                    return;
                }
                put_delimited(out, tag, name.len());
                // Go's `CanonicalMIMEHeaderKey` (see `canonical_header`):
                // only ASCII letters change, so the length stays.
                let start = out.len();
                out.extend_from_slice(name.as_bytes());
                let mut upper = true;
                for b in &mut out[start..] {
                    *b = if upper {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    };
                    upper = *b == b'-';
                }
            }
        }
    }
}

/// One `map<string, Pair>` entry of the header map.
fn put_header_entry<I>(out: &mut Vec<u8>, key: HeaderKey<'_>, values: I)
where
    I: IntoIterator + Clone,
    I::Item: AsRef<str>,
{
    put_pair_entry(out, 3, key, values);
}

/// One entry of the `map<string, Pair>` field `tag`:
/// `{1: key, 2: Pair { 1: key, 2: values }}`.
fn put_pair_entry<I>(out: &mut Vec<u8>, tag: u32, key: HeaderKey<'_>, values: I)
where
    I: IntoIterator + Clone,
    I::Item: AsRef<str>,
{
    let key_len = if key.len() == 0 {
        0
    } else {
        delimited_len(key.len())
    };
    let pair = key_len
        + values
            .clone()
            .into_iter()
            .map(|v| delimited_len(v.as_ref().len()))
            .sum::<usize>();
    put_delimited(out, tag, key_len + delimited_len(pair));
    // The key twice (map key, then the pair's): written (and canonicalised)
    // once, then copied.
    let first = out.len();
    key.put(out, 1);
    let written = first..out.len();
    put_delimited(out, 2, pair);
    out.extend_from_within(written);
    for value in values {
        // Repeated: every value written, empty ones too.
        let value = value.as_ref();
        put_delimited(out, 2, value.len());
        out.extend_from_slice(value.as_bytes());
    }
}

/// A length-delimited field: key, length, bytes (tags here are < 16: one
/// byte of key).
fn delimited_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// A proto3 string field (left out when empty, as prost does).
fn string_field_len(_tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        delimited_len(value.len())
    }
}

fn put_delimited(out: &mut Vec<u8>, tag: u32, len: usize) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(len as u64, out);
}

fn put_string_field(out: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        put_delimited(out, tag, value.len());
        out.extend_from_slice(value.as_bytes());
    }
}

/// Room for the `map<string, Pair>` field of URL-encoded `form`: each key
/// twice, each value, a few bytes of framing per pair (a guess: the buffer
/// grows if it is short).
fn form_map_len_hint(form: &[u8]) -> usize {
    if form.is_empty() {
        0
    } else {
        3 * form.len() + 16
    }
}

/// At most this many pairs are grouped by key in place (each compared with
/// those before it); more go through a `HashMap`.
const FEW_PAIRS: usize = 16;

/// The `map<string, Pair>` field `tag` (`get`, `post`) of URL-encoded
/// `form`, written straight from the text: one entry per key, its values in
/// order, as `to_api_request`'s map holds them. A few pairs (nearly always)
/// are grouped without a map, their keys and values borrowed when nothing
/// was escaped.
fn put_form_map(out: &mut Vec<u8>, tag: u32, form: &[u8]) {
    if form.is_empty() {
        return;
    }
    // Parsed once: nearly always a few pairs, grouped here without a map.
    let mut parsed = form_urlencoded::parse(form);
    let mut few = Vec::with_capacity(4);
    for pair in parsed.by_ref() {
        few.push(pair);
        if few.len() > FEW_PAIRS {
            let mut map = HashMap::new();
            for (key, value) in few.drain(..).chain(parsed) {
                push(&mut map, key.into_owned(), value.into_owned());
            }
            put_pair_map(out, tag, &map);
            return;
        }
    }
    for (i, (key, _)) in few.iter().enumerate() {
        // Written with the first pair of its key.
        if few[..i].iter().any(|(earlier, _)| earlier == key) {
            continue;
        }
        let values = few
            .iter()
            .filter(|(other, _)| other == key)
            .map(|(_, value)| value);
        put_pair_entry(out, tag, HeaderKey::Exact(key), values);
    }
}

/// Writes a `map<string, Pair>` field (`get`, `post`).
fn put_pair_map(out: &mut Vec<u8>, tag: u32, map: &HashMap<String, Pair>) {
    prost::encoding::hash_map::encode(
        prost::encoding::string::encode,
        prost::encoding::string::encoded_len,
        prost::encoding::message::encode,
        prost::encoding::message::encoded_len,
        tag,
        map,
        out,
    );
}

/// The HTTP response for a `go.api.Response`.
pub fn from_api_response(reply: ApiResponse, service: &str) -> Result<Response, ApiError> {
    let mut pairs: Vec<(&String, &Pair)> = reply.header.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let entries = pairs.into_iter().map(|(map_key, pair)| {
        let key = if pair.key.is_empty() {
            map_key.as_str()
        } else {
            pair.key.as_str()
        };
        (key, pair.values.iter().map(String::as_str))
    });
    build_response(reply.status_code, entries, Body::from(reply.body), service)
}

/// The reply's status, headers (in the order given, each name with its
/// values) and body as an HTTP response.
fn build_response<'a, V>(
    status_code: i32,
    entries: impl Iterator<Item = (&'a str, V)>,
    body: Body,
    service: &str,
) -> Result<Response, ApiError>
where
    V: Iterator<Item = &'a str>,
{
    let status = match status_code {
        0 => StatusCode::OK,
        code => u16::try_from(code)
            .ok()
            .filter(|c| (200..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| {
                ApiError(micro_errors::MicroError::new(
                    service,
                    502,
                    format!("service {service} answered with invalid status code {code}"),
                ))
            })?,
    };
    let mut headers = HeaderMap::new();
    for (key, values) in entries {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            tracing::debug!(service, header = %key, "dropping an invalid header name");
            continue;
        };
        if is_hop_by_hop(&name) || name == header::CONTENT_LENGTH {
            continue;
        }
        for value in values {
            match HeaderValue::from_str(value) {
                Ok(value) => {
                    headers.append(name.clone(), value);
                }
                Err(_) => {
                    tracing::debug!(service, header = %key, "dropping an invalid header value")
                }
            }
        }
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A `go.api.Response` read straight from its protobuf bytes, without
/// prost's `HashMap` of `Pair`s (a `String` key, a `Pair` and a `Vec` of
/// `String`s per header): what the api handler answers with. The same
/// bytes give the same errors as prost's decoding (a wrong wire type, a
/// truncated field, a string that is not UTF-8) and the same response as
/// [`from_api_response`] of prost's message; the body is a slice of the
/// received buffer.
#[derive(Debug)]
pub struct ApiReply {
    status_code: i32,
    header: Vec<ReplyHeader>,
    body: Bytes,
}

/// One `header` map entry, checked.
#[derive(Debug)]
struct ReplyHeader {
    map_key: Bytes,
    /// The `Pair`'s own `key` (empty if it has none).
    pair_key: Bytes,
    /// The `Pair` message, read again for its values.
    pair: Bytes,
}

impl ApiReply {
    /// Reads a `go.api.Response`.
    pub fn decode(mut buf: Bytes) -> Result<ApiReply, ReplyError> {
        let mut reply = ApiReply {
            status_code: 0,
            header: Vec::new(),
            body: Bytes::new(),
        };
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match tag {
                1 => {
                    expect_wire_type(wire_type, WireType::Varint)?;
                    // int32: the varint's low 32 bits, as prost reads it.
                    reply.status_code = decode_varint(&mut buf)? as i32;
                }
                2 => {
                    expect_wire_type(wire_type, WireType::LengthDelimited)?;
                    let entry = length_delimited(&mut buf)?;
                    reply.header.push(ReplyHeader::decode(entry)?);
                }
                3 => {
                    expect_wire_type(wire_type, WireType::LengthDelimited)?;
                    reply.body = utf8(length_delimited(&mut buf)?)?;
                }
                _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        Ok(reply)
    }

    /// The HTTP response, as [`from_api_response`] makes it.
    pub fn into_response(self, service: &str) -> Result<Response, ApiError> {
        let mut entries = self.header;
        // Sorted by map key; a key given twice keeps its last entry (a
        // map's rule; the sort is stable).
        entries.sort_by(|a, b| a.map_key.cmp(&b.map_key));
        entries.dedup_by(|later, earlier| {
            if later.map_key == earlier.map_key {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let headers = entries.iter().map(|entry| {
            let key = if entry.pair_key.is_empty() {
                &entry.map_key
            } else {
                &entry.pair_key
            };
            (checked_text(key), PairValues { buf: &entry.pair })
        });
        build_response(self.status_code, headers, Body::from(self.body), service)
    }
}

impl ReplyHeader {
    /// A map entry: `key` (1) and `value` (2, a `Pair`: `key` 1, `values` 2).
    fn decode(mut buf: Bytes) -> Result<ReplyHeader, ReplyError> {
        let mut header = ReplyHeader {
            map_key: Bytes::new(),
            pair_key: Bytes::new(),
            pair: Bytes::new(),
        };
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match tag {
                1 => {
                    expect_wire_type(wire_type, WireType::LengthDelimited)?;
                    header.map_key = utf8(length_delimited(&mut buf)?)?;
                }
                2 => {
                    expect_wire_type(wire_type, WireType::LengthDelimited)?;
                    let pair = length_delimited(&mut buf)?;
                    // A message field given twice is merged (prost's
                    // rule): its key is the last one sent, its values all.
                    let (key, merged) = check_pair(pair, &header.pair)?;
                    if let Some(key) = key {
                        header.pair_key = key;
                    }
                    header.pair = merged;
                }
                _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        Ok(header)
    }
}

/// Checks a `Pair` message; its last `key` (if it has one), and the message
/// merged after `earlier` (another `Pair` of the same entry, usually none).
fn check_pair(pair: Bytes, earlier: &Bytes) -> Result<(Option<Bytes>, Bytes), ReplyError> {
    let mut key = None;
    let mut buf = pair.clone();
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match tag {
            1 => {
                expect_wire_type(wire_type, WireType::LengthDelimited)?;
                key = Some(utf8(length_delimited(&mut buf)?)?);
            }
            2 => {
                expect_wire_type(wire_type, WireType::LengthDelimited)?;
                utf8(length_delimited(&mut buf)?)?;
            }
            _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
        }
    }
    let merged = if earlier.is_empty() {
        pair
    } else {
        // Concatenated messages are the merged message.
        let mut both = Vec::with_capacity(earlier.len() + pair.len());
        both.extend_from_slice(earlier);
        both.extend_from_slice(&pair);
        Bytes::from(both)
    };
    Ok((key, merged))
}

/// The `values` of a checked `Pair` message, in order.
struct PairValues<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for PairValues<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        // Checked when decoded: every field here is well formed.
        while !self.buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut self.buf).ok()?;
            if wire_type != WireType::LengthDelimited {
                skip_field(wire_type, tag, &mut self.buf, DecodeContext::default()).ok()?;
                continue;
            }
            let len = usize::try_from(decode_varint(&mut self.buf).ok()?).ok()?;
            let (field, rest) = self.buf.split_at_checked(len)?;
            self.buf = rest;
            if tag == 2 {
                return Some(checked_text(field));
            }
        }
        None
    }
}

/// Why a `go.api.Response` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to decode go.api.Response: {0}")]
pub struct ReplyError(String);

impl From<prost::DecodeError> for ReplyError {
    fn from(e: prost::DecodeError) -> Self {
        ReplyError(e.to_string())
    }
}

/// Text already checked to be UTF-8.
fn checked_text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn expect_wire_type(actual: WireType, expected: WireType) -> Result<(), ReplyError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ReplyError(format!(
            "invalid wire type: {actual:?} (expected {expected:?})"
        )))
    }
}

/// A length-delimited field's bytes.
fn length_delimited(buf: &mut Bytes) -> Result<Bytes, ReplyError> {
    let len = decode_varint(buf)?;
    match usize::try_from(len) {
        Ok(len) if len <= buf.remaining() => Ok(buf.split_to(len)),
        _ => Err(ReplyError("buffer underflow".into())),
    }
}

/// A string field: its bytes, if UTF-8.
fn utf8(bytes: Bytes) -> Result<Bytes, ReplyError> {
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(bytes),
        Err(_) => Err(ReplyError(
            "invalid string value: data is not UTF-8 encoded".into(),
        )),
    }
}

/// Whether the body is a URL-encoded form.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn push(map: &mut HashMap<String, Pair>, key: String, value: String) {
    match map.entry(key) {
        Entry::Occupied(mut entry) => entry.get_mut().values.push(value),
        Entry::Vacant(entry) => {
            let key = entry.key().clone();
            entry.insert(Pair::new(key, vec![value]));
        }
    }
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Go's `CanonicalMIMEHeaderKey`: `content-type` → `Content-Type`.
pub fn canonical_header(name: &str) -> String {
    // Byte by byte: only ASCII letters change, so the text stays UTF-8.
    let mut out = name.as_bytes().to_vec();
    let mut upper = true;
    for b in &mut out {
        *b = if upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        };
        upper = *b == b'-';
    }
    match String::from_utf8(out) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Headers that describe one connection, never forwarded.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The api handler's bytes decode to exactly [`to_api_request`]'s message.
    #[test]
    fn the_encoded_request_is_to_api_requests_message() {
        use prost::Message as _;
        let requests = [
            http::Request::builder()
                .method("GET")
                .uri("/user/say/hello?name=huohuo&name=x&b=%20")
                .header("host", "127.0.0.1:8080")
                .header("accept", "*/*")
                .header("accept", "text/plain")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-forwarded-for", "10.0.0.2")
                .header("x-empty", "")
                .header(
                    "x-latin",
                    HeaderValue::from_bytes(b"caf\xe9").expect("a value"),
                ),
            http::Request::builder()
                .method("POST")
                .uri("http://example.com:81/user/account/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-for", ""),
            http::Request::builder()
                .method("PUT")
                .uri("/p%C3%A9/x")
                .header("content-type", "application/json"),
        ];
        for (i, builder) in requests.into_iter().enumerate() {
            let (parts, ()) = builder.body(()).expect("a request").into_parts();
            let body: &[u8] = if i == 1 {
                b"user=a&pass=b+c&user=d"
            } else {
                b"{\"x\":1}"
            };
            for remote in [Some(SocketAddr::from(([127, 0, 0, 1], 4242))), None] {
                let expected = to_api_request(&parts, body, remote);
                let encoded = encode_api_request(&parts, body, remote);
                let decoded = ApiRequest::decode(encoded.as_slice()).expect("decodes");
                assert_eq!(decoded, expected, "request {i}, remote {remote:?}");
            }
        }
    }

    #[test]
    fn canonical_names_are_gos() {
        assert_eq!(canonical_header("content-type"), "Content-Type");
        assert_eq!(canonical_header("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header("host"), "Host");
        assert_eq!(canonical_header("X-é-wEIRD--x"), "X-é-Weird--X");
    }

    #[test]
    fn metadata_is_the_request_headers_minus_the_exchange() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer abc"),
            ("x-request-id", "r1"),
            ("accept", "text/html"),
            ("accept", "application/json"),
            ("content-length", "42"),
            ("content-type", "application/json"),
            ("host", "gw:8080"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("grpc-timeout", "1S"),
            ("user-agent", "curl"),
            ("x-blob-bin", "AAAA"),
            ("x-latin", ""),
        ] {
            let value = if name == "x-latin" {
                HeaderValue::from_bytes(b"caf\xe9").expect("obs-text value")
            } else {
                HeaderValue::from_static(value)
            };
            headers.append(HeaderName::from_static(name), value);
        }
        let metadata = to_metadata(&headers).into_headers();
        let mut names: Vec<&str> = metadata.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "x-request-id"]);
        assert_eq!(metadata["authorization"], "Bearer abc");
        assert_eq!(metadata["accept"], "text/html,application/json");
    }
}
