//! `user-client`: the tutorial's client. Finds go.micro.srv.user through the
//! registry and calls it.
//!
//! ```text
//! user-client                          # QueryUserByName huohuo
//! user-client query --name huohuo
//! user-client register --name huohuo --password-stdin <<< 'a long password'
//! user-client login --name huohuo --password-stdin <<< 'a long password'
//! ```

use clap::{Parser, Subcommand};
use serde_json::json;
use user_proto::SRV_NAME;
use user_proto::user::{self as pb, user_client::UserClient};

/// Calls go.micro.srv.user by name.
#[derive(Parser, Debug)]
#[command(name = "user-client", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    micro: micro::config::MicroArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Look a user up by name (QueryUserByName)
    Query {
        #[arg(long, default_value = "huohuo")]
        name: String,
    },
    /// Create a user
    Register {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        password: Password,
        #[arg(long)]
        email: Option<String>,
    },
    /// Log in and print the token
    Login {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        password: Password,
    },
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct Password {
    /// The password (visible to other local users in the process list; prefer --password-stdin)
    #[arg(long)]
    password: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long = "password-stdin")]
    password_stdin: bool,
}

impl Password {
    fn read(self) -> Result<String, String> {
        if let Some(password) = self.password {
            return Ok(password);
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// On a `current_thread` runtime when the process may use one CPU, else
/// `multi_thread` (`MICRO_RUNTIME` overrides it): see `micro::runtime`.
fn main() {
    micro::runtime::block_on(main_async())
}

async fn main_async() {
    let cli: Cli = micro::config::parse();
    micro::log::init_with(cli.micro.ops.log_format);
    match run(cli).await {
        Ok(output) => println!("{output}"),
        Err(message) => {
            eprintln!("user-client: {message}");
            std::process::exit(1);
        }
    }
}

fn user_json(user: Option<pb::User>) -> serde_json::Value {
    match user {
        Some(u) => {
            json!({"id": u.id, "name": u.name, "email": u.email, "createdTime": u.created_time, "updatedTime": u.updated_time})
        }
        None => serde_json::Value::Null,
    }
}

async fn run(cli: Cli) -> Result<String, String> {
    let service = match micro::Service::new("go.micro.cli.user", &cli.micro).await {
        Ok(service) => service,
        Err(e) if e.is_usage() => micro::config::exit_usage(&e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let mut users = UserClient::new(service.client().service(SRV_NAME));
    let describe = |status: tonic::Status| {
        let err = micro_errors::MicroError::from_status(&status, SRV_NAME);
        format!("{} {}: {}", err.code, err.status, err.detail)
    };
    let command = cli.command.unwrap_or(Command::Query {
        name: "huohuo".into(),
    });
    let output = match command {
        Command::Query { name } => {
            let reply = users
                .query_user_by_name(pb::Request {
                    user_name: name,
                    ..Default::default()
                })
                .await
                .map_err(describe)?
                .into_inner();
            json!({"success": reply.success, "user": user_json(reply.user)})
        }
        Command::Register {
            name,
            password,
            email,
        } => {
            let reply = users
                .register(pb::Request {
                    user_name: name,
                    user_pwd: password.read()?,
                    email: email.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(describe)?
                .into_inner();
            json!({"success": reply.success, "user": user_json(reply.user)})
        }
        Command::Login { name, password } => {
            let reply = users
                .login(pb::LoginRequest {
                    user_name: name,
                    user_pwd: password.read()?,
                })
                .await
                .map_err(describe)?
                .into_inner();
            json!({"success": reply.success, "token": reply.token, "expiresAt": reply.expires_at, "user": user_json(reply.user)})
        }
    };
    Ok(output.to_string())
}
