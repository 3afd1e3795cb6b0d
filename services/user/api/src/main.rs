//! `user-api`: `go.micro.api.user`, the API layer behind `micro api --handler=api`.
//!
//! ```text
//! user-api
//! micro api --handler=api
//! curl "http://localhost:8080/user/say/hello?name=huohuo"
//! ```

use clap::Parser;
use user_api::UserApi;
use user_api::proto::api::{
    account_server::AccountServer, article_server::ArticleServer, say_server::SayServer,
};
use user_api::{API_NAME, FILE_DESCRIPTOR_SET, SRV_NAME};

/// Serves go.micro.api.user: Say.Hello, Account.*, Article.* over go.micro.srv.user.
#[derive(Parser, Debug)]
#[command(name = "user-api", version)]
struct Cli {
    #[command(flatten)]
    micro: micro::config::MicroArgs,
}

/// On a `current_thread` runtime when the process may use one CPU, else
/// `multi_thread` (`MICRO_RUNTIME` overrides it): see `micro::runtime`.
fn main() {
    micro::runtime::block_on(main_async())
}

async fn main_async() {
    let cli: Cli = micro::config::parse();
    micro::log::init_with(cli.micro.ops.log_format);
    if let Err(e) = run(cli).await {
        eprintln!("user-api: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let service = match micro::Service::new(API_NAME, &cli.micro).await {
        Ok(service) => service,
        Err(e) if e.is_usage() => micro::config::exit_usage(&e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let api = UserApi::new(service.client().service(SRV_NAME));
    service
        .server()
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(SayServer::new(api.say()))
        .add_service(AccountServer::new(api.account()))
        .add_service(ArticleServer::new(api.article()))
        .bind()
        .await?
        .run()
        .await?;
    service.shutdown().await;
    Ok(())
}
