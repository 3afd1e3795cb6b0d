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
    // Private already: the only line is the error.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
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
            // A broken watch is a debug line (the resolution warns, once, only
            // if etcd stays away): shown here, it says when the watch noticed.
            .env("RUST_LOG", "info,micro_registry_etcd=debug")
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
            .wait_for(
                "the watch breaking",
                Instant::now() + Duration::from_secs(20),
                |line| line.contains("watch of") && line.contains("broke"),
            )
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

/// A user-srv on `data` with the in-process registry (no network beyond
/// its loopback listener), its stderr read line by line; stopped by PID.
fn start_on(data: &std::path::Path) -> (ChildGuard, OutputLines) {
    use std::process::Stdio;
    let mut child = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_user-srv"))
            .args(["--registry=memory", "--server_address=127.0.0.1:0"])
            .arg("--data_dir")
            .arg(data)
            .env_remove("MICRO_DATABASE_URL")
            .env_remove("MICRO_DATA_DIR")
            .env("RUST_LOG", "info")
            .env(
                "MICRO_AUTH_SECRET",
                "a-secret-shared-by-the-instances-of-a-test",
            )
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("start user-srv");
    let lines = OutputLines::read(child.stderr.take().expect("stderr"));
    (child, lines)
}

/// The SQLite files are 0600 in a 0700 directory, also when a script made
/// the directory first with the usual umask (0755).
#[test]
fn a_data_dir_made_by_someone_else_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (mut child, mut lines) = start_on(&data);
    let ready = lines
        .wait_for_line("Registering node", Instant::now() + Duration::from_secs(30))
        .is_ok();
    let _ = child.terminate();
    let _ = child.wait_until(Instant::now() + Duration::from_secs(10));
    child.stop();
    let log = whole_log(&mut lines);
    assert!(ready, "user-srv did not start within 30 s:\n{log}");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    };
    assert_eq!(mode(&data), 0o700, "{log}");
    assert_eq!(mode(&data.join("user.db")), 0o600, "{log}");
    assert!(log.contains("was mode 755; made it 0700"), "{log}");
}

/// Instances started together on a store that does not exist yet (as
/// `user-srv & user-srv & user-srv &` does) wait for each other: no error
/// line, and every one serves.
#[test]
fn instances_started_together_on_a_new_store_all_serve_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut started: Vec<_> = (0..3).map(|_| start_on(&data)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready: Vec<bool> = started
        .iter_mut()
        .map(|(_, lines)| lines.wait_for_line("Registering node", deadline).is_ok())
        .collect();
    let mut logs = String::new();
    for (child, lines) in &mut started {
        let _ = child.terminate();
        let _ = child.wait_until(Instant::now() + Duration::from_secs(10));
        child.stop();
        logs += &whole_log(lines);
        logs += "----\n";
    }
    assert!(
        ready.iter().all(|r| *r),
        "not every instance served: {ready:?}\n{logs}"
    );
    for bad in ["ERROR", "locked"] {
        assert!(!logs.contains(bad), "{bad} in the logs:\n{logs}");
    }
}
