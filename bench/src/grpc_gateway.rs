//! R4's Go anchor for transcoding: grpc-gateway v1 in front of user-srv.
//!
//! The peer (`bench/grpc-gateway/main.go`) is built at run time in a temp
//! dir, offline in GOPATH mode like R2's grpc-go server, from Debian's
//! `golang-github-grpc-ecosystem-grpc-gateway-dev` (1.6.4): its
//! `protoc-gen-grpc-gateway` is built from the package's sources, then
//! `protoc` generates the Go stubs (`protoc-gen-go` 1.3, `plugins=grpc`) and
//! the gateway's handlers from `proto/user/user.proto`, the HTTP rule coming
//! from `bench/grpc-gateway/user.yaml` (the proto has no `google.api.http`
//! annotation). When a piece is missing, the peer is left out of R4 with one
//! line naming the packages to install.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::go::{go_build, go_prerequisites, run};

const GO_MAIN: &str = include_str!("../grpc-gateway/main.go");
const HTTP_RULES: &str = include_str!("../grpc-gateway/user.yaml");
const USER_PROTO: &str = include_str!("../../proto/user/user.proto");
/// The GOPATH import path of the gateway (its stubs under `/user`).
const GO_PACKAGE: &str = "grpc-gateway-user";
const PLUGIN: &str = "github.com/grpc-ecosystem/grpc-gateway/protoc-gen-grpc-gateway";
pub const INSTALL: &str = "apt-get install golang-go golang-google-grpc-dev golang-goprotobuf-dev \
     golang-github-grpc-ecosystem-grpc-gateway-dev protobuf-compiler";

/// The built gateway; its temp dir goes when this is dropped.
pub struct GoGateway {
    dir: PathBuf,
    pub binary: PathBuf,
    pub version: String,
    pub build_time: Duration,
}

impl Drop for GoGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks the tools and sources, builds the plugin, generates the stubs and
/// builds the gateway; `Err` says why the peer cannot run here.
pub fn build() -> Result<GoGateway, String> {
    go_prerequisites(&[
        "google.golang.org/grpc",
        "github.com/golang/protobuf/proto",
        "github.com/grpc-ecosystem/grpc-gateway/runtime",
        PLUGIN,
    ])?;
    let version = Command::new("dpkg-query")
        .args([
            "-W",
            "-f=${Version}",
            "golang-github-grpc-ecosystem-grpc-gateway-dev",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "(version unknown)".into());

    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("micro-bench-grpc-gateway-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut gateway = GoGateway {
        binary: dir.join(GO_PACKAGE),
        dir,
        version,
        build_time: Duration::ZERO,
    };
    let dir = gateway.dir.clone();
    let package_dir = dir.join("src").join(GO_PACKAGE);
    let proto_dir = dir.join("proto");
    let write = |path: PathBuf, text: &str| -> Result<(), String> {
        std::fs::create_dir_all(path.parent().expect("a parent dir"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(proto_dir.join("user/user.proto"), USER_PROTO)?;
    write(dir.join("user.yaml"), HTTP_RULES)?;
    write(package_dir.join("main.go"), GO_MAIN)?;
    let plugin = dir.join("protoc-gen-grpc-gateway");
    run(
        "go build protoc-gen-grpc-gateway",
        &mut go_build(&dir, &plugin, PLUGIN),
    )?;
    // Both plugins write user/user.pb{,.gw}.go under the package dir (the
    // proto has no go_package), so the stubs import as GO_PACKAGE/user.
    run(
        "protoc --go_out --grpc-gateway_out",
        Command::new("protoc")
            .arg("-I")
            .arg(&proto_dir)
            .arg(format!(
                "--plugin=protoc-gen-grpc-gateway={}",
                plugin.display()
            ))
            .arg(format!("--go_out=plugins=grpc:{}", package_dir.display()))
            .arg(format!(
                "--grpc-gateway_out=grpc_api_configuration={}:{}",
                dir.join("user.yaml").display(),
                package_dir.display()
            ))
            .arg("user/user.proto"),
    )?;
    run(
        "go build (GOPATH mode)",
        &mut go_build(&dir, &gateway.binary, GO_PACKAGE),
    )?;
    gateway.build_time = started.elapsed();
    Ok(gateway)
}
