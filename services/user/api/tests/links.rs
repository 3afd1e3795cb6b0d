//! user-api links no store, password hashing or token signing: those are
//! user-srv's. Checked on the resolved dependency graph (`cargo tree -e
//! normal`, offline, with the committed Cargo.lock), so adding sqlx, argon2
//! or jsonwebtoken back to user-api, directly or through a dependency, fails
//! here.

use micro_testing::cargo::linked;

/// Crates that are user-srv's alone.
const SRV_ONLY: &[&str] = &["sqlx", "argon2", "jsonwebtoken"];

#[test]
fn user_api_links_no_store_hashing_or_tokens() {
    let linked = linked("user-api", &[]);
    assert!(linked.contains("user-proto"), "{linked:?}");
    for name in SRV_ONLY {
        assert!(!linked.contains(*name), "user-api links {name}: {linked:?}");
    }
    assert!(!linked.contains("user-srv"), "user-api links user-srv");
}

/// The check sees them where they are.
#[test]
fn user_srv_links_them() {
    let linked = linked("user-srv", &[]);
    for name in SRV_ONLY {
        assert!(
            linked.contains(*name),
            "user-srv does not link {name}: {linked:?}"
        );
    }
}
