//! The SQL store: one implementation for the embedded default (SQLite) and
//! for PostgreSQL (several replicas), through sqlx's runtime-generic `Any`
//! driver and runtime queries, so both run the same statements and the same
//! conformance suite. The few differences are named in [`Backend`].
//!
//! SQLite runs in WAL mode with full sync, so an acknowledged change survives
//! a machine crash.
//!
//! All writes of one process go through one writer task that owns the only
//! write connection, which makes "read the row, let the core decide, write row
//! and audit" a serialised critical section. The writer commits every change
//! queued while the previous commit was syncing in one transaction (group
//! commit) with a fixed number of statements (see `commit_batch`); a change
//! the core refuses writes nothing, and callers hear back only after the
//! commit is durable. On PostgreSQL
//! each batch first takes a transaction-scoped advisory lock, so batches from
//! all replicas commit one after another: the audit chain stays one total
//! order with no forks or gaps, and a request row is never decided on by two
//! replicas at once (it is also read `FOR UPDATE`). Reads use a separate pool
//! and never wait for writers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::access::{self, Capability};
use airlock_core::audit::{AuditEvent, AuditRecord, ChainVerifier, GENESIS_HASH};
use airlock_core::catalog::User;
use airlock_core::directory::{DirectoryGroup, DirectoryUser};
use airlock_core::ids::check_id;
use airlock_core::request::{AccessRequest, CheckActivity, Review, State, Transition};
use airlock_core::token::ApiToken;
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, TokenId, UserId};
use sqlx::any::{install_default_drivers, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Column, Connection, Executor, Row};
use tokio::sync::{mpsc, oneshot};

mod directory;

use super::directory::{Committed, DirectoryWrite, ListQuery};
use super::migrations::{latest, pending, Migration};
use super::outbox::{
    notification_key, Delivery, OutboxEntry, OutboxFilter, OutboxState, OutboxSummary,
};
use super::record::{JobRecord, RequestRecord};
use super::{
    AuditFilter, BundleDecision, ChainReport, CreateDecision, CreateManyDecision, Exclusive,
    ImportReport, OpenRequests, RequestFilter, ReviewBacklog, RevocationBacklog, Store, StoreError,
    UpdateDecision,
};
use airlock_core::notify::{Notification, Topic};

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user@host:port/db`).
    Postgres(String),
}

impl Location {
    /// `postgres://…` / `postgresql://…` is PostgreSQL; anything else is a
    /// SQLite path (an optional `sqlite://` prefix is dropped).
    pub fn parse(raw: &str) -> Location {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Location::Postgres(raw.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(raw.strip_prefix("sqlite://").unwrap_or(raw)))
        }
    }

    /// For logs: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let creds = url.get(scheme + 3..at).unwrap_or("");
                    let user = creds.split(':').next().unwrap_or("");
                    format!(
                        "{}{user}@{}",
                        url.get(..scheme + 3).unwrap_or(""),
                        url.get(at + 1..).unwrap_or("")
                    )
                }
                _ => url.clone(),
            },
        }
    }
}

/// What differs between the two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Locks the row being decided on (SQLite's single writer needs none).
    fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Lets concurrent schedulers pass over rows another one is claiming
    /// (SQLite's claims run in the single writer's batches instead).
    fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Rows per multi-row statement whose rows take `params_per_row`
    /// parameters each. SQLite finds each bound parameter by walking the
    /// statement's list of names, so binding costs the square of the count:
    /// its statements stay near 500 parameters (in the store bench as good as
    /// 256 and clearly better than 1,024). PostgreSQL's take up to 16,384
    /// (its limit is 65,535). Both at most 512 rows.
    fn rows_per_statement(self, params_per_row: usize) -> usize {
        let budget = match self {
            Backend::Sqlite => 512,
            Backend::Postgres => 16_384,
        };
        (budget / params_per_row.max(1)).clamp(1, 512)
    }

    /// Whether the text `haystack` holds the text `needle` (both SQL
    /// expressions), matched exactly: SQLite's `LIKE` ignores ASCII case.
    fn contains(self, haystack: &str, needle: &str) -> String {
        match self {
            Backend::Sqlite => format!("instr({haystack}, {needle}) > 0"),
            Backend::Postgres => format!("strpos({haystack}, {needle}) > 0"),
        }
    }

    fn now_millis_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST(strftime('%s','now') AS BIGINT) * 1000",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
        }
    }

    fn migration_sql(self, m: &Migration) -> String {
        match self {
            Backend::Sqlite => format!("{}\n{}", m.common, m.sqlite),
            Backend::Postgres => format!("{}\n{}", m.common, m.postgres),
        }
    }
}

/// Advisory lock keys (PostgreSQL): one for migrations, one for write
/// batches, and one per kind of exclusive background work.
const MIGRATION_LOCK: i64 = 0x6169_726c_6f63_6b01;
const RECONCILIATION_LOCK: i64 = 0x6169_726c_6f63_6b03;
const ACTIVITY_SAMPLING_LOCK: i64 = 0x6169_726c_6f63_6b04;
/// Held for an access-review round, so replicas neither start a scheduled
/// campaign twice nor try the same removal at once.
const ACCESS_REVIEWS_LOCK: i64 = 0x6169_726c_6f63_6b05;
/// Held for a round of the idle limits, so a holder is warned once.
const IDLE_GRANTS_LOCK: i64 = 0x6169_726c_6f63_6b15;

/// Starts a write batch on PostgreSQL (see [`begin_batch`]). The write
/// lock's key is 0x6169_726c_6f63_6b02, next to [`MIGRATION_LOCK`], spelt in
/// decimal (a test checks it) because the message carries no arguments.
/// `locked` tells the lock's row from the others; the lock function itself
/// returns `void`, which the runtime-generic rows cannot carry. (SQLite
/// begins `IMMEDIATE`, taking the file's write lock at once: a deferred
/// transaction that read first could not upgrade if another process, an
/// `airlock import` say, wrote the file in between.)
const BEGIN_POSTGRES: &str =
    "BEGIN; SELECT 1 AS locked FROM pg_advisory_xact_lock(7019267304284449538); ";

pub struct SqlStore {
    backend: Backend,
    writer: mpsc::Sender<WriteJob>,
    read: AnyPool,
    /// PostgreSQL: due claims run here, in short transactions of their own,
    /// never under the write lock, and without waiting for their commit to
    /// reach the disk (a claim lost in a crash only means the work is
    /// unclaimed). SQLite has one writer, so its claims join the write
    /// batches: a connection of their own would starve waiting for the
    /// file's write lock while batches follow each other.
    claims: Option<AnyPool>,
    /// How to open a connection of its own (exclusive background work).
    options: AnyConnectOptions,
    /// PostgreSQL: checks' lookups of open requests, answered in groups on
    /// the read pool (`checks::answer_lookups`).
    lookups: mpsc::Sender<super::checks::Lookup>,
    /// SQLite: checks' lookups on connections of their own, run where the
    /// check runs (`checks::DirectLookups`).
    direct: Option<super::checks::DirectLookups>,
    /// SQLite: where each user name stands in the directory, remembered.
    standing: Option<Arc<super::directory::StandingCache>>,
}

/// Holds the right to an [`Exclusive`] job; see [`Store::try_exclusive`].
/// On PostgreSQL: a session advisory lock on a connection of its own, which
/// [`ExclusiveGuard::release`] unlocks and closes; dropped without release,
/// the connection's socket closes and the server frees the lock.
pub struct ExclusiveGuard {
    holder: Option<(AnyConnection, i64)>,
}

impl ExclusiveGuard {
    pub async fn release(mut self) {
        if let Some((mut conn, key)) = self.holder.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

/// Work for the writer task.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every job is a change: boxing it would allocate per write to save \
              bytes on the rare import"
)]
enum WriteJob {
    Change(Change),
    /// An import: one transaction of its own, fed batch by batch from
    /// `steps`, while other jobs wait. `started` hears whether it began
    /// (the database is empty), `reply` how it ended.
    Import {
        steps: mpsc::Receiver<super::ImportStep>,
        started: oneshot::Sender<Result<(), StoreError>>,
        reply: oneshot::Sender<Result<ImportReport, StoreError>>,
    },
}

/// One change to a request, committed in a batch with others.
enum Change {
    /// New requests (one, or a bundle's parts), all written or none.
    Create {
        ids: Vec<RequestId>,
        requester: UserId,
        decide: CreateManyDecision,
        reply: oneshot::Sender<Result<Vec<Transition>, StoreError>>,
    },
    /// Audit events about no request (policy changes), appended in order.
    Record {
        events: Vec<AuditEvent>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A change to a request, decided with every part of its bundle (read
    /// in the same transaction); every changed part is written or none.
    Update {
        id: RequestId,
        decide: BundleDecision,
        reply: oneshot::Sender<Result<Vec<Transition>, StoreError>>,
    },
    /// A write to an API token, with its audit events (appended only if it
    /// changed a row).
    Token {
        write: super::tokens::TokenWrite,
        events: Vec<AuditEvent>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// A recorded SSH session, with its audit event (appended only if the
    /// session was not stored before).
    SshSession {
        session: Box<super::ssh_sessions::StoredSession>,
        events: Vec<AuditEvent>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Checks counted in memory, added to the requests' check activity.
    Checks {
        tallies: Vec<(RequestId, CheckActivity)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A signed webhook delivery taken or forgotten.
    Delivery {
        write: super::deliveries::DeliveryWrite,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// A write to an access-review campaign, with its audit events and
    /// notifications (appended only if it changed a row).
    AccessReview {
        write: super::access_reviews::ReviewWrite,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// A directory write (SCIM), with its audit events.
    Directory {
        write: DirectoryWrite,
        reply: oneshot::Sender<Result<Committed, StoreError>>,
    },
    /// A due claim (SQLite only: see [`SqlStore::claims`]).
    Claim {
        claim: DueClaim,
        reply: oneshot::Sender<Result<Vec<RequestId>, StoreError>>,
    },
    /// A claim or settlement of outbox rows (SQLite only, like `Claim`).
    Outbox {
        op: OutboxOp,
        reply: oneshot::Sender<Result<OutboxAnswer, StoreError>>,
    },
}

/// What a dispatcher asks of the outbox.
#[derive(Clone)]
enum OutboxOp {
    Claim(DueClaim),
    Settle {
        key: String,
        claimed_until: i64,
        delivery: Delivery,
        now: i64,
    },
    ReleaseClaims,
    Prune {
        before: i64,
        limit: i64,
    },
}

enum OutboxAnswer {
    Claimed(Vec<OutboxEntry>),
    Settled(bool),
    Released(u64),
    Pruned(u64),
}

/// What a scheduler pass asks to claim.
#[derive(Clone, Copy)]
struct DueClaim {
    now: i64,
    until: i64,
    limit: i64,
}

impl DueClaim {
    /// Up to `limit` rows due at `now`, held until `now + lease`.
    fn new(now: Timestamp, lease: Duration, limit: u32) -> DueClaim {
        DueClaim {
            now: now.unix_millis(),
            until: now
                .unix_millis()
                .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
            limit: i64::from(limit),
        }
    }
}

/// Changes committed together at most; bounds how long one commit holds others.
const MAX_BATCH: usize = 512;

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqlStore {
    /// Opens the store (creating a SQLite file if missing) and runs migrations.
    pub async fn open(location: &Location) -> Result<SqlStore, StoreError> {
        install_default_drivers();
        let (backend, write_url, read_url) = match location {
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            StoreError::Database(format!("cannot create `{}`: {e}", dir.display()))
                        })?;
                    }
                }
                let file = path.display();
                (
                    Backend::Sqlite,
                    format!("sqlite://{file}?mode=rwc"),
                    format!("sqlite://{file}?mode=ro"),
                )
            }
            Location::Postgres(url) => (Backend::Postgres, url.clone(), url.clone()),
        };
        let options = AnyConnectOptions::from_str(&write_url).map_err(db_err)?;
        let mut conn = connect_writer(backend, &options).await?;
        migrate(&mut conn, backend).await?;
        let read = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres {
                        sqlx::query(PLAN_EVERY_EXECUTION)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&read_url)
            .await
            .map_err(db_err)?;
        let claims = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                AnyPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for setting in [KEYED_ACCESS_ONLY, "SET synchronous_commit = off"] {
                                sqlx::query(setting).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&write_url)
                    .await
                    .map_err(db_err)?,
            ),
        };
        // SQLite: checks look up on connections of their own, one per
        // thread that asks (see `checks::DirectLookups`).
        let direct = match location {
            Location::Sqlite(path) => Some(super::checks::DirectLookups::open(path)?),
            Location::Postgres(_) => None,
        };
        let standing = (backend == Backend::Sqlite)
            .then(|| Arc::new(super::directory::StandingCache::default()));
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run_writer(
            conn,
            options.clone(),
            backend,
            jobs,
            standing.clone(),
        ));
        let (lookups, asked) = mpsc::channel(4096);
        if direct.is_none() {
            tokio::spawn(super::checks::answer_lookups(read.clone(), asked));
        }
        Ok(SqlStore {
            backend,
            writer,
            read,
            claims,
            options,
            lookups,
            direct,
            standing,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        schema_version(&mut conn).await
    }

    /// Outbox claims and settlements: on PostgreSQL a short transaction of
    /// their own on the claims pool, never under the write lock; on SQLite
    /// inside the writer's batches (see [`SqlStore::claims`]).
    async fn outbox(&self, op: OutboxOp) -> Result<OutboxAnswer, StoreError> {
        match &self.claims {
            Some(pool) => {
                let mut conn = pool.acquire().await.map_err(db_err)?;
                outbox_op(&mut conn, self.backend, &op).await
            }
            None => {
                let (reply, answer) = oneshot::channel();
                self.submit_job(WriteJob::Change(Change::Outbox { op, reply }), answer)
                    .await
            }
        }
    }

    /// The plan the database chooses for checks' lookup of open requests
    /// (`Store::open_request`), as text: which index it uses. PostgreSQL
    /// looks up `n` (requester, entitlement) pairs in one query; SQLite one
    /// pair at a time, whatever `n`.
    pub async fn check_lookup_plan(&self, n: usize) -> Result<String, StoreError> {
        if let Some(direct) = &self.direct {
            return direct.plan();
        }
        let mut conn = AnyConnection::connect_with(&self.options)
            .await
            .map_err(db_err)?;
        let plan = super::checks::open_request_plan(&mut conn, n).await;
        let _ = conn.close().await;
        plan
    }

    /// The plan the database chooses for a list's query (the one
    /// [`Store::list_requests`] or [`Store::list_audit`] runs for the
    /// filter), as text: SQLite's `EXPLAIN QUERY PLAN` indented by depth;
    /// PostgreSQL's `EXPLAIN` with sequential scans off, as the planner
    /// sees a large table (on a small one a scan is cheaper and it rightly
    /// takes that).
    pub async fn list_plan(&self, list: Explained<'_>) -> Result<String, StoreError> {
        let (sql, binds) = match list {
            Explained::Requests(filter) => list_requests_sql(self.backend, filter),
            Explained::Audit(filter) => list_audit_sql(filter),
            Explained::OpenRequestsOf(requesters) => {
                (open_requests_sql(self.backend, requesters)?, Vec::new())
            }
        };
        let mut conn = AnyConnection::connect_with(&self.options)
            .await
            .map_err(db_err)?;
        let plan = explain(&mut conn, self.backend, &sql, binds).await;
        let _ = conn.close().await;
        plan
    }

    async fn submit_job<T>(
        &self,
        job: WriteJob,
        reply: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let gone = || StoreError::Database("the database writer has stopped".to_owned());
        self.writer.send(job).await.map_err(|_| gone())?;
        reply.await.map_err(|_| gone())?
    }
}

/// A query whose plan [`SqlStore::list_plan`] explains: a list's, or the
/// write batch's read of its requesters' open requests.
#[derive(Debug, Clone, Copy)]
pub enum Explained<'a> {
    Requests(&'a RequestFilter),
    Audit(&'a AuditFilter),
    OpenRequestsOf(&'a BTreeSet<String>),
}

async fn explain(
    conn: &mut AnyConnection,
    backend: Backend,
    sql: &str,
    binds: Vec<Bind>,
) -> Result<String, StoreError> {
    match backend {
        Backend::Postgres => {
            exec(conn, "SET enable_seqscan = off").await?;
            let explain = format!("EXPLAIN {sql}");
            let rows = bound(&explain, binds)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
            let lines = rows
                .iter()
                .map(|r| r.try_get::<String, _>("QUERY PLAN").map_err(db_err))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(lines.join("\n"))
        }
        Backend::Sqlite => {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = bound(&explain, binds)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
            let mut depth: HashMap<i64, usize> = HashMap::new();
            let mut lines = Vec::new();
            for row in &rows {
                let id: i64 = row.try_get("id").map_err(db_err)?;
                let parent: i64 = row.try_get("parent").map_err(db_err)?;
                let detail: String = row.try_get("detail").map_err(db_err)?;
                let d = depth.get(&parent).map_or(0, |d| d + 1);
                depth.insert(id, d);
                lines.push(format!("{}{detail}", "  ".repeat(d)));
            }
            Ok(lines.join("\n"))
        }
    }
}

/// Statements are prepared once per connection, and a generic plan made
/// while the table was small (a fresh database) scans it whole for
/// `id IN (...)` or a claim's join; it stays cached until an ANALYZE happens
/// to invalidate it. The read pool, whose filters vary, plans each execution
/// with its actual parameters.
const PLAN_EVERY_EXECUTION: &str = "SET plan_cache_mode = force_custom_plan";
/// The writer and the due claims only ever find rows by key, by requester or
/// by deadline, for which an index is always right: those connections never
/// plan a whole-table scan, so their plans can stay cached (planning every
/// execution of the writer's large statements cost it about a fifth of its
/// throughput).
const KEYED_ACCESS_ONLY: &str = "SET enable_seqscan = off";

async fn connect_writer(
    backend: Backend,
    options: &AnyConnectOptions,
) -> Result<AnyConnection, StoreError> {
    let mut conn = AnyConnection::connect_with(options).await.map_err(db_err)?;
    if backend == Backend::Postgres {
        // A replica frozen mid-batch (SIGSTOP, a VM pause) would otherwise hold
        // the write lock and stall every replica: the server ends its session
        // instead, rolling the batch back, and the replica reconnects later.
        exec(&mut conn, "SET idle_in_transaction_session_timeout = '2s'").await?;
        exec(&mut conn, KEYED_ACCESS_ONLY).await?;
    }
    if backend == Backend::Sqlite {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = ON",
        ] {
            exec(&mut conn, pragma).await?;
        }
    }
    Ok(conn)
}

/// Owns the write connection; runs until every `SqlStore` handle is dropped.
/// A connection lost mid-batch (a database restart) is re-established; the
/// callers of that batch were told it failed, and nothing of it committed.
async fn run_writer(
    mut conn: AnyConnection,
    options: AnyConnectOptions,
    backend: Backend,
    mut jobs: mpsc::Receiver<WriteJob>,
    standing: Option<Arc<super::directory::StandingCache>>,
) {
    let mut next = jobs.recv().await;
    while let Some(job) = next.take() {
        let first = match job {
            WriteJob::Import {
                steps,
                started,
                reply,
            } => {
                let writer_cache = raise_import_cache(&mut conn, backend).await;
                let result = import_in_tx(&mut conn, backend, steps, started).await;
                if result.is_err() {
                    let _ = exec(&mut conn, "ROLLBACK").await;
                }
                if let Some(pages) = writer_cache {
                    let _ = sqlx::query(&format!("PRAGMA cache_size = {pages}"))
                        .execute(&mut conn)
                        .await;
                }
                let _ = reply.send(result);
                next = jobs.recv().await;
                continue;
            }
            WriteJob::Change(change) => change,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(WriteJob::Change(change)) => batch.push(change),
                // An import never joins a batch: it runs right after this one.
                Ok(import) => {
                    next = Some(import);
                    break;
                }
                Err(_) => break,
            }
        }
        if !commit_batch(&mut conn, backend, batch, standing.as_deref()).await {
            loop {
                match connect_writer(backend, &options).await {
                    Ok(fresh) => {
                        conn = fresh;
                        tracing::info!("database writer reconnected");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "database writer cannot reconnect; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        if next.is_none() {
            next = jobs.recv().await;
        }
    }
}

/// Commits a batch of changes and answers each caller once its outcome is
/// durable. Returns whether the connection is still usable.
///
/// A database error in a batch of several changes does not reach their
/// callers: the batch is rolled back and its halves are tried again, each
/// re-decided on what is committed, until the change the database refuses
/// stands alone and fails alone with its own error. So one caller's bad
/// change (a value the database refuses, a unique-index backstop) costs the
/// others a few extra transactions, never their outcome. A lost connection
/// fails every change not yet committed: nothing of them was written.
async fn commit_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: Vec<Change>,
    standing: Option<&super::directory::StandingCache>,
) -> bool {
    // Batches still to try, the next one last: halves keep the callers' order.
    let mut work = vec![batch];
    while let Some(batch) = work.pop() {
        match try_batch(conn, backend, &batch).await {
            Ok(outcomes) => {
                if let Some(cache) = standing {
                    if batch.iter().any(|c| matches!(c, Change::Directory { .. })) {
                        cache.forget();
                    }
                }
                for (change, outcome) in batch.into_iter().zip(outcomes) {
                    change.answer(outcome);
                }
            }
            Err(e) => {
                let usable = exec(conn, "ROLLBACK").await.is_ok();
                if !usable || batch.len() == 1 {
                    if batch.len() == 1 {
                        tracing::warn!(error = %e, "a change failed on its own; rolled back");
                    } else {
                        tracing::error!(error = %e, "write batch failed and the connection is lost");
                    }
                    for change in batch {
                        change.fail(&e);
                    }
                    if !usable {
                        for change in work.into_iter().flatten() {
                            change.fail(&e);
                        }
                        return false;
                    }
                    continue;
                }
                tracing::warn!(error = %e, changes = batch.len(),
                    "write batch failed; retrying its halves to isolate the change at fault");
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                work.push(second);
                work.push(first);
            }
        }
    }
    true
}

/// What one change of a committed batch answers.
enum Outcome {
    Decided(Box<Result<Vec<Transition>, StoreError>>),
    Recorded,
    Claimed(Vec<RequestId>),
    Outbox(OutboxAnswer),
    TokenWritten(bool),
    SshSession(bool),
    ChecksAdded,
    Delivery(bool),
    AccessReview(bool),
    Directory(Box<Result<Committed, StoreError>>),
}

impl Change {
    fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (Change::Create { reply, .. } | Change::Update { reply, .. }, Outcome::Decided(r)) => {
                let _ = reply.send(*r);
            }
            (Change::Record { reply, .. }, Outcome::Recorded) => {
                let _ = reply.send(Ok(()));
            }
            (Change::Claim { reply, .. }, Outcome::Claimed(ids)) => {
                let _ = reply.send(Ok(ids));
            }
            (Change::Outbox { reply, .. }, Outcome::Outbox(answer)) => {
                let _ = reply.send(Ok(answer));
            }
            (Change::Token { reply, .. }, Outcome::TokenWritten(changed)) => {
                let _ = reply.send(Ok(changed));
            }
            (Change::SshSession { reply, .. }, Outcome::SshSession(new)) => {
                let _ = reply.send(Ok(new));
            }
            (Change::Checks { reply, .. }, Outcome::ChecksAdded) => {
                let _ = reply.send(Ok(()));
            }
            (Change::Delivery { reply, .. }, Outcome::Delivery(new)) => {
                let _ = reply.send(Ok(new));
            }
            (Change::AccessReview { reply, .. }, Outcome::AccessReview(changed)) => {
                let _ = reply.send(Ok(changed));
            }
            (Change::Directory { reply, .. }, Outcome::Directory(r)) => {
                let _ = reply.send(*r);
            }
            (change, _) => change.fail(&StoreError::Corrupt(
                "a write batch answered a change with another kind's outcome".to_owned(),
            )),
        }
    }

    /// Tells the caller its change was not written.
    fn fail(self, e: &StoreError) {
        let failure = || match e {
            StoreError::UniqueViolation => StoreError::UniqueViolation,
            other => StoreError::Database(other.to_string()),
        };
        match self {
            Change::Create { reply, .. } | Change::Update { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Record { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Claim { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Outbox { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Token { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::SshSession { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Checks { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Delivery { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::AccessReview { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Change::Directory { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
        }
    }
}

/// Runs `batch` in one transaction and commits it; the outcome of each
/// change, in order. A batch costs a fixed handful of round trips whatever
/// its size: one to begin (see [`begin_batch`]: it locks and reads the rows
/// the batch changes or creates and the open requests it creates against),
/// then the core decides every change in order (a later change to the same
/// request sees the earlier one), and one multi-row upsert and one multi-row
/// audit insert write the result. A change the core refuses writes nothing
/// and does not affect the others; a database error fails the transaction
/// (the caller rolls it back).
async fn try_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Change],
) -> Result<Vec<Outcome>, StoreError> {
    let (ids, requesters) = batch_keys(batch);
    let BatchStart {
        head,
        mut rows,
        mut open,
    } = begin_batch(conn, backend, &ids, &requesters).await?;
    read_bundle_parts(conn, backend, batch, &mut rows).await?;
    let mut pending = PendingWrites::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for change in batch {
        let outcome = match change {
            Change::Record { events, .. } => {
                pending.events.extend(events.iter().cloned());
                Outcome::Recorded
            }
            Change::Claim { claim, .. } => {
                Outcome::Claimed(claim_due_rows(conn, backend, *claim).await?)
            }
            Change::Outbox { op, .. } => Outcome::Outbox(outbox_op(conn, backend, op).await?),
            Change::Token { write, events, .. } => {
                let changed = super::tokens::write(conn, write).await?;
                if changed {
                    pending.events.extend(events.iter().cloned());
                }
                Outcome::TokenWritten(changed)
            }
            Change::SshSession {
                session, events, ..
            } => {
                let new = super::ssh_sessions::insert(conn, session).await?;
                if new {
                    pending.events.extend(events.iter().cloned());
                }
                Outcome::SshSession(new)
            }
            Change::Checks { tallies, .. } => {
                super::checks::add(conn, tallies, backend == Backend::Postgres).await?;
                Outcome::ChecksAdded
            }
            Change::Delivery { write, .. } => {
                Outcome::Delivery(super::deliveries::write(conn, write).await?)
            }
            Change::AccessReview { write, .. } => {
                let mut appended = super::access_reviews::Appended {
                    events: &mut pending.events,
                    notifications: &mut pending.notifications,
                    next_seq: head.seq.saturating_add(1),
                };
                Outcome::AccessReview(
                    super::access_reviews::write(
                        conn,
                        backend.rows_per_statement(6),
                        write,
                        &mut appended,
                    )
                    .await?,
                )
            }
            Change::Directory { write, .. } => Outcome::Directory(Box::new(match write {
                DirectoryWrite::User {
                    id,
                    operation,
                    decide,
                } => {
                    directory::write_user(conn, backend, id, operation, decide, &mut pending.events)
                        .await?
                }
                DirectoryWrite::Group {
                    id,
                    operation,
                    decide,
                } => {
                    directory::write_group(
                        conn,
                        backend,
                        id,
                        operation,
                        decide,
                        &mut pending.events,
                    )
                    .await?
                }
            })),
            Change::Update { id, decide, .. } => {
                Outcome::Decided(Box::new(bundle_of(id, &rows).and_then(|parts| {
                    let transitions = decide(parts.clone()).map_err(StoreError::from)?;
                    for t in &transitions {
                        let Some(current) = parts.iter().find(|p| p.id == t.request.id) else {
                            return Err(StoreError::Corrupt(format!(
                                "a change of `{id}` decided `{}`, which is no part of it",
                                t.request.id
                            )));
                        };
                        // Nothing changed (e.g. a tick that found nothing due): write nothing.
                        if !(t.request == *current && t.events.is_empty()) {
                            pending.record(t, &mut rows, &mut open);
                        }
                    }
                    Ok(transitions)
                })))
            }
            Change::Create {
                ids,
                requester,
                decide,
                ..
            } => Outcome::Decided(Box::new(
                match ids.iter().find(|id| rows.contains_key(id.as_str())) {
                    Some(id) => Err(StoreError::Corrupt(format!(
                        "request id `{id}` is already taken"
                    ))),
                    None => {
                        let mine = open_of(&open, requester.as_str());
                        decide(&mine).map_err(StoreError::from).and_then(|ts| {
                            let decided: Vec<&RequestId> =
                                ts.iter().map(|t| &t.request.id).collect();
                            if decided != ids.iter().collect::<Vec<_>>() {
                                return Err(StoreError::Corrupt(format!(
                                    "requests {ids:?} were decided as {decided:?}"
                                )));
                            }
                            for t in &ts {
                                pending.record(t, &mut rows, &mut open);
                            }
                            Ok(ts)
                        })
                    }
                },
            )),
        };
        outcomes.push(outcome);
    }
    pending.write(conn, backend, &rows, head).await?;
    exec(conn, "COMMIT").await?;
    Ok(outcomes)
}

/// Rows and events a batch will write, in the order they were decided.
#[derive(Default)]
struct PendingWrites {
    /// Ids of changed requests, each once, with the time of its last change.
    order: Vec<(String, Timestamp)>,
    dirty: BTreeMap<String, usize>,
    events: Vec<AuditEvent>,
    /// Notifications, each with the index of its causing event in `events`.
    notifications: Vec<(usize, Notification)>,
}

impl PendingWrites {
    fn record(
        &mut self,
        t: &Transition,
        rows: &mut HashMap<String, AccessRequest>,
        open: &mut HashMap<(String, String), RequestId>,
    ) {
        let id = t.request.id.to_string();
        let at = change_time(t);
        match self.dirty.get(&id) {
            Some(&i) => {
                if let Some(slot) = self.order.get_mut(i) {
                    slot.1 = at;
                }
            }
            None => {
                self.dirty.insert(id.clone(), self.order.len());
                self.order.push((id.clone(), at));
            }
        }
        let key = (
            t.request.requester.to_string(),
            t.request.entitlement.to_string(),
        );
        if t.request.state.is_terminal() {
            if open.get(&key) == Some(&t.request.id) {
                open.remove(&key);
            }
        } else {
            open.insert(key, t.request.id.clone());
        }
        rows.insert(id, t.request.clone());
        let base = self.events.len();
        self.notifications.extend(
            t.notifications
                .iter()
                .map(|n| (base.saturating_add(n.cause), n.clone())),
        );
        self.events.extend(t.events.iter().cloned());
    }

    async fn write(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        rows: &HashMap<String, AccessRequest>,
        head: AuditHead,
    ) -> Result<(), StoreError> {
        let changed: Vec<(&AccessRequest, Timestamp)> = self
            .order
            .iter()
            .filter_map(|(id, at)| rows.get(id).map(|r| (r, *at)))
            .collect();
        write_requests(conn, backend, &changed).await?;
        if self.events.is_empty() {
            return Ok(());
        }
        let (mut seq, mut hash) = (head.seq, head.hash);
        let mut records = Vec::with_capacity(self.events.len());
        for event in &self.events {
            let record = AuditRecord::chain(event, seq, &hash);
            seq = record.seq;
            hash.clone_from(&record.hash);
            records.push(record);
        }
        for chunk in shaped_chunks(&records, backend.rows_per_statement(AUDIT_PARAMS)) {
            insert_audit_records(conn, chunk).await?;
        }
        // Each notification is named after its causing event's place in
        // the chain, known only now.
        let outbox = self
            .notifications
            .iter()
            .map(|(cause, n)| {
                let event = records.get(*cause).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "a `{}` notification names no event of its change",
                        n.topic.as_str()
                    ))
                })?;
                Ok((event, n))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for chunk in shaped_chunks(&outbox, backend.rows_per_statement(OUTBOX_PARAMS)) {
            insert_outbox_rows(conn, chunk).await?;
        }
        Ok(())
    }
}

/// Writes new outbox rows, in one statement.
async fn insert_outbox_rows(
    conn: &mut AnyConnection,
    rows: &[(&AuditRecord, &Notification)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = (0..rows.len())
        .map(|row| {
            format!(
                "({},'pending',0)",
                placeholders(row * OUTBOX_PARAMS + 1, OUTBOX_PARAMS)
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO notification_outbox (notification_key, seq, topic, channel, request_id, facts, \
         created_at, first_due, next_attempt_at, updated_at, state, attempts) VALUES {}",
        values.join(",")
    );
    let mut query = sqlx::query(&sql);
    for (event, n) in rows {
        let facts =
            serde_json::to_string(&n.facts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        query = query
            .bind(notification_key(event.seq, n.topic, &n.channel))
            .bind(event.seq)
            .bind(n.topic.as_str())
            .bind(n.channel.clone())
            .bind(event.request.clone())
            .bind(facts)
            .bind(event.at.unix_millis())
            .bind(n.not_before.unix_millis())
            .bind(n.not_before.unix_millis())
            .bind(event.at.unix_millis());
    }
    query.execute(conn).await.map_err(db_err)?;
    Ok(())
}

const OUTBOX_COLUMNS: &str =
    "notification_key, seq, topic, channel, request_id, facts, created_at, \
    first_due, state, attempts, next_attempt_at, claimed_until, last_error, settled_at, updated_at";

fn outbox_from_row(row: &AnyRow) -> Result<OutboxEntry, StoreError> {
    let key: String = row.try_get("notification_key").map_err(db_err)?;
    let bad = |what: String| StoreError::Corrupt(format!("notification `{key}`: {what}"));
    let topic: String = row.try_get("topic").map_err(db_err)?;
    let state: String = row.try_get("state").map_err(db_err)?;
    let facts: String = row.try_get("facts").map_err(db_err)?;
    let request: Option<String> = row.try_get("request_id").map_err(db_err)?;
    let attempts: i64 = row.try_get("attempts").map_err(db_err)?;
    Ok(OutboxEntry {
        seq: row.try_get("seq").map_err(db_err)?,
        topic: Topic::parse(&topic).ok_or_else(|| bad(format!("unknown topic `{topic}`")))?,
        channel: row.try_get("channel").map_err(db_err)?,
        request: request
            .map(|r| RequestId::parse(&r).map_err(|e| bad(e.to_string())))
            .transpose()?,
        facts: serde_json::from_str(&facts).map_err(|e| bad(e.to_string()))?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
        first_due: Timestamp::from_unix_millis(row.try_get("first_due").map_err(db_err)?),
        state: OutboxState::parse(&state).ok_or_else(|| bad(format!("unknown state `{state}`")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: ts(row.try_get("next_attempt_at").map_err(db_err)?),
        claimed_until: ts(row.try_get("claimed_until").map_err(db_err)?),
        last_error: row.try_get("last_error").map_err(db_err)?,
        settled_at: ts(row.try_get("settled_at").map_err(db_err)?),
        updated_at: Timestamp::from_unix_millis(row.try_get("updated_at").map_err(db_err)?),
        key,
    })
}

fn mismatched(op: &str) -> StoreError {
    StoreError::Corrupt(format!("an outbox {op} was answered as another operation"))
}

/// Claims or settles outbox rows. Claims pass over rows another
/// dispatcher's claim (or a write batch) holds locked on PostgreSQL.
async fn outbox_op(
    conn: &mut AnyConnection,
    backend: Backend,
    op: &OutboxOp,
) -> Result<OutboxAnswer, StoreError> {
    match op {
        OutboxOp::Claim(claim) => {
            let rows = claim_rows(
                conn,
                backend,
                *claim,
                [
                    "notification_outbox",
                    "notification_key",
                    "next_attempt_at",
                    "claimed_until",
                ],
                OUTBOX_COLUMNS,
            )
            .await?;
            let mut claimed = rows
                .iter()
                .map(outbox_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            // RETURNING keeps no order.
            claimed.sort_by(|a, b| (a.next_attempt_at, &a.key).cmp(&(b.next_attempt_at, &b.key)));
            Ok(OutboxAnswer::Claimed(claimed))
        }
        OutboxOp::Settle {
            key,
            claimed_until,
            delivery,
            now,
        } => {
            let (state, attempted, next, error, settled): (
                &str,
                i64,
                Option<i64>,
                Option<&str>,
                Option<i64>,
            ) = match delivery {
                Delivery::Sent => ("sent", 1, None, None, Some(*now)),
                Delivery::Retry { next_at, error } => {
                    ("pending", 1, Some(next_at.unix_millis()), Some(error), None)
                }
                Delivery::Failed { error } => ("failed", 1, None, Some(error), Some(*now)),
                Delivery::Dropped { why } => ("dropped", 0, None, Some(why), Some(*now)),
            };
            let done = sqlx::query(
                "UPDATE notification_outbox SET state = $1, attempts = attempts + $2, \
                 next_attempt_at = $3, claimed_until = NULL, \
                 last_error = COALESCE($4, last_error), settled_at = $5, updated_at = $6 \
                 WHERE notification_key = $7 AND state = 'pending' AND claimed_until = $8",
            )
            .bind(state)
            .bind(attempted)
            .bind(next)
            .bind(error)
            .bind(settled)
            .bind(*now)
            .bind(key.clone())
            .bind(*claimed_until)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            Ok(OutboxAnswer::Settled(done.rows_affected() == 1))
        }
        OutboxOp::ReleaseClaims => {
            let done = sqlx::query(
                "UPDATE notification_outbox SET claimed_until = NULL \
                 WHERE next_attempt_at IS NOT NULL AND claimed_until IS NOT NULL",
            )
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            Ok(OutboxAnswer::Released(done.rows_affected()))
        }
        OutboxOp::Prune { before, limit } => {
            // Through the (state, updated_at) index; a settled row's
            // `updated_at` is when it was settled, and nothing changes it after.
            let done = sqlx::query(
                "DELETE FROM notification_outbox WHERE notification_key IN \
                 (SELECT notification_key FROM notification_outbox \
                  WHERE state IN ('sent', 'dropped', 'failed') AND updated_at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(limit)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            Ok(OutboxAnswer::Pruned(done.rows_affected()))
        }
    }
}

/// Parameters per request row and per audit row in the multi-row writes.
const REQUEST_PARAMS: usize = 48;
const AUDIT_PARAMS: usize = 12;
const OUTBOX_PARAMS: usize = 10;

/// Splits `items` into chunks whose sizes are powers of two (at most `max`),
/// so a multi-row statement comes in a handful of shapes that stay in the
/// connection's prepared-statement cache instead of one shape per batch size.
fn shaped_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let fit = rest.len().min(max);
        let size = 1usize << (usize::BITS - 1 - fit.leading_zeros());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// `$first, $first+1, ...` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One requester's entries of the batch's open-request map.
fn open_of(open: &HashMap<(String, String), RequestId>, requester: &str) -> OpenRequests {
    open.iter()
        .filter(|((r, _), _)| r == requester)
        .filter_map(|((_, e), id)| Some((EntitlementId::parse(e).ok()?, id.clone())))
        .collect()
}

/// Runs one statement without results on the write connection.
async fn exec(conn: &mut AnyConnection, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(&mut *conn).await.map_err(db_err)?;
    Ok(())
}

/// Runs an import (see [`super::Import`]): the emptiness check, then each
/// batch as it arrives, then the commit; any error, or the handle gone
/// without a commit, leaves the transaction for the caller to roll back.
async fn import_in_tx(
    conn: &mut AnyConnection,
    backend: Backend,
    mut steps: mpsc::Receiver<super::ImportStep>,
    started: oneshot::Sender<Result<(), StoreError>>,
) -> Result<ImportReport, StoreError> {
    let rebuild = match begin_import(conn, backend).await {
        Ok(rebuild) => {
            let _ = started.send(Ok(()));
            rebuild
        }
        Err(e) => {
            let message = e.to_string();
            let _ = started.send(Err(e));
            return Err(StoreError::Database(message));
        }
    };
    let mut report = ImportReport {
        requests: 0,
        audit_events: 0,
        access_reviews: 0,
    };
    loop {
        match steps.recv().await {
            Some(super::ImportStep::Load(batch)) => {
                import_batch(conn, backend, &batch, &mut report).await?;
            }
            Some(super::ImportStep::Commit) => break,
            Some(super::ImportStep::RollBack) | None => {
                return Err(StoreError::Database(
                    "the import was abandoned; nothing was written".to_owned(),
                ))
            }
        }
    }
    let building = std::time::Instant::now();
    for index in &rebuild {
        sqlx::query(&index.definition)
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                StoreError::Database(format!(
                    "building index `{}` over the imported rows: {e}",
                    index.name
                ))
            })?;
    }
    tracing::info!(
        indexes = rebuild.len(),
        seconds = building.elapsed().as_secs_f64(),
        "import: indexes built over the imported rows"
    );
    exec(conn, "COMMIT").await?;
    if backend == Backend::Postgres {
        // A bulk load leaves PostgreSQL's planner without statistics until
        // autovacuum analyzes the tables, and never where it is off: with
        // none, a store of five million requests read every pending request
        // of an approver's group for one page of their inbox (20 ms instead
        // of 2). SQLite plans by its indexes' shapes, which the store tests
        // check, and keeps no statistics unless asked.
        let analyzed = std::time::Instant::now();
        match exec(conn, ANALYZE_IMPORTED).await {
            Ok(()) => tracing::info!(
                seconds = analyzed.elapsed().as_secs_f64(),
                "import: statistics gathered for the planner"
            ),
            Err(e) => tracing::warn!(error = %e,
                "import: committed, but gathering the planner's statistics failed; run ANALYZE"),
        }
    }
    Ok(report)
}

/// The tables an import fills, analyzed once it committed (PostgreSQL).
const ANALYZE_IMPORTED: &str = "ANALYZE requests, audit_events, pending_approver_groups, \
     grant_checks, access_reviews, access_review_items";

/// SQLite: an import's page cache (256 MiB), so that the pages of the one
/// index it keeps up in random order, requests by id, stay in memory
/// instead of going to the write-ahead log and back as the transaction
/// outgrows the writer's usual cache.
const IMPORT_CACHE: &str = "PRAGMA cache_size = -262144";

/// Raises SQLite's page cache for an import (see [`IMPORT_CACHE`]); the
/// writer's own setting, to put back after. `None` on PostgreSQL, or if
/// the cache could not be read or set (the import runs with it as it is).
async fn raise_import_cache(conn: &mut AnyConnection, backend: Backend) -> Option<i64> {
    if backend != Backend::Sqlite {
        return None;
    }
    let pages = sqlx::query_scalar::<_, i64>("PRAGMA cache_size")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    exec(conn, IMPORT_CACHE).await.ok()?;
    Some(pages)
}

/// The tables whose rows an import brings in bulk: their secondary indexes
/// are dropped when it begins and built again, in one sorted pass each,
/// before it commits. Kept up row by row, they made a large import's cost
/// grow with the store (random inserts into a dozen B-trees outgrowing the
/// cache); built after, each costs one sort. Primary keys stay, so a
/// duplicate id still fails its batch; a unique index that the imported
/// rows break (two open requests for one entitlement) fails the commit.
/// Both happen inside the import's transaction: a failed or abandoned
/// import leaves the indexes as they were.
const BULK_TABLES: [&str; 2] = ["requests", "audit_events"];

/// An index dropped for an import, to build again before it commits.
struct DroppedIndex {
    name: String,
    definition: String,
}

/// Drops the secondary indexes of [`BULK_TABLES`] inside the import's
/// transaction; their definitions, as the database states them.
async fn drop_bulk_indexes(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Vec<DroppedIndex>, StoreError> {
    let tables = BULK_TABLES.map(|t| format!("'{t}'")).join(", ");
    // SQLite: a constraint's own index has no SQL; PostgreSQL: one that
    // backs a constraint (the primary keys) is named in pg_constraint.
    let sql = match backend {
        Backend::Sqlite => format!(
            "SELECT name, sql AS definition FROM sqlite_master \
             WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({tables}) ORDER BY name"
        ),
        Backend::Postgres => format!(
            "SELECT i.indexname::text AS name, i.indexdef AS definition FROM pg_indexes i \
             WHERE i.schemaname = current_schema() AND i.tablename IN ({tables}) \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
                 WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass) \
             ORDER BY i.indexname"
        ),
    };
    let rows = sqlx::query(&sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let mut dropped = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("name").map_err(db_err)?;
        let definition: String = row.try_get("definition").map_err(db_err)?;
        sqlx::query(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        dropped.push(DroppedIndex { name, definition });
    }
    Ok(dropped)
}

/// Opens an import's transaction on an empty database and drops the
/// indexes it will build again (see [`BULK_TABLES`]).
async fn begin_import(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Vec<DroppedIndex>, StoreError> {
    exec(conn, "BEGIN").await?;
    if backend == Backend::Postgres {
        // The writer's two seconds idle in a transaction are for a replica
        // frozen mid-batch; an import waits on its reader between batches.
        exec(
            conn,
            "SET LOCAL idle_in_transaction_session_timeout = '10min'",
        )
        .await?;
    }
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let existing_requests = count("SELECT COUNT(*) FROM requests")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    let existing_events = count("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    let existing_reviews = count("SELECT COUNT(*) FROM access_reviews")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if existing_requests > 0 || existing_events > 0 || existing_reviews > 0 {
        return Err(StoreError::NotEmpty(format!(
            "{existing_requests} requests, {existing_events} audit events and \
             {existing_reviews} access reviews"
        )));
    }
    drop_bulk_indexes(conn, backend).await
}

/// Writes one batch of an import inside its transaction.
async fn import_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &super::ImportBatch,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    match batch {
        super::ImportBatch::Requests(requests) => {
            let changed: Vec<(&AccessRequest, Timestamp)> = requests
                .iter()
                .map(|r| (r, r.ended_at.unwrap_or(r.created_at)))
                .collect();
            write_requests(conn, backend, &changed).await?;
            let checked: Vec<(RequestId, CheckActivity)> = requests
                .iter()
                .filter(|r| r.checks != CheckActivity::default())
                .map(|r| (r.id.clone(), r.checks))
                .collect();
            super::checks::add(conn, &checked, backend == Backend::Postgres).await?;
            report.requests += requests.len();
        }
        super::ImportBatch::Audit(audit) => {
            for chunk in audit.chunks(backend.rows_per_statement(AUDIT_PARAMS)) {
                insert_audit_records(conn, chunk).await?;
            }
            report.audit_events += audit.len();
        }
        super::ImportBatch::AccessReviews(reviews) => {
            super::access_reviews::import(conn, backend.rows_per_statement(6), reviews).await?;
            report.access_reviews += reviews.len();
        }
    }
    Ok(())
}

async fn migrate(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        // Replicas starting together migrate one at a time.
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    let result = migrate_locked(conn, backend).await;
    if backend == Backend::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn migrate_locked(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    let current = schema_version(conn).await?;
    if current > latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest(),
        });
    }
    let applied: BTreeSet<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
        .into_iter()
        .collect();
    for migration in pending(&applied) {
        let mut tx = conn.begin().await.map_err(db_err)?;
        sqlx::raw_sql(&backend.migration_sql(migration))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(&format!(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, {})",
            backend.now_millis_sql()
        ))
        .bind(migration.version)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    }
    Ok(())
}

async fn schema_version(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(current.unwrap_or(0))
}

const REQUEST_COLUMNS: &str = "id, requester, entitlement, state, duration_ms, reason, ticket, start_at, created_at, \
    required_approvals, approver_groups, approvals, pending_deadline, decided_at, activates_at, expires_at, granted_at, \
    ended_at, ended_by, end_note, job_action, job_attempts, job_next_attempt_at, job_claimed_until, job_last_error, \
    claim_token, deprovisioned_at, approval_tiers, policy_version, break_glass, public_key, certificate, \
    due_at, updated_at, approver_group_list, approved_by_list, waiting, review, review_group_list, \
    review_open, review_due_at, extension, extension_approver_list, extension_approved_by_list, \
    sponsor, account_expires, sponsor_awaited, bundle";

/// Read with a request but never written by its upsert: check activity
/// lives in `grant_checks` (schema version 15), added to by
/// [`Store::add_checks`] alone, so a request's change never overwrites
/// counts added meanwhile. A request never checked has no row there.
const CHECK_COLUMNS: &str = "\
    COALESCE((SELECT g.check_count FROM grant_checks g WHERE g.request_id = requests.id), 0) \
    AS check_count, \
    (SELECT g.last_checked_at FROM grant_checks g WHERE g.request_id = requests.id) \
    AS last_checked_at";

/// Ids as one `|a|b|` text (empty for none), so that "`x` is one of them"
/// is an exact substring match on `|x|` in SQL (ids hold no `|`): the
/// `approver_group_list` and `approved_by_list` columns.
fn id_list<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut list = String::new();
    for id in ids {
        if list.is_empty() {
            list.push('|');
        }
        list.push_str(id);
        list.push('|');
    }
    list
}

/// A parameter of a query built at run time.
enum Bind {
    Text(String),
    Int(i64),
}

/// A query with its parameters bound in order.
fn bound(
    sql: &str,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t),
            Bind::Int(i) => query.bind(i),
        };
    }
    query
}

/// ` AND state IN ('a','b',…)` for `states` (nothing when there are none:
/// any state). The states go in as literals (they are the core's own names,
/// never input), so that a planner can match them against a partial
/// index's condition, which neither SQLite nor a generic PostgreSQL plan
/// does through parameters.
fn state_in<'a>(states: impl Iterator<Item = &'a str>) -> String {
    let literals: Vec<String> = states.map(|s| format!("'{s}'")).collect();
    if literals.is_empty() {
        String::new()
    } else {
        format!(" AND state IN ({})", literals.join(","))
    }
}

/// Adds a parameter; returns its placeholder.
fn param(binds: &mut Vec<Bind>, b: Bind) -> String {
    binds.push(b);
    format!("${}", binds.len())
}

/// The condition "one of the groups in the `|a|b|` list `column` (the
/// approver groups, a review's or an extension's) is one of `user`'s".
fn in_group_list(backend: Backend, binds: &mut Vec<Bind>, user: &User, column: &str) -> String {
    let any: Vec<String> = user
        .groups
        .iter()
        .map(|g| {
            let p = param(binds, Bind::Text(id_list([g.as_str()])));
            backend.contains(column, &p)
        })
        .collect();
    if any.is_empty() {
        "1=0".to_owned()
    } else {
        format!("({})", any.join(" OR "))
    }
}

/// The query behind [`Store::list_requests`] and its parameters.
///
/// Every list is a range of an index in the list order (migration 20), so a
/// page costs the same with millions of rows: a requester's history reads
/// `requests_by_requester`. An approver's inbox is the union of the three
/// ways a request waits for someone, each a page of its own index — for
/// pending requests a page of `pending_by_group` (schema version 22) per
/// group of the approver's, then `requests_awaiting_extension` and
/// `requests_awaiting_sponsor` — and only those pages are sorted together.
fn list_requests_sql(backend: Backend, filter: &RequestFilter) -> (String, Vec<Bind>) {
    let mut binds: Vec<Bind> = Vec::new();
    let mut sql = state_in(filter.states.iter().map(|s| s.as_str()));
    if let Some(r) = &filter.requester {
        let p = param(&mut binds, Bind::Text(r.as_str().to_owned()));
        sql.push_str(&format!(" AND requester = {p}"));
    }
    if let Some(e) = &filter.entitlement {
        let p = param(&mut binds, Bind::Text(e.as_str().to_owned()));
        sql.push_str(&format!(" AND entitlement = {p}"));
    }
    if filter.holding_access {
        sql.push_str(" AND (state = 'active' OR job_action = 'revoke')");
    }
    if filter.connector_work {
        sql.push_str(" AND job_action IS NOT NULL");
    }
    if filter.break_glass {
        sql.push_str(" AND break_glass = 1");
    }
    if filter.review_open {
        sql.push_str(" AND review_open = 1");
    }
    if filter.sponsored {
        sql.push_str(" AND sponsor IS NOT NULL");
    }
    // The mirror of `AccessRequest::visible_to`.
    if let Some(user) = filter
        .visible_to
        .as_ref()
        .filter(|u| access::may(u, Capability::ReadEverything).is_err())
    {
        let me = param(&mut binds, Bind::Text(user.id.as_str().to_owned()));
        let groups = in_group_list(backend, &mut binds, user, "approver_group_list");
        let reviews = in_group_list(backend, &mut binds, user, "review_group_list");
        sql.push_str(&format!(
            " AND (requester = {me} OR {groups} OR {reviews} OR sponsor = {me})"
        ));
    }
    if let Some(since) = filter.created_since {
        let at = param(&mut binds, Bind::Int(since.unix_millis()));
        sql.push_str(&format!(" AND created_at >= {at}"));
    }
    // The mirror of `airlock_core::ticket::carries`.
    if let Some(ticket) = &filter.ticket {
        let t = param(&mut binds, Bind::Text(ticket.clone()));
        sql.push_str(&format!(" AND ticket = {t}"));
    }
    let mut cursor = None;
    if let Some(after) = &filter.after {
        let at = param(&mut binds, Bind::Int(after.created_at.unix_millis()));
        let id = param(&mut binds, Bind::Text(after.id.as_str().to_owned()));
        // A row value, which both databases match as a range of the
        // `(created_at, id)` index (an `OR` of the two comparisons makes
        // PostgreSQL filter every row newer than the cursor).
        sql.push_str(&format!(" AND (created_at, id) < ({at}, {id})"));
        cursor = Some((at, id));
    }
    let limit = filter.limit.max(1);
    let order = format!(" ORDER BY created_at DESC, id DESC LIMIT {limit}");
    // The mirror of `AccessRequest::awaits_approval_of`.
    if let Some(user) = &filter.awaiting_approval_of {
        let me = param(&mut binds, Bind::Text(user.id.as_str().to_owned()));
        let groups = in_group_list(backend, &mut binds, user, "approver_group_list");
        let me_listed = param(&mut binds, Bind::Text(id_list([user.id.as_str()])));
        // An extension's list is empty unless it waits for approvers.
        let extension_groups = in_group_list(backend, &mut binds, user, "extension_approver_list");
        let mut parts = Vec::new();
        // Pending requests: a page of `pending_by_group` per group of the
        // user's, in the list order, each row kept if its request passes
        // the list's conditions (its own group list among them), so a page
        // reads only the requests that wait for that group. A request in
        // several of the user's groups comes in several parts, once out.
        // The table holds pending requests alone (`write_pending_groups`);
        // a `state` condition here would offer PostgreSQL's planner the
        // walk of every pending request by `requests_by_state` instead.
        let awaits_me = format!(
            "requester <> {me} AND {groups} AND NOT ({})",
            backend.contains("approved_by_list", &me_listed)
        );
        let range = cursor
            .as_ref()
            .map(|(at, id)| format!(" AND (created_at, request_id) < ({at}, {id})"))
            .unwrap_or_default();
        for (i, group) in user.groups.iter().enumerate() {
            let group = param(&mut binds, Bind::Text(group.as_str().to_owned()));
            parts.push(format!(
                "SELECT id FROM (SELECT request_id AS id, created_at FROM pending_approver_groups p \
                 WHERE approver_group = {group}{range} AND EXISTS (SELECT 1 FROM requests \
                 WHERE requests.id = p.request_id AND {awaits_me}{sql}) \
                 ORDER BY created_at DESC, request_id DESC LIMIT {limit}) AS pending{i}"
            ));
        }
        let ways = [
            // Only an active grant's extension waits for approvers, so a
            // listed one implies `state = 'active'`; saying so would offer
            // the planner every active grant by `requests_by_state`.
            format!(
                "extension_approver_list <> '' AND {extension_groups} AND NOT ({})",
                backend.contains("extension_approved_by_list", &me_listed)
            ),
            format!("sponsor_awaited = {me}"),
        ];
        for (i, way) in ways.iter().enumerate() {
            parts.push(format!(
                "SELECT id FROM (SELECT id, created_at FROM requests \
                 WHERE requester <> {me} AND {way}{sql}{order}) AS way{i}"
            ));
        }
        let sql = format!(
            "SELECT {REQUEST_COLUMNS}, {CHECK_COLUMNS} FROM requests WHERE id IN ({}){order}",
            parts.join(" UNION ALL ")
        );
        return (sql, binds);
    }
    (
        format!("SELECT {REQUEST_COLUMNS}, {CHECK_COLUMNS} FROM requests WHERE 1=1{sql}{order}"),
        binds,
    )
}

/// The query behind [`Store::list_audit`] (newest first) and its
/// parameters. Events by or about a user are the union of a page of
/// `audit_by_actor` and one of `audit_by_subject` (migration 20), so a page
/// costs the same however long the log.
fn list_audit_sql(filter: &AuditFilter) -> (String, Vec<Bind>) {
    let mut binds = Vec::new();
    let mut sql = String::new();
    let mut text = |column: &str, value: &Option<String>, binds: &mut Vec<Bind>| {
        if let Some(v) = value {
            let p = param(binds, Bind::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = {p}"));
        }
    };
    text("request_id", &filter.request, &mut binds);
    text("entitlement", &filter.entitlement, &mut binds);
    text("action", &filter.action, &mut binds);
    text("token_id", &filter.token, &mut binds);
    for (condition, value) in [
        ("at >=", filter.since.map(Timestamp::unix_millis)),
        ("at <", filter.until.map(Timestamp::unix_millis)),
        ("seq <", filter.before_seq),
    ] {
        if let Some(v) = value {
            let p = param(&mut binds, Bind::Int(v));
            sql.push_str(&format!(" AND {condition} {p}"));
        }
    }
    let order = format!(" ORDER BY seq DESC LIMIT {}", filter.limit.max(1));
    let sql = match &filter.user {
        // Matches the actor or the subject.
        Some(user) => {
            let u = param(&mut binds, Bind::Text(user.clone()));
            format!(
                "SELECT * FROM audit_events WHERE seq IN (\
                 SELECT seq FROM (SELECT seq FROM audit_events WHERE actor = {u}{sql}{order}) AS by_actor \
                 UNION ALL \
                 SELECT seq FROM (SELECT seq FROM audit_events WHERE subject = {u}{sql}{order}) AS about\
                 ){order}"
            )
        }
        None => format!("SELECT * FROM audit_events WHERE 1=1{sql}{order}"),
    };
    (sql, binds)
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("request `{id}`: {what}"))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_unix_millis)
}

fn record_from_row(row: &AnyRow) -> Result<RequestRecord, StoreError> {
    let id: String = row.try_get("id").map_err(db_err)?;
    let get = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let opt = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(db_err);
    let text = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let opt_text = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db_err);
    let job = match opt_text("job_action")? {
        None => None,
        Some(action) => Some(JobRecord {
            action,
            attempts: opt("job_attempts")?.unwrap_or(0),
            next_attempt_at: opt("job_next_attempt_at")?.unwrap_or(0),
            claimed_until: opt("job_claimed_until")?,
            last_error: opt_text("job_last_error")?,
        }),
    };
    Ok(RequestRecord {
        requester: text("requester")?,
        entitlement: text("entitlement")?,
        state: text("state")?,
        duration_ms: get("duration_ms")?,
        reason: text("reason")?,
        ticket: opt_text("ticket")?,
        start_at: opt("start_at")?,
        created_at: get("created_at")?,
        required_approvals: get("required_approvals")?,
        approver_groups: serde_json::from_str(&text("approver_groups")?)
            .map_err(|e| corrupt(&id, e))?,
        approvals: serde_json::from_str(&text("approvals")?).map_err(|e| corrupt(&id, e))?,
        pending_deadline: get("pending_deadline")?,
        decided_at: opt("decided_at")?,
        activates_at: opt("activates_at")?,
        expires_at: opt("expires_at")?,
        granted_at: opt("granted_at")?,
        ended_at: opt("ended_at")?,
        ended_by: opt_text("ended_by")?,
        end_note: opt_text("end_note")?,
        job,
        claim_token: get("claim_token")?,
        deprovisioned_at: opt("deprovisioned_at")?,
        approval_tiers: serde_json::from_str(&text("approval_tiers")?)
            .map_err(|e| corrupt(&id, e))?,
        policy_version: text("policy_version")?,
        break_glass: get("break_glass")? != 0,
        public_key: opt_text("public_key")?,
        certificate: opt_text("certificate")?,
        sponsor: opt_text("sponsor")?,
        account_expires: opt("account_expires")?,
        waiting: opt_text("waiting")?
            .map(|w| serde_json::from_str(&w))
            .transpose()
            .map_err(|e| corrupt(&id, e))?,
        review: opt_text("review")?
            .map(|v| serde_json::from_str(&v))
            .transpose()
            .map_err(|e| corrupt(&id, e))?,
        extension: opt_text("extension")?
            .map(|w| serde_json::from_str(&w))
            .transpose()
            .map_err(|e| corrupt(&id, e))?,
        check_count: get("check_count")?,
        last_checked_at: opt("last_checked_at")?,
        bundle: opt_text("bundle")?
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(|e| corrupt(&id, e))?,
        id,
    })
}

fn request_from_row(row: &AnyRow) -> Result<AccessRequest, StoreError> {
    record_from_row(row)?.into_request()
}

/// Inserts or updates request rows (each id at most once), with the time of
/// each one's last change, and keeps `pending_approver_groups` (schema
/// version 22), the inbox's index of pending requests by group, in step.
async fn write_requests(
    conn: &mut AnyConnection,
    backend: Backend,
    changed: &[(&AccessRequest, Timestamp)],
) -> Result<(), StoreError> {
    for chunk in shaped_chunks(changed, backend.rows_per_statement(REQUEST_PARAMS)) {
        upsert_requests(conn, chunk).await?;
    }
    write_pending_groups(conn, backend, changed).await
}

/// Gives every pending request in `changed` a row per approver group and
/// takes those of every other away: the inbox takes a row there as the
/// request being pending. A request never returns to pending and its
/// groups only grow while it is (escalation adds some), so adding the rows
/// it lacks and dropping those of requests that left keeps the table exact.
async fn write_pending_groups(
    conn: &mut AnyConnection,
    backend: Backend,
    changed: &[(&AccessRequest, Timestamp)],
) -> Result<(), StoreError> {
    let mut waiting: Vec<(&str, String, i64)> = Vec::new();
    let mut left: Vec<&str> = Vec::new();
    for (request, _) in changed {
        if request.state == State::Pending {
            let groups = request.approver_groups();
            let created_at = request.created_at.unix_millis();
            waiting.extend(
                groups
                    .into_iter()
                    .map(|g| (request.id.as_str(), g.as_str().to_owned(), created_at)),
            );
        } else {
            left.push(request.id.as_str());
        }
    }
    for chunk in shaped_chunks(&left, backend.rows_per_statement(1)) {
        let sql = format!(
            "DELETE FROM pending_approver_groups WHERE request_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await.map_err(db_err)?;
    }
    for chunk in shaped_chunks(&waiting, backend.rows_per_statement(3)) {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| format!("({})", placeholders(row * 3 + 1, 3)))
            .collect();
        let sql = format!(
            "INSERT INTO pending_approver_groups (request_id, approver_group, created_at) \
             VALUES {} ON CONFLICT (request_id, approver_group) DO NOTHING",
            values.join(",")
        );
        let mut query = sqlx::query(&sql);
        for (id, group, created_at) in chunk {
            query = query.bind(*id).bind(group.as_str()).bind(*created_at);
        }
        query.execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

/// Inserts or updates request rows (each id at most once) in one statement.
async fn upsert_requests(
    conn: &mut AnyConnection,
    changed: &[(&AccessRequest, Timestamp)],
) -> Result<(), StoreError> {
    const COLUMNS: usize = REQUEST_PARAMS;
    if changed.is_empty() {
        return Ok(());
    }
    let updates: Vec<String> = REQUEST_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        // A change ends any scheduler's claim on the row's due work: the
        // deadline it claimed has been decided on or has moved.
        .chain(std::iter::once("due_claimed_until = NULL".to_owned()))
        .collect();
    let values: Vec<String> = (0..changed.len())
        .map(|row| format!("({})", placeholders(row * COLUMNS + 1, COLUMNS)))
        .collect();
    let sql = format!(
        "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES {} ON CONFLICT (id) DO UPDATE SET {}",
        values.join(","),
        updates.join(", ")
    );
    let json = |v: &dyn erased::Json| v.to_json();
    let mut query = sqlx::query(&sql);
    for (request, at) in changed {
        let r = RequestRecord::from_request(request);
        let job = r.job.as_ref();
        let review_groups = request
            .review
            .as_ref()
            .map(Review::groups)
            .unwrap_or_default();
        query = query
            .bind(r.id.clone())
            .bind(r.requester.clone())
            .bind(r.entitlement.clone())
            .bind(r.state.clone())
            .bind(r.duration_ms)
            .bind(r.reason.clone())
            .bind(r.ticket.clone())
            .bind(r.start_at)
            .bind(r.created_at)
            .bind(r.required_approvals)
            .bind(json(&r.approver_groups)?)
            .bind(json(&r.approvals)?)
            .bind(r.pending_deadline)
            .bind(r.decided_at)
            .bind(r.activates_at)
            .bind(r.expires_at)
            .bind(r.granted_at)
            .bind(r.ended_at)
            .bind(r.ended_by.clone())
            .bind(r.end_note.clone())
            .bind(job.map(|j| j.action.clone()))
            .bind(job.map(|j| j.attempts))
            .bind(job.map(|j| j.next_attempt_at))
            .bind(job.and_then(|j| j.claimed_until))
            .bind(job.and_then(|j| j.last_error.clone()))
            .bind(r.claim_token)
            .bind(r.deprovisioned_at)
            .bind(json(&r.approval_tiers)?)
            .bind(r.policy_version.clone())
            .bind(i64::from(r.break_glass))
            .bind(r.public_key.clone())
            .bind(r.certificate.clone())
            .bind(request.next_due().map(Timestamp::unix_millis))
            .bind(at.unix_millis())
            .bind(id_list(r.approver_groups.iter().map(String::as_str)))
            .bind(id_list(r.approvals.iter().map(|a| a.approver.as_str())))
            .bind(r.waiting.as_ref().map(|w| json(w)).transpose()?)
            .bind(r.review.as_ref().map(|v| json(v)).transpose()?)
            .bind(id_list(review_groups.iter().map(GroupName::as_str)))
            .bind(i64::from(
                request.review.as_ref().is_some_and(|v| v.is_open()),
            ))
            .bind(request.review.as_ref().map(|v| v.due_at.unix_millis()))
            .bind(r.extension.as_ref().map(|e| json(e)).transpose()?);
        // The mirror of `AccessRequest::awaits_approval_of` for extensions
        // reads these: empty unless an extension waits for approvers.
        let awaiting = request.extension_awaiting_approval();
        query = query
            .bind(id_list(
                awaiting
                    .map(|e| e.approver_groups())
                    .unwrap_or_default()
                    .iter()
                    .map(GroupName::as_str),
            ))
            .bind(id_list(
                awaiting
                    .iter()
                    .flat_map(|e| e.approvals.iter())
                    .map(|a| a.approver.as_str()),
            ))
            .bind(r.sponsor.clone())
            .bind(r.account_expires)
            // And this one for a sponsor's seat.
            .bind(request.awaits_sponsor().map(|s| s.as_str().to_owned()))
            .bind(r.bundle.as_ref().map(|b| json(b)).transpose()?);
    }
    query
        .execute(conn)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_unique_violation() => StoreError::UniqueViolation,
            _ => db_err(e),
        })?;
    Ok(())
}

/// Serialising the JSON columns through one helper keeps their errors typed.
mod erased {
    use super::StoreError;

    pub trait Json {
        fn to_json(&self) -> Result<String, StoreError>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<String, StoreError> {
            serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
    }
}

/// The newest audit event's sequence number and hash, which the next one chains to.
struct AuditHead {
    seq: i64,
    hash: String,
}

/// The ids a batch changes or creates, and the requesters it creates for.
/// New ids are read too: they are random and never expected to collide, but
/// an upsert must not silently overwrite another request if one ever did.
fn batch_keys(batch: &[Change]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut requesters = BTreeSet::new();
    for change in batch {
        match change {
            Change::Update { id, .. } => {
                ids.insert(id.to_string());
            }
            Change::Create {
                ids: new,
                requester,
                ..
            } => {
                ids.extend(new.iter().map(ToString::to_string));
                requesters.insert(requester.to_string());
            }
            Change::Record { .. }
            | Change::Claim { .. }
            | Change::Outbox { .. }
            | Change::Token { .. }
            | Change::SshSession { .. }
            | Change::Checks { .. }
            | Change::Delivery { .. }
            | Change::AccessReview { .. }
            | Change::Directory { .. } => {}
        }
    }
    (ids, requesters)
}

/// Reads (and on PostgreSQL locks) the other parts of the bundles the
/// batch's updates change, which [`begin_batch`] could not know of: one
/// more round trip, only when a bundle is changed.
async fn read_bundle_parts(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Change],
    rows: &mut HashMap<String, AccessRequest>,
) -> Result<(), StoreError> {
    let missing: BTreeSet<String> = batch
        .iter()
        .filter_map(|c| match c {
            Change::Update { id, .. } => rows.get(id.as_str()),
            _ => None,
        })
        .filter_map(|r| r.bundle.as_ref())
        .flat_map(|b| b.parts.iter())
        .filter(|p| !rows.contains_key(p.as_str()))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {REQUEST_COLUMNS}, {CHECK_COLUMNS} FROM requests WHERE id IN ({}){}",
        literals(&missing)?,
        backend.for_update()
    );
    for row in conn.fetch_all(sql.as_str()).await.map_err(db_err)? {
        let request = request_from_row(&row)?;
        rows.insert(request.id.to_string(), request);
    }
    Ok(())
}

/// Request `id` and the other parts of its bundle, in the bundle's order
/// (the request alone when it is no part of one).
fn bundle_of(
    id: &RequestId,
    rows: &HashMap<String, AccessRequest>,
) -> Result<Vec<AccessRequest>, StoreError> {
    let current = rows
        .get(id.as_str())
        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
    let Some(bundle) = &current.bundle else {
        return Ok(vec![current.clone()]);
    };
    bundle
        .parts
        .iter()
        .map(|p| {
            rows.get(p.as_str()).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!("`{id}`'s bundle part `{p}` is missing"))
            })
        })
        .collect()
}

/// What a write batch knows once it holds the lock.
struct BatchStart {
    /// The newest audit event, which the batch's first event chains to.
    head: AuditHead,
    /// The rows the batch changes (locked on PostgreSQL), by id.
    rows: HashMap<String, AccessRequest>,
    /// The requesters' unfinished requests, by (requester, entitlement).
    open: HashMap<(String, String), RequestId>,
}

/// Opens a write batch's transaction, takes the write lock on PostgreSQL and
/// reads everything the batch decides on, in one round trip: the batch holds
/// the only write lock for its whole length, so its fixed costs are paid by
/// every replica's waiting writes. Each statement of the message gets its own
/// snapshot (read committed), so everything is read after the lock is held.
/// The keys go in as literals: they are validated ids (letters, digits and
/// `-_.@`), and a statement without parameters is planned for the values it
/// carries, never from a plan cached while the table was nearly empty.
async fn begin_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &BTreeSet<String>,
    requesters: &BTreeSet<String>,
) -> Result<BatchStart, StoreError> {
    let sql = batch_start_sql(backend, ids, requesters)?;
    // A query string without arguments goes out as one simple-protocol
    // message, however many statements it holds.
    let found = conn.fetch_all(sql.as_str()).await.map_err(db_err)?;
    let mut start = BatchStart {
        head: AuditHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        },
        rows: HashMap::with_capacity(ids.len()),
        open: HashMap::new(),
    };
    for row in &found {
        let has = |name: &str| row.columns().iter().any(|c| c.name() == name);
        if has("hash") {
            start.head = AuditHead {
                seq: row.try_get("seq").map_err(db_err)?,
                hash: row.try_get("hash").map_err(db_err)?,
            };
        } else if has("open_id") {
            let id: String = row.try_get("open_id").map_err(db_err)?;
            let key = (
                row.try_get::<String, _>("open_requester").map_err(db_err)?,
                row.try_get::<String, _>("open_entitlement")
                    .map_err(db_err)?,
            );
            start
                .open
                .insert(key, RequestId::parse(&id).map_err(|e| corrupt(&id, e))?);
        } else if has("state") {
            let request = request_from_row(row)?;
            start.rows.insert(request.id.to_string(), request);
        }
    }
    Ok(start)
}

/// The statements [`begin_batch`] sends.
fn batch_start_sql(
    backend: Backend,
    ids: &BTreeSet<String>,
    requesters: &BTreeSet<String>,
) -> Result<String, StoreError> {
    let mut sql = String::from(match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE; ",
        Backend::Postgres => BEGIN_POSTGRES,
    });
    sql.push_str("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1");
    if !ids.is_empty() {
        sql.push_str(&format!(
            "; SELECT {REQUEST_COLUMNS}, {CHECK_COLUMNS} FROM requests WHERE id IN ({}){}",
            literals(ids)?,
            backend.for_update()
        ));
    }
    if !requesters.is_empty() {
        sql.push_str("; ");
        sql.push_str(&open_requests_sql(backend, requesters)?);
    }
    Ok(sql)
}

/// The open requests of `requesters`, which a batch creating requests for
/// them reads (see [`begin_batch`]), through the partial index that holds
/// only open requests, one range per requester. Without being told, both
/// planners took the state index for several requesters (SQLite without
/// statistics, PostgreSQL on a table it has not analysed) and walked every
/// open request in the store on each batch: on SQLite a millisecond per
/// ten thousand open requests, on the one writer. SQLite is told the
/// index; PostgreSQL gets one equality per requester, which it answers
/// from that index.
fn open_requests_sql(
    backend: Backend,
    requesters: &BTreeSet<String>,
) -> Result<String, StoreError> {
    const COLUMNS: &str =
        "id AS open_id, requester AS open_requester, entitlement AS open_entitlement";
    const OPEN: &str = "state IN ('pending','approved','active')";
    match backend {
        Backend::Sqlite => Ok(format!(
            "SELECT {COLUMNS} FROM requests INDEXED BY requests_one_open \
             WHERE {OPEN} AND requester IN ({})",
            literals(requesters)?
        )),
        Backend::Postgres => {
            let parts = requesters
                .iter()
                .map(|r| {
                    Ok(format!(
                        "SELECT {COLUMNS} FROM requests WHERE {OPEN} AND requester = {}",
                        literals([r])?
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(parts.join(" UNION ALL "))
        }
    }
}

/// `'a','b',…` for validated ids; anything else is refused rather than quoted.
fn literals<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<String, StoreError> {
    let mut out = String::new();
    for key in keys {
        check_id(key).map_err(|e| StoreError::Corrupt(format!("`{key}` is not an id: {e}")))?;
        if !out.is_empty() {
            out.push(',');
        }
        out.push('\'');
        out.push_str(key);
        out.push('\'');
    }
    Ok(out)
}

/// Writes chained records exactly as given, in one statement.
async fn insert_audit_records(
    conn: &mut AnyConnection,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    const COLUMNS: usize = AUDIT_PARAMS;
    if records.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = (0..records.len())
        .map(|row| format!("({})", placeholders(row * COLUMNS + 1, COLUMNS)))
        .collect();
    let sql = format!(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, subject, details, token_id, actor_kind, prev_hash, hash) \
         VALUES {}",
        values.join(",")
    );
    let mut query = sqlx::query(&sql);
    for record in records {
        let details = serde_json::to_string(&record.details)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        query = query
            .bind(record.seq)
            .bind(record.at.unix_millis())
            .bind(record.actor.clone())
            .bind(record.action.clone())
            .bind(record.request.clone())
            .bind(record.entitlement.clone())
            .bind(record.subject.clone())
            .bind(details)
            .bind(record.token.clone())
            .bind(record.actor_kind.clone())
            .bind(record.prev_hash.clone())
            .bind(record.hash.clone());
    }
    query.execute(conn).await.map_err(db_err)?;
    Ok(())
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let details: String = row.try_get("details").map_err(db_err)?;
    let seq: i64 = row.try_get("seq").map_err(db_err)?;
    Ok(AuditRecord {
        seq,
        at: Timestamp::from_unix_millis(row.try_get("at").map_err(db_err)?),
        actor: row.try_get("actor").map_err(db_err)?,
        action: row.try_get("action").map_err(db_err)?,
        request: row.try_get("request_id").map_err(db_err)?,
        entitlement: row.try_get("entitlement").map_err(db_err)?,
        subject: row.try_get("subject").map_err(db_err)?,
        details: serde_json::from_str::<BTreeMap<String, String>>(&details)
            .map_err(|e| StoreError::Corrupt(format!("audit event {seq}: {e}")))?,
        token: row.try_get("token_id").map_err(db_err)?,
        actor_kind: row.try_get("actor_kind").map_err(db_err)?,
        prev_hash: row.try_get("prev_hash").map_err(db_err)?,
        hash: row.try_get("hash").map_err(db_err)?,
    })
}

/// The one way due work is claimed, for requests' deadlines and the
/// outbox alike: rows of `table` (named by its `key`, `due` and `claimed`
/// columns) due at `claim.now` that nobody holds are held until
/// `claim.until`, at most `claim.limit`, earliest first; on PostgreSQL rows
/// another claimer holds locked are passed over. Returns the `returning`
/// columns of the rows claimed, in no order.
async fn claim_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    claim: DueClaim,
    [table, key, due, claimed]: [&str; 4],
    returning: &str,
) -> Result<Vec<AnyRow>, StoreError> {
    let sql = format!(
        "UPDATE {table} SET {claimed} = $1 WHERE {key} IN (\
           SELECT {key} FROM {table} WHERE {due} <= $2 \
           AND ({claimed} IS NULL OR {claimed} <= $2) \
           ORDER BY {due} LIMIT $3{}) \
         RETURNING {returning}",
        backend.skip_locked()
    );
    sqlx::query(&sql)
        .bind(claim.until)
        .bind(claim.now)
        .bind(claim.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)
}

/// Claims due rows for `claim.until` and returns them, earliest first. On
/// PostgreSQL rows another replica's claim (or a write batch) holds locked
/// are passed over, not waited for.
async fn claim_due_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    claim: DueClaim,
) -> Result<Vec<RequestId>, StoreError> {
    let rows = claim_rows(
        conn,
        backend,
        claim,
        ["requests", "id", "due_at", "due_claimed_until"],
        "id, due_at",
    )
    .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            let id: String = row.try_get("id").map_err(db_err)?;
            let due: i64 = row.try_get("due_at").map_err(db_err)?;
            let id = RequestId::parse(&id).map_err(|e| corrupt(&id, e))?;
            Ok((due, id))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // RETURNING keeps no order.
    claimed.sort();
    Ok(claimed.into_iter().map(|(_, id)| id).collect())
}

/// The one transition of request `id` a write decided.
fn only(transitions: Vec<Transition>, id: &RequestId) -> Result<Transition, StoreError> {
    transitions
        .into_iter()
        .find(|t| t.request.id == *id)
        .ok_or_else(|| StoreError::Corrupt(format!("a change of `{id}` decided nothing for it")))
}

/// The time a change is recorded at: that of its last audit event.
fn change_time(t: &Transition) -> Timestamp {
    t.events.last().map_or(t.request.created_at, |e| e.at)
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn create_request(
        &self,
        id: &RequestId,
        requester: &UserId,
        decide: CreateDecision,
    ) -> Result<Transition, StoreError> {
        let decide: CreateManyDecision = Box::new(move |open| decide(open).map(|t| vec![t]));
        let created = self
            .create_requests(std::slice::from_ref(id), requester, decide)
            .await?;
        only(created, id)
    }

    async fn create_requests(
        &self,
        ids: &[RequestId],
        requester: &UserId,
        decide: CreateManyDecision,
    ) -> Result<Vec<Transition>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob::Change(Change::Create {
            ids: ids.to_vec(),
            requester: requester.clone(),
            decide,
            reply,
        });
        self.submit_job(job, answer).await
    }

    async fn record(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_job(WriteJob::Change(Change::Record { events, reply }), answer)
            .await
    }

    async fn update_request(
        &self,
        id: &RequestId,
        decide: UpdateDecision,
    ) -> Result<Transition, StoreError> {
        let addressed = id.clone();
        let decide: BundleDecision =
            Box::new(
                move |parts| match parts.into_iter().find(|p| p.id == addressed) {
                    Some(current) => decide(current).map(|t| vec![t]),
                    None => Ok(Vec::new()),
                },
            );
        let changed = self.update_bundle(id, decide).await?;
        only(changed, id)
    }

    async fn update_bundle(
        &self,
        id: &RequestId,
        decide: BundleDecision,
    ) -> Result<Vec<Transition>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob::Change(Change::Update {
            id: id.clone(),
            decide,
            reply,
        });
        self.submit_job(job, answer).await
    }

    async fn write_token(
        &self,
        write: super::tokens::TokenWrite,
        events: Vec<AuditEvent>,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_job(
            WriteJob::Change(Change::Token {
                write,
                events,
                reply,
            }),
            answer,
        )
        .await
    }

    async fn open_request(
        &self,
        requester: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<Option<super::checks::OpenRequest>, StoreError> {
        if let Some(direct) = &self.direct {
            return direct.get(requester, entitlement);
        }
        let (lookup, answer) = super::checks::Lookup::new(requester, entitlement);
        let gone = || StoreError::Database("the lookup of open requests has stopped".to_owned());
        self.lookups.send(lookup).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn add_checks(&self, tallies: Vec<(RequestId, CheckActivity)>) -> Result<(), StoreError> {
        if tallies.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.submit_job(WriteJob::Change(Change::Checks { tallies, reply }), answer)
            .await
    }

    async fn take_delivery(
        &self,
        key: &str,
        at: Timestamp,
        forget_after: Timestamp,
    ) -> Result<bool, StoreError> {
        let write = super::deliveries::DeliveryWrite::Take {
            key: key.to_owned(),
            at,
            forget_after,
        };
        let (reply, answer) = oneshot::channel();
        self.submit_job(WriteJob::Change(Change::Delivery { write, reply }), answer)
            .await
    }

    async fn forget_delivery(&self, key: &str) -> Result<(), StoreError> {
        let write = super::deliveries::DeliveryWrite::Forget {
            key: key.to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        self.submit_job(WriteJob::Change(Change::Delivery { write, reply }), answer)
            .await
            .map(|_| ())
    }

    async fn add_ssh_session(
        &self,
        session: super::ssh_sessions::StoredSession,
        events: Vec<AuditEvent>,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_job(
            WriteJob::Change(Change::SshSession {
                session: Box::new(session),
                events,
                reply,
            }),
            answer,
        )
        .await
    }

    async fn ssh_sessions(
        &self,
        request: &RequestId,
    ) -> Result<Vec<super::ssh_sessions::StoredSession>, StoreError> {
        super::ssh_sessions::list(&self.read, request).await
    }

    async fn ssh_session(
        &self,
        id: &str,
    ) -> Result<Option<super::ssh_sessions::StoredSession>, StoreError> {
        super::ssh_sessions::get(&self.read, id).await
    }

    async fn token_by_secret(&self, secret_sha256: &str) -> Result<Option<ApiToken>, StoreError> {
        super::tokens::by_secret(&self.read, secret_sha256).await
    }

    async fn token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        super::tokens::by_id(&self.read, id).await
    }

    async fn list_tokens(&self, owners: Option<&[UserId]>) -> Result<Vec<ApiToken>, StoreError> {
        super::tokens::list(&self.read, owners).await
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<AccessRequest>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS}, {CHECK_COLUMNS} FROM requests WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        row.as_ref().map(request_from_row).transpose()
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let (sql, binds) = list_requests_sql(self.backend, filter);
        let rows = bound(&sql, binds)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(request_from_row).collect()
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<RequestId>, StoreError> {
        let claim = DueClaim::new(now, lease, limit);
        match &self.claims {
            // One statement, a short transaction of its own.
            Some(pool) => {
                let mut conn = pool.acquire().await.map_err(db_err)?;
                claim_due_rows(&mut conn, self.backend, claim).await
            }
            None => {
                let (reply, answer) = oneshot::channel();
                let job = WriteJob::Change(Change::Claim { claim, reply });
                self.submit_job(job, answer).await
            }
        }
    }

    async fn next_due_at(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        // Walks the deadline index from the earliest, passing over the few
        // rows claimed now.
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(due_at) FROM requests WHERE due_at IS NOT NULL \
             AND (due_claimed_until IS NULL OR due_claimed_until <= $1)",
        )
        .bind(now.unix_millis())
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(ts(next))
    }

    async fn revocation_backlog(
        &self,
        overdue_before: Timestamp,
    ) -> Result<RevocationBacklog, StoreError> {
        // A request with a job always has a deadline, so the partial
        // deadline index narrows this to open work, never the history.
        let (outstanding, overdue): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN ended_at < $1 THEN 1 ELSE 0 END), 0) \
             FROM requests WHERE due_at IS NOT NULL AND job_action = 'revoke'",
        )
        .bind(overdue_before.unix_millis())
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(RevocationBacklog {
            outstanding: u64::try_from(outstanding).unwrap_or(0),
            overdue: u64::try_from(overdue).unwrap_or(0),
        })
    }

    async fn review_backlog(&self, now: Timestamp) -> Result<ReviewBacklog, StoreError> {
        let (open, overdue): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN review_due_at <= $1 THEN 1 ELSE 0 END), 0) \
             FROM requests WHERE review_open = 1",
        )
        .bind(now.unix_millis())
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(ReviewBacklog {
            open: u64::try_from(open).unwrap_or(0),
            overdue: u64::try_from(overdue).unwrap_or(0),
        })
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let claim = DueClaim::new(now, lease, limit);
        match self.outbox(OutboxOp::Claim(claim)).await? {
            OutboxAnswer::Claimed(rows) => Ok(rows),
            _ => Err(mismatched("claim")),
        }
    }

    async fn settle_notification(
        &self,
        entry: &OutboxEntry,
        delivery: Delivery,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(claimed_until) = entry.claimed_until else {
            return Ok(false);
        };
        let op = OutboxOp::Settle {
            key: entry.key.clone(),
            claimed_until: claimed_until.unix_millis(),
            delivery,
            now: now.unix_millis(),
        };
        match self.outbox(op).await? {
            OutboxAnswer::Settled(done) => Ok(done),
            _ => Err(mismatched("settlement")),
        }
    }

    async fn release_notification_claims(&self) -> Result<u64, StoreError> {
        match self.outbox(OutboxOp::ReleaseClaims).await? {
            OutboxAnswer::Released(n) => Ok(n),
            _ => Err(mismatched("release")),
        }
    }

    async fn prune_notifications(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let op = OutboxOp::Prune {
            before: before.unix_millis(),
            limit: i64::from(limit),
        };
        match self.outbox(op).await? {
            OutboxAnswer::Pruned(n) => Ok(n),
            _ => Err(mismatched("prune")),
        }
    }

    async fn next_notification_due(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM notification_outbox WHERE next_attempt_at IS NOT NULL \
             AND (claimed_until IS NULL OR claimed_until <= $1)",
        )
        .bind(now.unix_millis())
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(ts(next))
    }

    async fn notification_summary(&self, now: Timestamp) -> Result<OutboxSummary, StoreError> {
        let mut summary = OutboxSummary::default();
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM notification_outbox GROUP BY state")
                .fetch_all(&self.read)
                .await
                .map_err(db_err)?;
        for (state, n) in counts {
            if let Some(state) = OutboxState::parse(&state) {
                summary.counts.insert(state, u64::try_from(n).unwrap_or(0));
            }
        }
        // Pending rows are exactly those in the due index.
        let (backlog, scheduled, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN first_due <= $1 THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN first_due > $1 THEN 1 ELSE 0 END), 0), \
                    MIN(CASE WHEN first_due <= $1 THEN first_due END) \
             FROM notification_outbox WHERE next_attempt_at IS NOT NULL",
        )
        .bind(now.unix_millis())
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        summary.backlog = u64::try_from(backlog).unwrap_or(0);
        summary.scheduled = u64::try_from(scheduled).unwrap_or(0);
        summary.oldest_due = ts(oldest);
        let last: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT notification_key, last_error, updated_at FROM notification_outbox \
             WHERE state IN ('pending','failed') AND last_error IS NOT NULL \
             ORDER BY updated_at DESC LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?;
        summary.last_error =
            last.map(|(key, error, at)| (key, error, Timestamp::from_unix_millis(at)));
        Ok(summary)
    }

    async fn list_notifications(
        &self,
        filter: &OutboxFilter,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut sql = format!("SELECT {OUTBOX_COLUMNS} FROM notification_outbox WHERE 1=1");
        let mut binds: Vec<Bind> = Vec::new();
        sql.push_str(&state_in(filter.states.iter().map(|s| s.as_str())));
        if let Some(r) = &filter.request {
            let p = param(&mut binds, Bind::Text(r.as_str().to_owned()));
            sql.push_str(&format!(" AND request_id = {p}"));
        }
        sql.push_str(&format!(
            " ORDER BY updated_at DESC, notification_key LIMIT {}",
            filter.limit.max(1)
        ));
        let rows = bound(&sql, binds)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let (sql, binds) = list_audit_sql(filter);
        let rows = bound(&sql, binds)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        let mut records = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        records.reverse();
        Ok(records)
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok((
                r.try_get("seq").map_err(db_err)?,
                r.try_get("hash").map_err(db_err)?,
            ))
        })
        .transpose()
    }

    async fn verify_audit_with(
        &self,
        mut verifier: ChainVerifier,
    ) -> Result<ChainReport, StoreError> {
        // One read transaction gives a consistent snapshot while pages are read.
        let mut tx = self.read.begin().await.map_err(db_err)?;
        // From the first event: anything stored below seq 1 is a break too.
        let mut after = match verifier.next_seq() {
            1 => i64::MIN,
            next => next.saturating_sub(1),
        };
        loop {
            let rows =
                sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT 1000")
                    .bind(after)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("seq").map_err(db_err)?;
            for row in &rows {
                if verifier.check(&audit_from_row(row)?).is_err() {
                    return Ok(verifier.finish());
                }
            }
        }
        Ok(verifier.finish())
    }

    async fn export_requests(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS}, {CHECK_COLUMNS} FROM requests WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn write_access_review(
        &self,
        write: super::access_reviews::ReviewWrite,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_job(
            WriteJob::Change(Change::AccessReview { write, reply }),
            answer,
        )
        .await
    }

    async fn access_reviews(
        &self,
        open_only: bool,
        limit: u32,
    ) -> Result<Vec<airlock_core::access_review::Campaign>, StoreError> {
        super::access_reviews::campaigns(&self.read, open_only, limit).await
    }

    async fn access_review(
        &self,
        id: &airlock_core::CampaignId,
    ) -> Result<Option<airlock_core::access_review::Campaign>, StoreError> {
        super::access_reviews::campaign(&self.read, id).await
    }

    async fn access_review_items(
        &self,
        id: &airlock_core::CampaignId,
    ) -> Result<Vec<airlock_core::access_review::Item>, StoreError> {
        super::access_reviews::items(&self.read, id).await
    }

    async fn access_review_open_items_about(
        &self,
        user: &UserId,
    ) -> Result<Vec<(airlock_core::CampaignId, u32)>, StoreError> {
        super::access_reviews::open_items_about(&self.read, user).await
    }

    async fn access_review_last_started(
        &self,
        template: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        super::access_reviews::last_started(&self.read, template).await
    }

    async fn eligibility_decision(
        &self,
        user: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<Option<airlock_core::access_review::EligibilityDecision>, StoreError> {
        super::access_reviews::latest_eligibility_decision(&self.read, user, entitlement).await
    }

    async fn access_review_removals(
        &self,
        limit: u32,
    ) -> Result<Vec<(airlock_core::CampaignId, airlock_core::access_review::Item)>, StoreError>
    {
        super::access_reviews::outstanding_removals(&self.read, limit).await
    }

    async fn chain_hashes(&self, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        super::access_reviews::chain_hashes(&self.read, seqs).await
    }

    async fn export_audit(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn begin_import(&self) -> Result<super::Import, StoreError> {
        let (import, steps, reply) = super::Import::channel();
        let (started, begun) = oneshot::channel();
        self.submit_job(
            WriteJob::Import {
                steps,
                started,
                reply,
            },
            begun,
        )
        .await?;
        Ok(import)
    }

    async fn write_directory(&self, write: DirectoryWrite) -> Result<Committed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_job(WriteJob::Change(Change::Directory { write, reply }), answer)
            .await
    }

    async fn directory_user(&self, id: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::user(&mut conn, id).await
    }

    async fn directory_user_named(
        &self,
        user_name: &str,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::user_named(&mut conn, user_name).await
    }

    async fn list_directory_users(
        &self,
        query: &ListQuery,
    ) -> Result<(u64, Vec<DirectoryUser>), StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::list_users(&mut conn, query).await
    }

    async fn directory_group(&self, id: &str) -> Result<Option<DirectoryGroup>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::group(&mut conn, id).await
    }

    async fn list_directory_groups(
        &self,
        query: &ListQuery,
    ) -> Result<(u64, Vec<DirectoryGroup>), StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::list_groups(&mut conn, query).await
    }

    async fn directory_standing(
        &self,
        user_name: &str,
    ) -> Result<super::directory::Standing, StoreError> {
        let remembered = self.standing.as_ref().map(|c| c.get(user_name));
        if let Some((_, Some(standing))) = remembered {
            return Ok(standing);
        }
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let standing = directory::standing(&mut conn, user_name).await?;
        if let (Some(cache), Some((generation, None))) = (&self.standing, remembered) {
            cache.put(generation, user_name, &standing);
        }
        Ok(standing)
    }

    async fn directory_groups_of(&self, user_id: &str) -> Result<Vec<DirectoryGroup>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::groups_of(&mut conn, user_id).await
    }

    async fn directory_sponsored_by(&self, sponsor: &str) -> Result<Vec<UserId>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        directory::sponsored_by(&mut conn, sponsor).await
    }

    async fn try_exclusive(&self, work: Exclusive) -> Result<Option<ExclusiveGuard>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(ExclusiveGuard { holder: None }));
        }
        let key = match work {
            Exclusive::ScheduledReconciliation => RECONCILIATION_LOCK,
            Exclusive::ActivitySampling => ACTIVITY_SAMPLING_LOCK,
            Exclusive::AccessReviews => ACCESS_REVIEWS_LOCK,
            Exclusive::IdleGrants => IDLE_GRANTS_LOCK,
        };
        // A connection of its own: a session lock held on a pooled one would
        // outlive the work when the connection went back to the pool.
        let mut conn = AnyConnection::connect_with(&self.options)
            .await
            .map_err(db_err)?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(db_err)?;
        if held {
            Ok(Some(ExclusiveGuard {
                holder: Some((conn, key)),
            }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    fn single_process(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let found = self.schema_version().await?;
        let known = latest();
        match found.cmp(&known) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(StoreError::SchemaTooNew { found, known }),
            std::cmp::Ordering::Less => Err(StoreError::SchemaBehind { found, known }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_takes_the_write_lock_by_its_key_and_refuses_keys_that_are_not_ids() {
        let key = BEGIN_POSTGRES
            .split("pg_advisory_xact_lock(")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|digits| digits.parse::<i64>().ok());
        assert_eq!(key, Some(0x6169_726c_6f63_6b02));
        let keys = |k: &[&str]| k.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let sql = batch_start_sql(Backend::Postgres, &keys(&["r1", "r.2"]), &keys(&["a@b"]));
        let sql = sql.unwrap();
        assert!(sql.starts_with(BEGIN_POSTGRES), "{sql}");
        assert!(sql.contains("id IN ('r.2','r1')") && sql.contains("requester = 'a@b'"));
        for bad in ["x' OR '1'='1", "", "a b", "a\\b"] {
            assert!(batch_start_sql(Backend::Sqlite, &keys(&[bad]), &keys(&[])).is_err());
            for backend in [Backend::Sqlite, Backend::Postgres] {
                assert!(batch_start_sql(backend, &keys(&[]), &keys(&["ok", bad])).is_err());
            }
        }
    }

    #[test]
    fn statements_stay_within_each_database_parameter_budget() {
        for (backend, budget) in [(Backend::Sqlite, 512), (Backend::Postgres, 16_384)] {
            for params in [1, AUDIT_PARAMS, REQUEST_PARAMS] {
                let rows = backend.rows_per_statement(params);
                assert!((1..=512).contains(&rows) && rows * params <= budget);
            }
        }
        // PostgreSQL keeps its large statements: 256 request rows each.
        let items = [0u8; 1000];
        let first = shaped_chunks(&items, Backend::Postgres.rows_per_statement(REQUEST_PARAMS));
        assert_eq!(first.first().map(|c| c.len()), Some(256));
    }

    #[test]
    fn chunks_come_in_power_of_two_sizes_and_cover_everything() {
        let items: Vec<u32> = (0..700).collect();
        let chunks = shaped_chunks(&items, 256);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [256, 256, 128, 32, 16, 8, 4]);
        assert_eq!(chunks.concat(), items);
        assert!(shaped_chunks::<u32>(&[], 8).is_empty());
    }
}
