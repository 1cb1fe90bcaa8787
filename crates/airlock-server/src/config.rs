//! Loads and validates the TOML config once at start into typed settings.
//!
//! Every error names the file, line, column and the field at fault, and a
//! config that fails validation is never partly applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_connectors::mariadb::{MariaDbConnector, MariaDbSettings};
use airlock_connectors::postgres::{PostgresConnector, PostgresSettings};
use airlock_connectors::ssh::SshCaSettings;
use airlock_connectors::Mode;
use airlock_core::catalog::{Catalog, Entitlement, Role, TicketPattern, TicketRule, User};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::LifecycleSettings;
use airlock_core::{EntitlementId, GroupName, UserId};
use airlock_policy::{Directory, EntitlementFacts, UserFacts};
use serde::Deserialize;
use toml::Spanned;

use crate::oidc::OidcSettings;
use crate::policy::{shorthand_policies, PolicySource};
use crate::store::sql::Location;

mod tokens;

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
    /// Signed checkpoints of the audit chain.
    pub audit: AuditSettings,
    /// What the API allows a client before it closes the connection.
    pub http: HttpLimits,
    /// Sign-in with the organisation's identity provider (`[server.oidc]`);
    /// `None`: only the config's static tokens authenticate.
    pub oidc: Option<OidcSettings>,
    /// The longest an API token may live (`server.token_max_lifetime`).
    pub token_max_lifetime: Duration,
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

/// How often the audit head is signed unless `audit.checkpoint_every` says otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(5 * 60);

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    users: BTreeMap<String, Spanned<RawUser>>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<tokens::RawService>>,
    #[serde(default)]
    connectors: BTreeMap<String, Spanned<RawConnector>>,
    #[serde(default)]
    entitlements: BTreeMap<String, Spanned<RawEntitlement>>,
    policy: Option<Spanned<RawPolicy>>,
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_key: Option<String>,
    checkpoint_log: Option<String>,
    checkpoint_every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Folder of `*.cedar` files, relative to the config file.
    dir: Option<String>,
    #[serde(default)]
    two_person: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    data_dir: Option<String>,
    database: Option<String>,
    pending_timeout: Option<Spanned<String>>,
    claim_lease: Option<Spanned<String>>,
    grant_max_attempts: Option<Spanned<u32>>,
    retry_base: Option<Spanned<String>>,
    retry_cap: Option<Spanned<String>>,
    revocation_overdue_after: Option<Spanned<String>>,
    mfa_header: Option<Spanned<String>>,
    /// A duration, or `off` / `0s` for never.
    reconcile_every: Option<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    oidc: Option<RawOidc>,
    token_max_lifetime: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: Spanned<String>,
    audience: Spanned<String>,
    client_id: Option<Spanned<String>>,
    username_claim: Option<Spanned<String>>,
    groups_claim: Option<Spanned<String>>,
    #[serde(default)]
    admin_groups: Vec<Spanned<String>>,
    #[serde(default)]
    auditor_groups: Vec<Spanned<String>>,
    clock_skew: Option<Spanned<String>>,
    jwks_refetch_after: Option<Spanned<String>>,
}

/// How far token times may be off unless `server.oidc.clock_skew` says.
pub const DEFAULT_OIDC_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How often an unknown key id may fetch the provider's keys again unless
/// `server.oidc.jwks_refetch_after` says.
pub const DEFAULT_JWKS_REFETCH_AFTER: Duration = Duration::from_secs(60);

/// The `[server.oidc]` table: which identity provider's tokens the API
/// accepts, and how their claims become an Airlock user.
fn oidc_settings(src: &Source<'_>, raw: &RawOidc) -> Result<OidcSettings, ConfigError> {
    let issuer = raw.issuer.get_ref().trim();
    crate::oidc::trusted_url(issuer)
        .map_err(|e| src.error(raw.issuer.span(), format!("server.oidc.issuer: {e}")))?;
    let text = |field: &str, value: &Spanned<String>| {
        let v = value.get_ref().trim();
        if v.is_empty() {
            Err(src.error(
                value.span(),
                format!("server.oidc.{field}: must not be empty"),
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let mut audiences = vec![text("audience", &raw.audience)?];
    if let Some(client_id) = &raw.client_id {
        audiences.push(text("client_id", client_id)?);
    }
    let claim = |field: &str, value: &Option<Spanned<String>>, default: &str| {
        value
            .as_ref()
            .map_or(Ok(default.to_owned()), |v| text(field, v))
    };
    let groups = |field: &str, list: &[Spanned<String>]| {
        list.iter()
            .map(|g| src.id(&format!("server.oidc.{field}"), g, GroupName::parse))
            .collect::<Result<BTreeSet<_>, _>>()
    };
    let bounded = |field: &str,
                   value: &Option<Spanned<String>>,
                   default: Duration,
                   range: (Duration, Duration)| {
        value.as_ref().map_or(Ok(default), |v| {
            src.duration_between(&format!("server.oidc.{field}"), v, range)
        })
    };
    Ok(OidcSettings {
        issuer: issuer.to_owned(),
        audiences,
        username_claim: claim("username_claim", &raw.username_claim, "preferred_username")?,
        groups_claim: claim("groups_claim", &raw.groups_claim, "groups")?,
        admin_groups: groups("admin_groups", &raw.admin_groups)?,
        auditor_groups: groups("auditor_groups", &raw.auditor_groups)?,
        clock_skew: bounded(
            "clock_skew",
            &raw.clock_skew,
            DEFAULT_OIDC_CLOCK_SKEW,
            (Duration::ZERO, Duration::from_secs(300)),
        )?,
        refetch_after: bounded(
            "jwks_refetch_after",
            &raw.jwks_refetch_after,
            DEFAULT_JWKS_REFETCH_AFTER,
            (Duration::from_secs(1), Duration::from_secs(3600)),
        )?,
    })
}

/// The shortest and longest timeout the API accepts for a client.
const HTTP_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// The most connections the API can be told to serve at once.
const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;

/// The `[server]` keys that bound what a client may hold.
fn http_limits(src: &Source<'_>, server: &RawServer) -> Result<HttpLimits, ConfigError> {
    let defaults = HttpLimits::default();
    let (shortest, longest) = HTTP_TIMEOUT_RANGE;
    let timeout = |key: &str, raw: &Option<Spanned<String>>, default: Duration| {
        let Some(raw) = raw else {
            return Ok(default);
        };
        src.duration_between(&format!("server.{key}"), raw, (shortest, longest))
    };
    let max_connections = match &server.max_connections {
        None => defaults.max_connections,
        Some(n) if (1..=MAX_CONNECTIONS_LIMIT).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            return Err(src.error(
                n.span(),
                format!(
                    "server.max_connections: `{}` must be between 1 and {MAX_CONNECTIONS_LIMIT}",
                    n.get_ref()
                ),
            ))
        }
    };
    Ok(HttpLimits {
        header_timeout: timeout(
            "header_timeout",
            &server.header_timeout,
            defaults.header_timeout,
        )?,
        body_timeout: timeout("body_timeout", &server.body_timeout, defaults.body_timeout)?,
        idle_timeout: timeout("idle_timeout", &server.idle_timeout, defaults.idle_timeout)?,
        max_connections,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    token_sha256: Option<Spanned<String>>,
    /// Attributes policies may look at.
    #[serde(default)]
    team: String,
    employment: Option<Spanned<String>>,
    #[serde(default)]
    on_call: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
enum RawConnector {
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Variables of the server's own environment the program receives;
        /// it gets nothing else of it.
        #[serde(default)]
        pass_env: Vec<String>,
        timeout: Option<String>,
    },
    Webhook {
        url: String,
        secret: Option<String>,
        secret_env: Option<String>,
        timeout: Option<String>,
    },
    Postgres(RawDatabaseConnector),
    Mariadb(RawDatabaseConnector),
    #[serde(rename = "ssh_ca")]
    SshCa {
        /// Default `<data_dir>/ssh/ca_ed25519`.
        ca_key: Option<String>,
        principals: Vec<String>,
        /// Default `<data_dir>/ssh/revoked.krl`.
        krl: Option<String>,
        /// Default `<data_dir>/ssh/state`.
        state_dir: Option<String>,
        /// Default: what `ssh-keygen -s` grants.
        extensions: Option<Vec<String>>,
        source_address: Option<Vec<String>>,
        timeout: Option<String>,
    },
}

/// Settings shared by the PostgreSQL and MariaDB connectors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabaseConnector {
    url: Option<String>,
    url_env: Option<String>,
    roles: Vec<String>,
    /// `grant` (default) or `temporary_login`.
    mode: Option<String>,
    login_template: Option<String>,
    terminate_sessions: Option<bool>,
    /// PostgreSQL only.
    log_statements: Option<String>,
    /// MariaDB only.
    host: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    #[serde(default)]
    description: String,
    #[serde(default)]
    requestable_by: Vec<Spanned<String>>,
    max_duration: Spanned<String>,
    default_duration: Option<Spanned<String>>,
    #[serde(default = "yes")]
    require_reason: bool,
    #[serde(default)]
    require_ticket: bool,
    ticket_pattern: Option<Spanned<String>>,
    #[serde(default)]
    auto_approve: bool,
    approvals_required: Option<Spanned<u32>>,
    #[serde(default)]
    approvers: Vec<Spanned<String>>,
    connector: Spanned<String>,
    /// 0 (harmless) to 3 (production data, admin rights); policies may look at it.
    sensitivity: Option<Spanned<i64>>,
    owner_group: Option<Spanned<String>>,
    /// `report` (default) or `revoke`: what reconciliation does with holders
    /// of the connector that no grant explains.
    drift: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// Collects the location of a config error and formats it.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        let before = self
            .text
            .get(..span.start.min(self.text.len()))
            .unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn duration(&self, field: &str, raw: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(raw.get_ref()).map_err(|e| self.error(raw.span(), format!("{field}: {e}")))
    }

    /// A duration that must lie within `range` (both ends included).
    fn duration_between(
        &self,
        field: &str,
        raw: &Spanned<String>,
        (shortest, longest): (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let value = self.duration(field, raw)?;
        if value < shortest || value > longest {
            return Err(self.error(
                raw.span(),
                format!(
                    "{field}: `{}` must be between {} and {}",
                    raw.get_ref(),
                    humantime::format_duration(shortest),
                    humantime::format_duration(longest)
                ),
            ));
        }
        Ok(value)
    }

    fn id<T>(
        &self,
        field: &str,
        raw: &Spanned<String>,
        parse: fn(&str) -> Result<T, airlock_core::IdError>,
    ) -> Result<T, ConfigError> {
        parse(raw.get_ref())
            .map_err(|e| self.error(raw.span(), format!("{field}: `{}` {e}", raw.get_ref())))
    }
}

/// The dotted path of a field, without the segments toml's `Spanned`
/// adds internally.
fn toml_field(path: &serde_path_to_error::Path) -> String {
    path.iter()
        .map(ToString::to_string)
        .filter(|s| !s.starts_with("$__") && s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses `"90s"`, `"2h"`, `"1h 30m"`, or a plain number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if raw.bytes().all(|b| b == b'0') && !raw.is_empty() {
        return Ok(Duration::ZERO);
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        // A bare number is too easy to mean minutes or hours by (zero is
        // zero in any unit).
        return Err(format!(
            "`{raw}` has no unit; say which, e.g. `{raw}s`, `{raw}m` or `{raw}h`"
        ));
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("`{raw}` is not a duration ({e}); use e.g. `90s`, `30m`, `2h`"))
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
        let src = Source { path, text };
        // serde_path_to_error names the field of a type error, which toml's
        // own message leaves out once it has a span.
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let field = toml_field(e.path());
                let e = e.into_inner();
                let message = e.message().trim();
                let message = if field.is_empty() {
                    message.to_owned()
                } else {
                    format!("{field}: {message}")
                };
                src.error(e.span().unwrap_or(0..0), message)
            })?;
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            let joined = if p.is_absolute() { p } else { base.join(p) };
            // Drop `.` components so logs show `dir/airlock.db`, not `dir/./airlock.db`.
            joined
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect::<PathBuf>()
        };

        let server = &raw.server;
        let listen = match &server.listen {
            Some(l) => l.get_ref().parse().map_err(|e| {
                src.error(l.span(), format!("server.listen: `{}` {e}", l.get_ref()))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let data_dir = resolve(server.data_dir.as_deref().unwrap_or("airlock-data"));
        let database = match server.database.as_deref().map(Location::parse) {
            None => Location::Sqlite(data_dir.join("airlock.db")),
            Some(Location::Sqlite(path)) => Location::Sqlite(resolve(&path.to_string_lossy())),
            Some(postgres) => postgres,
        };
        let mut lifecycle = LifecycleSettings::default();
        let opt_duration = |field: &str, raw: &Option<Spanned<String>>, default: Duration| {
            raw.as_ref()
                .map_or(Ok(default), |r| src.duration(&format!("server.{field}"), r))
        };
        lifecycle.pending_timeout = opt_duration(
            "pending_timeout",
            &server.pending_timeout,
            lifecycle.pending_timeout,
        )?;
        lifecycle.claim_lease =
            opt_duration("claim_lease", &server.claim_lease, lifecycle.claim_lease)?;
        lifecycle.retry_base =
            opt_duration("retry_base", &server.retry_base, lifecycle.retry_base)?;
        lifecycle.retry_cap = opt_duration("retry_cap", &server.retry_cap, lifecycle.retry_cap)?;
        if let Some(n) = &server.grant_max_attempts {
            if *n.get_ref() == 0 {
                return Err(src.error(n.span(), "server.grant_max_attempts: must be at least 1"));
            }
            lifecycle.grant_max_attempts = *n.get_ref();
        }
        let revocation_overdue_after = opt_duration(
            "revocation_overdue_after",
            &server.revocation_overdue_after,
            Duration::from_secs(60),
        )?;
        let reconcile_every = match &server.reconcile_every {
            None => Some(DEFAULT_RECONCILE_EVERY),
            Some(raw) if raw.get_ref().trim() == "off" => None,
            Some(raw) => {
                let every = src.duration("server.reconcile_every", raw)?;
                if every.is_zero() {
                    None
                } else if every < Duration::from_secs(1) {
                    return Err(src.error(
                        raw.span(),
                        "server.reconcile_every: must be at least 1s (or `off`)",
                    ));
                } else {
                    Some(every)
                }
            }
        };
        let audit = &raw.audit;
        let checkpoint_every = match &audit.checkpoint_every {
            None => DEFAULT_CHECKPOINT_EVERY,
            Some(raw) => {
                let every = src.duration("audit.checkpoint_every", raw)?;
                if every < Duration::from_secs(1) {
                    return Err(
                        src.error(raw.span(), "audit.checkpoint_every: must be at least 1s")
                    );
                }
                every
            }
        };
        let audit = AuditSettings {
            checkpoint_key: audit
                .checkpoint_key
                .as_deref()
                .map_or_else(|| data_dir.join("audit/checkpoint.key"), resolve),
            checkpoint_log: audit
                .checkpoint_log
                .as_deref()
                .map_or_else(|| data_dir.join("audit/checkpoints.jsonl"), resolve),
            checkpoint_every,
            accept_broken_chain: false,
        };
        let http = http_limits(&src, server)?;
        let oidc = server
            .oidc
            .as_ref()
            .map(|o| oidc_settings(&src, o))
            .transpose()?;
        let mfa_header = match &server.mfa_header {
            Some(h) => {
                let name = h.get_ref().trim().to_ascii_lowercase();
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(src.error(
                        h.span(),
                        format!(
                            "server.mfa_header: `{}` is not an HTTP header name",
                            h.get_ref()
                        ),
                    ));
                }
                Some(name)
            }
            None => None,
        };

        let mut catalog = Catalog::default();
        let mut token_hashes = HashMap::new();
        let mut directory = Directory::default();
        for (name, user) in &raw.users {
            let span = user.span();
            let id = UserId::parse(name)
                .map_err(|e| src.error(span.clone(), format!("users: `{name}` {e}")))?;
            let user = user.get_ref();
            let user_raw = user;
            let groups = user
                .groups
                .iter()
                .map(|g| src.id(&format!("users.{name}.groups"), g, GroupName::parse))
                .collect::<Result<BTreeSet<_>, _>>()?;
            let roles = user
                .roles
                .iter()
                .map(|r| {
                    Role::parse(r.get_ref()).ok_or_else(|| {
                        src.error(
                            r.span(),
                            format!(
                                "users.{name}.roles: unknown role `{}` (known: admin, auditor)",
                                r.get_ref()
                            ),
                        )
                    })
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            if let Some(t) = &user.token_sha256 {
                let hash = t.get_ref().to_ascii_lowercase();
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(src.error(
                        t.span(),
                        format!("users.{name}.token_sha256: must be 64 hex characters (`airlock token` prints a token and its hash)"),
                    ));
                }
                if token_hashes.insert(hash, id.clone()).is_some() {
                    return Err(src.error(t.span(), format!("users.{name}.token_sha256: the same token is already used by another user")));
                }
            }
            let employment = match &user.employment {
                Some(e) if e.get_ref().trim().is_empty() => {
                    return Err(src.error(
                        e.span(),
                        format!("users.{name}.employment: must not be empty"),
                    ))
                }
                Some(e) => e.get_ref().clone(),
                None => "employee".to_owned(),
            };
            let user = User::person(id, groups, roles);
            directory.users.insert(
                user.id.clone(),
                UserFacts::from_user(&user, &user_team(user_raw), &employment, user_raw.on_call),
            );
            catalog.users.insert(user.id.clone(), user);
        }
        tokens::services(&src, &raw.services, &mut catalog, &mut directory)?;
        let token_max_lifetime =
            tokens::token_max_lifetime(&src, raw.server.token_max_lifetime.as_ref())?;

        let policy_dir = raw
            .policy
            .as_ref()
            .and_then(|p| p.get_ref().dir.as_deref())
            .map(resolve);
        let policy_two_person = raw.policy.as_ref().is_some_and(|p| p.get_ref().two_person);
        let mut generated = Vec::new();

        let mut connectors = BTreeMap::new();
        for (name, conn) in &raw.connectors {
            let span = conn.span();
            let field = |f: &str| format!("connectors.{name}.{f}");
            let timeout = |t: &Option<String>| {
                t.as_deref()
                    .map_or(Ok(Duration::from_secs(30)), parse_duration)
                    .map_err(|e| src.error(span.clone(), format!("{}: {e}", field("timeout"))))
            };
            let settings = match conn.get_ref() {
                RawConnector::Command {
                    program,
                    args,
                    env,
                    pass_env,
                    timeout: t,
                } => {
                    let mut env: Vec<(String, String)> =
                        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    for var in pass_env {
                        if env.iter().any(|(k, _)| k == var) {
                            return Err(src.error(
                                span.clone(),
                                format!(
                                    "{}: `{var}` is also set in `env`; name it in one of them",
                                    field("pass_env")
                                ),
                            ));
                        }
                        let value = std::env::var(var).map_err(|_| {
                            src.error(
                                span.clone(),
                                format!(
                                    "{}: environment variable `{var}` is not set",
                                    field("pass_env")
                                ),
                            )
                        })?;
                        env.push((var.clone(), value));
                    }
                    ConnectorSettings::Command {
                        program: resolve(program),
                        args: args.clone(),
                        env,
                        timeout: timeout(t)?,
                    }
                }
                RawConnector::Webhook {
                    url,
                    secret,
                    secret_env,
                    timeout: t,
                } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(src.error(
                            span,
                            format!(
                                "{}: `{url}` must start with http:// or https://",
                                field("url")
                            ),
                        ));
                    }
                    let secret = match (secret, secret_env) {
                        (Some(s), None) => s.clone(),
                        (None, Some(var)) => std::env::var(var).map_err(|_| {
                            src.error(
                                span.clone(),
                                format!(
                                    "{}: environment variable `{var}` is not set",
                                    field("secret_env")
                                ),
                            )
                        })?,
                        _ => {
                            return Err(src.error(
                                span,
                                format!(
                                    "{}: set exactly one of `secret` and `secret_env`",
                                    field("secret")
                                ),
                            ))
                        }
                    };
                    if secret.len() < 16 {
                        return Err(src.error(
                            span,
                            format!("{}: must be at least 16 characters", field("secret")),
                        ));
                    }
                    ConnectorSettings::Webhook {
                        url: url.clone(),
                        secret: Secret::new(secret.into_bytes()),
                        timeout: timeout(t)?,
                    }
                }
                RawConnector::Postgres(raw) | RawConnector::Mariadb(raw) => {
                    let postgres = matches!(conn.get_ref(), RawConnector::Postgres(_));
                    let invalid =
                        |f: &str, m: String| src.error(span.clone(), format!("{}: {m}", field(f)));
                    let url = match (&raw.url, &raw.url_env) {
                        (Some(u), None) => u.clone(),
                        (None, Some(var)) => std::env::var(var).map_err(|_| {
                            invalid(
                                "url_env",
                                format!("environment variable `{var}` is not set"),
                            )
                        })?,
                        _ => {
                            return Err(invalid(
                                "url",
                                "set exactly one of `url` and `url_env`".to_owned(),
                            ))
                        }
                    };
                    let mode = match raw.mode.as_deref() {
                        None | Some("grant") => Mode::Grant,
                        Some("temporary_login") => Mode::TemporaryLogin,
                        Some(other) => {
                            return Err(invalid(
                                "mode",
                                format!("unknown mode `{other}` (known: grant, temporary_login)"),
                            ))
                        }
                    };
                    if raw.roles.is_empty() {
                        return Err(invalid("roles", "name at least one role".to_owned()));
                    }
                    let timeout = raw
                        .timeout
                        .as_deref()
                        .map_or(Ok(Duration::from_secs(10)), parse_duration)
                        .map_err(|e| invalid("timeout", e))?;
                    // Constructing the connector checks every identifier, so an
                    // unquotable role or login is refused here, at load.
                    let refuse = |e: airlock_connectors::ConnectorError| {
                        invalid("roles", e.message().to_owned())
                    };
                    if postgres {
                        if raw.host.is_some() {
                            return Err(invalid(
                                "host",
                                "is for MariaDB connectors only".to_owned(),
                            ));
                        }
                        let mut settings = PostgresSettings::new(url, raw.roles.clone(), mode);
                        settings.timeout = timeout;
                        settings.log_statements.clone_from(&raw.log_statements);
                        if let Some(t) = &raw.login_template {
                            settings.login_template.clone_from(t);
                        }
                        if let Some(t) = raw.terminate_sessions {
                            settings.terminate_sessions = t;
                        }
                        PostgresConnector::new(settings.clone()).map_err(refuse)?;
                        ConnectorSettings::Postgres(settings)
                    } else {
                        if raw.log_statements.is_some() {
                            return Err(invalid(
                                "log_statements",
                                "is for PostgreSQL connectors only".to_owned(),
                            ));
                        }
                        let mut settings = MariaDbSettings::new(url, raw.roles.clone(), mode);
                        settings.timeout = timeout;
                        if let Some(t) = &raw.login_template {
                            settings.login_template.clone_from(t);
                        }
                        if let Some(h) = &raw.host {
                            settings.host.clone_from(h);
                        }
                        if let Some(t) = raw.terminate_sessions {
                            settings.terminate_sessions = t;
                        }
                        MariaDbConnector::new(settings.clone()).map_err(refuse)?;
                        ConnectorSettings::MariaDb(settings)
                    }
                }
                RawConnector::SshCa {
                    ca_key,
                    principals,
                    krl,
                    state_dir,
                    extensions,
                    source_address,
                    timeout: t,
                } => {
                    let invalid =
                        |f: &str, m: String| src.error(span.clone(), format!("{}: {m}", field(f)));
                    let path = |raw: &Option<String>, default: &str| {
                        raw.as_deref()
                            .map_or_else(|| data_dir.join("ssh").join(default), resolve)
                    };
                    let mut settings = SshCaSettings::new(
                        path(ca_key, "ca_ed25519"),
                        principals.clone(),
                        path(krl, "revoked.krl"),
                        path(state_dir, "state"),
                    );
                    if let Some(extensions) = extensions {
                        settings.extensions.clone_from(extensions);
                    }
                    settings.source_address = match source_address.as_deref() {
                        None => None,
                        Some([]) => {
                            return Err(invalid(
                                "source_address",
                                "name at least one address or CIDR block, or leave it out"
                                    .to_owned(),
                            ))
                        }
                        Some(list) => Some(list.join(",")),
                    };
                    if let Some(t) = t {
                        settings.call_timeout =
                            parse_duration(t).map_err(|e| invalid("timeout", e))?;
                    }
                    // Checks only; the key is made when the server starts.
                    settings.validate().map_err(|e| {
                        let f = match e.field {
                            "call_timeout" => "timeout",
                            other => other,
                        };
                        invalid(f, e.message)
                    })?;
                    ConnectorSettings::SshCa(settings)
                }
            };
            if settings.timeout() >= lifecycle.claim_lease {
                return Err(src.error(
                    span,
                    format!(
                        "{}: must be shorter than server.claim_lease ({}s), or a slow call could overlap its retry",
                        field("timeout"),
                        lifecycle.claim_lease.as_secs()
                    ),
                ));
            }
            connectors.insert(name.clone(), settings);
        }

        for (name, ent) in &raw.entitlements {
            let span = ent.span();
            let field = |f: &str| format!("entitlements.{name}.{f}");
            let id = EntitlementId::parse(name)
                .map_err(|e| src.error(span.clone(), format!("entitlements: `{name}` {e}")))?;
            let ent = ent.get_ref();
            let group_set =
                |f: &str, raw: &[Spanned<String>]| -> Result<BTreeSet<GroupName>, ConfigError> {
                    raw.iter()
                        .map(|g| {
                            let group = src.id(&field(f), g, GroupName::parse)?;
                            // With an identity provider, members come from its
                            // tokens, so the config cannot know them.
                            if oidc.is_none()
                                && !catalog.users.values().any(|u| u.groups.contains(&group))
                            {
                                return Err(src.error(
                                    g.span(),
                                    format!("{}: group `{group}` has no members", field(f)),
                                ));
                            }
                            Ok(group)
                        })
                        .collect()
                };
            let requestable_by = group_set("requestable_by", &ent.requestable_by)?;
            if requestable_by.is_empty() && policy_dir.is_none() {
                return Err(src.error(
                    span,
                    format!(
                        "{}: name at least one group (or write `request` policies in `policy.dir`)",
                        field("requestable_by")
                    ),
                ));
            }
            let max_duration = src.duration(&field("max_duration"), &ent.max_duration)?;
            if max_duration < Duration::from_secs(1) {
                return Err(src.error(
                    ent.max_duration.span(),
                    format!("{}: must be at least 1s", field("max_duration")),
                ));
            }
            let default_duration = match &ent.default_duration {
                Some(d) => {
                    let v = src.duration(&field("default_duration"), d)?;
                    if v > max_duration || v < Duration::from_secs(1) {
                        return Err(src.error(
                            d.span(),
                            format!(
                                "{}: must be between 1s and max_duration",
                                field("default_duration")
                            ),
                        ));
                    }
                    v
                }
                None => max_duration.min(Duration::from_secs(3600)),
            };
            let pattern = match &ent.ticket_pattern {
                Some(p) => Some(TicketPattern::new(p.get_ref()).map_err(|e| {
                    src.error(
                        p.span(),
                        format!(
                            "{}: invalid regular expression: {e}",
                            field("ticket_pattern")
                        ),
                    )
                })?),
                None => None,
            };
            // The shorthand compiles to Cedar (see `policy::shorthand_policies`);
            // without it, the policy folder must route the entitlement.
            let shorthand = !requestable_by.is_empty();
            let approvals = if ent.auto_approve {
                if !ent.approvers.is_empty() || ent.approvals_required.is_some() {
                    return Err(src.error(
                        span,
                        format!(
                            "{}: auto_approve = true takes no approvers",
                            field("approvers")
                        ),
                    ));
                }
                None
            } else if !shorthand && ent.approvers.is_empty() && ent.approvals_required.is_none() {
                None
            } else {
                let from = group_set("approvers", &ent.approvers)?;
                if from.is_empty() {
                    return Err(src.error(
                        span,
                        format!(
                            "{}: name at least one group, or set auto_approve = true",
                            field("approvers")
                        ),
                    ));
                }
                let count = ent.approvals_required.as_ref().map_or(1, |c| *c.get_ref());
                let eligible = catalog.users.values().filter(|u| u.in_any(&from)).count();
                let too_many =
                    oidc.is_none() && usize::try_from(count).unwrap_or(usize::MAX) > eligible;
                if count == 0 || too_many {
                    let at = ent
                        .approvals_required
                        .as_ref()
                        .map_or(span.clone(), Spanned::span);
                    let bound = if oidc.is_some() {
                        "must be at least 1".to_owned()
                    } else {
                        format!("must be between 1 and the {eligible} users in the approver groups")
                    };
                    return Err(src.error(at, format!("{}: {bound}", field("approvals_required"))));
                }
                Some((count, from))
            };
            let sensitivity = match &ent.sensitivity {
                Some(s) if !(0..=3).contains(s.get_ref()) => {
                    return Err(src.error(
                        s.span(),
                        format!("{}: must be between 0 and 3", field("sensitivity")),
                    ))
                }
                Some(s) => *s.get_ref(),
                None => 0,
            };
            let owner_group = ent
                .owner_group
                .as_ref()
                .map(|g| src.id(&field("owner_group"), g, GroupName::parse))
                .transpose()?;
            directory.entitlements.insert(
                id.clone(),
                EntitlementFacts {
                    id: id.clone(),
                    sensitivity,
                    owner_group,
                },
            );
            let text = shorthand_policies(
                &id,
                &requestable_by,
                ent.auto_approve && shorthand,
                approvals.as_ref().map(|(n, g)| (*n, g)),
            );
            if !text.is_empty() {
                generated.push((format!("{path} [entitlements.{name}]"), text));
            }
            let drift = match &ent.drift {
                None => DriftPolicy::default(),
                Some(raw) => DriftPolicy::parse(raw.get_ref().trim()).ok_or_else(|| {
                    src.error(
                        raw.span(),
                        format!(
                            "{}: unknown setting `{}` (known: report, revoke)",
                            field("drift"),
                            raw.get_ref()
                        ),
                    )
                })?,
            };
            let connector = ent.connector.get_ref().clone();
            if !connectors.contains_key(&connector) {
                return Err(src.error(
                    ent.connector.span(),
                    format!(
                        "{}: no connector named `{connector}` is configured",
                        field("connector")
                    ),
                ));
            }
            catalog.entitlements.insert(
                id.clone(),
                Entitlement {
                    id,
                    description: ent.description.clone(),
                    max_duration,
                    default_duration,
                    reason_required: ent.require_reason,
                    ticket: TicketRule {
                        required: ent.require_ticket,
                        pattern,
                    },
                    connector,
                    drift,
                },
            );
        }

        Ok(Settings {
            listen,
            data_dir,
            database,
            lifecycle,
            revocation_overdue_after,
            mfa_header,
            catalog,
            token_hashes,
            connectors,
            policy_source: PolicySource {
                dir: policy_dir,
                generated,
            },
            directory,
            policy_two_person,
            reconcile_every,
            audit,
            http,
            oidc,
            token_max_lifetime,
        })
    }
}

fn user_team(user: &RawUser) -> String {
    user.team.trim().to_owned()
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
