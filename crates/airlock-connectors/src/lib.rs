//! Connectors carry out grants in target systems. The engine decides *when* to
//! grant or revoke; a connector only knows *how*, and must be idempotent so the
//! engine may retry after a crash or a timeout without harm.

use std::time::Duration;

use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};

pub mod command;
pub mod database;
pub mod keyfile;
pub mod mariadb;
pub mod postgres;
mod sql;
pub mod ssh;
pub mod webhook;

pub use sql::{Mode, TEMP_LOGIN_PREFIX, USER_PLACEHOLDER};

/// Everything a connector needs to grant or revoke one request's access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
    pub request_id: RequestId,
    pub user: UserId,
    pub entitlement: EntitlementId,
    /// When access must end; connectors whose target can enforce it should.
    pub expires_at: Timestamp,
    /// Fencing token of this attempt: it grows with every claim of the
    /// request's work, so a target that records the highest it has applied
    /// can refuse a late call from a replica that stalled (see docs/connectors.md).
    pub claim: u64,
    /// The requester's SSH public key, one OpenSSH line (`ssh-ed25519 AAAA…`),
    /// set when the entitlement's connector certifies a key (the SSH
    /// certificate authority); `None` for every other connector.
    pub public_key: Option<String>,
}

/// Which way a connector call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Grant,
    Revoke,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        }
    }
}

/// A failed connector call. The engine retries `Retryable` failures with
/// backoff; a `Permanent` grant failure fails the request at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

impl ConnectorError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectorError::Retryable(_))
    }

    pub fn message(&self) -> &str {
        match self {
            ConnectorError::Retryable(m) | ConnectorError::Permanent(m) => m,
        }
    }
}

/// A credential a grant created for the requester (e.g. a short-lived
/// database login). Handed to the requester once; never logged or stored in
/// plain text, so `Debug` shows only the login.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub login: String,
    secret: String,
}

impl Credential {
    pub fn new(login: String, secret: String) -> Self {
        Self { login, secret }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("login", &self.login)
            .field("secret", &"***")
            .finish()
    }
}

/// What a successful grant produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    /// Set when the target issued a credential for this grant alone.
    /// Secret: handed to the requester once, never stored or logged.
    pub credential: Option<Credential>,
    /// A non-secret artifact the target issued for this grant (an OpenSSH
    /// certificate line). Unlike `credential` it proves nothing without the
    /// requester's private key, so Airlock may store it and show it to the
    /// requester any number of times.
    pub certificate: Option<String>,
}

/// Someone who holds a managed entitlement in the target, as the target sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holding {
    /// The identity in the target (a database role, a certificate key id...).
    pub principal: String,
    /// The Airlock request the target ties it to, when it records one.
    pub request_id: Option<RequestId>,
}

/// A live session of a grantee in the target, as the target reported it
/// when asked: what [`Connector::sessions`] lists, so a grant's timeline can
/// show what was done while it was active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// The target's id of the session (a PostgreSQL backend pid, a MariaDB
    /// connection id): the same session sampled twice has the same id.
    pub id: u64,
    /// The database login it runs as.
    pub login: String,
    /// The client's address, without the port; `None` for a client on a
    /// local socket.
    pub client: Option<String>,
    /// The statement running now, as the target shows it (PostgreSQL cuts
    /// it at `track_activity_query_size`); `None` while the session is
    /// idle. It may hold anything the grantee typed, a password included:
    /// whoever stores it decides what to keep.
    pub statement: Option<String>,
    /// Since when the session has been doing what it does now (running the
    /// statement, or idle), by the target's clock.
    pub since: Timestamp,
    /// When the session connected, by the target's clock, where the target
    /// records it (PostgreSQL does; MariaDB does not).
    pub connected_at: Option<Timestamp>,
}

/// A target system Airlock can provision access in.
///
/// Rules every implementation follows (see `docs/connectors.md`):
/// `grant` twice is the same as once; `revoke` of an absent grant succeeds;
/// credentials never reach logs or error messages; every call finishes within
/// [`Connector::call_timeout`].
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    async fn grant(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError>;
    async fn revoke(&self, spec: &GrantSpec) -> Result<(), ConnectorError>;
    /// Exercises the real target without changing who has access.
    async fn health(&self) -> Result<(), ConnectorError>;
    /// Upper bound on one call; the engine's claim on the work outlives it.
    fn call_timeout(&self) -> Duration;
    /// Who currently holds the access this connector manages, for
    /// reconciliation; `None` when the target cannot be asked.
    async fn holders(&self) -> Result<Option<Vec<Holding>>, ConnectorError> {
        Ok(None)
    }
    /// Takes the managed access away from `holding` (as [`Connector::holders`]
    /// listed it), whoever granted it: reconciliation's fix for holders no
    /// Airlock grant explains. Idempotent: a holder that is already gone is
    /// success. Connectors that cannot do it refuse permanently.
    async fn remove_holder(&self, holding: &Holding) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent(format!(
            "this connector cannot remove holders; remove `{}` in the target by hand",
            holding.principal
        )))
    }
    /// The principal under which [`Connector::holders`] lists the grant of
    /// `request_id` to `user`, when the connector can tell without asking
    /// the target. With `request_id` `None`: the principal of any grant to
    /// `user`, where it does not depend on the request (a user's own login).
    /// Reconciliation uses it to recognise grants the target does not tag
    /// with their request; `None` (the default) means only tagged holders
    /// are recognised.
    fn principal_for(&self, user: &UserId, request_id: Option<&RequestId>) -> Option<String> {
        let _ = (user, request_id);
        None
    }
    /// Whether [`Connector::sessions`] can ask the target (false by
    /// default): the activity sampler reads only the grants of connectors
    /// that can.
    fn lists_sessions(&self) -> bool {
        false
    }
    /// The live sessions of the login a grant of `request_id` to `user`
    /// gives access to (the user's own login, or the request's temporary
    /// one), other than the connector's own: for sampling what a grantee
    /// does while a grant is active. Changes nothing. Connectors whose
    /// target cannot be asked ([`Connector::lists_sessions`] false) refuse
    /// permanently.
    async fn sessions(
        &self,
        user: &UserId,
        request_id: &RequestId,
    ) -> Result<Vec<LiveSession>, ConnectorError> {
        let _ = (user, request_id);
        Err(ConnectorError::Permanent(
            "this connector cannot list a grantee's sessions".to_owned(),
        ))
    }
}

/// Formats a timestamp as RFC 3339 UTC with seconds precision.
pub fn rfc3339(ts: Timestamp) -> String {
    let secs = u64::try_from(ts.unix_millis().max(0) / 1000).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}
