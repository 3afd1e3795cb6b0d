//! `micro api`'s edge flags: auth, TLS and rate limits become gateway
//! options, and wrong combinations are usage errors (exit 2).

use clap::Parser;
use micro_cli::{Cli, CliError, Command};

fn options(args: &[&str]) -> Result<micro_api::ApiOptions, CliError> {
    let mut argv = vec!["micro", "api"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    match cli.command {
        Command::Api(args) => args.gateway_options(),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn defaults_are_open_with_a_connection_budget() {
    let options = options(&[]).expect("defaults");
    assert!(options.auth.is_none());
    assert!(options.tls.is_none());
    assert!(options.rate_limits.is_off());
    assert_eq!(options.max_connections, 1024);
    assert_eq!(options.max_connections_per_ip, 256);
    assert_eq!(options.idle_timeout, std::time::Duration::from_secs(60));
}

#[test]
fn auth_and_rate_flags_become_options() {
    let options = options(&[
        "--auth=jwt",
        "--auth_secret=0123456789abcdef0123456789abcdef",
        "--auth_public_paths=/user/account/login,/user/say/*",
        "--rate_limit=10",
        "--rate_burst=20",
    ])
    .expect("options");
    let auth = options.auth.expect("auth on");
    assert_eq!(format!("{:?}", auth.algorithm()), "HS256");
    let per_ip = options.rate_limits.per_ip.expect("per ip");
    assert_eq!((per_ip.per_second.get(), per_ip.burst.get()), (10, 20));
    assert!(options.rate_limits.per_route.is_none());
}

#[test]
fn wrong_combinations_are_usage_errors() {
    for args in [
        &["--auth=jwt"][..],
        &["--auth=basic", "--auth_secret=x"],
        &["--auth_public_paths=/a"],
        &[
            "--auth=jwt",
            "--auth_secret=x",
            "--auth_public_key=/nonexistent.pem",
        ],
        &["--auth=jwt", "--auth_public_key=/nonexistent.pem"],
        &[
            "--auth=jwt",
            "--auth_secret=x",
            "--auth_public_paths=no-slash",
        ],
        &["--tls_cert_file=/nonexistent.pem"],
        &[
            "--tls_cert_file=/nonexistent.pem",
            "--tls_key_file=/nonexistent.pem",
        ],
        &["--rate_burst=5"],
        &["--rate_limit=0"],
    ] {
        match options(args) {
            Err(e) => assert_eq!(e.exit_code(), 2, "{args:?}: {e:?}"),
            Ok(_) => panic!("{args:?} accepted"),
        }
    }
}
