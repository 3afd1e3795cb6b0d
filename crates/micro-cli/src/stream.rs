//! `micro stream SERVICE ENDPOINT [JSON]`: opens a stream to an endpoint
//! and prints each reply message as one line of JSON, as they come.
//!
//! ```text
//! micro stream go.micro.srv.greeter Greeter.Stream '{"name": "John", "count": 3}'
//! printf '{"name":"b"}\n{"name":"c"}\n' | \
//!     micro stream --address 127.0.0.1:50051 go.micro.srv.greeter Greeter.PingPong '{"name":"a"}'
//! ```
//!
//! The JSON argument (default `{}`) is the first message; for client- and
//! bidi-streaming endpoints each further line of stdin (one JSON message a
//! line; blank lines skipped) is sent as the next, and the end of stdin ends
//! the sending side. The stream ends when the service ends it: exit code 0
//! at a normal end, 1 with the status on stderr on an error, 2 for bad
//! input. go-micro's `micro stream` exits 1 with `EOF` at a normal end,
//! runs the messages together, and ignores `--metadata`; this one does not.
//!
//! Messages go out as `application/grpc+json`, which go-micro services and
//! toolkit services both take on every streaming method: no schema needed.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use futures::{Stream, StreamExt};
use micro::Client;
use micro::config::MicroArgs;
use micro_json::CallOptions;

use crate::CliError;
use crate::call::{Output, dynamic_client, parse_metadata};

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The service name, e.g. go.micro.srv.greeter
    pub service: String,
    /// The endpoint, Handler.Method, e.g. Greeter.Stream
    pub endpoint: String,
    /// The first request message as JSON (default {}); more come from stdin, one a line
    #[arg(default_value = "{}")]
    pub request: String,
    /// Metadata to send with the stream, KEY=VALUE (repeatable), e.g. authorization='Bearer TOKEN'
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Stream from this node (host:port) directly instead of one found in the registry
    #[arg(long, env = "MICRO_ADDRESS", value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// How to print each reply: json (one line each) or text (as received)
    #[arg(
        long,
        short = 'o',
        env = "MICRO_OUTPUT",
        default_value = "json",
        value_name = "FORMAT"
    )]
    pub output: Output,
    /// How long the whole stream may last
    #[arg(long, default_value = "1h", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

impl StreamArgs {
    /// The arguments of `micro stream SERVICE ENDPOINT REQUEST`, no flags.
    pub fn new(service: &str, endpoint: &str, request: &str) -> Self {
        StreamArgs {
            service: service.to_string(),
            endpoint: endpoint.to_string(),
            request: request.to_string(),
            metadata: Vec::new(),
            address: None,
            output: Output::Json,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// A line of input, or why it could not be read.
pub type InputLine = Result<String, String>;

/// `micro stream` with the shared flags: stdin for further messages,
/// stdout for the replies (written as they come, so the returned text is
/// empty).
pub async fn run(micro: &MicroArgs, args: &StreamArgs) -> Result<String, CliError> {
    let registry: micro_registry::SharedRegistry = if args.address.is_some() {
        std::sync::Arc::new(micro_registry::memory::MemoryRegistry::new())
    } else {
        micro::connect_registry(&micro.registry).await?
    };
    // Streams have no attempt timeout (see micro_client::Streaming): the
    // stream's own bound is --timeout.
    let options = micro.client.client_options().map_err(CliError::Usage)?;
    let client = Client::new(registry, options);
    let mut stdout = std::io::stdout();
    stream_with(&client, args, stdin_lines(), &mut stdout).await?;
    Ok(String::new())
}

/// The lines of stdin, read on a thread of their own: a blocked read never
/// holds up the end of the process, and the thread ends at end of input or
/// once nobody takes its lines.
fn stdin_lines() -> impl Stream<Item = InputLine> + Send + Unpin + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<InputLine>(16);
    let spawned = std::thread::Builder::new()
        .name("micro-stream-stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| e.to_string());
                let failed = line.is_err();
                if tx.blocking_send(line).is_err() || failed {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot read stdin: {e}");
    }
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    }))
}

/// `micro stream` with its flags: the first message from the arguments,
/// the next from `input` (one JSON a line), each reply written to `out` as
/// one line.
pub async fn stream_with<I>(
    client: &Client,
    args: &StreamArgs,
    input: I,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError>
where
    I: Stream<Item = InputLine> + Send + Unpin + 'static,
{
    let (service, endpoint) = (args.service.as_str(), args.endpoint.as_str());
    micro_json::split_endpoint(endpoint).ok_or_else(|| {
        CliError::Usage(format!(
            "endpoint {endpoint:?} is not Handler.Method (e.g. Greeter.Stream)"
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(&args.request)
        .map_err(|e| CliError::Usage(format!("request is not JSON: {e}")))?;
    let metadata = parse_metadata(&args.metadata)?;
    let dynamic = dynamic_client(client, service, args.address.as_deref()).await?;

    // Bad input stops the stream: the loop below sees the error and
    // returns it; the sending side waits for that (so the service never
    // sees an early end of the input as a normal one), then ends.
    let (bad_tx, mut bad_rx) = tokio::sync::mpsc::unbounded_channel::<CliError>();
    let (_returned, returned_rx) = tokio::sync::oneshot::channel::<()>();
    let rest = futures::stream::unfold(
        (input, bad_tx, returned_rx, 0usize),
        |(mut input, bad, returned, mut number)| async move {
            loop {
                number += 1;
                let error = match input.next().await? {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => match serde_json::from_str::<serde::de::IgnoredAny>(&line) {
                        Ok(_) => {
                            return Some((line.into_bytes(), (input, bad, returned, number)));
                        }
                        Err(e) => CliError::Usage(format!("stdin line {number} is not JSON: {e}")),
                    },
                    Err(e) => CliError::Failed(format!("cannot read stdin: {e}")),
                };
                let _ = bad.send(error);
                let _ = returned.await;
                return None;
            }
        },
    );
    let requests = futures::stream::once(futures::future::ready(args.request.clone().into_bytes()))
        .chain(rest);

    let options = CallOptions {
        timeout: args.timeout,
        idempotent: false,
        metadata,
    };
    let failed = |e: micro_json::Error| {
        let err = e.to_micro_error("go.micro.client");
        CliError::Failed(format!(
            "error streaming {service} {endpoint}: {} ({} {})",
            err.detail, err.code, err.status
        ))
    };
    let mut replies = dynamic
        .stream_endpoint(service, endpoint, requests, options)
        .await
        .map_err(failed)?;
    loop {
        let reply = tokio::select! {
            biased;
            Some(error) = bad_rx.recv() => return Err(error),
            reply = replies.next() => reply.map_err(failed)?,
        };
        let Some(reply) = reply else {
            return Ok(());
        };
        let line = match args.output {
            // The service's JSON on one line whatever its layout.
            Output::Json => serde_json::from_slice::<serde_json::Value>(&reply)
                .map(|value| value.to_string())
                .map_err(|e| CliError::Failed(format!("reply is not JSON: {e}")))?,
            Output::Text => String::from_utf8_lossy(&reply).into_owned(),
        };
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Failed(format!("cannot write the reply: {e}")))?;
    }
}
