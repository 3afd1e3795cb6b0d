//! Building the Go peers (grpc-go, grpc-gateway) from Debian's packages:
//! the tools and sources they need, an offline GOPATH-mode `go build`, and
//! running a build step. Imports no scenario.

use std::path::Path;
use std::process::Command;

/// Where Debian's golang-*-dev packages put their Go sources (a GOPATH root).
pub(crate) const DEBIAN_GOCODE: &str = "/usr/share/gocode";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Runs `command`; on failure returns its first stderr lines.
pub(crate) fn run(what: &str, command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let head: Vec<&str> = stderr.lines().take(3).collect();
    Err(format!(
        "{what} failed ({}): {}",
        output.status,
        head.join(" / ")
    ))
}

/// `go`, `protoc` and `protoc-gen-go` on the PATH and these Go packages
/// under Debian's GOPATH root; `Err` names what is missing.
pub(crate) fn go_prerequisites(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = ["go", "protoc", "protoc-gen-go"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if !missing.is_empty() {
        return Err(format!("not on the PATH: {}", missing.join(", ")));
    }
    let gocode = Path::new(DEBIAN_GOCODE);
    for package in packages {
        if !gocode.join("src").join(package).is_dir() {
            return Err(format!("no {package} under {DEBIAN_GOCODE}/src"));
        }
    }
    Ok(())
}

/// A `go build` in GOPATH mode with only `dir` and Debian's sources, offline.
pub(crate) fn go_build(dir: &Path, output: &Path, package: &str) -> Command {
    let mut go = Command::new("go");
    go.current_dir(dir)
        .args(["build", "-o"])
        .arg(output)
        .arg(package)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOPATH", format!("{}:{DEBIAN_GOCODE}", dir.display()))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0");
    // Go's build cache lives under $HOME; without a home, a throw-away one.
    if std::env::var_os("GOCACHE").is_none()
        && std::env::var_os("XDG_CACHE_HOME").is_none()
        && std::env::var_os("HOME").is_none()
    {
        go.env("GOCACHE", dir.join("gocache"));
    }
    go
}
