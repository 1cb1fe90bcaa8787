//! The `[server.oidc]` table: which identity provider's tokens the API
//! accepts, and how their claims become an Airlock user.

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::GroupName;
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;
use crate::oidc::OidcSettings;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
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
    /// What `airlock login` asks the provider for (`oidc::DEFAULT_SCOPES`).
    scopes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    mfa_acr_values: Vec<Spanned<String>>,
}

/// How far token times may be off unless `server.oidc.clock_skew` says.
pub const DEFAULT_OIDC_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How often an unknown key id may fetch the provider's keys again unless
/// `server.oidc.jwks_refetch_after` says.
pub const DEFAULT_JWKS_REFETCH_AFTER: Duration = Duration::from_secs(60);

/// The `[server.oidc]` table: which identity provider's tokens the API
/// accepts, and how their claims become an Airlock user.
pub(super) fn oidc_settings(src: &Source<'_>, raw: &RawOidc) -> Result<OidcSettings, ConfigError> {
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
        client_id: raw
            .client_id
            .as_ref()
            .map(|c| text("client_id", c))
            .transpose()?,
        scopes: match &raw.scopes {
            None => crate::oidc::DEFAULT_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            Some(list) => {
                let scopes: Vec<String> = list
                    .iter()
                    .map(|s| text("scopes", s))
                    .collect::<Result<_, _>>()?;
                if !scopes.iter().any(|s| s == "openid") {
                    let at = list.first().map_or(raw.issuer.span(), Spanned::span);
                    return Err(src.error(
                        at,
                        "server.oidc.scopes: must include `openid` (`airlock login` sends the ID token)",
                    ));
                }
                scopes
            }
        },
        mfa_acr_values: raw
            .mfa_acr_values
            .iter()
            .map(|v| text("mfa_acr_values", v))
            .collect::<Result<_, _>>()?,
    })
}
