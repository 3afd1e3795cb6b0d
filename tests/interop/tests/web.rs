//! A go-micro v2 web service (the Go peer: plain net/http, go-micro's web
//! record in etcd) reached through `micro web` (under `/NAME/`, the prefix
//! cut and sent as `X-Micro-Web-Base-Path`, as go-micro's dashboard did) and
//! through `micro api --handler=http` and `--handler=web` (the path whole,
//! as go-micro's http and web handlers did).

use std::time::Duration;

use interop_tests::{GoWeb, Process, eventually, free_port, go_peer};
use micro_registry::{RegisterOptions, Registry};
use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::curl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_web_and_the_gateway_reach_a_go_web_service() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let registry = cluster.registry().await;
    let peer = tokio::task::spawn_blocking(go_peer).await.expect("build");
    let site = GoWeb::start(peer);
    registry
        .register(
            &site.registration("go.micro.web.goweb"),
            RegisterOptions::with_ttl(Duration::from_secs(60)),
        )
        .await
        .expect("register the Go web service");

    let address = format!("--registry_address={}", cluster.addresses());
    tokio::task::spawn_blocking(move || {
        let (dashboard, http, web) = (free_port(), free_port(), free_port());
        let on = |port: u16| format!("127.0.0.1:{port}");
        let (dash_at, http_at, web_at) = (on(dashboard), on(http), on(web));
        let flags = ["--registry=etcd", address.as_str()];
        let mut processes = Vec::new();
        for (label, args) in [
            ("micro web", vec!["web", "--address", dash_at.as_str()]),
            (
                "micro api --handler=http",
                vec![
                    "api",
                    "--handler=http",
                    "--namespace=go.micro.web",
                    "--address",
                    http_at.as_str(),
                ],
            ),
            (
                "micro api --handler=web",
                vec![
                    "api",
                    "--handler=web",
                    "--namespace=go.micro.web",
                    "--address",
                    web_at.as_str(),
                ],
            ),
        ] {
            let mut all = flags.to_vec();
            all.extend(args);
            processes.push(Process::start(label, "micro", &all, &[]));
        }

        // The dashboard: the prefix cut, and sent as the base path.
        let reply = eventually("micro web → Go", Duration::from_secs(60), || {
            let reply = curl(&format!("http://{dash_at}/goweb/page?x=1"), None);
            (reply.status == 200).then_some(reply)
        });
        let json = reply.json();
        assert_eq!(json["peer"], "go", "{json}");
        assert_eq!(json["path"], "/page");
        assert_eq!(json["query"], "x=1");
        assert_eq!(json["base"], "/goweb");
        let posted = curl(&format!("http://{dash_at}/goweb/form"), Some(r#"{"a":1}"#)).json();
        assert_eq!(posted["method"], "POST");
        assert_eq!(posted["body"], r#"{"a":1}"#);
        // The page lists it with its link.
        let services = curl(&format!("http://{dash_at}/api/services"), None).json();
        let listed = services["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["name"] == "go.micro.web.goweb")
            .cloned()
            .unwrap_or_else(|| panic!("not listed: {services}"));
        assert_eq!(listed["web"], "/goweb/");
        // A name no web service has is the dashboard's own 404.
        assert_eq!(
            curl(&format!("http://{dash_at}/nothing/here"), None).status,
            404
        );

        // The gateway: the path whole.
        for at in [&http_at, &web_at] {
            let reply = eventually("micro api → Go", Duration::from_secs(60), || {
                let reply = curl(&format!("http://{at}/goweb/page?x=1"), None);
                (reply.status == 200).then_some(reply)
            });
            let json = reply.json();
            assert_eq!(json["peer"], "go", "{json}");
            assert_eq!(json["path"], "/goweb/page");
            assert_eq!(json["query"], "x=1");
        }
        for mut process in processes {
            let status = process.terminate(Duration::from_secs(20));
            assert!(
                status.success(),
                "{}: {status}\n{}",
                process.name,
                process.log()
            );
        }
    })
    .await
    .expect("scenario");
    drop(site);
    drop(cluster);
}
