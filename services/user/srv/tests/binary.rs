//! `user-srv` as a process: bad store flags are usage errors (exit 2, the
//! flag named), a corrupt store is one line at once (exit 1), SIGTERM is
//! quick with etcd unreachable from the start or gone after registering.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_quick_when_etcd_went_away_after_registering() {
    use micro::Registry;
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;

    let mut etcd = micro_registry_etcd::testing::EtcdCluster::single()
        .await
        .expect("start etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-srv"))
        .args([
            "--registry=etcd",
            &format!("--registry_address={}", etcd.addresses()),
            "--server_address=127.0.0.1:0",
            "--data_dir",
            data.to_str().expect("utf-8"),
        ])
        .env_remove("MICRO_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start user-srv");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };

    // Registered: the node is in etcd.
    let registry = etcd.registry().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut registered = false;
    while !registered && Instant::now() < deadline {
        registered = registry
            .get_service(user_srv::SRV_NAME)
            .await
            .is_ok_and(|found| !found.is_empty());
        if !registered {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // etcd goes away (killed by PID); user-srv's own watch notices.
    etcd.kill(0);
    let noticed = registered && wait_for("broke");
    let started = Instant::now();
    if noticed {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    let mut exited = false;
    while noticed && started.elapsed() < Duration::from_secs(10) {
        if child.try_wait().expect("wait").is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    drop(rx);
    let log = reader.join().expect("reader");
    assert!(registered, "user-srv never registered:\n{log}");
    assert!(noticed, "user-srv never saw etcd go:\n{log}");
    assert!(exited, "still running 10 s after SIGTERM:\n{log}");
    assert!(status.success(), "{status:?}\n{log}");
    eprintln!("SIGTERM with etcd gone after registering: exited after {took:?}");
    let gave_up: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Deregister error"))
        .collect();
    assert_eq!(gave_up.len(), 1, "{log}");
    assert!(gave_up[0].contains("etcd unreachable for"), "{log}");
    // Deregistering gives up after 1 s instead of the 5 s request timeout;
    // the rest is slack for a busy machine.
    assert!(took < Duration::from_secs(3), "took {took:?}\n{log}");
}
