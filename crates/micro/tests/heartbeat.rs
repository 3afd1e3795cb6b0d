//! Registration is renewed every interval; a node that stops renewing lapses
//! after its TTL. On paused time: deterministic and instant.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::registry::memory::MemoryRegistry;
use micro::registry::{Error, RegisterOptions, Registry, Service, WatchOptions, Watcher};
use micro::{Server, ServerOptions};
use micro_testing::greeter::greeter_server::GreeterServer;
use micro_testing::{FILE_DESCRIPTOR_SET, TestGreeter};
use tokio::time::Instant;

/// Records when each registration happened and with which TTL.
#[derive(Debug, Default)]
struct CountingRegistry {
    inner: MemoryRegistry,
    registrations: Mutex<Vec<(Instant, Option<Duration>)>>,
}

#[async_trait::async_trait]
impl Registry for CountingRegistry {
    fn name(&self) -> &str {
        "memory"
    }
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        self.registrations
            .lock()
            .expect("lock")
            .push((Instant::now(), options.ttl));
        self.inner.register(service, options).await
    }
    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        self.inner.deregister(service).await
    }
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        self.inner.get_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.inner.list_services().await
    }
    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        self.inner.watch(options).await
    }
}

#[tokio::test(start_paused = true)]
async fn renews_every_interval_and_lapses_after_ttl_when_it_stops() {
    let registry = Arc::new(CountingRegistry::default());
    let ttl = Duration::from_secs(3);
    let interval = Duration::from_secs(1);
    let server = Server::builder("go.micro.srv.greeter")
        .registry(registry.clone())
        .options(ServerOptions {
            address: "127.0.0.1:0".into(),
            register_ttl: ttl,
            register_interval: interval,
            ..ServerOptions::default()
        })
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(GreeterServer::new(TestGreeter::new("hb")))
        .bind()
        .await
        .expect("bind");
    let started = Instant::now();
    let running = tokio::spawn(server.run_until(std::future::pending()));

    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let registrations = registry.registrations.lock().expect("lock").clone();
    let offsets: Vec<Duration> = registrations.iter().map(|(at, _)| *at - started).collect();
    assert_eq!(registrations.len(), 11, "registrations at {offsets:?}");
    for (i, offset) in offsets.iter().enumerate() {
        assert_eq!(
            *offset,
            interval * i as u32,
            "registration {i} at {offsets:?}"
        );
    }
    assert!(registrations.iter().all(|(_, t)| *t == Some(ttl)));
    assert!(registry.get_service("go.micro.srv.greeter").await.is_ok());

    // Crash: renewals stop, nothing deregisters.
    let mut watcher = registry
        .watch(WatchOptions::service("go.micro.srv.greeter"))
        .await
        .expect("watch");
    running.abort();
    let crashed_at = Instant::now();
    let event = watcher.next().await.expect("event").expect("ok");
    assert_eq!(event.action, micro::registry::Action::Delete);
    let lapsed_after = crashed_at.elapsed();
    let last_renewal = registrations.last().expect("some").0;
    assert_eq!(
        Instant::now() - last_renewal,
        ttl,
        "lapsed {lapsed_after:?} after the crash"
    );
    assert!(registry.get_service("go.micro.srv.greeter").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_failing_registry_is_retried_with_backoff_while_serving() {
    #[derive(Debug, Default)]
    struct Down {
        attempts: Mutex<Vec<Instant>>,
    }
    #[async_trait::async_trait]
    impl Registry for Down {
        fn name(&self) -> &str {
            "down"
        }
        async fn register(&self, _: &Service, _: RegisterOptions) -> Result<(), Error> {
            self.attempts.lock().expect("lock").push(Instant::now());
            Err(Error::Unavailable {
                registry: "down".into(),
                detail: "connection refused".into(),
            })
        }
        async fn deregister(&self, _: &Service) -> Result<(), Error> {
            Ok(())
        }
        async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
            Err(Error::NotFound(name.into()))
        }
        async fn list_services(&self) -> Result<Vec<Service>, Error> {
            Ok(vec![])
        }
        async fn watch(&self, _: WatchOptions) -> Result<Watcher, Error> {
            Ok(Watcher::new(futures::stream::pending()))
        }
    }
    let registry = Arc::new(Down::default());
    let server = Server::builder("go.micro.srv.greeter")
        .registry(registry.clone())
        .options(ServerOptions {
            address: "127.0.0.1:0".into(),
            register_ttl: Duration::from_secs(30),
            register_interval: Duration::from_secs(10),
            ..ServerOptions::default()
        })
        .add_service(GreeterServer::new(TestGreeter::new("x")))
        .bind()
        .await
        .expect("bind");
    let running = tokio::spawn(server.run_until(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let attempts = registry.attempts.lock().expect("lock").clone();
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    // 0.5 s, then every second: back within a second of the registry answering.
    assert_eq!(
        gaps[..4],
        [500, 1000, 1000, 1000].map(Duration::from_millis),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(1)),
        "{gaps:?}"
    );
    assert!(!running.is_finished(), "server gave up");
    running.abort();
}
