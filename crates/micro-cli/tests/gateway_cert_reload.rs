//! `micro api --tls_cert_file --tls_key_file` reads its certificate again on
//! SIGHUP: a connection made after it is served the new certificate and
//! answers; a broken new certificate keeps the old one, with one warn line.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_testing::process::{ChildGuard, OutputLines, Signal};
use micro_testing::tls::{Pki, connect, served_certificate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MICRO: &str = env!("CARGO_BIN_EXE_micro");
const BOUND: Duration = Duration::from_secs(20);

/// `GET /` over a new TLS connection: the status line.
async fn get_root(pki: &Pki, address: &str) -> String {
    let mut tls = connect(pki.ca(), address, BOUND).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, tls.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer");
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_rotated_certificate_after_sighup_and_keeps_it_over_a_broken_one() {
    let pki = Pki::new();
    let old = pki.rotate(1);
    let mut command = Command::new(MICRO);
    command
        .args(["--registry=memory", "api", "--address", "127.0.0.1:0"])
        .arg("--tls_cert_file")
        .arg(pki.cert_file())
        .arg("--tls_key_file")
        .arg(pki.key_file())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut command).expect("start micro api");
    let mut lines = OutputLines::read(child.stderr.take().expect("stderr"));
    let address = lines
        .wait_for_listening("https", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(served_certificate(pki.ca(), &address, BOUND).await, old);
    // A connection made before the rotation, kept open across it.
    let mut kept = connect(pki.ca(), &address, BOUND).await;

    let new = pki.rotate(2);
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let reloaded = lines
        .wait_for_line("TLS certificates reloaded from", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        reloaded.contains(&pki.cert_file().display().to_string()),
        "{reloaded}"
    );
    assert_eq!(served_certificate(pki.ca(), &address, BOUND).await, new);
    let status = get_root(&pki, &address).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // The connection made before still answers, with the old certificate.
    assert_eq!(kept.get_ref().1.peer_certificates().expect("cert")[0], old);
    kept.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("request on the kept connection");
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, kept.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    pki.break_certificate();
    child.signal(Signal::SIGHUP).expect("SIGHUP");
    let warned = lines
        .wait_for_line("TLS certificates not reloaded", Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warned.contains(&pki.cert_file().display().to_string()),
        "{warned}"
    );
    assert_eq!(served_certificate(pki.ca(), &address, BOUND).await, new);
    let status = get_root(&pki, &address).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    child.terminate().expect("SIGTERM");
    lines
        .wait_for_end(Instant::now() + BOUND)
        .unwrap_or_else(|e| panic!("{e}"));
    let about_tls = lines.logged("TLS certificates");
    assert_eq!(about_tls.len(), 4, "{about_tls:#?}");
}
