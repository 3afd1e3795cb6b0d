//! One node's gRPC health (`grpc.health.v1.Health/Check`), as `micro health`
//! and the dashboard ask it.

use std::time::Duration;

use micro_client::{ClientOptions, error_chain};
use tonic_health::pb::HealthCheckRequest;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks `node` whether it serves `service`, over TLS when `options` say so
/// (a node marked `secure` is refused without it), waiting at most
/// `timeout` (connecting included): its status, or why there is none.
pub async fn check(
    node: &micro_registry::Node,
    service: &str,
    timeout: Duration,
    options: &ClientOptions,
) -> Result<ServingStatus, String> {
    if let Some(refused) = micro_client::tls::refusal(node, options.tls.as_ref()) {
        return Err(refused);
    }
    let options = ClientOptions {
        dial_timeout: timeout,
        ..options.clone()
    };
    let endpoint = micro_client::endpoint_for(&node.address, &options)?.timeout(timeout);
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {}", error_chain(&e)))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok(ServingStatus::try_from(reply.get_ref().status).unwrap_or(ServingStatus::Unknown))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}
