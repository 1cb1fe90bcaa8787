//! The `airlock` binary: starts servers (`demo`, `serve`) and talks to one
//! over HTTP for everything else. All logic lives in the library crates;
//! the CLI parses arguments, prints results and maps errors to exit codes,
//! with a module per group of commands.

use clap::{Parser, Subcommand};

use crate::terminal::say_err;

mod args;
mod database;
mod demo;
mod login;
mod notifications;
mod output;
mod oversight;
mod policy;
mod requests;
mod serving;
mod siem;
mod ssh;
mod ssh_sessions;
mod terminal;
mod tokens;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Just-in-time privileged access broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Server(serving::ServerCmd),
    #[command(flatten)]
    Database(database::DatabaseCmd),
    /// Validate Cedar policies and run their tests.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCmd,
    },
    #[command(flatten)]
    Requests(requests::RequestCmd),
    #[command(flatten)]
    Oversight(oversight::OversightCmd),
    #[command(flatten)]
    Session(login::SessionCmd),
    /// SSH sessions recorded on SSH hosts by the companion
    /// (`airlock-session`): `play` one.
    #[command(name = "session")]
    SshSession {
        #[command(subcommand)]
        command: ssh_sessions::SshSessionCmd,
    },
    /// The notification outbox (admins and auditors): backlog, failures,
    /// the last error, and the messages.
    Notifications(notifications::NotificationsArgs),
    /// API tokens: `create`, `list`, `revoke`. Alone: make a config token
    /// and print it with the hash to put in the config.
    Token {
        #[command(subcommand)]
        command: Option<tokens::TokenCmd>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let server = matches!(&cli.command, Cmd::Server(c) if c.runs_server());
    init_logging(server);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say_err!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            say_err!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many errors already quote
/// their cause in their own message.
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Server(c) => serving::run(c).await,
        Cmd::Database(c) => database::run(c).await,
        Cmd::Policy { command } => policy::run(command).await,
        Cmd::Requests(c) => requests::run(c).await,
        Cmd::Oversight(c) => oversight::run(c).await,
        Cmd::Session(c) => login::run(c).await,
        Cmd::SshSession { command } => ssh_sessions::run(command).await,
        Cmd::Notifications(args) => notifications::run(args).await,
        Cmd::Token { command } => tokens::run(command).await,
    }
}
