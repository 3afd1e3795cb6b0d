//! Test support: the greeter service of go-micro's examples, servers that
//! can be stopped gracefully or crashed on purpose, child processes stopped
//! by their PID ([`process`]), waits for a client's nodes ([`nodes`]),
//! tasks aborted on drop ([`AbortOnDrop`], `micro-serve`'s) and a bare HTTP
//! GET ([`http`]).

pub mod api;
pub mod cargo;
pub mod http;
pub mod nats;
pub mod nodes;
pub mod process;
pub mod tls;

pub use micro_serve::AbortOnDrop;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use micro_registry::SharedRegistry;
use micro_server::{Server, ServerBuilder, ServerOptions};
use tonic::{Request, Response, Status};

/// Generated code of `proto/greeter/greeter.proto` (package `go.micro.srv.greeter`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod greeter {
    tonic::include_proto!("go.micro.srv.greeter");
}

/// Encoded descriptors of the greeter proto.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

use greeter::greeter_server::{Greeter, GreeterServer};

/// The reply stream of the greeter's `Stream` and `PingPong`.
pub type ReplyStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<greeter::Response, Status>> + Send>>;

/// Most replies one `Stream` call sends: a bound on what a request can ask.
pub const MAX_STREAM_COUNT: i32 = 10_000;

/// The greeter's `Stream` as go-micro's example answers it: `count`
/// replies `Hello <name> <i>`, i = 1…count, each with `suffix` appended
/// (e.g. ` from <instance>`; empty for go-micro's exact text).
pub fn stream_replies(
    request: greeter::Request,
    suffix: &str,
) -> Result<Response<ReplyStream>, Status> {
    if !(0..=MAX_STREAM_COUNT).contains(&request.count) {
        return Err(Status::invalid_argument(format!(
            "count must be between 0 and {MAX_STREAM_COUNT}, not {}",
            request.count
        )));
    }
    let (name, suffix) = (request.name, suffix.to_string());
    let replies = (1..=request.count).map(move |i| {
        Ok(greeter::Response {
            msg: format!("Hello {name} {i}{suffix}"),
        })
    });
    Ok(Response::new(Box::pin(futures::stream::iter(replies))))
}

/// The greeter's `PingPong`: `pong <name>` for each request, until the
/// caller half-closes; a broken request stream ends the call with its error.
pub fn ping_pong(requests: tonic::Streaming<greeter::Request>) -> Response<ReplyStream> {
    use futures::StreamExt;
    let replies = requests.map(|request| {
        request.map(|request| greeter::Response {
            msg: format!("pong {}", request.name),
        })
    });
    Response::new(Box::pin(replies))
}

/// The greeter's `Stream` and `PingPong` as go-micro's example answers them
/// ([`stream_replies`] with no suffix, [`ping_pong`]), for an
/// `impl Greeter` whose streams have nothing of their own to add:
///
/// ```ignore
/// #[tonic::async_trait]
/// impl Greeter for MyGreeter {
///     async fn hello(&self, request: Request<greeter::Request>) -> ... { ... }
///     micro_testing::greeter_streams!();
/// }
/// ```
#[macro_export]
macro_rules! greeter_streams {
    () => {
        type StreamStream = $crate::ReplyStream;

        // Written as `async_trait` expands an `async fn`: the attribute on
        // the impl sees this macro unexpanded.
        fn stream<'life0, 'async_trait>(
            &'life0 self,
            request: ::tonic::Request<$crate::greeter::Request>,
        ) -> ::std::pin::Pin<
            ::std::boxed::Box<
                dyn ::std::future::Future<
                        Output = ::std::result::Result<
                            ::tonic::Response<$crate::ReplyStream>,
                            ::tonic::Status,
                        >,
                    > + ::std::marker::Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            let answer = $crate::stream_replies(request.into_inner(), "");
            ::std::boxed::Box::pin(::std::future::ready(answer))
        }

        type PingPongStream = $crate::ReplyStream;

        fn ping_pong<'life0, 'async_trait>(
            &'life0 self,
            request: ::tonic::Request<::tonic::Streaming<$crate::greeter::Request>>,
        ) -> ::std::pin::Pin<
            ::std::boxed::Box<
                dyn ::std::future::Future<
                        Output = ::std::result::Result<
                            ::tonic::Response<$crate::ReplyStream>,
                            ::tonic::Status,
                        >,
                    > + ::std::marker::Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            let answer = $crate::ping_pong(request.into_inner());
            ::std::boxed::Box::pin(::std::future::ready(::std::result::Result::Ok(answer)))
        }
    };
}

/// A greeter that counts its calls, can be slow, and remembers the deadline
/// each call arrived with.
#[derive(Clone, Debug)]
pub struct TestGreeter {
    pub instance: String,
    pub delay: Duration,
    pub hits: Arc<AtomicUsize>,
    pub deadlines: Arc<Mutex<Vec<Option<String>>>>,
    /// Notified (one permit per call) when a call starts.
    pub started: Arc<tokio::sync::Semaphore>,
    /// Calls that ran to the end.
    pub completed: Arc<AtomicUsize>,
    /// The request metadata (headers) of each call, in order.
    pub metadata: Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>,
}

impl TestGreeter {
    pub fn new(instance: impl Into<String>) -> Self {
        TestGreeter {
            instance: instance.into(),
            delay: Duration::ZERO,
            hits: Arc::default(),
            deadlines: Arc::default(),
            started: Arc::new(tokio::sync::Semaphore::new(0)),
            completed: Arc::default(),
            metadata: Arc::default(),
        }
    }

    /// The metadata the last call arrived with.
    pub fn last_metadata(&self) -> Option<tonic::metadata::MetadataMap> {
        self.metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }

    /// Waits until a call has started (each call can be waited for once).
    pub async fn call_started(&self) {
        if let Ok(permit) = self.started.acquire().await {
            permit.forget();
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl Greeter for TestGreeter {
    async fn hello(
        &self,
        request: Request<greeter::Request>,
    ) -> Result<Response<greeter::Response>, Status> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.started.add_permits(1);
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.deadlines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(deadline);
        self.metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.metadata().clone());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        let name = request.into_inner().name;
        if name == "fail" {
            return Err(Status::internal(format!(
                "{} failed on purpose",
                self.instance
            )));
        }
        Ok(Response::new(greeter::Response {
            msg: format!("Hello {name} from {}", self.instance),
        }))
    }

    type StreamStream = ReplyStream;

    /// [`stream_replies`]; the name `fail` gets one reply, then an
    /// `Internal` error.
    async fn stream(
        &self,
        request: Request<greeter::Request>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.metadata().clone());
        let request = request.into_inner();
        if request.name == "fail" {
            let failure = Status::internal(format!("{} failed on purpose", self.instance));
            let replies = [
                Ok(greeter::Response {
                    msg: "Hello fail 1".into(),
                }),
                Err(failure),
            ];
            return Ok(Response::new(Box::pin(futures::stream::iter(replies))));
        }
        stream_replies(request, "")
    }

    type PingPongStream = ReplyStream;

    async fn ping_pong(
        &self,
        request: Request<tonic::Streaming<greeter::Request>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.metadata().clone());
        Ok(ping_pong(request.into_inner()))
    }
}

/// Options for a test server: loopback only, short TTLs.
pub fn loopback_options() -> ServerOptions {
    ServerOptions {
        address: "127.0.0.1:0".into(),
        register_ttl: Duration::from_secs(10),
        register_interval: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        ..ServerOptions::default()
    }
}

/// A server on its own runtime and thread, so that it can be crashed:
/// [`kill`](Self::kill) drops the runtime with every connection and task of
/// the server, without deregistering, as a `kill -9` would.
pub struct Crashable {
    pub address: std::net::SocketAddr,
    pub node_id: String,
    graceful: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl fmt::Debug for Crashable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crashable")
            .field("node_id", &self.node_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Crashable {
    /// Starts a server for `service` whose handlers `add` puts on the
    /// builder; returns once it is registered.
    pub fn start(
        registry: SharedRegistry,
        service: &str,
        options: ServerOptions,
        add: impl FnOnce(ServerBuilder) -> ServerBuilder + Send + 'static,
    ) -> Crashable {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let service = service.to_string();
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let result = runtime.block_on(async move {
                let builder = Server::builder(service).registry(registry).options(options);
                let server = match add(builder).bind().await {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e.to_string());
                    }
                };
                // Ready once registered, so callers find it at once.
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
            // Dropping the runtime here cancels every task of the server:
            // listener, connections, and the registration loop.
            drop(runtime);
            result
        });
        let (address, node_id) = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(e) => panic!("test server did not start: {e}"),
        };
        Crashable {
            address,
            node_id,
            graceful: Some(graceful_tx),
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    /// Graceful stop: deregister, drain, stop. Blocks until done.
    pub fn stop(mut self) {
        self.begin_stop();
        self.join();
    }

    /// Signals a graceful stop without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.graceful.take() {
            let _ = tx.send(());
        }
    }

    /// Crash: drop everything without deregistering. Blocks until gone.
    pub fn kill(mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
        self.join();
    }

    /// Waits for the server thread to end.
    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("test server failed: {e}"),
                Err(_) => panic!("test server thread panicked"),
            }
        }
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A [`TestGreeter`] server that can be crashed (see [`Crashable`]).
#[derive(Debug)]
pub struct TestServer {
    pub greeter: TestGreeter,
    pub address: std::net::SocketAddr,
    pub node_id: String,
    server: Crashable,
}

impl TestServer {
    /// Starts a greeter registered as `service` in `registry`; returns once it
    /// is registered.
    pub fn start(
        registry: SharedRegistry,
        service: &str,
        greeter: TestGreeter,
        options: ServerOptions,
    ) -> TestServer {
        let handler = greeter.clone();
        let server = Crashable::start(registry, service, options, move |builder| {
            builder
                .file_descriptor_set(FILE_DESCRIPTOR_SET)
                .add_service(GreeterServer::new(handler))
        });
        TestServer {
            greeter,
            address: server.address,
            node_id: server.node_id.clone(),
            server,
        }
    }

    /// `n` greeters `instance-0` … `instance-{n-1}` on loopback, each
    /// registered as `service`.
    pub fn start_many(registry: SharedRegistry, service: &str, n: usize) -> Vec<TestServer> {
        (0..n)
            .map(|i| {
                TestServer::start(
                    registry.clone(),
                    service,
                    TestGreeter::new(format!("instance-{i}")),
                    loopback_options(),
                )
            })
            .collect()
    }

    /// Graceful stop: deregister, drain, stop. Blocks until done.
    pub fn stop(self) {
        self.server.stop();
    }

    /// Signals a graceful stop without waiting for it.
    pub fn begin_stop(&mut self) {
        self.server.begin_stop();
    }

    /// Crash: drop everything without deregistering. Blocks until gone.
    pub fn kill(self) {
        self.server.kill();
    }

    /// Waits for the server thread to end.
    pub fn join(&mut self) {
        self.server.join();
    }
}
