//! The topology as an operator sees it, with real parts: etcd, user-srv,
//! user-api and `micro api`, each with an admin listener and exporting spans
//! over OTLP to a receiver in this test (built from the OTLP protos).
//!
//! - A real Prometheus scrapes the three admin listeners; its HTTP API
//!   returns a request counter that matches the calls made.
//! - `promtool check metrics` passes on every `/metrics`.
//! - One request with a `traceparent` yields one trace across gateway →
//!   user-api → user-srv, with the parent links and span names expected.
//! - user-srv's JSON log lines carry that trace id.
//! - `micro health go.micro.srv.user` answers SERVING and exits 0.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_registry_etcd::testing::EtcdCluster;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use topology_tests::{Process, curl, eventually, free_port};

/// A span as received: (resource service.name, span).
type Received = Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>;

#[derive(Clone, Default)]
struct Receiver {
    spans: Received,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query with one result, if there is one.
fn prometheus_value(base: &str, query: &str) -> Option<f64> {
    let reply = curl(
        &format!("{base}/api/v1/query?query={}", encode(query)),
        None,
    );
    if reply.status != 200 {
        return None;
    }
    let json = reply.json();
    let result = json["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// The sum of one counter's samples in a /metrics text.
fn scraped_sum(text: &str, metric: &str, must_contain: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(must_contain))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_one_trace_crosses_the_topology() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let registry_address = format!("--registry_address={}", cluster.addresses());

    // The OTLP receiver.
    let receiver = Receiver::default();
    let spans = receiver.spans.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let data = tempfile::tempdir().expect("tmp");
    let prometheus_dir = tempfile::tempdir().expect("tmp");
    let promtool_ok = tokio::task::spawn_blocking(move || {
        let secret = topology_tests::secret();
        let admin: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let admin_flag = |i: usize| format!("--admin_address=127.0.0.1:{}", admin[i]);
        let env = |name: &'static str| -> Vec<(&'static str, String)> {
            vec![
                ("MICRO_AUTH_SECRET", secret.clone()),
                ("RUST_LOG", "info,user_srv=debug,user_api=debug".into()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
                ("OTEL_SERVICE_NAME", name.into()),
            ]
        };
        let as_refs = |env: &[(&'static str, String)]| -> Vec<(&'static str, String)> { env.to_vec() };
        let start = |label: &str, program: &str, args: Vec<String>, env: Vec<(&'static str, String)>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Process::start(label, program, &args, &env)
        };
        let common = |i: usize| {
            vec![
                "--registry=etcd".to_string(),
                registry_address.clone(),
                "--server_address=127.0.0.1:0".into(),
                admin_flag(i),
            ]
        };
        let mut srv_args = common(0);
        srv_args.extend([
            "--log_format=json".to_string(),
            "--data_dir".into(),
            data.path().display().to_string(),
        ]);
        let srv = start("user-srv", "user-srv", srv_args, as_refs(&env("user-srv")));
        let api = start("user-api", "user-api", common(1), as_refs(&env("user-api")));
        let port = free_port();
        let mut gateway_args = vec!["--registry=etcd".to_string(), registry_address.clone(), admin_flag(2)];
        gateway_args.extend([
            "api".to_string(),
            "--handler=api".into(),
            "--address".into(),
            format!("127.0.0.1:{port}"),
        ]);
        let gateway = start("micro api", "micro", gateway_args, as_refs(&env("gateway")));
        // A web service: its requests are traced like the gateway's, named
        // by the route pattern they matched.
        let web_port = free_port();
        let web_args = vec![
            "--registry=etcd".to_string(),
            registry_address.clone(),
            format!("--server_address=127.0.0.1:{web_port}"),
        ];
        let web = start("user-web", "user-web", web_args, as_refs(&env("user-web")));
        let base = format!("http://127.0.0.1:{port}");
        let hello = |name: &str| curl(&format!("{base}/user/say/hello?name={name}"), None);
        let not_found = |r: &topology_tests::Reply| r.status == 404 && r.body.contains("not found");

        // Every process ready, then the chain answers.
        for port in &admin {
            eventually("/health/ready", Duration::from_secs(60), || {
                (curl(&format!("http://127.0.0.1:{port}/health/ready"), None).status == 200)
                    .then_some(())
            });
        }
        eventually("gateway → user-api → user-srv", Duration::from_secs(60), || {
            not_found(&hello("nobody")).then_some(())
        });

        // Prometheus scrapes the three admin listeners every second.
        let prometheus_port = free_port();
        let config = prometheus_dir.path().join("prometheus.yml");
        let targets: Vec<String> = admin.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: micro\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("config");
        let mut prometheus = Process::start_path(
            "prometheus",
            "prometheus",
            &[
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", prometheus_dir.path().join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
            ],
            &[],
        );
        let prom = format!("http://127.0.0.1:{prometheus_port}");
        let query = r#"sum(micro_server_requests_total{service="go.micro.srv.user",endpoint="User.QueryUserByName"})"#;
        let srv_metrics = format!("http://127.0.0.1:{}/metrics", admin[0]);
        // Baseline: Prometheus agrees with what user-srv says, no call in flight.
        let baseline = eventually("Prometheus scrapes user-srv", Duration::from_secs(60), || {
            let direct = scraped_sum(
                &curl(&srv_metrics, None).body,
                "micro_server_requests_total",
                "User.QueryUserByName",
            );
            let seen = prometheus_value(&prom, query)?;
            (seen == direct).then_some(seen)
        });
        const CALLS: usize = 25;
        for _ in 0..CALLS {
            assert!(not_found(&hello("nobody")));
        }
        let expected = baseline + CALLS as f64;
        eventually("Prometheus counts the calls", Duration::from_secs(60), || {
            (prometheus_value(&prom, query) == Some(expected)).then_some(())
        });
        eventually("Prometheus counts the gateway's answers", Duration::from_secs(60), || {
            prometheus_value(&prom, r#"sum(micro_api_requests_total{handler="api",code="404"})"#)
                .filter(|n| *n >= CALLS as f64)
        });
        assert!(prometheus.terminate(Duration::from_secs(20)).success());

        // promtool accepts every /metrics.
        let mut promtool_ok = 0;
        for port in &admin {
            let text = curl(&format!("http://127.0.0.1:{port}/metrics"), None).body;
            let mut child = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("promtool (apt-get install prometheus)");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
            let output = child.wait_with_output().expect("promtool");
            assert!(
                output.status.success(),
                "promtool check metrics on :{port}: {}{}\n{text}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            promtool_ok += 1;
        }

        // One traced request.
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent_span = "00f067aa0ba902b7";
        let output = Command::new("curl")
            .args([
                "-sS",
                "-m",
                "15",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("traceparent: 00-{trace_id}-{parent_span}-01"),
                &format!("{base}/user/say/hello?name=traced"),
            ])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "404");
        let trace = eventually("five spans of the trace", Duration::from_secs(30), || {
            let spans = spans.lock().unwrap_or_else(|p| p.into_inner());
            let ours: Vec<_> = spans
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == trace_id)
                .cloned()
                .collect();
            (ours.len() >= 5).then_some(ours)
        });
        let by_name: HashMap<String, (String, String, String)> = trace
            .iter()
            .map(|(service, s)| {
                (
                    s.name.clone(),
                    (service.clone(), hex(&s.span_id), hex(&s.parent_span_id)),
                )
            })
            .collect();
        let names: Vec<&String> = by_name.keys().collect();
        let find = |name: &str| {
            by_name
                .get(name)
                .unwrap_or_else(|| panic!("no span {name:?} in {names:?}"))
                .clone()
        };
        // Named by the route reached, never by the raw path (unbounded).
        let gateway_span = find("go.micro.api/GET go.micro.api.user/Say.Hello");
        let gateway_call = find("go.micro.api.user/Say.Hello");
        let api_call = find("go.micro.srv.user/User.QueryUserByName");
        // The server and client spans of one method share a name; tell them
        // apart by their services.
        let server_span = |service: &str, name: &str| {
            trace
                .iter()
                .find(|(svc, s)| svc == service && s.name == name)
                .map(|(_, s)| (hex(&s.span_id), hex(&s.parent_span_id)))
                .unwrap_or_else(|| panic!("no {name} span from {service}"))
        };
        let api_server = server_span("user-api", "go.micro.api.user/Say.Hello");
        let srv_server = server_span("user-srv", "go.micro.srv.user/User.QueryUserByName");
        let gateway_client = server_span("gateway", "go.micro.api.user/Say.Hello");
        let api_client = server_span("user-api", "go.micro.srv.user/User.QueryUserByName");
        assert_eq!(gateway_span.0, "gateway");
        assert_eq!(gateway_span.2, parent_span, "the gateway continues the caller's trace");
        assert_eq!(gateway_client.1, gateway_span.1, "gateway call under the gateway span");
        assert_eq!(api_server.1, gateway_client.0, "user-api continues the gateway's call");
        assert_eq!(api_client.1, api_server.0, "user-api's call under its server span");
        assert_eq!(srv_server.1, api_client.0, "user-srv continues user-api's call");
        let _ = (gateway_call, api_call);
        let gateway_status = trace
            .iter()
            .find(|(svc, s)| svc == "gateway" && s.name.starts_with("go.micro.api/GET"))
            .and_then(|(_, s)| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key == "http.response.status_code")
                    .and_then(|kv| kv.value.clone()?.value)
            });
        assert_eq!(gateway_status, Some(Value::IntValue(404)));
        let gateway_route = trace
            .iter()
            .find(|(svc, s)| svc == "gateway" && s.name.starts_with("go.micro.api/GET"))
            .and_then(|(_, s)| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key == "http.route")
                    .and_then(|kv| kv.value.clone()?.value)
            });
        assert_eq!(
            gateway_route,
            Some(Value::StringValue("go.micro.api.user/Say.Hello".into()))
        );

        // Through user-web: its span continues the caller's trace, named by
        // the route pattern; user-srv's span is under its call.
        let web_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
        let web_hello = format!("http://127.0.0.1:{web_port}/user/say/hello?name=traced");
        eventually("user-web → user-srv", Duration::from_secs(60), || {
            not_found(&curl(&web_hello, None)).then_some(())
        });
        let traced = topology_tests::curl_with(
            &web_hello,
            &["-H", &format!("traceparent: 00-{web_trace}-{parent_span}-01")],
        );
        assert_eq!(traced.status, 404, "{traced:?}");
        let web_spans = eventually("the web trace", Duration::from_secs(30), || {
            let spans = spans.lock().unwrap_or_else(|p| p.into_inner());
            let ours: Vec<_> = spans
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == web_trace)
                .cloned()
                .collect();
            (ours.len() >= 3).then_some(ours)
        });
        let span_of = |service: &str, name: &str| {
            web_spans
                .iter()
                .find(|(svc, s)| svc == service && s.name == name)
                .map(|(_, s)| (hex(&s.span_id), hex(&s.parent_span_id)))
                .unwrap_or_else(|| {
                    let names: Vec<_> = web_spans.iter().map(|(v, s)| (v, &s.name)).collect();
                    panic!("no {name} span from {service} in {names:?}")
                })
        };
        let web_server = span_of("user-web", "go.micro.web.user/GET /user/say/hello");
        let web_client = span_of("user-web", "go.micro.srv.user/User.QueryUserByName");
        let web_srv = span_of("user-srv", "go.micro.srv.user/User.QueryUserByName");
        assert_eq!(web_server.1, parent_span, "user-web continues the caller's trace");
        assert_eq!(web_client.1, web_server.0, "its call under its request's span");
        assert_eq!(web_srv.1, web_client.0, "user-srv continues user-web's call");

        // user-srv's JSON log lines inside the call carry the trace id.
        let log = srv.log();
        let traced: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|j| j["trace_id"] == trace_id)
            .collect();
        assert!(!traced.is_empty(), "no JSON line with trace id {trace_id}:\n{log}");
        for line in &traced {
            for key in ["timestamp", "level", "target", "message"] {
                assert!(line.get(key).is_some(), "{key} missing in {line}");
            }
        }

        // micro health: every node serves.
        let output = Command::new(topology_tests::binary("micro"))
            .args(["--registry=etcd", &registry_address, "health", "go.micro.srv.user"])
            .env_remove("RUST_LOG")
            .output()
            .expect("micro health");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(stdout.contains("\tSERVING\t"), "{stdout}");

        for mut process in [gateway, api, web, srv] {
            assert!(process.terminate(Duration::from_secs(20)).success());
        }
        promtool_ok
    })
    .await
    .expect("topology");
    assert_eq!(promtool_ok, 3);
    collector.abort();
    drop(cluster);
}
