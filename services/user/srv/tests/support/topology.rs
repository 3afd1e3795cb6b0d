//! The tutorial's topology in one process: N user-srv instances sharing one
//! store, on a memory registry. user-api's tests add a user-api to it (they
//! include this file).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    let (running, store, _) = start_user_srv(registry, store_url, trusted, false).await;
    (running, store)
}

/// Starts one user-srv instance on `store_url` that counts the `User` calls
/// it serves (a counting layer in front of its handler).
pub async fn user_srv_counting(
    registry: SharedRegistry,
    store_url: &str,
) -> (Running, Store, Served) {
    start_user_srv(registry, store_url, TrustedProxies::default(), true).await
}

/// How many `User` calls one instance has served.
#[derive(Clone, Debug, Default)]
pub struct Served(Arc<AtomicUsize>);

impl Served {
    pub fn calls(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gRPC service that counts the calls it is given.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    served: Served,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tonic::codegen::Service<R> for Counted<S>
where
    S: tonic::codegen::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.served.0.fetch_add(1, Ordering::Relaxed);
        self.inner.call(request)
    }
}

async fn start_user_srv(
    registry: SharedRegistry,
    store_url: &str,
    trusted: TrustedProxies,
    counting: bool,
) -> (Running, Store, Served) {
    let store = Store::open(store_url).await.expect("open store");
    let service = UserService::new(
        store.clone(),
        Hasher::new(2, 32).expect("hasher"),
        Tokens::new(SECRET, Duration::from_secs(3600)),
    )
    .with_trusted_proxies(trusted);
    let served = Served::default();
    let builder = Server::builder(SRV_NAME)
        .registry(registry)
        .options(options())
        .file_descriptor_set(FILE_DESCRIPTOR_SET);
    let builder = if counting {
        builder.add_service(Counted {
            inner: UserServer::new(service.user_handler()),
            served: served.clone(),
        })
    } else {
        builder.add_service(UserServer::new(service.user_handler()))
    };
    let server = builder
        .add_service(PostServer::new(service.post_handler()))
        .bind()
        .await
        .expect("bind user-srv");
    (Running::start(server).await, store, served)
}

/// A memory registry shared by the topology.
pub fn registry() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}
