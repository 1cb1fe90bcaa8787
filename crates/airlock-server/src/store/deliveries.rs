//! The `inbound_deliveries` table: signed webhook deliveries Airlock took
//! (the ticket system's), remembered until their timestamp alone would
//! refuse them, so a replay is refused on every replica. Writes run inside
//! the writer's batches (`sql::Change::Delivery`): on PostgreSQL those of
//! all replicas commit one after another, and the insert is conditional on
//! the primary key, so of two deliveries with one key exactly one is taken.

use airlock_core::Timestamp;
use sqlx::AnyConnection;

use super::StoreError;

/// A write to the `inbound_deliveries` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryWrite {
    /// Take delivery `key` at `at`, remembered until `forget_after`;
    /// deliveries whose time has passed are forgotten first.
    Take {
        key: String,
        at: Timestamp,
        forget_after: Timestamp,
    },
    /// Forget delivery `key` (its work failed: a retry must be taken).
    Forget { key: String },
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Runs `write` on the writer's connection; for a take, whether the
/// delivery is new (`false`: taken before and not yet forgotten).
pub(super) async fn write(
    conn: &mut AnyConnection,
    write: &DeliveryWrite,
) -> Result<bool, StoreError> {
    match write {
        DeliveryWrite::Take {
            key,
            at,
            forget_after,
        } => {
            sqlx::query("DELETE FROM inbound_deliveries WHERE forget_after <= $1")
                .bind(at.unix_millis())
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            let taken = sqlx::query(
                "INSERT INTO inbound_deliveries (delivery, taken_at, forget_after) \
                 VALUES ($1, $2, $3) ON CONFLICT (delivery) DO NOTHING",
            )
            .bind(key.clone())
            .bind(at.unix_millis())
            .bind(forget_after.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            Ok(taken.rows_affected() == 1)
        }
        DeliveryWrite::Forget { key } => {
            let forgotten = sqlx::query("DELETE FROM inbound_deliveries WHERE delivery = $1")
                .bind(key.clone())
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            Ok(forgotten.rows_affected() == 1)
        }
    }
}
