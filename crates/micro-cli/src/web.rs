//! `micro web`: the dashboard (see the `micro_web` crate), with go-micro's
//! default port. Loopback by default: its call form can call any service.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use micro::config::MicroArgs;

use crate::CliError;

#[derive(Debug, Args)]
pub struct WebArgs {
    /// Address to listen on; `0.0.0.0:8082` (or `:8082`) serves every interface, which lets anyone who reaches it call your services
    #[arg(long, env = "MICRO_WEB_ADDRESS", default_value = micro_web::DEFAULT_ADDRESS, value_parser = micro_web::parse_address, value_name = "HOST:PORT")]
    pub address: SocketAddr,
    /// Longest a call from the form may take
    #[arg(long = "call_timeout", visible_alias = "call-timeout", env = "MICRO_WEB_CALL_TIMEOUT", default_value = "10s", value_parser = micro::config::positive_duration, value_name = "DURATION")]
    pub call_timeout: Duration,
}

/// `micro web`: serves the dashboard until SIGTERM, SIGINT or SIGQUIT.
pub async fn run(micro: &MicroArgs, args: &WebArgs) -> Result<(), CliError> {
    let options = micro.client.client_options().map_err(CliError::Usage)?;
    let registry = micro::connect_registry(&micro.registry).await?;
    let client = micro::Client::new(registry.clone(), options);
    let shutdown = micro::server::shutdown_signal()
        .map_err(|e| CliError::Failed(format!("cannot install signal handlers: {e}")))?;
    let listener = tokio::net::TcpListener::bind(args.address)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.address)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", args.address)))?;
    if !local.ip().is_loopback() {
        tracing::warn!(
            "micro web listens on {local}, not loopback: anyone who can reach it can call every service through its form"
        );
    }
    let options = micro_web::WebOptions {
        call_timeout: args.call_timeout,
        ..micro_web::WebOptions::for_address(&local)
    };
    tracing::info!("Starting [web] registry [{}]", registry.name());
    tracing::info!("Server [http] Listening on http://{local}");
    micro_web::serve(client, listener, options, shutdown)
        .await
        .map_err(|e| CliError::Failed(format!("micro web failed: {e}")))?;
    tracing::info!("Server [http] Stopped");
    Ok(())
}
