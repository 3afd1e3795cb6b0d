//! The deployment files parse and say what docs/deploy.md says: every
//! Kubernetes Deployment probes liveness on the admin listener's
//! `/health/live` and readiness through gRPC health or `/health/ready`, on the
//! ports the binary is told to listen on; every systemd unit runs a binary of
//! this workspace, hardened, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The binaries a unit or a pod may run.
const BINARIES: &[&str] = &["user-srv", "user-api", "user-web", "micro"];

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// Every YAML document of `path`, parsed by PyYAML (Debian python3-yaml).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .expect("run python3 (apt-get install python3 python3-yaml)");
    assert!(
        output.status.success(),
        "{} is not valid YAML (or python3-yaml is missing: apt-get install python3-yaml): {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).expect("JSON from python") {
        Value::Array(docs) => docs,
        other => panic!("{other}"),
    }
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

fn port_named(container: &Value, name: &str) -> Option<u64> {
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
}

#[test]
fn kubernetes_manifests_probe_the_health_endpoints() {
    let dir = deploy().join("k8s");
    let manifests = files(&dir, "yaml");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("read");
    let mut deployments = Vec::new();
    for path in &manifests {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        if name != "kustomization.yaml" {
            assert!(
                kustomization.contains(&format!("- {name}")),
                "kustomization.yaml does not list {name}"
            );
        }
        for doc in yaml_documents(path) {
            assert!(doc["kind"].is_string(), "{name}: a document without kind");
            if doc["kind"] == "Deployment" {
                deployments.push((name.to_string(), doc));
            }
        }
    }
    let mut seen = Vec::new();
    for (file, deployment) in &deployments {
        let spec = &deployment["spec"];
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{file}: a rolling restart must keep every pod until its successor is ready"
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
        for container in pod["containers"].as_array().expect("containers") {
            let command = container["command"][0].as_str().expect("command");
            let binary = command.rsplit('/').next().unwrap_or_default();
            assert!(BINARIES.contains(&binary), "{file}: runs {command}");
            seen.push(binary.to_string());

            let admin = env_value(container, "MICRO_ADMIN_ADDRESS")
                .unwrap_or_else(|| panic!("{file}: no MICRO_ADMIN_ADDRESS"));
            let admin_port: u64 = admin
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{file}: admin address {admin}"));
            assert!(
                !admin.starts_with("127."),
                "{file}: the kubelet cannot reach {admin}"
            );
            assert_eq!(port_named(container, "admin"), Some(admin_port), "{file}");

            let live = &container["livenessProbe"]["httpGet"];
            assert_eq!(live["path"], "/health/live", "{file}");
            assert_eq!(live["port"], "admin", "{file}");

            let ready = &container["readinessProbe"];
            if let Some(port) = ready["grpc"]["port"].as_u64() {
                // gRPC health on the port the server listens on.
                let listen = env_value(container, "MICRO_SERVER_ADDRESS")
                    .unwrap_or_else(|| panic!("{file}: no MICRO_SERVER_ADDRESS"));
                assert_eq!(listen, format!(":{port}"), "{file}");
                let advertise = env_value(container, "MICRO_SERVER_ADVERTISE").unwrap_or_default();
                assert_eq!(advertise, format!("$(POD_IP):{port}"), "{file}");
            } else {
                assert_eq!(ready["httpGet"]["path"], "/health/ready", "{file}");
                assert_eq!(ready["httpGet"]["port"], "admin", "{file}");
            }
            assert_eq!(
                container["securityContext"]["allowPrivilegeEscalation"], false,
                "{file}"
            );
        }
    }
    seen.sort();
    assert_eq!(seen, ["micro", "user-api", "user-srv", "user-web"]);
}

#[test]
fn systemd_units_run_our_binaries_hardened() {
    let units = files(&deploy().join("systemd"), "service");
    let mut seen = Vec::new();
    for unit in &units {
        let text = std::fs::read_to_string(unit).expect("read");
        let name = unit.display();
        let settings: Vec<(&str, &str)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |key: &str| -> Vec<&str> {
            settings
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .collect()
        };
        let exec = get("ExecStart");
        assert_eq!(exec.len(), 1, "{name}");
        let binary = exec[0]
            .split_whitespace()
            .next()
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or_default();
        assert!(BINARIES.contains(&binary), "{name}: runs {}", exec[0]);
        seen.push(binary.to_string());
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
            (
                "RestrictAddressFamilies",
                "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
            ),
            ("SystemCallFilter", "@system-service"),
            ("KillSignal", "SIGTERM"),
            ("Restart", "on-failure"),
        ] {
            assert!(get(key).contains(&value), "{name}: {key}={value} missing");
        }
        let admin = get("Environment")
            .into_iter()
            .find_map(|e| e.strip_prefix("MICRO_ADMIN_ADDRESS="))
            .unwrap_or_else(|| panic!("{name}: no admin listener"));
        assert!(
            admin.starts_with("127.0.0.1:"),
            "{name}: the admin listener stays on loopback"
        );
    }
    seen.sort();
    assert_eq!(seen, ["micro", "user-api", "user-srv", "user-web"]);
}
