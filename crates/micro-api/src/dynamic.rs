//! The rpc handler's JSON calls: [`micro_json`]'s machinery (reflection
//! schemas, transcoding, the dynamic client), re-exported, and its errors
//! mapped to the gateway's HTTP errors in one place.

pub use micro_json::client::{CallOptions, DynamicClient, JsonInput};
pub use micro_json::schema::{Schema, SchemaCache};
pub use micro_json::transcode::{
    json_to_message, message_to_json, query_to_json, query_to_message,
};
pub use micro_json::{DynamicCodec, ErrorKind};

use crate::error::{ApiError, GATEWAY_ID};

impl From<micro_json::Error> for ApiError {
    fn from(err: micro_json::Error) -> Self {
        match (err.status(), err.service(), err.endpoint()) {
            (Some(status), Some(service), Some(endpoint)) => {
                ApiError::from_call(status, service, endpoint)
            }
            _ => ApiError(err.to_micro_error(GATEWAY_ID)),
        }
    }
}
