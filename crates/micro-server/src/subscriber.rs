//! Subscribers: typed handlers of broker topics, as go-micro's
//! `micro.RegisterSubscriber`.
//!
//! A message is decoded by its `Content-Type` header as go-micro's codecs
//! decode it: protobuf for `application/grpc` (the default when there is
//! none), `application/grpc+proto`, `application/proto`,
//! `application/protobuf` and `application/octet-stream`; JSON for
//! `application/json` and `application/grpc+json`, through the message's
//! descriptor (so the descriptors given to
//! [`ServerBuilder::file_descriptor_set`](crate::ServerBuilder::file_descriptor_set)
//! must hold it). Any other content type, or bytes that do not decode, is a
//! refused delivery, as is a handler's error or panic.
//!
//! Each subscriber is registered as an endpoint named `Func` with metadata
//! `{"subscriber":"true","topic":<topic>}`, after the handlers' endpoints,
//! by topic in descending order (go-micro's `Register`).

use std::future::Future;
use std::sync::Arc;

use micro_broker::{Event, Handler, HandlerError, HandlerFuture, Header, SubscribeOptions};
use micro_json::transcode::json_to_protobuf;
use prost_reflect::{DescriptorPool, MessageDescriptor};

/// The codecs' content types.
const PROTO_TYPES: &[&str] = &[
    "application/grpc",
    "application/grpc+proto",
    "application/proto",
    "application/protobuf",
    "application/octet-stream",
];
const JSON_TYPES: &[&str] = &["application/json", "application/grpc+json"];
/// go-micro's default when a message names no content type.
const DEFAULT_CONTENT_TYPE: &str = "application/grpc";

/// A message as a subscriber's handler receives it.
#[derive(Clone, Debug)]
pub struct Received<M> {
    pub topic: String,
    /// The message's headers but `Content-Type`: the publisher's metadata
    /// (`Micro-From-Service`, `Micro-Topic`, ...), go-micro's context.
    pub header: Header,
    pub message: M,
}

/// One subscription a server makes when it runs.
pub(crate) struct Subscriber {
    pub(crate) topic: String,
    pub(crate) options: SubscribeOptions,
    /// The message's full proto name.
    pub(crate) message: String,
    pub(crate) typed: Arc<dyn Typed>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("queue", &self.options.queue)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// A handler of one message type, erased.
pub(crate) trait Typed: Send + Sync + 'static {
    fn call(&self, descriptor: Option<&MessageDescriptor>, event: Event) -> HandlerFuture;
}

struct TypedHandler<M, F> {
    handler: F,
    _message: std::marker::PhantomData<fn() -> M>,
}

impl<M, F, Fut> Typed for TypedHandler<M, F>
where
    M: prost::Message + Default + 'static,
    F: Fn(Received<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, descriptor: Option<&MessageDescriptor>, event: Event) -> HandlerFuture {
        match decode::<M>(descriptor, &event) {
            Ok(message) => {
                let topic = event.topic().to_string();
                let mut header = event.into_message().header;
                header.remove(micro_broker::CONTENT_TYPE_HEADER);
                Box::pin((self.handler)(Received {
                    topic,
                    header,
                    message,
                }))
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl Subscriber {
    pub(crate) fn new<M, F, Fut>(topic: String, options: SubscribeOptions, handler: F) -> Subscriber
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(Received<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        Subscriber {
            topic,
            options,
            message: M::full_name(),
            typed: Arc::new(TypedHandler {
                handler,
                _message: std::marker::PhantomData,
            }),
        }
    }

    /// The broker handler: decodes with the pool's descriptor of the
    /// message, then runs the typed handler.
    pub(crate) fn handler(&self, pool: &DescriptorPool) -> Arc<dyn Handler> {
        let descriptor = pool.get_message_by_name(&self.message);
        if descriptor.is_none() {
            tracing::warn!(
                "no descriptor for {} (subscriber of {}): JSON messages cannot be decoded; pass its FileDescriptorSet to file_descriptor_set()",
                self.message,
                self.topic
            );
        }
        let typed = self.typed.clone();
        Arc::new(move |event: Event| typed.call(descriptor.as_ref(), event))
    }
}

fn decode<M: prost::Message + Default>(
    descriptor: Option<&MessageDescriptor>,
    event: &Event,
) -> Result<M, HandlerError> {
    let message = event.message();
    let content_type = message
        .header(micro_broker::CONTENT_TYPE_HEADER)
        .filter(|ct| !ct.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    let base = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if PROTO_TYPES.contains(&base.as_str()) {
        return M::decode(&message.body[..])
            .map_err(|e| HandlerError::new(format!("cannot decode {content_type} message: {e}")));
    }
    if JSON_TYPES.contains(&base.as_str()) {
        let Some(descriptor) = descriptor else {
            return Err(HandlerError::new(
                "JSON message for a type without descriptors".to_string(),
            ));
        };
        let protobuf = json_to_protobuf(descriptor.clone(), &message.body)
            .map_err(|e| HandlerError::new(format!("cannot decode {content_type} message: {e}")))?;
        return M::decode(&protobuf[..])
            .map_err(|e| HandlerError::new(format!("cannot decode {content_type} message: {e}")));
    }
    Err(HandlerError::new(format!(
        "unsupported content type {content_type:?} (supported: {}, {})",
        PROTO_TYPES.join(", "),
        JSON_TYPES.join(", ")
    )))
}
