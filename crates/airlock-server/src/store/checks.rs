//! Checks of a grant (`GET /v1/check`) as the store sees them: finding the
//! one open request of a principal and entitlement, and adding the checks a
//! replica counted to the requests' `check_count` and `last_checked_at`
//! (schema version 12). The additions run inside the writer's batches
//! (`sql::Change::Checks`), like an API token's last use; the lookup uses
//! the read pool.

use airlock_core::request::{CheckActivity, State};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use sqlx::{AnyConnection, AnyPool, Row};

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
const OPEN_REQUEST: &str = "SELECT id, state, expires_at FROM requests \
     WHERE requester = $1 AND entitlement = $2 AND state IN ('pending', 'approved', 'active')";

pub(super) async fn open_request(
    pool: &AnyPool,
    requester: &UserId,
    entitlement: &EntitlementId,
) -> Result<Option<OpenRequest>, StoreError> {
    let row = sqlx::query(OPEN_REQUEST)
        .bind(requester.as_str())
        .bind(entitlement.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("id").map_err(db_err)?;
    let state: String = row.try_get("state").map_err(db_err)?;
    let expires_at: Option<i64> = row.try_get("expires_at").map_err(db_err)?;
    let corrupt = |what: String| StoreError::Corrupt(format!("request `{id}`: {what}"));
    Ok(Some(OpenRequest {
        id: RequestId::parse(&id).map_err(|e| corrupt(format!("id {e}")))?,
        state: State::parse(&state).ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
        expires_at: expires_at.map(Timestamp::from_unix_millis),
    }))
}

/// The plan the database chooses for the lookup, as text. On PostgreSQL
/// with sequential scans off, as the planner sees a large table (on a
/// small one a scan is cheaper and it rightly takes that).
pub(super) async fn open_request_plan(
    conn: &mut AnyConnection,
    postgres: bool,
) -> Result<String, StoreError> {
    let explain = if postgres {
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        format!("EXPLAIN {OPEN_REQUEST}")
    } else {
        format!("EXPLAIN QUERY PLAN {OPEN_REQUEST}")
    };
    let rows = sqlx::query(&explain)
        .bind("someone")
        .bind("something")
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let column = if postgres { "QUERY PLAN" } else { "detail" };
    let lines = rows
        .iter()
        .map(|r| r.try_get::<String, _>(column).map_err(db_err))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines.join("\n"))
}

/// Adds each request's counted checks to its row: the count added, the
/// last check moved forward only (replicas flush independently). Rows are
/// matched by primary key; a request gone meanwhile is skipped. One
/// statement per `rows_per_statement` requests.
pub(super) async fn add(
    conn: &mut AnyConnection,
    tallies: &[(RequestId, CheckActivity)],
    rows_per_statement: usize,
) -> Result<(), StoreError> {
    for chunk in tallies.chunks(rows_per_statement.max(1)) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        // VALUES names its columns column1.. on both databases.
        let sql = format!(
            "UPDATE requests SET check_count = check_count + c.column2, \
             last_checked_at = CASE WHEN last_checked_at IS NULL OR last_checked_at < c.column3 \
             THEN c.column3 ELSE last_checked_at END \
             FROM (VALUES {}) AS c WHERE requests.id = c.column1",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (id, checks) in chunk {
            query = query
                .bind(id.as_str())
                .bind(i64::try_from(checks.count).unwrap_or(i64::MAX))
                .bind(checks.last_at.map(Timestamp::unix_millis));
        }
        query.execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}
