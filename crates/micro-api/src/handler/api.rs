//! The `api` handler: HTTP → `go.api.Request` → `Handler.Method` of
//! `<namespace>.<service>` → `go.api.Response` → HTTP; the request headers
//! also travel as gRPC metadata, as go-micro's api handler sent them.

use axum::extract::Request;
use axum::response::Response;
use micro_client::Idempotent;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use axum::response::IntoResponse;
use tonic::Code;

use super::{call_timeout, deadline, ensure_registered, is_safe, read_body, routed};
use crate::Inner;
use crate::convert::{ApiReply, encode_api_request, to_metadata};
use crate::error::ApiError;
use crate::serve::RemoteAddr;

pub(crate) async fn handle(inner: &Inner, request: Request) -> Result<Response, ApiError> {
    let deadline = deadline(inner, &request);
    let resolved = inner.routes.resolve(request.uri().path())?;
    let route = &resolved.route;
    let remote = request.extensions().get::<RemoteAddr>().map(|r| r.0);
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, inner.options.max_body_bytes).await?;
    ensure_registered(inner, &route.service, deadline).await?;

    // Encoded here, sent as is (see `PreEncoded`).
    let message = encode_api_request(&parts, &body, remote);
    let mut call =
        tonic::Request::from_parts(to_metadata(&parts.headers), Default::default(), message);
    micro_json::set_timeout(&mut call, call_timeout(inner, deadline));
    if is_safe(&parts.method) {
        call.extensions_mut().insert(Idempotent);
    }
    let path = resolved
        .grpc_path
        .clone()
        .ok_or_else(|| ApiError::not_found(format!("cannot call {}", route.grpc_path())))?;
    let mut grpc = tonic::client::Grpc::new(inner.client.service(&route.service));
    grpc.ready()
        .await
        .map_err(|e| ApiError::new(503, format!("service {}: {e}", route.service)))?;
    let reply = grpc.unary(call, path, PreEncoded).await;
    let matched = resolved.name.clone();
    match reply {
        Ok(reply) => Ok(routed(
            reply.into_inner().into_response(&route.service)?,
            matched,
        )),
        // No such endpoint: the path named it, so it is no route.
        Err(status) if status.code() == Code::Unimplemented => Err(ApiError::from_call(
            &status,
            &route.service,
            &route.endpoint(),
        )),
        Err(status) => Ok(routed(
            ApiError::from_call(&status, &route.service, &route.endpoint()).into_response(),
            matched,
        )),
    }
}

/// The codec of the api handler's calls: the `go.api.Request` goes out as
/// the bytes [`encode_api_request`] wrote; the `go.api.Response` is read
/// by [`ApiReply::decode`].
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Vec<u8>;
    type Decode = ApiReply;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> PreEncoded {
        PreEncoded
    }

    fn decoder(&mut self) -> PreEncoded {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ApiReply;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ApiReply>, Status> {
        let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
        ApiReply::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
