//! The `[server.scim]` table: the provisioning token the identity provider
//! pushes people and groups with (SCIM 2.0). Unset, no SCIM route is served.

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScim {
    token_sha256: Spanned<String>,
    base_url: Option<Spanned<String>>,
}

/// What the SCIM API needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimSettings {
    /// SHA-256 (hex, lower case) of the provisioning bearer token.
    pub token_sha256: String,
    /// Where the identity provider reaches Airlock (`https://airlock.example.com`),
    /// for the absolute `meta.location` of each resource; unset, the
    /// request's `Host` is used with `http://`.
    pub base_url: Option<String>,
}

/// Checks `[server.scim]`; `user_hashes` are the users' token hashes, which
/// the provisioning token may not share.
pub(super) fn settings(
    src: &Source<'_>,
    raw: &RawScim,
    user_hashes: &std::collections::HashMap<String, airlock_core::UserId>,
) -> Result<ScimSettings, ConfigError> {
    let hash = raw.token_sha256.get_ref().trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(src.error(
            raw.token_sha256.span(),
            "server.scim.token_sha256: must be 64 hex characters (`airlock token` prints a token and its hash)",
        ));
    }
    if let Some(user) = user_hashes.get(&hash) {
        return Err(src.error(
            raw.token_sha256.span(),
            format!("server.scim.token_sha256: the same token is already user `{user}`'s; the provisioning token must be its own"),
        ));
    }
    let base_url = match &raw.base_url {
        None => None,
        Some(u) => {
            let url = u.get_ref().trim().trim_end_matches('/').to_owned();
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains(char::is_whitespace)
            {
                return Err(src.error(
                    u.span(),
                    format!(
                        "server.scim.base_url: `{}` must be an http(s) URL",
                        u.get_ref()
                    ),
                ));
            }
            Some(url)
        }
    };
    Ok(ScimSettings {
        token_sha256: hash,
        base_url,
    })
}
