//! `micro::web`: a web service registers go-micro's web record (its route
//! patterns as endpoints, its node at the bound address), hands handlers
//! the service's client, and on shutdown deregisters first, then lets the
//! request in flight finish.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::routing::get;
use clap::Parser;
use micro::Registry;
use micro::registry::memory::MemoryRegistry;
use tokio::sync::{Notify, oneshot};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    micro: micro::config::MicroArgs,
}

const NAME: &str = "go.micro.web.greeter";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_serves_then_deregisters_before_draining() {
    let cli: Cli =
        micro::config::parse_from(["test", "--registry=memory", "--server_address=127.0.0.1:0"]);
    let registry = Arc::new(MemoryRegistry::new());
    let service =
        micro::Service::with_registry(NAME, &cli.micro, registry.clone()).expect("service");

    let started = Arc::new(Notify::new());
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let slow = {
        let started = started.clone();
        get(move || {
            let started = started.clone();
            let released = released.clone();
            async move {
                started.notify_one();
                if let Some(released) = released.lock().await.take() {
                    let _ = released.await;
                }
                "finished"
            }
        })
    };
    let server = service
        .web()
        .route(
            "/hello",
            get(|Extension(client): Extension<micro::Client>| async move {
                format!("hello from a client on {}", client.registry().name())
            }),
        )
        .route("/slow", slow)
        .bind()
        .await
        .expect("bind");
    let address = server.local_addr();
    let mut registered = server.registered();
    let record = server.registration().clone();
    assert_eq!(record.name, NAME);
    assert_eq!(record.nodes[0].address, address.to_string());
    assert_eq!(
        record.nodes[0].metadata.get("server").map(String::as_str),
        Some("http")
    );
    let patterns: Vec<&str> = record.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(patterns, ["/hello", "/slow"]);

    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(10), registered.wait_for(|r| *r))
        .await
        .expect("registered in time")
        .expect("registered");
    let listed = registry.get_service(NAME).await.expect("listed");
    assert_eq!(listed[0].nodes[0].address, address.to_string());
    assert!(
        service.readiness().report().ready(),
        "ready once registered"
    );

    let hello = tokio::task::spawn_blocking(move || micro_testing::http::get(address, "/hello"))
        .await
        .expect("get");
    assert!(hello.starts_with("HTTP/1.1 200"), "{hello}");
    assert!(hello.ends_with("hello from a client on memory"), "{hello}");

    // A request in flight when the stop begins.
    let in_flight = tokio::task::spawn_blocking(move || {
        let mut stream = micro_testing::http::connect_get(address, "/slow");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the slow request reached its handler");
    let _ = stop.send(());
    // Deregistered while the request is still being served.
    tokio::time::timeout(Duration::from_secs(10), registered.wait_for(|r| !*r))
        .await
        .expect("deregistered in time")
        .expect("deregistered");
    let listed = registry.get_service(NAME).await.unwrap_or_default();
    assert!(
        listed.iter().all(|s| s.nodes.is_empty()),
        "still listed: {listed:?}"
    );
    assert!(
        !service.readiness().report().ready(),
        "not ready while stopping"
    );
    assert!(!running.is_finished(), "the server waits for its request");
    let _ = release.send(());
    let answer = in_flight.await.expect("in flight");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("finished"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stopped in time")
        .expect("task")
        .expect("run");
}

/// With `--server_tls_*`, a web service serves HTTPS (HTTP/1.1 and h2 by
/// ALPN) and registers `secure=true`, so proxies dial it over TLS; client
/// certificates (`--server_tls_client_ca`) are refused at bind, clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_registers_secure() {
    let dir = tempfile::tempdir().expect("tmp");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let flags = |extra: &[&str]| -> Cli {
        let mut args = vec![
            "test",
            "--registry=memory",
            "--server_address=127.0.0.1:0",
            "--server_tls_cert_file",
            cert.as_str(),
            "--server_tls_key_file",
            key.as_str(),
        ];
        args.extend(extra);
        micro::config::parse_from(args)
    };

    let registry = Arc::new(MemoryRegistry::new());
    let cli = flags(&[]);
    let service = micro::Service::with_registry(NAME, &cli.micro, registry).expect("service");
    let server = service
        .web()
        .route("/hello", get(|| async { "over TLS" }))
        .bind()
        .await
        .expect("bind");
    let node = server.node().clone();
    assert_eq!(
        node.metadata.get("secure").map(String::as_str),
        Some("true")
    );
    let address = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let ca = cert.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-m", "10", "--cacert", &ca])
            .arg(format!("https://{address}/hello"))
            .output()
            .expect("run curl (apt-get install curl)")
    })
    .await
    .expect("curl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "over TLS");
    let _ = stop.send(());
    running.await.expect("task").expect("run");

    let cli = flags(&["--server_tls_client_ca", cert.as_str()]);
    let service = micro::Service::with_registry(NAME, &cli.micro, Arc::new(MemoryRegistry::new()))
        .expect("service");
    let refused = service.web().bind().await.expect_err("client certificates");
    assert!(
        refused.to_string().contains("--server_tls_client_ca"),
        "{refused}"
    );
}
