//! `micro`: the API gateway and the command line of the toolkit.
//! See the `micro_cli` library for the commands.

use std::io::Write;

/// On a `current_thread` runtime when the process may use one CPU, else
/// `multi_thread` (`MICRO_RUNTIME` overrides it): see `micro::runtime`.
fn main() {
    micro::runtime::block_on(main_async())
}

async fn main_async() {
    let cli = match micro_cli::Cli::try_parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        // --help and --version: printed, exit code 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => micro::config::exit_usage(&e.to_string()),
    };
    micro::log::init_with(cli.micro.ops.log_format);
    match micro_cli::run(cli).await {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(output.as_bytes());
            let _ = stdout.flush();
        }
        Err(micro_cli::CliError::Unhealthy(report)) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(report.as_bytes());
            let _ = stdout.flush();
            std::process::exit(1);
        }
        Err(e) => {
            if e.exit_code() == 2 {
                micro::config::exit_usage(e.message());
            }
            eprintln!("micro: {}", e.message());
            std::process::exit(e.exit_code());
        }
    }
}
