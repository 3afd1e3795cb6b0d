//! TLS (CA, client certificate) and username/password against a real etcd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use micro_registry::{Error, Node, RegisterOptions, Registry, Service};
use micro_registry_etcd::testing::{EtcdCluster, ServerTls};
use micro_registry_etcd::{EtcdRegistry, EtcdTls};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn service(name: &str) -> Service {
    Service::new(name, "latest").with_node(Node::new(format!("{name}-1"), "127.0.0.1:4242"))
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn pki(dir: &Path) -> Pki {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        path
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let client = CertificateParams::new(vec!["micro-client".to_string()])
        .expect("client params")
        .signed_by(&client_key, &issuer)
        .expect("client cert");
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = pki(dir.path());
    let etcd = EtcdCluster::builder()
        .tls(ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            ca: pki.ca.clone(),
            client_cert_auth: true,
        })
        .start()
        .await
        .expect("start etcd with TLS");
    assert!(etcd.endpoint(0).starts_with("https://"));

    let tls = EtcdTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
        domain: None,
    };
    // Addresses without a scheme use https when TLS is set.
    let options = etcd_options(&etcd).with_tls(tls);
    let registry = EtcdRegistry::connect(options).await.expect("connect");
    assert!(registry.endpoints()[0].starts_with("https://"));
    registry
        .register(
            &service("secure"),
            RegisterOptions::with_ttl(Duration::from_secs(10)),
        )
        .await
        .expect("register over TLS");
    let got = registry.get_service("secure").await.expect("get over TLS");
    assert_eq!(got[0].nodes[0].id, "secure-1");

    // Without the client certificate etcd refuses the handshake.
    let no_cert =
        EtcdRegistry::connect(etcd.options().with_request_timeout(Duration::from_secs(1)))
            .await
            .expect("connect");
    let refused = no_cert.get_service("secure").await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );

    // A missing certificate file is a configuration error at connect.
    let missing = etcd_options(&etcd).with_tls(EtcdTls {
        ca: Some(dir.path().join("nope.pem")),
        ..EtcdTls::default()
    });
    let error = EtcdRegistry::connect(missing)
        .await
        .expect_err("missing CA");
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    assert!(error.to_string().contains("nope.pem"), "{error}");
}

/// Options with scheme-less addresses, as `--registry_address` gives them.
fn etcd_options(etcd: &EtcdCluster) -> micro_registry_etcd::EtcdOptions {
    let addresses: Vec<String> = (0..etcd.len())
        .map(|i| format!("127.0.0.1:{}", etcd.client_port(i)))
        .collect();
    micro_registry_etcd::EtcdOptions::new(addresses).with_request_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    let etcd = EtcdCluster::single().await.expect("start etcd");
    for args in [
        &[
            "user",
            "add",
            "root",
            "--new-user-password=rootpw",
            "--interactive=false",
        ][..],
        &["role", "add", "root"][..],
        &["user", "grant-role", "root", "root"][..],
        &["auth", "enable"][..],
    ] {
        let output = etcd.etcdctl(args).expect("etcdctl");
        assert!(output.status.success(), "etcdctl {args:?}: {output:?}");
    }

    let registry = EtcdRegistry::connect(etcd.options().with_user("root", "rootpw"))
        .await
        .expect("connect");
    registry
        .register(
            &service("authed"),
            RegisterOptions::with_ttl(Duration::from_secs(10)),
        )
        .await
        .expect("register with credentials");
    assert!(registry.get_service("authed").await.is_ok());

    // A wrong password does not stop connect (etcd may just be down), but
    // every operation then says what is wrong.
    let wrong = EtcdRegistry::connect(etcd.options().with_user("root", "wrong"))
        .await
        .expect("connect");
    let error = wrong
        .register(&service("denied"), RegisterOptions::default())
        .await
        .expect_err("wrong password");
    let message = error.to_string();
    eprintln!("wrong password: {message}");
    assert!(message.contains("authentication failed"), "{message}");

    // No credentials at all.
    let anonymous = etcd.registry().await;
    let error = anonymous
        .get_service("authed")
        .await
        .expect_err("auth required");
    assert!(!error.is_not_found(), "{error:?}");
}
