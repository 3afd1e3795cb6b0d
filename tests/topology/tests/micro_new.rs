//! `micro new` as a newcomer uses it: a crate generated in a directory outside
//! this repository builds offline with no edits, passes its own test, and
//! answers through `micro call`, `micro api` and its client example, on the
//! default registry (mDNS, in a private network namespace).
//!
//! The generated crates share one target directory under this workspace's
//! `target/tmp`, so only the first run builds their dependencies (a few
//! minutes); later runs build the new crate alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use micro_registry_mdns::testing::enter_private_netns;
use topology_tests::{Process, binary, curl, eventually, free_port};

/// Dependencies built once; debug info off keeps it small.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("micro-new")
}

/// Runs `command`, killing it (by PID) if it outlives `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    // Drain the pipes while waiting, so a chatty child cannot block.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}:\n{}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("RUST_LOG")
        .env_remove("MICRO_REGISTRY");
    let output = run_bounded(command, Duration::from_secs(40 * 60));
    assert!(
        output.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn micro(args: &[&str]) -> Output {
    let mut command = Command::new(binary("micro"));
    command.args(args).env_remove("MICRO_REGISTRY");
    run_bounded(command, Duration::from_secs(60))
}

/// `micro new ARGS`, then the crate's own build and test, offline.
fn generate_and_build(root: &Path, args: &[&str]) -> PathBuf {
    let web = args.contains(&"web");
    let dir = root.join(args.last().expect("a directory"));
    let mut full = vec!["new"];
    full.extend_from_slice(args);
    let mut command = Command::new(binary("micro"));
    command.args(&full).current_dir(root);
    let output = run_bounded(command, Duration::from_secs(30));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "micro {full:?}: {said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("Creating service"), "{said}");
    let (files, test): (&[&str], &str) = if web {
        (&["src/lib.rs"], "calls_the_service_by_name")
    } else {
        (&["src/handler.rs", "examples/client.rs"], "answers_by_name")
    };
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "README.md",
    ]
    .iter()
    .chain(files)
    {
        assert!(dir.join(file).is_file(), "{file} not generated");
    }
    cargo(&dir, &["build", "--offline", "--all-targets"]);
    let tested = cargo(&dir, &["test", "--offline"]);
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(report.contains(&format!("test {test} ... ok")), "{report}");
    // The service template's streams, each with its test.
    if !args.contains(&"api") && !web {
        assert!(
            report.contains("test streams_count_messages ... ok"),
            "{report}"
        );
        assert!(
            report.contains("test answers_each_ping_until_the_caller_ends ... ok"),
            "{report}"
        );
    }
    dir
}

/// The `count` of each JSON line (proto3 JSON writes int64 as a string).
fn counts(lines: &str) -> Vec<i64> {
    lines
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
            let count = &value["count"];
            count
                .as_i64()
                .or_else(|| count.as_str().and_then(|c| c.parse().ok()))
                .unwrap_or_else(|| panic!("no count in {line}"))
        })
        .collect()
}

fn built(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

#[test]
fn generated_services_build_offline_and_answer() {
    enter_private_netns().expect("a private network namespace (needs root or CAP_SYS_ADMIN)");
    let root = tempfile::tempdir().expect("tmp");

    // --type service: go.micro.srv.hello, Hello.Call {name} → {msg}.
    let service_dir = generate_and_build(root.path(), &["hello"]);
    // --type api with a two-word name: go.micro.api.hello-web, HelloWeb.Call.
    let api_dir = generate_and_build(root.path(), &["--type", "api", "hello-web"]);
    // --type web: go.micro.web.hello, an axum router calling go.micro.srv.hello.
    generate_and_build(
        root.path(),
        &["--type", "web", "--alias", "hello", "hello-site"],
    );

    let service = Process::start_path("hello", built("hello"), &[], &[("RUST_LOG", "info")]);
    service.wait_for_log(
        "Registering node: go.micro.srv.hello-",
        Duration::from_secs(20),
    );
    let api = Process::start_path(
        "hello-web",
        built("hello-web"),
        &[],
        &[("RUST_LOG", "info")],
    );
    api.wait_for_log(
        "Registering node: go.micro.api.hello-web-",
        Duration::from_secs(20),
    );

    // micro call, as the generated README shows it.
    let called = eventually("micro call answers", Duration::from_secs(20), || {
        let output = micro(&[
            "call",
            "go.micro.srv.hello",
            "Hello.Call",
            r#"{"name":"John"}"#,
        ]);
        output.status.success().then_some(output)
    });
    let reply: serde_json::Value = serde_json::from_slice(&called.stdout).expect("JSON reply");
    assert_eq!(reply, serde_json::json!({"msg": "Hello John"}));
    let blank = micro(&["call", "go.micro.srv.hello", "Hello.Call", "{}"]);
    assert_eq!(blank.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&blank.stderr).contains("name cannot be blank (400"),
        "{}",
        String::from_utf8_lossy(&blank.stderr)
    );

    // micro api: the rpc handler for the service, the api handler for the API.
    let rpc_port = free_port();
    let rpc_gateway = Process::start(
        "micro api rpc",
        "micro",
        &[
            "api",
            "--handler=rpc",
            "--namespace=go.micro.srv",
            "--address",
            &format!("127.0.0.1:{rpc_port}"),
        ],
        &[("RUST_LOG", "info")],
    );
    rpc_gateway.wait_for_log("Listening on", Duration::from_secs(20));
    let reply = eventually(
        "micro api --handler=rpc answers",
        Duration::from_secs(20),
        || {
            let reply = curl(
                &format!("http://127.0.0.1:{rpc_port}/hello/call"),
                Some(r#"{"name":"John"}"#),
            );
            (reply.status == 200).then_some(reply)
        },
    );
    assert_eq!(reply.json(), serde_json::json!({"msg": "Hello John"}));

    // The streaming endpoints: `micro stream`, and a WebSocket through the
    // gateway (the query the first message, one text frame per reply).
    let streamed = micro(&[
        "stream",
        "go.micro.srv.hello",
        "Hello.Stream",
        r#"{"count":3}"#,
    ]);
    assert!(streamed.status.success(), "{streamed:?}");
    assert_eq!(
        counts(&String::from_utf8_lossy(&streamed.stdout)),
        [1, 2, 3]
    );
    let mut command = Command::new(binary("micro"));
    command
        .args([
            "stream",
            "go.micro.srv.hello",
            "Hello.PingPong",
            r#"{"stroke":7}"#,
        ])
        .env_remove("MICRO_REGISTRY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("micro stream");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"{\"stroke\":8}\n").expect("write");
    }
    let pinged = child.wait_with_output().expect("micro stream ends");
    assert!(pinged.status.success(), "{pinged:?}");
    let pongs: Vec<serde_json::Value> = String::from_utf8_lossy(&pinged.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(pongs.len(), 2, "{pongs:?}");
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{rpc_port}/hello/stream?count=2"
    ))
    .expect("request");
    request
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    let (mut ws, _) = tungstenite::connect(request).expect("a WebSocket through micro api");
    let mut frames = Vec::new();
    loop {
        match ws.read().expect("a frame") {
            tungstenite::Message::Text(text) => frames.push(text.to_string()),
            tungstenite::Message::Close(frame) => {
                assert_eq!(u16::from(frame.expect("close frame").code), 1000);
                break;
            }
            _ => {}
        }
        assert!(frames.len() <= 2, "{frames:?}");
    }
    assert_eq!(counts(&frames.join("\n")), [1, 2]);

    let api_port = free_port();
    let api_gateway = Process::start(
        "micro api api",
        "micro",
        &[
            "api",
            "--handler=api",
            "--address",
            &format!("127.0.0.1:{api_port}"),
        ],
        &[("RUST_LOG", "info")],
    );
    api_gateway.wait_for_log("Listening on", Duration::from_secs(20));
    let base = format!("http://127.0.0.1:{api_port}/hello-web/call");
    let reply = eventually(
        "micro api --handler=api answers",
        Duration::from_secs(20),
        || {
            let reply = curl(&format!("{base}?name=John"), None);
            (reply.status == 200).then_some(reply)
        },
    );
    assert_eq!(reply.json(), serde_json::json!({"message": "Hello John"}));
    let posted = curl(&base, Some(r#"{"name":"Jane"}"#));
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(posted.json(), serde_json::json!({"message": "Hello Jane"}));
    let blank = curl(&base, None);
    assert_eq!(blank.status, 400, "{blank:?}");
    assert_eq!(blank.json()["detail"], "name cannot be blank");

    // The client examples call by name through the registry.
    let client = cargo(
        &service_dir,
        &[
            "run",
            "--offline",
            "-q",
            "--example",
            "client",
            "--",
            "--name",
            "Bob",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&client.stdout).trim(), "Hello Bob");
    let client = cargo(
        &api_dir,
        &[
            "run",
            "--offline",
            "-q",
            "--example",
            "client",
            "--",
            "--name",
            "Bob",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&client.stdout).trim(),
        r#"{"message":"Hello Bob"}"#
    );

    // The web service calls the generated service by name.
    let site_port = free_port();
    let site = Process::start_path(
        "hello-site",
        built("hello-site"),
        &["--server_address", &format!("127.0.0.1:{site_port}")],
        &[("RUST_LOG", "info")],
    );
    site.wait_for_log(
        "Registering node: go.micro.web.hello-",
        Duration::from_secs(20),
    );
    let url = format!("http://127.0.0.1:{site_port}/hello/call?name=John");
    let reply = eventually("the web service answers", Duration::from_secs(20), || {
        let reply = curl(&url, None);
        (reply.status == 200).then_some(reply)
    });
    assert_eq!(reply.json(), serde_json::json!({"msg": "Hello John"}));
    let blank = curl(&format!("http://127.0.0.1:{site_port}/hello/call"), None);
    assert_eq!(blank.status, 400, "{blank:?}");

    for mut process in [service, api, rpc_gateway, api_gateway, site] {
        let status = process.terminate(Duration::from_secs(15));
        assert!(status.success(), "{} exited with {status}", process.name);
    }
}

#[test]
fn micro_new_refuses_bad_names_and_existing_directories() {
    let root = tempfile::tempdir().expect("tmp");
    for name in ["Hello", "micro", "9lives"] {
        let mut command = Command::new(binary("micro"));
        command.args(["new", name]).current_dir(root.path());
        let output = run_bounded(command, Duration::from_secs(30));
        assert_eq!(output.status.code(), Some(2), "{name}");
        assert!(!root.path().join(name).exists(), "{name} was created");
    }
    std::fs::create_dir(root.path().join("taken")).expect("mkdir");
    std::fs::write(root.path().join("taken/keep.txt"), "mine").expect("write");
    let mut command = Command::new(binary("micro"));
    command.args(["new", "taken"]).current_dir(root.path());
    let output = run_bounded(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut command = Command::new(binary("micro"));
    command
        .args(["new", "--micro_path", "/nonexistent", "ok"])
        .current_dir(root.path());
    let output = run_bounded(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--micro_path"));
}
