//! `micro get service NAME`: a service's versions, nodes and endpoints, in
//! go-micro's layout.

use std::fmt::Write as _;

use clap::Subcommand;
use micro::Registry;
use micro::config::MicroArgs;
use micro_registry::{Service, Value};

use crate::{CliError, not_found};

#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// A service's versions, nodes and endpoints
    Service {
        /// The service name, e.g. go.micro.srv.greeter
        name: String,
    },
}

/// `micro get WHAT` with the shared flags: connects to the registry and describes.
pub async fn run(micro: &MicroArgs, what: &GetWhat) -> Result<String, CliError> {
    match what {
        GetWhat::Service { name } => {
            let registry = micro::connect_registry(&micro.registry).await?;
            get_service(registry.as_ref(), name).await
        }
    }
}

/// `micro get service NAME`, in go-micro's layout: per version the nodes,
/// then each endpoint with its request and response fields.
pub async fn get_service(registry: &dyn Registry, name: &str) -> Result<String, CliError> {
    let services = match registry.get_service(name).await {
        Ok(services) if !services.is_empty() => services,
        Ok(_) => return Err(not_found(registry, name)),
        Err(e) if e.is_not_found() => return Err(not_found(registry, name)),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "Registry [{}] get service {name}: {e}",
                registry.name()
            )));
        }
    };
    Ok(format_service(&services))
}

/// go-micro's `get service` text for the versions of one service.
pub fn format_service(services: &[Service]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for service in services {
        lines.push(format!("service  {}", service.name));
        lines.push(format!("\nversion {}", service.version));
        lines.push("\nID\tAddress\tMetadata".into());
        for node in &service.nodes {
            let metadata: Vec<String> = node
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            lines.push(format!(
                "{}\t{}\t{}",
                node.id,
                node.address,
                metadata.join(",")
            ));
        }
    }
    if let Some(first) = services.first() {
        for endpoint in &first.endpoints {
            lines.push(format!("\nEndpoint: {}", endpoint.name));
            if !endpoint.metadata.is_empty() {
                let metadata: Vec<String> = endpoint
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                lines.push(format!("Metadata: {}", metadata.join(",")));
            }
            lines.push(format!(
                "Request: {}",
                format_value(endpoint.request.as_ref())
            ));
            lines.push(format!(
                "\nResponse: {}",
                format_value(endpoint.response.as_ref())
            ));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn format_value(value: Option<&Value>) -> String {
    match value {
        Some(v) if !v.values.is_empty() => {
            let mut out = String::from("{\n");
            for field in &v.values {
                format_field(&mut out, field, 0);
            }
            out.push('}');
            out
        }
        _ => "{}".into(),
    }
}

/// go-micro's `formatEndpoint`: tab-indented `name type`, nested in braces.
/// Names are printed as registered (go-micro lowercased them, which made
/// `userName` read `username`, a name calls reject): the proto field name,
/// which `micro call` accepts, as it accepts the lowerCamelCase JSON name.
fn format_field(out: &mut String, value: &Value, depth: usize) {
    let indent = "\t".repeat(depth + 1);
    let _ = write!(out, "{indent}{} {}", value.name, value.kind);
    if value.values.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" {\n");
    for field in &value.values {
        format_field(out, field, depth + 1);
    }
    let _ = writeln!(out, "{indent}}}");
}
