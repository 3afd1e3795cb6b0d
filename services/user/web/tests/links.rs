//! user-web links no store or password hashing: those are user-srv's
//! (`cargo tree -e normal`, offline, with the committed Cargo.lock). It does
//! link `jsonwebtoken`, through micro-api (the gateway's `--auth=jwt`, whose
//! edge layer it uses), but signs and checks no token: user-srv does.

use micro_testing::cargo::linked;

#[test]
fn user_web_links_no_store_or_hashing() {
    let linked = linked("user-web", &[]);
    assert!(linked.contains("user-proto"), "{linked:?}");
    for name in ["sqlx", "argon2", "user-srv"] {
        assert!(!linked.contains(name), "user-web links {name}: {linked:?}");
    }
}
