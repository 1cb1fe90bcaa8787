//! `airlock-bench`: benchmarks that print their figures.
//!
//! `lifecycle` starts a real server (SQLite, full sync) in process with the
//! webhook connector pointed at a local receiver, drives N complete
//! lifecycles through the HTTP API (request → approve → grant → expiry →
//! revoke) and prints throughput, API latency and revocation lag, where lag
//! is the receiver's revoke arrival time minus the grant's expiry.
//!
//! `store` measures each database backend (SQLite and PostgreSQL) in a fresh
//! database: its raw single-row commit rate, lifecycles per second through
//! the same path as `lifecycle`, and expiries per second when many grants
//! fall due at once, and sets them against the targets of the issue.
//!
//! `check` seeds N active grants, starts the real server as a child process
//! and drives `GET /v1/check` at a fixed rate (open loop) over keep-alive
//! connections: rate achieved, latency, errors, the server's memory and
//! both processes' CPU time.
//!
//! `seed` fills a store with N active grants among M requests, each
//! decided by the core with its audit events chained, through the store's
//! import (issue 17's million grants and five million requests), and
//! marks the directory so the benches below reuse it. `transfer` measures
//! `airlock export`, `import` and `audit verify` on it, each in a process
//! of its own (time and peak memory); `lists` the approver's inbox, a
//! requester's history and the audit log by user against a small store.
//!
//! `throughput` has a few clients create requests as fast as the server
//! answers, then approve them (each grant confirmed by a webhook target):
//! creations and approvals per second, their latency, both processes' CPU.
//!
//! `pg-expiry` grants a real PostgreSQL role N times (grant mode), all
//! expiring within one minute, and measures how soon after each expiry the
//! target confirmed the removal (sessions terminated too).

use std::time::{SystemTime, UNIX_EPOCH};

use airlock_server::store::sql::Location;
use clap::{Parser, Subcommand};

mod check;
mod child;
mod lifecycle;
mod lists;
mod load;
mod pg_expiry;
mod profile;
mod report;
mod seed;
mod statements;
mod store;
mod throughput;
mod transfer;

#[derive(Parser)]
#[command(
    name = "airlock-bench",
    about = "Airlock benchmarks; each prints its figures"
)]
struct Cli {
    /// Also write the figures into this Markdown file's section for the
    /// benchmark (BENCHMARKS.md), with the command and the machine.
    #[arg(long, global = true, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
    /// Also sample the server with Linux `perf` while it is measured
    /// (`check`, `load`, `throughput`) and print where its CPU time went:
    /// by thread, by body of code, and the busiest functions.
    #[arg(long, global = true)]
    profile: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Complete lifecycles through the HTTP API with a webhook target.
    Lifecycle {
        /// Lifecycles to run (each uses its own requester).
        #[arg(long, default_value_t = 3000)]
        n: usize,
        /// Concurrent API clients.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Grant duration in seconds.
        #[arg(long, default_value_t = 1)]
        grant_seconds: u64,
        /// Also route every notification of each lifecycle (four) through
        /// the outbox to a signed webhook on the same receiver.
        #[arg(long)]
        notify: bool,
    },
    /// Raw commit rate, lifecycles/s and expiries/s per database backend.
    Store(store::StoreArgs),
    /// N real PostgreSQL grants expiring within one minute: revocation lag.
    PgExpiry(pg_expiry::PgExpiryArgs),
    /// `GET /v1/check` at a fixed rate with N active grants.
    Check(check::CheckArgs),
    /// A steady mixed load on the HTTP API: requests, approvals, lists,
    /// shows, checks, releases, and grants falling due all along.
    Load(load::LoadArgs),
    /// A store with N active grants among M requests, seeded fast through
    /// the store's import with a real audit chain.
    Seed(seed::SeedArgs),
    /// `airlock export`, `import` and `audit verify` of a seeded store:
    /// time and peak memory of each process.
    Transfer(transfer::TransferArgs),
    /// The inbox, history and audit-by-user lists on a seeded store
    /// against a small one.
    Lists(lists::ListsArgs),
    /// Request creations, then approvals (each grant confirmed by a
    /// webhook target), by a few concurrent clients.
    Throughput(throughput::ThroughputArgs),
    /// The server the `check` bench measures, in a process of its own.
    #[command(hide = true)]
    ServeConfig { config: std::path::PathBuf },
}

/// The wall clock in Unix milliseconds.
#[expect(
    clippy::disallowed_methods,
    reason = "the benchmark measures wall-clock lag against the server"
)]
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `p`th percentile of sorted values (nearest rank).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted
        .get(rank.min(sorted.len() - 1))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Appends `n` config users `u0..` in group `requesters`, each with its own
/// token (`{token_prefix}{i}`); returns the tokens in order.
pub(crate) fn requester_users(text: &mut String, n: usize, token_prefix: &str) -> Vec<String> {
    use std::fmt::Write as _;
    let tokens: Vec<String> = (0..n).map(|i| format!("{token_prefix}{i}")).collect();
    for (i, t) in tokens.iter().enumerate() {
        let _ = write!(
            text,
            "\n[users.u{i}]\ngroups = [\"requesters\"]\ntoken_sha256 = \"{}\"\n",
            airlock_server::config::token_hash(t)
        );
    }
    tokens
}

/// A request for `entitlement` lasting `seconds`, as the benches ask.
pub(crate) fn ask(
    entitlement: &str,
    seconds: u64,
    reason: &str,
) -> airlock_server::api::CreateRequest {
    airlock_server::api::CreateRequest::for_entitlement(
        entitlement,
        Some(airlock_server::api::DurationInput::Seconds(seconds)),
        reason,
    )
}

/// The `[server]` table of a bench server on loopback with its data in
/// `data_dir` and its store at `database`, reconciliation off.
pub(crate) fn server_table(data_dir: &std::path::Path, database: &Location) -> String {
    let database = match database {
        Location::Postgres(url) => format!("database = {}\n", toml_string(url)),
        Location::Sqlite(path) => {
            format!("database = {}\n", toml_string(&path.display().to_string()))
        }
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\n{database}reconcile_every = \"off\"\n",
        toml_string(&data_dir.display().to_string())
    )
}

/// A TOML basic string holding `raw`.
pub(crate) fn toml_string(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for c in raw.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn lifecycle_alone(
    n: usize,
    concurrency: usize,
    grant_seconds: u64,
    notify: bool,
) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("airlock-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    let database = Location::Sqlite(data_dir.join("airlock.db"));
    let result = lifecycle::run(&database, &data_dir, n, concurrency, grant_seconds, notify).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result.map(|_| ())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.profile {
        profile::enable()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A bench that runs on either database records a section per database.
    let on_postgres = match &cli.bench {
        Bench::Check(args) => args.on_postgres(),
        Bench::Load(args) => args.on_postgres(),
        Bench::Transfer(args) => args.on_postgres(),
        Bench::Lists(args) => args.on_postgres(),
        Bench::Throughput(args) => args.on_postgres(),
        _ => false,
    };
    let name = match &cli.bench {
        Bench::Lifecycle { .. } => "lifecycle",
        Bench::Store(_) => "store",
        Bench::PgExpiry(_) => "pg-expiry",
        Bench::Check(_) => "check",
        Bench::Load(_) => "load",
        Bench::Seed(_) => "seed",
        Bench::Transfer(_) => "transfer",
        Bench::Lists(_) => "lists",
        Bench::Throughput(_) => "throughput",
        Bench::ServeConfig { .. } => "serve-config",
    };
    let name = if on_postgres {
        format!("{name} postgres")
    } else {
        name.to_owned()
    };
    match cli.bench {
        Bench::Lifecycle {
            n,
            concurrency,
            grant_seconds,
            notify,
        } => runtime.block_on(lifecycle_alone(n, concurrency, grant_seconds, notify)),
        Bench::Store(args) => runtime.block_on(store::run(args)),
        Bench::PgExpiry(args) => runtime.block_on(pg_expiry::run(args)),
        Bench::Check(args) => runtime.block_on(check::run(args)),
        Bench::Load(args) => runtime.block_on(load::run(args)),
        Bench::Seed(args) => runtime.block_on(seed::run(args)),
        Bench::Transfer(args) => runtime.block_on(transfer::run(args)),
        Bench::Lists(args) => runtime.block_on(lists::run(args)),
        Bench::Throughput(args) => runtime.block_on(throughput::run(args)),
        Bench::ServeConfig { config } => runtime.block_on(child::serve_config(config)),
    }?;
    if let Some(path) = &cli.record {
        report::record(path, &name)?;
    }
    Ok(())
}
