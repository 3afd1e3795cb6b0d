//! The demo's events, as processes with default flags on mDNS in a private
//! network namespace: user-srv publishes a UserEvent on go.micro.evt.user
//! over the http broker after each stored change, and `micro subscribe`
//! prints them, one JSON line each, in order.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_registry_mdns::testing::enter_private_netns;
use micro_testing::process::{ChildGuard, OutputLines};
use topology_tests::{Process, binary, secret};

/// `micro call` with default flags: its stdout, or a panic with its stderr.
fn call(endpoint: &str, body: &str, metadata: Option<&str>) -> serde_json::Value {
    let mut command = Command::new(binary("micro"));
    command.env_remove("RUST_LOG").arg("call");
    if let Some(metadata) = metadata {
        command.args(["--metadata", metadata]);
    }
    let output = command
        .args(["go.micro.srv.user", endpoint, body])
        .output()
        .expect("micro call");
    assert!(output.status.success(), "{endpoint}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON reply")
}

#[test]
fn user_srv_events_reach_micro_subscribe_on_mdns() {
    enter_private_netns().expect("a private network namespace (needs root or CAP_SYS_ADMIN)");
    let data = tempfile::tempdir().expect("tmp");
    let data_dir = data.path().display().to_string();
    let secret = secret();
    let srv = Process::start(
        "user-srv",
        "user-srv",
        &["--data_dir", &data_dir],
        &[("MICRO_AUTH_SECRET", secret.as_str())],
    );
    srv.wait_for_log("Registering node", Duration::from_secs(60));

    let mut subscriber = ChildGuard::spawn(
        Command::new(binary("micro"))
            .args(["subscribe", "--count", "3", "go.micro.evt.user"])
            .env_remove("RUST_LOG")
            .env_remove("MICRO_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("micro subscribe");
    let mut lines = OutputLines::read(subscriber.stdout.take().expect("stdout"));
    let mut log = OutputLines::read(subscriber.stderr.take().expect("stderr"));
    let deadline = || Instant::now() + Duration::from_secs(60);
    log.wait_for_line("Subscribed to", deadline())
        .unwrap_or_else(|e| panic!("{e}"));

    let password = "correct horse battery";
    call(
        "User.Register",
        &format!(r#"{{"userName":"huohuo","userPwd":"{password}"}}"#),
        None,
    );
    let login = |pwd: &str| {
        let reply = call(
            "User.Login",
            &format!(r#"{{"userName":"huohuo","userPwd":"{pwd}"}}"#),
            None,
        );
        format!(
            "authorization=Bearer {}",
            reply["token"].as_str().expect("token")
        )
    };
    let token = login(password);
    call(
        "User.ChangePassword",
        &format!(r#"{{"oldPwd":"{password}","newPwd":"battery staple horse"}}"#),
        Some(&token),
    );
    let token = login("battery staple horse");
    call("User.DeleteUser", "{}", Some(&token));

    let printed = lines
        .wait_for_end(deadline())
        .unwrap_or_else(|e| panic!("{e}; micro subscribe's log: {:?}", log.log()));
    let kinds: Vec<String> = printed
        .iter()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(line["topic"], "go.micro.evt.user");
            assert_eq!(line["header"]["Micro-From-Service"], "go.micro.srv.user");
            assert_eq!(line["body"]["username"], "huohuo");
            assert!(!line.to_string().contains(password), "{line}");
            line["body"]["type"].as_str().expect("type").to_string()
        })
        .collect();
    assert_eq!(kinds, ["registered", "password_changed", "deleted"]);
    let status = subscriber
        .wait_until(deadline())
        .expect("wait")
        .expect("exited after --count");
    assert!(status.success(), "{status:?}");
    drop(srv);
}
