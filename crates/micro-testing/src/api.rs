//! An API service for gateway tests: handler `Say` taking go-micro's
//! `go.api.Request` and answering `go.api.Response`, as the tutorial's
//! user-api does, in a server that can be stopped or crashed.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use micro_errors::MicroError;
use micro_registry::SharedRegistry;
use micro_server::{Server, ServerOptions};
use tonic::{Request, Response, Status};

/// Generated code of `proto/testapi/say.proto` (package `go.micro.api.test`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod say {
    include!(concat!(env!("OUT_DIR"), "/testapi/go.micro.api.test.rs"));
}

/// Encoded descriptors of the test API proto (with `go/api/api.proto`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/testapi/micro_descriptor.bin"));

/// The `id` of the errors the test API returns.
pub const ERROR_ID: &str = "go.micro.api.test";

use say::say_server::{Say, SayServer};

/// The `Say` handler: counts calls and keeps the last request it got.
#[derive(Clone, Debug)]
pub struct TestApi {
    pub instance: String,
    pub hits: Arc<AtomicUsize>,
    pub last: Arc<Mutex<Option<ApiRequest>>>,
}

impl TestApi {
    pub fn new(instance: impl Into<String>) -> Self {
        TestApi {
            instance: instance.into(),
            hits: Arc::default(),
            last: Arc::default(),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The last request a handler received.
    pub fn last_request(&self) -> Option<ApiRequest> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, request: &ApiRequest) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.clone());
    }
}

#[tonic::async_trait]
impl Say for TestApi {
    async fn hello(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        self.record(&request);
        let name = request
            .first_get("name")
            .or_else(|| request.first_post("name"))
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            return Err(MicroError::bad_request(ERROR_ID, "Name cannot be blank").into());
        }
        let body = serde_json::json!({
            "message": format!("Hello {name}"),
            "instance": self.instance,
        });
        let mut response = ApiResponse {
            status_code: 200,
            body: body.to_string(),
            ..ApiResponse::default()
        };
        response.header.insert(
            "X-Instance".into(),
            Pair::new("X-Instance", vec![self.instance.clone()]),
        );
        Ok(Response::new(response))
    }

    async fn status(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        let request = request.into_inner();
        self.record(&request);
        let code = request
            .first_get("code")
            .and_then(|c| c.parse::<i32>().ok())
            .unwrap_or(0);
        let mut response = ApiResponse {
            status_code: code,
            body: "status".into(),
            ..ApiResponse::default()
        };
        response.header.insert(
            "Content-Type".into(),
            Pair::new("Content-Type", vec!["text/plain".into()]),
        );
        if let Some(echo) = request.get.get("header") {
            response
                .header
                .insert("X-Echo".into(), Pair::new("X-Echo", echo.values.clone()));
        }
        Ok(Response::new(response))
    }
}

/// A [`TestApi`] server on its own runtime and thread, like
/// [`TestServer`](crate::TestServer): [`kill`](Self::kill) drops everything
/// without deregistering.
pub struct TestApiServer {
    pub api: TestApi,
    pub address: std::net::SocketAddr,
    pub node_id: String,
    graceful: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestApiServer")
            .field("node_id", &self.node_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl TestApiServer {
    /// Starts `api` registered as `service` in `registry`; returns once it
    /// is registered.
    pub fn start(
        registry: SharedRegistry,
        service: &str,
        api: TestApi,
        options: ServerOptions,
    ) -> TestApiServer {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let service = service.to_string();
        let handler = api.clone();
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let result = runtime.block_on(async move {
                let server = Server::builder(service)
                    .registry(registry)
                    .options(options)
                    .file_descriptor_set(FILE_DESCRIPTOR_SET)
                    .add_service(SayServer::new(handler))
                    .bind()
                    .await
                    .map_err(|e| e.to_string());
                let server = match server {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let mut registered = server.registered();
                let ready = (server.local_addr(), server.node().id.clone());
                tokio::spawn(async move {
                    let _ = registered.wait_for(|r| *r).await;
                    let _ = ready_tx.send(Ok(ready));
                });
                tokio::select! {
                    result = server.run_until(async { let _ = graceful_rx.await; }) => result.map_err(|e| e.to_string()),
                    _ = kill_rx => Ok(()),
                }
            });
            drop(runtime);
            result
        });
        let (address, node_id) = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => panic!("test API server failed to start: {e}"),
            Err(e) => panic!("test API server did not start: {e}"),
        };
        TestApiServer {
            api,
            address,
            node_id,
            graceful: Some(graceful_tx),
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    /// Graceful stop: deregister, drain, stop. Blocks until done.
    pub fn stop(mut self) {
        if let Some(tx) = self.graceful.take() {
            let _ = tx.send(());
        }
        self.join();
    }

    /// Crash: drop everything without deregistering. Blocks until gone.
    pub fn kill(mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
        self.join();
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("test API server failed: {e}"),
                Err(_) => panic!("test API server thread panicked"),
            }
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
