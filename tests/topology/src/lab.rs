//! A network lab for fault tests: hosts in their own network namespaces,
//! joined to the test's namespace by veth pairs, with faults on each link.
//!
//! - [`Link`]: a namespace (`ip netns add`) and a veth pair to it, the
//!   test's side `10.77.<n>.1`, the host's side `10.77.<n>.2`. Programs run
//!   inside with [`Link::command`]. Packet loss and blackholes are nftables
//!   rules on the host's end of the link ([`Link::set`]: `numgen random`
//!   drops a share of packets, `drop` drops them all, both ways), lifted by
//!   flushing them.
//! - [`DelayProxy`]: a TCP proxy that holds each chunk for a set time in
//!   each direction (this kernel has no `netem` qdisc), placed in front of a
//!   host by having the host advertise the proxy's address.
//!
//! The lab must run inside a private namespace of its own (the test re-runs
//! itself with `micro_registry_mdns::testing::rerun_in_netns`): nothing it
//! adds is visible to the machine, and everything goes with the test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a [`Link`] does to the packets crossing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: every packet crosses.
    None,
    /// This percentage of packets, in each direction, is dropped at random.
    Loss(u8),
    /// Every packet is dropped, both ways: no answer, no reset.
    Blackhole,
}

/// A namespace joined to the test's by a veth pair; removed on drop (stop
/// the processes inside first).
#[derive(Debug)]
pub struct Link {
    namespace: String,
    index: u8,
}

/// The host's end of the link inside its namespace.
const HOST_IFACE: &str = "lab0";

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_with_input(program: &str, args: &[&str], input: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write rules");
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{program} {}: {}\n{}\ninput:\n{input}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Link {
    /// Creates namespace `lab<pid>-<index>` and the veth pair to it
    /// (`index` < 250, one per link of a test).
    pub fn new(index: u8) -> Link {
        assert!(index < 250, "link index {index} out of range");
        let namespace = format!("lab{}-{index}", std::process::id());
        let ours = format!("lab{index}");
        run("ip", &["netns", "add", &namespace]);
        let link = Link { namespace, index };
        run(
            "ip",
            &[
                "link",
                "add",
                &ours,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IFACE,
                "netns",
                &link.namespace,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", link.our_ip()),
                "dev",
                &ours,
            ],
        );
        run("ip", &["link", "set", &ours, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", link.namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&[
            "addr",
            "add",
            &format!("{}/24", link.host_ip()),
            "dev",
            HOST_IFACE,
        ]);
        inside(&["link", "set", HOST_IFACE, "up"]);
        link
    }

    /// The test's end of the link.
    pub fn our_ip(&self) -> String {
        format!("10.77.{}.1", self.index)
    }

    /// The host's end, inside its namespace.
    pub fn host_ip(&self) -> String {
        format!("10.77.{}.2", self.index)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn command(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace.clone(),
        ]
    }

    /// Applies `fault` to the link (replacing the last one): on the host's
    /// end, and for a blackhole on the test's end too, so that a proxy or
    /// forwarder listening on [`our_ip`](Self::our_ip) in front of the host
    /// goes dark with it (no handshake, no reset) instead of accepting
    /// connections it cannot carry.
    pub fn set(&self, fault: Fault) {
        let verdict = match fault {
            Fault::None => None,
            Fault::Loss(percent) => Some(format!("numgen random mod 100 < {percent} drop")),
            Fault::Blackhole => Some("drop".to_string()),
        };
        let mut host = String::from("flush ruleset\n");
        if let Some(verdict) = &verdict {
            host.push_str(&format!(
                "table inet lab {{\n\
                 \tchain input {{ type filter hook input priority 0; policy accept; iifname \"{HOST_IFACE}\" {verdict}; }}\n\
                 \tchain output {{ type filter hook output priority 0; policy accept; oifname \"{HOST_IFACE}\" {verdict}; }}\n\
                 }}\n"
            ));
        }
        run_with_input(
            "ip",
            &["netns", "exec", &self.namespace, "nft", "-f", "-"],
            &host,
        );
        let table = format!("lab{}", self.index);
        let ours = self.our_ip();
        let mut test_side = format!("add table inet {table}\ndelete table inet {table}\n");
        if fault == Fault::Blackhole {
            test_side.push_str(&format!(
                "table inet {table} {{\n\
                 \tchain input {{ type filter hook input priority 0; policy accept; ip daddr {ours} drop; }}\n\
                 \tchain output {{ type filter hook output priority 0; policy accept; ip saddr {ours} drop; }}\n\
                 }}\n"
            ));
        }
        run_with_input("nft", &["-f", "-"], &test_side);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// A TCP proxy from `listen` to `upstream` that delays every chunk by the
/// current delay in each direction; stopped (its connections closed) on
/// drop.
#[derive(Debug)]
pub struct DelayProxy {
    address: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

/// At most this many connections at once (a test's few).
const MAX_CONNECTIONS: usize = 256;

impl DelayProxy {
    /// Listens on `listen` (port 0: any) and forwards to `upstream`.
    pub fn start(listen: &str, upstream: SocketAddr) -> DelayProxy {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("bind {listen}: {e}"));
        let address = listener.local_addr().expect("proxy address");
        let proxy = DelayProxy {
            address,
            delay_ms: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        let (delay, stop, connections) = (
            proxy.delay_ms.clone(),
            proxy.stop.clone(),
            proxy.connections.clone(),
        );
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = incoming else { continue };
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = connections.lock().unwrap_or_else(|p| p.into_inner());
                    open.retain(|s| s.peer_addr().is_ok());
                    if open.len() >= MAX_CONNECTIONS {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    for stream in [&client, &server] {
                        if let Ok(clone) = stream.try_clone() {
                            open.push(clone);
                        }
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                        pump(from, to, delay.clone());
                    }
                }
            }
        });
        proxy
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every chunk waits `delay` in each direction from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for stream in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`, each chunk held `delay` after it was read: a
/// reader thread stamps chunks, a writer thread releases them on time, so
/// the delay adds latency without limiting throughput.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Arc<AtomicU64>) {
    let (chunks, released) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + Duration::from_millis(delay.load(Ordering::SeqCst));
                    if chunks.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `chunks` ends the writer once it has sent what it holds.
    });
    std::thread::spawn(move || {
        for (due, chunk) in released {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
