//! One attempt: one request to one node, bounded by the attempt timeout.
//!
//! The attempt's deadline is the call's, or sooner: `attempt_timeout` after
//! it starts. A node that accepts the request and never answers (frozen,
//! overloaded, a tarpit) therefore costs one attempt, not the whole call.
//! What happened is reported to the node (health: down, failures in a row;
//! load: latency and calls in flight) and returned as an [`Outcome`] for the
//! retry loop to judge.

use std::error::Error as StdError;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::endpoint::NodeEntry;
use crate::error::NodeFailure;
use crate::resolve::NodeSet;
use crate::retry::Sent;
use crate::timeout;

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The node answered; `status` is the error status of a trailers-only
    /// answer (`None`: a success, or a status only the trailers will tell).
    Answered {
        response: http::Response<Body>,
        status: Option<Code>,
    },
    /// The node failed: no connection, the connection broke, or no answer
    /// within the attempt timeout.
    Failed { failure: NodeFailure, sent: Sent },
    /// The call's own deadline passed.
    Deadline,
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Sends `request` to `entry` (now: `started`), with `grpc-timeout` set to what the attempt
/// may take.
///
/// With `bounded` false the attempt may take until the call's deadline: an
/// idempotent call's last possible attempt (no other node, or no retry
/// left) gains nothing from giving up early, and an attempt timeout there
/// would only cut short a caller upstream that is itself retrying.
pub(crate) async fn run(
    set: &NodeSet,
    entry: &Arc<NodeEntry>,
    mut request: http::Request<Body>,
    started: Instant,
    deadline: Instant,
    bounded: bool,
) -> Outcome {
    let options = set.options();
    if let Some(reason) = &entry.refusal {
        return Outcome::Failed {
            failure: NodeFailure::Tls(reason.to_string()),
            sent: Sent::No,
        };
    }
    let attempt_deadline = if bounded {
        (started + options.attempt_timeout).min(deadline)
    } else {
        deadline
    };
    // Whether running out of time here is the attempt's limit (the node is
    // slow) rather than the call's (the caller's deadline).
    let attempt_bound = attempt_deadline < deadline;
    request.headers_mut().insert(
        timeout::GRPC_TIMEOUT,
        timeout::encode(attempt_deadline - started),
    );

    entry.count_attempt();
    let in_flight = entry.load().start(started);
    let mut channel = entry.channel.clone();
    let result = tokio::time::timeout_at(attempt_deadline, async move {
        channel.ready().await?;
        channel.call(request).await
    })
    .await;

    let timed_out = || {
        if attempt_bound {
            Some(NodeFailure::Timeout(options.attempt_timeout))
        } else {
            None
        }
    };
    let outcome = match result {
        Err(_elapsed) => match timed_out() {
            Some(failure) => Outcome::Failed {
                failure,
                sent: Sent::Maybe,
            },
            None => Outcome::Deadline,
        },
        Ok(Err(error)) => match classify(&error, options.tls.is_some()) {
            // The channel enforces the grpc-timeout we set.
            Class::Timeout => match timed_out() {
                Some(failure) => Outcome::Failed {
                    failure,
                    sent: Sent::Maybe,
                },
                None => Outcome::Deadline,
            },
            Class::Tls(reason) => Outcome::Failed {
                failure: NodeFailure::Tls(reason),
                sent: Sent::No,
            },
            Class::NotSent => Outcome::Failed {
                failure: NodeFailure::Connect(error_chain(&error)),
                sent: Sent::No,
            },
            Class::MaybeSent => Outcome::Failed {
                failure: NodeFailure::Connection(error_chain(&error)),
                sent: Sent::Maybe,
            },
        },
        Ok(Ok(response)) => {
            let status = grpc_status(response.headers());
            // tonic servers enforce the grpc-timeout we sent and answer
            // Cancelled "Timeout expired" a moment before our own timer
            // fires: that is the attempt's (or the call's) time running out.
            if status == Some(Code::Cancelled)
                && response
                    .headers()
                    .get(GRPC_MESSAGE)
                    .is_some_and(|m| m.as_bytes().starts_with(b"Timeout"))
            {
                match timed_out() {
                    Some(failure) => Outcome::Failed {
                        failure,
                        sent: Sent::Maybe,
                    },
                    None => Outcome::Deadline,
                }
            } else {
                Outcome::Answered { response, status }
            }
        }
    };

    // What the node gets credited with.
    match &outcome {
        Outcome::Answered { status, .. } => {
            let node_failed = *status == Some(Code::Unavailable);
            in_flight.finish(node_failed);
            if node_failed {
                eject_if_due(set, entry);
            } else {
                entry.mark_answered();
            }
        }
        Outcome::Failed { failure, .. } => {
            in_flight.finish(true);
            match failure {
                // The connection failed: the node is down until a probe
                // reaches it.
                NodeFailure::Connect(_) | NodeFailure::Connection(_) => {
                    entry.mark_refused(options);
                }
                // Reachable but not usable (a certificate refused): an
                // outlier, not a crash; a TCP probe would only let it back.
                NodeFailure::Timeout(_) | NodeFailure::Tls(_) => eject_if_due(set, entry),
            }
        }
        // Not the node's fault: nothing learnt.
        Outcome::Deadline => drop(in_flight),
    }
    outcome
}

fn eject_if_due(set: &NodeSet, entry: &NodeEntry) {
    if entry.mark_failed(set.options()) {
        set.try_eject(entry);
    }
}

enum Class {
    Timeout,
    /// The TLS handshake failed (the request was not sent).
    Tls(String),
    NotSent,
    MaybeSent,
}

/// How far a failed request got, from the error's type (never its text).
fn classify(error: &(dyn StdError + 'static), tls: bool) -> Class {
    let mut source = Some(error);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return Class::Timeout;
        }
        if err.is::<tonic::ConnectError>() {
            return match tls.then(|| tls_failure(err)).flatten() {
                Some(reason) => Class::Tls(reason),
                None => Class::NotSent,
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return Class::NotSent;
            }
        }
        source = err.source();
    }
    // A TLS error after the handshake (an alert from the node).
    if tls && let Some(rustls) = find_rustls(error) {
        return Class::Tls(describe(rustls));
    }
    Class::MaybeSent
}

fn find_rustls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(error);
    while let Some(err) = source {
        if let Some(rustls) = err.downcast_ref::<rustls::Error>() {
            return Some(rustls);
        }
        if let Some(rustls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Some(rustls);
        }
        source = err.source();
    }
    None
}

/// What went wrong in a TLS handshake, if that is how connecting failed:
/// rustls's verdict (certificate refused, alert from the node, not TLS at
/// all), or the node closing the connection mid-handshake.
fn tls_failure(connect: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(rustls) = find_rustls(connect) {
        return Some(describe(rustls));
    }
    let mut source = connect.source();
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return Some(
                "the node closed the connection during the TLS handshake (it may require a client certificate, or not serve TLS)"
                    .into(),
            );
        }
        source = err.source();
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidMessage(_) => format!(
            "{error} (the node does not seem to serve TLS: is it plaintext? --client_tls_ca makes every call TLS)"
        ),
        rustls::Error::InvalidCertificate(_) => {
            format!(
                "{error} (the node's certificate does not chain to --client_tls_ca, or does not name the node's address; see --client_tls_server_name)"
            )
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA,
        ) => format!(
            "{error} (the node requires a client certificate it trusts: --client_tls_cert_file, --client_tls_key_file)"
        ),
        _ => error.to_string(),
    }
}

/// The status of a trailers-only response (an error before any message).
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value: &HeaderValue = headers.get(GRPC_STATUS)?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    (code != 0).then(|| Code::from_i32(code))
}

/// The whole error chain as text, for logs.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}
