//! Each binary of the workspace, built alone (`cargo run -p micro-cli`,
//! `scripts/demo`'s `cargo build -p user-srv -p user-api -p micro-cli`),
//! resolves every dependency with features the test suite's build
//! (`cargo test --workspace`) resolves too, so it reuses that build instead of
//! compiling the dependency again; so does `cargo test -p` of one member.
//! Checked on `cargo tree` (offline, with the committed Cargo.lock): a package
//! with features the suite's build lacks fails here, with the features to give
//! it in this crate's Cargo.toml.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every package with a binary; each depends on micro-workspace-hack.
const BINARIES: &[&str] = &[
    "user-srv",
    "user-api",
    "user-web",
    "user-client",
    "micro-cli",
    "examples",
    "micro-bench",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name vX.Y.Z [features]` for every package in the tree, each once.
fn tree(args: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(repo())
        .args(["tree", "--locked", "--offline", "--prefix", "none"])
        .args(["--format", "{p} [{f}]"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(
        output.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim_end_matches(" (*)").to_string())
        .filter(|line| !line.is_empty())
        // Workspace members print their path: keep name, version, features.
        .map(|line| match (line.find(" ("), line.rfind(") [")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &line[..a], &line[b + 1..]),
            _ => line,
        })
        .collect()
}

fn name_version(line: &str) -> &str {
    line.split(" [").next().unwrap_or(line)
}

/// Packages in `alone` that the test build resolves with other features,
/// with the test build's features of each.
fn compiled_again(
    what: &str,
    alone: &BTreeSet<String>,
    suite: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for line in alone.difference(suite) {
        let wanted: Vec<&String> = suite
            .iter()
            .filter(|s| name_version(s) == name_version(line))
            .collect();
        problems.push(format!(
            "{what} builds {line}; the test build has {wanted:?}"
        ));
    }
}

#[test]
fn each_binary_alone_resolves_the_features_of_the_test_build() {
    let suite = tree(&["--workspace", "-e", "normal,build,dev"]);
    let mut problems = Vec::new();
    for binary in BINARIES {
        let alone = tree(&["-p", binary, "-e", "normal,build"]);
        if !alone.iter().any(|l| l.starts_with("micro-workspace-hack ")) {
            problems.push(format!("{binary} does not depend on micro-workspace-hack"));
        }
        compiled_again(&format!("{binary} alone"), &alone, &suite, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "packages compiled again by a build of one binary (give \
         crates/micro-workspace-hack/Cargo.toml the test build's features of each):\n  {}",
        problems.join("\n  ")
    );
}

/// `cargo test -p X` (`scripts/test -p X`) reuses the suite's build too:
/// every other member has this crate as a dev-dependency. Not micro-build:
/// it is a build-dependency, and its dev-dependencies would give every build
/// script's dependencies the test build's features.
#[test]
fn each_member_tested_alone_resolves_the_features_of_the_test_build() {
    let suite = tree(&["--workspace", "-e", "normal,build,dev"]);
    let mut problems = Vec::new();
    for member in members() {
        if member == "micro-build" || member == "micro-workspace-hack" {
            continue;
        }
        let alone = tree(&["-p", &member, "-e", "normal,build,dev"]);
        compiled_again(
            &format!("cargo test -p {member}"),
            &alone,
            &suite,
            &mut problems,
        );
    }
    assert!(
        problems.is_empty(),
        "packages compiled again by `cargo test -p` of one member (give \
         crates/micro-workspace-hack/Cargo.toml the test build's features of each, and the \
         member a dev-dependency on it):\n  {}",
        problems.join("\n  ")
    );
}

/// The workspace's members, by package name.
fn members() -> Vec<String> {
    member_manifests()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect()
}

/// `(package name, directory, Cargo.toml)` of every member.
fn member_manifests() -> Vec<(String, PathBuf, String)> {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("[workspace] members");
    members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|member| {
            let dir = repo().join(member);
            let cargo_toml =
                std::fs::read_to_string(dir.join("Cargo.toml")).expect("member manifest");
            let name = cargo_toml
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .expect("package name")
                .to_string();
            (name, dir, cargo_toml)
        })
        .collect()
}

/// A new binary crate joins [`BINARIES`] (and depends on this crate).
#[test]
fn every_binary_package_is_checked() {
    let unchecked: Vec<String> = member_manifests()
        .into_iter()
        .filter(|(name, dir, cargo_toml)| {
            let has_binary = cargo_toml.contains("[[bin]]") || dir.join("src/main.rs").exists();
            has_binary && !BINARIES.contains(&name.as_str())
        })
        .map(|(name, _, _)| name)
        .collect();
    assert!(
        unchecked.is_empty(),
        "binaries not in BINARIES: {unchecked:?}"
    );
}
