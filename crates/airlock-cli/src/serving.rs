//! `airlock demo`, `serve`, `check-config` and `token`: the commands that
//! start a server or prepare what one needs.

use std::path::PathBuf;

use airlock_server::config::Settings;
use airlock_server::store::sql::Location;
use anyhow::Context;
use clap::Subcommand;

use crate::demo;
use crate::terminal::say;

#[derive(Subcommand)]
pub enum ServerCmd {
    /// Start a demo server on SQLite with demo users, entitlements and tokens.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "airlock-demo")]
        data_dir: PathBuf,
        /// Use this database instead of `DATA_DIR/airlock.db` (a path or postgres:// URL).
        #[arg(long, env = "AIRLOCK_DATABASE", hide_env_values = true)]
        database: Option<String>,
        /// Serve even though the audit chain or checkpoint log was found
        /// broken at start (after investigating): records an
        /// `audit_break_accepted` event naming the break and signs the head
        /// from there. Without it, such a server refuses new requests,
        /// approvals, policy changes and reconciliation (revocations go on)
        /// and reports not ready.
        #[arg(long)]
        accept_broken_audit_chain: bool,
    },
    /// Start a server from a config file.
    Serve {
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
        /// Overrides `server.listen`.
        #[arg(long, env = "AIRLOCK_LISTEN")]
        listen: Option<String>,
        /// Overrides `server.database`: a SQLite path or a postgres:// URL.
        #[arg(long, env = "AIRLOCK_DATABASE", hide_env_values = true)]
        database: Option<String>,
        /// Serve even though the audit chain or checkpoint log was found
        /// broken at start (after investigating): records an
        /// `audit_break_accepted` event naming the break and signs the head
        /// from there. Without it, such a server refuses new requests,
        /// approvals, policy changes and reconciliation (revocations go on)
        /// and reports not ready.
        #[arg(long)]
        accept_broken_audit_chain: bool,
    },
    /// Validate a config file and exit.
    CheckConfig { config: PathBuf },
}

impl ServerCmd {
    /// Whether this command runs a server (which logs at `info`).
    pub fn runs_server(&self) -> bool {
        matches!(self, ServerCmd::Demo { .. } | ServerCmd::Serve { .. })
    }
}

pub async fn run(command: ServerCmd) -> anyhow::Result<()> {
    match command {
        ServerCmd::Demo {
            listen,
            data_dir,
            database,
            accept_broken_audit_chain,
        } => {
            let demo::Prepared {
                config,
                tokens,
                reused,
            } = demo::prepare(&data_dir, &listen)?;
            let mut settings = Settings::load(&config)?;
            settings.audit.accept_broken_chain = accept_broken_audit_chain;
            if let Some(db) = database {
                settings.database = Location::parse(&db);
            }
            settings.listen = listen
                .parse()
                .with_context(|| format!("--listen: `{listen}` is not an address"))?;
            let server = airlock_server::server::start(settings).await?;
            let url = format!("http://{}", server.addr());
            say!("Airlock demo is running at {url}");
            say!("Audit checkpoint key: {}", server.checkpoint_key());
            say!("Data dir: {} (tokens in tokens.json)", data_dir.display());
            if reused {
                say!("  (the state of the demo already there: its requests, tokens and policies; delete the folder to start over)");
            }
            for (user, role) in demo::DEMO_USERS {
                say!(
                    "  {user:<6} token: {}   ({role})",
                    tokens.get(user).map_or("", String::as_str)
                );
            }
            // The token rides in the fragment, which browsers never send
            // (nor log): the UI's script puts it in the sign-in form.
            say!("Web UI: {url}/ui/ (sign in as a demo user with their link)");
            for (user, _) in demo::DEMO_USERS {
                say!(
                    "  {user:<6} {url}/ui/login#token={}",
                    tokens.get(user).map_or("", String::as_str)
                );
            }
            say!("Try:");
            say!(
                "  export AIRLOCK_URL={url} AIRLOCK_TOKEN={}",
                tokens.get("alice").map_or("", String::as_str)
            );
            say!("  airlock request staging-shell --for 15m --reason \"deploy check\"");
            serve_until_signal(server).await
        }
        ServerCmd::Serve {
            config,
            listen,
            database,
            accept_broken_audit_chain,
        } => {
            let mut settings = Settings::load(&config)?;
            settings.audit.accept_broken_chain = accept_broken_audit_chain;
            if let Some(db) = database {
                settings.database = Location::parse(&db);
            }
            if let Some(l) = listen {
                settings.listen = l
                    .parse()
                    .with_context(|| format!("--listen: `{l}` is not an address"))?;
            }
            let server = airlock_server::server::start(settings).await?;
            say!("Airlock is running at http://{}", server.addr());
            say!("Audit checkpoint key: {}", server.checkpoint_key());
            serve_until_signal(server).await
        }
        ServerCmd::CheckConfig { config } => {
            let settings = Settings::load(&config)?;
            // The policies are part of what a server would refuse to start on.
            let policies = settings
                .policy_source
                .load()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            say!(
                "{}: ok ({} users, {} entitlements, {} connectors, {} policies, policy set {})",
                config.display(),
                settings.catalog.users.len(),
                settings.catalog.entitlements.len(),
                settings.connectors.len(),
                policies.policy_ids().count(),
                policies.version()
            );
            Ok(())
        }
    }
}

async fn serve_until_signal(server: airlock_server::server::Server) -> anyhow::Result<()> {
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    // A scheduler, listener or reloader that stopped on its own ends the
    // process with an error naming it, rather than running on half-alive.
    server.wait().await?;
    Ok(())
}
