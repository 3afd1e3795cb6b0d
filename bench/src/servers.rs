//! The servers under test, each run as a child process of the benchmark
//! (`micro-bench serve ...`), pinned to the server core by its parent.
//!
//! Each prints `READY <address>` once it accepts connections and stops when
//! its stdin closes (its parent ended) or on SIGTERM/SIGKILL by PID.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use micro_registry::memory::MemoryRegistry;
use micro_server::{Server, ServerOptions};
use micro_testing::greeter::greeter_server::{Greeter, GreeterServer};
use micro_testing::greeter::{Request, Response as HelloResponse};
use tonic::transport::server::TcpIncoming;
use user_proto::user::Request as UserRequest;
use user_proto::user::user_client::UserClient;

/// The same trivial handler behind every gRPC server.
#[derive(Clone, Copy, Debug, Default)]
pub struct BenchGreeter;

#[tonic::async_trait]
impl Greeter for BenchGreeter {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<HelloResponse>, tonic::Status> {
        let name = request.into_inner().name;
        Ok(tonic::Response::new(HelloResponse {
            msg: format!("Hello {name}"),
        }))
    }

    micro_testing::greeter_streams!();
}

/// A greeter that is slow (`delay`) or flaky (answers `Unavailable` to a
/// share of calls): the gray failures of R10 and R12.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gray {
    pub delay: std::time::Duration,
    /// Percent of calls answered `Unavailable`.
    pub unavailable_percent: u8,
}

#[derive(Clone, Debug)]
struct GrayGreeter {
    gray: Gray,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

#[tonic::async_trait]
impl Greeter for GrayGreeter {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<HelloResponse>, tonic::Status> {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !self.gray.delay.is_zero() {
            tokio::time::sleep(self.gray.delay).await;
        }
        // `percent` calls of every 100, scattered (a multiplicative hash of
        // the call number) rather than in runs, as a flaky node fails.
        if (n.wrapping_mul(2_654_435_761) >> 7) % 100 < u64::from(self.gray.unavailable_percent) {
            return Err(tonic::Status::unavailable("flaky on purpose"));
        }
        BenchGreeter.hello(request).await
    }

    micro_testing::greeter_streams!();
}

/// Which server a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    /// micro-server's `Server` (go-micro paths, reflection, registration in
    /// its own in-process memory registry).
    Micro,
    /// `tonic::transport::Server` with the greeter only.
    Tonic,
    /// axum answering a fixed JSON body on GET /user/say/hello.
    Axum,
    /// axum → tonic: GET /user/say/hello → go.api Request to user-api's
    /// `Say.Hello` on one fixed address → the JSON body it answers.
    MiniGateway,
    /// axum → tonic for the rpc handler: POST /user/user/query-user-by-name
    /// JSON → `User.QueryUserByName` on user-srv at one fixed address →
    /// JSON, written by hand for this one endpoint.
    MiniRpcGateway,
    /// axum → tonic for user-web's hello: GET /user/say/hello?name=N →
    /// `User.QueryUserByName` on user-srv at one fixed address →
    /// `{"id","username"}`, the handler user-web runs without the toolkit
    /// (no registry, client stack, edge layer or telemetry).
    MiniWeb,
    /// An OTLP/gRPC trace receiver that counts the spans it gets and drops
    /// them (prints `SPANS <total>` after each export).
    OtlpSink,
}

/// Tokio runtime flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// `multi_thread` (one worker per core the process may use: 1 when pinned).
    Multi,
    CurrentThread,
}

impl Flavor {
    pub fn runtime(self) -> tokio::runtime::Runtime {
        let mut builder = match self {
            Flavor::Multi => tokio::runtime::Builder::new_multi_thread(),
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        };
        builder.enable_all().build().expect("a tokio runtime")
    }

    pub fn label(self) -> &'static str {
        match self {
            Flavor::Multi => "multi_thread",
            Flavor::CurrentThread => "current_thread",
        }
    }
}

/// Runs one server until stdin closes.
pub fn serve(kind: ServerKind, flavor: Flavor, upstream: Option<SocketAddr>, gray: Gray) {
    let runtime = flavor.runtime();
    runtime.block_on(async move {
        let stdin_closed = async {
            // Blocking read on a plain thread: EOF means the parent is gone.
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await;
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        match kind {
            ServerKind::Micro => {
                drop(listener);
                // Spans exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (overhead runs).
                let _trace =
                    micro_telemetry::trace::init("go.micro.srv.greeter").expect("tracing set up");
                let builder = Server::builder("go.micro.srv.greeter")
                    .observer(Arc::new(micro_telemetry::server::ServerTelemetry))
                    .registry(Arc::new(MemoryRegistry::new()))
                    .options(ServerOptions {
                        address: "127.0.0.1:0".into(),
                        ..ServerOptions::default()
                    })
                    .file_descriptor_set(micro_testing::FILE_DESCRIPTOR_SET);
                // The plain greeter unless a gray failure is asked for, so
                // R1/R5 compare the same handler as raw tonic's.
                let builder = if gray.delay.is_zero() && gray.unavailable_percent == 0 {
                    builder.add_service(GreeterServer::new(BenchGreeter))
                } else {
                    builder.add_service(GreeterServer::new(GrayGreeter {
                        gray,
                        calls: Arc::default(),
                    }))
                };
                let server = builder.bind().await.expect("micro server binds");
                println!("READY {}", server.local_addr());
                server
                    .run_until(stdin_closed)
                    .await
                    .expect("micro server runs");
            }
            ServerKind::Tonic => {
                println!("READY {}", listener.local_addr().expect("local address"));
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .add_service(GreeterServer::new(BenchGreeter))
                    .serve_with_incoming_shutdown(incoming, stdin_closed)
                    .await
                    .expect("tonic server runs");
            }
            ServerKind::Axum => {
                println!("READY {}", listener.local_addr().expect("local address"));
                let app = axum::Router::new().route(
                    "/user/say/hello",
                    axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
                        axum::Json(serde_json::json!({
                            "id": "1",
                            "username": q.get("name").cloned().unwrap_or_default(),
                        }))
                    }),
                );
                axum::serve(listener, app)
                    .with_graceful_shutdown(stdin_closed)
                    .await
                    .expect("axum serves");
            }
            ServerKind::OtlpSink => {
                use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
                println!("READY {}", listener.local_addr().expect("local address"));
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(OtlpSink::default()))
                    .serve_with_incoming_shutdown(incoming, stdin_closed)
                    .await
                    .expect("OTLP sink runs");
            }
            ServerKind::MiniWeb | ServerKind::MiniRpcGateway | ServerKind::MiniGateway => {
                let upstream = upstream.expect("--upstream is required for the minimal gateways");
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{upstream}"))
                    .expect("upstream uri")
                    .tcp_nodelay(true)
                    .connect_lazy();
                let app = match kind {
                    ServerKind::MiniWeb => axum::Router::new()
                        .route("/user/say/hello", axum::routing::get(mini_web))
                        .with_state(UserClient::new(channel)),
                    ServerKind::MiniRpcGateway => axum::Router::new()
                        .route(
                            "/user/user/query-user-by-name",
                            axum::routing::post(mini_rpc_gateway),
                        )
                        .with_state(UserClient::new(channel)),
                    _ => axum::Router::new()
                        .route("/user/say/hello", axum::routing::get(mini_gateway))
                        .with_state(channel),
                };
                println!("READY {}", listener.local_addr().expect("local address"));
                axum::serve(listener, app)
                    .with_graceful_shutdown(stdin_closed)
                    .await
                    .expect("axum serves");
            }
        }
    });
}

/// The least a gateway must do for the api handler: query → go.api Request,
/// one gRPC call, go.api Response → HTTP.
async fn mini_gateway(
    State(channel): State<tonic::transport::Channel>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut get = HashMap::new();
    for (key, value) in query {
        get.insert(
            key.clone(),
            Pair {
                key,
                values: vec![value],
            },
        );
    }
    let request = ApiRequest {
        method: "GET".into(),
        path: "/user/say/hello".into(),
        get,
        ..ApiRequest::default()
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return (http::StatusCode::SERVICE_UNAVAILABLE, "upstream not ready").into_response();
    }
    let path = http::uri::PathAndQuery::from_static("/go.micro.api.user.Say/Hello");
    let codec = tonic_prost::ProstCodec::<ApiRequest, ApiResponse>::default();
    match grpc.unary(tonic::Request::new(request), path, codec).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let status = u16::try_from(reply.status_code)
                .ok()
                .and_then(|c| http::StatusCode::from_u16(c).ok())
                .filter(|_| reply.status_code != 0)
                .unwrap_or(http::StatusCode::OK);
            (
                status,
                [(http::header::CONTENT_TYPE, "application/json")],
                reply.body,
            )
                .into_response()
        }
        Err(status) => {
            (http::StatusCode::BAD_GATEWAY, status.message().to_string()).into_response()
        }
    }
}

/// The least an rpc-style gateway must do for one endpoint: JSON → request
/// message, one gRPC call, reply → JSON (proto3 JSON names, int64 as string).
async fn mini_rpc_gateway(
    State(mut client): State<UserClient<tonic::transport::Channel>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let request = UserRequest {
        user_name: body["userName"].as_str().unwrap_or_default().to_string(),
        ..UserRequest::default()
    };
    match client.query_user_by_name(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let mut json = serde_json::json!({ "success": reply.success });
            if let Some(error) = reply.error {
                json["error"] = serde_json::json!({ "code": error.code, "detail": error.detail });
            }
            if let Some(user) = reply.user {
                json["user"] = serde_json::json!({
                    "id": user.id.to_string(),
                    "name": user.name,
                    "createdTime": user.created_time.to_string(),
                    "updatedTime": user.updated_time.to_string(),
                    "email": user.email,
                });
            }
            axum::Json(json).into_response()
        }
        Err(status) => {
            (http::StatusCode::BAD_GATEWAY, status.message().to_string()).into_response()
        }
    }
}

/// user-web's hello over a direct tonic channel.
async fn mini_web(
    State(mut client): State<UserClient<tonic::transport::Channel>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let request = UserRequest {
        user_name: query.get("name").cloned().unwrap_or_default(),
        ..UserRequest::default()
    };
    match client.query_user_by_name(request).await {
        Ok(reply) => match reply.into_inner().user {
            Some(user) => {
                axum::Json(serde_json::json!({"id": user.id.to_string(), "username": user.name}))
                    .into_response()
            }
            None => (http::StatusCode::BAD_GATEWAY, "no user").into_response(),
        },
        Err(status) => {
            (http::StatusCode::BAD_GATEWAY, status.message().to_string()).into_response()
        }
    }
}

/// Counts exported spans, keeps none.
#[derive(Default)]
struct OtlpSink {
    spans: std::sync::atomic::AtomicU64,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for OtlpSink
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let count: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter())
            .map(|s| s.spans.len())
            .sum();
        let total = self
            .spans
            .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed)
            + count as u64;
        println!("SPANS {total}");
        Ok(tonic::Response::new(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
                partial_success: None,
            },
        ))
    }
}
