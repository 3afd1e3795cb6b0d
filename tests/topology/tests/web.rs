//! The tutorial's production path (issue 25), as real processes on a real
//! etcd: `user-web` (go.micro.web.user, no gateway in front) → 3 × user-srv,
//! beside the gateway path `micro api --handler=api` → user-api → the same
//! user-srv instances.
//!
//! - The same requests to both answer the same status codes and JSON
//!   (tokens and times aside), bad input included: malformed JSON, JSON
//!   sent as a form, a wrong method, an oversized body, a missing token.
//! - user-web registers go-micro's web record: its node at the address it
//!   listens on, its route patterns as endpoints.
//! - One user-srv SIGSTOPped for 10 s under steady GETs through user-web:
//!   no request fails (the client's attempt timeout moves stuck calls).
//! - SIGTERM: user-web deregisters and exits 0; its record is gone.

use std::time::{Duration, Instant};

use micro_registry::Registry;
use micro_registry_etcd::testing::EtcdCluster;
use serde_json::Value;
use topology_tests::{Process, Reply, Topology, curl, curl_with, free_port};

const WEB_NAME: &str = "go.micro.web.user";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_web_serves_the_gateways_api_and_survives_a_frozen_instance() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let address = format!("--registry_address={}", cluster.addresses());
    let data = tempfile::tempdir().expect("tmp");
    let web_port = free_port();

    let (web, topology) = tokio::task::spawn_blocking({
        let address = address.clone();
        let data = data.path().to_path_buf();
        move || {
            let topology = Topology::start_on_etcd(&address, &data);
            let listen = format!("--server_address=127.0.0.1:{web_port}");
            let web = Process::start(
                "user-web",
                "user-web",
                &["--registry=etcd", address.as_str(), listen.as_str()],
                &[("RUST_LOG", "info")],
            );
            (web, topology)
        }
    })
    .await
    .expect("start");
    let web_base = format!("http://127.0.0.1:{web_port}");
    let gateway_base = topology.base.clone();

    // The record: go-micro's web service, at the address it listens on.
    let registry = cluster.registry().await;
    let record = wait_for_record(&registry, &web).await;
    let node = &record.nodes[0];
    assert_eq!(node.address, format!("127.0.0.1:{web_port}"));
    assert_eq!(
        node.metadata.get("server").map(String::as_str),
        Some("http")
    );
    let patterns: Vec<&str> = record.endpoints.iter().map(|e| e.name.as_str()).collect();
    for pattern in [
        "/user/say/hello",
        "/user/account/register",
        "/user/account/login",
    ] {
        assert!(patterns.contains(&pattern), "{patterns:?}");
    }

    let (topology, web) = tokio::task::spawn_blocking(move || {
        same_answers(&gateway_base, &web_base);
        through_proxies(&address);
        frozen_instance(&topology, &web_base);
        (topology, web)
    })
    .await
    .expect("exercise");

    // SIGTERM: deregistered, exit 0, the record gone.
    let (status, web) = tokio::task::spawn_blocking(move || {
        let mut web = web;
        let status = web.terminate(Duration::from_secs(20));
        (status, web)
    })
    .await
    .expect("terminate");
    assert!(status.success(), "user-web: {status}; log:\n{}", web.log());
    assert!(web.log().contains("Deregistering node"), "{}", web.log());
    let left = registry.get_service(WEB_NAME).await;
    assert!(
        left.as_ref()
            .map_or(true, |services| services.iter().all(|s| s.nodes.is_empty())),
        "still registered: {left:?}"
    );
    tokio::task::spawn_blocking(move || topology.stop())
        .await
        .expect("stop");
    drop(cluster);
}

async fn wait_for_record(registry: &impl Registry, web: &Process) -> micro_registry::Service {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(services) = registry.get_service(WEB_NAME).await
            && let Some(service) = services.into_iter().find(|s| !s.nodes.is_empty())
        {
            return service;
        }
        assert!(
            Instant::now() < deadline,
            "{WEB_NAME} not registered within 60 s; log:\n{}",
            web.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reply with what differs per call (tokens, times, ids of users made in
/// the other path) left out.
fn comparable(reply: &Reply) -> (u16, Value) {
    let mut body: Value =
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {reply:?}"));
    if let Some(object) = body.as_object_mut() {
        for key in ["token", "expires_at", "created_time", "updated_time"] {
            object.remove(key);
        }
    }
    (reply.status, body)
}

/// The same requests to the gateway path and to user-web: the same
/// answers.
fn same_answers(gateway: &str, web: &str) {
    // Both chains answer (user-srv's 404 for an unknown user).
    for base in [gateway, web] {
        topology_tests::eventually(
            &format!("{base} → user-srv"),
            Duration::from_secs(60),
            || {
                let reply = curl(&format!("{base}/user/say/hello?name=nobody"), None);
                (reply.status == 404).then_some(())
            },
        );
    }
    // Made through user-web; then both paths see it.
    let made = curl(
        &format!("{web}/user/account/register"),
        Some(r#"{"username":"webuser","password":"correct horse battery"}"#),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let login = |base: &str| {
        let reply = curl(
            &format!("{base}/user/account/login"),
            Some(r#"{"username":"webuser","password":"correct horse battery"}"#),
        );
        assert_eq!(reply.status, 200, "{base}: {reply:?}");
        reply.json()["token"].as_str().expect("token").to_string()
    };
    let tokens = [login(gateway), login(web)];
    // Over the edge's 1 MiB (from a file: too long for an argument).
    let big_file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        big_file.path(),
        format!(r#"{{"username":"{}"}}"#, "x".repeat(2 * 1024 * 1024)),
    )
    .expect("write");
    let big = format!("@{}", big_file.path().display());
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("/user/say/hello?name=webuser", vec![]),
        ("/user/say/hello", vec![]),
        ("/user/say/hello?name=nobody", vec![]),
        (
            "/user/account/register",
            json_post(r#"{"username":"webuser","password":"correct horse battery"}"#),
        ),
        (
            "/user/account/login",
            json_post(r#"{"username":"webuser","password":"correct horse battery"}"#),
        ),
        ("/user/account/register", json_post("{not json")),
        (
            "/user/account/register",
            vec!["-d".into(), r#"{"username":"a","password":"b"}"#.into()],
        ),
        ("/user/account/register", vec![]),
        ("/user/account/get?id=abc", vec![]),
        ("/user/account/get?id=1", vec![]),
        ("/user/account/list", vec![]),
        ("/user/account/list?page_size=2", vec!["TOKEN".into()]),
        ("/user/account/register", json_post(&big)),
        // Over the API's 64 KiB, under the edge's limit.
        (
            "/user/account/register",
            json_post(&format!(r#"{{"username":"{}"}}"#, "y".repeat(70 * 1024))),
        ),
        ("/user/article/get-article?id=999", vec![]),
        (
            "/user/account/change-password",
            json_post(r#"{"old_password":"x","new_password":"y"}"#),
        ),
    ];
    for (path, args) in &cases {
        let answers: Vec<(u16, Value)> = [gateway, web]
            .iter()
            .zip(&tokens)
            .map(|(base, token)| {
                let auth = format!("Authorization: Bearer {token}");
                let args: Vec<&str> = args
                    .iter()
                    .flat_map(|a| {
                        if a == "TOKEN" {
                            vec!["-H", auth.as_str()]
                        } else {
                            vec![a.as_str()]
                        }
                    })
                    .collect();
                comparable(&curl_with(&format!("{base}{path}"), &args))
            })
            .collect();
        assert_eq!(
            answers[0], answers[1],
            "{path} {args:?}: gateway ≠ user-web"
        );
        assert!(answers[0].0 != 0, "{path}: no answer");
    }
    // A path neither serves: 404 in go-micro's JSON from both.
    for base in [gateway, web] {
        let reply = curl(&format!("{base}/user/nothing/here"), None);
        assert_eq!(reply.status, 404, "{base}: {reply:?}");
        assert_eq!(reply.json()["code"], 404, "{reply:?}");
    }
}

/// `micro web` serves user-web under `/user/`, `micro api --handler=http`
/// (namespace go.micro.web) at its own paths.
fn through_proxies(registry_address: &str) {
    let (dashboard, gateway) = (free_port(), free_port());
    let (dash_at, gateway_at) = (
        format!("127.0.0.1:{dashboard}"),
        format!("127.0.0.1:{gateway}"),
    );
    let flags = ["--registry=etcd", registry_address];
    let mut dash_args = flags.to_vec();
    dash_args.extend(["web", "--address", dash_at.as_str()]);
    let mut gateway_args = flags.to_vec();
    gateway_args.extend([
        "api",
        "--handler=http",
        "--namespace=go.micro.web",
        "--address",
        gateway_at.as_str(),
    ]);
    let mut processes = [
        Process::start("micro web", "micro", &dash_args, &[]),
        Process::start("micro api --handler=http", "micro", &gateway_args, &[]),
    ];
    for url in [
        format!("http://{dash_at}/user/user/say/hello?name=webuser"),
        format!("http://{gateway_at}/user/say/hello?name=webuser"),
    ] {
        let reply = topology_tests::eventually(&url, Duration::from_secs(60), || {
            let reply = curl(&url, None);
            (reply.status == 200).then_some(reply)
        });
        assert_eq!(reply.json()["username"], "webuser", "{url}: {reply:?}");
        // user-web's own errors pass through unchanged.
        let blank = curl(&url.replace("?name=webuser", ""), None);
        assert_eq!(blank.status, 400, "{blank:?}");
        assert_eq!(blank.json()["detail"], "Name cannot be blank");
    }
    for process in &mut processes {
        let status = process.terminate(Duration::from_secs(20));
        assert!(status.success(), "{}: {status}", process.name);
    }
}

fn json_post(body: &str) -> Vec<String> {
    [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Eight callers GET hello through user-web while one user-srv is frozen
/// for 10 s: none fails.
fn frozen_instance(topology: &Topology, web: &str) {
    let hello = format!("{web}/user/say/hello?name=webuser");
    let calls = || -> Vec<usize> {
        topology
            .srvs
            .iter()
            .map(|s| s.count("User.QueryUserByName"))
            .collect()
    };
    let start = calls();
    topology_tests::eventually("every user-srv reached", Duration::from_secs(30), || {
        let reply = curl(&hello, None);
        assert_eq!(reply.status, 200, "{reply:?}");
        calls().iter().zip(&start).all(|(n, s)| n > s).then_some(())
    });
    let steady = topology_tests::steady_gets(&hello, 8, || {
        topology_tests::freeze_for(&topology.srvs[0], Duration::from_secs(10))
    });
    let (failed, served) = (steady.failed, steady.served);
    eprintln!(
        "user-web, 1 of 3 user-srv frozen 10 s: {served} GETs by 8 callers, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(served >= 8, "only {served} requests answered");
}
