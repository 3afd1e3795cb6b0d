//! `micro new DIR`: go-micro's service template generator. It writes a crate
//! that builds, registers and answers through `micro call` and `micro api`
//! with no edits:
//!
//! ```text
//! micro new hello                # go.micro.srv.hello: Hello.Call {name} → {msg}
//! micro new --type api greeter   # go.micro.api.greeter, behind micro api --handler=api
//! micro new --type web greeter   # go.micro.web.greeter: an axum router calling go.micro.srv.greeter
//! ```
//!
//! The crate depends on this checkout's crates by path (`--micro_path` to
//! change) and gets a copy of its `Cargo.lock`, so it resolves to versions
//! that were tested together and builds offline from cargo's cache.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::CliError;

/// `micro new` flags.
#[derive(Debug, Args, Clone)]
pub struct NewArgs {
    /// Directory of the new crate; its last part names the crate (e.g. hello)
    pub dir: PathBuf,

    /// service: a gRPC service (go.micro.srv.NAME); api: an API service behind `micro api --handler=api` (go.micro.api.NAME); web: a web service, an axum router calling go.micro.srv.NAME (go.micro.web.NAME)
    #[arg(long = "type", default_value = "service", value_name = "TYPE")]
    pub kind: Kind,

    /// Namespace of the service name
    #[arg(long, default_value = "go.micro", value_name = "NS")]
    pub namespace: String,

    /// Short name used in the service name and in gateway paths (default: the directory's name)
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,

    /// Full service name (default: NAMESPACE.srv.ALIAS, NAMESPACE.api.ALIAS or NAMESPACE.web.ALIAS)
    #[arg(long, value_name = "NAME")]
    pub fqdn: Option<String>,

    /// The micro checkout whose crates the new one depends on (default: the one this micro was built from)
    #[arg(long = "micro_path", visible_alias = "micro-path", value_name = "DIR")]
    pub micro_path: Option<PathBuf>,
}

/// The shape of the generated service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A gRPC service, called with `micro call` or `micro api --handler=rpc`
    #[value(alias = "srv")]
    Service,
    /// An API service: HTTP requests as go.api.Request, behind `micro api --handler=api`
    Api,
    /// A web service: an axum router, registered as go-micro's web services
    /// are, calling the gRPC service of the same alias
    Web,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::Service => "srv",
            Kind::Api => "api",
            Kind::Web => "web",
        }
    }
}

/// The checkout this binary was built from.
fn default_micro_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the templates are filled with.
#[derive(Debug)]
struct Names {
    krate: String,
    lib: String,
    alias: String,
    fqdn: String,
    namespace: String,
    package: String,
    /// The gRPC service a web service calls (`NAMESPACE.srv.ALIAS`).
    srv_fqdn: String,
    handler_type: String,
    handler_mod: String,
}

/// `a-b` or `a_b` → `AB`, as go-micro's resolver camel-cases path parts.
fn camel(alias: &str) -> String {
    alias
        .split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// tonic-build's module name for a service: `_` before each capital.
fn snake(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c.to_ascii_lowercase());
        if chars.peek().is_some_and(char::is_ascii_uppercase) {
            out.push('_');
        }
    }
    out
}

/// Lowercase words of letters and digits, each starting with a letter,
/// joined by `sep`.
fn is_words(s: &str, seps: &[char]) -> bool {
    !s.is_empty()
        && s.split(seps).all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// Names the generated code would clash with.
const RESERVED: &[&str] = &[
    "micro",
    "micro-build",
    "micro-api-proto",
    "micro-errors",
    "axum",
    "form-urlencoded",
    "form_urlencoded",
    "clap",
    "prost",
    "tokio",
    "tonic",
    "tonic-prost",
    "serde-json",
    "serde_json",
    "tonic_prost",
    "micro_build",
    "micro_api_proto",
    "micro_errors",
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "proc-macro",
    "self",
    "super",
    "crate",
    "call-request",
    "call-response",
];

fn names(args: &NewArgs) -> Result<Names, CliError> {
    let krate = args
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CliError::Usage(format!("{:?} has no directory name", args.dir)))?
        .to_string();
    if !is_words(&krate, &['-', '_']) || RESERVED.contains(&krate.as_str()) {
        return Err(CliError::Usage(format!(
            "{krate:?} cannot name a crate here: use lowercase letters and digits in words \
             joined by - or _, each starting with a letter, and none of {}",
            RESERVED.join(", ")
        )));
    }
    let namespace = args.namespace.trim_matches('.').to_string();
    if !namespace.split('.').all(|p| is_words(p, &['_'])) {
        return Err(CliError::Usage(format!(
            "--namespace {namespace:?}: use dot-separated lowercase words, e.g. go.micro or com.example"
        )));
    }
    let (alias, fqdn) = match &args.fqdn {
        Some(fqdn) => {
            let alias = fqdn.rsplit('.').next().unwrap_or_default().to_string();
            if let Some(given) = &args.alias
                && *given != alias
            {
                return Err(CliError::Usage(format!(
                    "--alias {given:?} and --fqdn {fqdn:?} disagree: the alias is the last part of the name"
                )));
            }
            (alias, fqdn.clone())
        }
        None => {
            let alias = args
                .alias
                .clone()
                .unwrap_or_else(|| krate.replace('_', "-"));
            let fqdn = format!("{namespace}.{}.{alias}", args.kind.segment());
            (alias, fqdn)
        }
    };
    if !is_words(&alias, &['-']) || RESERVED.contains(&alias.as_str()) {
        return Err(CliError::Usage(format!(
            "alias {alias:?}: use lowercase letters and digits in words joined by -, each starting \
             with a letter (it becomes the gateway path /{alias}/...), or pass --alias"
        )));
    }
    if fqdn.split('.').count() < 2 || !fqdn.split('.').all(|p| is_words(p, &['-', '_'])) {
        return Err(CliError::Usage(format!(
            "service name {fqdn:?}: use dot-separated lowercase words, e.g. go.micro.srv.{alias}"
        )));
    }
    let (service_namespace, _) = fqdn.rsplit_once('.').unwrap_or_default();
    let handler_type = camel(&alias);
    let srv_fqdn = format!("{namespace}.srv.{alias}");
    Ok(Names {
        srv_fqdn,
        lib: krate.replace('-', "_"),
        krate,
        namespace: service_namespace.to_string(),
        package: fqdn.replace('-', "_"),
        handler_mod: snake(&handler_type),
        handler_type,
        alias,
        fqdn,
    })
}

/// One template per generated file: (path, service template, api
/// template, web template if a web service has the file).
const FILES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/new/service/Cargo.toml.tmpl"),
        include_str!("../templates/new/api/Cargo.toml.tmpl"),
        Some(include_str!("../templates/new/web/Cargo.toml.tmpl")),
    ),
    (
        "build.rs",
        include_str!("../templates/new/service/build.rs.tmpl"),
        include_str!("../templates/new/api/build.rs.tmpl"),
        // The same: it compiles the proto of the service it calls.
        Some(include_str!("../templates/new/service/build.rs.tmpl")),
    ),
    (
        "proto/{{alias}}.proto",
        include_str!("../templates/new/service/proto.tmpl"),
        include_str!("../templates/new/api/proto.tmpl"),
        Some(include_str!("../templates/new/service/proto.tmpl")),
    ),
    (
        "src/lib.rs",
        include_str!("../templates/new/service/lib.rs.tmpl"),
        include_str!("../templates/new/api/lib.rs.tmpl"),
        Some(include_str!("../templates/new/web/lib.rs.tmpl")),
    ),
    (
        "src/handler.rs",
        include_str!("../templates/new/service/handler.rs.tmpl"),
        include_str!("../templates/new/api/handler.rs.tmpl"),
        None,
    ),
    (
        "src/main.rs",
        include_str!("../templates/new/service/main.rs.tmpl"),
        include_str!("../templates/new/api/main.rs.tmpl"),
        Some(include_str!("../templates/new/web/main.rs.tmpl")),
    ),
    (
        "examples/client.rs",
        include_str!("../templates/new/service/client.rs.tmpl"),
        include_str!("../templates/new/api/client.rs.tmpl"),
        None,
    ),
    (
        "tests/{{lib}}.rs",
        include_str!("../templates/new/service/test.rs.tmpl"),
        include_str!("../templates/new/api/test.rs.tmpl"),
        Some(include_str!("../templates/new/web/test.rs.tmpl")),
    ),
    (
        "README.md",
        include_str!("../templates/new/service/README.md.tmpl"),
        include_str!("../templates/new/api/README.md.tmpl"),
        Some(include_str!("../templates/new/web/README.md.tmpl")),
    ),
];

/// go-micro's API proto, which API services import.
const GO_API_PROTO: &str = include_str!("../../../proto/go/api/api.proto");

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    vars.iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// A TOML string for a path.
fn toml_path(path: &Path) -> String {
    let text = path.display().to_string();
    serde_json::to_string(&text).unwrap_or(text)
}

/// The files of the new crate, relative to its directory.
fn render(names: &Names, kind: Kind, micro_path: &Path) -> Vec<(PathBuf, String)> {
    let crate_dep = |name: &str| {
        format!(
            "{name} = {{ path = {} }}\n",
            toml_path(&micro_path.join("crates").join(name))
        )
    };
    let micro_deps = match kind {
        Kind::Service => crate_dep("micro"),
        Kind::Api => {
            crate_dep("micro") + &crate_dep("micro-api-proto") + &crate_dep("micro-errors")
        }
        Kind::Web => crate_dep("micro") + &crate_dep("micro-errors"),
    };
    // A web service's proto is the one of the service it calls.
    let package = match kind {
        Kind::Web => names.srv_fqdn.replace('-', "_"),
        _ => names.package.clone(),
    };
    let vars = [
        ("crate", names.krate.clone()),
        ("lib", names.lib.clone()),
        ("alias", names.alias.clone()),
        ("fqdn", names.fqdn.clone()),
        ("namespace", names.namespace.clone()),
        ("package", package),
        ("srv_fqdn", names.srv_fqdn.clone()),
        ("Handler", names.handler_type.clone()),
        ("handler", names.handler_mod.clone()),
        ("micro_path", micro_path.display().to_string()),
        ("micro_deps", micro_deps),
        (
            "micro_build_dep",
            crate_dep("micro-build").trim_end().to_string(),
        ),
    ];
    let mut files: Vec<(PathBuf, String)> = FILES
        .iter()
        .filter_map(|(path, service, api, web)| {
            let template = match kind {
                Kind::Service => Some(*service),
                Kind::Api => Some(*api),
                Kind::Web => *web,
            }?;
            Some((PathBuf::from(fill(path, &vars)), fill(template, &vars)))
        })
        .collect();
    if kind == Kind::Api {
        files.push((PathBuf::from("proto/go/api/api.proto"), GO_API_PROTO.into()));
    }
    files.push((PathBuf::from(".gitignore"), "/target\n".into()));
    files
}

/// `micro new`: writes the crate and says what to do next.
pub fn run(args: &NewArgs) -> Result<String, CliError> {
    let names = names(args)?;
    let micro_path = args.micro_path.clone().unwrap_or_else(default_micro_path);
    let micro_path = micro_path.canonicalize().map_err(|e| {
        CliError::Usage(format!(
            "no micro checkout at {} ({e}); pass --micro_path DIR",
            micro_path.display()
        ))
    })?;
    if !micro_path.join("crates/micro/Cargo.toml").is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a micro checkout (no crates/micro/Cargo.toml); pass --micro_path DIR",
            micro_path.display()
        )));
    }
    let dir = &args.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::Failed(format!(
            "{} already exists and is not empty",
            dir.display()
        )));
    }
    let failed = |what: &Path, e: std::io::Error| {
        CliError::Failed(format!("cannot write {}: {e}", what.display()))
    };
    let mut files = render(&names, args.kind, &micro_path);
    // The versions the checkout was tested with: the new crate resolves
    // without the network.
    if let Ok(lock) = std::fs::read_to_string(micro_path.join("Cargo.lock")) {
        files.push((PathBuf::from("Cargo.lock"), lock));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Creating service {} in {}\n",
        names.fqdn,
        dir.display()
    );
    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(parent, e))?;
        }
        std::fs::write(&full, text).map_err(|e| failed(&full, e))?;
        let _ = writeln!(out, "  {}", path.display());
    }
    let _ = writeln!(
        out,
        "\nBuild and run it (it registers in mDNS by default):\n"
    );
    let _ = writeln!(out, "  cd {} && cargo run", dir.display());
    let _ = writeln!(out, "\nthen, in another terminal:\n");
    match args.kind {
        Kind::Service => {
            let _ = writeln!(
                out,
                "  micro call {} {}.Call '{{\"name\":\"John\"}}'",
                names.fqdn, names.handler_type
            );
            let _ = writeln!(
                out,
                "  micro api --handler=rpc --namespace={} &\n  curl -H 'Content-Type: application/json' -d '{{\"name\":\"John\"}}' http://localhost:8080/{}/call",
                names.namespace, names.alias
            );
        }
        Kind::Api => {
            let _ = writeln!(
                out,
                "  micro api --handler=api --namespace={} &\n  curl \"http://localhost:8080/{}/call?name=John\"",
                names.namespace, names.alias
            );
        }
        Kind::Web => {
            let _ = writeln!(
                out,
                "  micro new --alias {alias} {alias}-srv && (cd {alias}-srv && cargo run) &   # {srv}, which it calls\n  micro web &\n  curl \"http://127.0.0.1:8082/{alias}/{alias}/call?name=John\"",
                alias = names.alias,
                srv = names.srv_fqdn
            );
        }
    }
    let _ = writeln!(out, "\nMore in {}.", dir.join("README.md").display());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &str) -> NewArgs {
        NewArgs {
            dir: dir.into(),
            kind: Kind::Service,
            namespace: "go.micro".into(),
            alias: None,
            fqdn: None,
            micro_path: None,
        }
    }

    #[test]
    fn names_follow_go_micro() {
        let n = names(&args("some/where/hello")).expect("names");
        assert_eq!(
            (n.krate.as_str(), n.fqdn.as_str(), n.namespace.as_str()),
            ("hello", "go.micro.srv.hello", "go.micro.srv")
        );
        assert_eq!(
            (n.handler_type.as_str(), n.handler_mod.as_str()),
            ("Hello", "hello")
        );

        let mut api = args("hello_world");
        api.kind = Kind::Api;
        let n = names(&api).expect("names");
        assert_eq!(n.fqdn, "go.micro.api.hello-world");
        assert_eq!(n.package, "go.micro.api.hello_world");
        assert_eq!(n.lib, "hello_world");
        assert_eq!(
            (n.handler_type.as_str(), n.handler_mod.as_str()),
            ("HelloWorld", "hello_world")
        );

        let mut custom = args("x");
        custom.fqdn = Some("com.example.srv.greeter".into());
        let n = names(&custom).expect("names");
        assert_eq!(
            (n.alias.as_str(), n.namespace.as_str()),
            ("greeter", "com.example.srv")
        );
    }

    #[test]
    fn bad_names_are_usage_errors() {
        for dir in ["Hello", "1st", "micro", "a b", "tonic", "call-request", ""] {
            assert!(
                matches!(names(&args(dir)), Err(CliError::Usage(_))),
                "{dir:?}"
            );
        }
        let mut bad = args("ok");
        bad.namespace = "Go.Micro".into();
        assert!(matches!(names(&bad), Err(CliError::Usage(_))));
        let mut bad = args("ok");
        bad.fqdn = Some("single".into());
        assert!(matches!(names(&bad), Err(CliError::Usage(_))));
    }

    #[test]
    fn every_placeholder_is_filled() {
        let micro_path = default_micro_path();
        for kind in [Kind::Service, Kind::Api, Kind::Web] {
            let mut a = args("hello-world");
            a.kind = kind;
            let n = names(&a).expect("names");
            for (path, text) in render(&n, kind, &micro_path) {
                assert!(!text.contains("{{"), "{kind:?} {}: {text}", path.display());
                assert!(
                    !path.display().to_string().contains('{'),
                    "{}",
                    path.display()
                );
            }
        }
    }
}
