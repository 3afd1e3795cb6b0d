//! The tutorial's topology in one process: N user-srv instances sharing one
//! store, on a memory registry. user-api's tests add a user-api to it (they
//! include this file).

use std::sync::Arc;
use std::time::Duration;

use micro::registry::memory::MemoryRegistry;
use micro::{Server, ServerOptions, SharedRegistry};
use micro_testing::AbortOnDrop;
use tokio::sync::oneshot;
use user_srv::password::Hasher;
use user_srv::proto::post::post_server::PostServer;
use user_srv::proto::user::user_server::UserServer;
use user_srv::source::TrustedProxies;
use user_srv::srv::UserService;
use user_srv::store::Store;
use user_srv::token::Tokens;
use user_srv::{FILE_DESCRIPTOR_SET, SRV_NAME};

pub const SECRET: &[u8] = b"test secret, test secret, test secret!";

pub fn options() -> ServerOptions {
    ServerOptions {
        address: "127.0.0.1:0".into(),
        register_ttl: Duration::from_secs(10),
        register_interval: Duration::from_secs(5),
        ..ServerOptions::default()
    }
}

/// A running server and how to stop it (aborted if dropped unstopped).
pub struct Running {
    pub address: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<AbortOnDrop<()>>,
}

impl Running {
    /// Runs `server` until stopped, once it has registered.
    pub async fn start(server: Server) -> Running {
        let address = server.local_addr();
        let mut registered = server.registered();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = AbortOnDrop::spawn(async move {
            server
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
                .expect("server ran");
        });
        tokio::time::timeout(Duration::from_secs(10), registered.wait_for(|r| *r))
            .await
            .expect("registered within 10 s")
            .expect("registration signal");
        Running {
            address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Starts one user-srv instance on `store_url`.
pub async fn user_srv(registry: SharedRegistry, store_url: &str) -> (Running, Store) {
    user_srv_trusting(registry, store_url, TrustedProxies::default()).await
}

/// Starts one user-srv instance on `store_url` that believes forwarded
/// client addresses from `trusted` only.
pub async fn user_srv_trusting(
    registry: SharedRegistry,
    store_url: &str,
    trusted: TrustedProxies,
) -> (Running, Store) {
    let store = Store::open(store_url).await.expect("open store");
    let service = UserService::new(
        store.clone(),
        Hasher::new(2, 32).expect("hasher"),
        Tokens::new(SECRET, Duration::from_secs(3600)),
    )
    .with_trusted_proxies(trusted);
    let server = Server::builder(SRV_NAME)
        .registry(registry)
        .options(options())
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(UserServer::new(service.user_handler()))
        .add_service(PostServer::new(service.post_handler()))
        .bind()
        .await
        .expect("bind user-srv");
    (Running::start(server).await, store)
}

/// A memory registry shared by the topology.
pub fn registry() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}
