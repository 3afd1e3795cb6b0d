//! The scenarios of issue 5 on gRPC and HTTP throughput and on a crashed
//! node (R1, R5, R3/R9 with R4, R8), each as interleaved rounds. The others
//! have files of their own; [`crate::registry`] lists them all.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fixtures::{
    GRPC_SHAPES, Plan, RssSampler, curl_status, grpc_compare, grpc_server, http_compare, start_etcd,
};
use crate::load::{self, GrpcClient, Timing};
use crate::proc::{Proc, free_port};
use crate::report;
use crate::servers::Flavor;
use crate::stats::Spread;

/// R1 once per runtime flavor of the plan.
pub(crate) fn r1(plan: &Plan) -> String {
    let mut out = String::new();
    for &flavor in &plan.flavors {
        out.push_str(&r1_flavor(plan, flavor));
    }
    out
}

/// R1: toolkit server + toolkit client vs raw tonic server + raw tonic
/// channel; a third peer (raw tonic client → toolkit server) shows which
/// side any difference comes from.
fn r1_flavor(plan: &Plan, flavor: Flavor) -> String {
    eprintln!("R1 ({})", flavor.label());
    let (_tonic, tonic_addr) = grpc_server(plan, "tonic", flavor);
    let (_micro, micro_addr) = grpc_server(plan, "micro", flavor);
    // Quick mode leaves out c50×m1 here to stay within 2 minutes.
    let shape_count = if plan.quick { 2 } else { GRPC_SHAPES.len() };
    let shapes = grpc_compare(
        plan,
        flavor,
        &GRPC_SHAPES[..shape_count],
        &[
            (
                "tonic server + tonic client (baseline)",
                GrpcClient::Tonic,
                tonic_addr,
            ),
            ("micro server + micro client", GrpcClient::Micro, micro_addr),
            ("micro server + tonic client", GrpcClient::Tonic, micro_addr),
        ],
    );
    report::table_named(
        &format!("r1 {}", flavor.label()),
        &format!(
            "R1: greeter Hello, toolkit vs raw tonic, {} runtime (servers and load generator)",
            flavor.label()
        ),
        &shapes,
    )
}

/// R5: the balanced client over one backend vs a direct channel, both to
/// the same raw tonic server.
pub(crate) fn r5(plan: &Plan) -> String {
    eprintln!("R5");
    let flavor = Flavor::Multi;
    let (_tonic, addr) = grpc_server(plan, "tonic", flavor);
    // Quick mode leaves out c50×m1 here to stay within 2 minutes.
    let shape_count = if plan.quick { 2 } else { GRPC_SHAPES.len() };
    let shapes = grpc_compare(
        plan,
        flavor,
        &GRPC_SHAPES[..shape_count],
        &[
            ("direct tonic Channel (baseline)", GrpcClient::Tonic, addr),
            ("micro ServiceChannel, 1 node", GrpcClient::Micro, addr),
            (
                "direct tonic Channel, calls with grpc-timeout 5S",
                GrpcClient::TonicWithDeadline,
                addr,
            ),
        ],
    );
    report::table(
        "R5: balanced client (1 backend) vs direct channel, raw tonic server, multi_thread",
        &shapes,
    )
}

/// R3 (api handler → user-api → user-srv vs a minimal axum → tonic gateway
/// to the same user-api, vs bare axum JSON) and R9 (RSS, start → routable),
/// with the real binaries on an etcd registry.
pub(crate) fn r3_r9(plan: &Plan) -> String {
    eprintln!("R3/R9");
    let etcd = start_etcd();
    let data = std::env::temp_dir().join(format!("micro-bench-user-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--registry=etcd".to_string(),
            format!("--registry_address={}", etcd.address),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let quiet = [("RUST_LOG", "warn".to_string())];
    let api_port = free_port();
    let user_api = Proc::spawn(
        "user-api",
        &plan.bin_dir.join("user-api"),
        &common(&[&format!("--server_address=127.0.0.1:{api_port}")]),
        &quiet,
    );
    let gw_port = free_port();
    let mut gateway_args = common(&[]);
    gateway_args.extend([
        "api".to_string(),
        "--handler=api".into(),
        format!("--address=127.0.0.1:{gw_port}"),
    ]);
    let gateway = Proc::spawn(
        "micro api",
        &plan.bin_dir.join("micro"),
        &gateway_args,
        &quiet,
    );
    let gw = format!("http://127.0.0.1:{gw_port}");
    // Wait for the gateway to answer at all.
    let until = Instant::now() + Duration::from_secs(30);
    while curl_status("GET", &format!("{gw}/"), None) == 0 {
        assert!(Instant::now() < until, "micro api did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // R9: user-srv start → routable through the gateway (any non-5xx answer).
    let srv_port = free_port();
    let user_srv = Proc::spawn(
        "user-srv",
        &plan.bin_dir.join("user-srv"),
        &common(&[
            &format!("--server_address=127.0.0.1:{srv_port}"),
            &format!("--data_dir={}", data.display()),
            "--auth_secret=bench-secret",
        ]),
        &quiet,
    );
    let hello = format!("{gw}/user/say/hello?name=huohuo");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = curl_status("GET", &hello, None);
        if (200..500).contains(&status) {
            break;
        }
        assert!(
            Instant::now() < until,
            "user-srv not routable after 60 s (last {status})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let routable = user_srv.started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let fresh_srv = user_srv.rss_kib().unwrap_or(0);
    let status = curl_status(
        "POST",
        &format!("{gw}/user/account/register"),
        Some(r#"{"username":"huohuo","password":"correct horse battery"}"#),
    );
    assert!(status == 201 || status == 409, "register answered {status}");
    assert_eq!(
        curl_status("GET", &hello, None),
        200,
        "hello through micro api"
    );
    std::thread::sleep(Duration::from_millis(500));
    let idle = (
        user_srv.rss_kib().unwrap_or(0),
        gateway.rss_kib().unwrap_or(0),
        user_api.rss_kib().unwrap_or(0),
    );

    let (_mini, mini_addr) = {
        let args = vec![
            "serve".to_string(),
            "--kind=mini-gateway".into(),
            format!("--upstream=127.0.0.1:{api_port}"),
        ];
        let mut p = Proc::spawn("mini gateway", &plan.exe, &args, &[]);
        let (addr, _) = p.wait_ready();
        (p, addr)
    };
    let (_axum, axum_addr) = {
        let args = vec!["serve".to_string(), "--kind=axum".into()];
        let mut p = Proc::spawn("bare axum", &plan.exe, &args, &[]);
        let (addr, _) = p.wait_ready();
        (p, addr)
    };
    let gw_addr: SocketAddr = format!("127.0.0.1:{gw_port}").parse().expect("address");
    assert_eq!(
        curl_status(
            "GET",
            &format!("http://{mini_addr}/user/say/hello?name=huohuo"),
            None
        ),
        200,
        "hello through the minimal gateway"
    );

    let path = "/user/say/hello?name=huohuo";
    let peers: [(&str, SocketAddr); 3] = [
        ("minimal axum→tonic gateway (baseline)", mini_addr),
        ("micro api --handler=api", gw_addr),
        ("bare axum JSON (HTTP ceiling)", axum_addr),
    ];
    let pids = [user_srv.pid(), gateway.pid(), user_api.pid()];
    let maxes = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    // RSS of the three processes is sampled while micro api is under load.
    let shapes = http_compare(plan, "R3", &peers, path, None, |i| {
        (i == 1).then(|| RssSampler::start(pids, maxes.clone()))
    });
    let loaded: Vec<u64> = maxes.iter().map(|m| m.load(Ordering::Relaxed)).collect();
    let mut out = report::table(
        "R3: GET /user/say/hello?name=huohuo over HTTP/1.1 keep-alive (user-api → user-srv on etcd, SQLite)",
        &shapes,
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(out, "### R9: memory and start-up\n");
    let _ = writeln!(
        out,
        "| process | RSS idle (MiB) | RSS max under load, c1 and c50 (MiB) |"
    );
    let _ = writeln!(out, "| --- | --- | --- |");
    let _ = writeln!(
        out,
        "| user-srv, before the first register (only GET probes so far) | {:.1} | |",
        mib(fresh_srv)
    );
    let _ = writeln!(
        out,
        "| user-srv, after one register (Argon2id, m = 19 MiB) | {:.1} | {:.1} |",
        mib(idle.0),
        mib(loaded[0])
    );
    let _ = writeln!(
        out,
        "| micro api (gateway) | {:.1} | {:.1} |",
        mib(idle.1),
        mib(loaded[1])
    );
    let _ = writeln!(
        out,
        "| user-api | {:.1} | {:.1} |",
        mib(idle.2),
        mib(loaded[2])
    );
    let _ = writeln!(
        out,
        "\nuser-srv start → first answer routed to it through micro api (etcd registry, fresh SQLite file, \
         polled every 5 ms with curl): {:.0} ms (one sample).\n",
        routable.as_secs_f64() * 1000.0
    );
    if plan.wants("r4") {
        out.push_str(&r4(plan, &common, srv_port));
    }
    drop(user_srv);
    drop(gateway);
    drop(user_api);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&data);
    out
}

/// R4: the rpc handler (`micro api --handler=rpc`, JSON → user-srv by
/// reflection) vs a minimal axum → tonic gateway written for the endpoint.
fn r4(plan: &Plan, common: &dyn Fn(&[&str]) -> Vec<String>, srv_port: u16) -> String {
    eprintln!("R4");
    let quiet = [("RUST_LOG", "warn".to_string())];
    let gw_port = free_port();
    let mut args = common(&[]);
    args.extend([
        "api".to_string(),
        "--handler=rpc".into(),
        "--namespace=go.micro.srv".into(),
        format!("--address=127.0.0.1:{gw_port}"),
    ]);
    let _gateway = Proc::spawn("micro api rpc", &plan.bin_dir.join("micro"), &args, &quiet);
    let args = vec![
        "serve".to_string(),
        "--kind=mini-rpc-gateway".into(),
        format!("--upstream=127.0.0.1:{srv_port}"),
    ];
    let mut mini = Proc::spawn("mini rpc gateway", &plan.exe, &args, &[]);
    let (mini_addr, _) = mini.wait_ready();
    let gw_addr: SocketAddr = format!("127.0.0.1:{gw_port}").parse().expect("address");
    // The Go anchor: grpc-gateway dialing the same user-srv directly.
    let go = crate::grpc_gateway::build();
    let mut go_peer = None;
    let go_line = match &go {
        Ok(go) => {
            let args = vec![format!("-upstream=127.0.0.1:{srv_port}")];
            let mut p = Proc::spawn("grpc-gateway", &go.binary, &args, &[]);
            let (addr, rest) = p.wait_ready();
            let line = format!(
                "- grpc-gateway {} (Debian, GOPATH mode, `runtime.NewServeMux()` defaults, {}, \
                 under `taskset`), handlers generated by protoc-gen-grpc-gateway from \
                 proto/user/user.proto + bench/grpc-gateway/user.yaml; build {:.1} s.",
                go.version,
                rest.split_whitespace().next().unwrap_or("GOMAXPROCS=?"),
                go.build_time.as_secs_f64()
            );
            go_peer = Some((p, addr));
            line
        }
        Err(why) => {
            let line = format!(
                "- grpc-gateway peer skipped: {why}. To run it: `{}` (Debian 12).",
                crate::grpc_gateway::INSTALL
            );
            eprintln!("  {line}");
            line
        }
    };
    let path = "/user/user/query-user-by-name";
    let body = r#"{"userName":"huohuo"}"#;
    let go_addr = go_peer.as_ref().map(|(_, addr)| *addr);
    for addr in [mini_addr, gw_addr].into_iter().chain(go_addr) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let status = curl_status("POST", &format!("http://{addr}{path}"), Some(body));
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < until,
                "POST {path} on {addr} answered {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut peers = vec![
        ("minimal axum→tonic gateway (baseline)", mini_addr),
        ("micro api --handler=rpc", gw_addr),
    ];
    peers.extend(go_addr.map(|addr| ("grpc-gateway v1 (Go)", addr)));
    let shapes = http_compare(plan, "R4", &peers, path, Some(body), |_| None::<RssSampler>);
    let mut out = report::table(
        "R4: POST /user/user/query-user-by-name {\"userName\":\"huohuo\"} over HTTP/1.1 keep-alive \
         (rpc handler → user-srv on etcd, SQLite)",
        &shapes,
    );
    if let Some((_, rows)) = shapes.iter().find(|(shape, _)| shape == "c50")
        && let [_, micro, go] = rows.as_slice()
    {
        let rps = micro.rps().median / go.rps().median;
        let p99 = micro.pct(0.99).median / go.pct(0.99).median;
        let _ = writeln!(
            out,
            "- c50, rpc handler / grpc-gateway: req/s {rps:.2}, p99 {p99:.2} (goal ≥ 2 with a lower \
             p99: {}).",
            if rps >= 2.0 && p99 < 1.0 {
                "met"
            } else {
                "missed"
            }
        );
    }
    let _ = writeln!(out, "{go_line}\n");
    drop(go_peer);
    drop(go);
    out
}

/// R8: three toolkit servers, one toolkit client with 10 calls in flight;
/// one server is killed with SIGKILL a quarter into the measured window (it
/// stays listed in the registry, as after a crash before its TTL lapses).
/// Counts failed calls and when attempts stopped reaching the dead node, for
/// plain calls and for calls marked idempotent (retried after any failure).
pub(crate) fn r8(plan: &Plan) -> String {
    eprintln!("R8");
    // Long enough after the kill to see whether calls reach the dead node
    // again once its first probe period (1 s) is over.
    let timing = Timing {
        warmup: plan.timing.warmup,
        measure: if plan.quick {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(5)
        },
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### R8: kill -9 one of three instances under load (one toolkit client, 10 calls in flight, \
         default options: 1 retry, refused nodes probed after 1 s, doubling; {:?} measured, kill at {:?})\n",
        timing.measure,
        timing.measure / 4
    );
    let _ = writeln!(
        out,
        "| round | calls | calls ok | calls failed | attempts on the dead node from the kill on | last of them after the kill (ms) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    let mut summary: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("plain", Vec::new(), Vec::new()),
        ("idempotent", Vec::new(), Vec::new()),
    ];
    let rounds = if plan.quick { 1 } else { plan.rounds };
    for round in 0..rounds {
        for (label, failed, lasts) in summary.iter_mut() {
            let idempotent = *label == "idempotent";
            let mut servers: Vec<(Proc, SocketAddr)> = (0..3)
                .map(|_| grpc_server(plan, "micro", Flavor::Multi))
                .collect();
            let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
            let victim = servers.remove(0);
            let runtime = Flavor::Multi.runtime();
            let (r, last, after) =
                runtime.block_on(load::kill_round(addrs, 10, timing, victim, idempotent));
            drop(runtime);
            drop(servers);
            eprintln!(
                "  round {} {label}: ok {} failed {} attempts after kill {after}, last {last:?}",
                round + 1,
                r.ok,
                r.errors,
            );
            let last_ms = last.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {after} | {last_ms:.1} |",
                round + 1,
                r.ok,
                r.errors,
            );
            failed.push(r.errors as f64);
            lasts.push(last_ms);
        }
    }
    out.push('\n');
    for (label, failed, lasts) in summary {
        let f = Spread::of(failed);
        let l = Spread::of(lasts);
        let _ = writeln!(
            out,
            "- {label} calls: median failed {:.0} ({:.0}–{:.0}); last attempt on the dead node {:.1} ms after the kill ({:.1}–{:.1}).",
            f.median, f.min, f.max, l.median, l.min, l.max
        );
    }
    out.push('\n');
    out
}

/// R16: user-web (`micro::web`: edge layer, telemetry, the balanced client
/// by name) against the same hello handler as bare axum calling tonic
/// directly, both over the same user-srv on etcd; `micro api
/// --handler=api` → user-api → the same user-srv beside them, for its p99.
pub(crate) fn r16(plan: &Plan) -> String {
    eprintln!("R16");
    let etcd = start_etcd();
    let data = std::env::temp_dir().join(format!("micro-bench-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    let common = |extra: &[String]| -> Vec<String> {
        let mut v = vec![
            "--registry=etcd".to_string(),
            format!("--registry_address={}", etcd.address),
        ];
        v.extend(extra.iter().cloned());
        v
    };
    let quiet = [("RUST_LOG", "warn".to_string())];
    let srv_port = free_port();
    let user_srv = Proc::spawn(
        "user-srv",
        &plan.bin_dir.join("user-srv"),
        &common(&[
            format!("--server_address=127.0.0.1:{srv_port}"),
            format!("--data_dir={}", data.display()),
            "--auth_secret=bench-secret".into(),
        ]),
        &quiet,
    );
    let web_port = free_port();
    let user_web = Proc::spawn(
        "user-web",
        &plan.bin_dir.join("user-web"),
        &common(&[format!("--server_address=127.0.0.1:{web_port}")]),
        &quiet,
    );
    let user_api = Proc::spawn(
        "user-api",
        &plan.bin_dir.join("user-api"),
        &common(&["--server_address=127.0.0.1:0".into()]),
        &quiet,
    );
    let gw_port = free_port();
    let mut gateway_args = common(&[]);
    gateway_args.extend([
        "api".to_string(),
        "--handler=api".into(),
        format!("--address=127.0.0.1:{gw_port}"),
    ]);
    let gateway = Proc::spawn(
        "micro api",
        &plan.bin_dir.join("micro"),
        &gateway_args,
        &quiet,
    );
    let web = format!("http://127.0.0.1:{web_port}");
    let gw = format!("http://127.0.0.1:{gw_port}");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = curl_status(
            "POST",
            &format!("{web}/user/account/register"),
            Some(r#"{"username":"huohuo","password":"correct horse battery"}"#),
        );
        if status == 201 || status == 409 {
            break;
        }
        assert!(Instant::now() < until, "user-web → user-srv: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let path = "/user/say/hello?name=huohuo";
    let until = Instant::now() + Duration::from_secs(60);
    while curl_status("GET", &format!("{gw}{path}"), None) != 200 {
        assert!(Instant::now() < until, "micro api → user-api → user-srv");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_mini, mini_addr) = {
        let args = vec![
            "serve".to_string(),
            "--kind=mini-web".into(),
            format!("--upstream=127.0.0.1:{srv_port}"),
        ];
        let mut p = Proc::spawn("axum → tonic", &plan.exe, &args, &[]);
        let (addr, _) = p.wait_ready();
        (p, addr)
    };
    assert_eq!(
        curl_status("GET", &format!("http://{mini_addr}{path}"), None),
        200,
        "hello through axum → tonic"
    );
    let web_addr: SocketAddr = format!("127.0.0.1:{web_port}").parse().expect("address");
    let gw_addr: SocketAddr = format!("127.0.0.1:{gw_port}").parse().expect("address");
    let peers: [(&str, SocketAddr); 3] = [
        ("axum handler → tonic channel (baseline)", mini_addr),
        ("user-web (micro::web, client by name)", web_addr),
        ("micro api --handler=api → user-api", gw_addr),
    ];
    let shapes = http_compare(plan, "R16", &peers, path, None, |_| None::<()>);
    let out = report::table(
        "R16: GET /user/say/hello?name=huohuo over HTTP/1.1 keep-alive: user-web vs the same handler on bare axum → tonic, and the gateway path (user-srv on etcd, SQLite)",
        &shapes,
    );
    drop(gateway);
    drop(user_api);
    drop(user_web);
    drop(user_srv);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&data);
    out
}
