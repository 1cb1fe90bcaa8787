//! The PostgreSQL dialect of the database connector: grants PostgreSQL
//! roles. It exists because "a role on a production database for two hours"
//! is the most common thing people ask Airlock for, and doing it through a
//! shell script loses the typed errors, the reconciliation and the session
//! termination done here. What it shares with MariaDB (the calls, their
//! steps, messages and time bound) is [`crate::database`].
//!
//! Two modes (see [`Mode`]):
//!
//! - **Grant**: `GRANT role TO login` for the user's existing login (named by
//!   a template such as `{user}`); revoke is `REVOKE role FROM login`, then,
//!   if configured, the login's sessions are terminated, because a session
//!   that ran `SET ROLE` keeps the role's rights after the revoke.
//! - **Temporary login**: a login `airlock_<request_id>` is created for the
//!   request with a random password and `VALID UNTIL` the grant's expiry, so
//!   PostgreSQL itself refuses new logins after expiry even if Airlock is
//!   down. Revoke disables it, terminates its sessions and drops it. Granting
//!   again resets the password and the expiry and returns the new credential.
//!
//! Every call on one login runs in a transaction that first takes an
//! advisory lock on the login's name, so replicas take turns.
//!
//! Clients should connect with `application_name=airlock:<request_id>` so a
//! DBA can tell sessions apart in `pg_stat_activity`; revoke does not rely on
//! it and terminates sessions by login.
//!
//! Names go into SQL only as validated, quoted [`Ident`]s; values that can be
//! bound are bound. The password is never sent: the statement carries its
//! SCRAM verifier (see [`scram_sha256_verifier`]). Neither appears in logs or
//! errors, and sqlx's own statement logging is switched off for this pool.

mod scram;

use std::fmt;
use std::time::Duration;

use rand::Rng;
use sqlx::error::DatabaseError;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Executor, PgConnection};

use crate::database::{describe_url, Common, DatabaseConnector, Dialect, ErrorCode};
pub use crate::sql::Mode;
use crate::sql::{plain_literal, request_id_of_login, timestamp_literal, Ident};
use crate::{ConnectorError, GrantSpec, Holding, LiveSession};
use airlock_core::{RequestId, Timestamp};
pub use scram::{scram_sha256_verifier, SCRAM_ITERATIONS};

/// Values PostgreSQL accepts for `log_statement`.
const LOG_STATEMENT_VALUES: [&str; 4] = ["none", "ddl", "mod", "all"];

/// Namespaces Airlock's advisory locks (`pg_advisory_xact_lock(class, key)`)
/// away from any the target's applications take. "Alrk" in ASCII.
const LOCK_CLASS: i32 = 0x416c_726b;

/// What a role comment written by this connector starts with; the request id
/// follows it.
const COMMENT_PREFIX: &str = "airlock request ";

/// Configuration for a [`PostgresConnector`].
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user[:password]@host:port/database` of an account with
    /// `CREATEROLE` (and `pg_signal_backend` to terminate sessions; superuser
    /// for `log_statements`).
    pub url: String,
    /// The roles a grant confers; they must exist in the target.
    pub roles: Vec<String>,
    pub mode: Mode,
    /// Grant mode: the existing login of an Airlock user, `{user}` replaced
    /// by the user id (e.g. `{user}` or `app_{user}`). Checked in
    /// temporary-login mode too, but not used there.
    pub login_template: String,
    /// Grant mode: terminate the login's sessions after a revoke. Temporary
    /// logins' sessions are always terminated.
    pub terminate_sessions: bool,
    /// Temporary-login mode: `log_statement` for the login (`none`, `ddl`,
    /// `mod` or `all`), so the target logs what the requester does.
    pub log_statements: Option<String>,
    /// Upper bound on one call, including waiting for a connection.
    pub timeout: Duration,
}

impl PostgresSettings {
    /// Settings with the usual defaults: template `{user}`, sessions
    /// terminated on revoke, no statement logging, a 10 s timeout.
    pub fn new(url: impl Into<String>, roles: Vec<String>, mode: Mode) -> Self {
        Self {
            url: url.into(),
            roles,
            mode,
            login_template: crate::sql::USER_PLACEHOLDER.to_owned(),
            terminate_sessions: true,
            log_statements: None,
            timeout: Duration::from_secs(10),
        }
    }
}

// By hand: the URL may carry the admin password.
impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = describe_url::<Postgres>(&self.url);
        f.debug_struct("PostgresSettings")
            .field("url", &target)
            .field("roles", &self.roles)
            .field("mode", &self.mode)
            .field("login_template", &self.login_template)
            .field("terminate_sessions", &self.terminate_sessions)
            .field("log_statements", &self.log_statements)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Grants PostgreSQL roles, to existing logins or to per-request logins.
pub type PostgresConnector = DatabaseConnector<Postgres>;

/// What PostgreSQL does its own way (see [`crate::database`]).
#[derive(Debug, Clone)]
pub struct Postgres {
    /// Temporary-login mode: the login's own `log_statement`.
    log_statement: Option<&'static str>,
}

impl PostgresConnector {
    /// Checks every name and setting; nothing connects until the first call.
    /// All failures are `Permanent`: they are configuration mistakes.
    pub fn new(settings: PostgresSettings) -> Result<Self, ConnectorError> {
        let common = Common {
            url: &settings.url,
            roles: &settings.roles,
            mode: settings.mode,
            login_template: &settings.login_template,
            terminate_sessions: settings.terminate_sessions,
            timeout: settings.timeout,
        };
        Self::build(common, || {
            let log_statement = match settings.log_statements.as_deref() {
                None => None,
                Some(value) => Some(
                    LOG_STATEMENT_VALUES
                        .into_iter()
                        .find(|known| *known == value)
                        .ok_or_else(|| {
                            ConnectorError::Permanent(format!(
                                "log_statements `{value}` is not one of `none`, `ddl`, `mod`, `all`"
                            ))
                        })?,
                ),
            };
            Ok(Postgres { log_statement })
        })
    }
}

impl Postgres {
    fn role_names(c: &PostgresConnector) -> Vec<String> {
        c.roles().iter().map(|r| r.as_str().to_owned()).collect()
    }

    /// Whether `login` exists and carries the comment a temporary-login
    /// grant writes.
    async fn is_ours(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<bool, ConnectorError> {
        let comment: Option<String> = sqlx::query_scalar(
            "SELECT pg_catalog.shobj_description(oid, 'pg_authid') \
             FROM pg_catalog.pg_roles WHERE rolname = $1",
        )
        .bind(login.as_str())
        .fetch_optional(conn)
        .await
        .map_err(c.fail(&format!("reading the comment of `{login}`")))?
        .flatten();
        Ok(comment.is_some_and(|c| c.starts_with(COMMENT_PREFIX)))
    }
}

#[async_trait::async_trait]
impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Account = Ident;
    /// The login's oid.
    type Found = i64;
    /// The password's SCRAM verifier.
    type Secret = String;

    const ENGINE: &'static str = "postgres";
    const CONNECTOR: &'static str = "PostgresConnector";
    const ACCOUNT: &'static str = "login";
    const TRANSACTIONAL: bool = true;

    fn configure(options: PgConnectOptions) -> PgConnectOptions {
        options.application_name("airlock")
    }

    fn describe(options: &PgConnectOptions) -> String {
        format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        )
    }

    fn error_code(error: &dyn DatabaseError) -> ErrorCode {
        let code = error.code().map(|c| c.into_owned()).unwrap_or_default();
        ErrorCode {
            hint: sqlstate_hint(&code),
            retryable: is_retryable_sqlstate(&code),
            label: format!("sqlstate {code}"),
        }
    }

    fn account(&self, login: Ident) -> Ident {
        login
    }

    fn principal(&self, login: &Ident) -> String {
        login.as_str().to_owned()
    }

    fn parse_holder(&self, principal: &str) -> Result<Ident, ConnectorError> {
        Ident::parse("holder", principal)
    }

    fn grant_role_sql(role: &Ident, login: &Ident) -> String {
        // Granting a membership that exists only raises a notice.
        format!("GRANT {} TO {}", role.pg(), login.pg())
    }

    fn secret(&self, password: &str) -> String {
        let salt: [u8; 16] = rand::rng().random();
        scram_sha256_verifier(password, &salt, SCRAM_ITERATIONS)
    }

    async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
        exec(conn, sql).await
    }

    async fn lock(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<(), ConnectorError> {
        sqlx::query("SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(login.as_str())
            .execute(conn)
            .await
            .map_err(c.fail(&format!("locking `{login}`")))?;
        Ok(())
    }

    async fn find(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<Option<i64>, ConnectorError> {
        sqlx::query_scalar::<_, i64>("SELECT oid::int8 FROM pg_catalog.pg_roles WHERE rolname = $1")
            .bind(login.as_str())
            .fetch_optional(conn)
            .await
            .map_err(c.fail(&format!("looking up `{login}`")))
    }

    /// Its name has Airlock's pattern and it carries the comment a
    /// temporary-login grant writes.
    async fn airlock_made(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<bool, ConnectorError> {
        Ok(request_id_of_login(login.as_str()).is_some() && Self::is_ours(c, conn, login).await?)
    }

    async fn revoke_roles(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
        oid: i64,
    ) -> Result<(), ConnectorError> {
        for role in Self::existing_roles(c, conn).await? {
            // Revoking a membership that does not exist only raises a warning.
            let sql = format!("REVOKE {} FROM {}", role.pg(), login.pg());
            exec(&mut *conn, &sql)
                .await
                .map_err(c.fail(&format!("revoking `{role}` from `{login}`")))?;
        }
        // PostgreSQL 16 and later revoke only the grants the current role
        // made; a membership someone else granted survives `REVOKE`, and a
        // revoke that leaves access in place must not report success.
        let remaining: Vec<(String, String)> = sqlx::query_as(
            "SELECT r.rolname::text, g.rolname::text \
             FROM pg_catalog.pg_auth_members am \
             JOIN pg_catalog.pg_roles r ON r.oid = am.roleid \
             LEFT JOIN pg_catalog.pg_roles g ON g.oid = am.grantor \
             WHERE am.member = $1::int8::oid AND r.rolname = ANY($2)",
        )
        .bind(oid)
        .bind(Self::role_names(c))
        .fetch_all(conn)
        .await
        .map_err(c.fail(&format!("checking the memberships of `{login}`")))?;
        if let Some((role, grantor)) = remaining.first() {
            return Err(ConnectorError::Permanent(format!(
                "`{login}` is still a member of `{role}` after the revoke: the membership was \
                 granted by `{grantor}`, and only that role (or a superuser) can revoke it"
            )));
        }
        Ok(())
    }

    /// Terminates the sessions of a login (by oid, which still finds them
    /// after the login is dropped), except the connector's own.
    async fn end_sessions(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
        oid: i64,
    ) -> Result<u64, ConnectorError> {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_catalog.pg_terminate_backend(pid) \
             FROM pg_catalog.pg_stat_activity \
             WHERE usesysid = $1::int8::oid AND pid <> pg_catalog.pg_backend_pid()) AS t",
        )
        .bind(oid)
        .fetch_one(conn)
        .await
        .map_err(c.fail(&format!("terminating the sessions of `{login}`")))?;
        Ok(u64::try_from(ended).unwrap_or(0))
    }

    async fn set_temporary_login(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
        exists: bool,
        verifier: &String,
        spec: &GrantSpec,
    ) -> Result<(), ConnectorError> {
        let valid_until = timestamp_literal(spec.expires_at)?;
        // Role statements cannot take bind parameters; every piece below is
        // a checked identifier, a base64 verifier or a checked timestamp.
        let verb = if exists { "ALTER" } else { "CREATE" };
        let sql = format!(
            "{verb} ROLE {} WITH LOGIN INHERIT PASSWORD '{verifier}' VALID UNTIL '{valid_until}'",
            login.pg()
        );
        // Roles are granted one statement at a time afterwards rather than
        // with `IN ROLE`, so a missing role is reported by name and the
        // statement carrying the verifier stays free of anything that can
        // fail.
        exec(conn, &sql).await.map_err(c.fail_quietly(&format!(
            "{} login `{login}`",
            if exists { "updating" } else { "creating" }
        )))
    }

    async fn after_temporary_grant(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
        spec: &GrantSpec,
    ) -> Result<(), ConnectorError> {
        let comment = plain_literal(&format!(
            "{COMMENT_PREFIX}{} for {}",
            spec.request_id, spec.user
        ))?;
        let sql = format!("COMMENT ON ROLE {} IS {comment}", login.pg());
        exec(&mut *conn, &sql)
            .await
            .map_err(c.fail(&format!("tagging `{login}`")))?;
        if let Some(level) = c.dialect().log_statement {
            let sql = format!("ALTER ROLE {} SET log_statement = '{level}'", login.pg());
            exec(&mut *conn, &sql)
                .await
                .map_err(c.fail(&format!("setting log_statement for `{login}`")))?;
        }
        Ok(())
    }

    async fn drop_temporary(c: &PostgresConnector, login: &Ident) -> Result<(), ConnectorError> {
        let mut tx = c.open(login).await?;
        let Some(oid) = Self::find(c, &mut tx, login).await? else {
            return Ok(());
        };
        if !Self::is_ours(c, &mut tx, login).await? {
            return Err(ConnectorError::Permanent(format!(
                "login `{login}` exists in postgres `{}` but was not created by airlock; refusing to drop it",
                c.target()
            )));
        }
        // Committed before the sessions are ended, so none can start between
        // the termination and the drop.
        let sql = format!("ALTER ROLE {} WITH NOLOGIN", login.pg());
        exec(&mut tx, &sql)
            .await
            .map_err(c.fail(&format!("disabling `{login}`")))?;
        c.finish(tx, "committing the revoke").await?;

        let mut conn = c.connect().await?;
        let ended = Self::end_sessions(c, &mut conn, login, oid).await?;
        let drop_role = format!("DROP ROLE IF EXISTS {}", login.pg());
        match exec(&mut conn, &drop_role).await {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("2BP01") => {
                // The login owns objects or holds privileges (in this
                // database): keep the objects under the admin account and
                // drop the rest, then try again. Objects in other databases
                // still block the drop; the login is already NOLOGIN and out
                // of the roles, so that leaves no access behind.
                for sql in [
                    format!("REASSIGN OWNED BY {} TO CURRENT_USER", login.pg()),
                    format!("DROP OWNED BY {}", login.pg()),
                    drop_role.clone(),
                ] {
                    exec(&mut conn, &sql)
                        .await
                        .map_err(c.fail(&format!("dropping `{login}` and what it owns")))?;
                }
            }
            Err(e) => return Err(c.fail(&format!("dropping `{login}`"))(e)),
        }
        // A session that authenticated just before NOLOGIN took effect.
        let late = Self::end_sessions(c, &mut conn, login, oid).await?;
        tracing::info!(login = %login, sessions_terminated = ended + late, "temporary login dropped");
        Ok(())
    }

    async fn own_principal(
        c: &PostgresConnector,
        conn: &mut PgConnection,
    ) -> Result<String, ConnectorError> {
        sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(conn)
            .await
            .map_err(c.fail("asking for the connector's own role"))
    }

    async fn members(
        c: &PostgresConnector,
        conn: &mut PgConnection,
    ) -> Result<Vec<Holding>, ConnectorError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT m.rolname::text, pg_catalog.shobj_description(m.oid, 'pg_authid') \
             FROM pg_catalog.pg_auth_members am \
             JOIN pg_catalog.pg_roles r ON r.oid = am.roleid \
             JOIN pg_catalog.pg_roles m ON m.oid = am.member \
             WHERE r.rolname = ANY($1)",
        )
        .bind(Self::role_names(c))
        .fetch_all(conn)
        .await
        .map_err(c.fail("listing role members"))?;
        Ok(rows
            .into_iter()
            .map(|(principal, comment)| Holding {
                request_id: comment
                    .as_deref()
                    .and_then(request_id_of_comment)
                    .or_else(|| request_id_of_login(&principal)),
                principal,
            })
            .collect())
    }

    /// From `pg_stat_activity`: a statement only while the session is
    /// `active` (otherwise `query` is the last one, finished); `since` is
    /// `state_change`. PostgreSQL hides all but the pid and the login of
    /// other logins' sessions (their state, statement, address and even
    /// kind: hence `backend_type IS NULL`) from an account without
    /// `pg_read_all_stats` (or superuser): that is an error rather than
    /// sessions that look idle.
    async fn sessions(
        c: &PostgresConnector,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<Vec<LiveSession>, ConnectorError> {
        type Row = (
            i64,
            String,
            bool,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT pid::int8, usename::text, state IS NULL, pg_catalog.host(client_addr), \
                    CASE WHEN state = 'active' THEN query END, \
                    (extract(epoch FROM COALESCE(state_change, backend_start)) * 1000)::int8, \
                    (extract(epoch FROM backend_start) * 1000)::int8 \
             FROM pg_catalog.pg_stat_activity \
             WHERE usename::text = $1 \
               AND (backend_type = 'client backend' OR backend_type IS NULL) \
               AND pid <> pg_catalog.pg_backend_pid() \
             ORDER BY backend_start, pid",
        )
        .bind(login.as_str())
        .fetch_all(conn)
        .await
        .map_err(c.fail(&format!("listing the sessions of `{login}`")))?;
        let hidden = || {
            ConnectorError::Permanent(format!(
                "the connector's role may not see the sessions of `{login}` in postgres `{}`: \
                 grant it pg_read_all_stats",
                c.target()
            ))
        };
        rows.into_iter()
            .map(
                |(pid, login, hidden_state, client, statement, since, connected_at)| match (
                    hidden_state,
                    since,
                    connected_at,
                ) {
                    (false, Some(since), Some(connected_at)) => Ok(LiveSession {
                        id: u64::try_from(pid).unwrap_or(0),
                        login,
                        client,
                        statement,
                        since: Timestamp::from_unix_millis(since),
                        connected_at: Some(Timestamp::from_unix_millis(connected_at)),
                    }),
                    _ => Err(hidden()),
                },
            )
            .collect()
    }

    async fn check_admin(
        c: &PostgresConnector,
        conn: &mut PgConnection,
    ) -> Result<(), ConnectorError> {
        let (admin, can_grant): (String, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper OR rolcreaterole FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
        )
        .fetch_one(conn)
        .await
        .map_err(c.fail("checking the connector's own role"))?;
        if !can_grant {
            return Err(ConnectorError::Permanent(format!(
                "`{admin}` in postgres `{}` has neither SUPERUSER nor CREATEROLE, so it cannot grant roles",
                c.target()
            )));
        }
        Ok(())
    }

    async fn existing_roles(
        c: &PostgresConnector,
        conn: &mut PgConnection,
    ) -> Result<Vec<Ident>, ConnectorError> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
        )
        .bind(Self::role_names(c))
        .fetch_all(conn)
        .await
        .map_err(c.fail("looking up the managed roles"))?;
        Ok(c.roles()
            .iter()
            .filter(|r| found.iter().any(|f| f == r.as_str()))
            .cloned()
            .collect())
    }
}

/// Runs one statement with the simple query protocol (see
/// [`Dialect::exec`]). (`Executor::execute` rather than `RawSql::execute`,
/// whose future is not `Send` for every lifetime, which `async_trait`
/// requires.)
async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(sql)).await.map(|_| ())
}

/// The request id in a comment this connector wrote.
fn request_id_of_comment(comment: &str) -> Option<RequestId> {
    let rest = comment.strip_prefix(COMMENT_PREFIX)?;
    RequestId::parse(rest.split(' ').next()?).ok()
}

/// SQLSTATEs that say "not now" rather than "no": connection trouble,
/// serialization failures and deadlocks, lock timeouts, a server that is
/// shutting down, starting up or out of resources, a cancelled statement.
fn is_retryable_sqlstate(code: &str) -> bool {
    ["08", "53", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
        )
}

/// A short explanation of common SQLSTATEs, used where the server's own
/// message is left out.
fn sqlstate_hint(code: &str) -> &'static str {
    match code {
        "42501" => ": permission denied",
        "42704" => ": object does not exist",
        "42710" => ": object already exists",
        "42601" => ": syntax error",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_split_into_retryable_and_permanent() {
        for code in [
            "08006", "08001", "40001", "40P01", "53300", "57P01", "57P03", "55P03",
        ] {
            assert!(is_retryable_sqlstate(code), "{code}");
        }
        for code in ["42501", "42704", "42601", "2BP01", "28P01", "XX000"] {
            assert!(!is_retryable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn comments_yield_their_request_id() {
        assert_eq!(
            request_id_of_comment("airlock request rabc for alice"),
            RequestId::parse("rabc").ok()
        );
        assert_eq!(request_id_of_comment("made by hand"), None);
    }

    #[test]
    fn debug_output_hides_the_url_password() {
        let settings = PostgresSettings::new(
            "postgres://admin:hunter2@db.example:5433/app",
            vec!["app_ro".to_owned()],
            Mode::Grant,
        );
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.example:5433/app"), "{shown}");
        let connector = PostgresConnector::new(settings).unwrap();
        assert!(!format!("{connector:?}").contains("hunter2"));
    }
}
