//! The frozen-node scenario of issue 22, over HTTP: `micro api
//! --handler=http` on etcd in front of three HTTP node processes of the web
//! service `go.micro.api.site` (each a `python3 -m http.server` answering with
//! its own name), four callers GETting `/site/` through the gateway, one node
//! frozen (SIGSTOP) for 10 s. The frozen node accepts connections and never
//! answers; the gateway's attempt timeout moves each stuck GET to another
//! node (GET is idempotent), so no GET fails. The load runs from the first
//! GETs until the thawed node answers again; the gateway's log must show it
//! gave up on the frozen node at least once, or nothing was tested. Timing
//! is only bounded generously (a slow machine must pass). Needs `etcd` and
//! `python3` on `PATH`, and the `micro` binary built.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_registry::{Node, RegisterOptions, Registry, Service};
use micro_registry_etcd::testing::EtcdCluster;
use topology_tests::{Process, curl, eventually, free_port};

/// The web service `/site/...` routes to in the default namespace.
const SERVICE: &str = "go.micro.api.site";
const NODES: usize = 3;
const CALLERS: usize = 4;
/// How long the node stays frozen: the scenario itself.
const FROZEN_FOR: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_http_node_fails_no_get() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let registry_address = cluster.addresses();
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();

    // go-micro's record of each node, registered the way a web service
    // registers itself; the lease outlives the test.
    let registry = cluster.registry().await;
    for (i, port) in ports.iter().enumerate() {
        let service = Service::new(SERVICE, "latest")
            .with_node(Node::new(node_id(i), format!("127.0.0.1:{port}")));
        registry
            .register(
                &service,
                RegisterOptions::with_ttl(Duration::from_secs(300)),
            )
            .await
            .expect("register a site node");
    }

    let figures = tokio::task::spawn_blocking(move || run(&registry_address, &ports))
        .await
        .expect("test thread");
    eprintln!(
        "frozen http node: {} GETs by {CALLERS} callers ({} while 1 of {NODES} nodes was frozen \
         {FROZEN_FOR:?}): {} failed, slowest {:?}, per node {:?}, {} attempts on the frozen \
         node timed out, {} ejection(s); {:?} in all",
        figures.served,
        figures.served_frozen,
        figures.failed.len(),
        figures.slowest,
        figures.by_node,
        figures.timeouts_on_frozen,
        figures.ejections,
        figures.elapsed,
    );
    assert!(
        figures.failed.is_empty(),
        "{} GETs failed: {:?}",
        figures.failed.len(),
        figures.failed
    );
    // A gateway holding GETs on the frozen node answers (almost) none while
    // it is frozen; a working one answers several per caller.
    assert!(
        figures.served_frozen >= 2 * CALLERS,
        "only {} GETs answered while the node was frozen",
        figures.served_frozen
    );
    // Else the scenario did not happen: the frozen node was never tried.
    assert!(
        figures.timeouts_on_frozen >= 1,
        "the gateway never tried the frozen node"
    );
    drop(cluster);
}

fn node_id(i: usize) -> String {
    format!("{SERVICE}-{i}")
}

/// What the callers saw.
#[derive(Debug)]
struct Figures {
    failed: Vec<String>,
    served: usize,
    served_frozen: usize,
    by_node: Vec<usize>,
    slowest: Duration,
    /// Attempts on the frozen node the gateway gave up on (its log).
    timeouts_on_frozen: usize,
    /// Ejections the gateway logged.
    ejections: usize,
    elapsed: Duration,
}

/// The callers' shared tallies.
#[derive(Debug, Default)]
struct Load {
    stop: AtomicBool,
    served: AtomicUsize,
    by_node: [AtomicUsize; NODES],
    failed: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
}

/// Stops the callers however the test ends.
struct StopOnDrop(Arc<Load>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// One site node: `python3 -m http.server` serving `dir`, whose
/// `site/index.html` holds the node's name.
fn start_node(i: usize, port: u16, dir: &Path) -> Process {
    let root = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(root.join("site")).expect("node dir");
    std::fs::write(root.join("site/index.html"), node_id(i)).expect("index.html");
    let port = port.to_string();
    let root = root.display().to_string();
    Process::start_path(
        &node_id(i),
        "python3",
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            port.as_str(),
            "--directory",
            root.as_str(),
        ],
        &[],
    )
}

fn run(registry_address: &str, ports: &[u16]) -> Figures {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let nodes: Vec<Process> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| start_node(i, *port, dir.path()))
        .collect();
    for (i, port) in ports.iter().enumerate() {
        eventually(
            &format!("{} serves", node_id(i)),
            Duration::from_secs(30),
            || {
                (curl(&format!("http://127.0.0.1:{port}/site/"), None).body == node_id(i))
                    .then_some(())
            },
        );
    }

    let port = free_port();
    let admin = free_port();
    let address = format!("127.0.0.1:{port}");
    let args = [
        "api".to_string(),
        "--handler=http".into(),
        "--registry=etcd".into(),
        format!("--registry_address={registry_address}"),
        format!("--admin_address=127.0.0.1:{admin}"),
        "--address".into(),
        address.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Process::start("micro api", "micro", &args, &[("RUST_LOG", "info")]);
    eventually("the gateway is ready", Duration::from_secs(30), || {
        (curl(&format!("http://127.0.0.1:{admin}/health/ready"), None).status == 200).then_some(())
    });
    let url = format!("http://{address}/site/");
    // Every node answers through the gateway before the load starts.
    let mut seen = [false; NODES];
    eventually(
        "every node answers through the gateway",
        Duration::from_secs(30),
        || {
            let reply = curl(&url, None);
            if reply.status == 200
                && let Some(i) = (0..NODES).find(|i| reply.body == node_id(*i))
            {
                seen[i] = true;
            }
            seen.iter().all(|s| *s).then_some(())
        },
    );

    let load = Arc::new(Load::default());
    let _stop = StopOnDrop(load.clone());
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let load = load.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                // Bounded: the flag ends it, or 10 000 requests.
                for _ in 0..10_000 {
                    if load.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = Instant::now();
                    let reply = curl(&url, None);
                    let took = sent.elapsed();
                    {
                        let mut slowest = load.slowest.lock().unwrap_or_else(|p| p.into_inner());
                        *slowest = (*slowest).max(took);
                    }
                    match (0..NODES).find(|i| reply.body == node_id(*i)) {
                        Some(i) if reply.status == 200 => {
                            load.by_node[i].fetch_add(1, Ordering::Relaxed);
                            load.served.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => load
                            .failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{} {} after {took:?}", reply.status, reply.body)),
                    }
                }
            })
        })
        .collect();
    let served = || load.served.load(Ordering::Relaxed);

    // The load flows, then node 0 freezes.
    eventually("GETs flow", Duration::from_secs(30), || {
        (served() >= 5 * CALLERS).then_some(())
    });
    nodes[0].freeze();
    let at_freeze = served();
    std::thread::sleep(FROZEN_FOR);
    let served_frozen = served() - at_freeze;
    nodes[0].thaw();
    // The load goes on until the thawed node answers again (after its
    // ejection, if it was ejected).
    let thawed = load.by_node[0].load(Ordering::Relaxed);
    eventually(
        "the thawed node answers again",
        Duration::from_secs(60),
        || (load.by_node[0].load(Ordering::Relaxed) > thawed).then_some(()),
    );
    load.stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().expect("caller");
    }

    let failed = load
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // The gateway's answers never name a node.
    for failure in &failed {
        assert!(!failure.contains("127.0.0.1"), "{failure}");
    }
    let log = gateway.log();
    let frozen_id = node_id(0);
    let timeouts_on_frozen = log
        .lines()
        .filter(|l| l.contains("proxy attempt failed") && l.contains(&frozen_id))
        .count();
    let ejections = gateway.count("ejected");
    let status = gateway.terminate(Duration::from_secs(20));
    assert!(
        status.success(),
        "micro api exited with {status} after SIGTERM; log:\n{}",
        gateway.log()
    );
    drop(nodes);
    Figures {
        failed,
        served: served(),
        served_frozen,
        by_node: load
            .by_node
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect(),
        slowest: *load.slowest.lock().unwrap_or_else(|p| p.into_inner()),
        timeouts_on_frozen,
        ejections,
        elapsed: started.elapsed(),
    }
}
