//! `micro health SERVICE`: asks every node of a service, over gRPC health
//! (`grpc.health.v1.Health/Check`), whether it serves. One line per node:
//! id, address, status, latency; the exit code is 0 only if every node
//! answers SERVING. With `--wait DURATION` it asks again (every 200 ms, for
//! at most that long) until the service is registered and every node serves:
//! a script starts services in the background, then `micro health --wait 30s
//! go.micro.srv.user` before its first call.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use micro::config::MicroArgs;
use micro::{ClientOptions, Registry};
use micro_web::health::{ServingStatus, check};

use crate::CliError;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The service name, e.g. go.micro.srv.user
    pub service: String,
    /// Longest wait for each node (connecting included)
    #[arg(long, default_value = "3s", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Ask again until the service is registered and every node serves, for
    /// at most this long (e.g. 30s); then the last answer is the result
    #[arg(long, value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
}

/// How often `--wait` asks again.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// `micro health` with the shared flags: the registry and the client's
/// options (TLS to the nodes).
pub async fn run(micro: &MicroArgs, args: &HealthArgs) -> Result<String, CliError> {
    let options = micro.client.client_options().map_err(CliError::Usage)?;
    let registry = micro::connect_registry(&micro.registry).await?;
    match args.wait {
        None => health_with(registry.as_ref(), args, &options).await,
        Some(wait) => wait_healthy(registry.as_ref(), args, &options, wait).await,
    }
}

/// [`health_with`] until it succeeds or `wait` has passed (the last answer
/// then): a bounded poll, since a node's serving status has no registry event.
pub async fn wait_healthy(
    registry: &dyn Registry,
    args: &HealthArgs,
    options: &ClientOptions,
    wait: Duration,
) -> Result<String, CliError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let answer = health_with(registry, args, options).await;
        let next = tokio::time::Instant::now() + WAIT_POLL;
        if answer.is_ok() || next >= deadline {
            return answer;
        }
        tracing::debug!(service = %args.service, "not serving yet: {answer:?}");
        tokio::time::sleep_until(next).await;
    }
}

/// `micro health SERVICE`: the table, or [`CliError::Unhealthy`] with it.
pub async fn health(registry: &dyn Registry, args: &HealthArgs) -> Result<String, CliError> {
    health_with(registry, args, &ClientOptions::default()).await
}

/// [`health`] with the client's options (TLS to the nodes).
pub async fn health_with(
    registry: &dyn Registry,
    args: &HealthArgs,
    options: &ClientOptions,
) -> Result<String, CliError> {
    let service = &args.service;
    let versions = match registry.get_service(service).await {
        Ok(found) => found,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "Registry [{}] get service {service}: {e}",
                registry.name()
            )));
        }
    };
    let nodes: Vec<_> = versions.iter().flat_map(|v| v.nodes.iter()).collect();
    if nodes.is_empty() {
        return Err(CliError::Failed(format!(
            "service {service} not found in registry [{}]",
            registry.name()
        )));
    }
    let checks = nodes.iter().map(|node| async move {
        let started = Instant::now();
        let result = check(node, service, args.timeout, options).await;
        (node, result, started.elapsed())
    });
    let results = futures::future::join_all(checks).await;
    let mut out = String::new();
    let mut all_serving = true;
    for (node, result, latency) in results {
        let status = match &result {
            Ok(status) => status.as_str_name().to_string(),
            Err(why) => format!("ERROR ({why})"),
        };
        all_serving &= matches!(result, Ok(ServingStatus::Serving));
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{:.1}ms",
            node.id,
            node.address,
            status,
            latency.as_secs_f64() * 1000.0
        );
    }
    if all_serving {
        Ok(out)
    } else {
        Err(CliError::Unhealthy(out))
    }
}
