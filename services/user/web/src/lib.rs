//! `user-web`, `go.micro.web.user`: the user REST API as an axum web
//! service, the production layout the go-micro tutorial recommends (no
//! `micro api` in front; the web service calls `go.micro.srv.user` by name).
//!
//! It answers the same paths, status codes and JSON as `micro api
//! --handler=api` in front of `user-api` (both run [`user_api::rest`]), so a
//! client moves between the two without a change: `GET
//! /user/say/hello?name=N`, `POST /user/account/register`, `POST
//! /user/account/login`, `GET /user/account/get?id=N`, `POST
//! /user/account/change-password`, `POST /user/account/delete`, `GET
//! /user/account/list`, `GET /user/article/get-article?id=N`, `POST
//! /user/article/create`. The gateway's edge protections run in front
//! ([`micro_api::edge::EdgeLayer`]: header and body limits, rate limits,
//! the request deadline), the connection budget at the listener
//! ([`micro_serve`]). Errors are go-micro error JSON with HTTP status =
//! code; a path it does not serve is 404, a method a route does not take
//! 405, as through the gateway. Login throttling and token checks stay in
//! `user-srv`: the token goes on as `authorization`, the peer's address as
//! `micro-remote-ip`.
//!
//! ```no_run
//! # async fn demo(service: micro::Service) -> Result<(), Box<dyn std::error::Error>> {
//! let rest = user_api::rest::UserRest::new(service.client().service(user_web::SRV_NAME));
//! let mut web = service.web();
//! for (pattern, route) in user_web::routes(&rest) {
//!     web = web.route(pattern, route);
//! }
//! let edge = micro_api::edge::EdgeLayer::new(Default::default());
//! web.router(user_web::fallback())
//!     .map_router(|router| router.layer(edge))
//!     .bind()
//!     .await?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use micro_errors::MicroError;
use micro_serve::RemoteAddr;
use user_api::rest::{self, Answer, Caller, UserRest};

pub use user_api::rest::{API_NAME, SRV_NAME};

/// The name it registers: `micro web` serves it under `/user/`.
pub const WEB_NAME: &str = "go.micro.web.user";

/// One operation of [`UserRest`], given the request's parts.
type Operation = fn(UserRest, Parsed) -> futures::future::BoxFuture<'static, rest::Result>;

/// Every route: its pattern and handler, each taking any method (a method
/// the operation does not take is its 405, as through the gateway).
pub fn routes(rest: &UserRest) -> Vec<(&'static str, MethodRouter)> {
    let table: [(&'static str, Operation); 9] = [
        ("/user/say/hello", |rest, p| {
            Box::pin(async move { rest.hello(&p.caller(), p.query("name")).await })
        }),
        ("/user/account/register", |rest, p| {
            Box::pin(async move {
                p.method(&["POST"])?;
                rest.register(p.body()?).await
            })
        }),
        ("/user/account/login", |rest, p| {
            Box::pin(async move {
                p.method(&["POST"])?;
                let credentials = p.body()?;
                rest.login(&p.caller(), credentials).await
            })
        }),
        ("/user/account/get", |rest, p| {
            Box::pin(async move {
                p.method(&["GET"])?;
                rest.get_account(&p.caller(), p.query("id")).await
            })
        }),
        ("/user/account/change-password", |rest, p| {
            Box::pin(async move {
                p.method(&["POST", "PUT"])?;
                let change = p.body()?;
                rest.change_password(&p.caller(), change).await
            })
        }),
        ("/user/account/delete", |rest, p| {
            Box::pin(async move {
                p.method(&["POST", "DELETE"])?;
                rest.delete_account(&p.caller()).await
            })
        }),
        ("/user/account/list", |rest, p| {
            Box::pin(async move {
                p.method(&["GET"])?;
                let (size, token) = (p.query("page_size"), p.query("page_token"));
                rest.list_accounts(&p.caller(), size, token).await
            })
        }),
        ("/user/article/get-article", |rest, p| {
            Box::pin(async move { rest.get_article(p.query("id")).await })
        }),
        ("/user/article/create", |rest, p| {
            Box::pin(async move {
                p.method(&["POST"])?;
                let new = p.body()?;
                rest.create_article(&p.caller(), new).await
            })
        }),
    ];
    table
        .into_iter()
        .map(|(pattern, operation)| {
            let rest = rest.clone();
            let route = any(move |request: Request| {
                let rest = rest.clone();
                async move {
                    match Parsed::read(request).await {
                        Ok(parsed) => respond(operation(rest, parsed).await),
                        Err(e) => error_response(&e),
                    }
                }
            });
            (pattern, route)
        })
        .collect()
}

/// 404 for every path no route serves, as go-micro error JSON.
pub fn fallback() -> Router {
    Router::new().fallback(|| async {
        error_response(&rest::error(404, "not found: no such path in the user API"))
    })
}

/// What the operations read of a request, body read (at most
/// [`rest::MAX_BODY`] bytes).
#[derive(Debug)]
pub struct Parsed {
    method: http::Method,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    remote_ip: Option<String>,
    body: String,
    form: Vec<(String, String)>,
}

impl Parsed {
    async fn read(request: Request) -> Result<Parsed, MicroError> {
        let (parts, body) = request.into_parts();
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let remote_ip = parts
            .extensions
            .get::<RemoteAddr>()
            .map(|r| r.0.ip().to_string());
        let bytes = axum::body::to_bytes(body, rest::MAX_BODY)
            .await
            .map_err(|_| rest::error(413, format!("body larger than {} bytes", rest::MAX_BODY)))?;
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let (body, form) = if is_form {
            let form = form_urlencoded::parse(&bytes).into_owned().collect();
            (String::new(), form)
        } else {
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| rest::error(400, "invalid JSON body: not UTF-8"))?;
            (text, Vec::new())
        };
        Ok(Parsed {
            method: parts.method,
            query,
            headers: parts.headers,
            remote_ip,
            body,
            form,
        })
    }

    /// The first value of query parameter `key`.
    fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn caller(&self) -> Caller<'_> {
        Caller {
            authorization: self.header(header::AUTHORIZATION),
            // The peer as this listener saw it; a client's own
            // `Micro-Remote-Ip` is not believed.
            remote_ip: self.remote_ip.as_deref(),
            forwarded_for: self.header(header::HeaderName::from_static("x-forwarded-for")),
        }
    }

    fn method(&self, allowed: &[&str]) -> rest::Result<()> {
        rest::require_method(self.method.as_str(), allowed)
    }

    fn body<T: for<'de> serde::Deserialize<'de>>(&self) -> rest::Result<T> {
        rest::decode(&self.body, &self.form)
    }
}

fn respond(result: rest::Result) -> Response {
    match result {
        Ok(Answer { status, body }) => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body.to_string(),
        ),
        Err(e) => error_response(&e),
    }
}

/// go-micro's error JSON, HTTP status = its code, as the gateway answers.
fn error_response(error: &MicroError) -> Response {
    micro_api::ApiError(error.clone()).into_response()
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
