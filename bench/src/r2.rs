//! R2: a toolkit server vs grpc-go's helloworld server, same proto, same load.
//!
//! The grpc-go server (`bench/grpc-go/main.go`) is built at run time in a
//! temp dir, from Debian's `golang-go` and `golang-google-grpc-dev` in GOPATH
//! mode, its stubs generated from the toolkit's greeter proto by `protoc` and
//! `protoc-gen-go` 1.3 (`plugins=grpc`, Debian `golang-goprotobuf-dev`). Both
//! servers run on the server core and are driven by the same raw tonic client,
//! so only the server differs. When a piece is missing, R2 is skipped with one
//! line saying what to install.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use micro_testing::greeter::Request;
use micro_testing::greeter::greeter_client::GreeterClient;

use crate::fixtures::{GRPC_SHAPES, Plan, grpc_server};
use crate::go::{DEBIAN_GOCODE, go_build, go_prerequisites, run};
use crate::load::{self, GrpcClient, Timing};
use crate::proc::Proc;
use crate::report::{self, PeerRounds};
use crate::servers::Flavor;
use crate::stats::Spread;

const GO_MAIN: &str = include_str!("../grpc-go/main.go");
const GREETER_PROTO: &str = include_str!("../../proto/greeter/greeter.proto");
/// The GOPATH import path of the Go server (and its stubs under `/greeter`).
const GO_PACKAGE: &str = "grpc-go-greeter";
const INSTALL: &str =
    "apt-get install golang-go golang-google-grpc-dev golang-goprotobuf-dev protobuf-compiler";

/// Full mode runs fewer rounds here than elsewhere to stay within its budget.
const FULL_ROUNDS: usize = 3;

/// The built grpc-go server; its temp dir goes when this is dropped.
struct GoServer {
    dir: PathBuf,
    binary: PathBuf,
    go_version: String,
    grpc_version: String,
    build_time: Duration,
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks the tools and sources, generates the stubs and builds the server;
/// `Err` says why R2 cannot run here.
fn build_go_server() -> Result<GoServer, String> {
    go_prerequisites(&["google.golang.org/grpc", "github.com/golang/protobuf/proto"])?;
    let gocode = Path::new(DEBIAN_GOCODE);
    let grpc_version =
        std::fs::read_to_string(gocode.join("src/google.golang.org/grpc/version.go"))
            .ok()
            .and_then(|v| {
                v.lines()
                    .find_map(|l| l.trim().strip_prefix("const Version = "))
                    .map(|s| s.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "(version unknown)".into());
    let go_version = run("go version", Command::new("go").arg("version"))?;

    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("micro-bench-grpc-go-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = GoServer {
        binary: dir.join(GO_PACKAGE),
        dir,
        go_version,
        grpc_version,
        build_time: Duration::ZERO,
    };
    let package_dir = server.dir.join("src").join(GO_PACKAGE);
    let proto_dir = server.dir.join("proto");
    let write = |path: PathBuf, text: &str| -> Result<(), String> {
        std::fs::create_dir_all(path.parent().expect("a parent dir"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(proto_dir.join("greeter/greeter.proto"), GREETER_PROTO)?;
    write(package_dir.join("main.go"), GO_MAIN)?;
    // protoc-gen-go 1.3 writes greeter/greeter.pb.go under the output dir
    // (the proto has no go_package), so the stubs import as GO_PACKAGE/greeter.
    run(
        "protoc --go_out=plugins=grpc",
        Command::new("protoc")
            .arg("-I")
            .arg(&proto_dir)
            .arg(format!("--go_out=plugins=grpc:{}", package_dir.display()))
            .arg("greeter/greeter.proto"),
    )?;
    run(
        "go build (GOPATH mode)",
        &mut go_build(&server.dir, &server.binary, GO_PACKAGE),
    )?;
    server.build_time = started.elapsed();
    Ok(server)
}

/// One Hello through a raw tonic channel; the reply's message.
async fn hello(addr: SocketAddr) -> String {
    let mut client = GreeterClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    client
        .hello(Request {
            name: "huohuo".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Hello on {addr}: {e}"))
        .into_inner()
        .msg
}

/// CPU time (user + system, all threads) a process has used so far.
pub(crate) fn cpu_time(pid: &str, tick: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field
    // 3, utime and stime fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / tick)
}

/// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`, else 100).
pub(crate) fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds the server and this process (the load generator) used in the
/// measured window of a round.
#[derive(Clone, Copy, Debug)]
struct WindowCpu {
    server: f64,
    load: f64,
}

/// Samples both at the start and end of the measured window of a round that
/// starts now; the connections' set-up (a few ms) shifts the window slightly.
fn sample_window(
    server_pid: u32,
    timing: Timing,
    tick: f64,
) -> std::thread::JoinHandle<Option<WindowCpu>> {
    let server = server_pid.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(timing.warmup);
        let (s0, l0) = (cpu_time(&server, tick)?, cpu_time("self", tick)?);
        std::thread::sleep(timing.measure);
        let (s1, l1) = (cpu_time(&server, tick)?, cpu_time("self", tick)?);
        Some(WindowCpu {
            server: s1 - s0,
            load: l1 - l0,
        })
    })
}

/// R2: micro server vs grpc-go server, both driven by a raw tonic client;
/// grpc-go is the baseline, so ratios read "toolkit / grpc-go". Besides
/// req/s and latency, the CPU each server used per call, and how busy the
/// load generator's core was (near 100 %, the client bounds req/s).
pub fn r2(plan: &Plan) -> String {
    eprintln!("R2");
    let title =
        "R2: greeter Hello, micro server vs grpc-go server, same raw tonic client, multi_thread";
    let go = match build_go_server() {
        Ok(go) => go,
        Err(why) => {
            let line = format!("R2 skipped: {why}. To run it: `{INSTALL}` (Debian 12).");
            eprintln!("  {line}");
            return format!("### {title}\n\n{line}\n\n");
        }
    };
    let flavor = Flavor::Multi;
    let mut go_proc = Proc::spawn("grpc-go", &go.binary, &[], &[]);
    let (go_addr, rest) = go_proc.wait_ready();
    let go_procs = rest
        .split_whitespace()
        .next()
        .unwrap_or("GOMAXPROCS=?")
        .to_string();
    let (micro_proc, micro_addr) = grpc_server(plan, "micro", flavor);
    // The toolkit's binaries run on `current_thread` when pinned to one CPU
    // (`micro::runtime`): the server as shipped, next to the same server on
    // `multi_thread` (what R1 compares with raw tonic).
    let (shipped_proc, shipped_addr) = grpc_server(plan, "micro", Flavor::CurrentThread);

    // Same service on both: the same answer to the same call.
    let check = flavor.runtime();
    let answers = check.block_on(async { (hello(go_addr).await, hello(micro_addr).await) });
    drop(check);
    assert_eq!(answers.0, answers.1, "grpc-go and micro answer alike");

    // Budget: quick mode runs the target's load only, full mode 3 rounds.
    let (shapes, rounds): (&[(usize, usize)], usize) = if plan.quick {
        (&GRPC_SHAPES[1..2], plan.rounds)
    } else {
        (&GRPC_SHAPES, FULL_ROUNDS)
    };
    let peers = [
        ("grpc-go server (baseline)", go_addr, go_proc.pid()),
        ("micro server, multi_thread", micro_addr, micro_proc.pid()),
        (
            "micro server, current_thread (as shipped on one CPU)",
            shipped_addr,
            shipped_proc.pid(),
        ),
    ];
    let tick = clock_tick();
    let mut results = Vec::new();
    let mut cpu_rows = Vec::new();
    for &(conns, per_conn) in shapes {
        let shape = format!("c{conns}×m{per_conn}");
        let mut rows: Vec<PeerRounds> = peers
            .iter()
            .map(|(label, _, _)| PeerRounds {
                peer: label.to_string(),
                rounds: Vec::new(),
            })
            .collect();
        let mut cpus: Vec<Vec<WindowCpu>> = vec![Vec::new(); peers.len()];
        for round in 0..rounds {
            for (i, &(label, addr, pid)) in peers.iter().enumerate() {
                let sampler = sample_window(pid, plan.timing, tick);
                let runtime = flavor.runtime();
                let r = runtime.block_on(load::grpc_round(
                    GrpcClient::Tonic,
                    addr,
                    conns,
                    per_conn,
                    plan.timing,
                ));
                drop(runtime);
                let cpu = sampler.join().ok().flatten();
                eprintln!(
                    "  {shape} round {} {label}: {:.0} req/s p99 {:.3} ms errors {}, server CPU {}",
                    round + 1,
                    r.rps(),
                    r.ms(0.99),
                    r.errors,
                    cpu.map_or("?".into(), |c| format!(
                        "{:.2} µs/call",
                        c.server * 1e6 / r.ok.max(1) as f64
                    ))
                );
                if let Some(cpu) = cpu {
                    cpus[i].push(cpu);
                }
                rows[i].rounds.push(r);
            }
        }
        cpu_rows.push((shape.clone(), cpu_table_rows(&rows, &cpus, plan.timing)));
        results.push((shape, rows));
    }
    let mut out = report::table(&format!("{title}, {rounds} rounds"), &results);
    let _ = writeln!(
        out,
        "CPU over each measured window (utime + stime from /proc, {tick:.0} ticks/s): server CPU per \
         call; how busy the server's core and the load generator's core were; the ratio is \
         calls per server CPU-second, toolkit / grpc-go.\n"
    );
    let _ = writeln!(
        out,
        "| load | peer | server CPU µs per call | server core busy % | load core busy % | calls per CPU-s ratio |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for (shape, rows) in &cpu_rows {
        for row in rows {
            let _ = writeln!(out, "| {shape} | {row} |");
        }
    }
    out.push('\n');
    if let Some((_, peers)) = results.iter().find(|(shape, _)| shape == "c10×m10") {
        for (i, runtime) in [(1, "multi_thread"), (2, "current_thread")] {
            let rps = peers[i].rps().median / peers[0].rps().median;
            let _ = writeln!(
                out,
                "- c10×m10 req/s, toolkit ({runtime}) / grpc-go: {rps:.2} (target ≥ 1.3: {}).",
                if rps >= 1.3 { "met" } else { "missed" }
            );
        }
    }
    let _ = writeln!(
        out,
        "- grpc-go {} (Debian, GOPATH mode, default `grpc.NewServer()` options), {}, {go_procs} \
         under `taskset`; stubs generated from proto/greeter/greeter.proto by protoc + protoc-gen-go \
         1.3; build {:.1} s (Go's build cache makes later builds about 1 s).\n",
        go.grpc_version,
        go.go_version,
        go.build_time.as_secs_f64()
    );
    drop(micro_proc);
    drop(shipped_proc);
    drop(go_proc);
    drop(go);
    out
}

/// One row per peer: `peer | µs/call | server busy | load busy | ratio`
/// (medians with min–max; the ratio is the baseline's µs/call over the peer's).
fn cpu_table_rows(rows: &[PeerRounds], cpus: &[Vec<WindowCpu>], timing: Timing) -> Vec<String> {
    let window = timing.measure.as_secs_f64();
    let per_call: Vec<Spread> = rows
        .iter()
        .zip(cpus)
        .map(|(row, cpu)| {
            Spread::of(
                row.rounds
                    .iter()
                    .zip(cpu)
                    .map(|(r, c)| c.server * 1e6 / r.ok.max(1) as f64),
            )
        })
        .collect();
    let base = per_call.first().map_or(f64::NAN, |s| s.median);
    rows.iter()
        .zip(cpus)
        .zip(&per_call)
        .map(|((row, cpu), call)| {
            let busy = |f: fn(&WindowCpu) -> f64| {
                let s = Spread::of(cpu.iter().map(|c| f(c) * 100.0 / window));
                format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
            };
            format!(
                "{} | {:.2} ({:.2}–{:.2}) | {} | {} | {:.2}",
                row.peer,
                call.median,
                call.min,
                call.max,
                busy(|c| c.server),
                busy(|c| c.load),
                base / call.median
            )
        })
        .collect()
}
