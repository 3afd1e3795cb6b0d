//! gRPC health follows readiness: SERVING once registered and while the
//! dependency checks pass, NOT_SERVING while a check fails or the registry
//! refuses the registration, and from the moment a graceful stop begins —
//! before deregistration. Watch streams end at the stop instead of holding
//! it open. Reflection lists only what the server serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use micro::registry::memory::MemoryRegistry;
use micro::registry::{Error, RegisterOptions, Registry, Service, WatchOptions, Watcher};
use micro::{ClientOptions, ServerOptions};
use micro_testing::greeter::greeter_server::GreeterServer;
use micro_testing::greeter::{Request, greeter_client::GreeterClient};
use micro_testing::{Crashable, FILE_DESCRIPTOR_SET, TestGreeter};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const SERVICE: &str = "go.micro.srv.healthy";

/// A memory registry that can refuse registrations, and asks the server's
/// gRPC health for its status at the moment of deregistration.
#[derive(Debug, Default)]
struct FlakyRegistry {
    inner: MemoryRegistry,
    refuse: AtomicBool,
    server: OnceLock<SocketAddr>,
    status_at_deregister: Mutex<Option<i32>>,
}

#[async_trait::async_trait]
impl Registry for FlakyRegistry {
    fn name(&self) -> &str {
        "memory"
    }
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                registry: "memory".into(),
                detail: "refusing on purpose".into(),
            });
        }
        self.inner.register(service, options).await
    }
    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        if let Some(address) = self.server.get() {
            let status = check(*address, "").await.map(|r| r.status).ok();
            *self.status_at_deregister.lock().expect("lock") = status;
        }
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

async fn health_client(address: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    HealthClient::new(channel)
}

async fn check(address: SocketAddr, service: &str) -> Result<HealthCheckResponse, tonic::Status> {
    health_client(address)
        .await
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The next status a watch reports (bounded).
async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> Option<ServingStatus> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a status within 10 s")
        .map(|r| ServingStatus::try_from(r.expect("status").status).expect("known status"))
}

/// Reads statuses until `want` (bounded).
async fn until(stream: &mut tonic::Streaming<HealthCheckResponse>, want: ServingStatus) {
    for _ in 0..10 {
        if next_status(stream).await == Some(want) {
            return;
        }
    }
    panic!("no {want:?}");
}

fn options() -> ServerOptions {
    ServerOptions {
        address: "127.0.0.1:0".into(),
        register_ttl: Duration::from_secs(2),
        register_interval: Duration::from_millis(200),
        health_check_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(30),
        ..ServerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_registration_checks_and_graceful_stop() {
    let registry = Arc::new(FlakyRegistry::default());
    let store_up = Arc::new(AtomicBool::new(true));
    let up = store_up.clone();
    let mut server = Crashable::start(registry.clone(), SERVICE, options(), move |builder| {
        builder
            .file_descriptor_set(FILE_DESCRIPTOR_SET)
            .add_service(GreeterServer::new(TestGreeter::new("healthy")))
            .readiness_check("store", move || {
                let up = up.load(Ordering::SeqCst);
                async move {
                    if up {
                        Ok(())
                    } else {
                        Err("store unreachable".into())
                    }
                }
            })
    });
    registry.server.set(server.address).expect("once");

    let mut watch = health_client(server.address)
        .await
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    until(&mut watch, ServingStatus::Serving).await;
    for name in [SERVICE, "go.micro.srv.greeter.Greeter", ""] {
        let reply = check(server.address, name).await.expect("check");
        assert_eq!(reply.status, ServingStatus::Serving as i32, "{name:?}");
    }
    let unknown = check(server.address, "go.micro.srv.other")
        .await
        .expect_err("not served here");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // A dependency check failing: NOT_SERVING, then SERVING again.
    store_up.store(false, Ordering::SeqCst);
    until(&mut watch, ServingStatus::NotServing).await;
    assert_eq!(
        check(server.address, SERVICE).await.expect("check").status,
        ServingStatus::NotServing as i32
    );
    store_up.store(true, Ordering::SeqCst);
    until(&mut watch, ServingStatus::Serving).await;

    // The registry refusing our registration: NOT_SERVING until it takes it.
    registry.refuse.store(true, Ordering::SeqCst);
    until(&mut watch, ServingStatus::NotServing).await;
    registry.refuse.store(false, Ordering::SeqCst);
    until(&mut watch, ServingStatus::Serving).await;

    // Graceful stop: NOT_SERVING before deregistration; the watch ends.
    let started = std::time::Instant::now();
    server.begin_stop();
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        next_status(&mut watch).await,
        None,
        "watch ends at the stop"
    );
    tokio::task::spawn_blocking(move || server.join())
        .await
        .expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a health watch held the stop open for {:?}",
        started.elapsed()
    );
    assert_eq!(
        *registry.status_at_deregister.lock().expect("lock"),
        Some(ServingStatus::NotServing as i32),
        "not NOT_SERVING when deregistering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_only_the_services_served() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let registry = Arc::new(MemoryRegistry::new());
    let server = Crashable::start(registry, "go.micro.srv.reflected", options(), |builder| {
        builder
            .file_descriptor_set(FILE_DESCRIPTOR_SET)
            // A second set whose services this server does not serve.
            .file_descriptor_set(micro_api_proto::FILE_DESCRIPTOR_SET)
            .add_service(GreeterServer::new(TestGreeter::new("reflected")))
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.next().await.expect("a reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a list: {reply:?}");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    let expected: BTreeSet<String> = [
        "go.micro.srv.greeter.Greeter",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expected);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_on_both_sides() {
    use micro::telemetry::metrics::metrics;
    const COUNTED: &str = "go.micro.srv.counted";
    let registry = Arc::new(MemoryRegistry::new());
    let server = Crashable::start(registry.clone(), COUNTED, options(), |builder| {
        // What `micro::telemetry_server` and `Service::server` plug in.
        builder
            .observer(Arc::new(micro::telemetry::server::ServerTelemetry))
            .file_descriptor_set(FILE_DESCRIPTOR_SET)
            .add_service(GreeterServer::new(TestGreeter::new("counted")))
    });
    // The client every service and the gateway use: with telemetry.
    let client = micro::telemetry_client(registry, ClientOptions::default());
    let mut greeter = GreeterClient::new(client.service(COUNTED));
    for _ in 0..3 {
        greeter
            .hello(Request {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .expect("hello");
    }
    let failed = greeter
        .hello(Request {
            name: "fail".into(),
            ..Default::default()
        })
        .await
        .expect_err("fails on purpose");
    assert_eq!(failed.code(), tonic::Code::Internal);
    server.stop();

    let m = metrics();
    let server_count = |code: &str| {
        m.server_requests
            .with_label_values(&[COUNTED, "Greeter.Hello", code])
            .get()
    };
    let client_count = |code: &str| {
        m.client_requests
            .with_label_values(&[COUNTED, "Greeter.Hello", code])
            .get()
    };
    assert_eq!(server_count("OK"), 3);
    assert_eq!(server_count("Internal"), 1);
    assert_eq!(client_count("OK"), 3);
    assert_eq!(client_count("Internal"), 1);
    assert_eq!(
        m.server_duration
            .with_label_values(&[COUNTED, "Greeter.Hello"])
            .get_sample_count(),
        4
    );
    assert_eq!(
        m.client_attempts
            .with_label_values(&[COUNTED, "answered"])
            .get(),
        4
    );
    assert_eq!(m.client_nodes.with_label_values(&[COUNTED, "up"]).get(), 1);
    // Health checks and reflection are not counted as calls.
    let text = micro::telemetry::metrics::encode();
    assert!(!text.contains("Health.Check"), "{text}");
}
