//! TLS between services and their callers, with certificates made here:
//! a call over TLS (name checked against the node's IP address, or an
//! override), a wrong CA, mutual TLS, plaintext and TLS mixed up both ways
//! (clear errors, no hang), gRPC health over TLS, and the gateway calling a
//! TLS service.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use micro_api::{ApiOptions, Gateway, HandlerKind};
use micro_cli::health::{HealthArgs, health_with};
use micro_cli::{CliError, call};
use micro_client::{Client, ClientOptions, ClientTls};
use micro_registry::SharedRegistry;
use micro_registry::memory::MemoryRegistry;
use micro_server::ServerTls;
use micro_testing::tls::Pki;
use micro_testing::{TestGreeter, TestServer, loopback_options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "go.micro.srv.greeter";
/// Every failing call here must fail well within this (no hang).
const BOUND: Duration = Duration::from_secs(10);

/// Server and client TLS settings from a [`Pki`]'s certificates.
trait Identities {
    fn server_tls(&self, names: &[&str], mutual: bool) -> ServerTls;
    fn client_tls(&self, with_cert: bool, server_name: Option<&str>) -> ClientTls;
}

impl Identities for Pki {
    fn server_tls(&self, names: &[&str], mutual: bool) -> ServerTls {
        let (cert, key) = self.issue("server", names);
        let client_ca = mutual.then_some(self.ca());
        ServerTls::from_files(&cert, &key, client_ca).expect("server tls")
    }

    fn client_tls(&self, with_cert: bool, server_name: Option<&str>) -> ClientTls {
        let identity = with_cert.then(|| self.issue("client", &["micro-client"]));
        ClientTls::from_files(
            self.ca(),
            identity.as_ref().map(|(c, _)| c.as_path()),
            identity.as_ref().map(|(_, k)| k.as_path()),
            server_name.map(str::to_string),
        )
        .expect("client tls")
    }
}

fn tls_server(registry: SharedRegistry, tls: ServerTls) -> TestServer {
    let options = micro_server::ServerOptions {
        tls: Some(tls),
        ..loopback_options()
    };
    TestServer::start(registry, SERVICE, TestGreeter::new("tls-0"), options)
}

fn client(registry: SharedRegistry, tls: Option<ClientTls>) -> Client {
    Client::new(
        registry,
        ClientOptions {
            tls,
            ..ClientOptions::default()
        },
    )
}

/// `micro call` through `client`, bounded.
async fn hello(client: &Client) -> Result<String, String> {
    tokio::time::timeout(
        BOUND,
        call(client, SERVICE, "Greeter.Hello", r#"{"name": "tls"}"#),
    )
    .await
    .map_err(|_| format!("no answer within {BOUND:?}"))?
    .map_err(|e: CliError| e.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_verifies_the_node_address_and_is_marked_secure() {
    let pki = Pki::new();
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    // Only an IP SAN: the client checks the certificate against the
    // registered address, 127.0.0.1.
    let server = tls_server(registry.clone(), pki.server_tls(&["127.0.0.1"], false));
    let nodes = registry.get_service(SERVICE).await.expect("registered");
    assert_eq!(
        nodes[0].nodes[0].metadata.get("secure").map(String::as_str),
        Some("true")
    );

    let tls = client(registry.clone(), Some(pki.client_tls(false, None)));
    let reply = hello(&tls).await.expect("TLS call");
    assert!(reply.contains("Hello tls from tls-0"), "{reply}");

    // gRPC health over TLS (`micro health`).
    let args = HealthArgs {
        service: SERVICE.into(),
        timeout: Duration::from_secs(5),
        wait: None,
    };
    let report = health_with(registry.as_ref(), &args, tls.options())
        .await
        .expect("serving over TLS");
    assert!(report.contains("\tSERVING\t"), "{report}");

    // `micro call --address` dials the node itself, over TLS too.
    let mut direct = micro_cli::CallArgs::new(SERVICE, "Greeter.Hello", r#"{"name": "direct"}"#);
    direct.address = Some(server.address.to_string());
    let reply = micro_cli::call_with(&tls, &direct)
        .await
        .expect("direct TLS call");
    assert!(reply.contains("Hello direct"), "{reply}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_or_from_another_ca_is_refused_clearly() {
    let pki = Pki::new();
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    // A certificate naming a host, not the address the node registers.
    let server = tls_server(
        registry.clone(),
        pki.server_tls(&["greeter.internal"], false),
    );

    let by_address = client(registry.clone(), Some(pki.client_tls(false, None)));
    let err = hello(&by_address).await.expect_err("name mismatch");
    assert!(err.contains("TLS failed"), "{err}");
    assert!(err.contains("certificate"), "{err}");

    let by_name = client(
        registry.clone(),
        Some(pki.client_tls(false, Some("greeter.internal"))),
    );
    hello(&by_name).await.expect("--client_tls_server_name");

    let other = Pki::new();
    let wrong_ca = client(
        registry.clone(),
        Some(other.client_tls(false, Some("greeter.internal"))),
    );
    let err = hello(&wrong_ca).await.expect_err("unknown CA");
    assert!(err.contains("TLS failed"), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("--client_tls_ca"), "{err}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let server = tls_server(registry.clone(), pki.server_tls(&["127.0.0.1"], true));

    let anonymous = client(registry.clone(), Some(pki.client_tls(false, None)));
    // In TLS 1.3 the client's half of the handshake is over before the
    // server checks the client's certificate: the refusal reaches the client
    // as a connection closed under its first request (hyper reports a broken
    // pipe, without the alert).
    let err = hello(&anonymous).await.expect_err("no client certificate");
    assert!(err.contains("a node failed"), "{err}");
    assert_eq!(
        server.greeter.hits(),
        0,
        "the request never reached the handler"
    );

    let known = client(registry.clone(), Some(pki.client_tls(true, None)));
    let reply = hello(&known).await.expect("with a client certificate");
    assert!(reply.contains("Hello tls"), "{reply}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_mixed_up_fail_clearly_both_ways() {
    let pki = Pki::new();
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let server = tls_server(registry.clone(), pki.server_tls(&["127.0.0.1"], false));

    // A plaintext client is told at once, from the node's secure=true.
    let plaintext = client(registry.clone(), None);
    let err = hello(&plaintext).await.expect_err("TLS node");
    assert!(err.contains("serves TLS"), "{err}");
    assert!(err.contains("--client_tls_ca"), "{err}");

    // A plaintext gRPC client that does not read metadata: refused, no hang.
    let raw = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .expect("uri")
        .connect_timeout(BOUND);
    let answer = tokio::time::timeout(BOUND, async {
        let channel = raw.connect().await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(drop)
            .map_err(|s| s.into())
    })
    .await;
    let answer: Result<(), Box<dyn std::error::Error + Send + Sync>> =
        answer.expect("plaintext against TLS ends within the bound");
    assert!(answer.is_err(), "a plaintext call to a TLS listener failed");
    server.stop();

    // A TLS client calling a plaintext node.
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let server = TestServer::start(
        registry.clone(),
        SERVICE,
        TestGreeter::new("plain-0"),
        loopback_options(),
    );
    let tls = client(registry.clone(), Some(pki.client_tls(false, None)));
    let err = hello(&tls).await.expect_err("plaintext node");
    assert!(err.contains("TLS failed"), "{err}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_a_tls_service() {
    let pki = Pki::new();
    let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let server = tls_server(registry.clone(), pki.server_tls(&["127.0.0.1"], true));
    let gateway = Gateway::new(
        client(registry.clone(), Some(pki.client_tls(true, None))),
        ApiOptions {
            handler: HandlerKind::Rpc,
            namespace: "go.micro.srv".into(),
            ..ApiOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        gateway
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });

    let body = r#"{"name": "gateway"}"#;
    let request = format!(
        "POST /greeter/greeter/hello HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = tokio::time::timeout(BOUND, async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .expect("the gateway answers")
    .expect("HTTP exchange");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Hello gateway from tls-0"), "{answer}");

    let _ = stop.send(());
    let _ = tokio::time::timeout(BOUND, serving).await;
    server.stop();
}

#[test]
fn tls_files_are_checked_when_read() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let (_, other_key) = pki.issue("other", &["127.0.0.1"]);
    let missing = Path::new("/nonexistent/ca.pem");

    let err = ServerTls::from_files(&cert, &other_key, None).expect_err("mismatched key");
    assert!(err.to_string().contains("is not the key of"), "{err}");
    let err = ServerTls::from_files(&key, &key, None).expect_err("a key is no certificate");
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
    let err = ClientTls::from_files(missing, None, None, None).expect_err("missing CA");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let err = ClientTls::from_files(pki.ca(), Some(&cert), None, None).expect_err("cert alone");
    assert!(err.to_string().contains("go together"), "{err}");
}

/// Not a check: the figures for docs/security.md. Sequential unary calls on
/// one warm connection, plaintext vs TLS (vs mutual TLS), median and p99.
/// `cargo test -p micro-cli --release --test service_tls -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn measure_call_latency_plaintext_vs_tls() {
    use micro_testing::greeter::Request as Hello;
    use micro_testing::greeter::greeter_client::GreeterClient;

    async fn run(client: &Client, calls: usize) -> (Duration, Duration) {
        let mut greeter = GreeterClient::new(client.service(SERVICE));
        let request = || Hello {
            name: "bench".into(),
            ..Default::default()
        };
        for _ in 0..200 {
            greeter.hello(request()).await.expect("warm-up call");
        }
        let mut took = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = std::time::Instant::now();
            greeter.hello(request()).await.expect("call");
            took.push(started.elapsed());
        }
        took.sort();
        (took[calls / 2], took[calls * 99 / 100])
    }

    let pki = Pki::new();
    let calls = 5_000;
    let plain_registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let plain = TestServer::start(
        plain_registry.clone(),
        SERVICE,
        TestGreeter::new("plain"),
        loopback_options(),
    );
    let tls_registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let tls = tls_server(tls_registry.clone(), pki.server_tls(&["127.0.0.1"], false));
    let mtls_registry: SharedRegistry = Arc::new(MemoryRegistry::new());
    let mtls = tls_server(mtls_registry.clone(), pki.server_tls(&["127.0.0.1"], true));

    let cases = [
        ("plaintext", client(plain_registry, None)),
        (
            "TLS",
            client(tls_registry, Some(pki.client_tls(false, None))),
        ),
        (
            "mutual TLS",
            client(mtls_registry, Some(pki.client_tls(true, None))),
        ),
    ];
    for round in 0..2 {
        for (name, client) in &cases {
            let (p50, p99) = run(client, calls).await;
            println!("round {round} {name:>10}: {calls} calls, p50 {p50:?}, p99 {p99:?}");
        }
    }
    plain.stop();
    tls.stop();
    mtls.stop();
}
