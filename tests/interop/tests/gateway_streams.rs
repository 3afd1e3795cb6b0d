//! Streams through a real `micro api` process on a real etcd, from real
//! clients: a WebSocket client (tokio-tungstenite) and `curl -N` for
//! Server-Sent Events, to the example `greeter-server` (Rust) and to the Go
//! peer's greeter (grpc-go with go-micro's json codec), registered as
//! go-micro registers a streaming service.
//!
//! Also what a gateway must survive: a thousand idle WebSockets, a client
//! that never reads (the gateway's memory stays bounded), a client that
//! vanishes (the open-streams gauge returns to 0), a node killed mid-stream
//! (an error close frame, not a hang), and a graceful stop (close frames).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use interop_tests::{GoGreeter, go_peer};
use micro_registry::Registry as _;
use micro_registry_etcd::testing::EtcdCluster;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use topology_tests::{Process, curl, eventually, free_port};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const GREETER: &str = "go.micro.srv.greeter";
const WAIT: Duration = Duration::from_secs(30);

struct Gateway {
    process: Process,
    port: u16,
    admin: u16,
}

impl Gateway {
    fn start(registry_address: &str) -> Gateway {
        let (port, admin) = (free_port(), free_port());
        let args = [
            "--registry=etcd".to_string(),
            format!("--registry_address={registry_address}"),
            format!("--admin_address=127.0.0.1:{admin}"),
            "api".into(),
            "--address".into(),
            format!("127.0.0.1:{port}"),
            "--namespace=go.micro.srv".into(),
            "--max_connections=4096".into(),
            "--max_connections_per_ip=0".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Process::start("micro api", "micro", &args, &[]);
        eventually("the gateway is ready", WAIT, || {
            let reply = curl(&format!("http://127.0.0.1:{admin}/health/ready"), None);
            (reply.status == 200).then_some(())
        });
        Gateway {
            process,
            port,
            admin,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// `micro_api_open_streams{kind="websocket"}` from `/metrics`.
    fn open_websockets(&self) -> i64 {
        let metrics = curl(&format!("http://127.0.0.1:{}/metrics", self.admin), None);
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix("micro_api_open_streams{kind=\"websocket\"} "))
            .map_or(0, |v| v.trim().parse().expect("a gauge value"))
    }

    /// The gateway process's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")?;
    Ok(ws)
}

/// Text frames until the close frame.
async fn read_all(ws: &mut Ws) -> (Vec<String>, Option<CloseFrame>) {
    let mut texts = Vec::new();
    for _ in 0..100_000 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
            Some(Ok(Message::Binary(data))) => {
                texts.push(String::from_utf8_lossy(&data).into_owned());
            }
            Some(Ok(Message::Close(frame))) => return (texts, frame),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket failed: {e}; after {texts:?}"),
            None => return (texts, None),
        }
    }
    panic!("too many frames");
}

async fn ping(ws: &mut Ws, name: &str) -> String {
    ws.send(Message::text(format!(r#"{{"name":"{name}"}}"#)))
        .await
        .expect("send");
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a reply in time")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Binary(data))) => return String::from_utf8_lossy(&data).into(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("no reply: {other:?}"),
        }
    }
}

fn curl_sse(url: &str) -> String {
    let output = std::process::Command::new("curl")
        .args(["-sSN", "-m", "20", "-H", "Accept: text/event-stream", url])
        .output()
        .expect("run curl (apt-get install curl)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn gateway_relays_websockets_and_event_streams_to_rust_and_go_services() {
    let peer = go_peer();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = runtime
        .block_on(EtcdCluster::single())
        .expect("an etcd member");
    let registry = runtime.block_on(cluster.registry());
    let etcd = cluster.addresses();
    let flags = [
        "--registry=etcd".to_string(),
        format!("--registry_address={etcd}"),
        "--server_address=127.0.0.1:0".into(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let greeter_admin = free_port();
    let admin_flag = format!("--admin_address=127.0.0.1:{greeter_admin}");
    let mut flags = flags;
    flags.push(&admin_flag);
    let mut rust = Process::start("greeter-server", "greeter-server", &flags, &[]);
    // A value of the greeter's own metrics, for Greeter.PingPong.
    let ping_pong_metric = |name: &str, direction: Option<&str>| -> i64 {
        let metrics = curl(&format!("http://127.0.0.1:{greeter_admin}/metrics"), None);
        metrics
            .body
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.contains("endpoint=\"Greeter.PingPong\""))
            .filter(|l| direction.is_none_or(|d| l.contains(&format!("direction=\"{d}\""))))
            .find_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
            .unwrap_or(0)
    };
    rust.wait_for_log("Registering node", WAIT);
    let gateway = Gateway::start(&etcd);
    let stream_base = gateway.url("ws", "/greeter/greeter/stream?");
    let stream_url = |query: &str| format!("{stream_base}{query}");
    let ping_pong = gateway.url("ws", "/greeter/greeter/pingPong");
    let json = [("content-type", "application/json")];

    runtime.block_on(async {
        // Found once the gateway's catalog lists the greeter.
        let mut ws = None;
        for _ in 0..300 {
            if let Ok(open) = connect(&stream_url("name=x&count=3"), &json).await {
                ws = Some(open);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut ws = ws.expect("the gateway routes to the greeter");
        let (texts, close) = read_all(&mut ws).await;
        assert_eq!(
            texts,
            [
                r#"{"msg":"Hello x 1"}"#,
                r#"{"msg":"Hello x 2"}"#,
                r#"{"msg":"Hello x 3"}"#
            ]
        );
        assert_eq!(u16::from(close.expect("close frame").code), 1000);

        let mut ws = connect(&ping_pong, &json).await.expect("upgrade");
        assert_eq!(ping(&mut ws, "a").await, r#"{"msg":"pong a"}"#);
        assert_eq!(ping(&mut ws, "b").await, r#"{"msg":"pong b"}"#);
        ws.close(None).await.expect("close");
    });

    // Server-Sent Events with curl -N.
    let events = curl_sse(&gateway.url("http", "/greeter/greeter/stream?name=s&count=2"));
    assert_eq!(
        events,
        "data: {\"msg\":\"Hello s 1\"}\n\ndata: {\"msg\":\"Hello s 2\"}\n\n"
    );
    let events = curl_sse(&gateway.url("http", "/greeter/greeter/stream?name=s&count=-1"));
    assert!(events.starts_with("event: error\ndata: {"), "{events}");

    runtime.block_on(async {
        // A thousand idle WebSockets, each with its stream open; then each
        // still answers.
        let mut idle = Vec::with_capacity(1000);
        for i in 0..1000 {
            let ws = connect(&ping_pong, &json)
                .await
                .unwrap_or_else(|e| panic!("websocket {i}: {e}"));
            idle.push(ws);
        }
        let open = gateway.open_websockets();
        assert_eq!(open, 1000, "open streams gauge");
        for (i, ws) in idle.iter_mut().enumerate().step_by(97) {
            assert_eq!(
                ping(ws, &format!("n{i}")).await,
                format!(r#"{{"msg":"pong n{i}"}}"#)
            );
        }
        // The service sees them open, and counts their messages.
        eventually("the service sees 1,000 open streams", WAIT, || {
            (ping_pong_metric("micro_server_open_streams", None) == 1000).then_some(())
        });
        assert!(
            ping_pong_metric("micro_server_stream_messages_total", Some("sent")) >= 13,
            "messages sent"
        );
        assert!(
            ping_pong_metric("micro_server_stream_messages_total", Some("received")) >= 13,
            "messages received"
        );
        // Clients that vanish (no close frame): the gauges return to 0, the
        // service's too (its streams were cancelled).
        drop(idle);
    });
    eventually("open streams back to 0", WAIT, || {
        (gateway.open_websockets() == 0).then_some(())
    });
    eventually("the service's streams cancelled", WAIT, || {
        (ping_pong_metric("micro_server_open_streams", None) == 0).then_some(())
    });

    runtime.block_on(async {
        // A client that never reads, of a stream far larger than any buffer
        // (10,000 replies of 8 KiB): the gateway's memory stays bounded.
        let before = gateway.rss_kib();
        let name = "n".repeat(8 * 1024);
        let mut readers = Vec::new();
        for _ in 0..4 {
            readers.push(
                connect(&stream_url(&format!("name={name}&count=10000")), &json)
                    .await
                    .expect("upgrade"),
            );
        }
        // Long enough for an unbounded relay to have taken it all in.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = gateway.rss_kib();
        // 4 × 80 MB was offered; a bounded relay holds a few windows.
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
        // Reading now, the whole stream arrives.
        let (texts, close) = read_all(&mut readers[0]).await;
        assert_eq!(texts.len(), 10_000);
        assert_eq!(u16::from(close.expect("close").code), 1000);
    });

    // A node killed mid-stream: an error close frame, not a hang.
    runtime.block_on(async {
        let mut ws = connect(&ping_pong, &json).await.expect("upgrade");
        assert_eq!(ping(&mut ws, "k").await, r#"{"msg":"pong k"}"#);
        rust.kill();
        let (_, close) = read_all(&mut ws).await;
        let close = close.expect("a close frame");
        let code = u16::from(close.code);
        assert!((4500..4600).contains(&code), "{close:?}");
        let error: serde_json::Value = serde_json::from_str(&close.reason).expect("error JSON");
        assert!(error["code"].as_i64().is_some_and(|c| c >= 500), "{error}");
    });
    // The dead node's record goes (it was killed: no deregistration).
    runtime.block_on(async {
        for service in registry.get_service(GREETER).await.expect("lookup") {
            registry.deregister(&service).await.expect("deregister");
        }
    });

    // The Go greeter, registered as go-micro registers a streaming service.
    let go = GoGreeter::start(peer);
    let record = go.streaming_registration("etcd");
    runtime
        .block_on(registry.register(
            &record,
            micro_registry::RegisterOptions::with_ttl(Duration::from_secs(60)),
        ))
        .expect("register the Go greeter");
    runtime.block_on(async {
        let mut texts = Vec::new();
        for _ in 0..300 {
            if let Ok(mut ws) = connect(&stream_url("name=go&count=2"), &json).await {
                let (got, close) = read_all(&mut ws).await;
                if close.as_ref().is_some_and(|c| u16::from(c.code) == 1000) {
                    texts = got;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            texts,
            [r#"{"msg":"Hello go 1"}"#, r#"{"msg":"Hello go 2"}"#]
        );
        let mut ws = connect(&ping_pong, &json).await.expect("upgrade");
        assert_eq!(ping(&mut ws, "go").await, r#"{"msg":"pong go"}"#);

        // A graceful stop of the gateway: the open WebSocket gets 1001.
        let mut gateway = gateway;
        let stopping = tokio::task::spawn_blocking(move || {
            gateway.process.terminate(WAIT);
        });
        let (_, close) = read_all(&mut ws).await;
        assert_eq!(u16::from(close.expect("close frame").code), 1001);
        stopping.await.expect("the gateway stopped");
    });
    drop(go);
    drop(cluster);
}
