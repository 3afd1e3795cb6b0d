//! Certificates rotated without a restart: greeter-server started with
//! `--server_tls_*` reads its certificate and key again on SIGHUP. Calls
//! keep succeeding across the rotation (on a connection made before it and
//! on new ones), a connection made after it sees the new certificate, and a
//! broken new certificate keeps the old one in use with one warn line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use examples::greeter::Request;
use examples::greeter::greeter_client::GreeterClient;
use micro_testing::process::{ChildGuard, OutputLines, Signal};
use micro_testing::tls::Pki;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_greeter-server");
/// Every wait here is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

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
    let address = lines
        .wait_for_listening("grpc", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    lines
        .wait_for_line("Registering node", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    (child, lines, address)
}

async fn served_certificate(ca: &Path, address: &str) -> CertificateDer<'static> {
    micro_testing::tls::served_certificate(ca, address, BOUND).await
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
    assert_eq!(served_certificate(pki.ca(), &address).await, old);

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (done, mut calls_made) = tokio::sync::watch::channel(0);
    let load = {
        let (ca, address) = (pki.ca().to_path_buf(), address.clone());
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
    assert_eq!(served_certificate(pki.ca(), &address).await, new);
    assert_ne!(old, new);

    // ...and after it.
    let after = *calls_made.borrow();
    wait_for_calls(&mut calls_made, after + 20).await;
    stop.send(true).expect("stop");
    let (calls, failures) = tokio::time::timeout(Duration::from_secs(150), load)
        .await
        .expect("load ends")
        .expect("load task");
    assert!(
        before >= 20 && calls >= after + 20,
        "{before}, {after}, {calls} calls"
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(served_certificate(pki.ca(), &address).await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_certificate_keeps_the_old_one_with_one_log_line() {
    let pki = Pki::new();
    let old = pki.rotate(1);
    let (mut child, mut lines, address) = start(&pki);

    pki.break_certificate();
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let warned = lines
        .wait_for_line("TLS certificates not reloaded", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warned.contains(&pki.cert_file().display().to_string()),
        "names the file: {warned}"
    );
    assert_eq!(served_certificate(pki.ca(), &address).await, old);
    hello(
        endpoint(pki.ca(), &address)
            .connect()
            .await
            .expect("connect"),
    )
    .await
    .expect("a call with the old certificate");

    // A key that is not the certificate's: kept as well.
    pki.rotate(3);
    pki.replace_key_with_another();
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let mismatch = lines
        .wait_for_line("TLS certificates not reloaded", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(mismatch.contains("is not the key of"), "{mismatch}");
    assert_eq!(served_certificate(pki.ca(), &address).await, old);

    child.terminate().expect("SIGTERM");
    lines
        .wait_for_end(Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    let about_tls = lines.logged("TLS certificates");
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
