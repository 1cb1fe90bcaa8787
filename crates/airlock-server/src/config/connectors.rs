//! The `[connectors.NAME]` tables: how to reach each target. Everything a
//! connector can check without reaching its target (identifiers, URLs,
//! secrets, key settings) is checked here, at load.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use airlock_connectors::mariadb::{MariaDbConnector, MariaDbSettings};
use airlock_connectors::postgres::{PostgresConnector, PostgresSettings};
use airlock_connectors::ssh::SshCaSettings;
use airlock_connectors::Mode;
use serde::Deserialize;
use toml::Spanned;

use super::source::{parse_duration, Source};
use super::{ConfigError, ConnectorSettings, Secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub(super) enum RawConnector {
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
pub(super) struct RawDatabaseConnector {
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

/// `claim_lease`: every connector's call timeout must be shorter, or a slow
/// call could overlap its own retry.
pub(super) fn connectors_table(
    src: &Source<'_>,
    raw: &BTreeMap<String, Spanned<RawConnector>>,
    data_dir: &Path,
    claim_lease: Duration,
) -> Result<BTreeMap<String, ConnectorSettings>, ConfigError> {
    let mut connectors = BTreeMap::new();
    for (name, conn) in raw {
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
                    program: src.resolve(program),
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
                        return Err(invalid("host", "is for MariaDB connectors only".to_owned()));
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
                        .map_or_else(|| data_dir.join("ssh").join(default), |p| src.resolve(p))
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
                            "name at least one address or CIDR block, or leave it out".to_owned(),
                        ))
                    }
                    Some(list) => Some(list.join(",")),
                };
                if let Some(t) = t {
                    settings.call_timeout = parse_duration(t).map_err(|e| invalid("timeout", e))?;
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
        if settings.timeout() >= claim_lease {
            return Err(src.error(
                span,
                format!(
                    "{}: must be shorter than server.claim_lease ({}s), or a slow call could overlap its retry",
                    field("timeout"),
                    claim_lease.as_secs()
                ),
            ));
        }
        connectors.insert(name.clone(), settings);
    }

    Ok(connectors)
}
