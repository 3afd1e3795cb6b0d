//! Certificates read again without a restart: a [`ReloadableServerConfig`]
//! holds the server configuration new handshakes use, made from files; its
//! [`reload`](ReloadableServerConfig::reload) reads them again and swaps the
//! configuration only if the new files make a good one (readable, parsable,
//! the key the certificate's), so a bad new certificate keeps the old one
//! in use. Connections already made keep the configuration they started
//! with. A [`ReloadableClientConfig`] does the same for a client's CA and
//! certificate: the connector reads it for each new connection.
//!
//! Every reloadable configuration of a process registers itself; one
//! trigger (SIGHUP, installed with the process's shutdown signals) calls
//! [`reload_all`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use crate::{Certificates, PrivateKey, TlsError};

/// Something that reads its files again: `Ok` names the files read,
/// `Err` says why the old ones stay in use.
pub trait Reload: Send + Sync {
    fn reload(&self) -> Result<String, TlsError>;
}

static RELOADERS: Mutex<Vec<Weak<dyn Reload>>> = Mutex::new(Vec::new());

/// Registers `reloader` for [`reload_all`] for as long as it lives.
pub fn register(reloader: &Arc<dyn Reload>) {
    let mut all = RELOADERS.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|r| r.strong_count() > 0);
    all.push(Arc::downgrade(reloader));
}

/// Reloads every registered, living reloader, in registration order.
pub fn reload_all() -> Vec<Result<String, TlsError>> {
    let living: Vec<Arc<dyn Reload>> = {
        let mut all = RELOADERS.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|r| r.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    living.iter().map(|r| r.reload()).collect()
}

/// The files a server configuration is made from.
#[derive(Clone, Debug)]
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    alpn: Vec<Vec<u8>>,
}

impl ServerFiles {
    fn describe(&self) -> String {
        let mut names = format!("{}, {}", self.cert.display(), self.key.display());
        if let Some(ca) = &self.client_ca {
            names.push_str(&format!(", {}", ca.display()));
        }
        names
    }

    fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = Certificates::from_file(&self.cert)?;
        let key = PrivateKey::from_file(&self.key)?;
        crate::check_pair(&chain, &key)?;
        let client_ca = self
            .client_ca
            .as_deref()
            .map(Certificates::from_file)
            .transpose()?;
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        crate::server_config_with_client_ca(&chain, &key, client_ca.as_ref(), &alpn)
    }
}

/// The server configuration new handshakes use, read again from its files
/// on [`reload`](Self::reload).
#[derive(Debug)]
pub struct ReloadableServerConfig {
    files: Option<ServerFiles>,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ReloadableServerConfig {
    /// Reads `cert`, `key` (and `client_ca`, requiring client certificates
    /// signed by it) and registers the result for [`reload_all`].
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ReloadableServerConfig>, TlsError> {
        let files = ServerFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        };
        let config = files.load()?;
        let reloadable = Arc::new(ReloadableServerConfig {
            files: Some(files),
            current: RwLock::new(config),
        });
        let reloader: Arc<dyn Reload> = reloadable.clone();
        register(&reloader);
        Ok(reloadable)
    }

    /// A configuration made elsewhere, never reloaded.
    pub fn fixed(config: Arc<rustls::ServerConfig>) -> Arc<ReloadableServerConfig> {
        Arc::new(ReloadableServerConfig {
            files: None,
            current: RwLock::new(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Reload for ReloadableServerConfig {
    fn reload(&self) -> Result<String, TlsError> {
        let Some(files) = &self.files else {
            return Ok("nothing (a fixed configuration)".into());
        };
        let config = files.load()?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(files.describe())
    }
}

/// The files a client configuration is made from.
#[derive(Clone, Debug)]
struct ClientFiles {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    fn describe(&self) -> String {
        match &self.identity {
            Some((cert, key)) => format!(
                "{}, {}, {}",
                self.ca.display(),
                cert.display(),
                key.display()
            ),
            None => self.ca.display().to_string(),
        }
    }

    fn load(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let ca = Certificates::from_file(&self.ca)?;
        let identity = match &self.identity {
            Some((cert, key)) => {
                let chain = Certificates::from_file(cert)?;
                let key = PrivateKey::from_file(key)?;
                crate::check_pair(&chain, &key)?;
                Some((chain, key))
            }
            None => None,
        };
        crate::client_config(&ca, identity.as_ref().map(|(c, k)| (c, k)))
    }
}

/// The client configuration new connections use (the CA that servers'
/// certificates must chain to, and the client's own certificate for mutual
/// TLS), read again from its files on [`reload`](Reload::reload): a
/// connector takes [`current`](Self::current) for each connection, so a
/// rotated client certificate or CA bundle reaches every new connection
/// while the ones made before keep theirs.
#[derive(Debug)]
pub struct ReloadableClientConfig {
    files: ClientFiles,
    current: RwLock<Arc<rustls::ClientConfig>>,
}

impl ReloadableClientConfig {
    /// Reads `ca` (and `identity`, a certificate and its key, checked to
    /// match) and registers the result for [`reload_all`].
    pub fn from_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Arc<ReloadableClientConfig>, TlsError> {
        let files = ClientFiles {
            ca: ca.to_path_buf(),
            identity: identity.map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
        };
        let config = files.load()?;
        let reloadable = Arc::new(ReloadableClientConfig {
            files,
            current: RwLock::new(config),
        });
        let reloader: Arc<dyn Reload> = reloadable.clone();
        register(&reloader);
        Ok(reloadable)
    }

    /// The configuration for the next connection, offering no ALPN.
    pub fn current(&self) -> Arc<rustls::ClientConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The configuration for the next connection, offering `alpn`: a copy
    /// per connection (a few reference counts; a handshake costs far more),
    /// sharing the current configuration's session cache, so one file set
    /// serves gRPC (`h2`) and HTTP/1 (`http/1.1`) dialers alike.
    pub fn offering(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut config = (*self.current()).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The CA file.
    pub fn ca_path(&self) -> &Path {
        &self.files.ca
    }
}

impl Reload for ReloadableClientConfig {
    fn reload(&self) -> Result<String, TlsError> {
        let config = self.files.load()?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(self.files.describe())
    }
}

/// The certificate and key a [`rustls::ServerConfig`] serves, through its
/// certificate resolver, read again on [`reload`](Reload::reload): for
/// servers whose configuration is built once (the gateway's and web
/// services' HTTPS), where only the certificate changes.
#[derive(Debug)]
pub struct ReloadableCertifiedKey {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ReloadableCertifiedKey {
    fn load(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let chain = Certificates::from_file(cert)?;
        let private = PrivateKey::from_file(key)?;
        crate::certified_key(&chain, &private).map(Arc::new)
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCertifiedKey {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl Reload for ReloadableCertifiedKey {
    fn reload(&self) -> Result<String, TlsError> {
        let loaded = Self::load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(format!("{}, {}", self.cert.display(), self.key.display()))
    }
}

/// A server configuration (as [`crate::server_config`] makes) serving the
/// certificate and key of these files, read again on SIGHUP
/// ([`reload_all`]): new handshakes use the new certificate.
pub fn reloadable_server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let resolver = Arc::new(ReloadableCertifiedKey {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: RwLock::new(ReloadableCertifiedKey::load(cert, key)?),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let reloader: Arc<dyn Reload> = resolver;
    // The configuration holds the resolver: registered while it lives.
    register(&reloader);
    Ok(Arc::new(config))
}

/// Logs the outcome of [`reload_all`]: one info line per configuration
/// reloaded (naming its files), one warn line per configuration kept
/// (naming the file and why).
pub fn reload_all_logged() {
    let outcomes = reload_all();
    if outcomes.is_empty() {
        tracing::info!("No TLS certificates to reload");
    }
    for outcome in outcomes {
        match outcome {
            Ok(files) => tracing::info!("TLS certificates reloaded from {files}"),
            Err(e) => {
                tracing::warn!("TLS certificates not reloaded, the old ones stay in use: {e}")
            }
        }
    }
}

/// Calls [`reload_all_logged`] on every SIGHUP, from a task on the current
/// runtime; installed once per process (later calls do nothing while that
/// task runs; one whose runtime has ended is replaced).
pub fn reload_on_sighup() -> std::io::Result<()> {
    static LISTENER: Mutex<Option<tokio::task::JoinHandle<()>>> = Mutex::new(None);
    let mut listener = LISTENER.lock().unwrap_or_else(PoisonError::into_inner);
    if listener.as_ref().is_some_and(|task| !task.is_finished()) {
        return Ok(());
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    *listener = Some(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("Received signal hangup: reloading TLS certificates");
            reload_all_logged();
        }
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that reload: [`reload_all`] reaches every living
    /// reloader of the process, so one test's `reload_all` would swap
    /// another's configuration while it checks that a bad reload kept it.
    static RELOADING: Mutex<()> = Mutex::new(());

    fn reloading() -> std::sync::MutexGuard<'static, ()> {
        RELOADING.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A self-signed certificate for 127.0.0.1 and its key, made by
    /// rcgen: the files of `dir` named `name`.
    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_file, key_file) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_file, cert.pem()).expect("cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("key");
        (cert_file, key_file)
    }

    #[test]
    fn a_reload_swaps_a_good_configuration_and_keeps_the_old_one_over_a_bad_one() {
        let _serial = reloading();
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "server");
        let reloadable =
            ReloadableServerConfig::from_files(&cert, &key, None, &[b"h2"]).expect("loads");
        let first = reloadable.current();

        let (other_cert, other_key) = write_pair(dir.path(), "other");
        std::fs::copy(&other_cert, &cert).expect("rotate cert");
        std::fs::copy(&other_key, &key).expect("rotate key");
        let named = reloadable.reload().expect("reloads");
        assert!(named.contains(&cert.display().to_string()), "{named}");
        let second = reloadable.current();
        assert!(!Arc::ptr_eq(&first, &second), "swapped");

        std::fs::write(&cert, "not a certificate").expect("break");
        let err = reloadable.reload().expect_err("a broken certificate");
        assert!(
            err.to_string().contains(&cert.display().to_string()),
            "{err}"
        );
        assert!(Arc::ptr_eq(&second, &reloadable.current()), "kept");

        std::fs::copy(&other_cert, &cert).expect("restore cert");
        let (_, third_key) = write_pair(dir.path(), "third");
        std::fs::copy(&third_key, &key).expect("another key");
        let err = reloadable
            .reload()
            .expect_err("a key that is not the certificate's");
        assert!(err.to_string().contains("is not the key of"), "{err}");
        assert!(Arc::ptr_eq(&second, &reloadable.current()), "kept");
    }

    /// A CA in `dir` named `name`, and a client certificate it signed
    /// (with its key): (ca file, cert file, key file).
    fn write_client(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        let files = (
            dir.join(format!("{name}-ca.pem")),
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&files.0, ca.pem()).expect("ca");
        std::fs::write(&files.1, cert.pem()).expect("cert");
        std::fs::write(&files.2, key.serialize_pem()).expect("key");
        files
    }

    #[test]
    fn a_client_reload_swaps_a_good_configuration_and_keeps_the_old_one_over_a_bad_one() {
        let _serial = reloading();
        let dir = tempfile::tempdir().expect("dir");
        let (ca, cert, key) = write_client(dir.path(), "client");
        let reloadable =
            ReloadableClientConfig::from_files(&ca, Some((&cert, &key))).expect("loads");
        let first = reloadable.current();
        assert!(first.client_auth_cert_resolver.has_certs());
        let offered = reloadable.offering(&[b"h2"]);
        assert_eq!(offered.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(
            first.alpn_protocols.is_empty(),
            "the shared one offers none"
        );

        let (other_ca, other_cert, other_key) = write_client(dir.path(), "other");
        std::fs::copy(&other_ca, &ca).expect("rotate ca");
        std::fs::copy(&other_cert, &cert).expect("rotate cert");
        std::fs::copy(&other_key, &key).expect("rotate key");
        let named = reloadable.reload().expect("reloads");
        for file in [&ca, &cert, &key] {
            assert!(named.contains(&file.display().to_string()), "{named}");
        }
        let second = reloadable.current();
        assert!(!Arc::ptr_eq(&first, &second), "swapped");

        std::fs::write(&cert, "not a certificate").expect("break");
        let err = reloadable.reload().expect_err("a broken certificate");
        assert!(
            err.to_string().contains(&cert.display().to_string()),
            "{err}"
        );
        assert!(Arc::ptr_eq(&second, &reloadable.current()), "kept");

        std::fs::copy(&other_cert, &cert).expect("restore cert");
        std::fs::write(&ca, "").expect("empty ca");
        let err = reloadable.reload().expect_err("an empty CA bundle");
        assert!(err.to_string().contains(&ca.display().to_string()), "{err}");
        assert!(Arc::ptr_eq(&second, &reloadable.current()), "kept");
    }

    #[test]
    fn reload_all_reaches_living_reloaders_only() {
        let _serial = reloading();
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "living");
        let living = ReloadableServerConfig::from_files(&cert, &key, None, &[]).expect("loads");
        let (gone_cert, gone_key) = write_pair(dir.path(), "gone");
        drop(reloadable_server_config(&gone_cert, &gone_key, &[]).expect("loads"));
        let named: Vec<String> = reload_all().into_iter().filter_map(Result::ok).collect();
        let living_name = cert.display().to_string();
        assert!(named.iter().any(|n| n.contains(&living_name)), "{named:?}");
        let gone_name = gone_cert.display().to_string();
        assert!(!named.iter().any(|n| n.contains(&gone_name)), "{named:?}");
        drop(living);
    }
}
