//! The `ssh_sessions` table: sessions the SSH companion recorded, one row
//! each, named by the companion's session id. The insert runs inside the
//! writer's batches (`sql::Change::SshSession`) and is conditional on the
//! primary key, so a record sent again is taken once and its audit event
//! appended once, in the same transaction as the row; reads use the read
//! pool, and a list leaves the recordings out.

use airlock_core::ssh_session::{Ending, SessionReport};
use airlock_core::{RequestId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::StoreError;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub request: RequestId,
    /// In a list, `report.recording` is empty (see `recording_bytes`).
    pub report: SessionReport,
    /// The recording's size as kept.
    pub recording_bytes: u64,
    /// Its size as the companion sent it.
    pub sent_bytes: u64,
    pub received_at: Timestamp,
    pub received_by: String,
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Inserts `session` unless one with its id is stored; whether it did.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    session: &StoredSession,
) -> Result<bool, StoreError> {
    let r = &session.report;
    let inserted = sqlx::query(
        "INSERT INTO ssh_sessions (id, request_id, host, unix_user, client, command, \
         started_at, ended_at, ending, recording, recording_bytes, recording_sent_bytes, cut, \
         received_at, received_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(r.id.clone())
    .bind(session.request.to_string())
    .bind(r.host.clone())
    .bind(r.user.clone())
    .bind(r.client.clone())
    .bind(r.command.clone())
    .bind(r.started_at.unix_millis())
    .bind(r.ended_at.unix_millis())
    .bind(r.ending.as_str())
    .bind(r.recording.clone())
    .bind(i64::try_from(r.recording.len()).unwrap_or(i64::MAX))
    .bind(i64::try_from(session.sent_bytes).unwrap_or(i64::MAX))
    .bind(r.cut.clone())
    .bind(session.received_at.unix_millis())
    .bind(session.received_by.clone())
    .execute(conn)
    .await
    .map_err(db_err)?;
    Ok(inserted.rows_affected() == 1)
}

const SUMMARY_COLUMNS: &str = "id, request_id, host, unix_user, client, command, started_at, \
    ended_at, ending, recording_bytes, recording_sent_bytes, cut, received_at, received_by";

/// The sessions of `request`, oldest first, without their recordings.
pub(super) async fn list(
    pool: &AnyPool,
    request: &RequestId,
) -> Result<Vec<StoredSession>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM ssh_sessions WHERE request_id = $1 \
         ORDER BY started_at, id"
    ))
    .bind(request.as_str())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(|row| from_row(row, None)).collect()
}

/// Session `id` with its recording.
pub(super) async fn get(pool: &AnyPool, id: &str) -> Result<Option<StoredSession>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS}, recording FROM ssh_sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.map(|row| {
        let recording: String = row.try_get("recording").map_err(db_err)?;
        from_row(&row, Some(recording))
    })
    .transpose()
}

fn from_row(row: &AnyRow, recording: Option<String>) -> Result<StoredSession, StoreError> {
    let id: String = row.try_get("id").map_err(db_err)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("ssh session `{id}`: {what}"));
    let request: String = row.try_get("request_id").map_err(db_err)?;
    let ending: String = row.try_get("ending").map_err(db_err)?;
    let millis = |column: &str| -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_unix_millis(
            row.try_get::<i64, _>(column).map_err(db_err)?,
        ))
    };
    let bytes = |column: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<i64, _>(column).map_err(db_err)?).unwrap_or(0))
    };
    Ok(StoredSession {
        request: RequestId::parse(&request).map_err(|e| corrupt(&format!("request {e}")))?,
        report: SessionReport {
            id: id.clone(),
            host: row.try_get("host").map_err(db_err)?,
            user: row.try_get("unix_user").map_err(db_err)?,
            client: row.try_get("client").map_err(db_err)?,
            command: row.try_get("command").map_err(db_err)?,
            started_at: millis("started_at")?,
            ended_at: millis("ended_at")?,
            ending: Ending::parse(&ending).ok_or_else(|| corrupt(&format!("ending `{ending}`")))?,
            recording: recording.unwrap_or_default(),
            cut: row.try_get("cut").map_err(db_err)?,
        },
        recording_bytes: bytes("recording_bytes")?,
        sent_bytes: bytes("recording_sent_bytes")?,
        received_at: millis("received_at")?,
        received_by: row.try_get("received_by").map_err(db_err)?,
    })
}
