//! Interop with an independent peer: a small Go program (`go/peer.go`) built
//! at test time from Debian's `golang-go`, `golang-google-grpc-dev` and
//! `golang-goprotobuf-dev` in GOPATH mode, offline, with go-micro v2's json
//! codec. It calls the toolkit's user-srv as go-micro's rpc handler and
//! `micro call` do, and serves a greeter without reflection that `micro
//! call` and the rpc handler must reach. It also opens streams as go-micro's
//! client does and serves the greeter's `Stream` and `PingPong`
//! (`tests/streams.rs`: both ways, no registry).
//!
//! [`scenario`] is the whole exchange; `tests/etcd.rs` and `tests/mdns.rs`
//! run it on each registry. A missing `go` (or anything else the peer needs)
//! fails the test, naming the Debian packages to install.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use micro_registry::{Node, Service};
pub use topology_tests::{Process, binary, eventually, free_port, secret};

/// Where Debian's golang-*-dev packages put their Go sources.
const DEBIAN_GOCODE: &str = "/usr/share/gocode";
const PEER_MAIN: &str = include_str!("../go/peer.go");
/// go-micro's http broker, both halves (`gopeer broker-subscribe`,
/// `gopeer broker-publish`): standard library only.
const PEER_BROKER: &str = include_str!("../go/broker.go");
/// go-micro's nats broker, both halves, on nats.go (its own program, so the
/// other peers need no nats.go).
const GONATS_MAIN: &str = include_str!("../gonats/main.go");
const GREETER_PROTO: &str = include_str!("../../../proto/greeter/greeter.proto");
const USER_PROTO: &str = include_str!("../../../proto/user/user.proto");
const GO_MICRO_GREETER: &str = include_str!("../../../testdata/go-micro-v2/etcd/value.json");
pub const INSTALL: &str =
    "apt-get install golang-go golang-google-grpc-dev golang-goprotobuf-dev protobuf-compiler";

/// The built Go peer; its temp dir (sources, binary) goes with the process.
#[derive(Debug)]
pub struct GoPeer {
    _dir: tempfile::TempDir,
    pub binary: PathBuf,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn run(what: &str, command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} ({INSTALL})"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Go peer, built once per test process. Without Go the test fails
/// and names the packages to install: a missing peer is never a pass.
pub fn go_peer() -> &'static GoPeer {
    static PEER: OnceLock<GoPeer> = OnceLock::new();
    PEER.get_or_init(|| {
        assert!(
            on_path("go"),
            "Go is not installed; the Go interop tests need it ({INSTALL})"
        );
        build()
    })
}

fn build() -> GoPeer {
    for tool in ["protoc", "protoc-gen-go"] {
        assert!(on_path(tool), "{tool} is not on the PATH ({INSTALL})");
    }
    for package in [
        "google.golang.org/grpc",
        "github.com/golang/protobuf/jsonpb",
    ] {
        assert!(
            Path::new(DEBIAN_GOCODE).join("src").join(package).is_dir(),
            "no {package} under {DEBIAN_GOCODE}/src ({INSTALL})"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let package = dir.path().join("src/gopeer");
    let protos = dir.path().join("proto");
    for (path, text) in [
        (package.join("main.go"), PEER_MAIN),
        (package.join("broker.go"), PEER_BROKER),
        (protos.join("greeter/greeter.proto"), GREETER_PROTO),
        (protos.join("user/user.proto"), USER_PROTO),
    ] {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
    // protoc-gen-go writes <dir>/<name>.pb.go (the protos have no
    // go_package), so the stubs import as gopeer/greeter and gopeer/user.
    for proto in ["greeter/greeter.proto", "user/user.proto"] {
        run(
            "protoc --go_out=plugins=grpc",
            Command::new("protoc")
                .arg("-I")
                .arg(&protos)
                .arg(format!("--go_out=plugins=grpc:{}", package.display()))
                .arg(proto),
        );
    }
    let binary = go_build(dir.path(), "gopeer");
    GoPeer { _dir: dir, binary }
}

/// `go build` of package `name` under `gopath/src`, offline in GOPATH mode
/// with Debian's Go sources: the binary `gopath/<name>`.
fn go_build(gopath: &Path, name: &str) -> PathBuf {
    let binary = gopath.join(name);
    let mut go = Command::new("go");
    go.current_dir(gopath)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(name)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .env("GOPATH", format!("{}:{DEBIAN_GOCODE}", gopath.display()));
    // Go keeps its build cache under $HOME; without one, in the temp dir.
    if std::env::var_os("HOME").is_none() && std::env::var_os("GOCACHE").is_none() {
        go.env("GOCACHE", gopath.join("gocache"));
    }
    let started = Instant::now();
    run("go build (GOPATH mode)", &mut go);
    eprintln!("built the Go program {name} in {:?}", started.elapsed());
    binary
}

/// What the NATS peer needs besides Go.
pub const INSTALL_NATS: &str =
    "apt-get install golang-go golang-github-nats-io-go-nats-dev nats-server";

/// The Go NATS peer (`gonats/main.go`: go-micro's nats broker on Debian's
/// nats.go), built once per test process. Without Go or nats.go the test
/// fails and names the packages to install.
pub fn go_nats_peer() -> &'static GoPeer {
    static PEER: OnceLock<GoPeer> = OnceLock::new();
    PEER.get_or_init(|| {
        assert!(
            on_path("go"),
            "Go is not installed; the NATS interop tests need it ({INSTALL_NATS})"
        );
        let package = "github.com/nats-io/nats.go";
        assert!(
            Path::new(DEBIAN_GOCODE).join("src").join(package).is_dir(),
            "no {package} under {DEBIAN_GOCODE}/src ({INSTALL_NATS})"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let main = dir.path().join("src/gonats/main.go");
        std::fs::create_dir_all(main.parent().expect("parent")).expect("mkdir");
        std::fs::write(&main, GONATS_MAIN).expect("write");
        let binary = go_build(dir.path(), "gonats");
        GoPeer { _dir: dir, binary }
    })
}

/// The Go greeter, serving without reflection; stopped (by PID) on drop.
#[derive(Debug)]
pub struct GoGreeter {
    child: Child,
    pub address: String,
}

/// Starts `gopeer MODE` and waits (bounded) for its `READY <address>`.
fn start_ready(peer: &GoPeer, mode: &str) -> (Child, String) {
    {
        let mut child = Command::new(&peer.binary)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Go greeter");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("gopeer {mode} prints READY"));
        let address = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        (child, address)
    }
}

impl GoGreeter {
    pub fn start(peer: &GoPeer) -> GoGreeter {
        let (child, address) = start_ready(peer, "greeter");
        GoGreeter { child, address }
    }

    /// Its registry record, as go-micro v2.9.1 writes it (the golden value,
    /// with this node's address and id).
    pub fn registration(&self, registry: &str) -> Service {
        let mut service: Service =
            serde_json::from_str(GO_MICRO_GREETER).expect("golden go-micro record");
        let node: &mut Node = &mut service.nodes[0];
        node.address = self.address.clone();
        node.id = format!("go.micro.srv.greeter-go-{}", std::process::id());
        node.metadata.insert("registry".into(), registry.into());
        service
    }

    /// Its registry record with its streaming methods, as go-micro v2.9.1
    /// registers a service serving `Greeter.Stream` and `Greeter.PingPong`:
    /// their endpoints marked `"stream": "true"` (gm:server/grpc/extractor.go).
    pub fn streaming_registration(&self, registry: &str) -> Service {
        let mut service = self.registration(registry);
        for name in ["Greeter.Stream", "Greeter.PingPong"] {
            service.endpoints.push(micro_registry::Endpoint {
                name: name.into(),
                request: None,
                response: None,
                metadata: [("stream".to_string(), "true".to_string())].into(),
            });
        }
        service
    }
}

impl Drop for GoGreeter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The record go-micro v2's `web.NewService(web.Name("go.micro.web.NAME"))`
/// registers (web/service.go `genSrv`): name, version, one node with its id
/// and `host:port`, its options' metadata (none by default), no endpoints.
const GO_MICRO_WEB_RECORD: &str = r#"{"name":"","version":"latest","metadata":null,"endpoints":null,"nodes":[{"id":"","address":"","metadata":null}]}"#;

/// The Go web service (`gopeer web`, plain net/http); stopped (by PID) on
/// drop.
#[derive(Debug)]
pub struct GoWeb {
    child: Child,
    pub address: String,
}

impl GoWeb {
    pub fn start(peer: &GoPeer) -> GoWeb {
        let (child, address) = start_ready(peer, "web");
        GoWeb { child, address }
    }

    /// Its registry record as go-micro v2's web package writes it, as
    /// service `name` (`go.micro.web.NAME`).
    pub fn registration(&self, name: &str) -> Service {
        let mut service: Service =
            serde_json::from_str(GO_MICRO_WEB_RECORD).expect("go-micro web record");
        service.name = name.to_string();
        let node: &mut Node = &mut service.nodes[0];
        node.address = self.address.clone();
        node.id = format!("{name}-go-{}", std::process::id());
        service
    }
}

impl Drop for GoWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `gopeer call` printed, and whether it succeeded.
#[derive(Debug)]
pub struct GoCall {
    pub ok: bool,
    pub stdout: String,
}

impl GoCall {
    /// The reply JSON (the first line).
    pub fn json(&self) -> serde_json::Value {
        let first = self.stdout.lines().next().unwrap_or_default();
        serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// One call as go-micro's rpc handler makes it: `body` as
/// `application/grpc+json`, `headers` ("Name: value") as metadata.
pub fn go_call(
    peer: &GoPeer,
    address: &str,
    path: &str,
    body: &str,
    headers: &[&str],
    check: Option<&str>,
) -> GoCall {
    let mut command = Command::new(&peer.binary);
    command.args(["call", "-address", address, "-path", path, "-body", body]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(check) = check {
        command.args(["-check", check]);
    }
    let output = command.output().expect("run gopeer call");
    GoCall {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

/// One stream as go-micro v2's grpc client opens it (`gopeer stream`):
/// `body` then `more` as `application/grpc+json` messages, half-closed only
/// if `close`. `stdout` is one reply a line, then `END OK` or `ERROR ...`.
pub fn go_stream(
    peer: &GoPeer,
    address: &str,
    path: &str,
    body: &str,
    more: &[&str],
    close: bool,
) -> GoCall {
    let mut command = Command::new(&peer.binary);
    command.args(["stream", "-address", address, "-path", path, "-body", body]);
    for message in more {
        command.args(["-send", message]);
    }
    if close {
        command.arg("-close");
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("run gopeer stream");
    GoCall {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

/// `micro <args>` fed `lines` on stdin, each after `pause` (time passing
/// mid-stream is the point: nothing to wait for instead), then the end of
/// stdin: exit code, stdout, stderr.
pub fn micro_with_stdin_paced(
    args: &[&str],
    lines: &[&str],
    pause: Duration,
) -> (Option<i32>, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(binary("micro"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run micro");
    let mut input = child.stdin.take().expect("stdin");
    for line in lines {
        std::thread::sleep(pause);
        // A failed write (micro already ended) shows in its exit and stderr.
        if writeln!(input, "{line}").is_err() {
            break;
        }
    }
    drop(input);
    let output = child.wait_with_output().expect("micro ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `micro <args>` with `stdin` as its input: exit code, stdout, stderr.
pub fn micro_with_stdin(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(binary("micro"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("MICRO_REGISTRY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run micro");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    // The end of stdin: micro half-closes.
    drop(input);
    let output = child.wait_with_output().expect("micro ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `reply` (JSON as received) printed as go-micro v2's `micro call` prints
/// it: Go's own `json.Indent` with a tab, then a newline, run by the peer.
pub fn go_micro_call_output(peer: &GoPeer, reply: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(&peer.binary)
        .arg("indent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gopeer indent");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(reply.as_bytes())
        .expect("write the reply");
    let output = child.wait_with_output().expect("gopeer indent");
    assert!(
        output.status.success(),
        "gopeer indent {reply:?}: {output:?}"
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// `micro <args>`: whether it succeeded, then stdout if it did, stderr if not.
pub fn micro(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary("micro"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run micro");
    let ok = output.status.success();
    let text = if ok { &output.stdout } else { &output.stderr };
    (ok, String::from_utf8_lossy(text).into_owned())
}

/// An HTTP answer from curl.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// `curl -X POST` with a JSON body and extra headers.
pub fn post(url: &str, body: &str, headers: &[&str]) -> HttpReply {
    let mut command = Command::new("curl");
    command.args(["-sS", "-m", "15", "-w", "\n%{http_code}", "-X", "POST"]);
    command.args(["-H", "Content-Type: application/json", "-d", body]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    HttpReply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// Everything a scenario needs from the registry it runs on.
pub trait Registry {
    /// The flags that point `micro`, user-srv at it.
    fn flags(&self) -> Vec<String>;
    /// Registers `service` (the Go greeter's record) in it.
    fn register(&self, service: &Service);
    /// The address of a node of `service`, once one is registered.
    fn address_of(&self, service: &str) -> Option<String>;
    fn name(&self) -> &'static str;
}

/// A real registry backend driven from a test's own runtime: what both
/// scenarios (etcd, mDNS) run on.
#[derive(Debug)]
pub struct Live<R> {
    pub runtime: tokio::runtime::Runtime,
    pub registry: R,
    /// The flags that point `micro` and user-srv at `registry`.
    pub flags: Vec<String>,
    pub name: &'static str,
}

impl<R: micro_registry::Registry> Registry for Live<R> {
    fn flags(&self) -> Vec<String> {
        self.flags.clone()
    }

    fn register(&self, service: &Service) {
        self.runtime
            .block_on(self.registry.register(
                service,
                micro_registry::RegisterOptions::with_ttl(std::time::Duration::from_secs(60)),
            ))
            .unwrap_or_else(|e| panic!("register the Go greeter in {}: {e}", self.name));
    }

    fn address_of(&self, service: &str) -> Option<String> {
        let found = self
            .runtime
            .block_on(self.registry.get_service(service))
            .ok()?;
        found
            .into_iter()
            .flat_map(|s| s.nodes)
            .next()
            .map(|n| n.address)
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// The whole exchange on one registry.
pub fn scenario(registry: &dyn Registry) {
    let peer = go_peer();
    let flags = registry.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let data = tempfile::tempdir().expect("tmp");
    let secret = secret();

    // A go-micro service: the Go greeter, no reflection, registered as
    // go-micro registers.
    let greeter = GoGreeter::start(peer);
    registry.register(&greeter.registration(registry.name()));

    let data_dir = data.path().display().to_string();
    let mut srv_args = flags.clone();
    srv_args.extend(["--server_address=127.0.0.1:0", "--data_dir", &data_dir]);
    let srv = Process::start(
        "user-srv",
        "user-srv",
        &srv_args,
        &[("MICRO_AUTH_SECRET", secret.as_str())],
    );
    let srv_address = eventually("user-srv registered", Duration::from_secs(30), || {
        registry.address_of("go.micro.srv.user")
    });

    // (a) go-micro → Rust: JSON calls, jsonpb reads the replies; headers as metadata.
    let user_path = |method: &str| format!("/go.micro.srv.user.User/{method}");
    let register = go_call(
        peer,
        &srv_address,
        &user_path("Register"),
        r#"{"userName":"gopher","userPwd":"correct horse battery"}"#,
        &[],
        Some("user.Response"),
    );
    assert!(register.ok, "{register:?}");
    let reply = register.json();
    assert_eq!(reply["success"], true, "{reply}");
    // jsonpb's form: proto field names, int64 as a string.
    assert!(reply["user"]["id"].is_string(), "{reply}");
    assert_eq!(reply["user"]["name"], "gopher", "{reply}");
    assert!(reply["user"].get("pwd").is_none(), "{reply}");
    assert!(register.stdout.contains("CHECK "), "{register:?}");

    // A fresh token before each authenticated call (a password change may
    // revoke earlier ones).
    let login = |password: &str| {
        let login = go_call(
            peer,
            &srv_address,
            &user_path("Login"),
            &format!(r#"{{"userName":"gopher","userPwd":"{password}"}}"#),
            &[],
            Some("user.LoginResponse"),
        );
        assert!(login.ok, "{login:?}");
        assert!(login.json()["expiresAt"].is_string(), "{login:?}");
        login.json()["token"].as_str().expect("token").to_string()
    };
    let token = login("correct horse battery");
    let bearer = format!("Authorization: Bearer {token}");

    let change = |old: &str, new: &str| format!(r#"{{"oldPwd":"{old}","newPwd":"{new}"}}"#);
    let unauthenticated = go_call(
        peer,
        &srv_address,
        &user_path("ChangePassword"),
        &change("correct horse battery", "battery staple horse"),
        &["Accept: */*"],
        None,
    );
    assert!(!unauthenticated.ok, "{unauthenticated:?}");
    assert!(
        unauthenticated.stdout.starts_with("ERROR Unauthenticated"),
        "{unauthenticated:?}"
    );
    let changed = go_call(
        peer,
        &srv_address,
        &user_path("ChangePassword"),
        &change("correct horse battery", "battery staple horse"),
        &[bearer.as_str(), "Accept: */*", "X-Request-Id: go-1"],
        Some("user.Response"),
    );
    assert!(changed.ok, "{changed:?}");
    assert_eq!(changed.json()["success"], true, "{changed:?}");

    // go-micro's api handler also forwards Content-Length (go-micro#1079):
    // h2 resets such a stream (see docs/interop.md). Pinned here so a change
    // in h2 shows.
    let with_length = go_call(
        peer,
        &srv_address,
        &user_path("QueryUserByName"),
        r#"{"userName":"gopher"}"#,
        &["Content-Length: 21"],
        None,
    );
    assert!(!with_length.ok, "{with_length:?}");
    assert!(
        with_length.stdout.contains("PROTOCOL_ERROR"),
        "{with_length:?}"
    );

    // (b) Rust → go-micro: `micro call` reaches the greeter without reflection.
    let call = |extra: &[&str], service: &str, endpoint: &str, body: &str| {
        let mut args = flags.clone();
        args.push("call");
        args.extend_from_slice(extra);
        args.extend([service, endpoint, body]);
        micro(&args)
    };
    // The reply as received (`--output text`), then as go-micro's `micro
    // call` would print it (Go's json.Indent, run by the peer).
    let (ok, raw) = call(
        &["--output", "text"],
        "go.micro.srv.greeter",
        "Greeter.Hello",
        r#"{"name":"rust"}"#,
    );
    assert!(ok, "{raw}");
    let raw = raw.strip_suffix('\n').expect("one line");
    assert!(raw.contains("Hello rust from go"), "{raw}");
    let (ok, out) = call(
        &[],
        "go.micro.srv.greeter",
        "Greeter.Hello",
        r#"{"name":"rust"}"#,
    );
    assert!(ok, "{out}");
    assert_eq!(out, go_micro_call_output(peer, raw));
    let (ok, out) = call(
        &["--metadata", "Authorization=Bearer g", "--output", "text"],
        "go.micro.srv.greeter",
        "Greeter.Hello",
        r#"{"name":"rust"}"#,
    );
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "{\"msg\":\"Hello rust from go (authorization: Bearer g)\"}\n"
    );
    let (ok, out) = call(
        &["--address", greeter.address.as_str()],
        "go.micro.srv.greeter",
        "Greeter.Hello",
        r#"{"name":"direct"}"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains("Hello direct from go"), "{out}");

    // `micro stream` through the registry: the Go greeter's PingPong lasts
    // longer than the client's attempt timeout, which grpc-go would apply
    // to the whole stream if it were sent as the stream's grpc-timeout.
    let mut args = flags.clone();
    args.extend([
        "--client_attempt_timeout=300ms",
        "stream",
        "go.micro.srv.greeter",
        "Greeter.PingPong",
        r#"{"name":"a"}"#,
    ]);
    let (code, out, err) =
        micro_with_stdin_paced(&args, &[r#"{"name":"b"}"#], Duration::from_secs(1));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "{\"msg\":\"pong a\"}\n{\"msg\":\"pong b\"}\n");

    // `micro call --metadata` reaches an authenticated endpoint.
    let metadata = format!("authorization=Bearer {}", login("battery staple horse"));
    let (ok, out) = call(
        &[],
        "go.micro.srv.user",
        "User.ChangePassword",
        &change("battery staple horse", "horse staple battery"),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("401"), "{out}");
    let (ok, out) = call(
        &["--metadata", metadata.as_str()],
        "go.micro.srv.user",
        "User.ChangePassword",
        &change("battery staple horse", "horse staple battery"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("\"success\": true"), "{out}");

    // (c) The rpc handler: the Go greeter with JSON, user-srv with the
    // Authorization header as metadata.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut api_args = flags.clone();
    api_args.extend([
        "api",
        "--handler=rpc",
        "--namespace=go.micro.srv",
        "--address",
        address.as_str(),
    ]);
    let mut gateway = Process::start("micro api rpc", "micro", &api_args, &[]);
    let url = |path: &str| format!("http://{address}{path}");
    let hello = eventually(
        "the rpc handler reaches the Go greeter",
        Duration::from_secs(30),
        || {
            let reply = post(
                &url("/greeter/greeter/hello"),
                r#"{"name":"gw"}"#,
                &["Authorization: Bearer h"],
            );
            (reply.status == 200).then_some(reply)
        },
    );
    assert_eq!(
        hello.body,
        r#"{"msg":"Hello gw from go (authorization: Bearer h)"}"#
    );
    let body = change("horse staple battery", "staple battery horse");
    let bearer = format!("Authorization: Bearer {}", login("horse staple battery"));
    let denied = post(&url("/user/user/change-password"), &body, &[]);
    assert_eq!(denied.status, 401, "{denied:?}");
    let allowed = post(
        &url("/user/user/change-password"),
        &body,
        &[bearer.as_str()],
    );
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(allowed.body.contains(r#""success":true"#), "{allowed:?}");

    assert!(gateway.terminate(Duration::from_secs(20)).success());

    // (d) `micro web`'s call form takes `micro call`'s path: the Go greeter
    // (no reflection) answers through it.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut web_args = flags.clone();
    web_args.extend(["web", "--address", address.as_str()]);
    let mut web = Process::start("micro web", "micro", &web_args, &[]);
    let answer = eventually(
        "micro web calls the Go greeter",
        Duration::from_secs(30),
        || {
            let reply = post(
                &format!("http://{address}/api/call"),
                r#"{"service":"go.micro.srv.greeter","endpoint":"Greeter.Hello","request":"{\"name\":\"web\"}","metadata":{"Authorization":"Bearer w"}}"#,
                &[],
            );
            (reply.status == 200).then_some(reply)
        },
    );
    let answer: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(
        answer["reply"]["msg"], "Hello web from go (authorization: Bearer w)",
        "{answer}"
    );
    assert!(web.terminate(Duration::from_secs(20)).success());
    drop(srv);
    drop(greeter);
}

/// `micro FLAGS... subscribe EXTRA... TOPIC` (flags: the registry and the
/// broker), returned once it has logged its subscription, with the lines
/// it prints (one per message).
pub fn micro_subscribe(
    flags: &[&str],
    extra: &[&str],
    topic: &str,
) -> (
    micro_testing::process::ChildGuard,
    micro_testing::process::OutputLines,
) {
    use micro_testing::process::{ChildGuard, OutputLines};
    let mut child = ChildGuard::spawn(
        Command::new(binary("micro"))
            .args(flags)
            .arg("subscribe")
            .args(extra)
            .arg(topic)
            .env_remove("RUST_LOG")
            .env_remove("MICRO_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("micro subscribe");
    let lines = OutputLines::read(child.stdout.take().expect("stdout"));
    let mut log = OutputLines::read(child.stderr.take().expect("stderr"));
    log.wait_for_line("Subscribed to", Instant::now() + Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    (child, lines)
}
