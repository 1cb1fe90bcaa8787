//! `airlock-session`: sshd's `ForceCommand` for Airlock-certified logins
//! (see the crate's documentation and docs/connectors.md).
//!
//! ```text
//! airlock-session [--config PATH]           run the session sshd started
//! airlock-session [--config PATH] send      post the spooled records now
//! airlock-session [--config PATH] send --retry [--file RECORD]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_session::config::{Config, DEFAULT_PATH};
use airlock_session::session::{self, SshEnv};
use airlock_session::spool;

const USAGE: &str = "usage: airlock-session [--config PATH] [send [--retry] [--file RECORD]]";

fn main() -> ExitCode {
    let mut config_path = PathBuf::from(DEFAULT_PATH);
    let mut send = false;
    let mut retry = false;
    let mut only: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config_path = PathBuf::from(path),
                None => return usage("--config needs a path"),
            },
            "send" => send = true,
            "--retry" if send => retry = true,
            "--file" if send => match args.next() {
                Some(path) => only = Some(PathBuf::from(path)),
                None => return usage("--file needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            // No settings, no session: the companion fails closed.
            eprintln!("airlock-session: {e}");
            return ExitCode::from(1);
        }
    };
    if send {
        return match spool::send_all(&config, retry, only.as_deref()) {
            Ok(sent) => {
                eprintln!(
                    "airlock-session: {} sent, {} refused, {} left",
                    sent.sent, sent.refused, sent.left
                );
                if sent.left == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("airlock-session: {e}");
                ExitCode::from(1)
            }
        };
    }
    // Records left by earlier sessions go first, apart from this one.
    spool::start_sender(&config, &config_path, None);
    let env = SshEnv::from_process();
    match session::run(&config, &env) {
        Ok(outcome) => {
            if let Some(record) = &outcome.spooled {
                spool::start_sender(&config, &config_path, Some(record));
            }
            ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1))
        }
        Err(refusal) => {
            eprintln!("airlock-session: {refusal}");
            ExitCode::from(1)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("airlock-session: {problem}\n{USAGE}");
    ExitCode::from(2)
}
