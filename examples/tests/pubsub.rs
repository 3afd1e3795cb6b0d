//! greeter-pubsub as a user runs it: every instance gets each greeting
//! (protobuf and JSON alike), the queue group gets each job once.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_greeter-pubsub");

#[test]
fn broadcast_to_every_instance_and_each_job_to_one() {
    let output = Command::new(BIN)
        .env_remove("RUST_LOG")
        .output()
        .expect("run greeter-pubsub");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    let greetings: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(": greet "))
        .collect();
    assert_eq!(
        greetings,
        [
            "a: greet Jane (from go.micro.srv.pub)",
            "a: greet John (from go.micro.srv.pub)",
            "b: greet Jane (from go.micro.srv.pub)",
            "b: greet John (from go.micro.srv.pub)",
        ]
    );
    let mut jobs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(": work ").map(|(_, job)| job))
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["job 0", "job 1", "job 2", "job 3"], "{stdout}");
}
