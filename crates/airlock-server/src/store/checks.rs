//! Checks of a grant (`GET /v1/check`) as the store sees them: finding the
//! one open request of a principal and entitlement, and adding the checks a
//! replica counted to the `grant_checks` table (schema version 15: a narrow
//! row per checked grant, not the wide request row). The additions run inside the writer's batches
//! (`sql::Change::Checks`), like an API token's last use. Lookups run on
//! SQLite connections of their own where the check runs
//! ([`DirectLookups`]); with PostgreSQL they are grouped into queries on the
//! read pool ([`answer_lookups`]).

use airlock_core::request::{CheckActivity, State};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// The unfinished request of a principal for an entitlement, as far as a
/// check needs it (whether it holds access is the core's
/// `request::holds_access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub id: RequestId,
    pub state: State,
    pub expires_at: Option<Timestamp>,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The condition is written as in the partial unique index
/// `requests_one_open` (migration 1), literals and all, so that both
/// databases answer it from that index: SQLite uses a partial index only
/// when the query's WHERE contains the index's condition as written.
/// `tests/store.rs` checks the plan on both.
const OPEN: &str = "state IN ('pending', 'approved', 'active')";

/// Most lookups answered by one query.
const MAX_LOOKUPS: usize = 256;

/// The PostgreSQL query for `n` (requester, entitlement) pairs, bound in
/// order. A group drives the index from its pairs. The rows come back as
/// one JSON array in one row: one row to decode, whatever the group's size.
fn open_requests_sql(n: usize) -> String {
    let found = "SELECT COALESCE(json_agg(json_build_array(r.id, r.requester, r.entitlement, \
         r.state, r.expires_at))::text, '[]') AS found";
    if n == 1 {
        return format!(
            "{found} FROM requests AS r WHERE r.requester = $1 AND r.entitlement = $2 AND r.{OPEN}"
        );
    }
    let pairs: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    // VALUES names its columns column1, column2 on both databases.
    format!(
        "{found} FROM (VALUES {}) AS k CROSS JOIN requests AS r \
         WHERE r.requester = k.column1 AND r.entitlement = k.column2 AND r.{OPEN}",
        pairs.join(", ")
    )
}

/// One check's lookup, waiting for the next query.
pub(super) struct Lookup {
    requester: UserId,
    entitlement: EntitlementId,
    reply: oneshot::Sender<Result<Option<OpenRequest>, StoreError>>,
}

impl Lookup {
    pub(super) fn new(
        requester: &UserId,
        entitlement: &EntitlementId,
    ) -> (
        Lookup,
        oneshot::Receiver<Result<Option<OpenRequest>, StoreError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            requester: requester.clone(),
            entitlement: entitlement.clone(),
            reply,
        };
        (lookup, answer)
    }
}

/// Answers PostgreSQL lookups in groups: those that arrived while a query
/// ran go together in the next (up to [`MAX_LOOKUPS`]), one round trip per
/// group (the writer's group commit, for reads).
pub(super) async fn answer_lookups(pool: AnyPool, mut lookups: mpsc::Receiver<Lookup>) {
    let mut batch = Vec::with_capacity(MAX_LOOKUPS);
    while let Some(first) = lookups.recv().await {
        batch.push(first);
        // Let the checks already under way ask too: a yield costs
        // microseconds, a query's round trip far more.
        tokio::task::yield_now().await;
        while batch.len() < MAX_LOOKUPS {
            match lookups.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match open_requests(&pool, &batch).await {
            Ok(found) => {
                for l in batch.drain(..) {
                    let open = found
                        .iter()
                        .find(|(r, e, _)| {
                            *r == l.requester.as_str() && *e == l.entitlement.as_str()
                        })
                        .map(|(_, _, open)| open.clone());
                    let _ = l.reply.send(Ok(open));
                }
            }
            Err(e) => {
                for l in batch.drain(..) {
                    let _ = l.reply.send(Err(StoreError::Database(e.to_string())));
                }
            }
        }
    }
}

/// One open request as the query's JSON has it: id, requester,
/// entitlement, state, expiry.
type FoundRow = (String, String, String, String, Option<i64>);

/// The open requests of the lookups' pairs, with their pairs.
async fn open_requests(
    pool: &AnyPool,
    lookups: &[Lookup],
) -> Result<Vec<(String, String, OpenRequest)>, StoreError> {
    let sql = open_requests_sql(lookups.len());
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for l in lookups {
        query = query
            .bind(l.requester.as_str())
            .bind(l.entitlement.as_str());
    }
    let found = query.fetch_one(pool).await.map_err(db_err)?;
    let rows: Vec<FoundRow> = serde_json::from_str(&found)
        .map_err(|e| StoreError::Corrupt(format!("open requests of a check: {e}")))?;
    rows.into_iter()
        .map(|(id, requester, entitlement, state, expires_at)| {
            let corrupt = |what: String| StoreError::Corrupt(format!("request `{id}`: {what}"));
            let open = OpenRequest {
                id: RequestId::parse(&id).map_err(|e| corrupt(format!("id {e}")))?,
                state: State::parse(&state)
                    .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
                expires_at: expires_at.map(Timestamp::from_unix_millis),
            };
            Ok((requester, entitlement, open))
        })
        .collect()
}

/// The plan PostgreSQL chooses for a lookup of `n` pairs, as text, with
/// sequential scans off, as the planner sees a large table (on a small one
/// a scan is cheaper and it rightly takes that).
pub(super) async fn open_request_plan(
    conn: &mut AnyConnection,
    n: usize,
) -> Result<String, StoreError> {
    let sql = open_requests_sql(n.max(1));
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    let explain = format!("EXPLAIN {sql}");
    let mut query = sqlx::query(&explain);
    for i in 0..n.max(1) {
        query = query.bind(format!("someone{i}")).bind("something");
    }
    let rows = query.fetch_all(&mut *conn).await.map_err(db_err)?;
    let lines = rows
        .iter()
        .map(|r| r.try_get::<String, _>("QUERY PLAN").map_err(db_err))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines.join("\n"))
}

/// Adds each request's counted checks to its `grant_checks` row (made on
/// its first check): the count added, the last check moved forward only
/// (replicas flush independently); a request that does not exist is
/// skipped. The tallies go in as one JSON array per
/// statement (up to [`TALLIES_PER_STATEMENT`]), unpacked by the database:
/// bound one by one, thousands of parameters a second cost SQLite a linear
/// search of the statement's parameter names each, and that burst once a
/// second was the tail of every check's latency. Sorted by id, the rows
/// are visited in the table's order.
pub(super) async fn add(
    conn: &mut AnyConnection,
    tallies: &[(RequestId, CheckActivity)],
    postgres: bool,
) -> Result<(), StoreError> {
    // The WHERE also tells SQLite's parser the ON CONFLICT is the upsert's.
    let (rows, greater) = if postgres {
        (
            "SELECT t->>0, (t->>1)::bigint, (t->>2)::bigint FROM json_array_elements($1::json) AS t \
             WHERE EXISTS (SELECT 1 FROM requests WHERE requests.id = t->>0)",
            "GREATEST",
        )
    } else {
        (
            "SELECT c.value->>0, c.value->>1, c.value->>2 FROM json_each($1) AS c \
             WHERE EXISTS (SELECT 1 FROM requests WHERE requests.id = c.value->>0)",
            "MAX",
        )
    };
    let sql = format!(
        "INSERT INTO grant_checks (request_id, check_count, last_checked_at) {rows} \
         ON CONFLICT (request_id) DO UPDATE SET \
         check_count = grant_checks.check_count + excluded.check_count, \
         last_checked_at = COALESCE({greater}(grant_checks.last_checked_at, excluded.last_checked_at), \
         grant_checks.last_checked_at, excluded.last_checked_at)"
    );
    // One row per request: an upsert may not touch a row twice.
    let mut sorted: Vec<(&RequestId, CheckActivity)> =
        tallies.iter().map(|(id, checks)| (id, *checks)).collect();
    sorted.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut merged: Vec<(&RequestId, CheckActivity)> = Vec::with_capacity(sorted.len());
    for (id, checks) in sorted {
        match merged.last_mut() {
            Some((last, seen)) if *last == id => *seen = seen.and(checks),
            _ => merged.push((id, checks)),
        }
    }
    for chunk in merged.chunks(TALLIES_PER_STATEMENT) {
        let array: Vec<serde_json::Value> = chunk
            .iter()
            .map(|(id, checks)| {
                serde_json::json!([
                    id.as_str(),
                    i64::try_from(checks.count).unwrap_or(i64::MAX),
                    checks.last_at.map(Timestamp::unix_millis)
                ])
            })
            .collect();
        sqlx::query(&sql)
            .bind(serde_json::Value::Array(array).to_string())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Most tallies one statement adds.
const TALLIES_PER_STATEMENT: usize = 5_000;

/// A check's lookup on a SQLite connection of its own, run on the calling
/// thread. sqlx runs each SQLite connection on a thread of its own and
/// hands every query and row across; at thousands of checks a second those
/// thread switches were most of a check's time (`airlock-bench check`).
/// A lookup by the one-open-request index takes microseconds, so it runs
/// where the check is, on one of a few read-only connections: whichever is
/// free, else waiting for the first. Each lookup is its own read
/// transaction, so it sees every batch the writer committed before it (in
/// WAL mode readers neither wait for the writer nor hold it up). Nothing is
/// loaded at start and nothing is kept in memory but SQLite's page cache.
/// PostgreSQL keeps the grouped query ([`answer_lookups`]).
pub(super) struct DirectLookups {
    connections: Vec<std::sync::Mutex<rusqlite::Connection>>,
}

/// The lookup: written with the condition of `requests_one_open` as in
/// [`OPEN`], so SQLite answers it from that partial index.
fn direct_lookup_sql() -> String {
    format!(
        "SELECT id, state, expires_at FROM requests \
         WHERE requester = ?1 AND entitlement = ?2 AND {OPEN}"
    )
}

/// Pages of SQLite's cache per lookup connection (4 KiB each): the upper
/// levels of the index and the table stay in memory, leaves come from the
/// operating system's file cache.
const DIRECT_CACHE_PAGES: i64 = 1024;

fn sqlite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl DirectLookups {
    /// `connections` read-only connections to the SQLite file at `path`
    /// (at least one).
    pub(super) fn open(
        path: &std::path::Path,
        connections: usize,
    ) -> Result<DirectLookups, StoreError> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..connections.max(1))
            .map(|_| {
                let conn =
                    rusqlite::Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(sqlite_err)?;
                conn.pragma_update(None, "cache_size", DIRECT_CACHE_PAGES)
                    .map_err(sqlite_err)?;
                Ok(std::sync::Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(DirectLookups { connections })
    }

    /// The open request of `requester` for `entitlement`, if any.
    pub(super) fn get(
        &self,
        requester: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<Option<OpenRequest>, StoreError> {
        let free = self.connections.iter().find_map(|c| c.try_lock().ok());
        let conn = match free {
            Some(conn) => conn,
            None => self
                .connections
                .first()
                .ok_or_else(|| StoreError::Database("no lookup connection".to_owned()))?
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        let mut statement = conn
            .prepare_cached(&direct_lookup_sql())
            .map_err(sqlite_err)?;
        let mut rows = statement
            .query([requester.as_str(), entitlement.as_str()])
            .map_err(sqlite_err)?;
        let Some(row) = rows.next().map_err(sqlite_err)? else {
            return Ok(None);
        };
        let id: String = row.get(0).map_err(sqlite_err)?;
        let state: String = row.get(1).map_err(sqlite_err)?;
        let expires_at: Option<i64> = row.get(2).map_err(sqlite_err)?;
        let corrupt = |what: String| StoreError::Corrupt(format!("request `{id}`: {what}"));
        Ok(Some(OpenRequest {
            id: RequestId::parse(&id).map_err(|e| corrupt(format!("id {e}")))?,
            state: State::parse(&state)
                .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
            expires_at: expires_at.map(Timestamp::from_unix_millis),
        }))
    }

    /// The plan SQLite chooses for the lookup, as text.
    pub(super) fn plan(&self) -> Result<String, StoreError> {
        let conn = self
            .connections
            .first()
            .ok_or_else(|| StoreError::Database("no lookup connection".to_owned()))?
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut statement = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", direct_lookup_sql()))
            .map_err(sqlite_err)?;
        let lines = statement
            .query_map(["someone", "something"], |row| row.get::<_, String>(3))
            .map_err(sqlite_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err)?;
        Ok(lines.join("\n"))
    }
}
