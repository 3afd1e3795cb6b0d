//! TLS on a server's gRPC listener (`--server_tls_cert_file`,
//! `--server_tls_key_file`), and mutual TLS with `--server_tls_client_ca`:
//! rustls with the ring provider, through tonic's own TLS acceptor.
//!
//! A TLS node is registered with the metadata `secure=true`, the key
//! go-micro v2's http broker uses for its TLS nodes (go-micro's gRPC server
//! itself marks nothing), so that a client without TLS fails at once with a
//! clear error instead of speaking plaintext to it.

use std::path::Path;
use std::time::Duration;

pub use micro_tls::{Certificates, PrivateKey, TlsError};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use micro_tls::SECURE_METADATA;

/// How long a connection has to finish its TLS handshake: a client that
/// connects and sends nothing does not hold a task and a socket for good.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's certificate and key, and the CA its clients' certificates must
/// chain to when mutual TLS is on.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: Certificates,
    pub key: PrivateKey,
    /// Require a client certificate signed by one of these (mutual TLS).
    pub client_ca: Option<Certificates>,
}

impl ServerTls {
    /// Reads and checks the files: the key must be the certificate's.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, TlsError> {
        let cert = Certificates::from_file(cert)?;
        let key = PrivateKey::from_file(key)?;
        micro_tls::check_pair(&cert, &key)?;
        let client_ca = client_ca.map(Certificates::from_file).transpose()?;
        Ok(ServerTls {
            cert,
            key,
            client_ca,
        })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    pub(crate) fn tonic_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(self.cert.pem(), self.key.pem()))
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca.pem())),
            None => config,
        }
    }
}
