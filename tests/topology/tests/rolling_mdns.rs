//! Issue 26, rolling restart on mDNS (default flags, in a private network
//! namespace): `micro api` → user-api → 3 × user-srv, eight callers GETting
//! through the gateway while each user-srv in turn is replaced (a new one
//! started, its readiness awaited, then the old one stopped with SIGTERM,
//! exiting 0). mDNS gives no ordering guarantee between a goodbye packet and
//! the caller's next pick, so the failed calls are reported, not asserted;
//! what is asserted: calls keep being answered and every instance stops
//! cleanly and the new ones serve.

use micro_registry_mdns::testing::enter_private_netns;
use topology_tests::rolling::{Fleet, chain_answers, every_instance_reached, roll_user_srvs};

#[test]
fn rolling_restart_of_user_srv_on_mdns() {
    enter_private_netns().expect("a private network namespace (needs root or CAP_SYS_ADMIN)");
    let data = tempfile::tempdir().expect("tmp");
    let fleet = Fleet::new(Vec::new(), data.path());
    let mut srvs: Vec<_> = (0..3)
        .map(|i| fleet.user_srv(&format!("user-srv-{i}")))
        .collect();
    let api = fleet.user_api();
    let gateway = fleet.gateway("micro api");
    gateway.wait_ready();
    let hello = chain_answers(&format!("http://{}", gateway.address));
    every_instance_reached(&hello, &srvs);

    let steady = roll_user_srvs(&fleet, &mut srvs, &hello);
    eprintln!("rolling restart of 3 user-srv (mDNS): {}", steady.figures());
    if !steady.failed.is_empty() {
        eprintln!("failed calls (mDNS): {:?}", steady.failed);
    }
    assert!(steady.served >= 8, "only {} calls answered", steady.served);
    every_instance_reached(&hello, &srvs);
    for mut instance in [gateway, api].into_iter().chain(srvs) {
        instance.stop_gracefully();
    }
}
