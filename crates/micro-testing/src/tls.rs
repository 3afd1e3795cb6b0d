//! Certificates for TLS tests, made in the test (rcgen): a CA, server
//! certificates signed by it put in place as an operator rotates them, and
//! the certificate a listener serves to a new connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// A CA in a temporary directory (removed on drop), and one server
/// certificate and key (`server.pem`, `server-key.pem`) signed by it for
/// 127.0.0.1.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
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

    /// The CA certificate (PEM).
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// Issues a certificate for `names` (IP addresses become IP SANs) to
    /// `<file>.pem` and its key to `<file>-key.pem`: (cert, key).
    pub fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{file}.pem"));
        let key = self.dir.path().join(format!("{file}-key.pem"));
        self.issue_to(&cert, &key, names, None);
        (cert, key)
    }

    /// Issues a server certificate for 127.0.0.1 with `serial` and puts it
    /// and its key in place as an operator would (the key first, each
    /// written aside and renamed over): the certificate's DER.
    pub fn rotate(&self, serial: u64) -> CertificateDer<'static> {
        self.issue_to(
            &self.cert_file(),
            &self.key_file(),
            &["127.0.0.1"],
            Some(serial),
        )
    }

    fn issue_to(
        &self,
        cert_file: &Path,
        key_file: &Path,
        names: &[&str],
        serial: Option<u64>,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.serial_number = serial.map(SerialNumber::from);
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        replace(key_file, key.serialize_pem().as_bytes());
        replace(cert_file, cert.pem().as_bytes());
        cert.der().clone()
    }

    /// Puts a key that is not the certificate's in place.
    pub fn replace_key_with_another(&self) {
        let key = KeyPair::generate().expect("key");
        replace(&self.key_file(), key.serialize_pem().as_bytes());
    }

    /// Puts a certificate file that is not PEM in place.
    pub fn break_certificate(&self) {
        replace(
            &self.cert_file(),
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        );
    }
}

/// Writes `bytes` aside and renames them over `path`.
pub fn replace(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// A client configuration trusting the CA in `ca` (PEM).
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
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
    Arc::new(config)
}

/// A new TLS connection to `address` (verified against `ca` and the name
/// 127.0.0.1), bounded by `limit`: the connection.
pub async fn connect(
    ca: &Path,
    address: &str,
    limit: Duration,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(address))
        .await
        .expect("connect in time")
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    tokio::time::timeout(
        limit,
        tokio_rustls::TlsConnector::from(client_config(ca)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

/// A new TLS connection to `address`: the leaf certificate it was served.
pub async fn served_certificate(
    ca: &Path,
    address: &str,
    limit: Duration,
) -> CertificateDer<'static> {
    let tls = connect(ca, address, limit).await;
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}
