//! Checks of a grant (`GET /v1/check`) as the store sees them: finding the
//! one open request of a principal and entitlement, and adding the checks a
//! replica counted to the `grant_checks` table (schema version 15: a narrow
//! row per checked grant, not the wide request row). The additions run inside the writer's batches
//! (`sql::Change::Checks`), like an API token's last use; lookups are
//! grouped into queries on the read pool ([`answer_lookups`]).

use airlock_core::request::{AccessRequest, CheckActivity, State};
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

/// The query for `n` (requester, entitlement) pairs, bound in order. A
/// group drives the index from its pairs (`CROSS JOIN` fixes that order on
/// SQLite, which otherwise takes the `state` index for a row-value `IN`).
/// The rows come back as one JSON array in one row: sqlx hands each row of
/// a SQLite result from the connection's thread to the caller's
/// separately, a thread wake-up each.
fn open_requests_sql(postgres: bool, n: usize) -> String {
    let found = if postgres {
        "SELECT COALESCE(json_agg(json_build_array(r.id, r.requester, r.entitlement, r.state, \
         r.expires_at))::text, '[]') AS found"
    } else {
        "SELECT json_group_array(json_array(r.id, r.requester, r.entitlement, r.state, \
         r.expires_at)) AS found"
    };
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

/// Answers lookups in groups: those that arrived while a query ran go
/// together in the next (up to [`MAX_LOOKUPS`]). A query on SQLite costs
/// a round trip to the connection's worker thread, and at thousands of
/// checks a second those thread switches, not the index lookups, were
/// where the time went; grouping pays one per group (the writer's group
/// commit, for reads).
pub(super) async fn answer_lookups(
    pool: AnyPool,
    postgres: bool,
    mut lookups: mpsc::Receiver<Lookup>,
) {
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
        match open_requests(&pool, postgres, &batch).await {
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
    postgres: bool,
    lookups: &[Lookup],
) -> Result<Vec<(String, String, OpenRequest)>, StoreError> {
    let sql = open_requests_sql(postgres, lookups.len());
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

/// The plan the database chooses for a lookup of `n` pairs, as text. On
/// PostgreSQL with sequential scans off, as the planner sees a large table
/// (on a small one a scan is cheaper and it rightly takes that).
pub(super) async fn open_request_plan(
    conn: &mut AnyConnection,
    postgres: bool,
    n: usize,
) -> Result<String, StoreError> {
    let sql = open_requests_sql(postgres, n.max(1));
    let explain = if postgres {
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        format!("EXPLAIN {sql}")
    } else {
        format!("EXPLAIN QUERY PLAN {sql}")
    };
    let mut query = sqlx::query(&explain);
    for i in 0..n.max(1) {
        query = query.bind(format!("someone{i}")).bind("something");
    }
    let rows = query.fetch_all(&mut *conn).await.map_err(db_err)?;
    let column = if postgres { "QUERY PLAN" } else { "detail" };
    let lines = rows
        .iter()
        .map(|r| r.try_get::<String, _>(column).map_err(db_err))
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

/// Open requests read per query when the index is loaded.
const RELOAD_PAGE: usize = 10_000;

/// Most tallies one statement adds.
const TALLIES_PER_STATEMENT: usize = 5_000;

/// With SQLite, every open request by requester and entitlement, in
/// memory: a check is then answered without a query. One process owns a
/// SQLite file and every change to a request goes through its one writer,
/// which applies each committed batch here before answering its callers
/// (and reloads it after an import), so the index never lags what a
/// caller was told. At thousands of checks a second, sqlx's hand-off of
/// each query to the SQLite connection's thread was most of a check's
/// time; a map lookup is not (`airlock-bench check`). PostgreSQL, shared by
/// replicas whose writes this process does not see, keeps the query.
#[derive(Default)]
pub(super) struct OpenIndex {
    /// `requester \0 entitlement` (neither holds a NUL: validated ids).
    open: std::sync::RwLock<std::collections::HashMap<String, OpenRequest>>,
}

fn index_key(requester: &str, entitlement: &str) -> String {
    let mut key = String::with_capacity(requester.len() + entitlement.len() + 1);
    key.push_str(requester);
    key.push('\0');
    key.push_str(entitlement);
    key
}

impl OpenIndex {
    /// Reads every open request from the database, replacing what it held.
    pub(super) async fn reload(&self, conn: &mut AnyConnection) -> Result<usize, StoreError> {
        // A page at a time: a million open requests read at once would
        // hold every row until the last arrived.
        let sql = format!(
            "SELECT id, requester, entitlement, state, expires_at FROM requests \
             WHERE {OPEN} AND id > $1 ORDER BY id LIMIT {RELOAD_PAGE}"
        );
        let mut open = std::collections::HashMap::new();
        let mut after = String::new();
        loop {
            let page = sqlx::query(&sql)
                .bind(after.clone())
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
            let Some(last) = page.last() else { break };
            after = last.try_get("id").map_err(db_err)?;
            for row in &page {
                Self::insert_row(&mut open, row)?;
            }
        }
        let count = open.len();
        *self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = open;
        Ok(count)
    }

    fn insert_row(
        open: &mut std::collections::HashMap<String, OpenRequest>,
        row: &sqlx::any::AnyRow,
    ) -> Result<(), StoreError> {
        let id: String = row.try_get("id").map_err(db_err)?;
        let corrupt = |what: String| StoreError::Corrupt(format!("request `{id}`: {what}"));
        let state: String = row.try_get("state").map_err(db_err)?;
        let requester: String = row.try_get("requester").map_err(db_err)?;
        let entitlement: String = row.try_get("entitlement").map_err(db_err)?;
        let expires_at: Option<i64> = row.try_get("expires_at").map_err(db_err)?;
        open.insert(
            index_key(&requester, &entitlement),
            OpenRequest {
                id: RequestId::parse(&id).map_err(|e| corrupt(format!("id {e}")))?,
                state: State::parse(&state)
                    .ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
                expires_at: expires_at.map(Timestamp::from_unix_millis),
            },
        );
        Ok(())
    }

    /// The open request of `requester` for `entitlement`, if any.
    pub(super) fn get(
        &self,
        requester: &UserId,
        entitlement: &EntitlementId,
    ) -> Option<OpenRequest> {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&index_key(requester.as_str(), entitlement.as_str()))
            .cloned()
    }

    /// Takes in requests as a committed batch left them: an open one is
    /// its pair's, an ended one leaves (if it still is its pair's).
    pub(super) fn apply<'a>(&self, changed: impl IntoIterator<Item = &'a AccessRequest>) {
        let mut open = self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in changed {
            let key = index_key(r.requester.as_str(), r.entitlement.as_str());
            if r.state.is_terminal() {
                if open.get(&key).is_some_and(|o| o.id == r.id) {
                    open.remove(&key);
                }
            } else {
                open.insert(
                    key,
                    OpenRequest {
                        id: r.id.clone(),
                        state: r.state,
                        expires_at: r.expires_at,
                    },
                );
            }
        }
    }
}
