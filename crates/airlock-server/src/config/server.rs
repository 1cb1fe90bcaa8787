//! The `[server]` table: where the server listens and keeps its data, the
//! lifecycle's timings, what a client may hold, and how callers' MFA is known.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use airlock_core::request::LifecycleSettings;
use serde::Deserialize;
use toml::Spanned;

use super::oidc::{oidc_settings, RawOidc};
use super::source::Source;
use super::{ConfigError, HttpLimits, DEFAULT_ACTIVITY_SAMPLE_EVERY, DEFAULT_RECONCILE_EVERY};
use crate::oidc::OidcSettings;
use crate::store::sql::Location;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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
    /// A duration, or `off` / `0s` for never.
    activity_sample_every: Option<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    oidc: Option<RawOidc>,
    /// Read by `tokens`.
    pub(super) token_max_lifetime: Option<Spanned<String>>,
    /// Read with the users (its token may not be one of theirs).
    pub(super) scim: Option<super::scim::RawScim>,
    /// Read once the data directory is known.
    pub(super) elevation: Option<super::elevation::RawElevation>,
}

/// What `[server]` says, validated.
pub(super) struct ServerTable {
    pub(super) listen: SocketAddr,
    pub(super) data_dir: PathBuf,
    pub(super) database: Location,
    pub(super) lifecycle: LifecycleSettings,
    pub(super) revocation_overdue_after: Duration,
    pub(super) reconcile_every: Option<Duration>,
    pub(super) activity_sample_every: Option<Duration>,
    pub(super) http: HttpLimits,
    pub(super) oidc: Option<OidcSettings>,
    pub(super) mfa_header: Option<String>,
}

pub(super) fn server_table(
    src: &Source<'_>,
    server: &RawServer,
) -> Result<ServerTable, ConfigError> {
    let listen = match &server.listen {
        Some(l) => l
            .get_ref()
            .parse()
            .map_err(|e| src.error(l.span(), format!("server.listen: `{}` {e}", l.get_ref())))?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let data_dir = src.resolve(server.data_dir.as_deref().unwrap_or("airlock-data"));
    let database = match server.database.as_deref().map(Location::parse) {
        None => Location::Sqlite(data_dir.join("airlock.db")),
        Some(Location::Sqlite(path)) => Location::Sqlite(src.resolve(&path.to_string_lossy())),
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
    lifecycle.retry_base = opt_duration("retry_base", &server.retry_base, lifecycle.retry_base)?;
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
    // A period of some background work: at least a second, or off.
    let every = |field: &str, raw: &Option<Spanned<String>>, default: Duration| match raw {
        None => Ok(Some(default)),
        Some(raw) if raw.get_ref().trim() == "off" => Ok(None),
        Some(raw) => {
            let every = src.duration(field, raw)?;
            if every.is_zero() {
                Ok(None)
            } else if every < Duration::from_secs(1) {
                Err(src.error(
                    raw.span(),
                    format!("{field}: must be at least 1s (or `off`)"),
                ))
            } else {
                Ok(Some(every))
            }
        }
    };
    let reconcile_every = every(
        "server.reconcile_every",
        &server.reconcile_every,
        DEFAULT_RECONCILE_EVERY,
    )?;
    let activity_sample_every = every(
        "server.activity_sample_every",
        &server.activity_sample_every,
        DEFAULT_ACTIVITY_SAMPLE_EVERY,
    )?;
    let oidc = server
        .oidc
        .as_ref()
        .map(|o| oidc_settings(src, o))
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

    Ok(ServerTable {
        listen,
        data_dir,
        database,
        lifecycle,
        revocation_overdue_after,
        reconcile_every,
        activity_sample_every,
        http: http_limits(src, server)?,
        oidc,
        mfa_header,
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
