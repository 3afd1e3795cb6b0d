//! TLS on a server's gRPC listener (`--server_tls_cert_file`,
//! `--server_tls_key_file`), and mutual TLS with `--server_tls_client_ca`:
//! rustls with the ring provider. The handshakes are made here (tonic's own
//! TLS acceptor cannot change its certificate), with the configuration a
//! [`ReloadableServerConfig`] holds: on SIGHUP the files are read again and
//! new connections use them; connections made keep theirs.
//!
//! A TLS node is registered with the metadata `secure=true`, the key
//! go-micro v2's http broker uses for its TLS nodes (go-micro's gRPC server
//! itself marks nothing), so that a client without TLS fails at once with a
//! clear error instead of speaking plaintext to it.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use micro_serve::AbortOnDrop;
pub use micro_tls::{Certificates, PrivateKey, ReloadableServerConfig, TlsError};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::TcpIncoming;

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

    /// The configuration handshakes use, read again from these files on
    /// SIGHUP.
    pub(crate) fn reloadable(&self) -> Result<Arc<ReloadableServerConfig>, TlsError> {
        ReloadableServerConfig::from_files(
            self.cert.path(),
            self.key.path(),
            self.client_ca.as_ref().map(Certificates::path),
            &[b"h2"],
        )
    }
}

/// How many finished handshakes may wait for the server to take them.
const HANDSHAKES_QUEUED: usize = 64;

/// The TLS connections made on `tcp`, each handshake on its own task
/// (bounded by [`HANDSHAKE_TIMEOUT`]) with the configuration current when
/// the connection came; the accepting ends when this stream is dropped.
pub(crate) fn incoming(tcp: TcpIncoming, tls: Arc<ReloadableServerConfig>) -> TlsIncoming {
    let (made, connections) = mpsc::channel(HANDSHAKES_QUEUED);
    let accepting = AbortOnDrop::spawn(async move {
        use futures::StreamExt;
        let mut tcp = std::pin::pin!(tcp);
        while let Some(accepted) = tcp.next().await {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!("Server [grpc] accept failed: {e}");
                    continue;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let made = made.clone();
            tokio::spawn(async move {
                let remote = stream.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = made.send(stream).await;
                    }
                    Ok(Err(e)) => tracing::debug!(?remote, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(?remote, "TLS handshake not done in time"),
                }
            });
        }
    });
    TlsIncoming {
        connections,
        _accepting: accepting,
    }
}

/// See [`incoming`].
pub(crate) struct TlsIncoming {
    connections: mpsc::Receiver<TlsStream<TcpStream>>,
    _accepting: AbortOnDrop<()>,
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|made| made.map(Ok))
    }
}
