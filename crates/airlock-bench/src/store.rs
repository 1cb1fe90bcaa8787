//! The `store` bench: for each database backend, in a fresh database, the raw
//! single-row commit rate of the database itself, lifecycles per second
//! through the HTTP API (the `lifecycle` bench pointed at that backend), and
//! expiries per second when many active grants fall due at the same instant
//! after a restart. The raw rate is measured in the same run so the others
//! read as a fraction of what the database can do on this machine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_connectors::{Connector, ConnectorError, GrantSpec, Granted};
use airlock_core::approval::{Route, Verdict};
use airlock_core::catalog::{Catalog, Entitlement, TicketRule, User};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::{
    self, Command, JobAction, LifecycleSettings, NewRequest, State, Transition,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};
use airlock_policy::Directory;
use airlock_server::engine::{Clock, Engine, EngineParts};
use airlock_server::policy::{shorthand_policies, Policies, PolicySource};
use airlock_server::store::sql::{Location, SqlStore};
use airlock_server::store::{RequestFilter, Store};
use anyhow::{bail, Context};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, Connection};
use tokio::task::JoinSet;

use crate::lifecycle::{self, LifecycleFigures};
use crate::report::say;
use crate::{now_ms, percentile};

/// Target: lifecycle throughput as a share of the raw single-row commit rate.
const LIFECYCLE_TARGET: f64 = 0.25;
/// Target: expiries processed per second on PostgreSQL.
const EXPIRY_TARGET: f64 = 5000.0;
/// How far ahead of seeding the seeded grants expire; comfortably longer than
/// seeding takes. The engine's clock is then shifted so that this instant
/// comes shortly after the scheduler starts (see [`ShiftedClock`]).
const SEED_HORIZON: Duration = Duration::from_secs(3600);
/// Time between starting the scheduler and the seeded grants falling due.
const LEAD: Duration = Duration::from_secs(2);
/// Grant duration in the lifecycle phase.
const LIFECYCLE_GRANT_SECONDS: u64 = 1;

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Which backends to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    database: Which,
    /// Lifecycles to run through the HTTP API per backend: enough that the
    /// last grants' hold time (1 s) is a small part of the run.
    #[arg(long, default_value_t = 20_000)]
    lifecycles: usize,
    /// Active grants that fall due together per backend.
    #[arg(long, default_value_t = 100_000)]
    expiries: usize,
    /// Concurrent tasks (and connections) for the raw commit rate, and
    /// concurrent API clients for the lifecycles.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// PostgreSQL server to create the scratch database on (trust or
    /// password in the URL; the user must be allowed to create databases).
    #[arg(
        long,
        env = "AIRLOCK_BENCH_POSTGRES_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Concurrent tasks seeding the expiring grants through the store.
    #[arg(long, default_value_t = 1024)]
    seed_concurrency: usize,
    /// Seconds each raw commit rate is measured for.
    #[arg(long, default_value_t = 3)]
    raw_seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

struct RawFigures {
    /// `concurrency` connections, one task each.
    concurrent_per_s: f64,
    /// One connection.
    single_per_s: f64,
}

struct ExpiryFigures {
    seeded_per_s: f64,
    per_s: f64,
    duplicates: usize,
    missing: usize,
}

/// Everything measured for one backend; a phase that failed is `None` and
/// its error is in `errors`.
struct BackendFigures {
    backend: Backend,
    raw: Option<RawFigures>,
    lifecycle: Option<LifecycleFigures>,
    expiry: Option<ExpiryFigures>,
    errors: Vec<String>,
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    if args.concurrency == 0 || args.seed_concurrency == 0 {
        bail!("--concurrency and --seed-concurrency must be at least 1");
    }
    let backends: &[Backend] = match args.database {
        Which::Sqlite => &[Backend::Sqlite],
        Which::Postgres => &[Backend::Postgres],
        Which::Both => &[Backend::Sqlite, Backend::Postgres],
    };
    say!(
        "airlock-bench store: {} lifecycles, {} expiries, concurrency {}, on {} cores",
        args.lifecycles,
        args.expiries,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    let mut all = Vec::new();
    for &backend in backends {
        say!("\n=== {} ===", backend.label());
        all.push(bench_backend(backend, &args).await);
    }
    summary(&all);
    let errors: Vec<String> = all
        .iter()
        .flat_map(|f| {
            f.errors
                .iter()
                .map(|e| format!("{}: {e}", f.backend.label()))
        })
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// A database created for this run and removed after it.
pub(crate) struct Scratch {
    pub(crate) location: Location,
    /// Holds the SQLite file, and the server's data dir for either backend.
    pub(crate) dir: PathBuf,
    /// PostgreSQL: the server URL and the scratch database's name.
    postgres: Option<(String, String)>,
}

impl Scratch {
    pub(crate) async fn create(backend: Backend, postgres_url: &str) -> anyhow::Result<Scratch> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!(
            "airlock-bench-store-{pid}-{}",
            backend.label().to_lowercase()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        match backend {
            Backend::Sqlite => Ok(Scratch {
                location: Location::Sqlite(dir.join("airlock.db")),
                dir,
                postgres: None,
            }),
            Backend::Postgres => {
                let name = format!("airlock_bench_{pid}");
                let mut admin = AnyConnection::connect(postgres_url)
                    .await
                    .with_context(|| {
                        format!(
                            "connecting to {}",
                            Location::Postgres(postgres_url.to_owned()).describe()
                        )
                    })?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                let _ = admin.close().await;
                let url = with_database(postgres_url, &name)?;
                Ok(Scratch {
                    location: Location::Postgres(url),
                    dir,
                    postgres: Some((postgres_url.to_owned(), name)),
                })
            }
        }
    }

    pub(crate) async fn remove(self) -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((url, name)) = self.postgres {
            let mut admin = AnyConnection::connect(&url).await?;
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("dropping database {name}"))?;
            let _ = admin.close().await;
        }
        Ok(())
    }
}

/// `url` with its database name replaced by `name` (query kept).
pub(crate) fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|i| i + 3)
        .context("the PostgreSQL URL has no scheme")?;
    let (scheme, rest) = base.split_at_checked(scheme_end).unwrap_or((base, ""));
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

async fn bench_backend(backend: Backend, args: &StoreArgs) -> BackendFigures {
    let mut figures = BackendFigures {
        backend,
        raw: None,
        lifecycle: None,
        expiry: None,
        errors: Vec::new(),
    };
    let scratch = match Scratch::create(backend, &args.postgres_url).await {
        Ok(s) => s,
        Err(e) => {
            say!("error: cannot create a scratch database: {e:#}");
            figures.errors.push(format!("scratch database: {e:#}"));
            return figures;
        }
    };
    say!("database: {} (fresh)", scratch.location.describe());

    match raw_phase(&scratch.location, args).await {
        Ok(raw) => figures.raw = Some(raw),
        Err(e) => {
            say!("error: raw commit rate: {e:#}");
            figures.errors.push(format!("raw commit rate: {e:#}"));
        }
    }

    say!("\n-- lifecycles --");
    match lifecycle::run(
        &scratch.location,
        &scratch.dir,
        args.lifecycles,
        args.concurrency,
        LIFECYCLE_GRANT_SECONDS,
        false,
    )
    .await
    {
        Ok(l) => {
            if let Some(raw) = &figures.raw {
                say!(
                    "lifecycles: {:.0}/s end to end = {:.1}% of the raw commit rate with {} connections \
                     ({:.0}/s), {:.1}% of the 1-connection rate ({:.0}/s)",
                    l.end_to_end_per_s,
                    100.0 * l.end_to_end_per_s / raw.concurrent_per_s,
                    args.concurrency,
                    raw.concurrent_per_s,
                    100.0 * l.end_to_end_per_s / raw.single_per_s,
                    raw.single_per_s,
                );
            }
            figures.lifecycle = Some(l);
        }
        Err(e) => {
            say!("error: lifecycles: {e:#}");
            figures.errors.push(format!("lifecycles: {e:#}"));
        }
    }

    say!("\n-- expiries --");
    match expiry_phase(&scratch.location, args).await {
        Ok(x) => {
            if x.duplicates > 0 || x.missing > 0 {
                figures.errors.push(format!(
                    "expiries: {} requests revoked more than once, {} never revoked",
                    x.duplicates, x.missing
                ));
            }
            figures.expiry = Some(x);
        }
        Err(e) => {
            say!("error: expiries: {e:#}");
            figures.errors.push(format!("expiries: {e:#}"));
        }
    }

    if let Err(e) = scratch.remove().await {
        say!("error: removing the scratch database: {e:#}");
        figures.errors.push(format!("cleanup: {e:#}"));
    }
    figures
}

// ---------------------------------------------------------------------------
// Raw commit rate

async fn raw_phase(location: &Location, args: &StoreArgs) -> anyhow::Result<RawFigures> {
    say!("\n-- raw commit rate (one-row INSERT transactions) --");
    let seconds = Duration::from_secs(args.raw_seconds.max(1));
    let concurrent_per_s = raw_commit_rate(location, args.concurrency, seconds).await?;
    say!(
        "raw: {concurrent_per_s:.0} commits/s with {} connections",
        args.concurrency
    );
    let single_per_s = raw_commit_rate(location, 1, seconds).await?;
    say!("raw: {single_per_s:.0} commits/s with 1 connection (for reference)");
    Ok(RawFigures {
        concurrent_per_s,
        single_per_s,
    })
}

/// Commits per second of `connections` tasks, each on its own connection
/// doing BEGIN / one-row INSERT / COMMIT in a loop for `length`.
async fn raw_commit_rate(
    location: &Location,
    connections: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    let (url, sqlite) = match location {
        // The store's own settings: WAL, every commit synced.
        Location::Sqlite(path) => (format!("sqlite://{}?mode=rwc", path.display()), true),
        Location::Postgres(url) => (url.clone(), false),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(u32::try_from(connections)?)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if sqlite {
                    for pragma in [
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_raw (task BIGINT NOT NULL, seq BIGINT NOT NULL, \
         at BIGINT NOT NULL, PRIMARY KEY (task, seq))",
    )
    .execute(&pool)
    .await?;
    let run = i64::try_from(connections)?.saturating_mul(1_000_000);
    let start = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for task in 0..connections {
        let (pool, start, stop, commits) = (
            pool.clone(),
            Arc::clone(&start),
            Arc::clone(&stop),
            Arc::clone(&commits),
        );
        // Distinct keys per measurement, so the 1-connection run does not
        // collide with the rows of the concurrent one.
        let task = run + i64::try_from(task)?;
        tasks.spawn(async move {
            let conn = pool.acquire().await;
            start.wait().await;
            let mut conn = conn?;
            let mut seq: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = Connection::begin(&mut *conn).await?;
                sqlx::query("INSERT INTO bench_raw (task, seq, at) VALUES ($1, $2, $3)")
                    .bind(task)
                    .bind(seq)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                commits.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            anyhow::Ok(())
        });
    }
    start.wait().await;
    let began = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.map_err(anyhow::Error::from).and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    let elapsed = began.elapsed();
    pool.close().await;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(commits.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

// ---------------------------------------------------------------------------
// Expiries

/// The system clock moved by a fixed offset: the restarted engine lives
/// `offset` later than the seeding did, so grants seeded to expire an hour
/// after seeding began fall due seconds after the scheduler starts, however
/// long seeding took. Nothing in the store reads the database's clock.
struct ShiftedClock {
    offset_ms: i64,
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(now_ms().saturating_add(self.offset_ms))
    }
}

#[derive(Default)]
struct Calls {
    grants: u32,
    revokes: u32,
    /// Engine-clock time of the first revoke call.
    first_revoke_ms: i64,
}

/// A connector that answers at once and records every call.
struct Recorder {
    clock: Arc<ShiftedClock>,
    calls: Mutex<HashMap<RequestId, Calls>>,
    /// Requests revoked at least once.
    revoked: AtomicUsize,
    grants: AtomicUsize,
}

impl Recorder {
    fn poisoned() -> ConnectorError {
        ConnectorError::Retryable("recorder state poisoned".to_owned())
    }
}

#[async_trait::async_trait]
impl Connector for Recorder {
    async fn grant(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let mut calls = self.calls.lock().map_err(|_| Recorder::poisoned())?;
        calls.entry(spec.request_id.clone()).or_default().grants += 1;
        self.grants.fetch_add(1, Ordering::Relaxed);
        Ok(Granted::default())
    }

    async fn revoke(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let at = self.clock.now().unix_millis();
        let mut calls = self.calls.lock().map_err(|_| Recorder::poisoned())?;
        let seen = calls.entry(spec.request_id.clone()).or_default();
        seen.revokes += 1;
        if seen.revokes == 1 {
            seen.first_revoke_ms = at;
            self.revoked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// What every seeding task shares.
pub(crate) struct Seed {
    pub(crate) store: Arc<SqlStore>,
    pub(crate) entitlement: Arc<Entitlement>,
    pub(crate) group: GroupName,
    pub(crate) lifecycle: Arc<LifecycleSettings>,
    pub(crate) due: Timestamp,
    pub(crate) next: AtomicUsize,
    pub(crate) done: Arc<AtomicUsize>,
    pub(crate) n: usize,
}

/// Creates auto-approved requests (by users `u0`, `u1`, …) and reports
/// their grants done, so each ends `active` and expiring exactly at `due`;
/// returns the ids.
pub(crate) async fn seed_worker(seed: Arc<Seed>) -> anyhow::Result<Vec<RequestId>> {
    let mut ids = Vec::new();
    loop {
        let i = seed.next.fetch_add(1, Ordering::Relaxed);
        if i >= seed.n {
            return Ok(ids);
        }
        let user = User {
            id: UserId::parse(&format!("u{i}"))?,
            groups: BTreeSet::from([seed.group.clone()]),
            roles: BTreeSet::new(),
            kind: Default::default(),
            token: None,
            external: None,
        };
        let requester = user.id.clone();
        let id = RequestId::from_entropy(rand::random());
        let (entitlement, lifecycle, due) = (
            Arc::clone(&seed.entitlement),
            Arc::clone(&seed.lifecycle),
            seed.due,
        );
        let created: Transition = seed
            .store
            .create_request(
                &id.clone(),
                &requester,
                Box::new(move |open| {
                    let now = Timestamp::from_unix_millis(now_ms());
                    let new = NewRequest {
                        id: id.clone(),
                        duration: Some(now.until(due)),
                        reason: "expiry benchmark".to_owned(),
                        ticket: None,
                        start_at: None,
                        break_glass: false,
                        public_key: None,
                    };
                    // Seeding measures the store, not policy evaluation.
                    let verdict = Verdict {
                        route: Route::AutoApproved,
                        policy_version: "bench".to_owned(),
                        policies: vec!["bench".to_owned()],
                        errors: Vec::new(),
                        waiting: Default::default(),
                    };
                    let same = open.get(&entitlement.id);
                    request::submit(new, &user, &entitlement, same, verdict, &lifecycle, now)
                }),
            )
            .await?;
        let token = created
            .effects
            .iter()
            .find(|e| e.action == JobAction::Grant)
            .map(|e| e.token)
            .context("an auto-approved request did not start its grant")?;
        let lifecycle = Arc::clone(&seed.lifecycle);
        let granted = seed
            .store
            .update_request(
                &created.request.id,
                Box::new(move |current| {
                    request::apply(
                        current,
                        Command::JobSucceeded {
                            action: JobAction::Grant,
                            token,
                            certificate: None,
                        },
                        &lifecycle,
                        Timestamp::from_unix_millis(now_ms()),
                    )
                }),
            )
            .await?;
        if granted.request.state != State::Active || granted.request.expires_at != Some(seed.due) {
            bail!(
                "seeded request `{}` is {} expiring at {:?}, not active expiring at the due time",
                granted.request.id,
                granted.request.state.as_str(),
                granted.request.expires_at
            );
        }
        ids.push(granted.request.id);
        seed.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Stops a background task when dropped, on every path out of a phase.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells the scheduler to stop when dropped (dropping the sender alone
/// would not: the scheduler only stops on `true`).
struct StopScheduler(tokio::sync::watch::Sender<bool>);

impl Drop for StopScheduler {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Prints progress every few seconds until the returned guard is dropped.
#[must_use]
pub(crate) fn progress(
    label: &'static str,
    count: impl Fn() -> usize + Send + 'static,
    total: usize,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let began = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            say!(
                "  {label}: {} of {total} after {:.0}s",
                count(),
                began.elapsed().as_secs_f64()
            );
        }
    }))
}

async fn expiry_phase(location: &Location, args: &StoreArgs) -> anyhow::Result<ExpiryFigures> {
    let n = args.expiries;
    let group = GroupName::parse("expiry-requesters")?;
    let entitlement = Arc::new(Entitlement {
        id: EntitlementId::parse("bench-expiry")?,
        description: "expiry benchmark".to_owned(),
        max_duration: Duration::from_secs(24 * 3600),
        default_duration: Duration::from_secs(3600),
        reason_required: true,
        ticket: TicketRule {
            required: false,
            pattern: None,
        },
        connector: "recorder".to_owned(),
        drift: DriftPolicy::Report,
        sensitivity: airlock_core::standing::Sensitivity::default(),
        waiting: Default::default(),
        break_glass: None,
        open_to_externals: false,
    });
    let lifecycle = Arc::new(LifecycleSettings::default());

    // Seed through the store, with enough writes in flight that the writer
    // commits them in groups.
    let store = Arc::new(SqlStore::open(location).await?);
    let seed = Arc::new(Seed {
        store: Arc::clone(&store),
        entitlement: Arc::clone(&entitlement),
        group: group.clone(),
        lifecycle: Arc::clone(&lifecycle),
        due: Timestamp::from_unix_millis(now_ms()).plus(SEED_HORIZON),
        next: AtomicUsize::new(0),
        done: Arc::new(AtomicUsize::new(0)),
        n,
    });
    let counter = Arc::clone(&seed.done);
    let seeding_progress = progress("seeded", move || counter.load(Ordering::Relaxed), n);
    let began = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.seed_concurrency.min(n.max(1)) {
        workers.spawn(seed_worker(Arc::clone(&seed)));
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(joined) = workers.join_next().await {
        ids.extend(joined??);
    }
    let seeding = began.elapsed();
    drop(seeding_progress);
    let due = seed.due;
    let seeded_per_s = n as f64 / seeding.as_secs_f64();
    say!(
        "seeded {n} active grants through the store in {:.1}s: {seeded_per_s:.0} grants/s \
         ({:.0} durable changes/s, {} concurrent tasks; each grant is a create and a grant-succeeded)",
        seeding.as_secs_f64(),
        2.0 * seeded_per_s,
        args.seed_concurrency
    );
    if Timestamp::from_unix_millis(now_ms()) >= due {
        bail!("seeding took longer than {}s", SEED_HORIZON.as_secs());
    }
    drop(seed);
    drop(store);

    // Restart: a fresh store and engine whose clock reaches `due` LEAD after
    // the scheduler starts.
    let store = Arc::new(SqlStore::open(location).await?);
    let clock = Arc::new(ShiftedClock {
        offset_ms: due
            .unix_millis()
            .saturating_sub(now_ms().saturating_add(lead_ms())),
    });
    let recorder = Arc::new(Recorder {
        clock: Arc::clone(&clock),
        calls: Mutex::new(HashMap::with_capacity(n)),
        revoked: AtomicUsize::new(0),
        grants: AtomicUsize::new(0),
    });
    let mut connectors: HashMap<String, Arc<dyn Connector>> = HashMap::new();
    connectors.insert(
        entitlement.connector.clone(),
        Arc::clone(&recorder) as Arc<dyn Connector>,
    );
    let catalog = Catalog {
        users: BTreeMap::new(),
        entitlements: BTreeMap::from([(entitlement.id.clone(), (*entitlement).clone())]),
        service_owners: BTreeMap::new(),
        bundles: BTreeMap::new(),
    };
    let policies = Policies::load(
        PolicySource {
            dir: None,
            generated: vec![(
                "bench".to_owned(),
                shorthand_policies(
                    &entitlement.id,
                    &BTreeSet::from([group.clone()]),
                    true,
                    None,
                    &BTreeSet::new(),
                ),
            )],
        },
        Directory::default(),
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = Engine::new(EngineParts {
        store: Arc::clone(&store) as Arc<dyn Store>,
        catalog: Arc::new(catalog),
        policies: Arc::new(policies),
        lifecycle: (*lifecycle).clone(),
        overdue_after: Duration::from_secs(60),
        connectors,
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        routing: Default::default(),
        token_max_lifetime: Duration::from_secs(90 * 24 * 3600),
        access_reviews: Default::default(),
        tickets: None,
        idle_limits: Default::default(),
    });
    let (shutdown, watcher) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(Arc::clone(&engine).run_scheduler(watcher));
    let shutdown = StopScheduler(shutdown);
    say!(
        "store reopened and scheduler started (engine clock shifted +{:.1}s); all {n} grants fall due at T = start + {}s",
        clock.offset_ms as f64 / 1000.0,
        LEAD.as_secs()
    );
    let counter = Arc::clone(&recorder);
    let expiry_progress = progress(
        "revoked",
        move || counter.revoked.load(Ordering::Relaxed),
        n,
    );

    // From T until every request is deprovisioned: all revoke calls made and
    // their results committed, so nothing is due any more.
    let deadline = Instant::now() + LEAD + Duration::from_secs(600);
    let mut calls_done_at = None;
    let done_at = loop {
        let revoked = recorder.revoked.load(Ordering::Relaxed);
        if revoked >= n {
            let now = clock.now();
            calls_done_at.get_or_insert(now);
            // Far in the future every claim has lapsed: this asks whether
            // any deadline is left at all.
            let any_time = Timestamp::from_unix_millis(i64::MAX);
            if store.next_due_at(any_time).await?.is_none() {
                break clock.now();
            }
        }
        if Instant::now() > deadline {
            bail!("only {revoked} of {n} grants were revoked within the deadline");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(expiry_progress);
    drop(shutdown);
    let _ = scheduler.await;

    let window = due.until(done_at);
    let per_s = n as f64 / window.as_secs_f64().max(0.001);
    let calls_window = calls_done_at.map_or(window, |t| due.until(t));
    say!(
        "expiries: {per_s:.0}/s ({n} deprovisioned {:.2}s after T; the last revoke call came at T+{:.2}s)",
        window.as_secs_f64(),
        calls_window.as_secs_f64()
    );

    // Check: every seeded request revoked exactly once, and stored as expired
    // and deprovisioned.
    let (lags, duplicates, missing) = {
        let calls = recorder
            .calls
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder state poisoned"))?;
        let mut lags = Vec::with_capacity(n);
        let (mut duplicates, mut missing) = (0, 0);
        for id in &ids {
            match calls.get(id) {
                Some(c) if c.revokes >= 1 => {
                    lags.push(c.first_revoke_ms.saturating_sub(due.unix_millis()) as f64);
                    if c.revokes > 1 {
                        duplicates += 1;
                    }
                }
                _ => missing += 1,
            }
        }
        (lags, duplicates, missing)
    };
    let mut lags = lags;
    lags.sort_by(f64::total_cmp);
    say!(
        "lag from T to the revoke call: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    let stored = store
        .list_requests(&RequestFilter {
            entitlement: Some(entitlement.id.clone()),
            limit: u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX),
            ..RequestFilter::default()
        })
        .await?;
    let finished = stored
        .iter()
        .filter(|r| r.state == State::Expired && r.deprovisioned_at.is_some() && r.job.is_none())
        .count();
    say!(
        "check: {} revoked exactly once, {duplicates} revoked more than once, {missing} never revoked, \
         {} grant calls (expected 0); store: {finished} of {} rows expired and deprovisioned",
        n.saturating_sub(duplicates + missing),
        recorder.grants.load(Ordering::Relaxed),
        stored.len()
    );
    if finished != n {
        bail!("only {finished} of {n} seeded requests are stored as expired and deprovisioned");
    }
    Ok(ExpiryFigures {
        seeded_per_s,
        per_s,
        duplicates,
        missing,
    })
}

fn lead_ms() -> i64 {
    i64::try_from(LEAD.as_millis()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Summary

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

fn summary(all: &[BackendFigures]) {
    say!("\n=== summary ===");
    say!(
        "{:<11} {:>14} {:>9} {:>13} {:>9} {:>10} {:>12} {:>11} {:>13}",
        "backend",
        "raw commits/s",
        "(1 conn)",
        "lifecycles/s",
        "% of raw",
        "% of best",
        "target ≥25%",
        "expiries/s",
        "target ≥5000"
    );
    for f in all {
        let raw = f.raw.as_ref();
        let num = |v: Option<f64>| v.map_or_else(|| "error".to_owned(), |v| format!("{v:.0}"));
        let share = |denominator: fn(&RawFigures) -> f64| match (&f.lifecycle, raw) {
            (Some(l), Some(r)) if denominator(r) > 0.0 => Some(l.end_to_end_per_s / denominator(r)),
            _ => None,
        };
        let of_raw = share(|r| r.concurrent_per_s);
        // Judged against the better of the two raw rates: what the database
        // can do, however it is driven.
        let of_best = share(|r| r.concurrent_per_s.max(r.single_per_s));
        let lifecycle_verdict = of_best.map_or("-", |s| verdict(s >= LIFECYCLE_TARGET));
        let percent =
            |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", 100.0 * s));
        let expiry_verdict = match (&f.expiry, f.backend) {
            (Some(x), Backend::Postgres) => verdict(x.per_s >= EXPIRY_TARGET),
            (Some(x), Backend::Sqlite) => {
                if x.per_s >= EXPIRY_TARGET {
                    "(met)"
                } else {
                    "(n/a)"
                }
            }
            (None, _) => "-",
        };
        say!(
            "{:<11} {:>14} {:>9} {:>13} {:>9} {:>10} {:>12} {:>11} {:>13}",
            f.backend.label(),
            num(raw.map(|r| r.concurrent_per_s)),
            num(raw.map(|r| r.single_per_s)),
            num(f.lifecycle.as_ref().map(|l| l.end_to_end_per_s)),
            percent(of_raw),
            percent(of_best),
            lifecycle_verdict,
            num(f.expiry.as_ref().map(|x| x.per_s)),
            expiry_verdict
        );
    }
    for f in all {
        if let Some(x) = &f.expiry {
            say!(
                "{}: seeding ran at {:.0} grants/s; expiry check: {} duplicate revokes, {} missing",
                f.backend.label(),
                x.seeded_per_s,
                x.duplicates,
                x.missing
            );
        }
        for e in &f.errors {
            say!("{}: error: {e}", f.backend.label());
        }
    }
    say!(
        "targets: lifecycles/s (end to end) ≥ 25% of the raw single-row commit rate (judged against \
         the better of the concurrent and the 1-connection rate); expiries ≥ 5000/s on PostgreSQL \
         (SQLite shown for reference)"
    );
}
