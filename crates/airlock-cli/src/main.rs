//! The `airlock` binary: starts servers (`demo`, `serve`) and talks to one
//! over HTTP for everything else. All logic lives in the library crates;
//! this file parses arguments, prints results and maps errors to exit codes.

use crate::terminal::{say, say_err};
use std::path::PathBuf;
use std::time::Duration;

use airlock_server::api::{AuditQuery, CreateRequest, DurationInput, RequestQuery, RequestView};
use airlock_server::client::{Action, Client};
use airlock_server::config::Settings;
use airlock_server::store::sql::{Location, SqlStore};
use airlock_server::store::transfer;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

mod demo;
mod output;
mod policy;
mod ssh;
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

#[derive(Args, Clone)]
struct Conn {
    /// Server URL.
    #[arg(
        long,
        env = "AIRLOCK_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API token.
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// Which page of a request list to show.
#[derive(Args, Clone)]
struct Page {
    /// At most this many per page (1 to 1000; the server's default is 100).
    #[arg(long)]
    limit: Option<u32>,
    /// Start where an earlier page ended (the cursor it printed).
    #[arg(long)]
    cursor: Option<String>,
    /// Every page, not just one (from `--cursor` on, if given).
    #[arg(long)]
    all: bool,
}

/// Which database a maintenance command works on.
#[derive(Args)]
struct DatabaseArgs {
    /// Take `server.database` from this config.
    #[arg(long, env = "AIRLOCK_CONFIG", required_unless_present = "database")]
    config: Option<PathBuf>,
    /// A SQLite path or a postgres:// URL (overrides the config's).
    #[arg(long, env = "AIRLOCK_DATABASE", hide_env_values = true)]
    database: Option<String>,
}

impl DatabaseArgs {
    /// Opens the store (running migrations), saying which database failed.
    async fn open(&self) -> anyhow::Result<(Location, SqlStore)> {
        let location = match (&self.database, &self.config) {
            (Some(db), _) => Location::parse(db),
            (None, Some(config)) => Settings::load(config)?.database,
            (None, None) => bail!("name the database with --database or --config"),
        };
        let store = SqlStore::open(&location)
            .await
            .with_context(|| format!("database `{}`", location.describe()))?;
        Ok((location, store))
    }
}

#[derive(Subcommand)]
enum Cmd {
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
    /// Create or upgrade the database schema and exit.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Write all requests and the audit log as JSON Lines (to move databases).
    Export {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Load an export into an empty database and verify its audit chain.
    Import {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Read here instead of standard input.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Validate Cedar policies and run their tests.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Validate a config file and exit.
    CheckConfig { config: PathBuf },
    /// API tokens: `create`, `list`, `revoke`. Alone: make a config token
    /// and print it with the hash to put in the config.
    Token {
        #[command(subcommand)]
        command: Option<tokens::TokenCmd>,
    },
    /// Ask for an entitlement.
    Request {
        entitlement: String,
        /// How long, e.g. `30m`, `2h` (default: the entitlement's default).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        ticket: Option<String>,
        /// Start later: RFC 3339 time or Unix seconds.
        #[arg(long)]
        start_at: Option<String>,
        /// Declare an emergency (break-glass): recorded, and routed as the
        /// policies say.
        #[arg(long)]
        break_glass: bool,
        /// Block until the request is decided and show the outcome.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "1h")]
        wait_timeout: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Get an SSH certificate: requests ENTITLEMENT with your public key,
    /// waits for the grant and writes the certificate beside the key
    /// (`id_ed25519.pub` → `id_ed25519-cert.pub`), where ssh finds it.
    Ssh {
        entitlement: String,
        /// Your key, the private key or its `.pub` (default: the first of
        /// ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub).
        #[arg(long)]
        key: Option<PathBuf>,
        /// How long, e.g. `30m`, `2h` (default: the entitlement's default).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        ticket: Option<String>,
        /// Give up waiting for the decision and the grant after this long.
        #[arg(long, default_value = "1h")]
        wait_timeout: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Requests waiting for your approval.
    Pending {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve a request waiting for you.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deny a request waiting for you.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Withdraw your request before it starts.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// End your active grant early.
    Release {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// End someone's grant (admins).
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Collect the one-time credential your grant created (e.g. a database login).
    Credential {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Requests you can see, newest first.
    List {
        /// Comma-separated states, e.g. `pending,active`.
        #[arg(long)]
        state: Option<String>,
        /// Only your own requests.
        #[arg(long)]
        mine: bool,
        #[arg(long)]
        entitlement: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        conn: Conn,
    },
    /// One request and everything that happened to it.
    Show {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Grants the target may hold now, with time left.
    Grants {
        #[command(flatten)]
        conn: Conn,
    },
    /// Entitlements you may request.
    Entitlements {
        #[command(flatten)]
        conn: Conn,
    },
    /// Who your token belongs to.
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Compare who holds each connector's access in the target with
    /// Airlock's grants (admins). Reports holders no grant explains
    /// (standing privileges, out-of-band grants), access held for ended
    /// requests and active grants the target lacks; every finding is
    /// audited. Exits non-zero when any finding is left unfixed or a
    /// connector could not be checked, so it can gate a cron job.
    Reconcile {
        /// Also fix: remove unexplained holders where the entitlement says
        /// `drift = "revoke"`, revoke lingering access again, grant missing
        /// grants again (each fix audited).
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Audit events (admins and auditors); `audit verify` checks the chain.
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCmd>,
        #[arg(long)]
        request: Option<String>,
        /// Events by or about this user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        entitlement: Option<String>,
        /// Only this kind of event (`requested`, `policy_activated`, ...).
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time or Unix seconds.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Parse and validate every `*.cedar` file against the Airlock schema.
    Validate {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Run the cases in `DIR/tests.toml` against the policies in `DIR`.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Which policies decided a request, and how the set in force would now.
    Explain {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Who could request ENTITLEMENT (and how it would be decided), and who
    /// could approve it, among the config's users, for an ordinary request.
    WhoCan {
        entitlement: String,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
    /// Who gains or loses the ability to request, be auto-approved for or
    /// approve which entitlement if the config's policy folder were NEW_DIR.
    Diff {
        new_dir: PathBuf,
        #[arg(long, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
    /// Make the server re-read its policy folder (admin). A set that fails
    /// validation is refused and the one in force stays; under the
    /// two-person rule a valid set is proposed, with what it changes.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Policy sets waiting for a second admin, with what each changes.
    Proposals {
        #[command(flatten)]
        conn: Conn,
    },
    /// Put a proposed policy set in force (an admin other than its proposer).
    Approve {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain; exits non-zero naming the first bad event.
    /// With `--checkpoints`, also check it against a signed checkpoint log,
    /// reading the database directly (a copy will do) rather than trusting
    /// a server: that catches an event edited with every later hash
    /// recomputed, and the newest events removed down to a checkpoint.
    Verify {
        /// A checkpoint log (the server's `audit.checkpoint_log`).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The key the checkpoints must be signed with (`ed25519:…`, as the
        /// server prints and serves at `/v1/audit/checkpoint-key`). Without
        /// it the key the log names is used, which shows only that the log
        /// is consistent with itself.
        #[arg(long, requires = "checkpoints")]
        public_key: Option<String>,
        /// With `--checkpoints`: take `server.database` from this config.
        #[arg(long, requires = "checkpoints")]
        config: Option<PathBuf>,
        /// With `--checkpoints`: a SQLite path or a postgres:// URL.
        #[arg(long, requires = "checkpoints")]
        database: Option<String>,
    },
    /// The public key the server signs audit checkpoints with (`ed25519:…`),
    /// to pin for `verify --checkpoints`.
    Key,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let server = matches!(cli.command, Cmd::Demo { .. } | Cmd::Serve { .. });
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

fn client(conn: &Conn) -> anyhow::Result<Client> {
    let token = conn
        .token
        .as_deref()
        .context("no API token: pass --token or set AIRLOCK_TOKEN")?;
    Ok(Client::new(&conn.url, token)?)
}

async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Demo {
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
            say!("Try:");
            say!(
                "  export AIRLOCK_URL={url} AIRLOCK_TOKEN={}",
                tokens.get("alice").map_or("", String::as_str)
            );
            say!("  airlock request staging-shell --for 15m --reason \"deploy check\"");
            serve_until_signal(server).await
        }
        Cmd::Serve {
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
        Cmd::Migrate { db } => {
            let (location, store) = db.open().await?;
            say!(
                "{}: schema version {}",
                location.describe(),
                store.schema_version().await?
            );
            Ok(())
        }
        Cmd::Export { db, output } => {
            let (location, store) = db.open().await?;
            let schema = store.schema_version().await?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create `{}`", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let report = transfer::export(&store, schema, &mut out).await?;
            say_err!(
                "exported {} requests and {} audit events from {}",
                report.requests,
                report.audit_events,
                location.describe()
            );
            Ok(())
        }
        Cmd::Import { db, input } => {
            let (location, store) = db.open().await?;
            let schema = store.schema_version().await?;
            let mut reader: Box<dyn std::io::BufRead> = match &input {
                Some(path) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("cannot open `{}`", path.display()))?,
                )),
                None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
            };
            let source = input
                .as_ref()
                .map_or("standard input".to_owned(), |p| p.display().to_string());
            let (imported, chain) = transfer::import(&store, schema, &mut reader)
                .await
                .with_context(|| format!("importing {source} into {}", location.describe()))?;
            say!(
                "imported {} requests and {} audit events into {}; audit chain ok ({} events, head {})",
                imported.requests,
                imported.audit_events,
                location.describe(),
                chain.checked,
                chain.head_hash
            );
            Ok(())
        }
        Cmd::Policy {
            command: PolicyCmd::Validate { dir },
        } => policy::validate(&dir),
        Cmd::Policy {
            command: PolicyCmd::Test { dir },
        } => policy::test(&dir),
        Cmd::Policy {
            command:
                PolicyCmd::WhoCan {
                    entitlement,
                    config,
                },
        } => policy::who_can(&config, &entitlement),
        Cmd::Policy {
            command: PolicyCmd::Diff { new_dir, config },
        } => policy::diff(&config, &new_dir),
        Cmd::Policy {
            command: PolicyCmd::Explain { id, conn },
        } => {
            let explained = client(&conn)?.explain(&id).await?;
            if conn.json {
                println!(
                    "{}",
                    crate::terminal::json_safe(&serde_json::to_string_pretty(&explained)?)
                );
            } else {
                output::explain(&explained);
            }
            Ok(())
        }
        Cmd::Policy {
            command: PolicyCmd::Reload { conn },
        } => {
            let r = client(&conn)?.reload_policy().await?;
            output::json_or(&r, conn.json, output::policy_change)
        }
        Cmd::Policy {
            command: PolicyCmd::Proposals { conn },
        } => {
            let proposals = client(&conn)?.policy_proposals().await?;
            output::json_or(&proposals, conn.json, |all| {
                if all.is_empty() {
                    say!("no policy set is waiting for approval");
                }
                for p in all {
                    say!(
                        "{}  by {} at {}: {} -> {} (approved by {}/{}{})",
                        p.id,
                        p.proposed_by,
                        p.proposed_at,
                        p.base_version,
                        p.version,
                        p.approved_by.len(),
                        p.approvals_needed,
                        if p.approved_by.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", p.approved_by.join(", "))
                        }
                    );
                    for c in &p.changes {
                        say!("    {c}");
                    }
                }
            })
        }
        Cmd::Policy {
            command: PolicyCmd::Approve { id, conn },
        } => {
            let r = client(&conn)?.approve_policy_proposal(&id).await?;
            output::json_or(&r, conn.json, output::policy_change)
        }
        Cmd::CheckConfig { config } => {
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
        Cmd::Token { command } => tokens::run(command).await,
        Cmd::Request {
            entitlement,
            duration,
            reason,
            ticket,
            start_at,
            break_glass,
            wait,
            wait_timeout,
            conn,
        } => {
            let client = client(&conn)?;
            let body = CreateRequest {
                entitlement,
                duration: duration.map(DurationInput::Text),
                reason,
                ticket,
                start_at,
                break_glass,
                public_key: None,
            };
            let mut request = client.create_request(&body).await?;
            if wait {
                let limit = airlock_server::config::parse_duration(&wait_timeout)
                    .map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
                request = wait_for_decision(&client, request, limit).await?;
            }
            output::request(&request, conn.json)
        }
        Cmd::Ssh {
            entitlement,
            key,
            duration,
            reason,
            ticket,
            wait_timeout,
            conn,
        } => {
            let key = ssh::UserKey::find(key.as_deref())?;
            let limit = airlock_server::config::parse_duration(&wait_timeout)
                .map_err(|e| anyhow::anyhow!("--wait-timeout: {e}"))?;
            let client = client(&conn)?;
            let body = CreateRequest {
                entitlement,
                duration: duration.map(DurationInput::Text),
                reason,
                ticket,
                start_at: None,
                break_glass: false,
                public_key: Some(key.line().to_owned()),
            };
            let request = client.create_request(&body).await?;
            let request = wait_for_decision(&client, request, limit).await?;
            let path = key.write_certificate(ssh::certificate_of(&request)?)?;
            key.report(&path, &request, conn.json)
        }
        Cmd::Pending { page, conn } => {
            let query = RequestQuery {
                awaiting_me: Some(true),
                ..RequestQuery::default()
            };
            list_pages(&conn, &page, query).await
        }
        Cmd::Approve { id, comment, conn } => act(&conn, &id, Action::Approve { comment }).await,
        Cmd::Deny { id, reason, conn } => act(&conn, &id, Action::Deny { reason }).await,
        Cmd::Cancel { id, conn } => act(&conn, &id, Action::Cancel).await,
        Cmd::Release { id, conn } => act(&conn, &id, Action::Release).await,
        Cmd::Revoke { id, reason, conn } => act(&conn, &id, Action::Revoke { reason }).await,
        Cmd::List {
            state,
            mine,
            entitlement,
            page,
            conn,
        } => {
            let query = RequestQuery {
                state,
                mine: mine.then_some(true),
                entitlement,
                ..RequestQuery::default()
            };
            list_pages(&conn, &page, query).await
        }
        Cmd::Credential { id, conn } => {
            let c = client(&conn)?.collect_credential(&id).await?;
            output::json_or(&c, conn.json, |c| {
                say!("login:    {}", c.login);
                say!("password: {}", c.secret);
                say!("expires:  {}", c.expires_at.as_deref().unwrap_or("-"));
                say!("(shown once: Airlock does not keep it)");
            })
        }
        Cmd::Show { id, conn } => {
            let client = client(&conn)?;
            let request = client.get_request(&id).await?;
            output::request(&request, conn.json)?;
            if !conn.json {
                // Who acted with which API token is in the request's audit
                // events, which whoever sees the request may read.
                output::acted_with_tokens(&client.explain(&id).await?.history);
            }
            Ok(())
        }
        Cmd::Grants { conn } => output::grants(&client(&conn)?.grants().await?, conn.json),
        Cmd::Entitlements { conn } => {
            output::entitlements(&client(&conn)?.entitlements().await?, conn.json)
        }
        Cmd::Whoami { conn } => output::json_or(&client(&conn)?.me().await?, conn.json, |me| {
            say!(
                "{} (groups: {}; roles: {})",
                me.user,
                me.groups.join(", "),
                me.roles.join(", ")
            );
        }),
        Cmd::Reconcile { fix, conn } => {
            let report = client(&conn)?.reconcile(fix).await?;
            output::json_or(&report, conn.json, output::reconcile)?;
            if !report.clean() {
                bail!(
                    "{} finding(s) left unfixed, {} connector(s) not checked{}",
                    report.unfixed,
                    report.errors,
                    if fix { "" } else { " (run with --fix to fix)" }
                );
            }
            Ok(())
        }
        Cmd::Audit {
            verify:
                Some(AuditCmd::Verify {
                    checkpoints: Some(log),
                    public_key,
                    config,
                    database,
                }),
            conn,
            ..
        } => {
            verify_against_checkpoints(
                &log,
                public_key.as_deref(),
                DatabaseArgs { config, database },
                conn.json,
            )
            .await
        }
        Cmd::Audit {
            verify: Some(AuditCmd::Key),
            conn,
            ..
        } => {
            let key = client(&conn)?.checkpoint_key().await?;
            say!("{key}");
            Ok(())
        }
        Cmd::Audit {
            verify: Some(AuditCmd::Verify { .. }),
            conn,
            ..
        } => {
            let report = client(&conn)?.verify_audit().await?;
            output::json_or(&report, conn.json, |r| {
                if r.ok {
                    say!("audit chain ok: {} events, head {}", r.checked, r.head_hash);
                }
            })?;
            broken_chain_fails(report)
        }
        Cmd::Audit {
            verify: None,
            request,
            user,
            entitlement,
            action,
            since,
            until,
            limit,
            conn,
        } => {
            let query = AuditQuery {
                request,
                user,
                entitlement,
                action,
                since,
                until,
                limit,
            };
            output::audit(&client(&conn)?.audit(&query).await?, conn.json)
        }
    }
}

/// `airlock audit verify --checkpoints`: the database's chain against a
/// signed checkpoint log, without asking a server.
async fn verify_against_checkpoints(
    log: &std::path::Path,
    public_key: Option<&str>,
    db: DatabaseArgs,
    json: bool,
) -> anyhow::Result<()> {
    use airlock_core::audit::ChainVerifier;
    use airlock_server::checkpoint::{parse_public_key, public_key_text, read_log};
    use airlock_server::store::Store;
    if !log.exists() {
        bail!("checkpoint log `{}` does not exist", log.display());
    }
    let pinned = public_key.map(parse_public_key).transpose()?;
    let (checkpoints, key) = read_log(log, pinned.as_ref())?;
    if let (None, Some(key)) = (&pinned, &key) {
        say_err!(
            "warning: checked with the key the log names ({}); pass --public-key to pin the key you trust",
            public_key_text(key)
        );
    }
    let count = checkpoints.len();
    let verifier = ChainVerifier::with_checkpoints(checkpoints)
        .with_context(|| format!("checkpoint log `{}`", log.display()))?;
    let (_, store) = db.open().await?;
    let report = store.verify_audit_with(verifier).await?;
    let unsigned = report.unsigned;
    let mut view = airlock_server::api::VerifyView::from(report);
    view.unsigned = Some(unsigned);
    output::json_or(&view, json, |r| {
        if r.ok {
            say!(
                "audit chain ok: {} events, head {}; matches {count} signed checkpoint(s){}; {unsigned} event(s) after the last checkpoint are not signed yet",
                r.checked,
                r.head_hash,
                r.last_checkpoint
                    .map(|seq| format!(" up to event {seq}"))
                    .unwrap_or_default(),
            );
        }
    })?;
    broken_chain_fails(view)
}

/// Exits non-zero naming the first bad event, if there is one.
fn broken_chain_fails(view: airlock_server::api::VerifyView) -> anyhow::Result<()> {
    if !view.ok {
        bail!(
            "audit chain broken at event {}: {}",
            view.first_bad_seq.unwrap_or(0),
            view.problem.unwrap_or_default()
        );
    }
    Ok(())
}

/// Prints one page of requests (and, on stderr, how to get the next) or,
/// with `--all`, every page.
async fn list_pages(conn: &Conn, page: &Page, query: RequestQuery) -> anyhow::Result<()> {
    let query = RequestQuery {
        limit: page.limit,
        cursor: page.cursor.clone(),
        ..query
    };
    let client = client(conn)?;
    if page.all {
        return output::requests(&client.all_requests(&query).await?, conn.json);
    }
    let found = client.list_requests_page(&query).await?;
    output::requests(&found.requests, conn.json)?;
    if let Some(next) = found.next_cursor {
        say_err!("more: add --cursor {next} for the next page, or --all for every page");
    }
    Ok(())
}

async fn act(conn: &Conn, id: &str, action: Action) -> anyhow::Result<()> {
    output::request(&client(conn)?.act(id, &action).await?, conn.json)
}

/// Polls until the request is decided and, if it starts now, provisioned.
async fn wait_for_decision(
    client: &Client,
    mut request: RequestView,
    limit: Duration,
) -> anyhow::Result<RequestView> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let settled = match request.state.as_str() {
            "pending" => false,
            "approved" => request.scheduled,
            _ => true,
        };
        if settled {
            return Ok(request);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "request `{}` is still {} after waiting {}; it stays open (see `airlock show {}`, or `airlock cancel {}` to withdraw it)",
                request.id,
                request.state,
                airlock_core::time::human_duration(limit),
                request.id,
                request.id
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        request = client.get_request(&request.id).await?;
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
