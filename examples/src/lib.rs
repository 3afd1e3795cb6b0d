//! Shared code of the examples: the greeter proto and its handler.

use std::pin::Pin;

use futures::{Stream, StreamExt};

#[allow(missing_debug_implementations, clippy::all)]
pub mod greeter {
    tonic::include_proto!("go.micro.srv.greeter");
}

/// Encoded descriptors of `proto/greeter/greeter.proto`, for the server.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

/// The replies of a streaming method.
pub type Replies = Pin<Box<dyn Stream<Item = Result<greeter::Response, tonic::Status>> + Send>>;

/// Most replies one `Stream` call sends.
pub const MAX_COUNT: i32 = 10_000;

/// The greeter: answers `Hello <name>`; `Stream` answers `count` messages
/// `Hello <name> <i>`, `PingPong` answers each request with `pong <name>`
/// until the caller half-closes (the shapes of go-micro's example service).
#[derive(Debug, Default)]
pub struct Greeter;

#[tonic::async_trait]
impl greeter::greeter_server::Greeter for Greeter {
    async fn hello(
        &self,
        request: tonic::Request<greeter::Request>,
    ) -> Result<tonic::Response<greeter::Response>, tonic::Status> {
        let name = request.into_inner().name;
        if name.trim().is_empty() {
            return Err(tonic::Status::invalid_argument("name cannot be blank"));
        }
        Ok(tonic::Response::new(greeter::Response {
            msg: format!("Hello {name}"),
        }))
    }

    type StreamStream = Replies;

    async fn stream(
        &self,
        request: tonic::Request<greeter::Request>,
    ) -> Result<tonic::Response<Replies>, tonic::Status> {
        let greeter::Request { name, count } = request.into_inner();
        if !(0..=MAX_COUNT).contains(&count) {
            return Err(tonic::Status::invalid_argument(format!(
                "count must be between 0 and {MAX_COUNT}, not {count}"
            )));
        }
        let replies = (1..=count).map(move |i| {
            Ok(greeter::Response {
                msg: format!("Hello {name} {i}"),
            })
        });
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(
            replies,
        ))))
    }

    type PingPongStream = Replies;

    async fn ping_pong(
        &self,
        request: tonic::Request<tonic::Streaming<greeter::Request>>,
    ) -> Result<tonic::Response<Replies>, tonic::Status> {
        let replies = request.into_inner().map(|request| {
            request.map(|request| greeter::Response {
                msg: format!("pong {}", request.name),
            })
        });
        Ok(tonic::Response::new(Box::pin(replies)))
    }
}
