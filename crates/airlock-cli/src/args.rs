//! The arguments several commands share: how to reach a server, which page
//! of a list, which database; and the API client made from them.

use std::path::PathBuf;

use airlock_server::client::Client;
use airlock_server::config::Settings;
use airlock_server::store::sql::{Location, SqlStore};
use anyhow::{bail, Context};
use clap::Args;

#[derive(Args, Clone)]
pub struct Conn {
    /// Server URL.
    #[arg(
        long,
        env = "AIRLOCK_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API token (default: the one `airlock login` cached for this server).
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Which page of a request list to show.
#[derive(Args, Clone)]
pub struct Page {
    /// At most this many per page (1 to 1000; the server's default is 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start where an earlier page ended (the cursor it printed).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Every page, not just one (from `--cursor` on, if given).
    #[arg(long)]
    pub all: bool,
}

/// Which database a maintenance command works on.
#[derive(Args)]
pub struct DatabaseArgs {
    /// Take `server.database` from this config.
    #[arg(long, env = "AIRLOCK_CONFIG", required_unless_present = "database")]
    pub config: Option<PathBuf>,
    /// A SQLite path or a postgres:// URL (overrides the config's).
    #[arg(long, env = "AIRLOCK_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

impl DatabaseArgs {
    /// Opens the store for maintenance (running migrations; no check
    /// index: `SqlStore::open_for_maintenance`), saying which database
    /// failed.
    pub async fn open(&self) -> anyhow::Result<(Location, SqlStore)> {
        let location = match (&self.database, &self.config) {
            (Some(db), _) => Location::parse(db),
            (None, Some(config)) => Settings::load(config)?.database,
            (None, None) => bail!("name the database with --database or --config"),
        };
        let store = SqlStore::open_for_maintenance(&location)
            .await
            .with_context(|| format!("database `{}`", location.describe()))?;
        Ok((location, store))
    }
}

/// The API client for `--url` and `--token`, or else the sign-in
/// `airlock login` cached for that server.
pub fn client(conn: &Conn) -> anyhow::Result<Client> {
    let token = match &conn.token {
        Some(token) => token.clone(),
        None => crate::login::cached_token(&conn.url)?.with_context(|| {
            format!(
                "no API token: run `airlock login`, pass --token or set AIRLOCK_TOKEN (server {})",
                conn.url
            )
        })?,
    };
    Ok(Client::new(&conn.url, &token)?)
}
