//! `micro publish TOPIC MESSAGE`: publishes one message, as go-micro's
//! `micro publish` does, and prints `ok`.
//!
//! ```text
//! micro publish go.micro.topic.greet '{"name":"John"}'
//! micro --broker=http publish --metadata foo=bar go.micro.evt.user '{"id":"1"}'
//! ```
//!
//! The message goes with `Content-Type` (`--content_type`, default
//! `application/json`, whose message must be JSON), `Micro-Topic` and the
//! `--metadata` pairs (keys Title-Cased, as go-micro sends them). Exit code
//! 0 once every subscriber took it, 1 with the reason on stderr if one did
//! not (or none could be reached), 2 for bad input. A topic nobody
//! subscribes to is not an error (go-micro's http broker made it one).

use clap::Args;
use micro::config::MicroArgs;

use crate::CliError;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic, e.g. go.micro.topic.greet
    pub topic: String,
    /// The message (JSON unless --content_type says otherwise)
    pub message: String,
    /// Metadata to send as message headers, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// The message's content type
    #[arg(
        long = "content_type",
        visible_alias = "content-type",
        default_value = micro::event::JSON_CONTENT_TYPE,
        value_name = "TYPE"
    )]
    pub content_type: String,
}

/// `micro publish` with the shared flags.
pub async fn run(micro: &MicroArgs, args: &PublishArgs) -> Result<String, CliError> {
    let message = message(args)?;
    let registry = micro::connect_registry(&micro.registry).await?;
    let broker = micro::connect_broker(&micro.broker, registry.clone())?;
    let result = publish(broker.clone(), message).await;
    broker.close().await;
    registry.close().await;
    result
}

/// The checked message of `args`.
fn message(args: &PublishArgs) -> Result<Message, CliError> {
    let mut metadata = Vec::with_capacity(args.metadata.len());
    for pair in &args.metadata {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| CliError::Usage(format!("--metadata {pair:?} is not KEY=VALUE")))?;
        metadata.push((key.trim().to_string(), value.to_string()));
    }
    if is_json(&args.content_type) {
        serde_json::from_str::<serde_json::Value>(&args.message).map_err(|e| {
            CliError::Usage(format!(
                "the message is not JSON ({e}); give --content_type for other bytes"
            ))
        })?;
    }
    Ok(Message {
        topic: args.topic.clone(),
        content_type: args.content_type.clone(),
        body: args.message.clone().into_bytes(),
        metadata,
    })
}

/// One message to publish.
#[derive(Debug)]
struct Message {
    topic: String,
    content_type: String,
    body: Vec<u8>,
    metadata: Vec<(String, String)>,
}

async fn publish(
    broker: micro::broker::SharedBroker,
    message: Message,
) -> Result<String, CliError> {
    let mut event = micro::Event::new(&message.topic, broker);
    for (key, value) in &message.metadata {
        event = event.with_metadata(key, value);
    }
    match event.publish_raw(&message.content_type, message.body).await {
        Ok(()) => Ok("ok\n".into()),
        Err(micro::broker::Error::Invalid(e)) => Err(CliError::Usage(e)),
        Err(e) => Err(CliError::Failed(format!("publish {}: {e}", message.topic))),
    }
}

/// Whether `content_type` is JSON's.
pub(crate) fn is_json(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    base.eq_ignore_ascii_case("application/json")
        || base.eq_ignore_ascii_case("application/grpc+json")
}
