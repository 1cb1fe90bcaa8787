//! Loads and validates the TOML config once at start into typed settings.
//!
//! Every error names the file, line, column and the field at fault, and a
//! config that fails validation is never partly applied. One module per
//! table; this one holds the settings' types and puts the tables together.

mod access_reviews;
mod audit;
mod bundles;
mod connectors;
mod elevation;
mod entitlements;
mod notifications;
mod oidc;
mod policy;
mod scim;
mod server;
mod source;
mod tickets;
mod tokens;
mod users;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_connectors::mariadb::MariaDbSettings;
use airlock_connectors::postgres::PostgresSettings;
use airlock_connectors::ssh::SshCaSettings;
use airlock_core::catalog::Catalog;
use airlock_core::request::LifecycleSettings;
use airlock_core::UserId;
use airlock_policy::Directory;
use serde::Deserialize;
use toml::Spanned;

use crate::oidc::OidcSettings;
use crate::policy::PolicySource;
use crate::store::sql::Location;

pub use access_reviews::DEFAULT_REVIEW_DUE_WITHIN;
pub use elevation::{ElevationSettings, DEFAULT_ELEVATION_ISSUER, DEFAULT_ELEVATION_LIFETIME};
pub use notifications::{ChannelSettings, NotificationSettings, SmtpSettings, SmtpTls};
pub use oidc::{DEFAULT_JWKS_REFETCH_AFTER, DEFAULT_OIDC_CLOCK_SKEW};
pub use scim::ScimSettings;
pub use source::parse_duration;
pub use tickets::TicketSettings;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach one connector's target.
#[derive(Debug, Clone)]
pub enum ConnectorSettings {
    Command {
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        timeout: Duration,
    },
    Webhook {
        url: String,
        secret: Secret,
        timeout: Duration,
    },
    Postgres(PostgresSettings),
    MariaDb(MariaDbSettings),
    /// Checked at load; the CA key is loaded (or created) at server start.
    SshCa(SshCaSettings),
}

impl ConnectorSettings {
    pub fn timeout(&self) -> Duration {
        match self {
            ConnectorSettings::Command { timeout, .. }
            | ConnectorSettings::Webhook { timeout, .. } => *timeout,
            ConnectorSettings::Postgres(s) => s.timeout,
            ConnectorSettings::MariaDb(s) => s.timeout,
            ConnectorSettings::SshCa(s) => s.call_timeout,
        }
    }
}

/// Validated settings for one Airlock server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The SQLite file (default `data_dir/airlock.db`) or a PostgreSQL URL.
    pub database: Location,
    pub lifecycle: LifecycleSettings,
    /// A grant whose revocation is unconfirmed this long after it ended is overdue.
    pub revocation_overdue_after: Duration,
    /// A request header in which an authenticating proxy in front of Airlock
    /// states when the user last completed MFA (Unix seconds or RFC 3339),
    /// for policies' `context.mfa_age_seconds`. Unset: no MFA is known.
    pub mfa_header: Option<String>,
    pub catalog: Catalog,
    /// SHA-256 (hex) of each API token, to the user it authenticates.
    pub token_hashes: HashMap<String, UserId>,
    pub connectors: BTreeMap<String, ConnectorSettings>,
    /// Where the policy set is read from (on start and on every reload).
    pub policy_source: PolicySource,
    /// The user and entitlement attributes policies see.
    pub directory: Directory,
    /// A policy change proposed through the API takes effect only once a
    /// second admin approves it (and reloading from disk is refused).
    pub policy_two_person: bool,
    /// How often reconciliation runs in the background (`None`: never).
    pub reconcile_every: Option<Duration>,
    /// How often the sessions of active grants are sampled
    /// (`server.activity_sample_every`); `None`: never.
    pub activity_sample_every: Option<Duration>,
    /// Signed checkpoints of the audit chain.
    pub audit: AuditSettings,
    /// What the API allows a client before it closes the connection.
    pub http: HttpLimits,
    /// Sign-in with the organisation's identity provider (`[server.oidc]`);
    /// `None`: only the config's static tokens authenticate.
    pub oidc: Option<OidcSettings>,
    /// The longest an API token may live (`server.token_max_lifetime`).
    pub token_max_lifetime: Duration,
    /// SCIM provisioning (`[server.scim]`); `None`: no SCIM routes.
    pub scim: Option<ScimSettings>,
    /// How elevation claims are signed (`[server.elevation]`).
    pub elevation: ElevationSettings,
    /// The kinds of access-review campaign, by name (`[access_reviews.NAME]`).
    pub access_reviews: BTreeMap<String, airlock_core::access_review::Template>,
    /// Channels, routing and retries of notifications (`[notifications]`).
    pub notifications: NotificationSettings,
    /// The ticket system's signed webhook (`[tickets]`); `None`: it
    /// refuses every delivery.
    pub tickets: Option<TicketSettings>,
    /// The entitlements with an idle limit (`idle_limit`), and theirs.
    pub idle_limits: BTreeMap<airlock_core::EntitlementId, airlock_core::idle::IdleLimit>,
}

/// What the API allows one client, so that slow or silent connections cannot
/// pile up (`[server]` `header_timeout`, `body_timeout`, `idle_timeout`,
/// `max_connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's line and headers must arrive within this, counted from
    /// when the connection is ready for a request: a connection kept alive
    /// with nothing more to say is closed after it too.
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this once its headers have.
    pub body_timeout: Duration,
    /// A connection with no request being handled on which no byte moves
    /// either way this long is closed (a client that stops reading its
    /// response).
    pub idle_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed. The
    /// server lowers it further when the descriptor limit is too low to keep
    /// room for the store and connector calls.
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Signed checkpoints of the audit chain (the `[audit]` table).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The ed25519 signing key, outside the database (default
    /// `<data_dir>/audit/checkpoint.key`, created on first start).
    pub checkpoint_key: PathBuf,
    /// The append-only checkpoint log, one JSON line per checkpoint
    /// (default `<data_dir>/audit/checkpoints.jsonl`).
    pub checkpoint_log: PathBuf,
    /// How often the head is signed when it moved (default 5 minutes).
    pub checkpoint_every: Duration,
    /// Serve even though the chain is broken, recording that the operator
    /// chose to. Never read from the config file: only the command line
    /// (`--accept-broken-audit-chain`) sets it, for one start.
    pub accept_broken_chain: bool,
}

impl AuditSettings {
    /// The checkpoint key's path when the config names none.
    pub fn default_key(data_dir: &Path) -> PathBuf {
        data_dir.join("audit/checkpoint.key")
    }

    /// The checkpoint log's path when the config names none.
    pub fn default_log(data_dir: &Path) -> PathBuf {
        data_dir.join("audit/checkpoints.jsonl")
    }
}

/// How often the audit head is signed unless `audit.checkpoint_every` says otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(5 * 60);

/// How often active grants' sessions are sampled unless
/// `server.activity_sample_every` says otherwise.
pub const DEFAULT_ACTIVITY_SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// How often reconciliation runs unless `server.reconcile_every` says otherwise.
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole file as written, each table in the raw shape its module reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    users: BTreeMap<String, Spanned<users::RawUser>>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<tokens::RawService>>,
    #[serde(default)]
    connectors: BTreeMap<String, Spanned<connectors::RawConnector>>,
    #[serde(default)]
    entitlements: BTreeMap<String, Spanned<entitlements::RawEntitlement>>,
    policy: Option<Spanned<policy::RawPolicy>>,
    #[serde(default)]
    audit: audit::RawAudit,
    #[serde(default)]
    notifications: notifications::RawNotifications,
    #[serde(default)]
    access_reviews: BTreeMap<String, Spanned<access_reviews::RawTemplate>>,
    #[serde(default)]
    bundles: BTreeMap<String, Spanned<bundles::RawBundle>>,
    tickets: Option<Spanned<tickets::RawTickets>>,
}

impl Settings {
    /// Reads and validates a config file. Relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Settings::parse(&path.display().to_string(), &text, base)
    }

    /// Validates config text; `base` anchors relative paths.
    pub fn parse(path: &str, text: &str, base: &Path) -> Result<Settings, ConfigError> {
        let src = source::Source::new(path, text, base);
        let raw: RawConfig = src.deserialize()?;
        let server = server::server_table(&src, &raw.server)?;
        let audit = audit::audit_table(&src, &raw.audit, &server.data_dir)?;
        let elevation =
            elevation::elevation_table(&src, raw.server.elevation.as_ref(), &server.data_dir)?;
        let users::People {
            mut catalog,
            token_hashes,
            mut directory,
            emails,
        } = users::users_table(
            &src,
            &raw.users,
            server.oidc.is_some() || raw.server.scim.is_some(),
        )?;
        tokens::services(&src, &raw.services, &mut catalog, &mut directory)?;
        let token_max_lifetime =
            tokens::token_max_lifetime(&src, raw.server.token_max_lifetime.as_ref())?;
        let scim = raw
            .server
            .scim
            .as_ref()
            .map(|s| scim::settings(&src, s, &token_hashes))
            .transpose()?;
        let policy = policy::policy_table(&src, raw.policy.as_ref());
        let connectors = connectors::connectors_table(
            &src,
            &raw.connectors,
            &server.data_dir,
            server.lifecycle.claim_lease,
        )?;
        let entitlements = entitlements::entitlements_table(
            &src,
            &raw.entitlements,
            &entitlements::Known {
                users: &catalog.users,
                // Its tokens or its SCIM pushes bring members the config
                // cannot know.
                members_from_provider: server.oidc.is_some() || scim.is_some(),
                policy_folder: policy.dir.is_some(),
                connectors: &connectors,
                pending_timeout: server.lifecycle.pending_timeout,
            },
        )?;
        catalog.entitlements = entitlements.catalog;
        catalog.bundles = bundles::bundles_table(&src, &raw.bundles, &catalog.entitlements)?;
        let notifications = notifications::notifications_table(
            &src,
            &raw.notifications,
            &catalog.entitlements,
            emails,
            server.revocation_overdue_after,
        )?;
        directory.entitlements = entitlements.facts;
        let access_reviews = access_reviews::access_reviews_table(&src, &raw.access_reviews)?;
        let tickets = raw
            .tickets
            .as_ref()
            .map(|t| tickets::tickets_table(&src, t))
            .transpose()?;
        Ok(Settings {
            listen: server.listen,
            data_dir: server.data_dir,
            database: server.database,
            lifecycle: server.lifecycle,
            revocation_overdue_after: server.revocation_overdue_after,
            mfa_header: server.mfa_header,
            catalog,
            token_hashes,
            connectors,
            policy_source: PolicySource {
                dir: policy.dir,
                generated: entitlements.generated,
            },
            directory,
            policy_two_person: policy.two_person,
            reconcile_every: server.reconcile_every,
            activity_sample_every: server.activity_sample_every,
            audit,
            http: server.http,
            oidc: server.oidc,
            token_max_lifetime,
            scim,
            elevation,
            notifications,
            access_reviews,
            tickets,
            idle_limits: entitlements.idle,
        })
    }
}

/// SHA-256 of an API token, as stored in config.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A fresh random API token (hand it to the user; store only its hash).
pub fn new_token() -> String {
    format!("al_{}", hex::encode(rand::random::<[u8; 24]>()))
}
