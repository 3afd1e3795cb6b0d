//! `user-web`: `go.micro.web.user`, the user REST API with no gateway in
//! front, calling `go.micro.srv.user`.
//!
//! ```text
//! user-srv &
//! user-web --server_address :8080
//! curl "http://localhost:8080/user/say/hello?name=huohuo"
//! ```

use clap::Parser;
use micro_api::edge::{EdgeLayer, EdgeOptions};
use micro_api::ratelimit::{Rate, RateLimits};
use user_api::rest::UserRest;
use user_web::{SRV_NAME, WEB_NAME};

/// Serves go.micro.web.user: the user REST API over go.micro.srv.user.
#[derive(Parser, Debug)]
#[command(name = "user-web", version)]
struct Cli {
    #[command(flatten)]
    micro: micro::config::MicroArgs,

    /// Requests per second one client IP may send (429 beyond; off by default)
    #[arg(long = "rate_limit", visible_alias = "rate-limit", env = "MICRO_WEB_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    rate_limit: Option<u32>,

    /// Requests one client IP may send at once (default: --rate_limit)
    #[arg(long = "rate_burst", visible_alias = "rate-burst", env = "MICRO_WEB_RATE_BURST", value_parser = clap::value_parser!(u32).range(1..), value_name = "N", requires = "rate_limit")]
    rate_burst: Option<u32>,
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
        eprintln!("user-web: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let service = match micro::Service::new(WEB_NAME, &cli.micro).await {
        Ok(service) => service,
        Err(e) if e.is_usage() => micro::config::exit_usage(&e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let edge = EdgeLayer::new(EdgeOptions {
        rate_limits: RateLimits {
            per_ip: cli.rate_limit.and_then(|n| Rate::new(n, cli.rate_burst)),
            per_route: None,
        },
        ..EdgeOptions::default()
    });
    let rest = UserRest::new(service.client().service(SRV_NAME));
    let mut web = service.web();
    for (pattern, route) in user_web::routes(&rest) {
        web = web.route(pattern, route);
    }
    web.router(user_web::fallback())
        .map_router(|router| router.layer(edge))
        .bind()
        .await?
        .run()
        .await?;
    service.shutdown().await;
    Ok(())
}
