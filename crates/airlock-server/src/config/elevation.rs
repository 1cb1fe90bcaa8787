//! The `[server.elevation]` table: how elevation claims are signed — the
//! issuer applications expect, how long a claim lasts at most, and where
//! the signing key lives (a key of its own, not the audit checkpoints').

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawElevation {
    issuer: Option<Spanned<String>>,
    lifetime: Option<Spanned<String>>,
    key: Option<String>,
}

/// How elevation claims are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElevationSettings {
    /// The `iss` of every claim, which applications compare exactly.
    pub issuer: String,
    /// The longest a claim lasts (never past its grant's expiry).
    pub lifetime: Duration,
    /// The Ed25519 signing key, created on the first start; replicas share it.
    pub key: PathBuf,
}

/// What a claim's issuer is unless `server.elevation.issuer` says.
pub const DEFAULT_ELEVATION_ISSUER: &str = "airlock";
/// How long a claim lasts unless `server.elevation.lifetime` says.
pub const DEFAULT_ELEVATION_LIFETIME: Duration = Duration::from_secs(5 * 60);

pub(super) fn elevation_table(
    src: &Source<'_>,
    raw: Option<&RawElevation>,
    data_dir: &Path,
) -> Result<ElevationSettings, ConfigError> {
    let raw = raw.unwrap_or(&RawElevation {
        issuer: None,
        lifetime: None,
        key: None,
    });
    let issuer = match &raw.issuer {
        None => DEFAULT_ELEVATION_ISSUER.to_owned(),
        Some(i) => {
            let text = i.get_ref().trim();
            if text.is_empty() || text.chars().any(char::is_control) {
                return Err(src.error(
                    i.span(),
                    "server.elevation.issuer: must be non-empty text (your Airlock's URL, say)",
                ));
            }
            text.to_owned()
        }
    };
    let lifetime = match &raw.lifetime {
        None => DEFAULT_ELEVATION_LIFETIME,
        Some(l) => src.duration_between(
            "server.elevation.lifetime",
            l,
            (Duration::from_secs(10), Duration::from_secs(3600)),
        )?,
    };
    Ok(ElevationSettings {
        issuer,
        lifetime,
        key: raw
            .key
            .as_deref()
            .map_or_else(|| data_dir.join("elevation.key"), |p| src.resolve(p)),
    })
}
