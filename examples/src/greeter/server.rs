//! The greeter service: `go.micro.srv.greeter`, registered in the registry the
//! flags choose.
//!
//! ```text
//! cargo run -p examples --bin greeter-server -- --registry=memory --server_address=127.0.0.1:0
//! ```

use clap::Parser;
use examples::{FILE_DESCRIPTOR_SET, Greeter, greeter::greeter_server::GreeterServer};

/// Serves go.micro.srv.greeter.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    micro: micro::config::MicroArgs,
}

#[tokio::main]
async fn main() {
    micro::log::init();
    let cli: Cli = micro::config::parse();
    if let Err(e) = run(cli).await {
        if e.is_usage() {
            micro::config::exit_usage(&e.to_string());
        }
        eprintln!("greeter-server: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), micro::Error> {
    let service = micro::Service::new("go.micro.srv.greeter", &cli.micro).await?;
    service
        .server()
        .file_descriptor_set(FILE_DESCRIPTOR_SET)
        .add_service(GreeterServer::new(Greeter))
        .bind()
        .await?
        .run()
        .await?;
    service.shutdown().await;
    Ok(())
}
