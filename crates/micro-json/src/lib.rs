//! JSON ↔ protobuf for calls made and served without generated code.
//!
//! What the `micro api` gateway's rpc handler, `micro call` and every toolkit
//! server share:
//!
//! - [`transcode`]: JSON (or a query string) ↔ messages, given descriptors,
//!   in the canonical proto3 form or go-micro's (proto field names);
//! - [`codec`]: tonic codecs for run-time messages and for raw JSON frames;
//! - [`schema`] (feature `client`): service schemas over gRPC reflection,
//!   cached;
//! - [`client`] (feature `client`): [`DynamicClient`], calling any service
//!   with JSON — protobuf where a schema is known, go-micro's
//!   `application/grpc+json` where not.
//!
//! Failures are an [`Error`] with an [`ErrorKind`]; callers map them to their
//! own errors in one place.
//!
//! ```
//! use micro_json::transcode::{JsonForm, json_to_message, message_to_json_in};
//! # let pool = prost_reflect::DescriptorPool::global();
//! # let descriptor = pool.get_message_by_name("google.protobuf.Duration").unwrap();
//! let message = json_to_message(descriptor, br#""1.5s""#)?;
//! assert_eq!(message_to_json_in(&message, JsonForm::GoMicro)?, br#""1.500s""#);
//! # Ok::<(), micro_json::Error>(())
//! ```

#[cfg(feature = "client")]
pub mod client;
pub mod codec;
mod error;
#[cfg(feature = "client")]
pub mod schema;
#[cfg(feature = "client")]
mod target;
pub mod transcode;

#[cfg(feature = "client")]
pub use client::{
    CallOptions, DynamicClient, GRPC_JSON, JsonInput, JsonStream, call_metadata, set_timeout,
    split_endpoint,
};
pub use codec::{DynamicCodec, RawJsonCodec};
pub use error::{Error, ErrorKind};
#[cfg(feature = "client")]
pub use schema::{Lookup, Schema, SchemaCache};
pub use transcode::JsonForm;
