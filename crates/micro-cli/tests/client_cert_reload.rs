//! `micro api --client_tls_*` reads its client certificate, key and CA
//! bundle again on SIGHUP, under steady calls through it to services that
//! require client certificates (mutual TLS), on a real etcd: no call fails;
//! a node started after the reload, trusting only the new client CA and
//! serving a certificate of the new CA, gets calls (its new connection
//! presented the new certificate and trusted the new CA) while the node
//! connected before keeps answering; a broken new certificate keeps the one
//! in use, with one warn line naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use micro_registry::SharedRegistry;
use micro_registry_etcd::testing::EtcdCluster;
use micro_server::{ServerOptions, ServerTls};
use micro_testing::process::{ChildGuard, OutputLines, Signal};
use micro_testing::tls::{Pki, replace};
use micro_testing::{TestGreeter, TestServer, loopback_options};
use tokio::sync::watch;

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const SERVICE: &str = "go.micro.api.greeter";
/// Every wait here is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// The client's files: the CA bundle it trusts, its certificate and key.
struct ClientFiles {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Both CAs, for nodes that trust either client certificate.
    both: PathBuf,
}

impl ClientFiles {
    fn new(old_ca: &Pki, new_ca: &Pki) -> ClientFiles {
        let dir = tempfile::tempdir().expect("tmp");
        let files = ClientFiles {
            bundle: dir.path().join("ca-bundle.pem"),
            cert: dir.path().join("client.pem"),
            key: dir.path().join("client-key.pem"),
            both: dir.path().join("both-cas.pem"),
            _dir: dir,
        };
        let both = [
            std::fs::read(old_ca.ca()).expect("old ca"),
            std::fs::read(new_ca.ca()).expect("new ca"),
        ]
        .concat();
        std::fs::write(&files.both, both).expect("both cas");
        replace(&files.bundle, &std::fs::read(old_ca.ca()).expect("old ca"));
        files.issue(old_ca, "client-1");
        files
    }

    /// A client certificate of `ca` put in place (the key first).
    fn issue(&self, ca: &Pki, name: &str) {
        let (cert, key) = ca.issue(name, &["micro-client"]);
        replace(&self.key, &std::fs::read(key).expect("key"));
        replace(&self.cert, &std::fs::read(cert).expect("cert"));
    }
}

/// A greeter registered as [`SERVICE`], serving a certificate of `ca` and
/// requiring client certificates signed by the CAs of `client_ca`.
fn node(registry: &SharedRegistry, name: &str, ca: &Pki, client_ca: &Path) -> TestServer {
    let (cert, key) = ca.issue(name, &["127.0.0.1"]);
    let tls = ServerTls::from_files(&cert, &key, Some(client_ca)).expect("server tls");
    let options = ServerOptions {
        tls: Some(tls),
        ..loopback_options()
    };
    TestServer::start(registry.clone(), SERVICE, TestGreeter::new(name), options)
}

/// What the steady calls saw so far.
#[derive(Clone, Debug, Default)]
struct Tally {
    calls: usize,
    failures: Vec<String>,
    /// Calls answered, by the node that answered.
    by_node: HashMap<String, usize>,
}

impl Tally {
    fn answered_by(&self, node: &str) -> usize {
        self.by_node.get(node).copied().unwrap_or(0)
    }
}

/// Calls `Greeter.Hello` through the gateway at `gateway`, one after
/// another (a new connection to the gateway each), until `stop` (bounded
/// in count and time), publishing the tally after each call.
fn steady_calls(
    gateway: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    tally: watch::Sender<Tally>,
) -> Tally {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = Tally::default();
    for _ in 0..100_000 {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            break;
        }
        let answer = micro_testing::http::request(
            gateway,
            "POST",
            "/greeter/greeter/hello",
            "application/json",
            br#"{"name": "rotation"}"#,
        );
        seen.calls += 1;
        let from = answer
            .split("Hello rotation from ")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        match from {
            Some(node) if answer.starts_with("HTTP/1.1 200") => {
                *seen.by_node.entry(node.to_string()).or_default() += 1;
            }
            _ => seen.failures.push(answer),
        }
        tally.send_replace(seen.clone());
    }
    seen
}

/// Waits (bounded) until the tally satisfies `ok`.
async fn wait_for_tally(
    tally: &mut watch::Receiver<Tally>,
    what: &str,
    ok: impl Fn(&Tally) -> bool,
) {
    let reached = tokio::time::timeout(BOUND, tally.wait_for(|t| ok(t)))
        .await
        .is_ok_and(|waited| waited.is_ok());
    assert!(
        reached,
        "{what}: not within {BOUND:?}; {:?}",
        *tally.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_client_certificate_and_ca_rotate_on_sighup_without_a_failed_call() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let registry: SharedRegistry = Arc::new(etcd.registry().await);
    let (old_ca, new_ca) = (Pki::new(), Pki::new());
    let files = ClientFiles::new(&old_ca, &new_ca);
    // Trusts client certificates of either CA: its connection, made
    // before the rotation, carries on after it.
    let node_1 = node(&registry, "node-1", &old_ca, &files.both);

    let mut command = Command::new(MICRO);
    command
        .arg("--registry=etcd")
        .arg(format!("--registry_address={}", etcd.addresses()))
        .arg("--client_tls_ca")
        .arg(&files.bundle)
        .arg("--client_tls_cert_file")
        .arg(&files.cert)
        .arg("--client_tls_key_file")
        .arg(&files.key)
        .args(["api", "--address", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut gateway = ChildGuard::spawn(&mut command).expect("start micro api");
    let mut lines = OutputLines::read(gateway.stderr.take().expect("stderr"));
    let address: std::net::SocketAddr = lines
        .wait_for_listening("http", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"))
        .parse()
        .expect("gateway address");

    let stop = Arc::new(AtomicBool::new(false));
    let (sender, mut tally) = watch::channel(Tally::default());
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || steady_calls(address, stop, sender))
    };
    wait_for_tally(&mut tally, "20 calls answered by node-1", |t| {
        t.answered_by("node-1") >= 20
    })
    .await;

    // The new CA joins the bundle; the client certificate is now one of
    // the new CA's.
    replace(&files.bundle, &std::fs::read(&files.both).expect("both"));
    files.issue(&new_ca, "client-2");
    gateway.signal(Signal::SIGHUP).expect("SIGHUP");
    let reloaded = lines
        .wait_for_line("TLS certificates reloaded from", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    for file in [&files.bundle, &files.cert, &files.key] {
        assert!(
            reloaded.contains(&file.display().to_string()),
            "names {}: {reloaded}",
            file.display()
        );
    }
    // Trusts only client certificates of the new CA, and serves one of
    // the new CA: calls reach it only over a connection made with the new
    // files.
    let node_2 = node(&registry, "node-2", &new_ca, new_ca.ca());
    let at_reload = tally.borrow().answered_by("node-1");
    wait_for_tally(&mut tally, "node-2 and node-1 answering", |t| {
        t.answered_by("node-2") >= 10 && t.answered_by("node-1") >= at_reload + 5
    })
    .await;

    // A broken new certificate: the one in use stays.
    replace(
        &files.cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    gateway.signal(Signal::SIGHUP).expect("SIGHUP");
    let warned = lines
        .wait_for_line("TLS certificates not reloaded", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warned.contains(&files.cert.display().to_string()),
        "names the file: {warned}"
    );
    // A node after that is reached with the certificate kept (the new
    // CA's).
    let node_3 = node(&registry, "node-3", &new_ca, new_ca.ca());
    wait_for_tally(&mut tally, "node-3 answering", |t| {
        t.answered_by("node-3") >= 10
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    let seen = load.join().expect("load thread");
    assert!(
        seen.failures.is_empty(),
        "{} of {} calls failed: {:#?}",
        seen.failures.len(),
        seen.calls,
        seen.failures
    );

    gateway.terminate().expect("SIGTERM");
    lines
        .wait_for_end(Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    let about_tls = lines.logged("TLS certificates");
    let count = |what: &str| about_tls.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("reloaded from"), 1, "{about_tls:#?}");
    assert_eq!(count("not reloaded"), 1, "one warn line: {about_tls:#?}");
    for server in [node_1, node_2, node_3] {
        server.stop();
    }
}
