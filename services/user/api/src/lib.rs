//! `user-api`, `go.micro.api.user`: the API layer behind `micro api --handler=api`.
//!
//! Each handler gets the HTTP request as a `go.api.Request`, calls
//! `go.micro.srv.user` by name (round robin over its instances) and answers
//! a `go.api.Response` with a JSON body. Errors are go-micro error JSON with
//! id `go.micro.api.user`, e.g. `GET /user/say/hello` without `name`:
//! `{"id":"go.micro.api.user","code":400,"detail":"Name cannot be blank","status":"Bad Request"}`.
//!
//! | HTTP | handler | does |
//! | --- | --- | --- |
//! | `GET /user/say/hello?name=N` | `Say.Hello` | `{"id","username"}` of user N |
//! | `POST /user/account/register` `{"username","password","email"?}` | `Account.Register` | creates a user: `{"id","username"}` |
//! | `POST /user/account/login` `{"username","password"}` | `Account.Login` | `{"token","expires_at","user":{"id","username"}}` |
//! | `GET /user/account/get?id=N` (+ token for your own email) | `Account.Get` | `{"id","username","email","created_time","updated_time"}` (`email` empty but for yourself) |
//! | `POST /user/account/change-password` `{"old_password","new_password"}` + token | `Account.ChangePassword` | `{"id","username"}` |
//! | `POST /user/account/delete` + token | `Account.Delete` | `{"id","username","deleted":true}` |
//! | `GET /user/account/list?page_size=20&page_token=` + token | `Account.List` | `{"users":[..],"next_page_token"}` |
//! | `GET /user/article/get-article?id=N` | `Article.GetArticle` | the post |
//! | `POST /user/article/create` `{"title","content"}` + token | `Article.Create` | the new post |
//!
//! "+ token": `Authorization: Bearer <token from login>`.
//!
//! It links no store, password hashing or token signing: those are
//! `user-srv`'s, reached through `user-proto`'s clients. Its server registers
//! the descriptors of `proto/api/user/api.proto` only.

use std::collections::HashMap;

use micro::ServiceChannel;
use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use micro_errors::MicroError;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use user_proto::post::{self as post_pb, post_client::PostClient};
use user_proto::user::{self as user_pb, user_client::UserClient};

use crate::proto::api;
pub use user_proto::{API_NAME, SRV_NAME};

/// Generated code of `proto/api/user/api.proto` (`go.api` is `micro_api_proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    /// `proto/api/user/api.proto`: package `go.micro.api.user`.
    pub mod api {
        tonic::include_proto!("go.micro.api.user");
    }
}

/// Encoded descriptors of `proto/api/user/api.proto` (and the `go.api` proto
/// it imports), the only service this server serves: its registered endpoints
/// and its reflection come from them.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

/// Largest JSON body the API layer parses (the gateway limits bodies too).
const MAX_BODY: usize = 64 * 1024;

/// The three handlers, sharing one channel to `go.micro.srv.user`.
#[derive(Clone, Debug)]
pub struct UserApi {
    srv: ServiceChannel,
}

impl UserApi {
    /// `srv`: a channel to `go.micro.srv.user`, e.g.
    /// `client.service(user_api::SRV_NAME)`.
    pub fn new(srv: ServiceChannel) -> Self {
        UserApi { srv }
    }

    pub fn say(&self) -> SayHandler {
        SayHandler(self.clone())
    }

    pub fn account(&self) -> AccountHandler {
        AccountHandler(self.clone())
    }

    pub fn article(&self) -> ArticleHandler {
        ArticleHandler(self.clone())
    }

    fn users(&self) -> UserClient<ServiceChannel> {
        UserClient::new(self.srv.clone())
    }

    fn posts(&self) -> PostClient<ServiceChannel> {
        PostClient::new(self.srv.clone())
    }
}

fn error(code: i32, detail: impl Into<String>) -> Status {
    MicroError::new(API_NAME, code, detail).into()
}

/// A failure of `go.micro.srv.user`, re-issued as this API's error: the
/// service's own error with the same code and detail; a failure to reach it
/// (whose text names nodes and addresses) as a generic one, logged here.
fn upstream(status: Status) -> Status {
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

fn ok(status: i32, body: Value) -> Result<Response<ApiResponse>, Status> {
    let mut header = HashMap::new();
    header.insert(
        "Content-Type".to_string(),
        Pair::new("Content-Type", vec!["application/json".into()]),
    );
    Ok(Response::new(ApiResponse {
        status_code: status,
        header,
        body: body.to_string(),
    }))
}

fn require_method(request: &ApiRequest, allowed: &[&str]) -> Result<(), Status> {
    if allowed
        .iter()
        .any(|m| request.method.eq_ignore_ascii_case(m))
    {
        return Ok(());
    }
    Err(error(
        405,
        format!(
            "method {} not allowed; use {}",
            request.method,
            allowed.join(" or ")
        ),
    ))
}

/// The JSON body, or the form fields, as `T`.
fn body<T: for<'de> Deserialize<'de>>(request: &ApiRequest) -> Result<T, Status> {
    if request.body.len() > MAX_BODY {
        return Err(error(413, format!("body larger than {MAX_BODY} bytes")));
    }
    if request.body.trim().is_empty() && !request.post.is_empty() {
        // `curl -d '{...}'` without a Content-Type sends JSON as a form; the
        // form decoding has already mangled it (`+`, `&`, `=`), so say so.
        if request.post.len() == 1 && request.post.keys().any(|k| k.trim_start().starts_with('{')) {
            return Err(error(
                400,
                "the body is JSON but was sent as a form: send it with Content-Type: application/json",
            ));
        }
        let form: serde_json::Map<String, Value> = request
            .post
            .iter()
            .filter_map(|(k, pair)| {
                pair.values
                    .first()
                    .map(|v| (k.clone(), Value::String(v.clone())))
            })
            .collect();
        return serde_json::from_value(Value::Object(form))
            .map_err(|e| error(400, format!("invalid form: {e}")));
    }
    serde_json::from_str(&request.body).map_err(|e| error(400, format!("invalid JSON body: {e}")))
}

/// Forwards the caller's `Authorization` header to `go.micro.srv.user`.
fn with_token<T>(request: &ApiRequest, message: T) -> Result<Request<T>, Status> {
    let header = request.first_header("Authorization").ok_or_else(|| {
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
fn with_optional_token<T>(request: &ApiRequest, message: T) -> Result<Request<T>, Status> {
    if request.first_header("Authorization").is_some() {
        return with_token(request, message);
    }
    Ok(Request::new(message))
}

/// Passes on where the caller is: the `Micro-Remote-Ip` the gateway sets,
/// and `X-Forwarded-For` (login throttling counts per source).
fn with_source<T>(request: &ApiRequest, mut outgoing: Request<T>) -> Request<T> {
    for (header, key) in [
        ("Micro-Remote-Ip", "micro-remote-ip"),
        ("X-Forwarded-For", "x-forwarded-for"),
    ] {
        if let Some(value) = request
            .first_header(header)
            .filter(|v| v.len() <= 1024)
            .and_then(|v| v.parse().ok())
        {
            outgoing.metadata_mut().insert(key, value);
        }
    }
    outgoing
}

/// The user a successful reply of go.micro.srv.user carries.
fn sent_user(user: Option<user_pb::User>) -> Result<user_pb::User, Status> {
    user.ok_or_else(|| error(500, "go.micro.srv.user sent no user"))
}

/// A read-only call: safe to retry on another instance after any failure.
fn read_only<T>(message: T) -> Request<T> {
    read_only_request(Request::new(message))
}

fn read_only_request<T>(mut request: Request<T>) -> Request<T> {
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

fn query_id(request: &ApiRequest, key: &str) -> Result<i64, Status> {
    let text = request.first_get(key).unwrap_or("").trim();
    if text.is_empty() {
        return Err(error(400, format!("{key} cannot be blank")));
    }
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| error(400, format!("{key} must be a positive integer")))
}

/// `Say`: the tutorial's hello.
#[derive(Clone, Debug)]
pub struct SayHandler(UserApi);

#[tonic::async_trait]
impl api::say_server::Say for SayHandler {
    async fn hello(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        let name = request.first_get("name").unwrap_or("").trim().to_string();
        if name.is_empty() {
            return Err(error(400, "Name cannot be blank"));
        }
        let outgoing = with_optional_token(
            &request,
            user_pb::Request {
                user_name: name,
                ..Default::default()
            },
        )?;
        let reply = self
            .0
            .users()
            .query_user_by_name(read_only_request(outgoing))
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        ok(200, user_json(&user))
    }
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct PasswordChange {
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    new_password: String,
}

#[derive(Deserialize)]
struct NewPost {
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
}

/// `Account`: register, login, get, change password, delete, list.
#[derive(Clone, Debug)]
pub struct AccountHandler(UserApi);

#[tonic::async_trait]
impl api::account_server::Account for AccountHandler {
    async fn register(
        &self,
        request: Request<ApiRequest>,
    ) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST"])?;
        let credentials: Credentials = body(&request)?;
        let reply = self
            .0
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
        ok(201, user_json(&user))
    }

    async fn login(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST"])?;
        let credentials: Credentials = body(&request)?;
        let outgoing = with_source(
            &request,
            Request::new(user_pb::LoginRequest {
                user_name: credentials.username,
                user_pwd: credentials.password,
            }),
        );
        let reply = self
            .0
            .users()
            .login(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        ok(
            200,
            json!({"token": reply.token, "expires_at": reply.expires_at, "user": user_json(&user)}),
        )
    }

    async fn get(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["GET"])?;
        let id = query_id(&request, "id")?;
        let outgoing = with_optional_token(
            &request,
            user_pb::Request {
                user_id: id.to_string(),
                ..Default::default()
            },
        )?;
        let reply = self
            .0
            .users()
            .get_user(read_only_request(outgoing))
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        ok(
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

    async fn change_password(
        &self,
        request: Request<ApiRequest>,
    ) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST", "PUT"])?;
        let change: PasswordChange = body(&request)?;
        let outgoing = with_token(
            &request,
            user_pb::ChangePasswordRequest {
                old_pwd: change.old_password,
                new_pwd: change.new_password,
            },
        )?;
        let reply = self
            .0
            .users()
            .change_password(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        ok(200, user_json(&user))
    }

    async fn delete(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST", "DELETE"])?;
        let outgoing = with_token(&request, user_pb::Request::default())?;
        let reply = self
            .0
            .users()
            .delete_user(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let user = sent_user(reply.user)?;
        let mut body = user_json(&user);
        body["deleted"] = Value::Bool(true);
        ok(200, body)
    }

    async fn list(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["GET"])?;
        let page_size = match request.first_get("page_size").map(str::trim) {
            None | Some("") => 0,
            Some(text) => text
                .parse::<u32>()
                .map_err(|_| error(400, "page_size must be a number from 1 to 100"))?,
        };
        let outgoing = with_token(
            &request,
            user_pb::ListRequest {
                page_size,
                page_token: request.first_get("page_token").unwrap_or("").to_string(),
            },
        )?;
        let reply = self
            .0
            .users()
            .list_users(read_only_request(outgoing))
            .await
            .map_err(upstream)?
            .into_inner();
        let users: Vec<Value> = reply.users.iter().map(user_json).collect();
        ok(
            200,
            json!({"users": users, "next_page_token": reply.next_page_token}),
        )
    }
}

/// `Article`: the tutorial's posts.
#[derive(Clone, Debug)]
pub struct ArticleHandler(UserApi);

#[tonic::async_trait]
impl api::article_server::Article for ArticleHandler {
    async fn get_article(
        &self,
        request: Request<ApiRequest>,
    ) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        let id = query_id(&request, "id")?;
        let reply = self
            .0
            .posts()
            .query_user_posts(read_only(post_pb::Request {
                post_id: id,
                ..Default::default()
            }))
            .await
            .map_err(upstream)?
            .into_inner();
        let post = reply
            .post
            .ok_or_else(|| error(404, format!("post {id} not found")))?;
        ok(200, post_json(&post))
    }

    async fn create(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST"])?;
        let new: NewPost = body(&request)?;
        let outgoing = with_token(
            &request,
            post_pb::CreateRequest {
                title: new.title,
                content: new.content,
            },
        )?;
        let reply = self
            .0
            .posts()
            .create_post(outgoing)
            .await
            .map_err(upstream)?
            .into_inner();
        let post = reply
            .post
            .ok_or_else(|| error(500, "go.micro.srv.user sent no post"))?;
        ok(201, post_json(&post))
    }
}
