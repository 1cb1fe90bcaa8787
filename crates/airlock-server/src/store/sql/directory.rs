//! The directory's statements (SCIM users, groups and memberships): the
//! writes run inside the writer's batches, so a directory change and its
//! audit events commit together; the reads run on the read pool.

use std::collections::{BTreeMap, BTreeSet};

use airlock_core::audit::AuditEvent;
use airlock_core::directory::{self, DirectoryGroup, DirectoryUser, Email, Refusal};
use airlock_core::{Timestamp, UserId};
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{db_err, Backend};
use crate::store::directory::{
    Committed, Filter, GroupDecision, ListQuery, Standing, UserDecision,
};
use crate::store::StoreError;

const USER_COLUMNS: &str = "id, user_name, external_id, display_name, emails, active, created_at, \
     updated_at, version, employment, sponsor, account_expires";
const GROUP_COLUMNS: &str = "id, display_name, external_id, created_at, updated_at, version";

/// Ids per `IN (…)` list, well inside both databases' parameter limits.
const IDS_PER_QUERY: usize = 400;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("directory {what}: {e}"))
}

fn emails_json(emails: &[Email]) -> String {
    Value::Array(
        emails
            .iter()
            .map(|e| json!({"value": e.value, "type": e.kind, "primary": e.primary}))
            .collect(),
    )
    .to_string()
}

fn emails_from(raw: &str) -> Result<Vec<Email>, StoreError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| corrupt("emails", e))?;
    let items = value.as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|e| {
            Some(Email {
                value: e.get("value")?.as_str()?.to_owned(),
                kind: e.get("type").and_then(Value::as_str).map(str::to_owned),
                primary: e.get("primary").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect())
}

fn version(row: &AnyRow) -> Result<u64, StoreError> {
    let v: i64 = row.try_get("version").map_err(db_err)?;
    u64::try_from(v).map_err(|e| corrupt("version", e))
}

fn user_from_row(row: &AnyRow) -> Result<DirectoryUser, StoreError> {
    let name: String = row.try_get("user_name").map_err(db_err)?;
    Ok(DirectoryUser {
        id: row.try_get("id").map_err(db_err)?,
        user_name: UserId::parse(&name).map_err(|e| corrupt("user name", e))?,
        external_id: row.try_get("external_id").map_err(db_err)?,
        display_name: row.try_get("display_name").map_err(db_err)?,
        emails: emails_from(&row.try_get::<String, _>("emails").map_err(db_err)?)?,
        active: row.try_get::<i64, _>("active").map_err(db_err)? != 0,
        employment: row.try_get("employment").map_err(db_err)?,
        sponsor: row
            .try_get::<Option<String>, _>("sponsor")
            .map_err(db_err)?
            .map(|s| UserId::parse(&s).map_err(|e| corrupt("sponsor", e)))
            .transpose()?,
        account_expires: row
            .try_get::<Option<i64>, _>("account_expires")
            .map_err(db_err)?
            .map(Timestamp::from_unix_millis),
        created: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
        modified: Timestamp::from_unix_millis(row.try_get("updated_at").map_err(db_err)?),
        version: version(row)?,
    })
}

fn group_from_row(row: &AnyRow) -> Result<DirectoryGroup, StoreError> {
    Ok(DirectoryGroup {
        id: row.try_get("id").map_err(db_err)?,
        display_name: row.try_get("display_name").map_err(db_err)?,
        external_id: row.try_get("external_id").map_err(db_err)?,
        members: BTreeSet::new(),
        created: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
        modified: Timestamp::from_unix_millis(row.try_get("updated_at").map_err(db_err)?),
        version: version(row)?,
    })
}

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) async fn user(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<DirectoryUser>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM directory_users WHERE id = $1"
    ))
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(user_from_row).transpose()
}

pub(super) async fn user_named(
    conn: &mut AnyConnection,
    user_name: &str,
) -> Result<Option<DirectoryUser>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM directory_users WHERE user_name_key = $1"
    ))
    .bind(user_name.to_lowercase())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(user_from_row).transpose()
}

/// `WHERE` for a list filter, and its one parameter.
fn filter_sql(filter: Option<&Filter>) -> (&'static str, Option<String>) {
    match filter {
        None => ("1=1", None),
        Some(Filter::Id(v)) => ("id = $1", Some(v.clone())),
        Some(Filter::UserName(v)) => ("user_name_key = $1", Some(v.to_lowercase())),
        Some(Filter::ExternalId(v)) => ("external_id = $1", Some(v.clone())),
        Some(Filter::DisplayName(v)) => ("lower(display_name) = $1", Some(v.to_lowercase())),
    }
}

async fn list_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &str,
    query: &ListQuery,
) -> Result<(u64, Vec<AnyRow>), StoreError> {
    let (condition, value) = filter_sql(query.filter.as_ref());
    let count_sql = format!("SELECT COUNT(*) FROM {table} WHERE {condition}");
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
    if let Some(v) = &value {
        count = count.bind(v.clone());
    }
    let total = count.fetch_one(&mut *conn).await.map_err(db_err)?;
    let limit = i64::try_from(query.count).unwrap_or(i64::MAX);
    let offset = i64::try_from(query.start_index.saturating_sub(1)).unwrap_or(i64::MAX);
    let rows_sql = format!(
        "SELECT {columns} FROM {table} WHERE {condition} ORDER BY created_at, id LIMIT {limit} OFFSET {offset}"
    );
    let mut rows = sqlx::query(&rows_sql);
    if let Some(v) = value {
        rows = rows.bind(v);
    }
    let rows = rows.fetch_all(&mut *conn).await.map_err(db_err)?;
    Ok((u64::try_from(total).unwrap_or(0), rows))
}

pub(super) async fn list_users(
    conn: &mut AnyConnection,
    query: &ListQuery,
) -> Result<(u64, Vec<DirectoryUser>), StoreError> {
    if matches!(query.filter, Some(Filter::DisplayName(_))) {
        return Ok((0, Vec::new()));
    }
    let (total, rows) = list_rows(conn, "directory_users", USER_COLUMNS, query).await?;
    Ok((
        total,
        rows.iter().map(user_from_row).collect::<Result<_, _>>()?,
    ))
}

pub(super) async fn list_groups(
    conn: &mut AnyConnection,
    query: &ListQuery,
) -> Result<(u64, Vec<DirectoryGroup>), StoreError> {
    if matches!(query.filter, Some(Filter::UserName(_))) {
        return Ok((0, Vec::new()));
    }
    let (total, rows) = list_rows(conn, "directory_groups", GROUP_COLUMNS, query).await?;
    let mut groups: Vec<DirectoryGroup> =
        rows.iter().map(group_from_row).collect::<Result<_, _>>()?;
    fill_members(conn, &mut groups).await?;
    Ok((total, groups))
}

/// Reads the members of `groups`.
async fn fill_members(
    conn: &mut AnyConnection,
    groups: &mut [DirectoryGroup],
) -> Result<(), StoreError> {
    let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let q_sql = format!(
            "SELECT group_id, user_id FROM directory_members WHERE group_id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&q_sql);
        for id in chunk {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(&mut *conn).await.map_err(db_err)? {
            let group: String = row.try_get("group_id").map_err(db_err)?;
            let user: String = row.try_get("user_id").map_err(db_err)?;
            members.entry(group).or_default().insert(user);
        }
    }
    for g in groups {
        g.members = members.remove(&g.id).unwrap_or_default();
    }
    Ok(())
}

pub(super) async fn group(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<DirectoryGroup>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM directory_groups WHERE id = $1"
    ))
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(row) = row else { return Ok(None) };
    let mut groups = [group_from_row(&row)?];
    fill_members(conn, &mut groups).await?;
    let [g] = groups;
    Ok(Some(g))
}

pub(super) async fn standing(
    conn: &mut AnyConnection,
    user_name: &str,
) -> Result<Standing, StoreError> {
    match user_named(conn, user_name).await? {
        Some(u) if u.active => {
            let groups = groups_of(conn, &u.id).await?;
            Ok(Standing::Active(u, groups))
        }
        Some(u) => Ok(Standing::Deactivated(u)),
        None => {
            let removed: Option<i64> = sqlx::query_scalar(
                "SELECT removed_at FROM directory_removed WHERE user_name_key = $1",
            )
            .bind(user_name.to_lowercase())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
            Ok(if removed.is_some() {
                Standing::Deleted
            } else {
                Standing::Unknown
            })
        }
    }
}

/// The user names of the directory's vendors whose sponsor is `sponsor`
/// (matched regardless of case, as user names are).
pub(super) async fn sponsored_by(
    conn: &mut AnyConnection,
    sponsor: &str,
) -> Result<Vec<UserId>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT user_name FROM directory_users WHERE sponsor_key = $1 ORDER BY user_name_key",
    )
    .bind(sponsor.to_lowercase())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    names
        .iter()
        .map(|n| UserId::parse(n).map_err(|e| corrupt("user name", e)))
        .collect()
}

pub(super) async fn groups_of(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Vec<DirectoryGroup>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM directory_groups WHERE id IN \
         (SELECT group_id FROM directory_members WHERE user_id = $1) ORDER BY created_at, id"
    ))
    .bind(user_id.to_owned())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    let groups: Vec<DirectoryGroup> = rows.iter().map(group_from_row).collect::<Result<_, _>>()?;
    // Members are not read: nobody who asks needs them.
    Ok(groups)
}

/// The user names of directory users `ids` (those that exist).
async fn user_names(
    conn: &mut AnyConnection,
    ids: &BTreeSet<String>,
) -> Result<BTreeMap<String, UserId>, StoreError> {
    let ids: Vec<&String> = ids.iter().collect();
    let mut names = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let q_sql = format!(
            "SELECT id, user_name FROM directory_users WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&q_sql);
        for id in chunk {
            q = q.bind((*id).clone());
        }
        for row in q.fetch_all(&mut *conn).await.map_err(db_err)? {
            let id: String = row.try_get("id").map_err(db_err)?;
            let name: String = row.try_get("user_name").map_err(db_err)?;
            names.insert(
                id,
                UserId::parse(&name).map_err(|e| corrupt("user name", e))?,
            );
        }
    }
    Ok(names)
}

/// A value bound to a write.
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

/// Runs one write with `args` as `$1…`.
async fn run(conn: &mut AnyConnection, sql: &str, args: Vec<Arg>) -> Result<(), StoreError> {
    let mut query = sqlx::query(sql);
    for arg in args {
        query = match arg {
            Arg::Text(t) => query.bind(t),
            Arg::OptText(t) => query.bind(t),
            Arg::Int(i) => query.bind(i),
            Arg::OptInt(i) => query.bind(i),
        };
    }
    query.execute(&mut *conn).await.map_err(db_err)?;
    Ok(())
}

fn version_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A user's columns, in the order of [`USER_COLUMNS`] then `user_name_key`
/// and `sponsor_key`.
fn user_args(u: &DirectoryUser) -> Vec<Arg> {
    vec![
        Arg::Text(u.id.clone()),
        Arg::Text(u.user_name.to_string()),
        Arg::OptText(u.external_id.clone()),
        Arg::OptText(u.display_name.clone()),
        Arg::Text(emails_json(&u.emails)),
        Arg::Int(i64::from(u.active)),
        Arg::Int(u.created.unix_millis()),
        Arg::Int(u.modified.unix_millis()),
        Arg::Int(version_int(u.version)),
        Arg::OptText(u.employment.clone()),
        Arg::OptText(u.sponsor.as_ref().map(ToString::to_string)),
        Arg::OptInt(u.account_expires.map(Timestamp::unix_millis)),
        Arg::Text(u.user_name.as_str().to_lowercase()),
        Arg::OptText(u.sponsor.as_ref().map(|s| s.as_str().to_lowercase())),
    ]
}

/// A group's columns, in the order of [`GROUP_COLUMNS`].
fn group_args(g: &DirectoryGroup) -> Vec<Arg> {
    vec![
        Arg::Text(g.id.clone()),
        Arg::Text(g.display_name.clone()),
        Arg::OptText(g.external_id.clone()),
        Arg::Int(g.created.unix_millis()),
        Arg::Int(g.modified.unix_millis()),
        Arg::Int(version_int(g.version)),
    ]
}

fn id_arg(id: &str) -> Vec<Arg> {
    vec![Arg::Text(id.to_owned())]
}

/// Decides and writes a user change inside the writer's transaction; its
/// events join the batch's. The outer error fails the batch (a database
/// error); the inner one is a refusal that wrote nothing.
pub(super) async fn write_user(
    conn: &mut AnyConnection,
    _backend: Backend,
    id: &str,
    operation: &str,
    decide: &UserDecision,
    events: &mut Vec<AuditEvent>,
) -> Result<Result<Committed, StoreError>, StoreError> {
    let before = user(conn, id).await?;
    let decided = match decide(before.clone()) {
        Ok(d) => d,
        Err(r) => return Ok(Err(r.into())),
    };
    if let Some(new) = &decided.after {
        if let Some(holder) = user_named(conn, new.user_name.as_str()).await? {
            if holder.id != new.id {
                return Ok(Err(Refusal::Uniqueness(format!(
                    "userName `{}` is already taken by user `{}`",
                    new.user_name, holder.id
                ))
                .into()));
            }
        }
    }
    let change = directory::user_change(
        before.as_ref(),
        decided.after.as_ref(),
        operation,
        decided.now,
    );
    // A name deleted (or renamed away) stays refused at sign-in until a
    // user of that name is provisioned again.
    let key = |u: &DirectoryUser| u.user_name.as_str().to_lowercase();
    let kept = decided.after.as_ref().map(key);
    for old in before
        .iter()
        .map(key)
        .filter(|old| kept.as_ref() != Some(old))
    {
        run(
            conn,
            "DELETE FROM directory_removed WHERE user_name_key = $1",
            vec![Arg::Text(old.clone())],
        )
        .await?;
        run(
            conn,
            "INSERT INTO directory_removed (user_name_key, removed_at) VALUES ($1, $2)",
            vec![Arg::Text(old), Arg::Int(decided.now.unix_millis())],
        )
        .await?;
    }
    if let Some(new) = &kept {
        run(
            conn,
            "DELETE FROM directory_removed WHERE user_name_key = $1",
            vec![Arg::Text(new.clone())],
        )
        .await?;
    }
    match (&before, &decided.after) {
        (None, Some(u)) => {
            let sql = format!(
                "INSERT INTO directory_users ({USER_COLUMNS}, user_name_key, sponsor_key) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
            );
            run(conn, &sql, user_args(u)).await?;
        }
        (Some(_), Some(u)) => {
            let sql = "UPDATE directory_users SET user_name = $2, external_id = $3, display_name = $4, \
                 emails = $5, active = $6, created_at = $7, updated_at = $8, version = $9, employment = $10, \
                 sponsor = $11, account_expires = $12, user_name_key = $13, sponsor_key = $14 WHERE id = $1";
            run(conn, sql, user_args(u)).await?;
        }
        (Some(old), None) => {
            run(
                conn,
                "DELETE FROM directory_members WHERE user_id = $1",
                id_arg(&old.id),
            )
            .await?;
            run(
                conn,
                "DELETE FROM directory_users WHERE id = $1",
                id_arg(&old.id),
            )
            .await?;
        }
        (None, None) => {}
    }
    events.extend(change.events.iter().cloned());
    Ok(Ok(Committed {
        user: decided.after,
        group: None,
        change,
    }))
}

/// Like [`write_user`], for a group and its members.
pub(super) async fn write_group(
    conn: &mut AnyConnection,
    _backend: Backend,
    id: &str,
    operation: &str,
    decide: &GroupDecision,
    events: &mut Vec<AuditEvent>,
) -> Result<Result<Committed, StoreError>, StoreError> {
    let before = group(conn, id).await?;
    let decided = match decide(before.clone()) {
        Ok(d) => d,
        Err(r) => return Ok(Err(r.into())),
    };
    let mut involved: BTreeSet<String> = before
        .iter()
        .flat_map(|g| g.members.iter().cloned())
        .collect();
    if let Some(new) = &decided.after {
        involved.extend(new.members.iter().cloned());
    }
    let names = user_names(conn, &involved).await?;
    if let Some(new) = &decided.after {
        if let Some(unknown) = new.members.iter().find(|m| !names.contains_key(*m)) {
            return Ok(Err(Refusal::Invalid {
                field: "members".to_owned(),
                message: format!("names `{unknown}`, which is no user of this directory"),
            }
            .into()));
        }
    }
    let change = directory::group_change(
        before.as_ref(),
        decided.after.as_ref(),
        &names,
        operation,
        decided.now,
    );
    if before.is_some() {
        run(
            conn,
            "DELETE FROM directory_members WHERE group_id = $1",
            id_arg(id),
        )
        .await?;
    }
    match (&before, &decided.after) {
        (None, Some(g)) => {
            let sql = format!(
                "INSERT INTO directory_groups ({GROUP_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6)"
            );
            run(conn, &sql, group_args(g)).await?;
        }
        (Some(_), Some(g)) => {
            let sql = "UPDATE directory_groups SET display_name = $2, external_id = $3, created_at = $4, \
                 updated_at = $5, version = $6 WHERE id = $1";
            run(conn, sql, group_args(g)).await?;
        }
        (Some(old), None) => {
            run(
                conn,
                "DELETE FROM directory_groups WHERE id = $1",
                id_arg(&old.id),
            )
            .await?;
        }
        (None, None) => {}
    }
    if let Some(g) = &decided.after {
        let members: Vec<&String> = g.members.iter().collect();
        for chunk in members.chunks(IDS_PER_QUERY / 2) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO directory_members (group_id, user_id) VALUES {}",
                values.join(",")
            );
            let args = chunk
                .iter()
                .flat_map(|m| [Arg::Text(g.id.clone()), Arg::Text((*m).clone())])
                .collect();
            run(conn, &sql, args).await?;
        }
    }
    events.extend(change.events.iter().cloned());
    Ok(Ok(Committed {
        user: None,
        group: decided.after,
        change,
    }))
}
