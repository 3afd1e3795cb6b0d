//! The tutorial's etcd setup, as processes: a 3-member etcd cluster, 3 ×
//! user-srv each pointed at a different member with an `http://` address (the
//! form go-micro silently dropped), user-api, and `micro --registry=etcd api
//! --handler=api`. curl answers; calls spread round robin; a SIGKILLed
//! instance costs no request.

use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::Topology;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_topology_on_etcd() {
    let cluster = EtcdCluster::start(3).await.expect("3-member etcd cluster");
    let all = cluster.addresses();
    let data = tempfile::tempdir().expect("tmp");

    let figures = tokio::task::spawn_blocking(move || {
        let registry_address = format!("--registry_address={all}");
        let shared = [
            "--registry=etcd",
            registry_address.as_str(),
            "--server_address=127.0.0.1:0",
            // Round robin (not the default p2c) so that the spread is exact.
            "--selector=roundrobin",
        ];
        let common = [
            "--registry=etcd",
            "--server_address=127.0.0.1:0",
            "--register_ttl=10",
            "--register_interval=3",
        ];
        let srv_flags: Vec<Vec<String>> = (0..3)
            .map(|member| {
                let mut flags: Vec<String> = common.iter().map(|s| s.to_string()).collect();
                flags.push(format!(
                    "--registry_address=http://127.0.0.1:{}",
                    cluster_port(&all, member)
                ));
                flags
            })
            .collect();
        // user-api and the gateway use the whole cluster.
        let mut topology = Topology::start(&shared, &srv_flags, data.path());
        let figures = topology.exercise();

        // The rpc handler calls user-srv directly, with no code per service:
        // /user/user/query-user-by-name in namespace go.micro.srv is
        // go.micro.srv.user User.QueryUserByName; canonical JSON, no pwd.
        let port = topology_tests::free_port();
        let address = format!("127.0.0.1:{port}");
        let mut rpc = topology_tests::Process::start(
            "micro api rpc",
            "micro",
            &[
                "--registry=etcd",
                registry_address.as_str(),
                "api",
                "--handler=rpc",
                "--namespace=go.micro.srv",
                "--address",
                address.as_str(),
            ],
            &[],
        );
        let url = format!("http://{address}/user/user/query-user-by-name");
        let reply = topology_tests::eventually(
            "rpc gateway answers",
            std::time::Duration::from_secs(30),
            || {
                let reply = topology_tests::curl(&url, Some(r#"{"userName":"huohuo"}"#));
                (reply.status == 200).then_some(reply)
            },
        );
        let json = reply.json();
        assert_eq!(json["success"], true, "{json}");
        assert_eq!(json["user"]["name"], "huohuo", "{json}");
        assert!(json["user"].get("pwd").is_none(), "pwd in {json}");
        assert!(!reply.body.contains("argon2"), "{json}");
        let unknown = topology_tests::curl(&url, Some(r#"{"userName":"nobody"}"#));
        assert_eq!(unknown.status, 404, "{unknown:?}");
        assert!(rpc.terminate(std::time::Duration::from_secs(20)).success());

        topology.stop();
        figures
    })
    .await
    .expect("topology");
    eprintln!(
        "etcd topology: 30 hellos over 3 user-srv → {:?}; after kill -9 of one: {} failed of 30",
        figures.spread, figures.failed_after_kill
    );
    assert!(
        figures.spread.iter().all(|n| (9..=11).contains(n)),
        "{figures:?}"
    );
    assert_eq!(figures.failed_after_kill, 0, "{figures:?}");
    drop(cluster);
}

/// The client port of `member` in a comma-separated address list.
fn cluster_port(addresses: &str, member: usize) -> String {
    addresses
        .split(',')
        .nth(member)
        .and_then(|a| a.rsplit(':').next())
        .expect("member address")
        .to_string()
}
