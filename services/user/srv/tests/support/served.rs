//! What a server tells the world it serves: the services in its descriptor
//! set, the endpoints of its registry record, and what its gRPC reflection
//! finds.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use futures::StreamExt;
use micro::SharedRegistry;
use prost::Message;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{FileDescriptorResponse, ServerReflectionRequest};

/// `package.Service` of every service in an encoded descriptor set.
pub fn services_in(set: &[u8]) -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(set).expect("a descriptor set");
    set.file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |service| format!("{}.{}", file.package(), service.name()))
        })
        .collect()
}

/// File names in an encoded descriptor set.
pub fn files_in(set: &[u8]) -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(set).expect("a descriptor set");
    set.file
        .iter()
        .map(|file| file.name().to_string())
        .collect()
}

/// The endpoint names (`Handler.Method`) of `service`'s registry record.
pub async fn registered_endpoints(registry: &SharedRegistry, service: &str) -> BTreeSet<String> {
    let found = registry.get_service(service).await.expect("registered");
    assert!(!found.is_empty(), "{service} is not registered");
    found
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.name.clone()))
        .collect()
}

/// Whether the server at `address` answers a reflection request for the
/// file defining `symbol` (e.g. `go.micro.srv.user.User`) with that file.
pub async fn reflection_finds(address: SocketAddr, symbol: &str) -> bool {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_string())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    match replies.next().await.expect("a reply") {
        Ok(reply) => match reply.message_response {
            Some(MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto,
            })) => !file_descriptor_proto.is_empty(),
            other => panic!("not a file descriptor: {other:?}"),
        },
        Err(status) if status.code() == tonic::Code::NotFound => false,
        Err(status) => panic!("reflection failed: {status}"),
    }
}
