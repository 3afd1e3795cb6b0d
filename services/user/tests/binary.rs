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

#[test]
fn sigterm_is_quick_with_the_registry_unreachable() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-srv"))
        .args([
            "--registry=etcd",
            // Nothing listens on port 1: etcd unreachable from the start.
            "--registry_address=127.0.0.1:1",
            "--server_address=127.0.0.1:0",
            "--data_dir",
            data.to_str().expect("utf-8"),
        ])
        .env_remove("MICRO_DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start user-srv");
    // Serving (and trying to register) once it says so.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Registering node") {
                let _ = tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let ready = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    let started = Instant::now();
    if ready {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    let mut exited = false;
    while ready && started.elapsed() < Duration::from_secs(10) {
        if child.try_wait().expect("wait").is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let log = reader.join().expect("reader");
    assert!(ready, "user-srv did not start within 20 s:\n{log}");
    assert!(exited, "still running 10 s after SIGTERM:\n{log}");
    assert!(status.success(), "{status:?}\n{log}");
    eprintln!("SIGTERM with etcd unreachable: exited after {took:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}\n{log}");
}
