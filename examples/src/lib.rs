//! Shared code of the examples: the greeter proto and its handler.

#[allow(missing_debug_implementations, clippy::all)]
pub mod greeter {
    tonic::include_proto!("go.micro.srv.greeter");
}

/// Encoded descriptors of `proto/greeter/greeter.proto`, for the server.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("micro_descriptor");

/// The greeter: answers `Hello <name>`.
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
}
