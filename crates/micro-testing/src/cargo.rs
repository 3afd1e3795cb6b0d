//! What a package links, from `cargo tree`: for tests that keep the
//! dependency graph honest (a crate that must not link another fails the
//! moment the arrow comes back, directly or through a dependency).

use std::collections::BTreeSet;
use std::process::Command;

/// Every package in `package`'s normal (non-dev, non-build) dependency
/// tree, itself included, resolved offline from the committed `Cargo.lock`;
/// `extra` goes to `cargo tree` (`--no-default-features`, ...). Runs the
/// `cargo` that runs the test, from the test's own package directory.
pub fn linked(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        command.current_dir(dir);
    }
    let output = command
        .args(["tree", "-e", "normal", "--locked", "--offline"])
        .args(["--prefix", "none", "--format", "{p}", "-p", package])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(
        output.status.success(),
        "cargo tree -p {package} {extra:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        names.contains(package),
        "cargo tree -p {package} printed:\n{text}"
    );
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_package_links_its_dependencies_and_not_its_dependents() {
        let linked = super::linked("micro-testing", &[]);
        assert!(linked.contains("micro-server"), "{linked:?}");
        assert!(!linked.contains("micro-cli"), "{linked:?}");
    }
}
