//! Calling any service with JSON, with no generated code.
//!
//! [`DynamicClient::call_json`] looks the service's schema up through gRPC
//! server reflection (cached, see [`crate::schema`]):
//!
//! - with a schema (toolkit services, anything serving reflection): the JSON
//!   becomes the endpoint's request message, goes out as protobuf, and the
//!   reply comes back as canonical proto3 JSON;
//! - without one (go-micro v2 services serve no reflection): the JSON goes
//!   out as it is, as `application/grpc+json`, and the service's JSON reply
//!   comes back as it sent it — exactly what go-micro's `micro call` and rpc
//!   handler do.
//!
//! Calls go through the toolkit [`Client`] (round robin, failover,
//! deadlines), or to one address ([`DynamicClient::to_address`]).

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use micro_client::{Client, Idempotent};
use tokio::time::Instant;
use tonic::Code;
use tonic::metadata::MetadataMap;

use crate::codec::{DynamicCodec, RawJsonCodec};
use crate::error::{Error, ErrorKind};
use crate::schema::{Lookup, SchemaCache};
use crate::target::Target;
use crate::transcode::{json_to_message, message_to_json, query_to_message, query_to_untyped_json};

pub use crate::target::GRPC_JSON;

/// What to send: a JSON body, or a query string read as JSON.
#[derive(Clone, Copy, Debug)]
pub enum JsonInput<'a> {
    /// A JSON object (an empty body is `{}`).
    Body(&'a [u8]),
    /// `a=1&b=x&list=1&list=2&nested.field=y`: each key a field (dots
    /// descend into message fields), repeated keys fill repeated fields.
    Query(&'a str),
}

/// How one dynamic call is made.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// The call's deadline (sent as `grpc-timeout`; the schema fetch, if
    /// needed, comes out of the same budget).
    pub timeout: Duration,
    /// Whether the call may run twice (retried after any server failure).
    pub idempotent: bool,
    /// Sent with the call as gRPC metadata (request headers).
    pub metadata: MetadataMap,
}

/// Calls services with JSON. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamicClient {
    target: Target,
    schemas: Arc<SchemaCache>,
}

impl DynamicClient {
    /// A client calling services by name through `client`, with a schema
    /// cache of `capacity` services, each kept `ttl`.
    pub fn new(client: Client, capacity: usize, ttl: Duration) -> Self {
        Self::with_target(Target::Registry(client), capacity, ttl)
    }

    /// A client sending every call to one node, over `channel` (go-micro's
    /// `micro call --address`).
    pub fn to_address(channel: tonic::transport::Channel, capacity: usize, ttl: Duration) -> Self {
        Self::with_target(Target::Address(channel), capacity, ttl)
    }

    fn with_target(target: Target, capacity: usize, ttl: Duration) -> Self {
        DynamicClient {
            schemas: Arc::new(SchemaCache::new(target.clone(), capacity, ttl)),
            target,
        }
    }

    pub fn schemas(&self) -> &SchemaCache {
        &self.schemas
    }

    /// What `micro call` and `micro web` do with an endpoint name and a
    /// JSON text: `Handler.Method` split ([`split_endpoint`]), the text
    /// checked to be JSON, then [`DynamicClient::call_json`].
    pub async fn call_endpoint(
        &self,
        service: &str,
        endpoint: &str,
        json: &[u8],
        options: CallOptions,
    ) -> Result<Vec<u8>, Error> {
        let (handler, method) = split_endpoint(endpoint).ok_or_else(|| {
            Error::bad_input(format!(
                "endpoint {endpoint:?} is not Handler.Method (e.g. Greeter.Hello)"
            ))
        })?;
        serde_json::from_slice::<serde::de::IgnoredAny>(json)
            .map_err(|e| Error::bad_input(format!("request is not JSON: {e}")))?;
        self.call_json(service, handler, method, JsonInput::Body(json), options)
            .await
    }

    /// A streaming call (server-, client- or bidi-streaming) in JSON, as
    /// go-micro's `micro stream` and its gateway open one: every message
    /// goes out as it is, `application/grpc+json` (which toolkit and go-micro
    /// servers both take on streams, no schema needed), and the replies come
    /// back as the service wrote them. The call ends the sending side when
    /// `requests` ends; `options.timeout` bounds the whole stream (zero: no
    /// bound but the client's `stream_timeout`). Through a [`Client`] the
    /// stream is [`micro_client::Streaming`]: no attempt timeout, placed on
    /// one node, another node only if that one cannot be reached.
    ///
    /// Messages are not checked here: the caller checks what it reads.
    pub async fn stream_endpoint<S>(
        &self,
        service: &str,
        endpoint: &str,
        requests: S,
        options: CallOptions,
    ) -> Result<JsonStream, Error>
    where
        S: futures::Stream<Item = Vec<u8>> + Send + 'static,
    {
        let (handler, method) = split_endpoint(endpoint).ok_or_else(|| {
            Error::bad_input(format!(
                "endpoint {endpoint:?} is not Handler.Method (e.g. Greeter.Hello)"
            ))
        })?;
        let path = PathAndQuery::try_from(format!("/{service}.{handler}/{method}"))
            .map_err(|_| Error::bad_input(format!("cannot call {service} {endpoint}")))?;
        let mut extensions = tonic::Extensions::new();
        extensions.insert(micro_client::Streaming);
        let mut request = tonic::Request::from_parts(options.metadata, extensions, requests);
        if !options.timeout.is_zero() {
            set_timeout(&mut request, options.timeout);
        }
        let mut grpc = tonic::client::Grpc::new(self.target.channel(service, true));
        grpc.ready()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("service {service}: {e}")))?;
        let replies = grpc
            .streaming(request, path, RawJsonCodec)
            .await
            .map_err(|status| Error::call(status, service, endpoint))?
            .into_inner();
        Ok(JsonStream {
            replies,
            service: service.to_string(),
            endpoint: endpoint.to_string(),
        })
    }

    /// Calls `service` endpoint `handler.method` with `input`; the reply as
    /// JSON (see the module docs for which form).
    pub async fn call_json(
        &self,
        service: &str,
        handler: &str,
        method: &str,
        input: JsonInput<'_>,
        options: CallOptions,
    ) -> Result<Vec<u8>, Error> {
        let started = Instant::now();
        // Built only for errors; the path without format! (every call).
        let endpoint = || format!("{handler}.{method}");
        let mut grpc_path = String::with_capacity(service.len() + handler.len() + method.len() + 3);
        for part in ["/", service, ".", handler, "/", method] {
            grpc_path.push_str(part);
        }
        let path = PathAndQuery::try_from(grpc_path)
            .map_err(|_| Error::bad_input(format!("cannot call {service} {}", endpoint())))?;
        let schema = match self.schemas.lookup(service, options.timeout).await? {
            Lookup::Schema(schema) => schema,
            Lookup::NoReflection => {
                let remaining = remaining(service, &options, started)?;
                return self
                    .call_raw_json(service, &endpoint(), path, input, options, remaining)
                    .await;
            }
        };
        let Some(descriptor) = schema.method(handler, method) else {
            return Err(Error::of_service(
                ErrorKind::NoEndpoint,
                service,
                format!("service {service} has no endpoint {}", endpoint()),
            ));
        };
        if descriptor.is_client_streaming() || descriptor.is_server_streaming() {
            return Err(Error::of_service(
                ErrorKind::Unsupported,
                service,
                format!(
                    "endpoint {} of {service} streams; only unary calls take JSON",
                    endpoint()
                ),
            ));
        }
        let message = match input {
            JsonInput::Body(body) => json_to_message(descriptor.input(), body)?,
            JsonInput::Query(query) => query_to_message(descriptor.input(), query)?,
        };

        let remaining = remaining(service, &options, started)?;
        let mut request = tonic::Request::from_parts(options.metadata, Default::default(), message);
        set_timeout(&mut request, remaining);
        if options.idempotent {
            request.extensions_mut().insert(Idempotent);
        }
        let mut grpc = tonic::client::Grpc::new(self.target.channel(service, false));
        grpc.ready()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("service {service}: {e}")))?;
        let reply = grpc
            .unary(request, path, DynamicCodec::new(descriptor.output()))
            .await
            .map_err(|status| {
                if status.code() == Code::Internal && status.message().starts_with("decode:") {
                    // Our schema may be stale.
                    self.schemas.invalidate(service);
                }
                Error::call(status, service, &endpoint())
            })?;
        message_to_json(&reply.into_inner())
    }

    /// go-micro's way: the JSON as the message, `application/grpc+json`.
    async fn call_raw_json(
        &self,
        service: &str,
        endpoint: &str,
        path: PathAndQuery,
        input: JsonInput<'_>,
        options: CallOptions,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let body = match input {
            JsonInput::Body(body) if body.iter().all(u8::is_ascii_whitespace) => b"{}".to_vec(),
            JsonInput::Body(body) => {
                serde_json::from_slice::<serde::de::IgnoredAny>(body)
                    .map_err(|e| Error::bad_input(format!("malformed JSON: {e}")))?;
                body.to_vec()
            }
            JsonInput::Query(query) => serde_json::to_vec(&query_to_untyped_json(query)?)
                .map_err(|e| Error::bad_input(format!("bad query: {e}")))?,
        };
        let mut request = tonic::Request::from_parts(options.metadata, Default::default(), body);
        set_timeout(&mut request, timeout);
        if options.idempotent {
            request.extensions_mut().insert(Idempotent);
        }
        let mut grpc = tonic::client::Grpc::new(self.target.channel(service, true));
        grpc.ready()
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("service {service}: {e}")))?;
        let reply = grpc
            .unary(request, path, RawJsonCodec)
            .await
            .map_err(|status| Error::call(status, service, endpoint))?
            .into_inner();
        serde_json::from_slice::<serde::de::IgnoredAny>(&reply).map_err(|e| {
            Error::of_service(
                ErrorKind::BadReply,
                service,
                format!("service {service} answered {endpoint} with something not JSON: {e}"),
            )
        })?;
        Ok(reply)
    }
}

/// The replies of a [`DynamicClient::stream_endpoint`] call. Dropping it
/// cancels the call.
#[derive(Debug)]
pub struct JsonStream {
    replies: tonic::Streaming<Vec<u8>>,
    service: String,
    endpoint: String,
}

impl JsonStream {
    /// The next reply as the service wrote it; `None` at the normal end,
    /// an error (the call's status, or a reply that is not JSON) otherwise.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Some(reply) = self
            .replies
            .message()
            .await
            .map_err(|status| Error::call(status, &self.service, &self.endpoint))?
        else {
            return Ok(None);
        };
        serde_json::from_slice::<serde::de::IgnoredAny>(&reply).map_err(|e| {
            Error::of_service(
                ErrorKind::BadReply,
                &self.service,
                format!(
                    "service {} answered {} with something not JSON: {e}",
                    self.service, self.endpoint
                ),
            )
        })?;
        Ok(Some(reply))
    }
}

/// `Handler.Method` → `(handler, method)`; `None` unless both parts are
/// there and the method has no dot.
pub fn split_endpoint(endpoint: &str) -> Option<(&str, &str)> {
    endpoint
        .split_once('.')
        .filter(|(h, m)| !h.is_empty() && !m.is_empty() && !m.contains('.'))
}

/// Metadata for a call from `(key, value)` pairs, as `micro call --metadata`
/// and `micro web` take it: keys lowercased (as HTTP/2 sends them), reserved
/// keys (`grpc-*`, `*-bin`) and values that are not visible ASCII refused.
pub fn call_metadata<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<MetadataMap, String> {
    use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
    let mut metadata = MetadataMap::new();
    for (key, value) in pairs {
        let key = key.trim().to_ascii_lowercase();
        let name = AsciiMetadataKey::from_bytes(key.as_bytes())
            .ok()
            .filter(|_| !key.starts_with("grpc-") && !key.ends_with("-bin"))
            .ok_or_else(|| format!("metadata {key:?} is not a usable metadata key"))?;
        let value = Some(value)
            .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
            .and_then(|v| AsciiMetadataValue::try_from(v).ok())
            .ok_or_else(|| format!("metadata {key}: the value must be visible ASCII"))?;
        metadata.append(name, value);
    }
    Ok(metadata)
}

/// What is left of the call's budget; a timeout error if nothing.
fn remaining(service: &str, options: &CallOptions, started: Instant) -> Result<Duration, Error> {
    let remaining = options.timeout.saturating_sub(started.elapsed());
    if remaining.is_zero() {
        return Err(Error::of_service(
            ErrorKind::Timeout,
            service,
            format!(
                "service {service}: deadline of {:?} exceeded",
                options.timeout
            ),
        ));
    }
    Ok(remaining)
}

/// `request.set_timeout(timeout)`: the same `grpc-timeout` value as tonic
/// writes (the most precise unit whose count has at most 8 digits), without
/// its `format!` and re-parse (every call sets one).
pub fn set_timeout<T>(request: &mut tonic::Request<T>, timeout: Duration) {
    const MAX: u128 = 99_999_999;
    let minutes = u128::from(timeout.as_secs() / 60);
    let pick = [
        (timeout.as_nanos(), b'n'),
        (timeout.as_micros(), b'u'),
        (timeout.as_millis(), b'm'),
        (u128::from(timeout.as_secs()), b'S'),
        (minutes, b'M'),
        (minutes / 60, b'H'),
    ]
    .into_iter()
    .find(|(count, _)| *count <= MAX);
    let Some((count, unit)) = pick else {
        // Over 11,000 years: tonic's own (and its answer).
        return request.set_timeout(timeout);
    };
    let mut text = [0u8; 9];
    let mut start = 8;
    text[8] = unit;
    let mut rest = count;
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    match tonic::metadata::MetadataValue::try_from(&text[start..]) {
        Ok(value) => {
            request.metadata_mut().insert("grpc-timeout", value);
        }
        Err(_) => request.set_timeout(timeout),
    }
}

#[cfg(test)]
mod tests {
    /// The same `grpc-timeout` text as tonic's `Request::set_timeout`.
    #[test]
    fn timeouts_are_written_as_tonic_writes_them() {
        use std::time::Duration;
        let mut durations = vec![
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(99_999_999),
            Duration::from_nanos(100_000_000),
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(3600),
            Duration::from_secs(99_999_999),
            Duration::from_secs(100_000_000 * 60),
        ];
        let mut x = 1u64;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            durations.push(Duration::from_nanos(x >> (x % 40)));
        }
        for d in durations {
            let mut ours = tonic::Request::new(());
            super::set_timeout(&mut ours, d);
            let mut theirs = tonic::Request::new(());
            theirs.set_timeout(d);
            assert_eq!(
                ours.metadata().get("grpc-timeout"),
                theirs.metadata().get("grpc-timeout"),
                "{d:?}"
            );
        }
    }
    use super::*;

    #[test]
    fn endpoints_split_into_handler_and_method() {
        assert_eq!(split_endpoint("Greeter.Hello"), Some(("Greeter", "Hello")));
        for bad in ["Hello", ".Hello", "Greeter.", "Greeter.Hello.Again", ""] {
            assert_eq!(split_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_keys_are_lowercased_and_checked() {
        let metadata = call_metadata([("Authorization", "Bearer t"), ("x-a", "1"), ("x-a", "2")])
            .expect("usable metadata");
        assert_eq!(
            metadata.get("authorization").map(|v| v.to_str().ok()),
            Some(Some("Bearer t"))
        );
        assert_eq!(metadata.get_all("x-a").iter().count(), 2);
        for (key, value) in [
            ("grpc-timeout", "1S"),
            ("data-bin", "x"),
            ("bad key", "x"),
            ("x-ok", "line\nbreak"),
            ("x-ok", "é"),
        ] {
            assert!(call_metadata([(key, value)]).is_err(), "{key}={value:?}");
        }
    }
}
