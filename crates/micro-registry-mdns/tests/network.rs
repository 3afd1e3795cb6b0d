//! The registry on a (private) network: go-micro's datagrams in, our answers
//! out, an independent client (`dig`), interfaces, goodbyes, garbage. Every
//! test first moves its thread into a fresh network namespace.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use micro_registry::{
    Action, Detail, Event, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher,
};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry, testing};
use tokio::time::{Instant, timeout};

const SERVICE: &str = "go.micro.srv.greeter";
const NODE: &str = "go.micro.srv.greeter-4b6e0b5e-6f7a-4c1d-9a2b-3c4d5e6f7a8b";
const GROUP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 5353);

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/go-micro-v2/mdns")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::decode(text.trim()).expect("hex")
}

fn netns() {
    testing::enter_private_netns().expect("private network namespace");
}

fn registry() -> MdnsRegistry {
    MdnsRegistry::new(MdnsOptions::default()).expect("mdns registry")
}

/// A one-shot socket like go-micro's client or dig: ephemeral port.
fn client_socket() -> tokio::net::UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    tokio::net::UdpSocket::from_std(socket).expect("tokio socket")
}

async fn next_event(watcher: &mut Watcher, what: &str, accept: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, watcher.next()).await {
            Err(_) => panic!("{what}: no such event within 10 s"),
            Ok(None) => panic!("{what}: watcher ended"),
            Ok(Some(Err(e))) => panic!("{what}: watcher failed: {e}"),
            Ok(Some(Ok(event))) if accept(&event) => return event,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn service(name: &str, port: u16) -> Service {
    Service::new(name, "1.0.0").with_node(
        Node::new(
            format!("{name}-{}", uuid::Uuid::new_v4()),
            format!("127.0.0.1:{port}"),
        )
        .with_metadata("protocol", "grpc"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_from_go_micro_announcement_and_goodbye() {
    netns();
    let registry = registry();
    let mut watcher = registry
        .watch(WatchOptions::service(SERVICE))
        .await
        .expect("watch");
    let mut nodes_only = registry
        .watch(WatchOptions::service(SERVICE).with_detail(Detail::Nodes))
        .await
        .expect("watch");
    let sender = client_socket();

    sender
        .send_to(&golden("announce.hex"), GROUP)
        .await
        .expect("send");
    let created = next_event(&mut watcher, "create from announcement", |_| true).await;
    // A watcher that asked for nodes only is not given the endpoints to keep.
    let brief = next_event(&mut nodes_only, "create, nodes only", |_| true).await;
    assert_eq!(brief.service.nodes[0].id, NODE);
    assert!(brief.service.endpoints.is_empty(), "{brief:?}");
    assert_eq!(created.action, Action::Create);
    let node = &created.service.nodes[0];
    assert_eq!(node.id, NODE);
    assert_eq!(node.address, "127.0.0.1:4242");
    assert_eq!(
        node.metadata.get("registry").map(String::as_str),
        Some("mdns")
    );
    assert_eq!(created.service.version, "latest");
    assert_eq!(created.service.endpoints[0].name, "Greeter.Hello");

    // go-micro announces three times: no new events for the same records.
    sender
        .send_to(&golden("announce.hex"), GROUP)
        .await
        .expect("send");
    sender
        .send_to(&golden("goodbye.hex"), GROUP)
        .await
        .expect("send");
    let deleted = next_event(&mut watcher, "delete from goodbye", |_| true).await;
    assert_eq!(deleted.action, Action::Delete, "{deleted:?}");
    assert_eq!(deleted.service.nodes[0].id, NODE);

    // An answer to anyone's query feeds the cache too; then lookups need no query.
    sender
        .send_to(&golden("service-ptr.response.hex"), GROUP)
        .await
        .expect("send");
    next_event(&mut watcher, "create from answer", |e| {
        e.action == Action::Create
    })
    .await;
    let found = registry.get_service(SERVICE).await.expect("found");
    assert_eq!(found[0].nodes[0].address, "127.0.0.1:4242");

    registry.shutdown().await;

    // The `_services` answer with its empty TXT names the service. A fresh
    // registry (that cached nothing above) can learn the name from nothing
    // else: no one here registered it, so no one answers its own query.
    let lister = self::registry();
    let listed = lister.list_services().await.expect("list");
    assert!(
        !listed.iter().any(|s| s.name == SERVICE),
        "known before the answer: {listed:?}"
    );
    let before = lister.stats();
    sender
        .send_to(&golden("services-ptr.response.hex"), GROUP)
        .await
        .expect("send");
    // No event announces a name alone: look (from the cache, no query) until
    // it is listed, which is after the datagram was processed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = lister.list_services().await.expect("list");
        if listed.iter().any(|s| s.name == SERVICE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`_services` answer not taken within 10 s: {listed:?} {:?}",
            lister.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = lister.stats();
    assert!(after.received > before.received, "{before:?} {after:?}");
    assert_eq!(after.malformed, before.malformed, "{before:?} {after:?}");
    lister.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_go_micro_client_query_bytes() {
    netns();
    let registry = registry();
    let mut svc = Service::new(SERVICE, "latest").with_node(
        Node::new(NODE, "127.0.0.1:4242")
            .with_metadata("registry", "mdns")
            .with_metadata("server", "grpc"),
    );
    svc.endpoints
        .push(micro_registry::Endpoint::new("Greeter.Hello"));
    registry
        .register(&svc, RegisterOptions::default())
        .await
        .expect("register");

    for (file, question) in [
        (
            "gomicro-client-query-service.hex",
            "go.micro.srv.greeter.micro.",
        ),
        ("gomicro-client-query-services.hex", "_services.micro."),
    ] {
        let query = golden(file);
        let query_id = u16::from_be_bytes([query[0], query[1]]);
        let client = client_socket();
        let client_port = client.local_addr().expect("addr").port();
        client.send_to(&query, GROUP).await.expect("send query");
        let mut buf = vec![0u8; 65536];
        let (len, from) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{file}: no answer to port {client_port} within 5 s"))
            .expect("recv");
        assert_eq!(from.port(), 5353, "answered from the mDNS port");
        let reply = testing::decode_message(&buf[..len]).expect("decode answer");
        // The question echoed, as go-micro's client requires; its ID back, as dig requires.
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(reply.queries[0].name.to_ascii(), question);
        assert_eq!(reply.metadata.id, query_id);
        assert!(reply.metadata.authoritative);
        let types: Vec<RecordType> = reply.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(
            types,
            [
                RecordType::PTR,
                RecordType::SRV,
                RecordType::A,
                RecordType::TXT
            ],
            "{file}"
        );
        let srv = reply
            .answers
            .iter()
            .find_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .expect("srv");
        let a = &reply.answers[2];
        assert_eq!(a.name, srv.target, "A record on the SRV target");
        if question.starts_with("go.micro") {
            assert_eq!(srv.port, 4242);
            assert_eq!((srv.priority, srv.weight), (10, 1));
            assert!(matches!(&a.data, RData::A(ip) if ip.0 == Ipv4Addr::LOCALHOST));
            assert!(reply.answers.iter().all(|r| r.ttl == 120));
        } else {
            assert_eq!(srv.port, 9999);
            assert!(matches!(&a.data, RData::A(ip) if ip.0 == Ipv4Addr::UNSPECIFIED));
        }
    }
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_our_records() {
    netns();
    let registry = registry();
    let svc = service("dig.test.svc", 4321);
    registry
        .register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    let output = Command::new("dig")
        .args([
            "-p",
            "5353",
            "@127.0.0.1",
            "dig.test.svc.micro.",
            "ANY",
            "+norecurse",
            "+time=3",
            "+tries=2",
            "+notcp",
            "+qr",
        ])
        .output()
        .expect("run dig (apt-get install dnsutils)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "dig failed: {text}");
    assert!(text.contains("status: NOERROR"), "{text}");
    let id = &svc.nodes[0].id;
    let instance = format!("{id}.dig.test.svc.micro.");
    let records: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() >= 5)
        .collect();
    let srv = records
        .iter()
        .find(|f| f[0] == instance && f[3] == "SRV")
        .unwrap_or_else(|| panic!("no SRV for {instance}:\n{text}"));
    assert_eq!(&srv[4..7], ["10", "1", "4321"], "{text}");
    let txt = records
        .iter()
        .find(|f| f[0] == instance && f[3] == "TXT")
        .unwrap_or_else(|| panic!("no TXT for {instance}:\n{text}"));
    assert!(txt[4].starts_with("\"789c"), "go-micro's zlib hex: {text}");
    assert!(
        records.iter().any(|f| f[3] == "PTR" && f[4] == instance),
        "{text}"
    );
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_without_multicast_flag_still_connects_local_processes() {
    netns();
    let status = Command::new("ip")
        .args(["link", "set", "lo", "multicast", "off"])
        .status()
        .expect("run ip (apt-get install iproute2)");
    assert!(status.success());
    let a = registry();
    let b = registry();
    assert_eq!(
        a.interfaces()
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["lo"]
    );
    assert!(!a.interfaces()[0].multicast, "lo lost its multicast flag");
    let svc = service("offline.svc", 4100);
    let mut watcher = b
        .watch(WatchOptions::service("offline.svc"))
        .await
        .expect("watch");
    a.register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    next_event(&mut watcher, "announcement over flagless loopback", |e| {
        e.action == Action::Create
    })
    .await;
    let found = b.get_service("offline.svc").await.expect("found");
    assert_eq!(found[0].nodes[0].id, svc.nodes[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chooses_the_named_interface() {
    netns();
    let on_lo = MdnsRegistry::new(MdnsOptions::default().with_interface("lo")).expect("lo");
    assert_eq!(on_lo.interfaces().len(), 1);
    let err = MdnsRegistry::new(MdnsOptions::default().with_interface("nope0"))
        .expect_err("no such interface");
    let text = err.to_string();
    assert!(text.contains("nope0") && text.contains("lo"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_drop_say_goodbye() {
    netns();
    let observer = registry();
    let mut watcher = observer
        .watch(WatchOptions::default())
        .await
        .expect("watch");
    for by_drop in [false, true] {
        let leaving = registry();
        let svc = service(if by_drop { "drop.svc" } else { "shutdown.svc" }, 4200);
        leaving
            .register(&svc, RegisterOptions::default())
            .await
            .expect("register");
        next_event(&mut watcher, "create", |e| {
            e.action == Action::Create && e.service.name == svc.name
        })
        .await;
        let started = Instant::now();
        if by_drop {
            drop(leaving);
        } else {
            leaving.shutdown().await;
            assert!(
                leaving
                    .register(&svc, RegisterOptions::default())
                    .await
                    .is_err()
            );
        }
        next_event(&mut watcher, "delete after goodbye", |e| {
            e.action == Action::Delete && e.service.name == svc.name
        })
        .await;
        let took = started.elapsed();
        println!(
            "goodbye ({}) → gone from the observer in {took:?}",
            if by_drop { "drop" } else { "shutdown" }
        );
        // Without the goodbye the record would live out its 120 s TTL; the
        // bound leaves slack for a busy machine.
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

/// Waits (at most 5 s) until the registry has received nothing for 100 ms.
async fn wait_until_quiet(registry: &MdnsRegistry) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = registry.stats().received;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = registry.stats().received;
        if now == last {
            return;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_and_ignored() {
    netns();
    let registry = registry();
    let before = registry.stats();
    let sender = client_socket();
    let mut rng = fastrand::Rng::with_seed(7);
    let base = golden("service-ptr.response.hex");
    let mut sent = 0;
    for i in 0..300 {
        let packet = match i % 3 {
            0 => (0..rng.usize(0..600))
                .map(|_| rng.u8(..))
                .collect::<Vec<u8>>(),
            1 => {
                let mut bytes = base.clone();
                let at = rng.usize(12..bytes.len());
                bytes[at] = rng.u8(..);
                bytes
            }
            _ => base[..rng.usize(0..base.len())].to_vec(),
        };
        if sender.send_to(&packet, GROUP).await.is_ok() {
            sent += 1;
        }
        if i % 25 == 0 {
            // Let the receiver drain: a full socket buffer drops datagrams.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    wait_until_quiet(&registry).await;
    // Corrupted copies may have named our node too: forget it, then a
    // valid announcement must still be served.
    sender
        .send_to(&golden("goodbye.hex"), GROUP)
        .await
        .expect("send");
    wait_until_quiet(&registry).await;

    let mut watcher = registry
        .watch(WatchOptions::service(SERVICE))
        .await
        .expect("watch");
    sender
        .send_to(&golden("announce.hex"), GROUP)
        .await
        .expect("send");
    let event = next_event(&mut watcher, "valid after garbage", |e| {
        e.action != Action::Delete && e.service.nodes.iter().any(|n| n.id == NODE)
    })
    .await;
    assert_eq!(event.service.nodes[0].address, "127.0.0.1:4242");
    let after = registry.stats();
    assert!(after.received >= before.received + sent / 2, "{after:?}");
    assert!(after.malformed > before.malformed, "{after:?}");
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_records_for_our_name_are_detected() {
    netns();
    let registry = registry();
    let svc = Service::new(SERVICE, "latest").with_node(Node::new(NODE, "127.0.0.1:9000"));
    registry
        .register(&svc, RegisterOptions::default())
        .await
        .expect("register");
    // go-micro on "another host" probes and announces the same instance
    // name with port 4242.
    let sender = client_socket();
    sender
        .send_to(&golden("probe.hex"), GROUP)
        .await
        .expect("send");
    sender
        .send_to(&golden("announce.hex"), GROUP)
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while registry.stats().conflicts < 2 {
        assert!(
            Instant::now() < deadline,
            "conflicts: {:?}",
            registry.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ours stands.
    let found = registry.get_service(SERVICE).await.expect("found");
    assert_eq!(found[0].nodes[0].address, "127.0.0.1:9000");
    registry.shutdown().await;
}

/// The whole-process helper: this test runs again, alone, in a namespace.
#[test]
fn rerun_helper_runs_the_test_inside_a_namespace() {
    if testing::rerun_in_netns() {
        return;
    }
    assert!(testing::inside_netns());
    testing::ensure_only_loopback().expect("only loopback");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let a = registry();
        let b = registry();
        let svc = service("rerun.svc", 4700);
        a.register(&svc, RegisterOptions::default())
            .await
            .expect("register");
        let found = b.get_service("rerun.svc").await.expect("found");
        assert_eq!(found[0].nodes[0].id, svc.nodes[0].id);
    });
}

/// The command helper: a program sees only loopback, with multicast on.
#[test]
fn netns_command_runs_a_program_inside_a_namespace() {
    let output = testing::netns_command("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run unshare");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let links: Vec<&str> = text.lines().collect();
    assert_eq!(links.len(), 1, "{text}");
    assert!(
        links[0].contains(" lo: ") && links[0].contains("MULTICAST"),
        "{text}"
    );
}
