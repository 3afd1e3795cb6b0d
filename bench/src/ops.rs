//! `--only ops`: what telemetry costs. R1 (the toolkit server, raw tonic
//! load), R5 (the toolkit client, raw tonic server) and R3 (the whole chain:
//! micro api → user-api → user-srv on etcd), each with telemetry off
//! (`MICRO_METRICS=off`, no exporter), with metrics and tracing but no span
//! sampled, and with every span sampled and exported over OTLP to a sink.
//!
//! Metrics and tracing are set per process (read once), so every variant
//! runs in its own server processes, started with its environment; R5's
//! client runs in this process, where tracing is set up unsampled for the
//! whole scenario (the variant without telemetry has no observer at all).
//! The sinks count the spans they receive, which the report shows: a
//! variant that was meant to sample nothing and exported spans would show.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::fixtures::{Plan, curl_status, grpc_compare, http_compare, start_etcd};
use crate::load::GrpcClient;
use crate::proc::{Proc, free_port};
use crate::report;
use crate::servers::Flavor;

/// One telemetry setting: a label and the environment of its processes.
struct Variant {
    label: &'static str,
    env: Vec<(&'static str, String)>,
    sink: Option<usize>,
}

fn variants(sinks: &[SocketAddr; 2]) -> Vec<Variant> {
    let quiet = ("RUST_LOG", "warn".to_string());
    let split = std::env::var("MICRO_BENCH_OPS_SPLIT").is_ok_and(|v| v == "1");
    let mut variants = vec![
        Variant {
            label: "telemetry off (baseline)",
            env: vec![quiet.clone(), ("MICRO_METRICS", "off".into())],
            sink: None,
        },
        Variant {
            label: "metrics + tracing, no span sampled",
            env: vec![
                quiet.clone(),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://{}", sinks[0]),
                ),
                ("OTEL_TRACES_SAMPLER", "always_off".into()),
            ],
            sink: Some(0),
        },
        Variant {
            label: "metrics + tracing, every span sampled and exported",
            env: vec![
                quiet,
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://{}", sinks[1]),
                ),
                ("OTEL_TRACES_SAMPLER", "always_on".into()),
                // Batches flushed often enough that a round's spans arrive.
                ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
            ],
            sink: Some(1),
        },
    ];
    // Which half costs what: metrics alone, unsampled tracing alone.
    if split {
        variants.push(Variant {
            label: "metrics only",
            env: vec![("RUST_LOG", "warn".to_string())],
            sink: None,
        });
        variants.push(Variant {
            label: "tracing only, no span sampled",
            env: vec![
                ("RUST_LOG", "warn".to_string()),
                ("MICRO_METRICS", "off".into()),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://{}", sinks[0]),
                ),
                ("OTEL_TRACES_SAMPLER", "always_off".into()),
            ],
            sink: Some(0),
        });
    }
    variants
}

fn sink(plan: &Plan, name: &str) -> (Proc, SocketAddr) {
    let args = vec!["serve".to_string(), "--kind=otlp-sink".into()];
    let mut p = Proc::spawn(name, &plan.exe, &args, &[]);
    let (addr, _) = p.wait_ready();
    (p, addr)
}

/// Spans each sink has received so far.
fn spans(sinks: &mut [(Proc, SocketAddr); 2], seen: &mut [u64; 2]) -> [u64; 2] {
    for (i, (p, _)) in sinks.iter_mut().enumerate() {
        if let Some(line) = p.last_line("SPANS ") {
            seen[i] = line
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or(seen[i]);
        }
    }
    *seen
}

pub fn ops(plan: &Plan) -> String {
    eprintln!("ops: telemetry overhead");
    let mut sinks = [sink(plan, "otlp sink 0"), sink(plan, "otlp sink 1")];
    let addrs = [sinks[0].1, sinks[1].1];
    let variants = variants(&addrs);
    let mut seen = [0u64; 2];
    let mut out = String::new();
    let shapes = if plan.quick {
        &crate::fixtures::GRPC_SHAPES[..2]
    } else {
        &crate::fixtures::GRPC_SHAPES[..]
    };

    // R1: toolkit servers, one per variant, under raw tonic load.
    let servers: Vec<(Proc, SocketAddr)> = variants
        .iter()
        .map(|v| {
            let args = vec![
                "serve".to_string(),
                "--kind=micro".into(),
                "--flavor=multi".into(),
            ];
            let mut p = Proc::spawn("micro server", &plan.exe, &args, &v.env);
            let (addr, _) = p.wait_ready();
            (p, addr)
        })
        .collect();
    let peers: Vec<(&str, GrpcClient, SocketAddr)> = variants
        .iter()
        .zip(&servers)
        .map(|(v, (_, addr))| (v.label, GrpcClient::Tonic, *addr))
        .collect();
    let before = spans(&mut sinks, &mut seen);
    let table = grpc_compare(plan, Flavor::Multi, shapes, &peers);
    drop(servers);
    let after = wait_for_spans(&mut sinks, &mut seen);
    out.push_str(&report::table_named(
        "ops r1",
        "Telemetry R1: toolkit server (greeter Hello) under raw tonic load, telemetry off / unsampled / 100 % sampled",
        &table,
    ));
    out.push_str(&span_line(&variants, before, after));

    // R5: the toolkit client in this process, raw tonic server.
    let runtime = Flavor::Multi.runtime();
    let trace = {
        let _enter = runtime.enter();
        micro_telemetry::trace::init_with(micro_telemetry::trace::TraceConfig {
            service_name: "micro-bench".into(),
            export: micro_telemetry::trace::Export::To(format!("http://{}", addrs[0])),
            sampling: micro_telemetry::trace::Sampling::ParentRatio(0.0),
        })
        .expect("tracing set up in the load generator")
    };
    let (_tonic, tonic_addr) = crate::fixtures::grpc_server(plan, "tonic", Flavor::Multi);
    let before = spans(&mut sinks, &mut seen);
    let table = grpc_compare(
        plan,
        Flavor::Multi,
        shapes,
        &[
            (
                "micro client, no telemetry (baseline)",
                GrpcClient::Micro,
                tonic_addr,
            ),
            (
                "micro client, metrics + tracing, no span sampled",
                GrpcClient::MicroTelemetry,
                tonic_addr,
            ),
        ],
    );
    drop(trace);
    drop(runtime);
    let after = wait_for_spans(&mut sinks, &mut seen);
    out.push_str(&report::table_named(
        "ops r5",
        "Telemetry R5: toolkit client (1 node, raw tonic server), no observer vs the telemetry observer",
        &table,
    ));
    let _ = writeln!(
        out,
        "Spans exported by the load generator during R5: {} (none expected).\n",
        after[0] - before[0]
    );

    // R3: micro api → user-api → user-srv on etcd, one chain per variant.
    let chains: Vec<Chain> = variants.iter().map(|v| Chain::start(plan, v)).collect();
    let peers: Vec<(&str, SocketAddr)> = variants
        .iter()
        .zip(&chains)
        .map(|(v, c)| (v.label, c.gateway))
        .collect();
    let before = spans(&mut sinks, &mut seen);
    let table = http_compare(
        plan,
        "ops R3",
        &peers,
        "/user/say/hello?name=huohuo",
        None,
        |_| None::<crate::fixtures::RssSampler>,
    );
    drop(chains);
    let after = wait_for_spans(&mut sinks, &mut seen);
    out.push_str(&report::table_named(
        "ops r3",
        "Telemetry R3: GET /user/say/hello through micro api → user-api → user-srv (etcd, SQLite), a chain per variant",
        &table,
    ));
    out.push_str(&span_line(&variants, before, after));
    out
}

/// Waits (5 s at most) until the sinks stop receiving: the last batches of
/// the processes just stopped.
fn wait_for_spans(sinks: &mut [(Proc, SocketAddr); 2], seen: &mut [u64; 2]) -> [u64; 2] {
    let until = Instant::now() + Duration::from_secs(5);
    let mut last = spans(sinks, seen);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        let now = spans(sinks, seen);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn span_line(variants: &[Variant], before: [u64; 2], after: [u64; 2]) -> String {
    let mut parts = Vec::new();
    for v in variants {
        if let Some(i) = v.sink {
            parts.push(format!("{}: {}", v.label, after[i] - before[i]));
        }
    }
    format!(
        "Spans received by the OTLP sinks: {}.\n\n",
        parts.join("; ")
    )
}

/// etcd, user-srv, user-api and micro api with one variant's environment.
struct Chain {
    gateway: SocketAddr,
    // Dropped in reverse: the gateway first, etcd last.
    _procs: Vec<Proc>,
    _etcd: crate::fixtures::Etcd,
    data: std::path::PathBuf,
}

impl Drop for Chain {
    fn drop(&mut self) {
        while let Some(p) = self._procs.pop() {
            drop(p);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Chain {
    fn start(plan: &Plan, variant: &Variant) -> Chain {
        let etcd = start_etcd();
        let data = std::env::temp_dir().join(format!(
            "micro-bench-ops-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&data).expect("data dir");
        let registry = vec![
            "--registry=etcd".to_string(),
            format!("--registry_address={}", etcd.address),
        ];
        let with = |extra: &[String]| -> Vec<String> {
            let mut v = registry.clone();
            v.extend(extra.iter().cloned());
            v
        };
        let srv = Proc::spawn(
            "user-srv",
            &plan.bin_dir.join("user-srv"),
            &with(&[
                "--server_address=127.0.0.1:0".into(),
                format!("--data_dir={}", data.display()),
                "--auth_secret=bench-secret".into(),
            ]),
            &variant.env,
        );
        let api = Proc::spawn(
            "user-api",
            &plan.bin_dir.join("user-api"),
            &with(&["--server_address=127.0.0.1:0".into()]),
            &variant.env,
        );
        let port = free_port();
        let gateway = Proc::spawn(
            "micro api",
            &plan.bin_dir.join("micro"),
            &with(&[
                "api".into(),
                "--handler=api".into(),
                format!("--address=127.0.0.1:{port}"),
            ]),
            &variant.env,
        );
        let base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let status = curl_status(
                "POST",
                &format!("{base}/user/account/register"),
                Some(r#"{"username":"huohuo","password":"correct horse battery"}"#),
            );
            if status == 201 || status == 409 {
                break;
            }
            assert!(
                Instant::now() < until,
                "{}: register through micro api answered {status}",
                variant.label
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            curl_status("GET", &format!("{base}/user/say/hello?name=huohuo"), None),
            200,
            "{}: hello through micro api",
            variant.label
        );
        Chain {
            gateway: format!("127.0.0.1:{port}").parse().expect("address"),
            _procs: vec![srv, api, gateway],
            _etcd: etcd,
            data,
        }
    }
}
