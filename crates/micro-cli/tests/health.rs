//! `micro health SERVICE` in-process: one line per node; every node
//! SERVING is success, a node that does not answer makes it fail (exit 1)
//! while still reporting every node.

use std::sync::Arc;
use std::time::Duration;

use micro_cli::health::{HealthArgs, wait_healthy};
use micro_cli::{CliError, health};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_testing::{TestGreeter, TestServer, loopback_options};

const SERVICE: &str = "go.micro.srv.greeter";

fn args() -> HealthArgs {
    HealthArgs {
        service: SERVICE.into(),
        timeout: Duration::from_secs(3),
        wait: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_is_checked_and_all_must_serve() {
    let registry = Arc::new(MemoryRegistry::new());
    let unknown = health(registry.as_ref(), &args()).await;
    assert!(
        matches!(&unknown, Err(CliError::Failed(m)) if m.contains("not found")),
        "{unknown:?}"
    );

    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("instance-0"),
        loopback_options(),
    );
    let report = health(registry.as_ref(), &args()).await.expect("serving");
    let line = report.lines().next().expect("a line");
    assert_eq!(report.lines().count(), 1, "{report}");
    assert!(
        line.starts_with(&format!(
            "{}\t{}\tSERVING\t",
            server.node_id, server.address
        )),
        "{line}"
    );
    assert!(line.ends_with("ms"), "{line}");

    // A node registered at an address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let ghost = Service::new(SERVICE, "latest").with_node(Node::new("ghost", dead.to_string()));
    registry
        .register(&ghost, RegisterOptions::default())
        .await
        .expect("register ghost");
    let failed = health(registry.as_ref(), &args()).await;
    let Err(CliError::Unhealthy(report)) = failed else {
        panic!("not unhealthy: {failed:?}");
    };
    assert_eq!(report.lines().count(), 2, "{report}");
    assert!(report.contains("\tSERVING\t"), "{report}");
    assert!(
        report.contains(&format!("ghost\t{dead}\tERROR (")),
        "{report}"
    );
    assert_eq!(CliError::Unhealthy(report).exit_code(), 1);
    server.stop();
}

/// `micro health --wait`: asks again until the service is registered and
/// serves; past the wait, the last answer (not found) is the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_once_the_service_serves_and_gives_up_in_time() {
    let registry = Arc::new(MemoryRegistry::new());
    let options = micro::ClientOptions::default();

    let started = std::time::Instant::now();
    let wait = Duration::from_millis(500);
    let missing = wait_healthy(registry.as_ref(), &args(), &options, wait).await;
    assert!(
        matches!(&missing, Err(CliError::Failed(m)) if m.contains("not found")),
        "{missing:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "gave up late: {took:?}");

    // Waiting first, then the service starts: the wait ends with its report.
    let waiting = tokio::spawn({
        let registry = registry.clone();
        async move {
            let options = micro::ClientOptions::default();
            wait_healthy(
                registry.as_ref(),
                &args(),
                &options,
                Duration::from_secs(30),
            )
            .await
        }
    });
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("instance-0"),
        loopback_options(),
    );
    let report = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the wait ends within its bound")
        .expect("the wait task")
        .expect("serving");
    assert!(report.contains("\tSERVING\t"), "{report}");
    server.stop();
}
