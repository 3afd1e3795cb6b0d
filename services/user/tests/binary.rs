//! `user-srv` as a process: bad store flags are usage errors (exit 2, the
//! flag named), a corrupt store is one line at once (exit 1).

use std::process::Command;
use std::time::Instant;

fn user_srv(args: &[&str]) -> (i32, String, std::time::Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_user-srv"))
        .args(args)
        .env_remove("MICRO_DATABASE_URL")
        .env_remove("MICRO_DATA_DIR")
        .env("MICRO_REGISTRY", "mdns")
        .output()
        .expect("run user-srv");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (
        output.status.code().unwrap_or(-1),
        stderr,
        started.elapsed(),
    )
}

#[test]
fn bad_store_flags_exit_2_naming_the_flag() {
    let (code, stderr, _) = user_srv(&["--database_url", "mysql://h/db"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--database_url"), "{stderr}");

    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("file");
    let (code, stderr, _) = user_srv(&["--data_dir", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--data_dir"), "{stderr}");
    assert!(!stderr.contains("database url"), "{stderr}");
}

#[test]
fn a_corrupt_store_is_one_line_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("user.db");
    std::fs::write(&db, vec![0x5a_u8; 8192]).expect("garbage");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stderr, took) = user_srv(&["--data_dir", dir.path().to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("not a database"), "{stderr}");
    eprintln!("corrupt store: exit 1 after {took:?}: {}", lines[0]);
}
