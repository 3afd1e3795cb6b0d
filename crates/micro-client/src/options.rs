//! [`ClientOptions`]: what a client does, stage by stage. Each stage is
//! given the settings it uses when the channel is built (the deadline stage
//! `request_timeout`, the retry stage `retries`, `retry_budget` and
//! `hedge_after`, the attempt stage `attempt_timeout`); the node pool keeps
//! the node settings (dialling, TLS, probes, ejection).

use std::time::Duration;

use micro_selector::Strategy;

use crate::retry::budget::BudgetOptions;
use crate::tls::ClientTls;

/// Client behaviour; see the crate docs for what each knob means. The
/// defaults are the associated constants (`ClientOptions::REQUEST_TIMEOUT`
/// ...), which the command-line flags use too.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of a whole call, retries included, unless the caller sets one.
    pub request_timeout: Duration,
    /// Deadline of one attempt on one node.
    pub attempt_timeout: Duration,
    /// Extra attempts after the first, each on a different node.
    pub retries: u32,
    /// Bound on retries per service.
    pub retry_budget: BudgetOptions,
    /// How to choose a node.
    pub selector: Strategy,
    /// TCP connect timeout per node.
    pub dial_timeout: Duration,
    /// First probe period of a node that refused a connection.
    pub backoff_min: Duration,
    /// Longest probe period.
    pub backoff_max: Duration,
    /// Failed attempts in a row that eject a node (0: never eject).
    pub eject_after: u32,
    /// First ejection time; doubles per ejection.
    pub ejection_min: Duration,
    /// Longest ejection time.
    pub ejection_max: Duration,
    /// For idempotent calls: when the first attempt has not answered after
    /// this long, send the call to a second node too and take the first
    /// answer (`None`: never).
    pub hedge_after: Option<Duration>,
    /// Deadline of a [`Streaming`](crate::Streaming) call whose caller sets
    /// none (`None`: no deadline, as go-micro's `StreamTimeout` of 0).
    pub stream_timeout: Option<Duration>,
    /// TLS to nodes (`--client_tls_*`); plaintext if `None`.
    pub tls: Option<ClientTls>,
}

impl ClientOptions {
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    /// Well under the request timeout, so a hung node leaves time for a
    /// second attempt; well over what a healthy call takes, even on a slow,
    /// busy machine.
    pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const RETRIES: u32 = 1;
    /// See `docs/benchmarks.md` (R10–R12) for why p2c.
    pub const SELECTOR: Strategy = Strategy::P2c;
    pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
    pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// Envoy's default for consecutive failures.
    pub const EJECT_AFTER: u32 = 5;
    pub const EJECTION_MIN: Duration = Duration::from_secs(10);
    pub const EJECTION_MAX: Duration = Duration::from_secs(300);
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Self::REQUEST_TIMEOUT,
            attempt_timeout: Self::ATTEMPT_TIMEOUT,
            retries: Self::RETRIES,
            retry_budget: BudgetOptions::default(),
            selector: Self::SELECTOR,
            dial_timeout: Self::DIAL_TIMEOUT,
            backoff_min: Self::BACKOFF_MIN,
            backoff_max: Self::BACKOFF_MAX,
            eject_after: Self::EJECT_AFTER,
            ejection_min: Self::EJECTION_MIN,
            ejection_max: Self::EJECTION_MAX,
            hedge_after: None,
            stream_timeout: None,
            tls: None,
        }
    }
}
