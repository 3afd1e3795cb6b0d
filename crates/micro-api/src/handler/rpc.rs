//! The `rpc` handler: a JSON body (or, for GET and HEAD, the query string)
//! → the endpoint's request message → its reply as JSON; the request
//! headers travel as gRPC metadata. A service serving no reflection (a
//! go-micro one) gets the JSON as `application/grpc+json`, as go-micro's rpc
//! handler sends it.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::{call_timeout, deadline, ensure_registered, is_safe, read_body, routed};
use crate::Inner;
use crate::convert::to_metadata;
use crate::dynamic::{CallOptions, JsonInput};
use crate::error::ApiError;

pub(crate) async fn handle(inner: &Inner, request: Request) -> Result<Response, ApiError> {
    let deadline = deadline(inner, &request);
    let resolved = inner.routes.resolve(request.uri().path())?;
    let route = &resolved.route;
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, inner.options.max_body_bytes).await?;
    ensure_registered(inner, &route.service, deadline).await?;

    let safe = is_safe(&parts.method);
    let query = parts.uri.query().unwrap_or("");
    let input = if safe && body.is_empty() {
        JsonInput::Query(query)
    } else {
        JsonInput::Body(&body)
    };
    let options = CallOptions {
        timeout: call_timeout(inner, deadline),
        idempotent: safe,
        metadata: to_metadata(&parts.headers),
    };
    let reply = inner
        .dynamic
        .call_json(
            &route.service,
            &route.handler,
            &route.method,
            input,
            options,
        )
        .await;
    let matched = resolved.name.clone();
    let json = match reply {
        Ok(json) => json,
        // The service answered: the endpoint exists (unless it said it
        // does not), so the route is a real one.
        Err(e)
            if e.status()
                .is_some_and(|s| s.code() != tonic::Code::Unimplemented) =>
        {
            return Ok(routed(ApiError::from(e).into_response(), matched));
        }
        Err(e) => return Err(e.into()),
    };
    let mut response = Response::new(Body::from(json));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(routed(response, matched))
}
