//! `user-srv`, the user service of the go-micro tutorial, built for real: it
//! serves `go.micro.srv.user` (handlers `User` and `Post`) on a real store:
//! embedded SQLite by default, PostgreSQL with `--database_url
//! postgres://...`. Passwords are Argon2id hashes; no response or log line
//! ever holds a password or a hash.
//!
//! Its siblings link none of this: `user-api` (the API layer, crate
//! `user_api`) and `user-client` call it through `user-proto`'s clients.

pub mod events;
pub mod password;
pub mod source;
pub mod srv;
pub mod store;
pub mod throttle;
pub mod token;
pub mod validate;

pub use user_proto::SRV_NAME;

/// The service's protos: `user-proto`'s messages and clients, and the
/// servers generated here over them.
#[allow(missing_debug_implementations, clippy::all)]
pub mod proto {
    /// `proto/user/user.proto`: package `go.micro.srv.user`.
    pub mod user {
        pub use user_proto::user::*;
        tonic::include_proto!("go.micro.srv.user");
    }
    /// `proto/post/post.proto`: package `go.micro.srv.post`.
    pub mod post {
        pub use user_proto::post::*;
        tonic::include_proto!("go.micro.srv.post");
    }
}

/// Encoded descriptors of `user.proto` and `post.proto`, the only protos this
/// server serves: its registered endpoints and its reflection come from them.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
