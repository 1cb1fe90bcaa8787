//! The `[audit]` table: where the audit checkpoints' key and log live, and
//! how often the chain's head is signed.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{AuditSettings, ConfigError, DEFAULT_CHECKPOINT_EVERY};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    checkpoint_key: Option<String>,
    checkpoint_log: Option<String>,
    checkpoint_every: Option<Spanned<String>>,
}

pub(super) fn audit_table(
    src: &Source<'_>,
    audit: &RawAudit,
    data_dir: &Path,
) -> Result<AuditSettings, ConfigError> {
    let checkpoint_every = match &audit.checkpoint_every {
        None => DEFAULT_CHECKPOINT_EVERY,
        Some(raw) => {
            let every = src.duration("audit.checkpoint_every", raw)?;
            if every < Duration::from_secs(1) {
                return Err(src.error(raw.span(), "audit.checkpoint_every: must be at least 1s"));
            }
            every
        }
    };
    Ok(AuditSettings {
        checkpoint_key: audit
            .checkpoint_key
            .as_deref()
            .map_or_else(|| AuditSettings::default_key(data_dir), |p| src.resolve(p)),
        checkpoint_log: audit
            .checkpoint_log
            .as_deref()
            .map_or_else(|| AuditSettings::default_log(data_dir), |p| src.resolve(p)),
        checkpoint_every,
        accept_broken_chain: false,
    })
}
