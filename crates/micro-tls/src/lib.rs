//! PEM files for TLS, read and checked: the gateway's HTTPS
//! (`--tls_cert_file`), service servers (`--server_tls_*`) and clients
//! (`--client_tls_*`) load their certificates and keys here, so a bad file is
//! reported the same way everywhere, naming the file and the flag's problem,
//! before anything listens or dials. Servers read theirs again on SIGHUP
//! ([`ReloadableServerConfig`], [`reloadable_server_config`],
//! [`reload_on_sighup`]), keeping the old ones when the new ones are bad;
//! clients read their CA and certificate again the same way
//! ([`ReloadableClientConfig`]).
//!
//! Each loaded file keeps its PEM text (tonic's TLS configuration takes PEM)
//! and the DER items it holds (rustls takes DER).
//!
//! ```no_run
//! # fn demo() -> Result<(), micro_tls::TlsError> {
//! use micro_tls::{Certificates, PrivateKey};
//!
//! let chain = Certificates::from_file("cert.pem".as_ref())?;
//! let key = PrivateKey::from_file("key.pem".as_ref())?;
//! let config = micro_tls::server_config(&chain, &key, &[b"h2"])?;
//! # let _ = config; Ok(()) }
//! ```

mod reload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use reload::{
    Reload, ReloadableCertifiedKey, ReloadableClientConfig, ReloadableServerConfig, register,
    reload_all, reload_all_logged, reload_on_sighup, reloadable_server_config,
};
pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS certificate and key do not make a server configuration: {0}")]
    Config(String),
}

/// A PEM file of certificates (a chain, leaf first, or CA certificates).
#[derive(Clone)]
pub struct Certificates {
    path: PathBuf,
    pem: Arc<[u8]>,
    der: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("path", &self.path)
            .field("count", &self.der.len())
            .finish()
    }
}

impl Certificates {
    /// Reads `path`: at least one `CERTIFICATE` block, every block valid.
    pub fn from_file(path: &Path) -> Result<Certificates, TlsError> {
        let error = |reason: String| TlsError::Certificate {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let der: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| error(e.to_string()))?;
        if der.is_empty() {
            return Err(error("no PEM CERTIFICATE block".into()));
        }
        Ok(Certificates {
            path: path.to_path_buf(),
            pem: pem.into(),
            der,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as read (PEM).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The certificates it holds, in file order.
    pub fn der(&self) -> &[CertificateDer<'static>] {
        &self.der
    }
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
#[derive(Clone)]
pub struct PrivateKey {
    path: PathBuf,
    pem: Arc<[u8]>,
    der: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for PrivateKey {
    /// The path only: never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads `path`: one private key block.
    pub fn from_file(path: &Path) -> Result<PrivateKey, TlsError> {
        let error = |reason: String| TlsError::Key {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| error(e.to_string()))?;
        Ok(PrivateKey {
            path: path.to_path_buf(),
            pem: pem.into(),
            der: Arc::new(der),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as read (PEM).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The key.
    pub fn der(&self) -> PrivateKeyDer<'static> {
        self.der.clone_key()
    }
}

/// The ring provider, as every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration (TLS 1.2 and 1.3, ring, no client certificates)
/// offering `alpn` protocols in order.
pub fn server_config(
    chain: &Certificates,
    key: &PrivateKey,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with_client_ca(chain, key, None, alpn)
}

/// A server configuration as [`server_config`] makes, requiring client
/// certificates signed by `client_ca` when given (mutual TLS).
pub fn server_config_with_client_ca(
    chain: &Certificates,
    key: &PrivateKey,
    client_ca: Option<&Certificates>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots(ca)?.into(),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Certificate {
                path: ca.path().display().to_string(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain.der().to_vec(), key.der())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration (TLS 1.2 and 1.3, ring, no ALPN) trusting the
/// certificates of `ca`, presenting `identity` (a chain and its key) to
/// servers that ask for a client certificate.
pub fn client_config(
    ca: &Certificates,
    identity: Option<(&Certificates, &PrivateKey)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.der().to_vec(), key.der())
            .map_err(|e| TlsError::Config(format!("{}: {e}", chain.path().display())))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The certificates of `ca` as trust anchors.
fn roots(ca: &Certificates) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca.der() {
        roots.add(cert.clone()).map_err(|e| TlsError::Certificate {
            path: ca.path().display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Checks that `key` is the private key of `chain`'s leaf certificate, so a
/// mismatch is found at start, not at the first handshake.
pub fn check_pair(chain: &Certificates, key: &PrivateKey) -> Result<(), TlsError> {
    certified_key(chain, key).map(drop)
}

/// `chain` with its `key`, checked to be the leaf's key.
fn certified_key(
    chain: &Certificates,
    key: &PrivateKey,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    rustls::sign::CertifiedKey::from_der(chain.der().to_vec(), key.der(), &provider()).map_err(
        |e| {
            TlsError::Config(format!(
                "{} is not the key of {}: {e}",
                key.path.display(),
                chain.path.display()
            ))
        },
    )
}

/// The node metadata key set to `true` on nodes serving TLS: the key
/// go-micro v2's http broker registers its TLS nodes with (its gRPC server
/// marks nothing). Clients without TLS refuse such nodes with a clear error
/// instead of speaking plaintext to them.
pub const SECURE_METADATA: &str = "secure";
