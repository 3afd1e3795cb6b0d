//! The user REST API itself, whatever carries it: each operation takes what
//! the HTTP request said (query values, a decoded body, the caller's token
//! and address) and answers a status and a JSON body, or go-micro error
//! JSON (id `go.micro.api.user`). `user-api` serves it behind
//! `micro api --handler=api` (as `go.api` messages), `user-web` as an axum
//! router, so both answer the same bytes.

use micro::ServiceChannel;
use micro_errors::MicroError;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Request, Status};

use user_proto::post::{self as post_pb, post_client::PostClient};
use user_proto::user::{self as user_pb, user_client::UserClient};
pub use user_proto::{API_NAME, SRV_NAME};

/// Largest JSON body the API parses (the gateway, or the web service's
/// edge, limits bodies too).
pub const MAX_BODY: usize = 64 * 1024;

/// A successful answer: HTTP status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// An answer, or the error to answer instead.
pub type Result<T = Answer> = std::result::Result<T, MicroError>;

/// What the request says about its sender.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The client's address as the edge saw it (`Micro-Remote-Ip`).
    pub remote_ip: Option<&'a str>,
    /// `X-Forwarded-For`, as sent.
    pub forwarded_for: Option<&'a str>,
}

/// The API's error.
pub fn error(code: i32, detail: impl Into<String>) -> MicroError {
    MicroError::new(API_NAME, code, detail)
}

/// A failure of `go.micro.srv.user`, re-issued as this API's error: the
/// service's own error with the same code and detail; a failure to reach it
/// (whose text names nodes and addresses) as a generic one, logged here.
pub fn upstream(status: Status) -> MicroError {
    if let Some(err) = MicroError::parse(status.message()) {
        let code = if err.code == 0 { 500 } else { err.code };
        return error(code, err.detail);
    }
    tracing::warn!("calling {SRV_NAME}: {status}");
    let err = MicroError::from_status(&status, SRV_NAME);
    let detail = match err.code {
        503 => format!("{SRV_NAME} is unavailable; try again"),
        504 => format!("{SRV_NAME} did not answer in time"),
        _ => format!("{SRV_NAME} failed"),
    };
    error(if err.code == 0 { 500 } else { err.code }, detail)
}

/// 405 unless `method` is one of `allowed`.
pub fn require_method(method: &str, allowed: &[&str]) -> Result<()> {
    if allowed.iter().any(|m| method.eq_ignore_ascii_case(m)) {
        return Ok(());
    }
    Err(error(
        405,
        format!("method {method} not allowed; use {}", allowed.join(" or ")),
    ))
}

/// The JSON `body`, or the `form` fields (first values) when the body came
/// as a form, as `T`.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &str, form: &[(String, String)]) -> Result<T> {
    if body.len() > MAX_BODY {
        return Err(error(413, format!("body larger than {MAX_BODY} bytes")));
    }
    if body.trim().is_empty() && !form.is_empty() {
        // `curl -d '{...}'` without a Content-Type sends JSON as a form; the
        // form decoding has already mangled it (`+`, `&`, `=`), so say so.
        if form.len() == 1 && form[0].0.trim_start().starts_with('{') {
            return Err(error(
                400,
                "the body is JSON but was sent as a form: send it with Content-Type: application/json",
            ));
        }
        let mut fields = serde_json::Map::new();
        for (key, value) in form {
            fields
                .entry(key.clone())
                .or_insert_with(|| Value::String(value.clone()));
        }
        return serde_json::from_value(Value::Object(fields))
            .map_err(|e| error(400, format!("invalid form: {e}")));
    }
    serde_json::from_str(body).map_err(|e| error(400, format!("invalid JSON body: {e}")))
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PasswordChange {
    #[serde(default)]
    pub old_password: String,
    #[serde(default)]
    pub new_password: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewPost {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub content: String,
}

/// Forwards the caller's `Authorization` header to `go.micro.srv.user`.
fn with_token<T>(caller: &Caller<'_>, message: T) -> Result<Request<T>> {
    let header = caller.authorization.ok_or_else(|| {
        error(
            401,
            "missing token: send Authorization: Bearer <token> from login",
        )
    })?;
    let mut outgoing = Request::new(message);
    let value = header
        .parse()
        .map_err(|_| error(401, "invalid Authorization header"))?;
    outgoing.metadata_mut().insert("authorization", value);
    Ok(outgoing)
}

/// As [`with_token`] when the caller sent a token; without one, anonymous.
fn with_optional_token<T>(caller: &Caller<'_>, message: T) -> Result<Request<T>> {
    if caller.authorization.is_some() {
        return with_token(caller, message);
    }
    Ok(Request::new(message))
}

/// Passes on where the caller is (login throttling counts per source).
fn with_source<T>(caller: &Caller<'_>, mut outgoing: Request<T>) -> Request<T> {
    for (value, key) in [
        (caller.remote_ip, "micro-remote-ip"),
        (caller.forwarded_for, "x-forwarded-for"),
    ] {
        if let Some(value) = value
            .filter(|v| v.len() <= 1024)
            .and_then(|v| v.parse().ok())
        {
            outgoing.metadata_mut().insert(key, value);
        }
    }
    outgoing
}

/// The user a successful reply of go.micro.srv.user carries.
fn sent_user(user: Option<user_pb::User>) -> Result<user_pb::User> {
    user.ok_or_else(|| error(500, "go.micro.srv.user sent no user"))
}

/// A read-only call: safe to retry on another instance after any failure.
fn read_only<T>(mut request: Request<T>) -> Request<T> {
    request.extensions_mut().insert(micro::Idempotent);
    request
}

fn user_json(user: &user_pb::User) -> Value {
    json!({"id": user.id.to_string(), "username": user.name})
}

fn post_json(post: &post_pb::Post) -> Value {
    json!({
        "id": post.id.to_string(),
        "title": post.title,
        "content": post.content,
        "user_id": post.user_id.to_string(),
        "created_time": post.created_time,
        "updated_time": post.updated_time,
    })
}

fn query_id(key: &str, value: Option<&str>) -> Result<i64> {
    let text = value.unwrap_or("").trim();
    if text.is_empty() {
        return Err(error(400, format!("{key} cannot be blank")));
    }
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| error(400, format!("{key} must be a positive integer")))
}

fn answer(status: u16, body: Value) -> Result {
    Ok(Answer { status, body })
}

/// The operations, sharing one channel to `go.micro.srv.user`.
#[derive(Clone, Debug)]
pub struct UserRest {
    srv: ServiceChannel,
}

impl UserRest {
    /// `srv`: a channel to `go.micro.srv.user`, e.g.
    /// `client.service(SRV_NAME)`.
    pub fn new(srv: ServiceChannel) -> Self {
        UserRest { srv }
    }

    fn users(&self) -> UserClient<ServiceChannel> {
        UserClient::new(self.srv.clone())
    }

    fn posts(&self) -> PostClient<ServiceChannel> {
        PostClient::new(self.srv.clone())
    }

    /// `GET /user/say/hello?name=N`.
    pub async fn hello(&self, caller: &Caller<'_>, name: Option<&str>) -> Result {
        let name = name.unwrap_or("").trim().to_string();
        if name.is_empty() {
            return Err(error(400, "Name cannot be blank"));
        }
        let outgoing = with_optional_token(
            caller,
            user_pb::Request {
                user_name: name,
                ..Default::default()
            },
        )?;
        let reply = self
            .users()
            .query_user_by_name(read_only(outgoing))
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        answer(200, user_json(&user))
    }

    /// `POST /user/account/register`.
    pub async fn register(&self, credentials: Credentials) -> Result {
        let reply = self
            .users()
            .register(user_pb::Request {
                user_name: credentials.username,
                user_pwd: credentials.password,
                email: credentials.email.unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        answer(201, user_json(&user))
    }

    /// `POST /user/account/login`.
    pub async fn login(&self, caller: &Caller<'_>, credentials: Credentials) -> Result {
        let outgoing = with_source(
            caller,
            Request::new(user_pb::LoginRequest {
                user_name: credentials.username,
                user_pwd: credentials.password,
            }),
        );
        let reply = self
            .users()
            .login(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        answer(
            200,
            json!({"token": reply.token, "expires_at": reply.expires_at, "user": user_json(&user)}),
        )
    }

    /// `GET /user/account/get?id=N`.
    pub async fn get_account(&self, caller: &Caller<'_>, id: Option<&str>) -> Result {
        let id = query_id("id", id)?;
        let outgoing = with_optional_token(
            caller,
            user_pb::Request {
                user_id: id.to_string(),
                ..Default::default()
            },
        )?;
        let reply = self
            .users()
            .get_user(read_only(outgoing))
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        answer(
            200,
            json!({
                "id": user.id.to_string(),
                "username": user.name,
                "email": user.email,
                "created_time": user.created_time,
                "updated_time": user.updated_time,
            }),
        )
    }

    /// `POST /user/account/change-password` + token.
    pub async fn change_password(&self, caller: &Caller<'_>, change: PasswordChange) -> Result {
        let outgoing = with_token(
            caller,
            user_pb::ChangePasswordRequest {
                old_pwd: change.old_password,
                new_pwd: change.new_password,
            },
        )?;
        let reply = self
            .users()
            .change_password(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        answer(200, user_json(&user))
    }

    /// `POST /user/account/delete` + token.
    pub async fn delete_account(&self, caller: &Caller<'_>) -> Result {
        let outgoing = with_token(caller, user_pb::Request::default())?;
        let reply = self
            .users()
            .delete_user(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        let mut body = user_json(&user);
        body["deleted"] = Value::Bool(true);
        answer(200, body)
    }

    /// `GET /user/account/list?page_size=&page_token=` + token.
    pub async fn list_accounts(
        &self,
        caller: &Caller<'_>,
        page_size: Option<&str>,
        page_token: Option<&str>,
    ) -> Result {
        let page_size = match page_size.map(str::trim) {
            None | Some("") => 0,
            Some(text) => text
                .parse::<u32>()
                .map_err(|_| error(400, "page_size must be a number from 1 to 100"))?,
        };
        let outgoing = with_token(
            caller,
            user_pb::ListRequest {
                page_size,
                page_token: page_token.unwrap_or("").to_string(),
            },
        )?;
        let reply = self
            .users()
            .list_users(read_only(outgoing))
            .await
            .map_err(upstream)?
            .into_inner();
        let users: Vec<Value> = reply.users.iter().map(user_json).collect();
        answer(
            200,
            json!({"users": users, "next_page_token": reply.next_page_token}),
        )
    }

    /// `GET /user/article/get-article?id=N`.
    pub async fn get_article(&self, id: Option<&str>) -> Result {
        let id = query_id("id", id)?;
        let reply = self
            .posts()
            .query_user_posts(read_only(Request::new(post_pb::Request {
                post_id: id,
                ..Default::default()
            })))
            .await
            .map_err(upstream)?
            .into_inner();
        let post = reply
            .post
            .ok_or_else(|| error(404, format!("post {id} not found")))?;
        answer(200, post_json(&post))
    }

    /// `POST /user/article/create` + token.
    pub async fn create_article(&self, caller: &Caller<'_>, new: NewPost) -> Result {
        let outgoing = with_token(
            caller,
            post_pb::CreateRequest {
                title: new.title,
                content: new.content,
            },
        )?;
        let reply = self
            .posts()
            .create_post(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let post = reply
            .post
            .ok_or_else(|| error(500, "go.micro.srv.user sent no post"))?;
        answer(201, post_json(&post))
    }
}
