//! README.md as a newcomer uses it: every shell block is pasted whole into a
//! shell and works, so the README cannot drift from the code again.
//!
//! Each ```` ```sh ```` block is marked on the line before it:
//! - `<!-- readme-test: etcd -->`: run here, pasted whole, with the built
//!   binaries on `PATH`, in a private network namespace (its fixed ports,
//!   :8080 and etcd's :2379/3379/4379, collide with nothing; mDNS stays in it);
//! - `<!-- readme-test: demo: ... -->`: run the same way against
//!   `scripts/demo`'s services; its `# ...` comments are the answers, byte
//!   for byte;
//! - `<!-- readme-test: skip: REASON -->`: not run here, for the reason given
//!   (runs until Ctrl-C, is the suite itself, ...).
//!
//! A new block without a mark fails [`every_shell_block_is_marked`]: decide
//! how it is checked when it is written. The crate table is checked against
//! the workspace's members too.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo")
}

/// A fenced block of README.md.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    /// What the `<!-- readme-test: ... -->` line before it says, if any.
    mark: Option<String>,
    text: String,
}

const MARK: &str = "<!-- readme-test:";

fn blocks() -> Vec<Block> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut previous = "";
    for (index, line) in readme.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => {
                    let mark = previous
                        .trim()
                        .strip_prefix(MARK)
                        .and_then(|rest| rest.strip_suffix("-->"))
                        .map(|mark| mark.trim().to_string());
                    open = Some(Block {
                        line: index + 1,
                        info: fence.trim().to_string(),
                        mark,
                        text: String::new(),
                    });
                }
            }
        } else if let Some(block) = open.as_mut() {
            block.text.push_str(line);
            block.text.push('\n');
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    assert!(open.is_none(), "README.md: a fence is not closed");
    blocks
}

fn is_shell(block: &Block) -> bool {
    matches!(
        block.info.split_whitespace().next(),
        Some("sh" | "bash" | "shell" | "console")
    )
}

/// The one block marked `kind`.
fn block(kind: &str) -> Block {
    let mut found: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.mark.as_deref().and_then(|m| m.split(':').next()) == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "README.md: one block marked {kind}");
    found.remove(0)
}

#[test]
fn every_shell_block_is_marked() {
    let blocks = blocks();
    let mut problems = Vec::new();
    for b in blocks.iter().filter(|b| is_shell(b)) {
        let Some(mark) = &b.mark else {
            problems.push(format!(
                "line {}: no `{MARK} etcd|demo|skip: REASON -->` before this block",
                b.line
            ));
            continue;
        };
        match mark.split_once(':').unwrap_or((mark.as_str(), "")) {
            ("etcd" | "demo", _) => {}
            ("skip", reason) if !reason.trim().is_empty() => {}
            ("skip", _) => problems.push(format!("line {}: skip needs a reason", b.line)),
            (other, _) => problems.push(format!("line {}: unknown mark {other:?}", b.line)),
        }
    }
    for b in blocks.iter().filter(|b| b.mark.is_some() && !is_shell(b)) {
        problems.push(format!("line {}: a mark on a block that is not sh", b.line));
    }
    assert!(
        problems.is_empty(),
        "README.md:\n  {}",
        problems.join("\n  ")
    );
    // What the runners below run is there.
    block("etcd");
    block("demo");
}

/// Every workspace member has its row in the crate table.
#[test]
fn the_crate_table_names_every_member() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("[workspace] members");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    let mut missing = Vec::new();
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if member.is_empty() {
            continue;
        }
        let named = |row: &&str| {
            let first = row.split(" | ").next().unwrap_or_default();
            first.contains(&format!("`{member}`")) || first.contains(&format!("`{member}/`"))
        };
        if !rows.iter().any(named) {
            missing.push(member);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's crate table has no row for {missing:?}"
    );
}

/// The directory of the binaries `cargo test --workspace` built.
fn bin_dir() -> PathBuf {
    let micro = topology_tests::binary("micro");
    for name in ["user-srv", "user-api", "user-client"] {
        topology_tests::binary(name);
    }
    micro.parent().expect("target dir").to_path_buf()
}

/// Runs `script` with bash in a private network namespace, from the repo,
/// the binaries first on `PATH`, in its own process group: killed whole (by
/// its id) if it outlives `limit`.
fn run_in_netns(script: &str, env: &[(&str, &Path)], limit: Duration) -> Output {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = micro_registry_mdns::testing::netns_command("bash");
    command
        .args(["-c", script])
        .current_dir(repo())
        .env("PATH", path)
        .env("RUST_LOG", "info")
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_REGISTRY_ADDRESS")
        .env_remove("MICRO_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn");
    let group = child.id();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            let output = child.wait_with_output().expect("output");
            panic!(
                "not done within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Lines nobody should see when nothing failed.
fn noise(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("Endpoints:")
                || (l.contains("watch of") && l.contains("broke"))
                || l.contains("database is locked")
                || l.contains("command not found")
        })
        .collect()
}

/// "Running on etcd", pasted whole into a shell: the register and the hello
/// (one member down) answer the user, and nothing logs an error.
#[test]
fn the_etcd_block_works_pasted_whole() {
    let block = block("etcd");
    let scratch = tempfile::tempdir().expect("tmp");
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null; scripts/etcd-cluster down >/dev/null 2>&1' EXIT\n{}",
        block.text
    );
    let output = run_in_netns(
        &script,
        &[
            ("ETCD_CLUSTER_DIR", &scratch.path().join("cluster")),
            ("MICRO_DATA_DIR", &scratch.path().join("data")),
        ],
        Duration::from_secs(240),
    );
    let log = text(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert_eq!(
        stdout.matches(r#"{"id":"1","username":"etcd"}"#).count(),
        2,
        "the register and the hello answer the user:\n{log}"
    );
    assert!(
        stdout.contains("/micro/registry/go.micro.srv.user/go.micro.srv.user-"),
        "{log}"
    );
    assert_eq!(
        log.matches("Deregistering node").count(),
        4,
        "3 × user-srv and user-api stop cleanly:\n{log}"
    );
    assert!(noise(&log).is_empty(), "{:#?}\n{log}", noise(&log));
    assert!(
        !scratch.path().join("cluster").exists(),
        "etcd-cluster down removes its state"
    );
}

/// The curl block of "Run the demo", from another terminal while
/// `scripts/demo` runs: the answers are the block's comments, byte for byte.
#[test]
fn the_demo_block_answers_as_its_comments_say() {
    let block = block("demo");
    let scratch = tempfile::tempdir().expect("tmp");
    let expected: String = block
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .collect();
    assert!(!expected.is_empty(), "no answers in the block");
    let bin = bin_dir();
    let script = format!(
        "scripts/demo --bin '{}' --data \"$DEMO_DATA\" </dev/null >\"$DEMO_LOG\" 2>&1 &\n\
         demo=$!\n\
         trap 'kill -TERM $demo 2>/dev/null; wait $demo' EXIT\n\
         micro health --wait 60s go.micro.srv.user >&2 && micro health --wait 60s go.micro.api.user >&2\n\
         echo '--- block'\n{}",
        bin.display(),
        block.text
    );
    let log_file = scratch.path().join("demo.log");
    let output = run_in_netns(
        &script,
        &[
            ("DEMO_DATA", &scratch.path().join("data")),
            ("DEMO_LOG", &log_file),
        ],
        Duration::from_secs(180),
    );
    let demo_log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let log = format!("{}\n--- demo\n{demo_log}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (_, answers) = stdout.split_once("--- block\n").expect("the block ran");
    assert_eq!(answers.replace('\n', ""), expected, "{log}");
    assert!(noise(&log).is_empty(), "{:#?}\n{log}", noise(&log));
    assert!(demo_log.contains("demo: stopped"), "{log}");
}
