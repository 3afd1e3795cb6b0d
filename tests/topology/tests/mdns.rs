//! The tutorial's default setup, as processes on mDNS with default flags, in a
//! private network namespace (nothing leaves the machine): 3 × user-srv,
//! user-api, `micro api --handler=api`. curl answers; calls spread round
//! robin; a SIGKILLed instance (which sends no goodbye) costs no request.

use micro_registry_mdns::testing::enter_private_netns;
use topology_tests::Topology;

#[test]
fn seed_topology_on_mdns() {
    // This thread, and every process it starts, now lives in a namespace
    // with only loopback.
    enter_private_netns().expect("a private network namespace (needs root or CAP_SYS_ADMIN)");
    let data = tempfile::tempdir().expect("tmp");
    // Default flags (mDNS, `:0`, the default TTL): no extra user-srv flags.
    let srv_flags: Vec<Vec<String>> = (0..3).map(|_| Vec::new()).collect();
    // Round robin (not the default p2c) so that the spread is exact.
    let mut topology = Topology::start(&["--selector=roundrobin"], &srv_flags, data.path());
    let figures = topology.exercise();
    topology.stop();
    eprintln!(
        "mdns topology: 30 hellos over 3 user-srv → {:?}; after kill -9 of one: {} failed of 30",
        figures.spread, figures.failed_after_kill
    );
    assert!(
        figures.spread.iter().all(|n| (9..=11).contains(n)),
        "{figures:?}"
    );
    assert_eq!(figures.failed_after_kill, 0, "{figures:?}");
}
