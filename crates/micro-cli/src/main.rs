//! `micro`: the API gateway and the command line of the toolkit.
//! See the `micro_cli` library for the commands.

use std::io::Write;

#[tokio::main]
async fn main() {
    micro::log::init();
    let cli: micro_cli::Cli = micro::config::parse();
    match micro_cli::run(cli).await {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(output.as_bytes());
            let _ = stdout.flush();
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
