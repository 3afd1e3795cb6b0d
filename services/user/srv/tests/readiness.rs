//! user-srv is ready only while its store answers: with PostgreSQL stopped,
//! gRPC health says NOT_SERVING and the admin listener's `/health/ready`
//! answers 503 naming the `store` check; `/health/live` stays 200.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_testing::process::ChildGuard;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET path` over HTTP/1.0: (status, body), or `None` if nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

async fn grpc_status(port: u16) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .map_err(|e| eprintln!("connect: {e:?}"))
        .ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "go.micro.srv.user".into(),
        })
        .await
        .map_err(|e| eprintln!("health check: {e:?}"))
        .ok()
        .map(|r| r.into_inner().status)
}

/// Polls until `want` holds (bounded).
async fn until<F: Future<Output = bool>>(what: &str, limit: Duration, mut want: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !want().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_postgres_is_down() {
    let mut pg = support::postgres::Postgres::start().await;
    let url = pg.database("readiness").await;
    let grpc = free_port();
    let admin = free_port();
    // user-srv as a child process, stopped by PID on drop.
    let _srv = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_user-srv"))
            .args([
                "--registry=memory",
                &format!("--server_address=127.0.0.1:{grpc}"),
                &format!("--admin_address=127.0.0.1:{admin}"),
                "--database_url",
                &url,
            ])
            .env(
                "MICRO_AUTH_SECRET",
                "a-secret-of-at-least-thirty-two-bytes!",
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn user-srv");

    until("ready", Duration::from_secs(30), || async {
        get(admin, "/health/ready").is_some_and(|(status, _)| status == 200)
    })
    .await;
    assert_eq!(grpc_status(grpc).await, Some(ServingStatus::Serving as i32));
    let (_, body) = get(admin, "/health/ready").expect("ready");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "SERVING", "{json}");
    assert_eq!(json["checks"]["store"], "ok", "{json}");
    assert_eq!(json["checks"]["registry"], "ok", "{json}");

    pg.stop();
    until("NOT_SERVING over gRPC", Duration::from_secs(30), || async {
        grpc_status(grpc).await == Some(ServingStatus::NotServing as i32)
    })
    .await;
    let (status, body) = get(admin, "/health/ready").expect("answers");
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "NOT_SERVING", "{json}");
    assert_ne!(json["checks"]["store"], "ok", "{json}");
    assert_eq!(json["checks"]["registry"], "ok", "{json}");
    assert_eq!(get(admin, "/health/live").map(|r| r.0), Some(200));
    let (status, metrics) = get(admin, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "micro_registry_operations_total{op=\"register\",registry=\"memory\",result=\"ok\"}"
        ),
        "{metrics}"
    );
}
