//! `micro publish`, `micro subscribe` and `micro api --handler=event`: the
//! binaries on a real etcd with the http broker (lines, exit codes, queue
//! groups, the gateway's events), and the lines' format in-process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use micro::broker::{Event, Message};
use micro_api_proto::Event as ApiEvent;
use micro_registry::Registry;
use micro_registry_etcd::testing::EtcdCluster;
use micro_testing::nodes::wait_for_nodes;
use micro_testing::process::{ChildGuard, OutputLines};
use prost::Message as _;

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const TOPIC: &str = "go.micro.topic.greet";
/// Where the event handler publishes requests to `/user/...`.
const EVENT_TOPIC: &str = "go.micro.api.user";

fn micro(etcd: &EtcdCluster, args: &[&str]) -> Command {
    let mut command = Command::new(MICRO);
    command
        .arg("--registry=etcd")
        .arg(format!("--registry_address={}", etcd.addresses()))
        .args(args)
        .env_remove("MICRO_BROKER")
        .env_remove("MICRO_BROKER_ADDRESS");
    command
}

/// Waits until `n` http broker nodes serve the topic.
async fn subscribers(registry: &dyn Registry, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    wait_for_nodes(
        &format!("{n} subscribers"),
        deadline,
        || async {
            registry
                .get_service("micro.http.broker")
                .await
                .unwrap_or_default()
                .into_iter()
                .flat_map(|s| s.nodes)
                .collect::<Vec<_>>()
        },
        |nodes| nodes.len() == n,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `micro subscribe --count N TOPIC` on the http broker, once it is
/// registered: the process and its output lines.
async fn subscribe(
    etcd: &EtcdCluster,
    registry: &dyn Registry,
    topic: &str,
    count: usize,
) -> (ChildGuard, OutputLines) {
    let count = count.to_string();
    let mut subscriber = ChildGuard::spawn(
        micro(etcd, &["subscribe", "--count", &count, topic])
            .arg("--broker_address=127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("micro subscribe");
    let lines = OutputLines::read(subscriber.stdout.take().expect("stdout"));
    subscribers(registry, 1).await;
    (subscriber, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribe_through_etcd_and_the_http_broker() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let registry = etcd.registry().await;

    let (mut subscriber, mut lines) = subscribe(&etcd, &registry, TOPIC, 2).await;

    let published = micro(
        &etcd,
        &[
            "publish",
            "--metadata",
            "foo=bar",
            TOPIC,
            r#"{"name":"John"}"#,
        ],
    )
    .output()
    .expect("micro publish");
    assert!(published.status.success(), "{published:?}");
    assert_eq!(String::from_utf8_lossy(&published.stdout), "ok\n");
    let published = micro(
        &etcd,
        &[
            "publish",
            "--content_type=application/grpc+proto",
            TOPIC,
            "\n\u{4}John",
        ],
    )
    .output()
    .expect("micro publish");
    assert!(published.status.success(), "{published:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let printed = lines.wait_for_end(deadline).expect("two lines, then exit");
    assert_eq!(printed.len(), 2, "{printed:?}");
    let first: serde_json::Value = serde_json::from_str(&printed[0]).expect("json");
    assert_eq!(
        first,
        serde_json::json!({
            "topic": TOPIC,
            "header": {"Content-Type": "application/json", "Foo": "bar", "Micro-Topic": TOPIC},
            "body": {"name": "John"},
        })
    );
    let second: serde_json::Value = serde_json::from_str(&printed[1]).expect("json");
    assert_eq!(second["body"], "CgRKb2hu", "base64 of a protobuf body");
    let status = subscriber
        .wait_until(std::time::Instant::now() + Duration::from_secs(10))
        .expect("wait")
        .expect("exited after --count");
    assert!(status.success(), "{status:?}");
    // It deregistered on its way out.
    subscribers(&registry, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_clearly() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let bad_json = micro(&etcd, &["publish", TOPIC, "{not json"])
        .output()
        .expect("micro publish");
    assert_eq!(bad_json.status.code(), Some(2), "{bad_json:?}");
    assert!(String::from_utf8_lossy(&bad_json.stderr).contains("not JSON"));

    // A subscriber registered at a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let registry = etcd.registry().await;
    let dead = micro_registry::Service::new("micro.http.broker", "ff.http.broadcast").with_node(
        micro_registry::Node::new(format!("{TOPIC}-dead"), port.to_string())
            .with_metadata("broker", "http")
            .with_metadata("secure", "false")
            .with_metadata("topic", TOPIC),
    );
    registry
        .register(&dead, micro_registry::RegisterOptions::default())
        .await
        .expect("register");
    let unreachable = micro(&etcd, &["publish", TOPIC, "{}"])
        .output()
        .expect("micro publish");
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(err.contains(&format!("{TOPIC}-dead")), "{err}");
}

#[test]
fn lines_show_json_bodies_as_json_and_others_as_base64() {
    let line = |message: Message| -> serde_json::Value {
        serde_json::from_str(&micro_cli::subscribe::line(&Event::new(TOPIC, message)))
            .expect("json line")
    };
    let json = line(Message::new(r#"{"a":1}"#).with_header("Content-Type", "application/json"));
    assert_eq!(
        json,
        serde_json::json!({"topic": TOPIC, "header": {"Content-Type": "application/json"}, "body": {"a": 1}})
    );
    let broken = line(Message::new("{broken").with_header("Content-Type", "application/json"));
    assert_eq!(broken["body"], "e2Jyb2tlbg==", "not JSON after all: base64");
    assert_eq!(line(Message::new(&b"\x00\x01"[..]))["body"], "AAE=");
}

#[test]
fn publish_reaches_subscribe_through_nats_with_the_flags_either_side() {
    let server = micro_testing::nats::NatsServer::start();
    let address = format!("--broker_address={}", server.address);
    let mut subscriber = ChildGuard::spawn(
        Command::new(MICRO)
            .args(["--broker=nats", address.as_str(), "--registry=memory"])
            .args(["subscribe", "--count", "1", "--queue", "q", TOPIC])
            .env_remove("RUST_LOG")
            .env_remove("MICRO_LOG_LEVEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("micro subscribe");
    let mut lines = OutputLines::read(subscriber.stdout.take().expect("stdout"));
    let mut log = OutputLines::read(subscriber.stderr.take().expect("stderr"));
    // Subscribed (on the server) before it says so.
    log.wait_for_line("Subscribed to", Instant::now() + Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let published = Command::new(MICRO)
        .args([
            "--registry=memory",
            "publish",
            "--broker=nats",
            address.as_str(),
        ])
        .args([TOPIC, r#"{"name":"nats"}"#])
        .output()
        .expect("micro publish");
    assert!(published.status.success(), "{published:?}");
    assert_eq!(String::from_utf8_lossy(&published.stdout), "ok\n");
    let printed = lines
        .wait_for_end(Instant::now() + Duration::from_secs(20))
        .expect("one line, then exit");
    assert_eq!(printed.len(), 1, "{printed:?}");
    let line: serde_json::Value = serde_json::from_str(&printed[0]).expect("json");
    assert_eq!(line["body"], serde_json::json!({"name": "nats"}));
    let status = subscriber
        .wait_until(Instant::now() + Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    assert!(status.success(), "{status:?}");

    // No server there: exit 1, saying why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let failed = Command::new(MICRO)
        .args(["--registry=memory", "--broker=nats"])
        .arg(format!("--broker_address={closed}"))
        .args(["publish", TOPIC, "{}"])
        .output()
        .expect("micro publish");
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("cannot connect"),
        "{failed:?}"
    );
}

/// `request` (a whole HTTP/1.1 request, `Connection: close`) sent to
/// `address`: the answer's status and body.
fn exchange(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    // The gateway may answer before the whole body is sent (over its limit).
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn http_post(address: SocketAddr, path: &str, extra: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    exchange(address, &request)
}

fn http_get(address: SocketAddr, target: &str) -> (u16, String) {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {address}\r\nX-Foo: one\r\nX-Foo: two\r\nConnection: close\r\n\r\n"
    );
    exchange(address, request.as_bytes())
}

/// One line of `micro subscribe`: its headers and its body, decoded as the
/// `go.api.Event` it carries.
fn event(line: &str) -> (serde_json::Value, ApiEvent) {
    let printed: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(printed["topic"], EVENT_TOPIC, "{printed}");
    let body = base64::engine::general_purpose::STANDARD
        .decode(
            printed["body"]
                .as_str()
                .expect("a protobuf body, in base64"),
        )
        .expect("base64");
    let event = ApiEvent::decode(body.as_slice()).expect("a go.api.Event");
    (printed["header"].clone(), event)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// `micro api --handler=event`: a real gateway process publishes each HTTP
/// request as a `go.api.Event` on the http broker, and `micro subscribe`
/// receives it: topic from the path, the event's fields as go-micro's event
/// handler fills them, the message's headers, the answers; the gateway's
/// edge limits still apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_handler_publishes_each_request_as_a_go_api_event() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let registry = etcd.registry().await;

    let (mut subscriber, mut lines) = subscribe(&etcd, &registry, EVENT_TOPIC, 2).await;

    let mut gateway = ChildGuard::spawn(
        micro(
            &etcd,
            &[
                "api",
                "--handler=event",
                "--address=127.0.0.1:0",
                "--max_body_bytes=1KiB",
            ],
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped()),
    )
    .expect("micro api");
    let mut log = OutputLines::read(gateway.stderr.take().expect("stderr"));
    let listening = "Server [http] Listening on ";
    let line = log
        .wait_for_line(listening, Instant::now() + Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let address: SocketAddr = line
        .split(listening)
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .expect("the gateway's address");

    // The edge's limits first: nothing of these is published.
    let (status, _) = http_post(address, "/user/login", "", &[b'x'; 2048]);
    assert_eq!(status, 413, "a body over --max_body_bytes");
    let (status, body) = http_post(address, "/user/login", "", &[0xff, 0xfe]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("UTF-8"), "{body}");

    let before = now();
    let (status, body) = http_post(
        address,
        "/user/login",
        "X-Foo: bar\r\n",
        br#"{"name":"john"}"#,
    );
    assert_eq!((status, body.as_str()), (200, ""), "published");
    let (status, body) = http_get(address, "/user/info/me?b=2&a=1&b=x+y");
    assert_eq!((status, body.as_str()), (200, ""), "published");

    let printed = lines
        .wait_for_end(Instant::now() + Duration::from_secs(20))
        .expect("two lines, then exit");
    assert_eq!(printed.len(), 2, "{printed:?}");

    let (header, login) = event(&printed[0]);
    assert_eq!(login.name, "login");
    assert!(
        login.id.starts_with("go.micro.api.user-login-") && login.id.len() == 24 + 36,
        "<topic>-<action>-<uuid>: {}",
        login.id
    );
    assert!(
        (before - 1..=now() + 1).contains(&login.timestamp),
        "Unix seconds: {}",
        login.timestamp
    );
    assert_eq!(login.data, r#"{"name":"john"}"#);
    assert_eq!(login.header["X-Foo"].values, ["bar"]);
    assert_eq!(login.header["Content-Type"].values, ["application/json"]);
    assert!(!login.header.contains_key("Host"), "{:?}", login.header);
    assert_eq!(header["Content-Type"], "application/grpc+proto");
    assert_eq!(header["Micro-Topic"], EVENT_TOPIC);
    assert_eq!(header["Micro-From-Service"], "go.micro.api");
    assert_eq!(header["X-Foo"], "bar");

    let (header, info) = event(&printed[1]);
    assert_eq!(info.name, "info.me");
    assert!(
        info.id.starts_with("go.micro.api.user-info.me-"),
        "{}",
        info.id
    );
    assert_eq!(info.data, r#"{"a":["1"],"b":["2","x y"]}"#);
    assert_eq!(info.header["X-Foo"].values, ["one", "two"]);
    assert_eq!(header["X-Foo"], "one,two");

    let status = subscriber
        .wait_until(Instant::now() + Duration::from_secs(10))
        .expect("wait")
        .expect("exited after --count");
    assert!(status.success(), "{status:?}");

    // A topic nobody subscribes to is no error.
    let (status, body) = http_post(address, "/nobody/listens", "", b"{}");
    assert_eq!((status, body.as_str()), (200, ""));

    gateway.terminate().expect("SIGTERM");
    let stopped = gateway
        .wait_until(Instant::now() + Duration::from_secs(20))
        .expect("wait")
        .expect("stopped");
    assert!(stopped.success(), "{stopped:?}");
}
