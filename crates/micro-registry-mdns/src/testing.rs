//! Run multicast tests in a private network namespace (feature `testing`).
//!
//! mDNS tests must never multicast on a real interface. Each helper here puts
//! the code under test in a fresh Linux network namespace holding only a
//! loopback interface (up, multicast on, 224.0.0.0/4 and ff00::/8 routed to it),
//! so nothing leaves the machine and parallel tests never hear each other.
//! Namespaces need root or `CAP_SYS_ADMIN`; without it every helper fails with
//! a message saying so: a test never silently runs outside.
//!
//! Three ways in, from the lightest:
//!
//! - [`enter_private_netns`]: moves the *calling thread* into a new namespace.
//!   Sockets and child processes created by that thread afterwards live there;
//!   other threads (tokio workers) stay outside, which is fine for
//!   [`MdnsRegistry`](crate::MdnsRegistry) because it opens its sockets in
//!   `new()` on the calling thread. In a `#[tokio::test]` the test body runs
//!   on the test's own thread, so:
//!
//!   ```no_run
//!   # async fn demo() {
//!   micro_registry_mdns::testing::enter_private_netns().expect("private network namespace");
//!   let registry = micro_registry_mdns::MdnsRegistry::new(Default::default()).expect("mdns");
//!   # }
//!   ```
//!
//!   Do not create sockets or spawn processes for the test from other
//!   threads (`spawn_blocking`, a task on a worker) after that.
//! - [`rerun_in_netns`]: the whole test process in a namespace. The test runs
//!   its own binary again for itself only (`--exact <name>`) under
//!   `unshare --net`, and asserts the child's success:
//!
//!   ```no_run
//!   #[test]
//!   fn finds_peers() {
//!       if micro_registry_mdns::testing::rerun_in_netns() {
//!           return; // the child ran the test inside and passed
//!       }
//!       // From here on: inside a fresh namespace.
//!   }
//!   ```
//! - [`netns_command`]: a [`Command`] that runs a program in a fresh
//!   namespace (for end-to-end tests of binaries).

use std::ffi::OsStr;
use std::fmt;
use std::process::Command;

use nix::sched::CloneFlags;

/// Set (to `1`) in the environment of a test process re-run by
/// [`rerun_in_netns`].
pub const INSIDE_ENV: &str = "MICRO_MDNS_TEST_NETNS";

/// Shell commands that make a fresh namespace's loopback carry multicast.
pub const LOOPBACK_SETUP: &str = "set -e
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
ip -6 route add ff00::/8 dev lo table local 2>/dev/null || true";

/// Why a namespace could not be had.
#[derive(Debug)]
pub struct NetnsError(String);

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot run in a private network namespace: {} (mDNS tests need root or CAP_SYS_ADMIN, \
             and `ip` from iproute2 (apt-get install iproute2); they never fall back to a real network)",
            self.0
        )
    }
}

impl std::error::Error for NetnsError {}

/// Moves the calling thread into a new network namespace with loopback set
/// up for multicast, then checks that loopback is all it can see.
pub fn enter_private_netns() -> Result<(), NetnsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetnsError(format!("unshare(CLONE_NEWNET): {e}")))?;
    // Forked from this thread, so it configures this thread's namespace.
    let status = Command::new("sh")
        .arg("-c")
        .arg(LOOPBACK_SETUP)
        .status()
        .map_err(|e| NetnsError(format!("run sh: {e}")))?;
    if !status.success() {
        return Err(NetnsError(format!("loopback setup failed: {status}")));
    }
    ensure_only_loopback()
}

/// Whether this process is the child started by [`rerun_in_netns`].
pub fn inside_netns() -> bool {
    std::env::var_os(INSIDE_ENV).is_some_and(|v| v == "1")
}

/// Fails unless every interface this thread can see is a loopback.
pub fn ensure_only_loopback() -> Result<(), NetnsError> {
    let interfaces =
        crate::interfaces().map_err(|e| NetnsError(format!("list interfaces: {e}")))?;
    let foreign: Vec<&str> = interfaces
        .iter()
        .filter(|i| !i.loopback)
        .map(|i| i.name.as_str())
        .collect();
    if !foreign.is_empty() {
        return Err(NetnsError(format!(
            "not in a private namespace: interfaces {} are visible",
            foreign.join(", ")
        )));
    }
    if interfaces.is_empty() {
        return Err(NetnsError("loopback is not up".into()));
    }
    Ok(())
}

/// A command that runs `program` in a fresh network namespace with loopback
/// set up; add arguments with [`Command::arg`] as usual.
pub fn netns_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("unshare");
    command
        .arg("--net")
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(format!("{LOOPBACK_SETUP}\nexec \"$@\""))
        .arg("netns")
        .arg(program);
    command
}

/// The re-run pattern: outside a namespace, runs the current test (named by
/// its thread, as the test harness names it) again in a fresh one and panics
/// with its output unless it passed; returns `true` then. Inside, checks the
/// namespace and returns `false`: the caller goes on with the test.
pub fn rerun_in_netns() -> bool {
    let name = std::thread::current()
        .name()
        .map(str::to_string)
        .filter(|n| n != "main")
        .expect("rerun_in_netns: run from a test thread (or use rerun_named_in_netns)");
    rerun_named_in_netns(&name)
}

/// [`rerun_in_netns`] for a test named explicitly (its full path, e.g.
/// `tests::finds_peers`).
pub fn rerun_named_in_netns(test: &str) -> bool {
    if inside_netns() {
        if let Err(e) = ensure_only_loopback() {
            panic!("{e}");
        }
        return false;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let output = netns_command(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE_ENV, "1")
        .output()
        .unwrap_or_else(|e| panic!("{}", NetnsError(format!("run unshare: {e}"))));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "test {test} failed inside its network namespace ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        );
    }
    // The child must really have run the test, not filtered it away.
    assert!(
        stdout.contains("1 passed"),
        "test {test} did not run inside its namespace:\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    eprint!("{stderr}");
    true
}

/// Decodes a DNS message the way the registry does (accepting go-micro's
/// empty `_services` TXT, which `Message::from_vec` refuses).
pub fn decode_message(bytes: &[u8]) -> Result<hickory_proto::op::Message, String> {
    crate::wire::decode(bytes).map_err(|e| e.to_string())
}
