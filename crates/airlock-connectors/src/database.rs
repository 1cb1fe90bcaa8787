//! The one database-connector driver behind the PostgreSQL and MariaDB
//! connectors. Both give a login the managed roles (or make a login for one
//! request), take them away, list who holds them and end sessions; they
//! differ in SQL text, quoting, how a login is found, locked, expired and
//! dropped, how sessions are ended and listed, and what their errors mean.
//! [`DatabaseConnector`] does everything they have in common — checking the
//! settings, the lazy pool, the time bound and span of every call, the
//! dispatch on [`Mode`], the order of the steps of each call, the messages
//! and the classification of errors — and asks its [`Dialect`] for the rest.
//!
//! `Dialect` is a trait, not an enum, because each database comes with its
//! own sqlx types (pool, connection, error): behind a trait the driver holds
//! `Pool<D::Db>` and hands the dialect its own connection type, where an enum
//! would have to wrap every pool and connection and match on them in every
//! step. The dialects are this crate's own (the trait is not exported), so
//! the connectors' public face stays `PostgresConnector::new(settings)` and
//! `MariaDbConnector::new(settings)`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{RequestId, UserId};
use sqlx::error::DatabaseError;
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{ConnectOptions, Database, Pool, Transaction};
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::sql::{new_password, parse_roles, temp_login, Ident, LoginTemplate, Mode};
use crate::{
    Action, Connector, ConnectorError, Credential, GrantSpec, Granted, Holding, LiveSession,
};

/// Most connections the connector keeps to one target: calls are short and
/// the engine runs few at once, so more would only take slots from the
/// target's own clients.
const MAX_CONNECTIONS: u32 = 4;

/// How long an unused connection is kept open: grants are rare; don't hold
/// the target's connection slots between them.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection of dialect `D`'s database.
pub(crate) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
/// How dialect `D`'s database is reached.
pub(crate) type Options<D> = <Conn<D> as sqlx::Connection>::Options;

/// What a database error means, as its dialect reads it.
pub(crate) struct ErrorCode {
    /// How messages name the code: `sqlstate 42501`, `error 1064`.
    pub(crate) label: String,
    /// A few words on the code, for messages that leave out the server's own.
    pub(crate) hint: &'static str,
    /// "Not now" rather than "no".
    pub(crate) retryable: bool,
}

/// What one database does its own way. Each hook is one step of a call the
/// driver makes; hooks that talk to the database get the driver (for its
/// roles and its error messages) and a connection.
#[async_trait::async_trait]
pub(crate) trait Dialect: fmt::Debug + Send + Sync + Sized + 'static {
    type Db: Database;
    /// An account a grant gives the roles to, as statements name it.
    type Account: fmt::Display + Send + Sync;
    /// What finding an existing account tells the later steps.
    type Found: Copy + Send + Sync;
    /// A password as the statement that sets it carries it.
    type Secret: Send + Sync;

    /// The database in messages and spans: `postgres`, `mariadb`.
    const ENGINE: &'static str;
    /// The connector's type name, for `Debug`.
    const CONNECTOR: &'static str;
    /// What messages call an account: `login`, `account`.
    const ACCOUNT: &'static str;
    /// Whether the steps on one account run in one transaction that starts
    /// with [`Dialect::lock`]; otherwise each statement commits by itself.
    const TRANSACTIONAL: bool;

    /// The connection options the connector adds to the configured URL's.
    fn configure(options: Options<Self>) -> Options<Self> {
        options
    }
    /// The target for messages: never the URL, which may hold a password.
    fn describe(options: &Options<Self>) -> String;
    fn error_code(error: &dyn DatabaseError) -> ErrorCode;

    /// The account of `login` that grants go to.
    fn account(&self, login: Ident) -> Self::Account;
    /// How [`Connector::holders`] names `account`.
    fn principal(&self, account: &Self::Account) -> String;
    /// The account [`Connector::holders`] named `principal`.
    fn parse_holder(&self, principal: &str) -> Result<Self::Account, ConnectorError>;
    fn grant_role_sql(role: &Ident, account: &Self::Account) -> String;
    /// What the statement that sets `password` carries instead of it, if
    /// anything.
    fn secret(&self, password: &str) -> Self::Secret;

    /// Runs one statement as plain text: role and account statements take
    /// no parameters, not all are preparable, and one carrying a password
    /// or a verifier must not be cached in the connection.
    async fn exec(conn: &mut Conn<Self>, sql: &str) -> Result<(), sqlx::Error>;
    /// Serialises the calls on `account` across Airlock replicas until the
    /// transaction ends.
    async fn lock(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
    ) -> Result<(), ConnectorError> {
        let _ = (c, conn, account);
        Ok(())
    }
    /// Whether `account` exists, and what the later steps need of it.
    async fn find(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
    ) -> Result<Option<Self::Found>, ConnectorError>;
    /// Whether Airlock made `account` for a request.
    async fn airlock_made(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
    ) -> Result<bool, ConnectorError>;
    /// What a grant mode grant does after granting the roles.
    async fn after_grant(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
    ) -> Result<(), ConnectorError> {
        let _ = (c, conn, account);
        Ok(())
    }
    /// Takes every managed role from `account`; fails if one is left.
    async fn revoke_roles(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
        found: Self::Found,
    ) -> Result<(), ConnectorError>;
    /// Ends the sessions of `account` except the connector's own; how many.
    async fn end_sessions(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
        found: Self::Found,
    ) -> Result<u64, ConnectorError>;
    /// Creates the temporary login `account` (or, if it `exists`, resets its
    /// password) for `spec`, logging in with `secret`'s password.
    async fn set_temporary_login(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
        exists: bool,
        secret: &Self::Secret,
        spec: &GrantSpec,
    ) -> Result<(), ConnectorError>;
    /// What a temporary-login grant does after granting the roles.
    async fn after_temporary_grant(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
        spec: &GrantSpec,
    ) -> Result<(), ConnectorError>;
    /// Undoes the creation of a temporary login whose grant failed, where
    /// no transaction does.
    async fn forget_temporary_login(conn: &mut Conn<Self>, account: &Self::Account) {
        let _ = (conn, account);
    }
    /// Disables, ends the sessions of, and drops a login Airlock made; an
    /// absent one is success.
    async fn drop_temporary(
        c: &DatabaseConnector<Self>,
        account: &Self::Account,
    ) -> Result<(), ConnectorError>;
    /// The connector's own account, as [`Connector::holders`] would name it.
    async fn own_principal(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
    ) -> Result<String, ConnectorError>;
    /// Every member of a managed role, with its request where it tells.
    async fn members(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
    ) -> Result<Vec<Holding>, ConnectorError>;
    /// Health: whether the connector's account may grant at all.
    async fn check_admin(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
    ) -> Result<(), ConnectorError> {
        let _ = (c, conn);
        Ok(())
    }
    /// The live sessions of `account`'s login, except the connector's own.
    async fn sessions(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
        account: &Self::Account,
    ) -> Result<Vec<LiveSession>, ConnectorError>;
    /// The managed roles that exist.
    async fn existing_roles(
        c: &DatabaseConnector<Self>,
        conn: &mut Conn<Self>,
    ) -> Result<Vec<Ident>, ConnectorError>;
}

/// The target a URL names, for `Debug` output of settings: never the URL,
/// which may hold a password.
pub(crate) fn describe_url<D: Dialect>(url: &str) -> String {
    Options::<D>::from_str(url)
        .map(|o| D::describe(&o))
        .unwrap_or_else(|_| "[invalid url]".to_owned())
}

/// The settings every database connector has.
pub(crate) struct Common<'a> {
    pub(crate) url: &'a str,
    pub(crate) roles: &'a [String],
    pub(crate) mode: Mode,
    pub(crate) login_template: &'a str,
    pub(crate) terminate_sessions: bool,
    pub(crate) timeout: Duration,
}

/// A connector that grants database roles, to existing logins or to
/// per-request logins, in the database of its dialect `D`.
#[derive(Clone)]
#[expect(
    private_bounds,
    reason = "the dialects are this crate's own; users name the connectors by their aliases"
)]
pub struct DatabaseConnector<D: Dialect> {
    /// Created on first use: sqlx pools start background tasks, which need
    /// the Tokio runtime that `new` may be called outside of.
    pool: Arc<OnceCell<Pool<D::Db>>>,
    options: Options<D>,
    /// `host:port[/database]`, for messages.
    target: String,
    roles: Vec<Ident>,
    mode: Mode,
    template: LoginTemplate,
    terminate_sessions: bool,
    timeout: Duration,
    dialect: D,
}

impl<D: Dialect> fmt::Debug for DatabaseConnector<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(D::CONNECTOR)
            .field("target", &self.target)
            .field("roles", &self.roles)
            .field("mode", &self.mode)
            .field("dialect", &self.dialect)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a unit of work on one account runs: a transaction that holds the
/// account's lock, or a plain connection whose statements commit one by one.
pub(crate) enum Work<D: Dialect> {
    Locked(Transaction<'static, D::Db>),
    Plain(PoolConnection<D::Db>),
}

impl<D: Dialect> Deref for Work<D> {
    type Target = Conn<D>;
    fn deref(&self) -> &Conn<D> {
        match self {
            Work::Locked(tx) => tx,
            Work::Plain(conn) => conn,
        }
    }
}

impl<D: Dialect> DerefMut for Work<D> {
    fn deref_mut(&mut self) -> &mut Conn<D> {
        match self {
            Work::Locked(tx) => tx,
            Work::Plain(conn) => conn,
        }
    }
}

#[expect(private_bounds, reason = "see `DatabaseConnector`")]
impl<D: Dialect> DatabaseConnector<D> {
    /// Checks every name and setting (the dialect's own with `dialect`,
    /// after the roles and the template); nothing connects until the first
    /// call. All failures are `Permanent`: they are configuration mistakes.
    pub(crate) fn build(
        common: Common<'_>,
        dialect: impl FnOnce() -> Result<D, ConnectorError>,
    ) -> Result<Self, ConnectorError> {
        let engine = D::ENGINE;
        let roles = parse_roles(common.roles)?;
        let template = LoginTemplate::parse(common.login_template)?;
        let dialect = dialect()?;
        if common.timeout.is_zero() {
            return Err(ConnectorError::Permanent(format!(
                "{engine} timeout must be greater than zero"
            )));
        }
        let options = Options::<D>::from_str(common.url)
            .map_err(|e| ConnectorError::Permanent(format!("{engine} url is not valid: {e}")))?
            // sqlx logs statement texts; some carry a password or its verifier.
            .disable_statement_logging();
        let options = D::configure(options);
        Ok(Self {
            pool: Arc::new(OnceCell::new()),
            target: D::describe(&options),
            options,
            roles,
            mode: common.mode,
            template,
            terminate_sessions: common.terminate_sessions,
            timeout: common.timeout,
            dialect,
        })
    }

    pub(crate) fn roles(&self) -> &[Ident] {
        &self.roles
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn dialect(&self) -> &D {
        &self.dialect
    }

    /// The pool, connecting lazily: a target that is down when Airlock
    /// starts delays grants, not startup.
    async fn pool(&self) -> &Pool<D::Db> {
        self.pool
            .get_or_init(|| async {
                PoolOptions::<D::Db>::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(self.timeout)
                    .idle_timeout(IDLE_TIMEOUT)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    pub(crate) async fn connect(&self) -> Result<PoolConnection<D::Db>, ConnectorError> {
        self.pool()
            .await
            .acquire()
            .await
            .map_err(self.fail("connecting"))
    }

    /// Starts the work on `account`: in a transaction holding its lock
    /// where the dialect is transactional, so an existence check and the
    /// statements it decides stay paired across replicas.
    pub(crate) async fn open(&self, account: &D::Account) -> Result<Work<D>, ConnectorError> {
        if !D::TRANSACTIONAL {
            return Ok(Work::Plain(self.connect().await?));
        }
        let mut tx = self
            .pool()
            .await
            .begin()
            .await
            .map_err(self.fail("starting a transaction"))?;
        D::lock(self, &mut tx, account).await?;
        Ok(Work::Locked(tx))
    }

    /// Commits the work (`doing` names it in the error).
    pub(crate) async fn finish(&self, work: Work<D>, doing: &str) -> Result<(), ConnectorError> {
        match work {
            Work::Locked(tx) => tx.commit().await.map_err(self.fail(doing)),
            Work::Plain(_) => Ok(()),
        }
    }

    /// Runs one call within the timeout, in a span named after it.
    async fn bounded<T>(
        &self,
        action: &'static str,
        request_id: Option<&RequestId>,
        call: impl Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        let span = tracing::info_span!(
            "database_connector",
            engine = D::ENGINE,
            action,
            request_id = request_id.map(RequestId::as_str),
            target = %self.target,
        );
        let outcome = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await;
        let result = outcome.unwrap_or_else(|_elapsed| {
            Err(ConnectorError::Retryable(format!(
                "{} `{}` did not finish {action} within {}",
                D::ENGINE,
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
    pub(crate) fn fail(&self, doing: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let doing = doing.to_owned();
        move |e| self.classify(&doing, e, false)
    }

    /// Like [`Self::fail`] for a statement that carries a secret: the
    /// server's message is left out in case it quotes the statement.
    pub(crate) fn fail_quietly(&self, doing: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let doing = doing.to_owned();
        move |e| self.classify(&doing, e, true)
    }

    fn classify(&self, doing: &str, e: sqlx::Error, quiet: bool) -> ConnectorError {
        let (engine, target) = (D::ENGINE, &self.target);
        let db = match e {
            sqlx::Error::Database(db) => db,
            other => return transport_error(engine, target, doing, other),
        };
        let code = D::error_code(&*db);
        let message = if quiet {
            format!(
                "{doing} failed in {engine} `{target}` ({}{})",
                code.label, code.hint
            )
        } else {
            format!(
                "{doing} failed in {engine} `{target}`: {} ({})",
                db.message(),
                code.label
            )
        };
        if code.retryable {
            ConnectorError::Retryable(message)
        } else {
            ConnectorError::Permanent(message)
        }
    }

    /// The login a grant of `request_id` to `user` goes to in this mode.
    fn login(&self, user: &UserId, request_id: &RequestId) -> Result<Ident, ConnectorError> {
        match self.mode {
            Mode::Grant => self.template.expand(user),
            Mode::TemporaryLogin => temp_login(request_id),
        }
    }

    /// Grants every managed role to `account`; granting what it has is no
    /// error in either database.
    async fn grant_roles(
        &self,
        conn: &mut Conn<D>,
        account: &D::Account,
    ) -> Result<(), ConnectorError> {
        for role in &self.roles {
            D::exec(conn, &D::grant_role_sql(role, account))
                .await
                .map_err(self.fail(&format!("granting `{role}` to `{account}`")))?;
        }
        Ok(())
    }

    async fn grant_membership(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let account = self.dialect.account(self.template.expand(&spec.user)?);
        let mut work = self.open(&account).await?;
        if D::find(self, &mut work, &account).await?.is_none() {
            return Err(ConnectorError::Permanent(format!(
                "{} `{account}` for user `{}` does not exist in {} `{}`",
                D::ACCOUNT,
                spec.user,
                D::ENGINE,
                self.target
            )));
        }
        self.grant_roles(&mut work, &account).await?;
        D::after_grant(self, &mut work, &account).await?;
        self.finish(work, "committing the grant").await?;
        tracing::info!(account = %account, "granted roles");
        Ok(Granted::default())
    }

    /// Revokes every managed role from `account` (an absent account or
    /// membership is success), checks that none is left, then ends its
    /// sessions if `terminate_sessions` is set.
    async fn revoke_roles_from(&self, account: &D::Account) -> Result<(), ConnectorError> {
        let mut work = self.open(account).await?;
        let Some(found) = D::find(self, &mut work, account).await? else {
            // No account, no membership: the revoke has nothing left to do.
            return Ok(());
        };
        D::revoke_roles(self, &mut work, account, found).await?;
        self.finish(work, "committing the revoke").await?;
        if self.terminate_sessions {
            let mut conn = self.connect().await?;
            let ended = D::end_sessions(self, &mut conn, account, found).await?;
            tracing::info!(account = %account, sessions_ended = ended, "revoked roles");
        } else {
            tracing::info!(account = %account, "revoked roles");
        }
        Ok(())
    }

    async fn grant_temporary(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        let login = temp_login(&spec.request_id)?;
        // Minted before any await: the thread-local generator is not `Send`.
        let password = new_password();
        let secret = self.dialect.secret(&password);
        let account = self.dialect.account(login.clone());
        let mut work = self.open(&account).await?;
        let exists = D::find(self, &mut work, &account).await?.is_some();
        // An account with Airlock's name pattern but not its mark was made
        // by someone else: resetting its password would hand their access
        // to the requester.
        if exists && !D::airlock_made(self, &mut work, &account).await? {
            return Err(ConnectorError::Permanent(format!(
                "{} `{account}` exists in {} `{}` but was not created by airlock; refusing to reuse it",
                D::ACCOUNT,
                D::ENGINE,
                self.target
            )));
        }
        D::set_temporary_login(self, &mut work, &account, exists, &secret, spec).await?;
        let granted = async {
            self.grant_roles(&mut work, &account).await?;
            D::after_temporary_grant(self, &mut work, &account, spec).await
        }
        .await;
        if let Err(e) = granted {
            if !exists {
                D::forget_temporary_login(&mut work, &account).await;
            }
            return Err(e);
        }
        self.finish(work, "committing the grant").await?;
        tracing::info!(account = %account, reused = exists, "temporary login ready");
        Ok(Granted {
            credential: Some(Credential::new(login.as_str().to_owned(), password)),
            certificate: None,
        })
    }

    /// Takes the managed access away from a holder as [`Connector::holders`]
    /// named it: an account Airlock made for a request is dropped as its
    /// revoke would; any other holder has the managed roles revoked (and its
    /// sessions ended if `terminate_sessions` is set), whichever mode the
    /// connector is in: a person's own login is never dropped. The
    /// connector's own account is refused.
    async fn remove(&self, holding: &Holding) -> Result<(), ConnectorError> {
        let principal = &holding.principal;
        let account = self.dialect.parse_holder(principal)?;
        let mut conn = self.connect().await?;
        if D::own_principal(self, &mut conn).await? == *principal {
            return Err(ConnectorError::Permanent(format!(
                "`{principal}` is the connector's own {} in {} `{}`; refusing to remove it",
                D::ACCOUNT,
                D::ENGINE,
                self.target
            )));
        }
        let airlock_made = D::airlock_made(self, &mut conn, &account).await?;
        drop(conn);
        if airlock_made {
            D::drop_temporary(self, &account).await
        } else {
            self.revoke_roles_from(&account).await
        }
    }

    async fn list_holders(&self) -> Result<Vec<Holding>, ConnectorError> {
        let mut conn = self.connect().await?;
        let members = D::members(self, &mut conn).await?;
        // An account in several managed roles is one holder.
        let holders: BTreeMap<String, Holding> = members
            .into_iter()
            .map(|h| (h.principal.clone(), h))
            .collect();
        Ok(holders.into_values().collect())
    }

    async fn list_sessions(
        &self,
        user: &UserId,
        request_id: &RequestId,
    ) -> Result<Vec<LiveSession>, ConnectorError> {
        let account = self.dialect.account(self.login(user, request_id)?);
        let mut conn = self.connect().await?;
        D::sessions(self, &mut conn, &account).await
    }

    async fn check_health(&self) -> Result<(), ConnectorError> {
        let mut conn = self.connect().await?;
        D::check_admin(self, &mut conn).await?;
        let existing = D::existing_roles(self, &mut conn).await?;
        if let Some(missing) = self.roles.iter().find(|r| !existing.contains(r)) {
            return Err(ConnectorError::Permanent(format!(
                "role `{missing}` does not exist in {} `{}`",
                D::ENGINE,
                self.target
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl<D: Dialect> Connector for DatabaseConnector<D> {
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
            let account = self
                .dialect
                .account(self.login(&spec.user, &spec.request_id)?);
            match self.mode {
                Mode::Grant => self.revoke_roles_from(&account).await,
                Mode::TemporaryLogin => D::drop_temporary(self, &account).await,
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
        login.map(|l| self.dialect.principal(&self.dialect.account(l)))
    }

    fn lists_sessions(&self) -> bool {
        true
    }

    async fn sessions(
        &self,
        user: &UserId,
        request_id: &RequestId,
    ) -> Result<Vec<LiveSession>, ConnectorError> {
        self.bounded(
            "sessions",
            Some(request_id),
            self.list_sessions(user, request_id),
        )
        .await
    }
}

/// Classifies the sqlx errors that are not the database's own answer (the
/// pool, the network, TLS, the protocol): the same for every SQL target.
/// A database error reaching here (the caller handles those) is permanent.
fn transport_error(engine: &str, target: &str, doing: &str, e: sqlx::Error) -> ConnectorError {
    match e {
        sqlx::Error::PoolTimedOut => ConnectorError::Retryable(format!(
            "{doing}: no connection to {engine} `{target}` in time (it refused, did not answer, or all connections were busy)"
        )),
        sqlx::Error::Io(io) => {
            ConnectorError::Retryable(format!("{doing}: could not talk to {engine} `{target}`: {io}"))
        }
        sqlx::Error::Tls(tls) => ConnectorError::Retryable(format!("{doing}: tls with {engine} `{target}` failed: {tls}")),
        e @ (sqlx::Error::Protocol(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed) => {
            ConnectorError::Retryable(format!("{doing} in {engine} `{target}`: {e}"))
        }
        other => ConnectorError::Permanent(format!("{doing} in {engine} `{target}`: {other}")),
    }
}
