//! A connector that grants PostgreSQL roles. It exists because "a role on a
//! production database for two hours" is the most common thing people ask
//! Airlock for, and doing it through a shell script loses the typed errors,
//! the reconciliation and the session termination done here.
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
//! Clients should connect with `application_name=airlock:<request_id>` so a
//! DBA can tell sessions apart in `pg_stat_activity`; revoke does not rely on
//! it and terminates sessions by login name.
//!
//! Names go into SQL only as validated, quoted [`Ident`]s; values that can be
//! bound are bound. The password is never sent: the statement carries its
//! SCRAM verifier (see [`scram_sha256_verifier`]). Neither appears in logs or
//! errors, and sqlx's own statement logging is switched off for this pool.

mod scram;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{RequestId, UserId};
use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgConnection};
use tokio::sync::OnceCell;
use tracing::Instrument;

pub use crate::sql::Mode;
use crate::sql::{
    new_password, parse_roles, plain_literal, request_id_of_login, temp_login, timestamp_literal,
    transport_error, Ident, LoginTemplate,
};
use crate::{Action, Connector, ConnectorError, Credential, GrantSpec, Granted, Holding};
pub use scram::{scram_sha256_verifier, SCRAM_ITERATIONS};

/// Values PostgreSQL accepts for `log_statement`.
const LOG_STATEMENT_VALUES: [&str; 4] = ["none", "ddl", "mod", "all"];

/// Most connections the connector keeps to one target: calls are short and
/// the engine runs few at once, so more would only take slots from the
/// target's own clients.
const MAX_CONNECTIONS: u32 = 4;

/// How long an unused connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
        let target = PgConnectOptions::from_str(&self.url)
            .map(|o| describe(&o))
            .unwrap_or_else(|_| "[invalid url]".to_owned());
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
#[derive(Clone)]
pub struct PostgresConnector {
    /// Created on first use: sqlx pools start background tasks, which need
    /// the Tokio runtime that `new` may be called outside of.
    pool: Arc<OnceCell<PgPool>>,
    options: PgConnectOptions,
    /// `host:port/database`, for messages: never the URL, which may hold a
    /// password.
    target: String,
    roles: Vec<Ident>,
    mode: Mode,
    template: LoginTemplate,
    terminate_sessions: bool,
    log_statement: Option<&'static str>,
    timeout: Duration,
}

impl fmt::Debug for PostgresConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConnector")
            .field("target", &self.target)
            .field("roles", &self.roles)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

impl PostgresConnector {
    /// Checks every name and setting; nothing connects until the first call.
    /// All failures are `Permanent`: they are configuration mistakes.
    pub fn new(settings: PostgresSettings) -> Result<Self, ConnectorError> {
        let roles = parse_roles(&settings.roles)?;
        let template = LoginTemplate::parse(&settings.login_template)?;
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
        if settings.timeout.is_zero() {
            return Err(ConnectorError::Permanent(
                "postgres timeout must be greater than zero".to_owned(),
            ));
        }
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| ConnectorError::Permanent(format!("postgres url is not valid: {}", e)))?
            .application_name("airlock")
            // sqlx logs statement texts; some carry a password verifier.
            .disable_statement_logging();
        let target = describe(&options);
        Ok(Self {
            pool: Arc::new(OnceCell::new()),
            options,
            target,
            roles,
            mode: settings.mode,
            template,
            terminate_sessions: settings.terminate_sessions,
            log_statement,
            timeout: settings.timeout,
        })
    }

    /// The pool, connecting lazily: a target that is down when Airlock
    /// starts delays grants, not startup.
    async fn pool(&self) -> &PgPool {
        self.pool
            .get_or_init(|| async {
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(self.timeout)
                    // Grants are rare; don't hold the target's connection
                    // slots between them.
                    .idle_timeout(IDLE_TIMEOUT)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_owned()).collect()
    }

    /// Runs one call within the timeout, in a span named after it.
    async fn bounded<T>(
        &self,
        action: &'static str,
        request_id: Option<&RequestId>,
        call: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        let span = tracing::info_span!(
            "postgres_connector",
            action,
            request_id = request_id.map(RequestId::as_str),
            target = %self.target,
        );
        let outcome = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await;
        let result = outcome.unwrap_or_else(|_elapsed| {
            Err(ConnectorError::Retryable(format!(
                "postgres `{}` did not finish {action} within {}",
                self.target,
                humantime::format_duration(self.timeout)
            )))
        });
        if let Err(e) = &result {
            span.in_scope(
                || tracing::warn!(error = %e, retryable = e.is_retryable(), "call failed"),
            );
        }
        result
    }

    /// Maps a sqlx error for `doing` (e.g. "granting `r` to `l`").
    fn fail(&self, doing: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let doing = doing.to_owned();
        move |e| classify(&self.target, &doing, e, false)
    }

    /// Like [`Self::fail`] for a statement that carries a secret: the
    /// server's message is left out in case it quotes the statement.
    fn fail_quietly(&self, doing: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let doing = doing.to_owned();
        move |e| classify(&self.target, &doing, e, true)
    }

    async fn lock(&self, conn: &mut PgConnection, login: &Ident) -> Result<(), ConnectorError> {
        // Serializes grant and revoke of one login across Airlock replicas,
        // so an existence check and the statement it decides stay paired.
        sqlx::query("SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(login.as_str())
            .execute(conn)
            .await
            .map_err(self.fail(&format!("locking `{login}`")))?;
        Ok(())
    }

    /// The login's oid, if it exists.
    async fn login_oid(
        &self,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<Option<i64>, ConnectorError> {
        sqlx::query_scalar::<_, i64>("SELECT oid::int8 FROM pg_catalog.pg_roles WHERE rolname = $1")
            .bind(login.as_str())
            .fetch_optional(conn)
            .await
            .map_err(self.fail(&format!("looking up `{login}`")))
    }

    /// The managed roles that exist; a role that does not cannot be held.
    async fn existing_roles(&self, conn: &mut PgConnection) -> Result<Vec<Ident>, ConnectorError> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
        )
        .bind(self.role_names())
        .fetch_all(conn)
        .await
        .map_err(self.fail("looking up the managed roles"))?;
        Ok(self
            .roles
            .iter()
            .filter(|r| found.iter().any(|f| f == r.as_str()))
            .cloned()
            .collect())
    }

    async fn grant_roles(
        &self,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<(), ConnectorError> {
        for role in &self.roles {
            // Granting a membership that exists only raises a notice.
            let sql = format!("GRANT {} TO {}", role.pg(), login.pg());
            exec(conn, &sql)
                .await
                .map_err(self.fail(&format!("granting `{role}` to `{login}`")))?;
        }
        Ok(())
    }

    /// Terminates the sessions of a login (by oid, which still finds them
    /// after the login is dropped), except the connector's own.
    async fn terminate(
        &self,
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
        .map_err(self.fail(&format!("terminating the sessions of `{login}`")))?;
        Ok(u64::try_from(ended).unwrap_or(0))
    }

    async fn grant_membership(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let login = self.template.expand(&spec.user)?;
        let mut tx = self
            .pool()
            .await
            .begin()
            .await
            .map_err(self.fail("starting a transaction"))?;
        self.lock(&mut tx, &login).await?;
        if self.login_oid(&mut tx, &login).await?.is_none() {
            return Err(ConnectorError::Permanent(format!(
                "login `{login}` for user `{}` does not exist in postgres `{}`",
                spec.user, self.target
            )));
        }
        self.grant_roles(&mut tx, &login).await?;
        tx.commit()
            .await
            .map_err(self.fail("committing the grant"))?;
        tracing::info!(login = %login, "granted roles");
        Ok(Granted::default())
    }

    async fn revoke_membership(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let login = self.template.expand(&spec.user)?;
        self.revoke_roles_from(&login).await
    }

    /// Revokes every managed role from `login` (an absent login or
    /// membership is success), checks that none is left, then ends the
    /// login's sessions if `terminate_sessions` is set.
    async fn revoke_roles_from(&self, login: &Ident) -> Result<(), ConnectorError> {
        let mut tx = self
            .pool()
            .await
            .begin()
            .await
            .map_err(self.fail("starting a transaction"))?;
        self.lock(&mut tx, login).await?;
        let Some(oid) = self.login_oid(&mut tx, login).await? else {
            // No login, no membership: the revoke has nothing left to do.
            return Ok(());
        };
        for role in self.existing_roles(&mut tx).await? {
            // Revoking a membership that does not exist only raises a warning.
            let sql = format!("REVOKE {} FROM {}", role.pg(), login.pg());
            exec(&mut tx, &sql)
                .await
                .map_err(self.fail(&format!("revoking `{role}` from `{login}`")))?;
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
        .bind(self.role_names())
        .fetch_all(&mut *tx)
        .await
        .map_err(self.fail(&format!("checking the memberships of `{login}`")))?;
        if let Some((role, grantor)) = remaining.first() {
            return Err(ConnectorError::Permanent(format!(
                "`{login}` is still a member of `{role}` after the revoke: the membership was \
                 granted by `{grantor}`, and only that role (or a superuser) can revoke it"
            )));
        }
        tx.commit()
            .await
            .map_err(self.fail("committing the revoke"))?;
        if self.terminate_sessions {
            let mut conn = self
                .pool()
                .await
                .acquire()
                .await
                .map_err(self.fail("connecting"))?;
            let ended = self.terminate(&mut conn, login, oid).await?;
            tracing::info!(login = %login, sessions_terminated = ended, "revoked roles");
        } else {
            tracing::info!(login = %login, "revoked roles");
        }
        Ok(())
    }

    async fn grant_temporary(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let login = temp_login(&spec.request_id)?;
        let valid_until = timestamp_literal(spec.expires_at)?;
        let comment = plain_literal(&format!(
            "{COMMENT_PREFIX}{} for {}",
            spec.request_id, spec.user
        ))?;
        // Minted before any await: the thread-local generator is not `Send`.
        let password = new_password();
        let salt: [u8; 16] = rand::rng().random();
        let verifier = scram_sha256_verifier(&password, &salt, SCRAM_ITERATIONS);

        let mut tx = self
            .pool()
            .await
            .begin()
            .await
            .map_err(self.fail("starting a transaction"))?;
        self.lock(&mut tx, &login).await?;
        let exists = self.login_oid(&mut tx, &login).await?.is_some();
        if exists {
            self.check_ours(&mut tx, &login).await?;
        }
        // Role statements cannot take bind parameters; every piece below is
        // a checked identifier, a base64 verifier or a checked timestamp.
        let verb = if exists { "ALTER" } else { "CREATE" };
        let sql = format!(
            "{verb} ROLE {} WITH LOGIN INHERIT PASSWORD '{verifier}' VALID UNTIL '{valid_until}'",
            login.pg()
        );
        exec(&mut tx, &sql)
            .await
            .map_err(self.fail_quietly(&format!(
                "{} login `{login}`",
                if exists { "updating" } else { "creating" }
            )))?;
        // Roles are granted one statement at a time rather than with
        // `IN ROLE`, so a missing role is reported by name and the statement
        // carrying the verifier stays free of anything that can fail.
        self.grant_roles(&mut tx, &login).await?;
        let sql = format!("COMMENT ON ROLE {} IS {comment}", login.pg());
        exec(&mut tx, &sql)
            .await
            .map_err(self.fail(&format!("tagging `{login}`")))?;
        if let Some(level) = self.log_statement {
            let sql = format!("ALTER ROLE {} SET log_statement = '{level}'", login.pg());
            exec(&mut tx, &sql)
                .await
                .map_err(self.fail(&format!("setting log_statement for `{login}`")))?;
        }
        tx.commit()
            .await
            .map_err(self.fail("committing the grant"))?;
        tracing::info!(login = %login, valid_until = %valid_until, reused = exists, "temporary login ready");
        Ok(Granted {
            credential: Some(Credential::new(login.as_str().to_owned(), password)),
            certificate: None,
        })
    }

    /// Refuses to take over a role that has Airlock's name pattern but not
    /// its tag: it was made by someone else, and resetting its password would
    /// hand their access to the requester.
    async fn check_ours(
        &self,
        conn: &mut PgConnection,
        login: &Ident,
    ) -> Result<(), ConnectorError> {
        if self.is_ours(conn, login).await? {
            Ok(())
        } else {
            Err(ConnectorError::Permanent(format!(
                "role `{login}` exists in postgres `{}` but was not created by airlock; refusing to reuse it",
                self.target
            )))
        }
    }

    /// Whether `login` exists and carries the comment a temporary-login
    /// grant writes.
    async fn is_ours(
        &self,
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
        .map_err(self.fail(&format!("reading the comment of `{login}`")))?
        .flatten();
        Ok(comment.is_some_and(|c| c.starts_with(COMMENT_PREFIX)))
    }

    async fn revoke_temporary(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let login = temp_login(&spec.request_id)?;
        self.drop_temporary(&login).await
    }

    /// Disables a login Airlock made, ends its sessions and drops it.
    async fn drop_temporary(&self, login: &Ident) -> Result<(), ConnectorError> {
        let mut tx = self
            .pool()
            .await
            .begin()
            .await
            .map_err(self.fail("starting a transaction"))?;
        self.lock(&mut tx, login).await?;
        let Some(oid) = self.login_oid(&mut tx, login).await? else {
            return Ok(());
        };
        self.check_ours(&mut tx, login).await?;
        // Committed before the sessions are ended, so none can start between
        // the termination and the drop.
        let sql = format!("ALTER ROLE {} WITH NOLOGIN", login.pg());
        exec(&mut tx, &sql)
            .await
            .map_err(self.fail(&format!("disabling `{login}`")))?;
        tx.commit()
            .await
            .map_err(self.fail("committing the revoke"))?;

        let mut conn = self
            .pool()
            .await
            .acquire()
            .await
            .map_err(self.fail("connecting"))?;
        let ended = self.terminate(&mut conn, login, oid).await?;
        let drop_role = format!("DROP ROLE IF EXISTS {}", login.pg());
        match exec(&mut conn, &drop_role).await {
            Ok(_) => {}
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
                        .map_err(self.fail(&format!("dropping `{login}` and what it owns")))?;
                }
            }
            Err(e) => return Err(self.fail(&format!("dropping `{login}`"))(e)),
        }
        // A session that authenticated just before NOLOGIN took effect.
        let late = self.terminate(&mut conn, login, oid).await?;
        tracing::info!(login = %login, sessions_terminated = ended + late, "temporary login dropped");
        Ok(())
    }

    /// Takes the managed access away from a holder: a login Airlock made
    /// for a request (its name and comment say so) is dropped as its revoke
    /// would; any other holder has the managed roles revoked (and its
    /// sessions ended if `terminate_sessions` is set), whichever mode the
    /// connector is in: a person's own login is never dropped.
    async fn remove(&self, holding: &Holding) -> Result<(), ConnectorError> {
        let login = Ident::parse("holder", &holding.principal)?;
        let mut conn = self
            .pool()
            .await
            .acquire()
            .await
            .map_err(self.fail("connecting"))?;
        let me: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(self.fail("asking for the connector's own role"))?;
        if me == login.as_str() {
            return Err(ConnectorError::Permanent(format!(
                "`{login}` is the connector's own role in postgres `{}`; refusing to remove it",
                self.target
            )));
        }
        let airlock_made = request_id_of_login(login.as_str()).is_some()
            && self.is_ours(&mut conn, &login).await?;
        drop(conn);
        if airlock_made {
            self.drop_temporary(&login).await
        } else {
            self.revoke_roles_from(&login).await
        }
    }

    async fn list_holders(&self) -> Result<Vec<Holding>, ConnectorError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT m.rolname::text, pg_catalog.shobj_description(m.oid, 'pg_authid') \
             FROM pg_catalog.pg_auth_members am \
             JOIN pg_catalog.pg_roles r ON r.oid = am.roleid \
             JOIN pg_catalog.pg_roles m ON m.oid = am.member \
             WHERE r.rolname = ANY($1)",
        )
        .bind(self.role_names())
        .fetch_all(self.pool().await)
        .await
        .map_err(self.fail("listing role members"))?;
        // A login in several managed roles is one holder.
        let mut holders = BTreeMap::new();
        for (principal, comment) in rows {
            let request_id = comment
                .as_deref()
                .and_then(request_id_of_comment)
                .or_else(|| request_id_of_login(&principal));
            holders.insert(
                principal.clone(),
                Holding {
                    principal,
                    request_id,
                },
            );
        }
        Ok(holders.into_values().collect())
    }

    async fn check_health(&self) -> Result<(), ConnectorError> {
        let mut conn = self
            .pool()
            .await
            .acquire()
            .await
            .map_err(self.fail("connecting"))?;
        let (admin, can_grant): (String, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper OR rolcreaterole FROM pg_catalog.pg_roles \
             WHERE rolname = current_user",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(self.fail("checking the connector's own role"))?;
        if !can_grant {
            return Err(ConnectorError::Permanent(format!(
                "`{admin}` in postgres `{}` has neither SUPERUSER nor CREATEROLE, so it cannot grant roles",
                self.target
            )));
        }
        let existing = self.existing_roles(&mut conn).await?;
        if let Some(missing) = self.roles.iter().find(|r| !existing.contains(r)) {
            return Err(ConnectorError::Permanent(format!(
                "role `{missing}` does not exist in postgres `{}`",
                self.target
            )));
        }
        Ok(())
    }
}

/// Runs one statement with the simple query protocol: no prepared
/// statement is cached, so a statement carrying a verifier leaves nothing
/// behind in the connection. (`Executor::execute` rather than
/// `RawSql::execute`, whose future is not `Send` for every lifetime, which
/// `async_trait` requires.)
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

fn classify(target: &str, doing: &str, e: sqlx::Error, quiet: bool) -> ConnectorError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = if quiet {
                format!(
                    "{doing} failed in postgres `{target}` (sqlstate {code}{})",
                    sqlstate_hint(&code)
                )
            } else {
                format!(
                    "{doing} failed in postgres `{target}`: {} (sqlstate {code})",
                    db.message()
                )
            };
            if is_retryable_sqlstate(&code) {
                ConnectorError::Retryable(message)
            } else {
                ConnectorError::Permanent(message)
            }
        }
        other => transport_error("postgres", target, doing, other),
    }
}

#[async_trait::async_trait]
impl Connector for PostgresConnector {
    async fn grant(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let call = async {
            match self.mode {
                Mode::Grant => self.grant_membership(spec).await,
                Mode::TemporaryLogin => self.grant_temporary(spec).await,
            }
        };
        self.bounded(Action::Grant.as_str(), Some(&spec.request_id), call)
            .await
    }

    async fn revoke(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let call = async {
            match self.mode {
                Mode::Grant => self.revoke_membership(spec).await,
                Mode::TemporaryLogin => self.revoke_temporary(spec).await,
            }
        };
        self.bounded(Action::Revoke.as_str(), Some(&spec.request_id), call)
            .await
    }

    async fn health(&self) -> Result<(), ConnectorError> {
        self.bounded("health", None, self.check_health()).await
    }

    fn call_timeout(&self) -> Duration {
        self.timeout
    }

    async fn holders(&self) -> Result<Option<Vec<Holding>>, ConnectorError> {
        self.bounded("holders", None, self.list_holders())
            .await
            .map(Some)
    }

    async fn remove_holder(&self, holding: &Holding) -> Result<(), ConnectorError> {
        self.bounded(
            "remove_holder",
            holding.request_id.as_ref(),
            self.remove(holding),
        )
        .await
    }

    fn principal_for(&self, user: &UserId, request_id: Option<&RequestId>) -> Option<String> {
        let login = match self.mode {
            Mode::Grant => self.template.expand(user).ok(),
            Mode::TemporaryLogin => request_id.and_then(|id| temp_login(id).ok()),
        };
        login.map(|l| l.as_str().to_owned())
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
