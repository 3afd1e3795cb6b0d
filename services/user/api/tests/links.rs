//! user-api links no store, password hashing or token signing: those are
//! user-srv's. Checked on the resolved dependency graph (`cargo tree -e
//! normal`, offline, with the committed Cargo.lock), so adding sqlx, argon2
//! or jsonwebtoken back to user-api, directly or through a dependency, fails
//! here.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that are user-srv's alone.
const SRV_ONLY: &[&str] = &["sqlx", "argon2", "jsonwebtoken"];

/// Every package in `package`'s normal (non-dev, non-build) dependency tree.
fn linked(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "-e", "normal", "--locked", "--offline"])
        .args(["--prefix", "none", "--format", "{p}", "-p", package])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("utf-8");
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn user_api_links_no_store_hashing_or_tokens() {
    let linked = linked("user-api");
    assert!(linked.contains("user-proto"), "{linked:?}");
    for name in SRV_ONLY {
        assert!(!linked.contains(*name), "user-api links {name}: {linked:?}");
    }
    assert!(!linked.contains("user-srv"), "user-api links user-srv");
}

/// The check sees them where they are.
#[test]
fn user_srv_links_them() {
    let linked = linked("user-srv");
    for name in SRV_ONLY {
        assert!(
            linked.contains(*name),
            "user-srv does not link {name}: {linked:?}"
        );
    }
}
