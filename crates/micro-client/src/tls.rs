//! TLS to nodes (`--client_tls_ca`, and `--client_tls_cert_file` /
//! `--client_tls_key_file` for mutual TLS): rustls with the ring provider,
//! through a connector of ours ([`TlsConnector`]) that takes the client's
//! current configuration for each new connection, so certificates rotated
//! on SIGHUP ([`micro_tls::ReloadableClientConfig`]) reach every connection
//! made after the reload. A client without TLS dials exactly as before.
//!
//! With TLS on, every node is dialled over TLS and its certificate must chain
//! to the CA and name the node's registered address (an IP SAN for an IP
//! address), or the name `--client_tls_server_name` gives for every node.
//! Without it, a node registered `secure=true` is refused at once with a
//! clear error rather than sent plaintext it cannot read.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use micro_tls::ReloadableClientConfig;
pub use micro_tls::{Certificates, PrivateKey, SECURE_METADATA, TlsError};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// The CA that node certificates must chain to and the client's own
/// certificate for mutual TLS (read again on SIGHUP), and an optional name
/// to verify instead of each node's address. Clones share the files and
/// their reloads.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ReloadableClientConfig>,
    /// The name node certificates must carry, instead of each node's address.
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Reads and checks the files (a certificate needs its key, and the key
    /// must be the certificate's) and registers them to be read again on
    /// SIGHUP ([`micro_tls::reload_all`]).
    pub fn from_files(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<String>,
    ) -> Result<ClientTls, TlsError> {
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(TlsError::Config(
                    "a client certificate and its key go together".into(),
                ));
            }
        };
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|e| {
                    TlsError::Config(format!("--client_tls_server_name {name:?}: {e}"))
                })
            })
            .transpose()?;
        Ok(ClientTls {
            config: ReloadableClientConfig::from_files(ca, identity)?,
            server_name,
        })
    }

    /// The configuration new connections use, read again on SIGHUP.
    pub fn config(&self) -> &Arc<ReloadableClientConfig> {
        &self.config
    }

    /// A TLS connection over `tcp` to the node at `host` (an IP address or
    /// a name; brackets around IPv6 are ignored) offering `alpn`, with the
    /// configuration current now. The node's certificate must name `host`,
    /// or the configured server name.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        alpn: &[u8],
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_string()).map_err(io::Error::other)?
            }
        };
        tokio_rustls::TlsConnector::from(self.config.offering(&[alpn]))
            .connect(name, tcp)
            .await
    }
}

/// The node did not agree to speak HTTP/2 (ALPN `h2`) in the handshake.
#[derive(Debug, thiserror::Error)]
#[error("the node did not negotiate HTTP/2 (ALPN h2) in the TLS handshake: is it a gRPC server?")]
pub struct H2NotNegotiated;

/// Dials nodes over TLS for tonic: TCP (the endpoint's options) then a
/// handshake with the client's current configuration, offering `h2`.
#[derive(Clone, Debug)]
pub(crate) struct TlsConnector {
    tcp: HttpConnector,
    tls: ClientTls,
}

impl TlsConnector {
    pub(crate) fn new(tcp: HttpConnector, tls: ClientTls) -> Self {
        TlsConnector { tcp, tls }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_string();
        let tcp = self.tcp.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            let stream = tls.connect(&host, tcp.into_inner(), ALPN_H2).await?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(H2NotNegotiated.into());
            }
            Ok(TokioIo::new(stream))
        })
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
