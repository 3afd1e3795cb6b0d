//! The crate map's arrows (README, "Architecture"): crates low in the map do
//! not link what sits above them or beside them. Telemetry plugs into the
//! client (`micro_client::CallObserver`, with micro-telemetry's `client`
//! feature) and the server (`micro_server::ServerObserver`, with its
//! `server` feature), and the registry backends count skipped entries in
//! `micro_registry::skipped`; so the backends link neither the client nor a
//! metrics library, and the server links neither the client nor telemetry.
//!
//! Each package is resolved alone, with its default features, as a program
//! depending on it would get it: `cargo tree -e normal -p <package>`
//! (normal dependencies only, no dev- or build-dependencies).

use micro_testing::cargo::linked;

/// `(package, extra cargo tree arguments, crates it must not link)`.
const RULES: &[(&str, &[&str], &[&str])] = &[
    ("micro-registry", &[], &ABOVE_REGISTRY_BACKENDS),
    ("micro-registry-etcd", &[], &ABOVE_REGISTRY_BACKENDS),
    ("micro-registry-mdns", &[], &ABOVE_REGISTRY_BACKENDS),
    (
        "micro-selector",
        &[],
        &["micro-registry", "micro-client", "micro-telemetry"],
    ),
    (
        "micro-client",
        &[],
        &[
            "micro-server",
            "micro-telemetry",
            "micro-config",
            "micro-json",
        ],
    ),
    (
        "micro-server",
        &[],
        &[
            "micro-telemetry",
            "prometheus",
            "opentelemetry",
            "micro-client",
            "micro-config",
            "micro-selector",
        ],
    ),
    (
        "micro-telemetry",
        &[],
        &["micro-client", "micro-server", "micro-config"],
    ),
    (
        "micro-json",
        &["--no-default-features"],
        &["micro-client", "micro-server", "micro-telemetry"],
    ),
    // The broker sits with the registry: servers and clients use it, it
    // uses neither (telemetry plugs in through its BrokerObserver).
    (
        "micro-broker",
        &[],
        &[
            "micro-client",
            "micro-server",
            "micro-telemetry",
            "micro-config",
            "micro-json",
            "prometheus",
            "opentelemetry",
        ],
    ),
    // The serve helper is a leaf: any listener can use it.
    (
        "micro-serve",
        &[],
        &[
            "micro-registry",
            "micro-client",
            "micro-server",
            "micro-telemetry",
            "micro-config",
        ],
    ),
];

/// What neither the registry nor its backends link.
const ABOVE_REGISTRY_BACKENDS: [&str; 7] = [
    "micro-client",
    "micro-server",
    "micro-telemetry",
    "micro-config",
    "prometheus",
    "opentelemetry",
    "tonic-health",
];

/// `forbidden` itself or one of its family (`opentelemetry_sdk`, `opentelemetry-otlp`).
fn is(name: &str, forbidden: &str) -> bool {
    name.strip_prefix(forbidden)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_']))
}

#[test]
fn lower_crates_do_not_link_higher_ones() {
    let mut broken = Vec::new();
    for (package, extra, forbidden) in RULES {
        let names = linked(package, extra);
        for f in *forbidden {
            let mut found: Vec<&str> = names
                .iter()
                .filter(|n| is(n, f))
                .map(String::as_str)
                .collect();
            found.sort_unstable();
            found.dedup();
            if !found.is_empty() {
                broken.push(format!("{package} links {}", found.join(", ")));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "crate map arrows broken (see README, Architecture; \
         `cargo tree -e normal -i <crate> -p <package>` shows the path):\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn family_names_match() {
    assert!(is("opentelemetry", "opentelemetry"));
    assert!(is("opentelemetry_sdk", "opentelemetry"));
    assert!(is("opentelemetry-otlp", "opentelemetry"));
    assert!(!is("micro-client", "micro-cli"));
    assert!(!is("micro-registry-etcd", "micro-registry-etcd2"));
}
