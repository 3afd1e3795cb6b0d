//! Interop: a Python grpcio client generated from proto/user/user.proto
//! (grpcio-tools from PyPI, in a venv this test makes) calls user-srv at
//! /go.micro.srv.user.User/QueryUserByName and gets the user, with `pwd` empty.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use user_srv::password::Hasher;

/// A venv with grpcio and grpcio-tools, kept under the target dir between runs.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpcio-venv");
    let python = dir.join("bin/python");
    let ready = dir.join(".ready");
    if ready.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .expect("run python3 -m venv (apt-get install python3 python3-venv python3-pip)");
    assert!(status.success(), "python3 -m venv failed");
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio>=1.60",
            "grpcio-tools>=1.60",
        ])
        .output()
        .expect("pip");
    assert!(
        output.status.success(),
        "pip install grpcio grpcio-tools failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&ready, b"ok").expect("mark venv ready");
    python
}

const CLIENT: &str = r#"
import json, sys
import grpc
sys.path.insert(0, sys.argv[2])
import user_pb2, user_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
stub = user_pb2_grpc.UserStub(channel)
reply = stub.QueryUserByName(user_pb2.Request(userName="huohuo"), timeout=10)
print(json.dumps({
    "success": reply.success,
    "id": reply.user.id,
    "name": reply.user.name,
    "pwd": reply.user.pwd,
    "email": reply.user.email,
}))
try:
    stub.QueryUserByName(user_pb2.Request(userName="nobody"), timeout=10)
    print(json.dumps({"missing": "no error"}))
except grpc.RpcError as e:
    print(json.dumps({"missing": e.code().name, "detail": e.details()}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_queries_user_srv() {
    let python = tokio::task::spawn_blocking(venv).await.expect("venv");
    let work = tempfile::tempdir().expect("tmp");
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../proto");
    let generated = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(proto_root.join("user"))
        .arg(format!("--python_out={}", work.path().display()))
        .arg(format!("--grpc_python_out={}", work.path().display()))
        .arg(proto_root.join("user/user.proto"))
        .output()
        .expect("grpc_tools.protoc");
    assert!(
        generated.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let stub = std::fs::read_to_string(work.path().join("user_pb2_grpc.py")).expect("stub");
    assert!(
        stub.contains("/go.micro.srv.user.User/QueryUserByName"),
        "{stub}"
    );

    let store_dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", store_dir.path().join("user.db").display());
    let registry = support::topology::registry();
    let (srv, store) = support::topology::user_srv(registry, &url).await;
    let hash = Hasher::new(1, 1)
        .expect("hasher")
        .hash("a long password")
        .await
        .expect("hash");
    let created = store
        .create_user("huohuo", Some("huo@example.com"), &hash, 1)
        .await
        .expect("create");

    std::fs::write(work.path().join("client.py"), CLIENT).expect("write client");
    let output = tokio::process::Command::new(&python)
        .arg(work.path().join("client.py"))
        .arg(srv.address.to_string())
        .arg(work.path())
        .output()
        .await
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    let found: serde_json::Value =
        serde_json::from_str(lines.next().expect("first line")).expect("json");
    assert_eq!(found["success"], true);
    assert_eq!(found["id"], created.id);
    assert_eq!(found["name"], "huohuo");
    assert_eq!(found["pwd"], "", "pwd must never be set");
    assert_eq!(found["email"], "", "an email is shown to its owner only");
    let missing: serde_json::Value =
        serde_json::from_str(lines.next().expect("second line")).expect("json");
    assert_eq!(missing["missing"], "NOT_FOUND", "{missing}");
    let detail = missing["detail"].as_str().expect("detail");
    let err = micro_errors::MicroError::parse(detail).expect("go-micro error JSON");
    assert_eq!(err.code, 404);
    assert_eq!(err.id, "go.micro.srv.user");
    srv.stop().await;
}
