//! Certificates rotated without a restart: greeter-server started with
//! `--server_tls_*` reads its certificate and key again on SIGHUP. Calls
//! keep succeeding across the rotation (on a connection made before it and
//! on new ones), a connection made after it sees the new certificate, and a
//! broken new certificate keeps the old one in use with one warn line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::greeter::Request;
use examples::greeter::greeter_client::GreeterClient;
use micro_testing::process::{ChildGuard, OutputLines, Signal};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_greeter-server");
/// Every wait here is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

/// A CA, and server certificates signed by it (IP SAN 127.0.0.1) written
/// to `server.pem` / `server-key.pem`.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write ca");
        Pki {
            dir,
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// Issues a server certificate with `serial` and puts it (and its key)
    /// in place as an operator would: written aside, renamed over.
    fn rotate(&self, serial: u64) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        replace(&self.key_file(), key.serialize_pem().as_bytes());
        replace(&self.cert_file(), cert.pem().as_bytes());
        cert.der().clone()
    }
}

fn replace(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// greeter-server over TLS with `pki`'s files, and its stderr; waits until
/// it listens, returns its address.
fn start(pki: &Pki) -> (ChildGuard, OutputLines, String) {
    let mut command = Command::new(BIN);
    command
        .args(["--registry", "memory", "--server_address", "127.0.0.1:0"])
        .arg("--server_tls_cert_file")
        .arg(pki.cert_file())
        .arg("--server_tls_key_file")
        .arg(pki.key_file())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut command).expect("spawn greeter-server");
    let mut lines = OutputLines::read(child.stderr.take().expect("stderr"));
    let listening = lines
        .wait_for_line("Server [grpc] Listening on", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    let address = listening
        .split("Listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address")
        .to_string();
    lines
        .wait_for_line("Registering node", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    (child, lines, address)
}

/// A new TLS connection to `address`: the leaf certificate it was served.
async fn served_certificate(ca: &Path, address: &str) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio::time::timeout(
        BOUND,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

fn endpoint(ca: &Path, address: &str) -> Endpoint {
    let ca = std::fs::read(ca).expect("ca");
    Endpoint::from_shared(format!("https://{address}"))
        .expect("endpoint")
        .timeout(BOUND)
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .expect("tls")
}

async fn hello(channel: Channel) -> Result<(), tonic::Status> {
    GreeterClient::new(channel)
        .hello(Request {
            name: "rotation".into(),
            ..Request::default()
        })
        .await
        .map(drop)
}

/// Calls until `stop` turns true, on one connection made before (`kept`)
/// and on a new connection each time, counting calls into `done`:
/// (calls, failures).
async fn steady_calls(
    ca: &Path,
    address: &str,
    stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::watch::Sender<usize>,
) -> (usize, Vec<String>) {
    let kept = endpoint(ca, address).connect().await.expect("connect");
    let (mut calls, mut failures) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !*stop.borrow() && Instant::now() < deadline {
        if let Err(e) = hello(kept.clone()).await {
            failures.push(format!("kept connection: {e}"));
        }
        match endpoint(ca, address).connect().await {
            Ok(fresh) => {
                if let Err(e) = hello(fresh).await {
                    failures.push(format!("new connection: {e}"));
                }
            }
            Err(e) => failures.push(format!("new connection: {e:?}")),
        }
        calls += 2;
        done.send_replace(calls);
    }
    (calls, failures)
}

/// Waits (bounded) until the load has made `count` calls.
async fn wait_for_calls(
    calls: &mut tokio::sync::watch::Receiver<usize>,
    count: usize,
) -> tokio::sync::watch::Ref<'_, usize> {
    tokio::time::timeout(BOUND, calls.wait_for(|made| *made >= count))
        .await
        .unwrap_or_else(|_| panic!("not {count} calls within {BOUND:?}"))
        .expect("load running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_sighup_is_served_to_new_connections_without_a_failed_call() {
    let pki = Pki::new();
    let old = pki.rotate(1);
    let (mut child, mut lines, address) = start(&pki);
    assert_eq!(served_certificate(&pki.ca, &address).await, old);

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (done, mut calls_made) = tokio::sync::watch::channel(0);
    let load = {
        let (ca, address) = (pki.ca.clone(), address.clone());
        tokio::spawn(async move { steady_calls(&ca, &address, stopping, done).await })
    };
    // Calls under way before the rotation...
    let before = *wait_for_calls(&mut calls_made, 20).await;
    let new = pki.rotate(2);
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let reloaded = lines
        .wait_for_line("TLS certificates reloaded from", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        reloaded.contains(&pki.cert_file().display().to_string())
            && reloaded.contains(&pki.key_file().display().to_string()),
        "{reloaded}"
    );
    assert_eq!(served_certificate(&pki.ca, &address).await, new);
    assert_ne!(old, new);

    // ...and after it.
    let after = *calls_made.borrow();
    wait_for_calls(&mut calls_made, after + 20).await;
    stop.send(true).expect("stop");
    let (calls, failures) = tokio::time::timeout(Duration::from_secs(150), load)
        .await
        .expect("load ends")
        .expect("load task");
    assert!(before >= 20 && calls >= after + 20, "{before}, {after}, {calls} calls");
    assert!(
        failures.is_empty(),
        "{} of {calls} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(served_certificate(&pki.ca, &address).await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_certificate_keeps_the_old_one_with_one_log_line() {
    let pki = Pki::new();
    let old = pki.rotate(1);
    let (mut child, mut lines, address) = start(&pki);

    replace(
        &pki.cert_file(),
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let warned = lines
        .wait_for_line("TLS certificates not reloaded", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warned.contains(&pki.cert_file().display().to_string()),
        "names the file: {warned}"
    );
    assert_eq!(served_certificate(&pki.ca, &address).await, old);
    hello(
        endpoint(&pki.ca, &address)
            .connect()
            .await
            .expect("connect"),
    )
    .await
    .expect("a call with the old certificate");

    // A key that is not the certificate's: kept as well.
    let key_of_another = KeyPair::generate().expect("key");
    pki.rotate(3);
    replace(&pki.key_file(), key_of_another.serialize_pem().as_bytes());
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let mismatch = lines
        .wait_for_line("TLS certificates not reloaded", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(mismatch.contains("is not the key of"), "{mismatch}");
    assert_eq!(served_certificate(&pki.ca, &address).await, old);

    child.terminate().expect("SIGTERM");
    lines
        .wait_for_end(Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    let about_tls: Vec<&String> = lines
        .log()
        .iter()
        .filter(|l| l.contains("TLS certificates"))
        .collect();
    assert_eq!(
        about_tls
            .iter()
            .filter(|l| l.contains("not reloaded"))
            .count(),
        2,
        "one warn line per failed reload: {about_tls:#?}"
    );
    assert!(
        !about_tls.iter().any(|l| l.contains("reloaded from")),
        "{about_tls:#?}"
    );
}
