//! `micro list services`: every service in the registry, one name a line,
//! sorted (go-micro's `micro list services`). With none registered, stdout
//! stays empty (as go-micro's, so scripts can count lines) and one line on
//! stderr says so.

use std::fmt::Write as _;

use clap::Subcommand;
use micro::Registry;
use micro::config::MicroArgs;

use crate::CliError;

#[derive(Debug, Subcommand)]
pub enum ListWhat {
    /// Every registered service, one name per line
    Services,
}

/// `micro list WHAT` with the shared flags: connects to the registry and lists.
pub async fn run(micro: &MicroArgs, what: &ListWhat) -> Result<String, CliError> {
    match what {
        ListWhat::Services => {
            let registry = micro::connect_registry(&micro.registry).await?;
            let names = list_services(registry.as_ref()).await?;
            if names.is_empty() {
                eprintln!(
                    "micro: no services registered in registry [{}]",
                    registry.name()
                );
            }
            Ok(names)
        }
    }
}

/// `micro list services`: the sorted names, one a line.
pub async fn list_services(registry: &dyn Registry) -> Result<String, CliError> {
    let services = registry.list_services().await.map_err(|e| {
        CliError::Failed(format!("Registry [{}] list services: {e}", registry.name()))
    })?;
    let mut names: Vec<String> = services.into_iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    Ok(names.iter().fold(String::new(), |mut out, name| {
        let _ = writeln!(out, "{name}");
        out
    }))
}
