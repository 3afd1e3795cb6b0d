//! The `event` handler (`--handler=event`): each HTTP request becomes a
//! `go.api.Event` published on the broker, as go-micro v2.9.1's
//! `api/handler/event` does.
//!
//! - **Topic and action** from the path (go-micro's `evRoute`, after Go's
//!   `path.Clean`): `/foo/bar/baz` → topic `<namespace>.foo`, action
//!   `bar.baz`; `/foo` → `<namespace>.foo`, action empty; a first segment
//!   `v<digits>` is a version: `/v1/foo/bar` → topic `<namespace>.v1.foo`,
//!   action `foo.bar` (go-micro's comment says `bar`; its code, kept here,
//!   says `foo.bar`).
//! - **The event**: `name` = the action, `id` = `<topic>-<action>-<uuid>`,
//!   `timestamp` = Unix seconds, `header` = the request's headers under
//!   their canonical names (`Host` aside, as Go's server keeps it apart),
//!   `data` = for a GET, the query as Go's `json.Marshal(url.Values)` writes
//!   it (`{"a":["1"]}`, keys sorted), else the body.
//! - **The message**: the event in protobuf, `Content-Type:
//!   application/grpc+proto` (go-micro's default client's), the request's
//!   headers as metadata (joined with `,`, keys Title-Cased as go-micro's
//!   `metadata.FromContext` does), `Micro-From-Service: go.micro.api`.
//! - **The answer**: `200` with an empty body once the broker has the
//!   message (for the http broker: every subscriber's handler answered);
//!   a go-micro error JSON otherwise: `400` for a path that names no valid
//!   topic or a body that is not UTF-8 (a proto string; go-micro's publish
//!   failed on it too), `500` when the broker refused or could not deliver
//!   it (go-micro answered the same status in plain text).
//!
//! The gateway's edge applies as to every handler: body and header limits
//! (413, 431), the request deadline (504), auth and rate limits.

use std::time::{SystemTime, UNIX_EPOCH};

use ::http::Method;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use micro_api_proto::{Event, Pair};
use micro_broker::{CONTENT_TYPE_HEADER, FROM_SERVICE_HEADER, Message, title_case};
use prost::Message as _;

use super::{deadline, read_body};
use crate::Inner;
use crate::convert::canonical_header;
use crate::error::ApiError;

/// The content type of the published event (go-micro's default client's).
const PROTO_CONTENT_TYPE: &str = "application/grpc+proto";
/// The service the gateway publishes as (`micro api`'s name).
const GATEWAY_SERVICE: &str = "go.micro.api";

pub(crate) async fn handle(inner: &Inner, request: Request) -> Result<Response, ApiError> {
    let Some(broker) = inner.broker.as_ref() else {
        return Err(ApiError::new(
            500,
            "the event handler has no broker (Gateway::with_broker)",
        ));
    };
    let until = deadline(inner, &request);
    let path = percent_encoding::percent_decode_str(request.uri().path())
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the path is not UTF-8 once percent-decoded"))?;
    let (topic, action) = route(&inner.options.namespace, &path);
    let (parts, body) = request.into_parts();
    let data = if parts.method == Method::GET {
        query_json(parts.uri.query().unwrap_or_default())
    } else {
        let body = read_body(&parts.headers, body, inner.options.max_body_bytes).await?;
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("the event's data (the body) must be UTF-8"))?
    };

    let mut event = Event {
        id: format!("{topic}-{action}-{}", uuid::Uuid::new_v4()),
        name: action,
        timestamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        data,
        ..Event::default()
    };
    let mut message = Message::new(Vec::new());
    for name in parts.headers.keys() {
        if name == ::http::header::HOST {
            continue;
        }
        let key = canonical_header(name.as_str());
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        message.header.insert(title_case(&key), values.join(","));
        event.header.insert(key.clone(), Pair::new(key, values));
    }
    message
        .header
        .insert(CONTENT_TYPE_HEADER.into(), PROTO_CONTENT_TYPE.into());
    message
        .header
        .insert(FROM_SERVICE_HEADER.into(), GATEWAY_SERVICE.into());
    message.body = event.encode_to_vec().into();

    let published = tokio::time::timeout_at(until, broker.publish(&topic, message)).await;
    match published {
        Ok(Ok(())) => Ok(Response::new(Body::empty())),
        Ok(Err(micro_broker::Error::Invalid(reason))) => Err(ApiError::bad_request(format!(
            "cannot publish on {topic}: {reason}"
        ))),
        Ok(Err(e)) => Err(ApiError::new(500, format!("publish {topic}: {e}"))),
        Err(_) => Err(ApiError::new(
            504,
            format!(
                "publish {topic}: not delivered within the request's time ({:?})",
                inner.options.request_timeout
            ),
        )),
    }
}

/// go-micro's `evRoute`: the topic and action of `path` (decoded) under
/// namespace `ns`.
fn route(ns: &str, path: &str) -> (String, String) {
    let cleaned = clean(path);
    let p = cleaned.strip_prefix('/').unwrap_or(&cleaned);
    if p.is_empty() {
        return (ns.to_string(), "event".into());
    }
    let parts: Vec<&str> = p.split('/').collect();
    let versioned = parts.len() >= 2
        && parts[0].len() > 1
        && parts[0].starts_with('v')
        && parts[0][1..].bytes().all(|b| b.is_ascii_digit());
    let topic_parts = if versioned { 2 } else { 1 };
    let topic = format!("{ns}.{}", parts[..topic_parts].join("."));
    (topic, parts[1..].join("."))
}

/// Go's `path.Clean`: the shortest path naming the same file, lexically
/// (`//` collapsed, `.` dropped, `..` resolved, no trailing `/`).
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|last| *last != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            part => out.push(part),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// The query as Go's `json.Marshal(r.URL.Query())` writes it: an object of
/// arrays of strings, keys sorted, Go's escaping.
fn query_json(query: &str) -> String {
    let mut values: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        values
            .entry(key.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    let mut out = Vec::with_capacity(query.len() + 8);
    out.push(b'{');
    for (i, (key, list)) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        micro_broker::go_json_string(&mut out, key);
        out.extend_from_slice(b":[");
        for (j, value) in list.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            micro_broker::go_json_string(&mut out, value);
        }
        out.push(b']');
    }
    out.push(b'}');
    // Only whole UTF-8 strings and ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_topics_and_actions_as_go_micro_does() {
        let ns = "go.micro.api";
        let cases = [
            ("/", ("go.micro.api", "event")),
            ("/foo", ("go.micro.api.foo", "")),
            ("/foo/bar", ("go.micro.api.foo", "bar")),
            ("/foo/bar/baz", ("go.micro.api.foo", "bar.baz")),
            ("/v1/foo/bar", ("go.micro.api.v1.foo", "foo.bar")),
            ("/v1", ("go.micro.api.v1", "")),
            ("/vx/foo", ("go.micro.api.vx", "foo")),
            ("//foo/./bar/../baz/", ("go.micro.api.foo", "baz")),
            ("/../foo", ("go.micro.api.foo", "")),
        ];
        for (path, (topic, action)) in cases {
            assert_eq!(
                route(ns, path),
                (topic.to_string(), action.to_string()),
                "{path}"
            );
        }
    }

    #[test]
    fn clean_is_gos_path_clean() {
        for (path, cleaned) in [
            ("", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("../a", "../a"),
            ("/a//b/", "/a/b"),
            ("/..", "/"),
        ] {
            assert_eq!(clean(path), cleaned, "{path}");
        }
    }

    #[test]
    fn a_query_is_gos_json_of_url_values() {
        assert_eq!(query_json(""), "{}");
        assert_eq!(
            query_json("b=2&a=1&b=x+y&c=%3Cp%3E"),
            r#"{"a":["1"],"b":["2","x y"],"c":["\u003cp\u003e"]}"#
        );
    }
}
