//! `user-srv`: the user service, `go.micro.srv.user` (handlers User and Post).
//!
//! ```text
//! user-srv                                   # SQLite in ./data/user.db, mDNS registry
//! user-srv --registry=etcd --registry_address=127.0.0.1:2379
//! user-srv --database_url postgres://user:pass@db:5432/users
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use user_srv::events::{self, Events};
use user_srv::password::Hasher;
use user_srv::proto::post::post_server::PostServer;
use user_srv::proto::user::user_server::UserServer;
use user_srv::source::TrustedProxies;
use user_srv::srv::UserService;
use user_srv::store::{self, Store};
use user_srv::token::Tokens;
use user_srv::{FILE_DESCRIPTOR_SET, SRV_NAME};

/// Serves go.micro.srv.user: users and their posts, on SQLite or PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "user-srv", version)]
struct Cli {
    /// Store: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB (default: an SQLite file in --data_dir)
    #[arg(
        long = "database_url",
        visible_alias = "database-url",
        env = "MICRO_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,

    /// Directory of the default SQLite store
    #[arg(
        long = "data_dir",
        visible_alias = "data-dir",
        env = "MICRO_DATA_DIR",
        default_value = "data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,

    /// Key that signs login tokens; every instance must share it (default: a random key, this instance only)
    #[arg(
        long = "auth_secret",
        visible_alias = "auth-secret",
        env = "MICRO_AUTH_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    auth_secret: Option<String>,

    /// How long a login token is valid
    #[arg(long = "auth_token_ttl", visible_alias = "auth-token-ttl", env = "MICRO_AUTH_TOKEN_TTL", default_value = "24h",
          value_parser = micro::config::positive_duration, value_name = "DURATION")]
    auth_token_ttl: Duration,

    /// Proxies whose forwarded client address (micro-remote-ip, x-forwarded-for) login throttling believes: CIDRs or addresses, comma separated, or "none"
    #[arg(
        long = "trusted_proxies",
        visible_alias = "trusted-proxies",
        env = "MICRO_TRUSTED_PROXIES",
        default_value = TrustedProxies::DEFAULT,
        value_name = "CIDRS"
    )]
    trusted_proxies: TrustedProxies,

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
        eprintln!("user-srv: {e}");
        std::process::exit(1);
    }
    // Everything is closed (or given up on, bounded): exit now rather than
    // wait for blocked worker threads when the runtime is dropped.
    std::process::exit(0);
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let url = match cli.database_url.clone() {
        Some(url) => url,
        None => {
            if let Err(e) = store::prepare_data_dir(&cli.data_dir) {
                micro::config::exit_usage(&e.to_string());
            }
            store::default_url(&cli.data_dir)
        }
    };
    let store = match Store::open(&url).await {
        Ok(store) => store,
        Err(e) if e.is_usage() => micro::config::exit_usage(&e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let service = match micro::Service::new(SRV_NAME, &cli.micro).await {
        Ok(service) => service,
        Err(e) if e.is_usage() => micro::config::exit_usage(&e.to_string()),
        Err(e) => return Err(e.into()),
    };
    tracing::info!("Store [{:?}] {}", store.backend(), store::redact(&url));

    let tokens = match cli.auth_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => {
            if secret.len() < 32 {
                tracing::warn!(
                    "--auth_secret is shorter than 32 bytes; use a longer random secret"
                );
            }
            Tokens::new(secret.as_bytes(), cli.auth_token_ttl)
        }
        None => {
            tracing::warn!(
                "no --auth_secret (MICRO_AUTH_SECRET): signing tokens with a random key; \
                 every instance must share one secret, or tokens from one are refused by the others"
            );
            Tokens::generated(cli.auth_token_ttl)?
        }
    };
    tracing::info!(
        "Login throttling believes forwarded client addresses from: {}",
        cli.trusted_proxies
    );
    let (events, publisher) = Events::start(service.event(events::TOPIC));
    let users = UserService::new(store.clone(), Hasher::with_defaults()?, tokens)
        .with_trusted_proxies(cli.trusted_proxies.clone())
        .with_events(events);

    let checked = store.clone();
    service
        .server()
        // Not SERVING while the store does not answer.
        .readiness_check("store", move || {
            let store = checked.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        })
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(UserServer::new(users.user_handler()))
        .add_service(PostServer::new(users.post_handler()))
        .bind()
        .await?
        .run()
        .await?;
    // The last events go out before the broker closes.
    drop(users);
    publisher.finish(Duration::from_secs(2)).await;
    // Bounded: an unreachable registry or store must not hold the exit.
    let closing = Duration::from_secs(1);
    if tokio::time::timeout(closing, service.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Registry did not close within {closing:?}; exiting anyway");
    }
    if tokio::time::timeout(closing, store.close()).await.is_err() {
        tracing::warn!("Store did not close within {closing:?}; exiting anyway");
    }
    Ok(())
}
