//! `go.micro.srv.user`: the `User` and `Post` handlers over the store.
//!
//! Errors are go-micro errors (`{"id":"go.micro.srv.user","code":..}`) in
//! gRPC statuses. Unknown user and wrong password are the same 401, after the
//! same Argon2 work; failed logins are throttled per account and source
//! ([`crate::throttle`]). No response carries `pwd` or a hash, and a user's
//! email is shown only to that user (a valid token of theirs). Every call
//! that needs a token checks it against the user's current token version,
//! so a password change or a delete revokes earlier tokens.

use std::sync::Arc;

use micro_errors::MicroError;
use tonic::{Request, Response, Status};

use crate::events::{Events, Kind};
use crate::password::{HashError, Hasher};
use crate::proto::{post as post_pb, user as user_pb};
use crate::source::{TrustedProxies, source_of};
use crate::store::{PostRecord, Store, StoreError, UserRecord};
use crate::throttle::LoginThrottle;
use crate::token::{TokenError, Tokens};
use crate::{SRV_NAME, now_unix, validate};

/// Most users in one page of `ListUsers`.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most posts returned for one user.
pub const MAX_POSTS: u32 = 100;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct UserService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hasher: Hasher,
    tokens: Tokens,
    throttle: LoginThrottle,
    trusted_proxies: TrustedProxies,
    events: Events,
}

impl Inner {
    /// The caller's user, from a valid token of the current version.
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<UserRecord, Status> {
        let (id, claims) = self
            .tokens
            .user_from_metadata(metadata)
            .map_err(token_error)?;
        let record = self
            .store
            .user_by_id(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| token_error(TokenError::Revoked))?;
        if claims.ver != record.token_version {
            return Err(token_error(TokenError::Revoked));
        }
        Ok(record)
    }

    /// The caller's user id if the call carries a valid token; anonymous
    /// otherwise (for what anyone may see, less the private fields).
    async fn viewer(&self, metadata: &tonic::metadata::MetadataMap) -> Option<i64> {
        metadata.get("authorization")?;
        self.authenticate(metadata).await.ok().map(|r| r.id)
    }

    /// The user with `id`, or `NotFound`.
    async fn user_or_not_found(&self, id: i64) -> Result<UserRecord, Status> {
        self.store
            .user_by_id(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(format!("user {id} not found")))
    }
}

impl UserService {
    pub fn new(store: Store, hasher: Hasher, tokens: Tokens) -> Self {
        UserService {
            inner: Arc::new(Inner {
                throttle: LoginThrottle::new(store.clone()),
                store,
                hasher,
                tokens,
                trusted_proxies: TrustedProxies::default(),
                events: Events::none(),
            }),
        }
    }

    /// The peers whose forwarded client addresses (`micro-remote-ip`,
    /// `x-forwarded-for`) login throttling believes (default: loopback
    /// only). Call before the handlers are made.
    pub fn with_trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.trusted_proxies = trusted,
            None => tracing::error!("with_trusted_proxies after the handlers were made: ignored"),
        }
        self
    }

    /// Where stored changes are announced (`go.micro.evt.user`, see
    /// [`crate::events`]); none by default. Call before the handlers are made.
    pub fn with_events(mut self, events: Events) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.events = events,
            None => tracing::error!("with_events after the handlers were made: ignored"),
        }
        self
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The `User` handler, for `UserServer::new`.
    pub fn user_handler(&self) -> UserHandler {
        UserHandler(self.clone())
    }

    /// The `Post` handler, for `PostServer::new`.
    pub fn post_handler(&self) -> PostHandler {
        PostHandler(self.clone())
    }
}

fn bad_request(detail: impl Into<String>) -> Status {
    MicroError::bad_request(SRV_NAME, detail).into()
}

fn not_found(detail: impl Into<String>) -> Status {
    MicroError::not_found(SRV_NAME, detail).into()
}

fn unauthorized(detail: impl Into<String>) -> Status {
    MicroError::unauthorized(SRV_NAME, detail).into()
}

fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::DuplicateName(name) => {
            MicroError::conflict(SRV_NAME, format!("user name {name:?} is taken")).into()
        }
        StoreError::NoSuchUser(id) => not_found(format!("user {id} not found")),
        other => {
            tracing::error!("store error: {other}");
            MicroError::internal(SRV_NAME, "the user store failed; see the service log").into()
        }
    }
}

fn hash_error(e: HashError) -> Status {
    match e {
        HashError::Busy => MicroError::new(SRV_NAME, 429, e.to_string()).into(),
        HashError::Failed(detail) => {
            tracing::error!("password hashing failed: {detail}");
            MicroError::internal(SRV_NAME, "password hashing failed").into()
        }
    }
}

fn token_error(e: TokenError) -> Status {
    match e {
        TokenError::Sign(detail) => {
            tracing::error!("token signing failed: {detail}");
            MicroError::internal(SRV_NAME, "cannot issue a token").into()
        }
        other => unauthorized(other.to_string()),
    }
}

fn unsigned(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// The wire form of a user: never with `pwd`; the email only for its owner.
fn user_message(record: &UserRecord, viewer: Option<i64>) -> user_pb::User {
    let email = if viewer == Some(record.id) {
        record.email.clone().unwrap_or_default()
    } else {
        String::new()
    };
    user_pb::User {
        id: record.id,
        name: record.name.clone(),
        pwd: String::new(),
        created_time: unsigned(record.created_time),
        updated_time: unsigned(record.updated_time),
        email,
    }
}

fn user_response(record: &UserRecord, viewer: Option<i64>) -> Response<user_pb::Response> {
    Response::new(user_pb::Response {
        success: true,
        error: None,
        user: Some(user_message(record, viewer)),
    })
}

fn post_message(record: &PostRecord) -> post_pb::Post {
    post_pb::Post {
        id: record.id,
        title: record.title.clone(),
        content: record.content.clone(),
        created_time: unsigned(record.created_time),
        updated_time: unsigned(record.updated_time),
        user_id: record.user_id,
    }
}

fn parse_id(text: &str, what: &str) -> Result<i64, Status> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad_request(format!("{what} cannot be blank")));
    }
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| bad_request(format!("{what} must be a positive integer")))
}

/// The `User` handler.
#[derive(Clone, Debug)]
pub struct UserHandler(UserService);

#[tonic::async_trait]
impl user_pb::user_server::User for UserHandler {
    async fn query_user_by_name(
        &self,
        request: Request<user_pb::Request>,
    ) -> Result<Response<user_pb::Response>, Status> {
        let viewer = self.0.inner.viewer(request.metadata()).await;
        let name = request.into_inner().user_name;
        if name.trim().is_empty() {
            return Err(bad_request("userName cannot be blank"));
        }
        // A name no user can have is not looked up, nor echoed back.
        if validate::username(&name).is_err() {
            return Err(not_found("no user has this name"));
        }
        tracing::debug!(name = %name, "User.QueryUserByName");
        match self
            .0
            .inner
            .store
            .user_by_name(&name)
            .await
            .map_err(store_error)?
        {
            Some(record) => Ok(user_response(&record, viewer)),
            None => Err(not_found(format!("user {name:?} not found"))),
        }
    }

    async fn register(
        &self,
        request: Request<user_pb::Request>,
    ) -> Result<Response<user_pb::Response>, Status> {
        let request = request.into_inner();
        validate::username(&request.user_name).map_err(bad_request)?;
        validate::password(&request.user_pwd).map_err(bad_request)?;
        let email = Some(request.email.trim()).filter(|e| !e.is_empty());
        if let Some(email) = email {
            validate::email(email).map_err(bad_request)?;
        }
        let inner = &self.0.inner;
        let hash = inner
            .hasher
            .hash(&request.user_pwd)
            .await
            .map_err(hash_error)?;
        let record = inner
            .store
            .create_user(&request.user_name, email, &hash, now_unix())
            .await
            .map_err(store_error)?;
        tracing::info!(user = record.id, name = %record.name, "registered");
        inner.events.emit(Kind::Registered, &record);
        Ok(user_response(&record, Some(record.id)))
    }

    async fn login(
        &self,
        request: Request<user_pb::LoginRequest>,
    ) -> Result<Response<user_pb::LoginResponse>, Status> {
        let inner = &self.0.inner;
        let source = source_of(&request, &inner.trusted_proxies);
        let request = request.into_inner();
        if let Err(wait) = inner
            .throttle
            .check(&request.user_name, &source)
            .await
            .map_err(store_error)?
        {
            // The same answer whether the account exists or not, before any
            // password work.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(MicroError::new(
                SRV_NAME,
                429,
                format!("too many failed logins: try again in {seconds} s"),
            )
            .into());
        }
        // Look up only names that could exist; either way, do the same work.
        let record = if validate::username(&request.user_name).is_ok() {
            inner
                .store
                .user_by_name(&request.user_name)
                .await
                .map_err(store_error)?
        } else {
            None
        };
        let ok = inner
            .hasher
            .verify(
                &request.user_pwd,
                record.as_ref().map(|r| r.password_hash.as_str()),
            )
            .await
            .map_err(hash_error)?;
        let Some(record) = record.filter(|_| ok) else {
            inner
                .throttle
                .failed(&request.user_name, &source)
                .await
                .map_err(store_error)?;
            return Err(unauthorized("invalid user name or password"));
        };
        inner
            .throttle
            .succeeded(&request.user_name, &source)
            .await
            .map_err(store_error)?;
        let (token, expires_at) = inner
            .tokens
            .issue(record.id, &record.name, record.token_version)
            .map_err(token_error)?;
        Ok(Response::new(user_pb::LoginResponse {
            success: true,
            error: None,
            user: Some(user_message(&record, Some(record.id))),
            token,
            expires_at,
        }))
    }

    async fn get_user(
        &self,
        request: Request<user_pb::Request>,
    ) -> Result<Response<user_pb::Response>, Status> {
        let viewer = self.0.inner.viewer(request.metadata()).await;
        let id = parse_id(&request.into_inner().user_id, "userID")?;
        let record = self.0.inner.user_or_not_found(id).await?;
        Ok(user_response(&record, viewer))
    }

    async fn change_password(
        &self,
        request: Request<user_pb::ChangePasswordRequest>,
    ) -> Result<Response<user_pb::Response>, Status> {
        let inner = &self.0.inner;
        let record = inner.authenticate(request.metadata()).await?;
        let id = record.id;
        let request = request.into_inner();
        validate::password(&request.new_pwd).map_err(|e| bad_request(format!("new {e}")))?;
        let ok = inner
            .hasher
            .verify(&request.old_pwd, Some(&record.password_hash))
            .await
            .map_err(hash_error)?;
        if !ok {
            return Err(unauthorized("the old password is wrong"));
        }
        let hash = inner
            .hasher
            .hash(&request.new_pwd)
            .await
            .map_err(hash_error)?;
        if !inner
            .store
            .update_password(id, &hash, now_unix())
            .await
            .map_err(store_error)?
        {
            return Err(not_found(format!("user {id} not found")));
        }
        tracing::info!(user = id, "password changed; earlier tokens revoked");
        let record = inner.user_or_not_found(id).await?;
        inner.events.emit(Kind::PasswordChanged, &record);
        Ok(user_response(&record, Some(id)))
    }

    async fn delete_user(
        &self,
        request: Request<user_pb::Request>,
    ) -> Result<Response<user_pb::Response>, Status> {
        let inner = &self.0.inner;
        let record = inner.authenticate(request.metadata()).await?;
        let id = record.id;
        if inner.store.delete_user(id).await.map_err(store_error)? {
            inner.events.emit(Kind::Deleted, &record);
        }
        tracing::info!(user = id, "deleted");
        Ok(user_response(&record, Some(id)))
    }

    async fn list_users(
        &self,
        request: Request<user_pb::ListRequest>,
    ) -> Result<Response<user_pb::ListResponse>, Status> {
        // Listing users is for users: a token is required.
        let viewer = self.0.inner.authenticate(request.metadata()).await?.id;
        let request = request.into_inner();
        let size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse::<i64>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    bad_request("invalid pageToken: pass nextPageToken from the previous page")
                })?
        };
        // One more than asked tells whether another page follows.
        let mut records = self
            .0
            .inner
            .store
            .list_users(after, size + 1)
            .await
            .map_err(store_error)?;
        let more = records.len() > size as usize;
        records.truncate(size as usize);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(user_pb::ListResponse {
            users: records
                .iter()
                .map(|r| user_message(r, Some(viewer)))
                .collect(),
            next_page_token,
        }))
    }
}

/// The `Post` handler.
#[derive(Clone, Debug)]
pub struct PostHandler(UserService);

#[tonic::async_trait]
impl post_pb::post_server::Post for PostHandler {
    async fn query_user_posts(
        &self,
        request: Request<post_pb::Request>,
    ) -> Result<Response<post_pb::Response>, Status> {
        let request = request.into_inner();
        let store = &self.0.inner.store;
        if request.post_id > 0 {
            let post = store
                .post_by_id(request.post_id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(format!("post {} not found", request.post_id)))?;
            let message = post_message(&post);
            return Ok(Response::new(post_pb::Response {
                success: true,
                error: None,
                post: Some(message.clone()),
                posts: vec![message],
            }));
        }
        if request.user_id > 0 {
            let posts: Vec<post_pb::Post> = store
                .posts_by_user(request.user_id, MAX_POSTS)
                .await
                .map_err(store_error)?
                .iter()
                .map(post_message)
                .collect();
            return Ok(Response::new(post_pb::Response {
                success: true,
                error: None,
                post: posts.first().cloned(),
                posts,
            }));
        }
        Err(bad_request("postID or userID is required"))
    }

    async fn create_post(
        &self,
        request: Request<post_pb::CreateRequest>,
    ) -> Result<Response<post_pb::Response>, Status> {
        let inner = &self.0.inner;
        let user_id = inner.authenticate(request.metadata()).await?.id;
        let request = request.into_inner();
        let title = request.title.trim();
        if title.is_empty() || title.chars().count() > 200 {
            return Err(bad_request("title must be 1 to 200 characters long"));
        }
        if request.content.len() > 64 * 1024 {
            return Err(bad_request("content must be at most 64 KiB"));
        }
        let post = inner
            .store
            .create_post(user_id, title, &request.content, now_unix())
            .await
            .map_err(store_error)?;
        let message = post_message(&post);
        Ok(Response::new(post_pb::Response {
            success: true,
            error: None,
            post: Some(message.clone()),
            posts: vec![message],
        }))
    }
}
