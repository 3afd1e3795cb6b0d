//! The user service of the go-micro tutorial, built for real.
//!
//! - **`user-srv`** serves `go.micro.srv.user` (handlers `User` and `Post`) on
//!   a real store: embedded SQLite by default, PostgreSQL with
//!   `--database_url postgres://...`. Passwords are Argon2id hashes; no
//!   response or log line ever holds a password or a hash.
//! - **`user-api`** serves `go.micro.api.user` (handlers `Say`, `Account`,
//!   `Article`), the API layer behind `micro api --handler=api`: it takes
//!   `go.api.Request`s, calls `go.micro.srv.user` by name, and answers JSON.
//! - **`user-client`** finds `go.micro.srv.user` in the registry and calls it.

pub mod api;
pub mod password;
pub mod source;
pub mod srv;
pub mod store;
pub mod throttle;
pub mod token;
pub mod validate;

/// Generated code of the service's protos.
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    /// `proto/user/user.proto`: package `go.micro.srv.user`.
    pub mod user {
        tonic::include_proto!("go.micro.srv.user");
    }
    /// `proto/post/post.proto`: package `go.micro.srv.post`.
    pub mod post {
        tonic::include_proto!("go.micro.srv.post");
    }
    /// `proto/api/user/api.proto`: package `go.micro.api.user`.
    pub mod api {
        tonic::include_proto!("go.micro.api.user");
    }
}

/// Encoded descriptors of the three protos (and go.api), for the servers.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

/// The service `user-srv` registers.
pub const SRV_NAME: &str = "go.micro.srv.user";
/// The service `user-api` registers.
pub const API_NAME: &str = "go.micro.api.user";

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
