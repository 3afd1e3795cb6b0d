//! user-srv's in-process topology (N user-srv instances sharing one store, on
//! a memory registry: user-srv's own test support, included), plus a user-api.

use micro::{Client, ClientOptions, Server, SharedRegistry};
use user_api::proto::api::{
    account_server::AccountServer, article_server::ArticleServer, say_server::SayServer,
};
use user_api::{API_NAME, FILE_DESCRIPTOR_SET, SRV_NAME, UserApi};

#[path = "../../../srv/tests/support/topology.rs"]
mod srv;
pub use srv::*;

/// Starts user-api, calling user-srv through `registry`.
pub async fn user_api(registry: SharedRegistry) -> Running {
    let client = Client::new(registry.clone(), ClientOptions::default());
    let api = UserApi::new(client.service(SRV_NAME));
    let server = Server::builder(API_NAME)
        .registry(registry)
        .options(options())
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(SayServer::new(api.say()))
        .add_service(AccountServer::new(api.account()))
        .add_service(ArticleServer::new(api.article()))
        .bind()
        .await
        .expect("bind user-api");
    Running::start(server).await
}
