//! The user service's protos as Rust, shared by its three binaries: the
//! messages and clients of `go.micro.srv.user` (handlers `User` and `Post`).
//!
//! Servers and descriptors are not here: `user-srv` generates its servers
//! over these types and registers its own descriptors, `user-api` those of
//! `go.micro.api.user`; `user-api` and `user-client` only call.

/// `proto/user/user.proto`: package `go.micro.srv.user`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod user {
    tonic::include_proto!("go.micro.srv.user");
}

/// `proto/post/post.proto`: package `go.micro.srv.post`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod post {
    tonic::include_proto!("go.micro.srv.post");
}

/// The service `user-srv` registers (handlers `User` and `Post`).
pub const SRV_NAME: &str = "go.micro.srv.user";
/// The service `user-api` registers (handlers `Say`, `Account`, `Article`).
pub const API_NAME: &str = "go.micro.api.user";
