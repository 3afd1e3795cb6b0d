//! Issue 26, bad networks: `micro api` → user-api → 3 × user-srv on etcd,
//! one user-srv in its own network namespace behind a veth link and a
//! delaying proxy. Under steady GETs through the gateway, that link gets in
//! turn 100 ms of added latency each way, 5 % packet loss both ways, and a
//! blackhole (every packet dropped, both ways, the proxy in front dark too),
//! 20 s each. No idempotent request may fail; the latency percentiles and
//! the bad instance's share of the calls are printed (timing goals are
//! micro-bench's, not this test's).
//!
//! The whole test runs in a private network namespace of its own (it re-runs
//! itself under `unshare --net`), where it adds the link's namespace, the
//! veth pair and the nftables rules: nothing is visible outside it.

use std::net::SocketAddr;
use std::time::Duration;

use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::lab::{DelayProxy, Fault, Link};
use topology_tests::{Process, Topology, binary, curl, free_port, secret, steady_gets};

fn calls(topology: &Topology) -> Vec<usize> {
    topology
        .srvs
        .iter()
        .map(|s| s.count("User.QueryUserByName"))
        .collect()
}

#[test]
fn a_bad_link_to_one_instance_fails_no_idempotent_request() {
    if micro_registry_mdns::testing::rerun_in_netns() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = runtime.block_on(EtcdCluster::start(1)).expect("etcd");
    let etcd: SocketAddr = cluster.addresses().parse().expect("one etcd address");
    let data = tempfile::tempdir().expect("tmp");
    let data_dir = data.path().display().to_string();
    let secret = secret();
    let env = [
        ("MICRO_AUTH_SECRET", secret.as_str()),
        ("RUST_LOG", "info,user_srv=debug,user_api=debug"),
    ];

    // The bad instance: in its own namespace, listening on its end of the
    // link, reaching etcd and reached by callers through the test's end.
    let link = Link::new(1);
    let etcd_forward = DelayProxy::start(&format!("{}:0", link.our_ip()), etcd);
    let served_at: SocketAddr = format!("{}:4000", link.host_ip()).parse().expect("addr");
    let proxy = DelayProxy::start(&format!("{}:0", link.our_ip()), served_at);
    let user_srv = binary("user-srv").display().to_string();
    let bad_registry = format!("--registry_address={}", etcd_forward.address());
    let bad_address = format!("--server_address={served_at}");
    let bad_advertise = format!("--server_advertise={}", proxy.address());
    let mut bad_args: Vec<String> = link.command().into_iter().skip(1).collect();
    bad_args.extend(
        [
            user_srv.as_str(),
            "--registry=etcd",
            &bad_registry,
            &bad_address,
            &bad_advertise,
            "--register_ttl=30",
            "--register_interval=10",
            "--data_dir",
            &data_dir,
        ]
        .map(str::to_string),
    );
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let bad = Process::start_path("user-srv-bad", "ip", &bad_args, &env);

    let registry = format!("--registry_address={}", cluster.addresses());
    let shared = ["--registry=etcd", &registry, "--server_address=127.0.0.1:0"];
    let mut srv_args: Vec<&str> = shared.to_vec();
    srv_args.extend([
        "--register_ttl=30",
        "--register_interval=10",
        "--data_dir",
        &data_dir,
    ]);
    let good: Vec<Process> = (1..3)
        .map(|i| Process::start(&format!("user-srv-{i}"), "user-srv", &srv_args, &env))
        .collect();
    let api = Process::start("user-api", "user-api", &shared, &env);
    let gateway_address = format!("127.0.0.1:{}", free_port());
    let mut gateway_args: Vec<&str> = shared.to_vec();
    gateway_args.extend(["api", "--handler=api", "--address", &gateway_address]);
    let gateway = Process::start("micro api", "micro", &gateway_args, &env);
    let mut topology = Topology {
        srvs: std::iter::once(bad).chain(good).collect(),
        api,
        gateway,
        base: format!("http://{gateway_address}"),
    };

    let base = topology.base.clone();
    let hello = format!("{base}/user/say/hello?name=huohuo");
    topology_tests::eventually("the chain answers", Duration::from_secs(60), || {
        let reply = curl(
            &format!("{base}/user/account/register"),
            Some(r#"{"username":"huohuo","password":"correct horse battery"}"#),
        );
        (reply.status == 201 || reply.status == 409).then_some(())
    });
    // Every instance, the bad one through its link, takes calls first.
    let start = calls(&topology);
    topology_tests::eventually("every user-srv reached", Duration::from_secs(60), || {
        let _ = curl(&hello, None);
        calls(&topology)
            .iter()
            .zip(&start)
            .all(|(n, s)| n > s)
            .then_some(())
    });

    let phases: [(&str, Fault, Duration); 3] = [
        ("100 ms each way", Fault::None, Duration::from_millis(100)),
        ("5 % loss", Fault::Loss(5), Duration::ZERO),
        ("blackhole", Fault::Blackhole, Duration::ZERO),
    ];
    let mut failures = Vec::new();
    for (name, fault, delay) in phases {
        proxy.set_delay(delay);
        link.set(fault);
        if fault == Fault::Blackhole {
            // Really dark: a handshake with the proxy in front is never
            // answered (not refused).
            let tried =
                std::net::TcpStream::connect_timeout(&proxy.address(), Duration::from_secs(1));
            assert!(
                matches!(&tried, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
                "the blackholed link answered: {tried:?}"
            );
        }
        let before = calls(&topology);
        let seen = steady_gets(&hello, 8, || std::thread::sleep(Duration::from_secs(20)));
        link.set(Fault::None);
        proxy.set_delay(Duration::ZERO);
        let after = calls(&topology);
        let per: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let total: usize = per.iter().sum();
        eprintln!(
            "faults: {name}: 8 callers for 20 s: {}; user-srv calls per instance (bad first) \
             {per:?}, bad share {:.1} %",
            seen.figures(),
            if total == 0 {
                0.0
            } else {
                per[0] as f64 * 100.0 / total as f64
            },
        );
        assert!(
            seen.took.len() >= 8,
            "{name}: only {} answers",
            seen.took.len()
        );
        let failed = seen.failed.iter().map(|f| format!("{name}: {f}"));
        failures.extend(failed);
        // The link healed: calls reach the instance again before the next
        // phase (its registration may have lapsed in the blackhole).
        let healed = calls(&topology)[0];
        topology_tests::eventually(
            &format!("the bad instance takes calls after {name}"),
            Duration::from_secs(60),
            || {
                let _ = curl(&hello, None);
                (calls(&topology)[0] > healed).then_some(())
            },
        );
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    let status = topology.srvs[0].terminate(Duration::from_secs(20));
    assert!(status.success(), "the bad instance exited with {status}");
    topology.stop();
    drop(proxy);
    drop(etcd_forward);
    drop(link);
    drop(cluster);
}
