//! `user-srv` as a process: bad store flags are usage errors (exit 2, the
//! flag named), a corrupt store is one line at once (exit 1), SIGTERM is
//! quick with etcd unreachable from the start or gone after registering.

use std::process::Command;
use std::time::{Duration, Instant};

use micro_testing::process::{ChildGuard, OutputLines};

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

/// All that `lines` read once its process has exited (10 s at most for the
/// end of its output), a line each.
fn whole_log(lines: &mut OutputLines) -> String {
    let _ = lines.wait_for_end(Instant::now() + Duration::from_secs(10));
    lines.log().iter().map(|line| format!("{line}\n")).collect()
}

#[test]
fn sigterm_is_quick_with_the_registry_unreachable() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // Stopped by PID (SIGKILL, as it is not asked twice) if the test stops
    // before it exits.
    let mut child = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_user-srv"))
            .args([
                "--registry=etcd",
                // Nothing listens on port 1: etcd unreachable from the start.
                "--registry_address=127.0.0.1:1",
                "--server_address=127.0.0.1:0",
                "--data_dir",
                data.to_str().expect("utf-8"),
            ])
            .env_remove("MICRO_DATABASE_URL")
            .stderr(Stdio::piped()),
    )
    .expect("start user-srv")
    .with_grace(Duration::ZERO);
    // Serving (and trying to register) once it says so.
    let mut lines = OutputLines::read(child.stderr.take().expect("stderr"));
    let ready = lines
        .wait_for_line("Registering node", Instant::now() + Duration::from_secs(20))
        .is_ok();
    let started = Instant::now();
    let mut exited = false;
    if ready {
        child.terminate().expect("SIGTERM");
        exited = child
            .wait_until(started + Duration::from_secs(10))
            .expect("wait")
            .is_some();
    }
    let took = started.elapsed();
    let status = child.stop().expect("wait");
    let log = whole_log(&mut lines);
    assert!(ready, "user-srv did not start within 20 s:\n{log}");
    assert!(exited, "still running 10 s after SIGTERM:\n{log}");
    assert!(status.success(), "{status:?}\n{log}");
    eprintln!("SIGTERM with etcd unreachable: exited after {took:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_quick_when_etcd_went_away_after_registering() {
    use micro::Registry;
    use std::process::Stdio;

    let mut etcd = micro_registry_etcd::testing::EtcdCluster::single()
        .await
        .expect("start etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut child = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_user-srv"))
            .args([
                "--registry=etcd",
                &format!("--registry_address={}", etcd.addresses()),
                "--server_address=127.0.0.1:0",
                "--data_dir",
                data.to_str().expect("utf-8"),
            ])
            .env_remove("MICRO_DATABASE_URL")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped()),
    )
    .expect("start user-srv")
    .with_grace(Duration::ZERO);
    let mut lines = OutputLines::read(child.stderr.take().expect("stderr"));

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
    let noticed = registered
        && lines
            .wait_for_line("broke", Instant::now() + Duration::from_secs(20))
            .is_ok();
    let started = Instant::now();
    if noticed {
        child.terminate().expect("SIGTERM");
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
    let status = child.stop().expect("wait");
    let log = whole_log(&mut lines);
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
