//! TLS to nodes (`--client_tls_ca`, and `--client_tls_cert_file` /
//! `--client_tls_key_file` for mutual TLS): rustls with the ring provider,
//! through tonic's own TLS connector, so a client without TLS dials exactly
//! as before.
//!
//! With TLS on, every node is dialled over TLS and its certificate must chain
//! to the CA and name the node's registered address (an IP SAN for an IP
//! address), or the name `--client_tls_server_name` gives for every node.
//! Without it, a node registered `secure=true` is refused at once with a
//! clear error rather than sent plaintext it cannot read.

use std::path::Path;
use std::time::Duration;

pub use micro_tls::{Certificates, PrivateKey, SECURE_METADATA, TlsError};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The CA that node certificates must chain to, the client's own certificate
/// for mutual TLS, and an optional name to verify instead of the address.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: Certificates,
    /// Certificate and key presented to servers that require one.
    pub identity: Option<(Certificates, PrivateKey)>,
    /// The name node certificates must carry, instead of each node's address.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Reads and checks the files: a certificate needs its key, and the key
    /// must be the certificate's.
    pub fn from_files(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<String>,
    ) -> Result<ClientTls, TlsError> {
        let ca = Certificates::from_file(ca)?;
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => {
                let cert = Certificates::from_file(cert)?;
                let key = PrivateKey::from_file(key)?;
                micro_tls::check_pair(&cert, &key)?;
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(TlsError::Config(
                    "a client certificate and its key go together".into(),
                ));
            }
        };
        Ok(ClientTls {
            ca,
            identity,
            server_name,
        })
    }

    pub(crate) fn tonic_config(&self, handshake_timeout: Duration) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .timeout(handshake_timeout);
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert.pem(), key.pem()));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// Why a node cannot be called at all with these options: it serves TLS and
/// this client has none.
pub fn refusal(node: &micro_registry::Node, tls: Option<&ClientTls>) -> Option<String> {
    let secure = node
        .metadata
        .get(SECURE_METADATA)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    (secure && tls.is_none()).then(|| {
        "the node serves TLS (registered secure=true) and this client has no TLS; \
         set --client_tls_ca (MICRO_CLIENT_TLS_CA)"
            .to_string()
    })
}
