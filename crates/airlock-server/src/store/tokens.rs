//! The `api_tokens` table: statements for both databases. Writes run inside
//! the writer's batches (`sql::Change::Token`), so a token and the audit
//! event of its creation or revocation commit together; reads use the read
//! pool.

use airlock_core::token::{ApiToken, Scopes};
use airlock_core::{Timestamp, TokenId, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::StoreError;

/// A write to the `api_tokens` table.
#[derive(Debug, Clone)]
pub enum TokenWrite {
    Create {
        token: ApiToken,
        secret_sha256: String,
    },
    /// Sets `revoked_at`/`revoked_by` if the token is not revoked yet.
    Revoke(ApiToken),
    /// Moves `last_used_at` forward (never back: replicas may race).
    Used { id: TokenId, at: Timestamp },
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

const COLUMNS: &str = "id, owner, name, scopes, created_at, created_by, expires_at, \
    last_used_at, revoked_at, revoked_by";

/// Runs `write` on the writer's connection; whether it changed a row.
pub(super) async fn write(
    conn: &mut AnyConnection,
    write: &TokenWrite,
) -> Result<bool, StoreError> {
    let result = match write {
        TokenWrite::Create {
            token,
            secret_sha256,
        } => sqlx::query(
            "INSERT INTO api_tokens (id, owner, name, secret_sha256, scopes, created_at, \
             created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.to_string())
        .bind(token.owner.to_string())
        .bind(token.name.clone())
        .bind(secret_sha256.clone())
        .bind(token.scopes.to_string())
        .bind(token.created_at.unix_millis())
        .bind(token.created_by.to_string())
        .bind(token.expires_at.unix_millis())
        .execute(conn)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_unique_violation() => StoreError::UniqueViolation,
            _ => db_err(e),
        })?,
        TokenWrite::Revoke(token) => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(token.revoked_at.map(Timestamp::unix_millis))
        .bind(token.revoked_by.as_ref().map(ToString::to_string))
        .bind(token.id.to_string())
        .execute(conn)
        .await
        .map_err(db_err)?,
        TokenWrite::Used { id, at } => sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at.unix_millis())
        .bind(id.to_string())
        .execute(conn)
        .await
        .map_err(db_err)?,
    };
    Ok(result.rows_affected() == 1)
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("API token `{id}`: {what}"))
}

fn token_from_row(row: &AnyRow) -> Result<ApiToken, StoreError> {
    let id: String = row.try_get("id").map_err(db_err)?;
    let user = |column: &str| -> Result<UserId, StoreError> {
        let raw: String = row.try_get(column).map_err(db_err)?;
        UserId::parse(&raw).map_err(|e| corrupt(&id, format!("{column}: {e}")))
    };
    let time = |column: &str| -> Result<Option<Timestamp>, StoreError> {
        let raw: Option<i64> = row.try_get(column).map_err(db_err)?;
        Ok(raw.map(Timestamp::from_unix_millis))
    };
    let scopes: String = row.try_get("scopes").map_err(db_err)?;
    let revoked_by: Option<String> = row.try_get("revoked_by").map_err(db_err)?;
    Ok(ApiToken {
        id: TokenId::parse(&id).map_err(|e| corrupt(&id, e))?,
        owner: user("owner")?,
        name: row.try_get("name").map_err(db_err)?,
        scopes: Scopes::parse(&scopes).map_err(|e| corrupt(&id, e))?,
        created_at: time("created_at")?.ok_or_else(|| corrupt(&id, "no created_at"))?,
        created_by: user("created_by")?,
        expires_at: time("expires_at")?.ok_or_else(|| corrupt(&id, "no expires_at"))?,
        last_used_at: time("last_used_at")?,
        revoked_at: time("revoked_at")?,
        revoked_by: revoked_by
            .map(|r| UserId::parse(&r).map_err(|e| corrupt(&id, format!("revoked_by: {e}"))))
            .transpose()?,
    })
}

pub(super) async fn by_secret(
    pool: &AnyPool,
    secret_sha256: &str,
) -> Result<Option<ApiToken>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE secret_sha256 = $1");
    let row = sqlx::query(&sql)
        .bind(secret_sha256.to_owned())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn by_id(pool: &AnyPool, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(token_from_row).transpose()
}

/// Tokens owned by one of `owners` (every token when `None`), newest first.
pub(super) async fn list(
    pool: &AnyPool,
    owners: Option<&[UserId]>,
) -> Result<Vec<ApiToken>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM api_tokens");
    if let Some(owners) = owners {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=owners.len()).map(|i| format!("${i}")).collect();
        sql.push_str(&format!(" WHERE owner IN ({})", marks.join(", ")));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    let mut query = sqlx::query(&sql);
    for owner in owners.unwrap_or_default() {
        query = query.bind(owner.to_string());
    }
    let rows = query.fetch_all(pool).await.map_err(db_err)?;
    rows.iter().map(token_from_row).collect()
}
