//! user-client links no store, password hashing or token signing: those are
//! user-srv's. Checked on the resolved dependency graph (`cargo tree -e
//! normal`, offline, with the committed Cargo.lock), so adding sqlx, argon2
//! or jsonwebtoken back to user-client, directly or through a dependency,
//! fails here.

use micro_testing::cargo::linked;

#[test]
fn user_client_links_no_store_hashing_or_tokens() {
    let linked = linked("user-client", &[]);
    assert!(linked.contains("user-proto"), "{linked:?}");
    assert!(linked.contains("micro"), "{linked:?}");
    for name in ["sqlx", "argon2", "jsonwebtoken", "user-srv"] {
        assert!(
            !linked.contains(name),
            "user-client links {name}: {linked:?}"
        );
    }
}
