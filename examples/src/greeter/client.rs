//! Calls `go.micro.srv.greeter` by name, found through the registry.
//!
//! ```text
//! cargo run -p examples --bin greeter-client -- --name huohuo
//! ```

use clap::Parser;
use examples::greeter::{Request, greeter_client::GreeterClient};

/// Calls Greeter.Hello on go.micro.srv.greeter.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Who to greet
    #[arg(long, default_value = "huohuo")]
    name: String,
    /// How many calls to make (round robin over the instances)
    #[arg(long, default_value_t = 1)]
    count: u32,
    #[command(flatten)]
    micro: micro::config::MicroArgs,
}

#[tokio::main]
async fn main() {
    micro::log::init();
    let cli: Cli = micro::config::parse();
    let service = match micro::Service::new("go.micro.cli.greeter", &cli.micro).await {
        Ok(service) => service,
        Err(e) if e.is_usage() => micro::config::exit_usage(&e.to_string()),
        Err(e) => {
            eprintln!("greeter-client: {e}");
            std::process::exit(1);
        }
    };
    let mut greeter = GreeterClient::new(service.client().service("go.micro.srv.greeter"));
    for _ in 0..cli.count {
        match greeter
            .hello(Request {
                name: cli.name.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(reply) => println!("{}", reply.into_inner().msg),
            Err(status) => {
                eprintln!("greeter-client: {:?}: {}", status.code(), status.message());
                std::process::exit(1);
            }
        }
    }
}
