//! The gateway's readiness follows its view of the registry: not ready
//! before the first listing (every path would be a false 404), ready once it
//! has listed, and only *degraded* — still ready, routing from the last
//! listing — when the registry goes away afterwards, so losing etcd does not
//! take every gateway out of its load balancer at once.

use std::time::Duration;

use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::{Process, Reply, curl, eventually, free_port};

fn start_gateway(registry_address: &str) -> (Process, u16) {
    let admin = free_port();
    let port = free_port();
    let args = [
        "--registry=etcd".to_string(),
        format!("--registry_address={registry_address}"),
        format!("--admin_address=127.0.0.1:{admin}"),
        "api".into(),
        "--address".into(),
        format!("127.0.0.1:{port}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Process::start("micro api", "micro", &args, &[]), admin)
}

fn ready(admin: u16) -> Reply {
    curl(&format!("http://127.0.0.1:{admin}/health/ready"), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_readiness_follows_the_registry() {
    let mut cluster = EtcdCluster::start(1).await.expect("etcd");
    let address = cluster.addresses();

    tokio::task::spawn_blocking(move || {
        // A registry that never answers: not ready, and the check says why.
        let nowhere = format!("127.0.0.1:{}", free_port());
        let (mut lost, lost_admin) = start_gateway(&nowhere);
        let reply = eventually(
            "an answer from /health/ready",
            Duration::from_secs(30),
            || {
                let reply = ready(lost_admin);
                (reply.status != 0).then_some(reply)
            },
        );
        assert_eq!(reply.status, 503, "{}", reply.body);
        let json = reply.json();
        assert_eq!(json["status"], "NOT_SERVING");
        assert_ne!(json["checks"]["registry"], "ok", "{json}");
        lost.terminate(Duration::from_secs(10));

        // A live registry: ready once listed.
        let (mut gateway, admin) = start_gateway(&address);
        let json = eventually("ready on a live etcd", Duration::from_secs(30), || {
            let reply = ready(admin);
            (reply.status == 200).then(|| reply.json())
        });
        assert_eq!(json["checks"]["registry"], "ok", "{json}");
        assert!(json.get("degraded").is_none(), "{json}");

        // etcd gone after the listing: still ready, degraded, saying why.
        cluster.kill(0);
        let json = eventually("degraded after etcd died", Duration::from_secs(60), || {
            let reply = ready(admin);
            let json = (reply.status == 200).then(|| reply.json())?;
            json.get("degraded").is_some().then_some(json)
        });
        assert_eq!(json["status"], "SERVING", "{json}");
        let why = json["degraded"]["registry"].as_str().unwrap_or_default();
        assert!(
            why.contains("unreachable") && why.contains("routing from the last listing"),
            "{json}"
        );
        gateway.terminate(Duration::from_secs(10));
    })
    .await
    .expect("test thread");
}
