//! An API service for gateway tests: handler `Say` taking go-micro's
//! `go.api.Request` and answering `go.api.Response`, as the tutorial's
//! user-api does, in a server that can be stopped or crashed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use micro_api_proto::{Pair, Request as ApiRequest, Response as ApiResponse};
use micro_errors::MicroError;
use micro_registry::SharedRegistry;
use micro_server::ServerOptions;

use crate::Crashable;
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
    /// The gRPC metadata of the last call.
    pub last_metadata: Arc<Mutex<Option<tonic::metadata::MetadataMap>>>,
}

impl TestApi {
    pub fn new(instance: impl Into<String>) -> Self {
        TestApi {
            instance: instance.into(),
            hits: Arc::default(),
            last: Arc::default(),
            last_metadata: Arc::default(),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The last request a handler received.
    pub fn last_request(&self) -> Option<ApiRequest> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The gRPC metadata the last call arrived with.
    pub fn last_metadata(&self) -> Option<tonic::metadata::MetadataMap> {
        self.last_metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, request: &ApiRequest) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.clone());
    }
}

#[tonic::async_trait]
impl Say for TestApi {
    async fn hello(&self, request: Request<ApiRequest>) -> Result<Response<ApiResponse>, Status> {
        *self.last_metadata.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(request.metadata().clone());
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

/// A [`TestApi`] server that can be crashed (see [`Crashable`]).
#[derive(Debug)]
pub struct TestApiServer {
    pub api: TestApi,
    pub address: std::net::SocketAddr,
    pub node_id: String,
    server: Crashable,
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
        let handler = api.clone();
        let server = Crashable::start(registry, service, options, move |builder| {
            builder
                .file_descriptor_set(FILE_DESCRIPTOR_SET)
                .add_service(SayServer::new(handler))
        });
        TestApiServer {
            api,
            address: server.address,
            node_id: server.node_id.clone(),
            server,
        }
    }

    /// Graceful stop: deregister, drain, stop. Blocks until done.
    pub fn stop(self) {
        self.server.stop();
    }

    /// Crash: drop everything without deregistering. Blocks until gone.
    pub fn kill(self) {
        self.server.kill();
    }
}
