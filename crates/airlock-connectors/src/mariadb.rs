//! The MariaDB dialect of the database connector: grants MariaDB roles, the
//! MariaDB counterpart of [`crate::postgres`], with the same two modes, the
//! same naming rules and the same guarantees (both are
//! [`crate::database`]), and one difference that matters when Airlock is
//! down.
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
//! Account statements commit implicitly in MariaDB, so there is no
//! transaction (nor lock) around a call's steps: each is written to be
//! right whatever a concurrent call did before it.
//!
//! The temporary password is part of the `CREATE USER` text: MariaDB has no
//! way to bind it. It is never logged by Airlock (sqlx's statement logging is
//! off for this pool, and errors from that statement leave out the server's
//! message); on the target, keep the general query log off.

use std::fmt;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError};
use sqlx::{Executor, MySqlConnection};

use crate::database::{describe_url, Common, DatabaseConnector, Dialect, ErrorCode};
pub use crate::sql::Mode;
use crate::sql::{request_id_of_login, Ident};
use crate::{ConnectorError, GrantSpec, Holding, LiveSession};
use airlock_core::Timestamp;

/// The account host used unless configured: any client address.
pub const DEFAULT_HOST: &str = "%";

/// MariaDB's limit on the host part of an account name.
const MAX_HOST_LEN: usize = 255;

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
        let target = describe_url::<MariaDb>(&self.url);
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

/// Grants MariaDB roles, to existing accounts or to per-request users.
pub type MariaDbConnector = DatabaseConnector<MariaDb>;

/// What MariaDB does its own way (see [`crate::database`]).
#[derive(Debug, Clone)]
pub struct MariaDb {
    /// The host part of the accounts this connector grants to or creates:
    /// checked by [`check_host`], lowercase (MariaDB stores it so).
    host: String,
}

/// A MariaDB account: `'user'@'host'`, or a role (an empty host).
pub struct Account {
    user: Ident,
    /// Checked by [`check_host`]; empty for a role.
    host: String,
}

impl Account {
    fn is_role(&self) -> bool {
        self.host.is_empty()
    }
}

/// `'user'@'host'`, or `` `role` `` for a role, as statements name it.
impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_role() {
            f.write_str(&self.user.backticked())
        } else {
            write!(f, "{}@'{}'", self.user.single_quoted(), self.host)
        }
    }
}

impl MariaDbConnector {
    /// Checks every name and setting; nothing connects until the first call.
    /// All failures are `Permanent`: they are configuration mistakes.
    pub fn new(settings: MariaDbSettings) -> Result<Self, ConnectorError> {
        let common = Common {
            url: &settings.url,
            roles: &settings.roles,
            mode: settings.mode,
            login_template: &settings.login_template,
            terminate_sessions: settings.terminate_sessions,
            timeout: settings.timeout,
        };
        Self::build(common, || {
            Ok(MariaDb {
                host: check_host(&settings.host)?,
            })
        })
    }
}

impl MariaDb {
    /// `?, ?, ?`: one placeholder per managed role, each then bound.
    fn role_placeholders(c: &MariaDbConnector) -> String {
        vec!["?"; c.roles().len()].join(", ")
    }

    async fn default_role(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
    ) -> Result<Option<String>, ConnectorError> {
        let role: Option<Option<String>> = sqlx::query_scalar(
            "SELECT CAST(default_role AS CHAR) FROM mysql.user WHERE User = ? AND Host = ?",
        )
        .bind(account.user.as_str())
        .bind(&account.host)
        .fetch_optional(conn)
        .await
        .map_err(c.fail(&format!("reading the default role of `{account}`")))?;
        Ok(role.flatten().filter(|r| !r.is_empty()))
    }

    async fn set_default_role(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
        role: Option<&Ident>,
    ) -> Result<(), ConnectorError> {
        let target = role.map_or_else(|| "NONE".to_owned(), Ident::backticked);
        let sql = format!("SET DEFAULT ROLE {target} FOR {account}");
        exec(conn, &sql)
            .await
            .map_err(c.fail(&format!("setting the default role of `{account}`")))
    }

    /// Kills every connection of `user` except the connector's own; returns
    /// how many. A connection that ended meanwhile is not an error.
    async fn kill_sessions(
        c: &MariaDbConnector,
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
        .map_err(c.fail(&format!("listing the connections of `{user}`")))?;
        let mut killed = 0;
        for id in ids {
            // `id` is an integer from the server; nothing else is formatted.
            match exec(&mut *conn, &format!("KILL CONNECTION {id}")).await {
                Ok(()) => killed += 1,
                Err(e) if error_number(&e) == Some(ER_NO_SUCH_THREAD) => {}
                Err(e) => return Err(c.fail(&format!("killing connection {id} of `{user}`"))(e)),
            }
        }
        Ok(killed)
    }

    /// Sets the account's password; `verb` is `CREATE` or `ALTER`.
    async fn identify(
        conn: &mut MySqlConnection,
        verb: &str,
        account: &Account,
        password: &str,
    ) -> Result<(), sqlx::Error> {
        // `password` is alphanumeric (see `new_password`), so quoting it
        // needs no escaping.
        exec(
            conn,
            &format!("{verb} USER {account} IDENTIFIED BY '{password}'"),
        )
        .await
    }
}

#[async_trait::async_trait]
impl Dialect for MariaDb {
    type Db = sqlx::MySql;
    type Account = Account;
    type Found = ();
    /// The password itself: MariaDB cannot take a hash in `CREATE USER`
    /// without knowing the authentication plugin.
    type Secret = String;

    const ENGINE: &'static str = "mariadb";
    const CONNECTOR: &'static str = "MariaDbConnector";
    const ACCOUNT: &'static str = "account";
    const TRANSACTIONAL: bool = false;

    fn describe(options: &MySqlConnectOptions) -> String {
        format!("{}:{}", options.get_host(), options.get_port())
    }

    fn error_code(error: &dyn DatabaseError) -> ErrorCode {
        let number = error
            .try_downcast_ref::<MySqlDatabaseError>()
            .map_or(0, MySqlDatabaseError::number);
        ErrorCode {
            label: format!("error {number}"),
            hint: "",
            retryable: is_retryable_number(number),
        }
    }

    fn account(&self, login: Ident) -> Account {
        Account {
            user: login,
            host: self.host.clone(),
        }
    }

    fn principal(&self, account: &Account) -> String {
        if account.is_role() {
            account.user.as_str().to_owned()
        } else {
            format!("{}@{}", account.user, account.host)
        }
    }

    /// `user@host`, or a role's bare name.
    fn parse_holder(&self, principal: &str) -> Result<Account, ConnectorError> {
        let bad = |e: ConnectorError| {
            ConnectorError::Permanent(format!(
                "holder `{principal}` cannot be removed: {}",
                e.message()
            ))
        };
        Ok(match principal.split_once('@') {
            Some((user, host)) => Account {
                user: Ident::parse("user", user).map_err(bad)?,
                host: check_host(host).map_err(bad)?,
            },
            None => Account {
                user: Ident::parse("role", principal).map_err(bad)?,
                host: String::new(),
            },
        })
    }

    fn grant_role_sql(role: &Ident, account: &Account) -> String {
        // Granting a role the account has is a no-op in MariaDB.
        format!("GRANT {} TO {account}", role.backticked())
    }

    fn secret(&self, password: &str) -> String {
        password.to_owned()
    }

    async fn exec(conn: &mut MySqlConnection, sql: &str) -> Result<(), sqlx::Error> {
        exec(conn, sql).await
    }

    async fn find(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
    ) -> Result<Option<()>, ConnectorError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?")
                .bind(account.user.as_str())
                .bind(&account.host)
                .fetch_one(conn)
                .await
                .map_err(c.fail(&format!("looking up `{account}`")))?;
        Ok((count > 0).then_some(()))
    }

    /// A user (not a role) whose name has Airlock's pattern: MariaDB has
    /// nowhere to put a mark.
    async fn airlock_made(
        _c: &MariaDbConnector,
        _conn: &mut MySqlConnection,
        account: &Account,
    ) -> Result<bool, ConnectorError> {
        Ok(!account.is_role() && request_id_of_login(account.user.as_str()).is_some())
    }

    async fn after_grant(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
    ) -> Result<(), ConnectorError> {
        // Leave an account's own choice of default role alone.
        if Self::default_role(c, conn, account).await?.is_none() {
            Self::set_default_role(c, conn, account, c.roles().first()).await?;
        }
        Ok(())
    }

    /// Revokes the managed roles `account` holds; for an account (not a
    /// role), then clears a managed default role.
    async fn revoke_roles(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
        _found: (),
    ) -> Result<(), ConnectorError> {
        let sql = format!(
            "SELECT CAST(Role AS CHAR) FROM mysql.roles_mapping \
             WHERE User = ? AND Host = ? AND Role IN ({})",
            Self::role_placeholders(c)
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql)
            .bind(account.user.as_str())
            .bind(&account.host);
        for role in c.roles() {
            query = query.bind(role.as_str());
        }
        let held = query
            .fetch_all(&mut *conn)
            .await
            .map_err(c.fail(&format!("listing the roles of `{account}`")))?;
        for role in c
            .roles()
            .iter()
            .filter(|r| held.iter().any(|h| h == r.as_str()))
        {
            // Unlike PostgreSQL, MariaDB refuses to revoke a role that is not
            // granted; a concurrent revoke may have got there first.
            let sql = format!("REVOKE {} FROM {account}", role.backticked());
            match exec(&mut *conn, &sql).await {
                Ok(()) => {}
                Err(e) if error_number(&e) == Some(ER_CANNOT_REVOKE_ROLE) => {}
                Err(e) => return Err(c.fail(&format!("revoking `{role}` from `{account}`"))(e)),
            }
        }
        if account.is_role() {
            // A role has no default role.
            return Ok(());
        }
        if let Some(default) = Self::default_role(c, conn, account).await? {
            if c.roles().iter().any(|r| r.as_str() == default) {
                Self::set_default_role(c, conn, account, None).await?;
            }
        }
        Ok(())
    }

    async fn end_sessions(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
        _found: (),
    ) -> Result<u64, ConnectorError> {
        if account.is_role() {
            // A role has no connections of its own.
            return Ok(0);
        }
        Self::kill_sessions(c, conn, &account.user).await
    }

    async fn set_temporary_login(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
        exists: bool,
        password: &String,
        _spec: &GrantSpec,
    ) -> Result<(), ConnectorError> {
        let reset = || c.fail_quietly(&format!("resetting the password of `{account}`"));
        if exists {
            return Self::identify(conn, "ALTER", account, password)
                .await
                .map_err(reset());
        }
        match Self::identify(conn, "CREATE", account, password).await {
            Ok(()) => Ok(()),
            // Created by a concurrent grant of the same request.
            Err(e) if error_number(&e) == Some(ER_CANNOT_USER) => {
                Self::identify(conn, "ALTER", account, password)
                    .await
                    .map_err(reset())
            }
            Err(e) => Err(c.fail_quietly(&format!("creating `{account}`"))(e)),
        }
    }

    async fn after_temporary_grant(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
        _spec: &GrantSpec,
    ) -> Result<(), ConnectorError> {
        Self::set_default_role(c, conn, account, c.roles().first()).await
    }

    /// Best effort: don't leave behind a user made by a grant that failed.
    /// A revoke would drop it too.
    async fn forget_temporary_login(conn: &mut MySqlConnection, account: &Account) {
        let _ = exec(conn, &format!("DROP USER IF EXISTS {account}")).await;
    }

    /// Dropped first, so no new connection can start; the ones already open
    /// survive a drop in MariaDB and are killed next (also when the user was
    /// already gone: an earlier revoke may have stopped in between).
    async fn drop_temporary(c: &MariaDbConnector, account: &Account) -> Result<(), ConnectorError> {
        let mut conn = c.connect().await?;
        exec(&mut conn, &format!("DROP USER IF EXISTS {account}"))
            .await
            .map_err(c.fail(&format!("dropping `{account}`")))?;
        let killed = Self::kill_sessions(c, &mut conn, &account.user).await?;
        tracing::info!(account = %account, connections_killed = killed, "temporary user dropped");
        Ok(())
    }

    async fn own_principal(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
    ) -> Result<String, ConnectorError> {
        sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(conn)
            .await
            .map_err(c.fail("asking for the connector's own account"))
    }

    async fn members(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
    ) -> Result<Vec<Holding>, ConnectorError> {
        let me = Self::own_principal(c, conn).await?;
        let sql = format!(
            "SELECT CAST(User AS CHAR), CAST(Host AS CHAR) FROM mysql.roles_mapping \
             WHERE Role IN ({})",
            Self::role_placeholders(c)
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for role in c.roles() {
            query = query.bind(role.as_str());
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(c.fail("listing role members"))?;
        Ok(rows
            .into_iter()
            .map(|(user, host)| Holding {
                request_id: request_id_of_login(&user),
                // A role granted to a role has an empty host.
                principal: if host.is_empty() {
                    user
                } else {
                    format!("{user}@{host}")
                },
            })
            // MariaDB makes whoever creates a role its member (with ADMIN
            // OPTION); the connector's own account is not a grant to report.
            .filter(|h| h.principal != me)
            .collect())
    }

    /// From `information_schema.PROCESSLIST`, by user name as
    /// [`MariaDb::kill_sessions`] ends them: `INFO` is the running statement
    /// (none while the connection sleeps); `since` is now less `TIME_MS`,
    /// the time in the current state, both by the server's clock. MariaDB
    /// does not record when a connection began.
    async fn sessions(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
        account: &Account,
    ) -> Result<Vec<LiveSession>, ConnectorError> {
        let rows: Vec<(i64, String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT CAST(ID AS SIGNED), CAST(USER AS CHAR), CAST(HOST AS CHAR), \
                    CAST(INFO AS CHAR), \
                    CAST(ROUND(UNIX_TIMESTAMP(NOW(6)) * 1000 - TIME_MS) AS SIGNED) \
             FROM information_schema.PROCESSLIST \
             WHERE USER = ? AND ID <> CONNECTION_ID() ORDER BY ID",
        )
        .bind(account.user.as_str())
        .fetch_all(conn)
        .await
        .map_err(c.fail(&format!("listing the connections of `{}`", account.user)))?;
        Ok(rows
            .into_iter()
            .map(|(id, login, host, statement, since)| LiveSession {
                id: u64::try_from(id).unwrap_or(0),
                login,
                client: client_address(&host),
                statement,
                since: Timestamp::from_unix_millis(since),
                connected_at: None,
            })
            .collect())
    }

    async fn existing_roles(
        c: &MariaDbConnector,
        conn: &mut MySqlConnection,
    ) -> Result<Vec<Ident>, ConnectorError> {
        // `is_role` is compared here rather than in SQL: in the `mysql.user`
        // view it is a computed string whose collation clashes with the
        // connection's.
        let sql = format!(
            "SELECT CAST(User AS CHAR), CAST(is_role AS CHAR) FROM mysql.user WHERE User IN ({})",
            Self::role_placeholders(c)
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for role in c.roles() {
            query = query.bind(role.as_str());
        }
        let found = query
            .fetch_all(conn)
            .await
            .map_err(c.fail("looking up the managed roles"))?;
        Ok(c.roles()
            .iter()
            .filter(|r| {
                found
                    .iter()
                    .any(|(user, is_role)| user == r.as_str() && is_role == "Y")
            })
            .cloned()
            .collect())
    }
}

/// Runs one statement with the simple query protocol (see
/// [`Dialect::exec`]). (`Executor::execute` rather than `RawSql::execute`,
/// whose future is not `Send` for every lifetime, which `async_trait`
/// requires.)
async fn exec(conn: &mut MySqlConnection, sql: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(sql)).await.map(|_| ())
}

/// The address in a `PROCESSLIST` host, `address:port` for a client over
/// TCP (a host name instead of the address where the server resolves
/// names, without `skip_name_resolve`); a bare `localhost` is a local
/// socket.
fn client_address(host: &str) -> Option<String> {
    let (address, port) = host.rsplit_once(':')?;
    (!address.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .then(|| address.to_owned())
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
    fn client_addresses_lose_their_port_and_sockets_have_none() {
        assert_eq!(
            client_address("10.1.2.3:54321").as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(client_address("::1:54321").as_deref(), Some("::1"));
        assert_eq!(
            client_address("app-7.example:3306").as_deref(),
            Some("app-7.example")
        );
        for socket_or_odd in ["localhost", "", ":1", "host:"] {
            assert_eq!(client_address(socket_or_odd), None, "{socket_or_odd}");
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
