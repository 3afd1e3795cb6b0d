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
//! The operations themselves are [`rest`]'s, shared with `user-web` (the same
//! API as an axum service, no gateway in front), so both answer the same
//! status codes and bytes.
//!
//! It links no store, password hashing or token signing: those are
//! `user-srv`'s, reached through `user-proto`'s clients. Its server registers
//! the descriptors of `proto/api/user/api.proto` only.

use std::collections::HashMap;

use micro::ServiceChannel;
use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use tonic::{Request, Response, Status};

use crate::proto::api;
use crate::rest::{Answer, Caller, UserRest};
pub use user_proto::{API_NAME, SRV_NAME};

pub mod rest;

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

/// The three handlers, sharing the operations over one channel to
/// `go.micro.srv.user`.
#[derive(Clone, Debug)]
pub struct UserApi {
    rest: UserRest,
}

impl UserApi {
    /// `srv`: a channel to `go.micro.srv.user`, e.g.
    /// `client.service(user_api::SRV_NAME)`.
    pub fn new(srv: ServiceChannel) -> Self {
        UserApi {
            rest: UserRest::new(srv),
        }
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
}

/// An answer as `go.api.Response`, an error as the micro error status the
/// gateway turns into HTTP.
fn reply(result: rest::Result) -> Result<Response<ApiResponse>, Status> {
    let Answer { status, body } = result.map_err(Status::from)?;
    let mut header = HashMap::new();
    header.insert(
        "Content-Type".to_string(),
        Pair::new("Content-Type", vec!["application/json".into()]),
    );
    Ok(Response::new(ApiResponse {
        status_code: i32::from(status),
        header,
        body: body.to_string(),
    }))
}

fn require_method(request: &ApiRequest, allowed: &[&str]) -> Result<(), Status> {
    rest::require_method(&request.method, allowed).map_err(Status::from)
}

/// The JSON body, or the form fields, as `T`.
fn body<T: for<'de> serde::Deserialize<'de>>(request: &ApiRequest) -> Result<T, Status> {
    let form: Vec<(String, String)> = request
        .post
        .iter()
        .filter_map(|(k, pair)| pair.values.first().map(|v| (k.clone(), v.clone())))
        .collect();
    rest::decode(&request.body, &form).map_err(Status::from)
}

/// The headers the operations read: the token, and where the caller is
/// (the `Micro-Remote-Ip` the gateway sets, and `X-Forwarded-For`).
fn caller(request: &ApiRequest) -> Caller<'_> {
    Caller {
        authorization: request.first_header("Authorization"),
        remote_ip: request.first_header("Micro-Remote-Ip"),
        forwarded_for: request.first_header("X-Forwarded-For"),
    }
}

/// `Say`: the tutorial's hello.
#[derive(Clone, Debug)]
pub struct SayHandler(UserApi);

#[tonic::async_trait]
impl api::say_server::Say for SayHandler {
    async fn hello(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        let name = request.first_get("name");
        reply(self.0.rest.hello(&caller(&request), name).await)
    }
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
        reply(self.0.rest.register(body(&request)?).await)
    }

    async fn login(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST"])?;
        let credentials = body(&request)?;
        reply(self.0.rest.login(&caller(&request), credentials).await)
    }

    async fn get(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["GET"])?;
        let id = request.first_get("id");
        reply(self.0.rest.get_account(&caller(&request), id).await)
    }

    async fn change_password(
        &self,
        request: Request<ApiRequest>,
    ) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST", "PUT"])?;
        let change = body(&request)?;
        reply(self.0.rest.change_password(&caller(&request), change).await)
    }

    async fn delete(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST", "DELETE"])?;
        reply(self.0.rest.delete_account(&caller(&request)).await)
    }

    async fn list(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["GET"])?;
        let (size, token) = (
            request.first_get("page_size"),
            request.first_get("page_token"),
        );
        reply(
            self.0
                .rest
                .list_accounts(&caller(&request), size, token)
                .await,
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
        reply(self.0.rest.get_article(request.first_get("id")).await)
    }

    async fn create(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        require_method(&request, &["POST"])?;
        let new = body(&request)?;
        reply(self.0.rest.create_article(&caller(&request), new).await)
    }
}
