//! The `[notifications]` table: the channels messages go out on (SMTP, a
//! Slack-compatible incoming webhook, a signed JSON webhook), who hears what
//! by default and per entitlement, the expiry warning's lead time and how
//! failed sends are retried.

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_core::catalog::Entitlement;
use airlock_core::notify::{Audience, RetryPolicy, Routes, Routing};
use airlock_core::{EntitlementId, UserId};
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{ConfigError, Secret};

/// How SMTP connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, never skipped).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No TLS: only for a relay on the loopback interface.
    None,
}

/// One email channel.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `Name <address>` or a bare address.
    pub from: String,
    /// Addresses that receive every message of this channel besides the
    /// people it is about (a security team's mailbox).
    pub to: Vec<String>,
    pub timeout: Duration,
}

/// One channel, by kind.
#[derive(Debug, Clone)]
pub enum ChannelSettings {
    Smtp(SmtpSettings),
    /// A Slack-compatible incoming webhook (its URL is the secret).
    Slack {
        url: Secret,
        timeout: Duration,
    },
    /// A JSON document signed like the webhook connector's calls.
    Webhook {
        url: String,
        secret: Secret,
        timeout: Duration,
    },
}

/// Everything about notifications (empty: nothing is sent or written).
#[derive(Debug, Clone, Default)]
pub struct NotificationSettings {
    pub channels: BTreeMap<String, ChannelSettings>,
    pub routing: Routing,
    pub retry: RetryPolicy,
    /// Each config user's email address.
    pub emails: BTreeMap<UserId, String>,
    /// Sent, dropped and failed rows older than this leave the outbox
    /// (`notifications.keep_settled`); `None` without a `[notifications]`
    /// table, which writes none.
    pub keep_settled: Option<Duration>,
}

/// Settled outbox rows are kept a month unless the config says otherwise.
const DEFAULT_KEEP_SETTLED: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifications {
    #[serde(default)]
    channels: BTreeMap<String, Spanned<RawChannel>>,
    /// The default channels of each audience.
    approvers: Option<Vec<Spanned<String>>>,
    requester: Option<Vec<Spanned<String>>>,
    security: Option<Vec<Spanned<String>>>,
    /// Unset: the approvers' channels.
    reviewers: Option<Vec<Spanned<String>>>,
    /// The sponsors of external principals; unset: the requester's channels.
    sponsor: Option<Vec<Spanned<String>>>,
    /// Per entitlement: audiences routed differently.
    #[serde(default)]
    entitlements: BTreeMap<String, Spanned<RawRoutes>>,
    expiry_warning: Option<Spanned<String>>,
    retry_base: Option<Spanned<String>>,
    retry_cap: Option<Spanned<String>>,
    give_up_after: Option<Spanned<String>>,
    keep_settled: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoutes {
    approvers: Option<Vec<Spanned<String>>>,
    requester: Option<Vec<Spanned<String>>>,
    security: Option<Vec<Spanned<String>>>,
    reviewers: Option<Vec<Spanned<String>>>,
    sponsor: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawChannel {
    Smtp {
        host: String,
        port: Option<u16>,
        /// `starttls` (default), `tls` or `none`.
        tls: Option<String>,
        username: Option<String>,
        password_env: Option<String>,
        from: String,
        #[serde(default)]
        to: Vec<String>,
        timeout: Option<String>,
    },
    Slack {
        url: Option<String>,
        url_env: Option<String>,
        timeout: Option<String>,
    },
    Webhook {
        url: String,
        secret: Option<String>,
        secret_env: Option<String>,
        timeout: Option<String>,
    },
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const TIMEOUTS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(120));

/// An email address as the config gives it (`a@b.c` or `Name <a@b.c>`), checked.
pub(super) fn mailbox(
    src: &Source<'_>,
    field: &str,
    raw: &Spanned<String>,
) -> Result<String, ConfigError> {
    mailbox_at(src, raw.span(), field, raw.get_ref())
}

fn mailbox_at(
    src: &Source<'_>,
    span: std::ops::Range<usize>,
    field: &str,
    raw: &str,
) -> Result<String, ConfigError> {
    raw.parse::<lettre::message::Mailbox>()
        .map(|m| m.to_string())
        .map_err(|e| {
            src.error(
                span,
                format!("{field}: `{raw}` is not an email address ({e})"),
            )
        })
}

/// A value given either in the file or, for secrets, by the name of the
/// environment variable that holds it.
pub(super) fn value_or_env(
    field: &str,
    value: Option<&String>,
    env_field: &str,
    env: Option<&String>,
) -> Result<String, String> {
    match (value, env) {
        (Some(v), None) => Ok(v.clone()),
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("{env_field}: environment variable `{var}` is not set")),
        _ => Err(format!(
            "{field}: set exactly one of `{field}` and `{env_field}`"
        )),
    }
}

pub(super) fn notifications_table(
    src: &Source<'_>,
    raw: &RawNotifications,
    entitlements: &BTreeMap<EntitlementId, Entitlement>,
    emails: BTreeMap<UserId, String>,
    overdue_after: Duration,
) -> Result<NotificationSettings, ConfigError> {
    let mut channels = BTreeMap::new();
    for (name, channel) in &raw.channels {
        let span = channel.span();
        let prefix = format!("notifications.channels.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(src.error(
                span,
                format!("{prefix}: a channel name may hold only a-z, 0-9, `-` and `_`"),
            ));
        }
        let fail = |m: String| src.error(span.clone(), format!("{prefix}.{m}"));
        let timeout = |t: &Option<String>| match t {
            Some(t) => src.duration_between(
                &format!("{prefix}.timeout"),
                &Spanned::new(span.clone(), t.clone()),
                TIMEOUTS,
            ),
            None => Ok(DEFAULT_TIMEOUT),
        };
        let settings = match channel.get_ref() {
            RawChannel::Smtp {
                host,
                port,
                tls,
                username,
                password_env,
                from,
                to,
                timeout: t,
            } => {
                let tls = match tls.as_deref() {
                    None | Some("starttls") => SmtpTls::Starttls,
                    Some("tls") => SmtpTls::Tls,
                    Some("none") => SmtpTls::None,
                    Some(other) => {
                        return Err(fail(format!(
                            "tls: `{other}` is not one of `starttls`, `tls`, `none`"
                        )))
                    }
                };
                if tls == SmtpTls::None && !is_loopback(host) {
                    return Err(fail(format!(
                        "tls: `none` sends mail and passwords in the clear, so it is allowed only to a relay on this machine (127.0.0.1, ::1, localhost), not `{host}`"
                    )));
                }
                let password = match (username, password_env) {
                    (Some(_), Some(var)) => Some(Secret::new(
                        std::env::var(var)
                            .map_err(|_| {
                                fail(format!(
                                    "password_env: environment variable `{var}` is not set"
                                ))
                            })?
                            .into_bytes(),
                    )),
                    (None, None) => None,
                    _ => {
                        return Err(fail(
                            "username: give both `username` and `password_env`, or neither"
                                .to_owned(),
                        ))
                    }
                };
                ChannelSettings::Smtp(SmtpSettings {
                    host: host.clone(),
                    port: port.unwrap_or(match tls {
                        SmtpTls::Starttls => 587,
                        SmtpTls::Tls => 465,
                        SmtpTls::None => 25,
                    }),
                    tls,
                    username: username.clone(),
                    password,
                    from: mailbox_at(src, span.clone(), &format!("{prefix}.from"), from)?,
                    to: to
                        .iter()
                        .map(|a| mailbox_at(src, span.clone(), &format!("{prefix}.to"), a))
                        .collect::<Result<_, _>>()?,
                    timeout: timeout(t)?,
                })
            }
            RawChannel::Slack {
                url,
                url_env,
                timeout: t,
            } => {
                let url = value_or_env("url", url.as_ref(), "url_env", url_env.as_ref())
                    .map_err(&fail)?;
                check_url(&url).map_err(|m| fail(format!("url: {m}")))?;
                ChannelSettings::Slack {
                    url: Secret::new(url.into_bytes()),
                    timeout: timeout(t)?,
                }
            }
            RawChannel::Webhook {
                url,
                secret,
                secret_env,
                timeout: t,
            } => {
                check_url(url).map_err(|m| fail(format!("url: {m}")))?;
                let secret =
                    value_or_env("secret", secret.as_ref(), "secret_env", secret_env.as_ref())
                        .map_err(&fail)?;
                if secret.len() < 16 {
                    return Err(fail("secret: must be at least 16 characters".to_owned()));
                }
                ChannelSettings::Webhook {
                    url: url.clone(),
                    secret: Secret::new(secret.into_bytes()),
                    timeout: timeout(t)?,
                }
            }
        };
        channels.insert(name.clone(), settings);
    }
    let routes = |field: &str, raw: &RawRoutes| -> Result<Routes, ConfigError> {
        let one = |audience: Audience, list: &Option<Vec<Spanned<String>>>| {
            list.as_ref()
                .map(|names| {
                    names
                        .iter()
                        .map(|n| {
                            if channels.contains_key(n.get_ref()) {
                                Ok(n.get_ref().clone())
                            } else {
                                Err(src.error(
                                    n.span(),
                                    format!(
                                        "{field}{}: no channel `{}` in [notifications.channels]",
                                        audience.as_str(),
                                        n.get_ref()
                                    ),
                                ))
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()
        };
        Ok(Routes {
            approvers: one(Audience::Approvers, &raw.approvers)?,
            requester: one(Audience::Requester, &raw.requester)?,
            security: one(Audience::Security, &raw.security)?,
            reviewers: one(Audience::Reviewers, &raw.reviewers)?,
            sponsor: one(Audience::Sponsor, &raw.sponsor)?,
        })
    };
    let defaults = routes(
        "notifications.",
        &RawRoutes {
            approvers: raw.approvers.clone(),
            requester: raw.requester.clone(),
            security: raw.security.clone(),
            reviewers: raw.reviewers.clone(),
            sponsor: raw.sponsor.clone(),
        },
    )?;
    let mut per_entitlement = BTreeMap::new();
    for (name, raw_routes) in &raw.entitlements {
        let id = EntitlementId::parse(name)
            .ok()
            .filter(|id| entitlements.contains_key(id));
        let Some(id) = id else {
            return Err(src.error(
                raw_routes.span(),
                format!("notifications.entitlements: no entitlement `{name}`"),
            ));
        };
        let field = format!("notifications.entitlements.{name}.");
        per_entitlement.insert(id, routes(&field, raw_routes.get_ref())?);
    }
    let duration = |field: &str, raw: &Option<Spanned<String>>, default: Duration| match raw {
        Some(raw) => src.duration(&format!("notifications.{field}"), raw),
        None => Ok(default),
    };
    let defaults_retry = RetryPolicy::default();
    let retry = RetryPolicy {
        base: duration("retry_base", &raw.retry_base, defaults_retry.base)?,
        cap: duration("retry_cap", &raw.retry_cap, defaults_retry.cap)?,
        give_up_after: duration(
            "give_up_after",
            &raw.give_up_after,
            defaults_retry.give_up_after,
        )?,
    };
    if retry.base.is_zero() || retry.cap < retry.base {
        let at = raw.retry_cap.as_ref().or(raw.retry_base.as_ref());
        return Err(src.error(
            at.map_or(0..0, Spanned::span),
            "notifications.retry_cap: must be at least retry_base, which must be more than zero",
        ));
    }
    let expiry_warning = match &raw.expiry_warning {
        Some(raw) => {
            Some(src.duration("notifications.expiry_warning", raw)?).filter(|d| !d.is_zero())
        }
        None => Some(Duration::from_secs(15 * 60)),
    };
    Ok(NotificationSettings {
        channels,
        routing: Routing {
            defaults,
            entitlements: per_entitlement,
            expiry_warning,
            overdue_after,
        },
        retry,
        emails,
        keep_settled: Some(match &raw.keep_settled {
            Some(raw) => src.duration_between(
                "notifications.keep_settled",
                raw,
                (
                    Duration::from_secs(3600),
                    Duration::from_secs(10 * 365 * 24 * 3600),
                ),
            )?,
            None => DEFAULT_KEEP_SETTLED,
        }),
    })
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err("must start with http:// or https://".to_owned())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
