//! Web services (`go.micro.web.NAME`) open under `/NAME/`: the prefix cut
//! and sent as `X-Micro-Web-Base-Path`, WebSockets joined through to the
//! node; the dashboard's host check still applies.

use std::sync::Arc;
use std::time::Duration;

use micro_client::{Client, ClientOptions};
use micro_registry::memory::MemoryRegistry;
use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_testing::http::{echoed, get, websocket_echo_node, websocket_handshake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reaches_a_web_service_under_its_name() {
    let registry = Arc::new(MemoryRegistry::new());
    let (node, echo) = websocket_echo_node().await;
    registry
        .register(
            &Service::new("go.micro.web.chat", "latest")
                .with_node(Node::new("chat-1", node.to_string())),
            RegisterOptions::default(),
        )
        .await
        .expect("register");
    let client = Client::new(registry, ClientOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dashboard = tokio::spawn(micro_web::serve(
        client,
        listener,
        micro_web::WebOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));

    // Listed, with its path.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = tokio::task::spawn_blocking(move || get(address, "/api/services"))
            .await
            .expect("get");
        if listed.contains(r#""web":"/chat/""#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not listed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another host name: refused before any proxying (DNS rebinding).
    let (_refused, head) =
        websocket_handshake(address, "attacker.example:8082", "/chat/socket").await;
    assert!(head.starts_with("http/1.1 421"), "{head}");

    let (mut socket, head) =
        websocket_handshake(address, &address.to_string(), "/chat/socket?room=1").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: accepted"), "{head}");
    assert_eq!(echoed(&mut socket, b"hello, room").await, b"hello, room");
    drop(socket);
    let seen = echo.await.expect("node").to_lowercase();
    assert!(seen.starts_with("get /socket?room=1 "), "{seen}");
    assert!(seen.contains("x-micro-web-base-path: /chat"), "{seen}");
    let _ = stop.send(());
    dashboard.await.expect("task").expect("serve");
}
