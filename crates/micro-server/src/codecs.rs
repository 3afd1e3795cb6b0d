//! go-micro's codecs on every method, unary and streaming: a [`Codecs`]
//! layer in front of the routes reads the request's content-subtype, as
//! go-micro's `server/grpc/codec.go` does.
//!
//! - `application/grpc`, `application/grpc+proto`: protobuf, passed through
//!   untouched (one header comparison per call);
//! - `application/grpc+json` (go-micro's json codec; its `micro call` and rpc
//!   handler send it): the JSON message becomes protobuf through the
//!   method's descriptors, the service answers as usual, and each reply
//!   message becomes JSON as go-micro's jsonpb writes it (proto field names,
//!   64-bit integers as strings, enums by name, default values left out); the
//!   reply says `application/grpc+json`. Input may use proto or JSON field
//!   names.
//! - any other `application/grpc+…`: `Unimplemented`, naming the supported ones.
//!
//! Streaming methods (server-, client- and bidi-streaming) are transcoded
//! one message at a time as the messages arrive ([`Messages`]). A
//! server-streaming request ends after its one message, whatever the codec:
//! go-micro's clients never half-close it, and tonic waits for the end of
//! the request before calling the method.
//!
//! The services themselves see protobuf only, so they need no change.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::{BoxFuture, Either};
use http::{HeaderMap, HeaderValue, header};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use micro_json::transcode::{JsonForm, json_to_protobuf, protobuf_to_json};
use prost_reflect::{DescriptorPool, MessageDescriptor};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::messages::{Failure, Messages, Rewrite};

/// The content-types a server accepts.
pub const SUPPORTED: &str = "application/grpc, application/grpc+proto, application/grpc+json";
const GRPC_JSON: HeaderValue = HeaderValue::from_static("application/grpc+json");
const GRPC_PROTO: HeaderValue = HeaderValue::from_static("application/grpc");
/// Largest JSON request message (tonic's default limit for protobuf).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// A method's messages, for transcoding.
#[derive(Debug)]
struct Method {
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
}

impl Method {
    fn streaming(&self) -> bool {
        self.client_streaming || self.server_streaming
    }

    /// One request message, then the stream of replies.
    fn server_streaming_only(&self) -> bool {
        self.server_streaming && !self.client_streaming
    }
}

/// The layer: the descriptors of every method, by gRPC path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Codecs {
    methods: Arc<HashMap<String, Method>>,
    /// Whether a protobuf request may need its body cut after one message.
    any_server_streaming: bool,
}

impl Codecs {
    /// The methods of the services `names` (full proto names) in `pool`.
    pub(crate) fn new(pool: &DescriptorPool, names: &[&str]) -> Self {
        let mut methods = HashMap::new();
        for name in names {
            let Some(service) = pool.get_service_by_name(name) else {
                continue;
            };
            for method in service.methods() {
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    Method {
                        input: method.input(),
                        output: method.output(),
                        client_streaming: method.is_client_streaming(),
                        server_streaming: method.is_server_streaming(),
                    },
                );
            }
        }
        let any_server_streaming = methods.values().any(Method::server_streaming_only);
        Codecs {
            methods: Arc::new(methods),
            any_server_streaming,
        }
    }
}

impl<S> Layer<S> for Codecs {
    type Service = CodecService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CodecService {
            inner,
            methods: self.methods.clone(),
            any_server_streaming: self.any_server_streaming,
        }
    }
}

/// The service [`Codecs`] produces.
#[derive(Clone, Debug)]
pub(crate) struct CodecService<S> {
    inner: S,
    methods: Arc<HashMap<String, Method>>,
    any_server_streaming: bool,
}

/// What a request's content-type asks for.
enum Subtype {
    /// Protobuf, or not gRPC at all: nothing to do.
    PassThrough,
    Json,
    Unsupported,
}

fn subtype(headers: &HeaderMap) -> Subtype {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Subtype::PassThrough;
    };
    let bytes = value.as_bytes();
    if bytes == b"application/grpc" {
        return Subtype::PassThrough;
    }
    let Some(rest) = bytes.strip_prefix(b"application/grpc+") else {
        return Subtype::PassThrough;
    };
    let rest = rest
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if rest.eq_ignore_ascii_case(b"proto") {
        Subtype::PassThrough
    } else if rest.eq_ignore_ascii_case(b"json") {
        Subtype::Json
    } else {
        Subtype::Unsupported
    }
}

impl<S> Service<http::Request<Body>> for CodecService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match subtype(request.headers()) {
            Subtype::PassThrough => {
                let one_message = self.any_server_streaming
                    && self
                        .methods
                        .get(request.uri().path())
                        .is_some_and(Method::server_streaming_only);
                if !one_message {
                    return Either::Left(self.inner.call(request));
                }
                // The one message is held until whole: bounded as tonic
                // bounds a request message by default.
                let request = request.map(|body| {
                    let keep: Rewrite = Box::new(Ok);
                    Body::new(
                        Messages::new(body, keep, Failure::BodyError, MAX_MESSAGE).first_only(),
                    )
                });
                Either::Left(self.inner.call(request))
            }
            Subtype::Unsupported => {
                let asked =
                    String::from_utf8_lossy(request.headers()[header::CONTENT_TYPE].as_bytes())
                        .into_owned();
                let status = Status::unimplemented(format!(
                    "content-type {asked} is not supported; this server accepts {SUPPORTED}"
                ));
                Either::Right(Box::pin(
                    async move { Ok(status_response(status, GRPC_PROTO)) },
                ))
            }
            Subtype::Json => {
                // The clone is the one that was not polled ready; keep the
                // ready one for this call (tower's usual swap).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let methods = self.methods.clone();
                Either::Right(Box::pin(json_call(inner, methods, request)))
            }
        }
    }
}

/// A trailers-only gRPC error response.
fn status_response(status: Status, content_type: HeaderValue) -> http::Response<Body> {
    let mut response = status.into_http::<Body>();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

async fn json_call<S>(
    mut inner: S,
    methods: Arc<HashMap<String, Method>>,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    let fail = |status: Status| Ok(status_response(status, GRPC_JSON));
    let Some(method) = methods.get(request.uri().path()) else {
        return fail(Status::unimplemented(format!(
            "no method {} on this server",
            request.uri().path()
        )));
    };
    if method.streaming() {
        return json_stream(inner, method, request).await;
    }
    let (mut parts, body) = request.into_parts();
    let collected = match Limited::new(body, MAX_MESSAGE + 5).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return fail(Status::resource_exhausted(format!(
                "cannot read the JSON request: {e}"
            )));
        }
    };
    let message = match one_message(collected) {
        Ok(message) => message,
        Err(status) => return fail(status),
    };
    let protobuf = match json_to_protobuf(method.input.clone(), &message) {
        Ok(bytes) => bytes,
        Err(e) => return fail(Status::invalid_argument(e.to_string())),
    };
    parts.headers.insert(header::CONTENT_TYPE, GRPC_PROTO);
    parts.headers.remove(header::CONTENT_LENGTH);
    let request = http::Request::from_parts(
        parts,
        Body::new(http_body_util::Full::new(frame(&protobuf))),
    );

    let response = inner.call(request).await?;
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, GRPC_JSON);
    if parts.headers.contains_key("grpc-status") {
        // Trailers-only: an error, nothing to transcode.
        return Ok(http::Response::from_parts(parts, body));
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(status) => return fail(status),
    };
    let trailers = collected.trailers().cloned();
    let mut data = collected.to_bytes();
    let mut out = BytesMut::new();
    while !data.is_empty() {
        let message = match next_message(&mut data) {
            Ok(message) => message,
            Err(status) => return fail(status),
        };
        match protobuf_to_json(method.output.clone(), &message, JsonForm::GoMicro) {
            Ok(json) => out.extend_from_slice(&frame(&json)),
            Err(e) => return fail(Status::internal(e.to_string())),
        }
    }
    let mut frames: Vec<Result<Frame<Bytes>, Status>> = Vec::with_capacity(2);
    if !out.is_empty() {
        frames.push(Ok(Frame::data(out.freeze())));
    }
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(trailers)));
    }
    let body = Body::new(StreamBody::new(futures::stream::iter(frames)));
    Ok(http::Response::from_parts(parts, body))
}

/// A streaming call in JSON: each request message becomes protobuf and each
/// reply message JSON as they come.
async fn json_stream<S>(
    mut inner: S,
    method: &Method,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, S::Error>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    let input = method.input.clone();
    let to_protobuf: Rewrite = Box::new(move |message| {
        let json = payload(message)?;
        json_to_protobuf(input.clone(), &json)
            .map(|protobuf| frame(&protobuf))
            .map_err(|e| Status::invalid_argument(e.to_string()))
    });
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, GRPC_PROTO);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut body = Messages::new(body, to_protobuf, Failure::BodyError, MAX_MESSAGE);
    if method.server_streaming_only() {
        body = body.first_only();
    }
    let request = http::Request::from_parts(parts, Body::new(body));

    let response = inner.call(request).await?;
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, GRPC_JSON);
    if parts.headers.contains_key("grpc-status") {
        // Trailers-only: an error, nothing to transcode.
        return Ok(http::Response::from_parts(parts, body));
    }
    let output = method.output.clone();
    let to_json: Rewrite = Box::new(move |message| {
        let protobuf = payload(message)?;
        protobuf_to_json(output.clone(), &protobuf, JsonForm::GoMicro)
            .map(|json| frame(&json))
            .map_err(|e| Status::internal(e.to_string()))
    });
    let body = Messages::new(body, to_json, Failure::Trailers, usize::MAX);
    Ok(http::Response::from_parts(parts, Body::new(body)))
}

/// The payload of one whole length-prefixed message.
fn payload(mut message: Bytes) -> Result<Bytes, Status> {
    next_message(&mut message)
}

/// One length-prefixed gRPC message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The one message of a unary request.
fn one_message(mut data: Bytes) -> Result<Bytes, Status> {
    let message = next_message(&mut data)?;
    if !data.is_empty() {
        return Err(Status::invalid_argument(
            "more than one message in a unary request",
        ));
    }
    Ok(message)
}

/// Takes the next length-prefixed message off `data`.
fn next_message(data: &mut Bytes) -> Result<Bytes, Status> {
    if data.len() < 5 {
        return Err(Status::invalid_argument("truncated gRPC message"));
    }
    let compressed = data.get_u8();
    let len = data.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::unimplemented(
            "compressed JSON messages are not supported",
        ));
    }
    if data.len() < len {
        return Err(Status::invalid_argument("truncated gRPC message"));
    }
    Ok(data.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("value"),
        );
        headers
    }

    #[test]
    fn subtypes_as_go_micro_reads_them() {
        for pass in [
            "application/grpc",
            "application/grpc+proto",
            "text/plain",
            "application/grpc-web",
        ] {
            assert!(
                matches!(subtype(&headers(pass)), Subtype::PassThrough),
                "{pass}"
            );
        }
        assert!(matches!(subtype(&HeaderMap::new()), Subtype::PassThrough));
        for json in [
            "application/grpc+json",
            "application/grpc+JSON; charset=utf-8",
        ] {
            assert!(matches!(subtype(&headers(json)), Subtype::Json), "{json}");
        }
        for other in [
            "application/grpc+bytes",
            "application/grpc+thrift",
            "application/grpc+",
        ] {
            assert!(
                matches!(subtype(&headers(other)), Subtype::Unsupported),
                "{other}"
            );
        }
    }

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let framed = frame(b"{}");
        assert_eq!(&framed[..], b"\0\0\0\0\x02{}");
        assert_eq!(
            one_message(framed.clone()).expect("one"),
            Bytes::from_static(b"{}")
        );
        let mut two = BytesMut::from(&framed[..]);
        two.extend_from_slice(&framed);
        assert!(one_message(two.freeze()).is_err());
        assert!(one_message(Bytes::from_static(b"\0\0\0")).is_err());
        assert!(one_message(Bytes::from_static(b"\0\0\0\0\x09{}")).is_err());
        let compressed =
            one_message(Bytes::from_static(b"\x01\0\0\0\x02{}")).expect_err("compressed");
        assert_eq!(compressed.code(), tonic::Code::Unimplemented);
    }
}
