//! `micro subscribe TOPIC`: prints each message on a topic as one line of
//! JSON, as it comes.
//!
//! ```text
//! micro subscribe go.micro.evt.user
//! micro subscribe --queue audit --count 1 go.micro.topic.greet
//! ```
//!
//! Each line is `{"topic":…,"header":{…},"body":…}`: the body as JSON when
//! the message's content type is JSON (and it parses), else base64. With
//! `--queue NAME` it joins that queue group (one copy of each message to the
//! group) instead of taking every message. It runs until `--count`
//! messages were printed (exit code 0) or until SIGINT/SIGTERM, and then
//! unsubscribes (with the http broker: deregisters).

use std::io::Write;

use base64::Engine;
use clap::Args;
use micro::broker::{Event, HandlerError, SharedBroker, SubscribeOptions};
use micro::config::MicroArgs;
use tokio::sync::oneshot;

use crate::CliError;
use crate::publish::is_json;

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The topic, e.g. go.micro.evt.user
    pub topic: String,
    /// Join this queue group: the group shares the messages, one copy each
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Exit after this many messages
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `micro subscribe` with the shared flags: lines on stdout as they come.
pub async fn run(micro: &MicroArgs, args: &SubscribeArgs) -> Result<String, CliError> {
    let registry = micro::connect_registry(&micro.registry).await?;
    let broker = micro::connect_broker(&micro.broker, registry.clone())?;
    let stop = micro::server::shutdown_signal().map_err(|e| CliError::Failed(e.to_string()))?;
    let result = subscribe_with(&broker, args, &mut std::io::stdout(), stop).await;
    broker.close().await;
    registry.close().await;
    result.map(|()| String::new())
}

/// Subscribes on `broker` and writes a line to `out` for each message,
/// until `--count` messages or `stop`.
pub async fn subscribe_with(
    broker: &SharedBroker,
    args: &SubscribeArgs,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    if args.count == Some(0) {
        return Ok(());
    }
    // A message is acknowledged once its line is written (a durable
    // broker delivers again what was taken but not printed).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Event, oneshot::Sender<()>)>(64);
    let handler = move |event: Event| {
        let tx = tx.clone();
        async move {
            let stopping = || HandlerError::new("micro subscribe is stopping");
            let (printed, written) = oneshot::channel();
            tx.send((event, printed)).await.map_err(|_| stopping())?;
            written.await.map_err(|_| stopping())
        }
    };
    let options = SubscribeOptions::default().with_queue(args.queue.clone());
    let subscription = broker
        .subscribe(&args.topic, options, std::sync::Arc::new(handler))
        .await
        .map_err(|e| match e {
            micro::broker::Error::Invalid(e) => CliError::Usage(e),
            e => CliError::Failed(format!("subscribe {}: {e}", args.topic)),
        })?;
    tracing::info!("Subscribed to {}", args.topic);
    tokio::pin!(stop);
    let mut printed = 0u64;
    let mut print = |event: &Event| -> Result<bool, CliError> {
        writeln!(out, "{}", line(event))
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Failed(format!("writing to stdout: {e}")))?;
        printed += 1;
        Ok(args.count.is_some_and(|count| printed >= count))
    };
    let mut result = loop {
        let event = tokio::select! {
            biased;
            event = rx.recv() => event,
            () = &mut stop => break Ok(false),
        };
        let Some((event, printed)) = event else {
            break Ok(true);
        };
        let done = print(&event);
        if done.is_ok() {
            let _ = printed.send(());
        }
        match done {
            Ok(false) => {}
            done => break done,
        }
    };
    // Stopped by a signal: messages already taken (their publishers were
    // told so) are printed too; later ones are refused, not lost silently.
    rx.close();
    while let (Ok(false), Ok((event, printed))) = (&result, rx.try_recv()) {
        result = print(&event);
        if result.is_ok() {
            let _ = printed.send(());
        }
    }
    subscription.unsubscribe().await;
    result.map(|_| ())
}

/// `{"topic":…,"header":{…},"body":…}` for one message.
pub fn line(event: &Event) -> String {
    let message = event.message();
    let content_type = message
        .header(micro::broker::CONTENT_TYPE_HEADER)
        .unwrap_or_default();
    let body = if is_json(content_type) {
        serde_json::from_slice::<serde_json::Value>(&message.body).ok()
    } else {
        None
    }
    .unwrap_or_else(|| {
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&message.body))
    });
    serde_json::json!({
        "topic": event.topic(),
        "header": message.header,
        "body": body,
    })
    .to_string()
}
