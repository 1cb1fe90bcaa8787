//! A connector that grants MariaDB roles, the MariaDB counterpart of
//! [`crate::postgres`]: the same two modes, the same naming rules, the same
//! guarantees, with one difference that matters when Airlock is down.
//!
//! - **Grant**: `GRANT role TO 'login'@'host'` for the user's existing
//!   account; if the account has no default role, the first managed role
//!   becomes its default so new sessions have it without `SET ROLE`.
//!   Revoke is `REVOKE role FROM ...` (and `SET DEFAULT ROLE NONE` if the
//!   default was a managed role), then, if configured, the account's live
//!   connections are killed: MariaDB leaves an enabled role in place for
//!   sessions that already have it.
//! - **Temporary login**: `CREATE USER 'airlock_<request_id>'@'host'
//!   IDENTIFIED BY '<random>'`, the roles granted, the first one its default
//!   role (MariaDB has one default role per account; any others need
//!   `SET ROLE`). Granting again resets the password. Revoke drops the user,
//!   then kills its connections (a dropped user's sessions live on).
//!
//! MariaDB cannot make an account expire at a point in time (password
//! expiry only forces a password change), so **nothing in the target ends a
//! grant: Airlock's revoke does**. If Airlock is down past the expiry, the
//! access stays until it is back.
//!
//! The temporary password is part of the `CREATE USER` text: MariaDB has no
//! way to bind it. It is never logged by Airlock (sqlx's statement logging is
//! off for this pool, and errors from that statement leave out the server's
//! message); on the target, keep the general query log off.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{RequestId, UserId};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Executor, MySqlConnection};
use tokio::sync::OnceCell;
use tracing::Instrument;

pub use crate::sql::Mode;
use crate::sql::{
    new_password, parse_roles, request_id_of_login, temp_login, transport_error, Ident,
    LoginTemplate,
};
use crate::{Action, Connector, ConnectorError, Credential, GrantSpec, Granted, Holding};

/// The account host used unless configured: any client address.
pub const DEFAULT_HOST: &str = "%";

/// MariaDB's limit on the host part of an account name.
const MAX_HOST_LEN: usize = 255;

const MAX_CONNECTIONS: u32 = 4;

/// How long an unused connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

// MariaDB error numbers this connector treats specially.
const ER_NO_SUCH_THREAD: u16 = 1094;
const ER_CANNOT_USER: u16 = 1396;
const ER_CANNOT_REVOKE_ROLE: u16 = 1962;

/// Configuration for a [`MariaDbConnector`].
#[derive(Clone)]
pub struct MariaDbSettings {
    /// `mysql://user[:password]@host:port[/database]` of an account that can
    /// create users, grant the roles (`WITH ADMIN OPTION` or the
    /// `CREATE USER` privilege) and kill connections (`CONNECTION ADMIN`).
    pub url: String,
    /// The roles a grant confers; they must exist in the target.
    pub roles: Vec<String>,
    pub mode: Mode,
    /// Grant mode: the user part of an Airlock user's existing account,
    /// `{user}` replaced by the user id. Checked in temporary-login mode too,
    /// but not used there.
    pub login_template: String,
    /// The host part of every account this connector grants to or creates
    /// ([`DEFAULT_HOST`] unless set): `%`, a host name, an address or a
    /// pattern such as `10.0.%`.
    pub host: String,
    /// Grant mode: kill the login's connections after a revoke. Temporary
    /// users' connections are always killed.
    pub terminate_sessions: bool,
    /// Upper bound on one call, including waiting for a connection.
    pub timeout: Duration,
}

impl MariaDbSettings {
    /// Settings with the usual defaults: template `{user}`, host `%`,
    /// connections killed on revoke, a 10 s timeout.
    pub fn new(url: impl Into<String>, roles: Vec<String>, mode: Mode) -> Self {
        Self {
            url: url.into(),
            roles,
            mode,
            login_template: crate::sql::USER_PLACEHOLDER.to_owned(),
            host: DEFAULT_HOST.to_owned(),
            terminate_sessions: true,
            timeout: Duration::from_secs(10),
        }
    }
}

// By hand: the URL may carry the admin password.
impl fmt::Debug for MariaDbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = MySqlConnectOptions::from_str(&self.url)
            .map(|o| describe(&o))
            .unwrap_or_else(|_| "[invalid url]".to_owned());
        f.debug_struct("MariaDbSettings")
            .field("url", &target)
            .field("roles", &self.roles)
            .field("mode", &self.mode)
            .field("login_template", &self.login_template)
            .field("host", &self.host)
            .field("terminate_sessions", &self.terminate_sessions)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `'user'@'host'`, or `` `role` `` for a role (an empty host). `host` must
/// have passed [`check_host`].
fn account_at(user: &Ident, host: &str) -> String {
    if host.is_empty() {
        user.backticked()
    } else {
        format!("{}@'{host}'", user.single_quoted())
    }
}

fn describe(options: &MySqlConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Grants MariaDB roles, to existing accounts or to per-request users.
#[derive(Clone)]
pub struct MariaDbConnector {
    /// Created on first use: sqlx pools start background tasks, which need
    /// the Tokio runtime that `new` may be called outside of.
    pool: Arc<OnceCell<MySqlPool>>,
    options: MySqlConnectOptions,
    /// `host:port`, for messages: never the URL, which may hold a password.
    target: String,
    roles: Vec<Ident>,
    mode: Mode,
    template: LoginTemplate,
    /// Checked by [`check_host`], lowercase (MariaDB stores it so).
    host: String,
    terminate_sessions: bool,
    timeout: Duration,
}

impl fmt::Debug for MariaDbConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MariaDbConnector")
            .field("target", &self.target)
            .field("roles", &self.roles)
            .field("mode", &self.mode)
            .field("host", &self.host)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Checks the host part of an account name: letters, digits and `.-_%:/`
/// (names, addresses, wildcards, netmasks), nothing that needs escaping in a
/// single-quoted string.
fn check_host(host: &str) -> Result<String, ConnectorError> {
    let bad = |why: &str| {
        ConnectorError::Permanent(format!("account host `{host}` cannot be used: {why}"))
    };
    if host.is_empty() {
        return Err(bad("it is empty"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(bad(&format!("it is longer than {MAX_HOST_LEN} bytes")));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%' | ':' | '/')))
    {
        return Err(bad(&format!(
            "it contains {c:?}; only letters, digits, `.`, `-`, `_`, `%`, `:` and `/` are allowed"
        )));
    }
    Ok(host.to_ascii_lowercase())
}

impl MariaDbConnector {
    /// Checks every name and setting; nothing connects until the first call.
    /// All failures are `Permanent`: they are configuration mistakes.
    pub fn new(settings: MariaDbSettings) -> Result<Self, ConnectorError> {
        let roles = parse_roles(&settings.roles)?;
        let template = LoginTemplate::parse(&settings.login_template)?;
        let host = check_host(&settings.host)?;
        if settings.timeout.is_zero() {
            return Err(ConnectorError::Permanent(
                "mariadb timeout must be greater than zero".to_owned(),
            ));
        }
        let options = MySqlConnectOptions::from_str(&settings.url)
            .map_err(|e| ConnectorError::Permanent(format!("mariadb url is not valid: {e}")))?
            // sqlx logs statement texts; `CREATE USER` carries a password.
            .disable_statement_logging();
        Ok(Self {
            pool: Arc::new(OnceCell::new()),
            target: describe(&options),
            options,
            roles,
            mode: settings.mode,
            template,
            host,
            terminate_sessions: settings.terminate_sessions,
            timeout: settings.timeout,
        })
    }

    async fn pool(&self) -> &MySqlPool {
        self.pool
            .get_or_init(|| async {
                MySqlPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(self.timeout)
                    .idle_timeout(IDLE_TIMEOUT)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    async fn connect(&self) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, ConnectorError> {
        self.pool()
            .await
            .acquire()
            .await
            .map_err(self.fail("connecting"))
    }

    /// `'user'@'host'` with the configured host.
    fn account(&self, user: &Ident) -> String {
        account_at(user, &self.host)
    }

    /// `?, ?, ?`: one placeholder per managed role, each then bound.
    fn role_placeholders(&self) -> String {
        vec!["?"; self.roles.len()].join(", ")
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        request_id: Option<&RequestId>,
        call: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        let span = tracing::info_span!(
            "mariadb_connector",
            action,
            request_id = request_id.map(RequestId::as_str),
            target = %self.target,
        );
        let outcome = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await;
        let result = outcome.unwrap_or_else(|_elapsed| {
            Err(ConnectorError::Retryable(format!(
                "mariadb `{}` did not finish {action} within {}",
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

    fn fail(&self, doing: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let doing = doing.to_owned();
        move |e| classify(&self.target, &doing, e, false)
    }

    /// For a statement that carries a password: MariaDB's syntax errors
    /// quote the statement, so its message is left out.
    fn fail_quietly(&self, doing: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let doing = doing.to_owned();
        move |e| classify(&self.target, &doing, e, true)
    }

    /// Whether the account `user`@`host` (a role, with an empty host) exists.
    async fn account_exists(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
        host: &str,
    ) -> Result<bool, ConnectorError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?")
                .bind(user.as_str())
                .bind(host)
                .fetch_one(conn)
                .await
                .map_err(self.fail(&format!("looking up `{}`", account_at(user, host))))?;
        Ok(count > 0)
    }

    async fn default_role(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
        host: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let role: Option<Option<String>> = sqlx::query_scalar(
            "SELECT CAST(default_role AS CHAR) FROM mysql.user WHERE User = ? AND Host = ?",
        )
        .bind(user.as_str())
        .bind(host)
        .fetch_optional(conn)
        .await
        .map_err(self.fail(&format!(
            "reading the default role of `{}`",
            account_at(user, host)
        )))?;
        Ok(role.flatten().filter(|r| !r.is_empty()))
    }

    async fn grant_roles(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
    ) -> Result<(), ConnectorError> {
        let account = self.account(user);
        for role in &self.roles {
            // Granting a role the account has is a no-op in MariaDB.
            let sql = format!("GRANT {} TO {account}", role.backticked());
            exec(conn, &sql)
                .await
                .map_err(self.fail(&format!("granting `{role}` to `{account}`")))?;
        }
        Ok(())
    }

    async fn set_default_role(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
        host: &str,
        role: Option<&Ident>,
    ) -> Result<(), ConnectorError> {
        let account = account_at(user, host);
        let target = role.map_or_else(|| "NONE".to_owned(), Ident::backticked);
        let sql = format!("SET DEFAULT ROLE {target} FOR {account}");
        exec(conn, &sql)
            .await
            .map_err(self.fail(&format!("setting the default role of `{account}`")))
    }

    /// Kills every connection of `user` except the connector's own; returns
    /// how many. A connection that ended meanwhile is not an error.
    async fn kill_sessions(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
    ) -> Result<u64, ConnectorError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE USER = ? AND ID <> CONNECTION_ID()",
        )
        .bind(user.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(self.fail(&format!("listing the connections of `{user}`")))?;
        let mut killed = 0;
        for id in ids {
            // `id` is an integer from the server; nothing else is formatted.
            match exec(conn, &format!("KILL CONNECTION {id}")).await {
                Ok(()) => killed += 1,
                Err(e) if error_number(&e) == Some(ER_NO_SUCH_THREAD) => {}
                Err(e) => {
                    return Err(self.fail(&format!("killing connection {id} of `{user}`"))(
                        e,
                    ))
                }
            }
        }
        Ok(killed)
    }

    async fn grant_membership(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let user = self.template.expand(&spec.user)?;
        let mut conn = self.connect().await?;
        if !self.account_exists(&mut conn, &user, &self.host).await? {
            return Err(ConnectorError::Permanent(format!(
                "account `{}` for user `{}` does not exist in mariadb `{}`",
                self.account(&user),
                spec.user,
                self.target
            )));
        }
        self.grant_roles(&mut conn, &user).await?;
        // Leave an account's own choice of default role alone.
        if self
            .default_role(&mut conn, &user, &self.host)
            .await?
            .is_none()
        {
            self.set_default_role(&mut conn, &user, &self.host, self.roles.first())
                .await?;
        }
        tracing::info!(account = %self.account(&user), "granted roles");
        Ok(Granted::default())
    }

    async fn revoke_membership(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let user = self.template.expand(&spec.user)?;
        let mut conn = self.connect().await?;
        self.revoke_roles_from(&mut conn, &user, &self.host).await
    }

    /// Revokes every managed role `user`@`host` holds (a role, with an
    /// empty host); an absent account or membership is success. Then, for
    /// an account, clears a managed default role and kills the user's
    /// connections if `terminate_sessions` is set.
    async fn revoke_roles_from(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
        host: &str,
    ) -> Result<(), ConnectorError> {
        let account = account_at(user, host);
        if !self.account_exists(conn, user, host).await? {
            return Ok(());
        }
        let sql = format!(
            "SELECT CAST(Role AS CHAR) FROM mysql.roles_mapping \
             WHERE User = ? AND Host = ? AND Role IN ({})",
            self.role_placeholders()
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql)
            .bind(user.as_str())
            .bind(host);
        for role in &self.roles {
            query = query.bind(role.as_str());
        }
        let held = query
            .fetch_all(&mut *conn)
            .await
            .map_err(self.fail(&format!("listing the roles of `{account}`")))?;
        for role in self
            .roles
            .iter()
            .filter(|r| held.iter().any(|h| h == r.as_str()))
        {
            // Unlike PostgreSQL, MariaDB refuses to revoke a role that is not
            // granted; a concurrent revoke may have got there first.
            let sql = format!("REVOKE {} FROM {account}", role.backticked());
            match exec(conn, &sql).await {
                Ok(()) => {}
                Err(e) if error_number(&e) == Some(ER_CANNOT_REVOKE_ROLE) => {}
                Err(e) => return Err(self.fail(&format!("revoking `{role}` from `{account}`"))(e)),
            }
        }
        if host.is_empty() {
            // A role: no default role, no connections of its own.
            tracing::info!(role = %user, "revoked roles");
            return Ok(());
        }
        if let Some(default) = self.default_role(conn, user, host).await? {
            if self.roles.iter().any(|r| r.as_str() == default) {
                self.set_default_role(conn, user, host, None).await?;
            }
        }
        let killed = if self.terminate_sessions {
            self.kill_sessions(conn, user).await?
        } else {
            0
        };
        tracing::info!(account = %account, connections_killed = killed, "revoked roles");
        Ok(())
    }

    async fn grant_temporary(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let user = temp_login(&spec.request_id)?;
        let account = self.account(&user);
        let password = new_password();
        let mut conn = self.connect().await?;
        let exists = self.account_exists(&mut conn, &user, &self.host).await?;
        // `password` is alphanumeric (see `new_password`), so quoting it
        // needs no escaping.
        let create = format!("CREATE USER {account} IDENTIFIED BY '{password}'");
        let alter = format!("ALTER USER {account} IDENTIFIED BY '{password}'");
        if exists {
            exec(&mut conn, &alter)
                .await
                .map_err(self.fail_quietly(&format!("resetting the password of `{account}`")))?;
        } else {
            match exec(&mut conn, &create).await {
                Ok(()) => {}
                // Created by a concurrent grant of the same request.
                Err(e) if error_number(&e) == Some(ER_CANNOT_USER) => {
                    exec(&mut conn, &alter).await.map_err(
                        self.fail_quietly(&format!("resetting the password of `{account}`")),
                    )?;
                }
                Err(e) => return Err(self.fail_quietly(&format!("creating `{account}`"))(e)),
            }
        }
        let granted = async {
            self.grant_roles(&mut conn, &user).await?;
            self.set_default_role(&mut conn, &user, &self.host, self.roles.first())
                .await
        }
        .await;
        if let Err(e) = granted {
            if !exists {
                // Best effort: don't leave behind a user made by a grant that
                // failed. A revoke would drop it too.
                let _ = exec(&mut conn, &format!("DROP USER IF EXISTS {account}")).await;
            }
            return Err(e);
        }
        tracing::info!(account = %account, reused = exists, "temporary user ready");
        Ok(Granted {
            credential: Some(Credential::new(user.as_str().to_owned(), password)),
            certificate: None,
        })
    }

    async fn revoke_temporary(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        let user = temp_login(&spec.request_id)?;
        let mut conn = self.connect().await?;
        self.drop_temporary(&mut conn, &user, &self.host).await
    }

    /// Drops a user Airlock made, then kills its connections.
    async fn drop_temporary(
        &self,
        conn: &mut MySqlConnection,
        user: &Ident,
        host: &str,
    ) -> Result<(), ConnectorError> {
        let account = account_at(user, host);
        // Dropped first, so no new connection can start; the ones already
        // open survive a drop in MariaDB and are killed next.
        exec(conn, &format!("DROP USER IF EXISTS {account}"))
            .await
            .map_err(self.fail(&format!("dropping `{account}`")))?;
        let killed = self.kill_sessions(conn, user).await?;
        tracing::info!(account = %account, connections_killed = killed, "temporary user dropped");
        Ok(())
    }

    /// Takes the managed access away from a holder as `holders()` names it
    /// (`user@host`, or a role's bare name): a user Airlock made for a
    /// request (`airlock_<request id>`) is dropped as its revoke would; any
    /// other account or role has the managed roles revoked (and, for an
    /// account, a managed default role cleared and, if `terminate_sessions`
    /// is set, its user's connections killed). The connector's own account
    /// is refused.
    async fn remove(&self, holding: &Holding) -> Result<(), ConnectorError> {
        let principal = &holding.principal;
        let bad = |e: ConnectorError| {
            ConnectorError::Permanent(format!(
                "holder `{principal}` cannot be removed: {}",
                e.message()
            ))
        };
        let (user, host) = match principal.split_once('@') {
            Some((user, host)) => (
                Ident::parse("user", user).map_err(bad)?,
                check_host(host).map_err(bad)?,
            ),
            None => (Ident::parse("role", principal).map_err(bad)?, String::new()),
        };
        let mut conn = self.connect().await?;
        let me: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&mut *conn)
            .await
            .map_err(self.fail("asking for the connector's own account"))?;
        if me == *principal {
            return Err(ConnectorError::Permanent(format!(
                "`{principal}` is the connector's own account in mariadb `{}`; refusing to remove it",
                self.target
            )));
        }
        if !host.is_empty() && request_id_of_login(user.as_str()).is_some() {
            self.drop_temporary(&mut conn, &user, &host).await
        } else {
            self.revoke_roles_from(&mut conn, &user, &host).await
        }
    }

    async fn list_holders(&self) -> Result<Vec<Holding>, ConnectorError> {
        let mut conn = self.connect().await?;
        let me: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&mut *conn)
            .await
            .map_err(self.fail("asking for the connector's own account"))?;
        let sql = format!(
            "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.roles_mapping \
             WHERE Role IN ({})",
            self.role_placeholders()
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for role in &self.roles {
            query = query.bind(role.as_str());
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(self.fail("listing role members"))?;
        let mut holders = BTreeMap::new();
        for (user, host) in rows {
            // A role granted to a role has an empty host.
            let principal = if host.is_empty() {
                user.clone()
            } else {
                format!("{user}@{host}")
            };
            // MariaDB makes whoever creates a role its member (with ADMIN
            // OPTION); the connector's own account is not a grant to report.
            if principal == me {
                continue;
            }
            let request_id = request_id_of_login(&user);
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
        let mut conn = self.connect().await?;
        // `is_role` is compared here rather than in SQL: in the `mysql.user`
        // view it is a computed string whose collation clashes with the
        // connection's.
        let sql = format!(
            "SELECT CAST(User AS CHAR), CAST(is_role AS CHAR) FROM mysql.user WHERE User IN ({})",
            self.role_placeholders()
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for role in &self.roles {
            query = query.bind(role.as_str());
        }
        let found = query
            .fetch_all(&mut *conn)
            .await
            .map_err(self.fail("looking up the managed roles"))?;
        let is_role = |r: &Ident| {
            found
                .iter()
                .any(|(user, is_role)| user == r.as_str() && is_role == "Y")
        };
        if let Some(missing) = self.roles.iter().find(|r| !is_role(r)) {
            return Err(ConnectorError::Permanent(format!(
                "role `{missing}` does not exist in mariadb `{}`",
                self.target
            )));
        }
        Ok(())
    }
}

/// Runs one statement as plain text: `GRANT`, `KILL` and friends are not all
/// preparable, and a statement carrying a password must not be cached.
/// (`Executor::execute` rather than `RawSql::execute`, whose future is not
/// `Send` for every lifetime, which `async_trait` requires.)
async fn exec(conn: &mut MySqlConnection, sql: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(sql)).await.map(|_| ())
}

fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// MariaDB errors that say "not now": too many connections, shutdown, lock
/// wait timeout, deadlock, network trouble, an interrupted or timed-out
/// statement, a killed or idle-closed connection.
fn is_retryable_number(number: u16) -> bool {
    matches!(
        number,
        1040 | 1053 | 1152 | 1158..=1161 | 1205 | 1213 | 1317 | 1927 | 1969 | 4031
    )
}

fn classify(target: &str, doing: &str, e: sqlx::Error, quiet: bool) -> ConnectorError {
    let number = error_number(&e);
    match e {
        sqlx::Error::Database(db) => {
            let number = number.unwrap_or(0);
            let message = if quiet {
                format!("{doing} failed in mariadb `{target}` (error {number})")
            } else {
                format!(
                    "{doing} failed in mariadb `{target}`: {} (error {number})",
                    db.message()
                )
            };
            if is_retryable_number(number) {
                ConnectorError::Retryable(message)
            } else {
                ConnectorError::Permanent(message)
            }
        }
        other => transport_error("mariadb", target, doing, other),
    }
}

#[async_trait::async_trait]
impl Connector for MariaDbConnector {
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
        login.map(|l| format!("{l}@{}", self.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_and_lowercased() {
        assert_eq!(check_host("%").unwrap(), "%");
        assert_eq!(check_host("DB-1.Example").unwrap(), "db-1.example");
        assert_eq!(
            check_host("10.0.0.0/255.0.0.0").unwrap(),
            "10.0.0.0/255.0.0.0"
        );
        for bad in ["", "a'b", "a\\b", "a b", "a@b"] {
            let err = check_host(bad).unwrap_err();
            assert!(!err.is_retryable());
            assert!(err.message().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn error_numbers_split_into_retryable_and_permanent() {
        for n in [1040, 1053, 1205, 1213, 1927, 4031] {
            assert!(is_retryable_number(n), "{n}");
        }
        for n in [1044, 1045, 1064, 1133, 1227, 1396, 1959] {
            assert!(!is_retryable_number(n), "{n}");
        }
    }

    #[test]
    fn debug_output_hides_the_url_password() {
        let settings = MariaDbSettings::new(
            "mysql://admin:hunter2@db.example:3307/app",
            vec!["app_ro".to_owned()],
            Mode::TemporaryLogin,
        );
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let connector = MariaDbConnector::new(settings).unwrap();
        let shown = format!("{connector:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("db.example:3307"),
            "{shown}"
        );
    }
}
