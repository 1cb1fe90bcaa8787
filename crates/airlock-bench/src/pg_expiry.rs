//! The `pg-expiry` bench: N grants of a real PostgreSQL role (grant mode,
//! one existing login per requester), all expiring within the same minute,
//! revoked by a real server in process. It measures, per grant, the lag from
//! its expiry to the confirmed removal (the REVOKE done and the login's
//! sessions terminated, as recorded in `deprovisioned_at`), and checks the
//! target independently: it watches the role's members disappear, and holds
//! live sessions of some grantees open to see them terminated.
//!
//! Everything it creates in the target cluster (a scratch database, the
//! role and the logins, all named with the process id) is removed at the end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::request::State;
use airlock_core::RequestId;
use airlock_server::client::Client;
use airlock_server::config::Settings;
use airlock_server::store::sql::{Location, SqlStore};
use airlock_server::store::{RequestFilter, Store};
use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection, Row};

use crate::report::say;
use crate::store::with_database;
use crate::{ask, now_ms, percentile, requester_users, toml_string};

/// The target: p99 lag after expiry.
const P99_TARGET_MS: f64 = 2000.0;
/// Grantees whose live sessions the bench holds open through the expiry.
const LIVE_SESSIONS: usize = 20;

#[derive(clap::Args)]
pub struct PgExpiryArgs {
    /// Grants, all expiring within `--spread` seconds.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Seconds over which the expiries are spread.
    #[arg(long, default_value_t = 60)]
    spread: u64,
    /// Seconds between the start of the run and the first expiry: every
    /// grant must be provisioned by then.
    #[arg(long, default_value_t = 90)]
    lead: u64,
    /// Concurrent API clients submitting the requests.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The PostgreSQL cluster that plays the target (an account that may
    /// create databases and roles).
    #[arg(
        long,
        env = "AIRLOCK_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
}

/// Names of everything the run creates in the target cluster.
struct Target {
    admin_url: String,
    database: String,
    url: String,
    role: String,
    login_prefix: String,
    n: usize,
}

impl Target {
    fn new(args: &PgExpiryArgs) -> anyhow::Result<Target> {
        let pid = std::process::id();
        let database = format!("airlock_bench_target_{pid}");
        Ok(Target {
            url: with_database(&args.postgres_url, &database)?,
            admin_url: args.postgres_url.clone(),
            database,
            role: format!("airlock_bench_{pid}_reader"),
            login_prefix: format!("abx{pid}_"),
            n: args.n,
        })
    }

    fn login(&self, i: usize) -> String {
        format!("{}u{i}", self.login_prefix)
    }

    async fn create(&self) -> anyhow::Result<()> {
        self.remove().await?;
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("connecting to the target cluster")?;
        sqlx::raw_sql(&format!("CREATE DATABASE {}", self.database))
            .execute(&mut admin)
            .await?;
        sqlx::raw_sql(&format!("CREATE ROLE {} NOLOGIN", self.role))
            .execute(&mut admin)
            .await?;
        // One statement creates every login, so setup takes seconds.
        sqlx::raw_sql(&format!(
            "DO $$ BEGIN FOR i IN 0..{} LOOP EXECUTE format('CREATE ROLE %I LOGIN', '{}u' || i); END LOOP; END $$",
            self.n.saturating_sub(1),
            self.login_prefix
        ))
        .execute(&mut admin)
        .await
        .context("creating the grantees' logins")?;
        let _ = admin.close().await;
        Ok(())
    }

    /// Drops what a run (this one, or a crashed one with the same pid) left.
    async fn remove(&self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ))
        .execute(&mut admin)
        .await?;
        sqlx::raw_sql(&format!(
            "DO $$ DECLARE r record; BEGIN \
               FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE '{}%' LOOP \
                 EXECUTE format('DROP ROLE %I', r.rolname); END LOOP; \
             END $$",
            self.login_prefix
        ))
        .execute(&mut admin)
        .await?;
        sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", self.role))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        Ok(())
    }

    /// The logins that are members of the managed role now.
    async fn members(&self, conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT m.rolname FROM pg_auth_members a \
             JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member \
             WHERE r.rolname = $1",
        )
        .bind(&self.role)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(anyhow::Error::from))
            .collect()
    }
}

fn config(args: &PgExpiryArgs, target: &Target, data_dir: &Path) -> (String, Vec<String>) {
    let mut text = String::new();
    let _ = write!(
        text,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\n\n\
         [connectors.pg]\ntype = \"postgres\"\nurl = {}\nroles = [{}]\nmode = \"grant\"\n\
         login_template = {}\ntimeout = \"10s\"\n\n\
         [entitlements.bench-pg]\nrequestable_by = [\"requesters\"]\nmax_duration = \"1h\"\n\
         require_reason = false\nauto_approve = true\nconnector = \"pg\"\n",
        toml_string(&data_dir.display().to_string()),
        toml_string(&target.url),
        toml_string(&target.role),
        toml_string(&format!("{}{{user}}", target.login_prefix)),
    );
    let tokens = requester_users(&mut text, args.n, "pg-bench-token-");
    (text, tokens)
}

pub async fn run(args: PgExpiryArgs) -> anyhow::Result<()> {
    let target = Target::new(&args)?;
    let data_dir = std::env::temp_dir().join(format!("airlock-bench-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;
    say!(
        "airlock-bench pg-expiry: {} grants of a PostgreSQL role, expiring within {}s, first expiry {}s after start",
        args.n, args.spread, args.lead
    );
    let began = Instant::now();
    target.create().await?;
    say!(
        "target: database {}, role {}, {} logins created in {:.1}s",
        target.database,
        target.role,
        args.n,
        began.elapsed().as_secs_f64()
    );
    let result = measure(&args, &target, &data_dir).await;
    let cleanup = target.remove().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let passed = result?;
    cleanup.context("removing the target's scratch database and roles")?;
    if !passed {
        bail!("p99 revocation lag above the {P99_TARGET_MS:.0} ms target");
    }
    Ok(())
}

/// Runs the server, provisions, waits out the expiries, reports; returns
/// whether the p99 target was met.
async fn measure(args: &PgExpiryArgs, target: &Target, data_dir: &Path) -> anyhow::Result<bool> {
    let (text, tokens) = config(args, target, data_dir);
    let settings = Settings::parse("pg-bench.toml", &text, data_dir).context("bench config")?;
    let database = settings.database.clone();
    let first_expiry_ms = now_ms() + i64::try_from(args.lead * 1000).unwrap_or(i64::MAX);
    let server = airlock_server::server::start(settings).await?;
    let url = format!("http://{}", server.addr());
    let outcome = async {
        let submitted = submit(args, &url, tokens, first_expiry_ms).await?;
        let sessions = open_sessions(target).await?;
        let watched = watch_target(target, first_expiry_ms, args).await?;
        anyhow::Ok((submitted, sessions, watched))
    }
    .await;
    server.shutdown().await;
    let (submitted, mut sessions, watched) = outcome?;
    let terminated = count_terminated(&mut sessions).await;
    report(
        args,
        target,
        &database,
        &submitted,
        &watched,
        terminated,
        sessions.len(),
    )
    .await
}

/// What submitting saw: the time it took and when the last grant was active.
struct Submitted {
    took: Duration,
}

/// Submits one request per user, with durations chosen so the expiries
/// spread evenly over `spread` seconds starting at `first_expiry_ms`, and
/// waits until every grant is active in the server.
async fn submit(
    args: &PgExpiryArgs,
    url: &str,
    tokens: Vec<String>,
    first_expiry_ms: i64,
) -> anyhow::Result<Submitted> {
    let started = Instant::now();
    let base = Client::new(url, "none")?;
    let next = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(tokens);
    let n = tokens.len();
    let spread_ms = i64::try_from(args.spread * 1000).unwrap_or(i64::MAX);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (next, tokens, base) = (Arc::clone(&next), Arc::clone(&tokens), base.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let offset = spread_ms * i64::try_from(i).unwrap_or(0)
                    / i64::try_from(n.max(1)).unwrap_or(1);
                let expires = first_expiry_ms + offset;
                // Whole seconds on the wire, rounded up: the expiry lands
                // within a second after the plan (never before the first
                // planned expiry), and the lag is measured from the real one.
                let secs = u64::try_from((expires - now_ms() + 999) / 1000).unwrap_or(0);
                if secs < 2 {
                    bail!("submitting fell behind the planned expiries: raise --lead");
                }
                base.with_token(token)
                    .create_request(&ask("bench-pg", secs, ""))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let took = started.elapsed();
    say!(
        "submitted {n} auto-approved requests in {:.1}s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Ok(Submitted { took })
}

/// Live sessions of the first grantees, held open through their expiry.
async fn open_sessions(target: &Target) -> anyhow::Result<Vec<PgConnection>> {
    let mut sessions = Vec::new();
    for i in 0..LIVE_SESSIONS.min(target.n) {
        let url = with_login(&target.url, &target.login(i))?;
        let mut conn = PgConnection::connect(&url)
            .await
            .with_context(|| format!("connecting as {}", target.login(i)))?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        sessions.push(conn);
    }
    Ok(sessions)
}

/// `url` with its user replaced by `login` (no password: the bench target
/// trusts local connections).
fn with_login(url: &str, login: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("the PostgreSQL URL has no scheme")?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    Ok(format!("{scheme}://{login}@{host}"))
}

/// How the target itself saw the grants go: when each login stopped being
/// a member of the role, polled every 100 ms.
struct Watched {
    /// Login → first poll (Unix ms) at which it was no longer a member.
    removed_at: HashMap<String, i64>,
    members_at_first_expiry: usize,
}

async fn watch_target(
    target: &Target,
    first_expiry_ms: i64,
    args: &PgExpiryArgs,
) -> anyhow::Result<Watched> {
    let mut conn = PgConnection::connect(&target.url).await?;
    let mut present: HashMap<String, ()> = HashMap::new();
    // Until the first expiry, every grant must be in the target.
    while now_ms() < first_expiry_ms - 200 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let members = target.members(&mut conn).await?;
    let members_at_first_expiry = members.len();
    say!(
        "at the first expiry the target has {members_at_first_expiry} of {} grants",
        target.n
    );
    for m in members {
        present.insert(m, ());
    }
    let mut removed_at = HashMap::new();
    let deadline = first_expiry_ms + i64::try_from((args.spread + 120) * 1000).unwrap_or(i64::MAX);
    while !present.is_empty() {
        if now_ms() > deadline {
            bail!(
                "{} grants were still held 120s after the last expiry",
                present.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let polled = now_ms();
        let still: HashMap<String, ()> = target
            .members(&mut conn)
            .await?
            .into_iter()
            .map(|m| (m, ()))
            .collect();
        present.retain(|login, ()| {
            let gone = !still.contains_key(login);
            if gone {
                removed_at.insert(login.clone(), polled);
            }
            !gone
        });
    }
    let _ = conn.close().await;
    Ok(Watched {
        removed_at,
        members_at_first_expiry,
    })
}

async fn count_terminated(sessions: &mut [PgConnection]) -> usize {
    let mut terminated = 0;
    for conn in sessions.iter_mut() {
        if sqlx::query("SELECT 1").execute(&mut *conn).await.is_err() {
            terminated += 1;
        }
    }
    terminated
}

async fn report(
    args: &PgExpiryArgs,
    target: &Target,
    database: &Location,
    submitted: &Submitted,
    watched: &Watched,
    terminated: usize,
    sessions: usize,
) -> anyhow::Result<bool> {
    let store = SqlStore::open(database).await?;
    let requests = store
        .list_requests(&RequestFilter {
            limit: u32::try_from(args.n + 10).unwrap_or(u32::MAX),
            ..RequestFilter::default()
        })
        .await?;
    let expired = requests
        .iter()
        .filter(|r| r.state == State::Expired)
        .count();
    let mut lags: Vec<f64> = Vec::new();
    let mut target_lags: Vec<f64> = Vec::new();
    let mut not_removed: Vec<&RequestId> = Vec::new();
    for r in &requests {
        let (Some(expires), Some(removed)) = (r.expires_at, r.deprovisioned_at) else {
            not_removed.push(&r.id);
            continue;
        };
        lags.push((removed.unix_millis() - expires.unix_millis()) as f64);
        let login = format!("{}{}", target.login_prefix, r.requester);
        if let Some(gone) = watched.removed_at.get(&login) {
            target_lags.push((gone - expires.unix_millis()) as f64);
        }
    }
    lags.sort_by(f64::total_cmp);
    target_lags.sort_by(f64::total_cmp);
    let p99 = percentile(&lags, 99.0);
    say!(
        "requests: {} in the store, {expired} expired, {} never confirmed removed; provisioning took {:.1}s",
        requests.len(),
        not_removed.len(),
        submitted.took.as_secs_f64()
    );
    say!(
        "revocation lag (removal confirmed by the target - expiry): p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&lags, 50.0),
        percentile(&lags, 90.0),
        p99,
        lags.last().copied().unwrap_or(f64::NAN)
    );
    say!(
        "as the target saw it (role membership gone, polled every 100 ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} of {} observed)",
        percentile(&target_lags, 50.0),
        percentile(&target_lags, 99.0),
        target_lags.last().copied().unwrap_or(f64::NAN),
        target_lags.len(),
        watched.members_at_first_expiry
    );
    say!("live sessions of grantees terminated by the revoke: {terminated} of {sessions}");
    let complete = requests.len() == args.n
        && not_removed.is_empty()
        && watched.members_at_first_expiry == args.n
        && terminated == sessions;
    let pass = complete && p99 <= P99_TARGET_MS;
    say!(
        "target: p99 <= {P99_TARGET_MS:.0} ms with every grant removed and every session ended: {}",
        if pass { "PASS" } else { "FAIL" }
    );
    if !complete {
        bail!("incomplete run (see above)");
    }
    Ok(pass)
}
