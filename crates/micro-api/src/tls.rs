//! HTTPS at the gateway (`--tls_cert_file`, `--tls_key_file`): rustls with
//! the ring provider, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 offered by ALPN.
//! The files are read and checked by `micro-tls`, as the services' own
//! `--server_tls_*` files are.
//!
//! ```no_run
//! # fn demo() -> Result<(), micro_api::tls::TlsError> {
//! use micro_api::ApiOptions;
//!
//! let tls = micro_api::tls::server_config("cert.pem".as_ref(), "key.pem".as_ref())?;
//! let options = ApiOptions { tls: Some(tls), ..ApiOptions::default() };
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

pub use micro_tls::TlsError;
pub use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// HTTP/2 first, then HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A server configuration from a PEM certificate chain (leaf first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1), read again on SIGHUP
/// ([`micro_tls::reloadable_server_config`]).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    micro_tls::reloadable_server_config(cert_file, key_file, &ALPN)
}

/// A server configuration from a certificate chain and key already parsed.
pub fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(micro_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
