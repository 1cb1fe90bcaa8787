//! The `[policy]` table: the folder the Cedar policy set is read from, and
//! whether changing it needs a second admin.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::source::Source;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    /// Folder of `*.cedar` files, relative to the config file.
    dir: Option<String>,
    #[serde(default)]
    two_person: bool,
}

/// What `[policy]` says.
pub(super) struct PolicyTable {
    pub(super) dir: Option<PathBuf>,
    pub(super) two_person: bool,
}

pub(super) fn policy_table(src: &Source<'_>, raw: Option<&Spanned<RawPolicy>>) -> PolicyTable {
    let raw = raw.map(Spanned::get_ref);
    PolicyTable {
        dir: raw
            .and_then(|p| p.dir.as_deref())
            .map(|dir| src.resolve(dir)),
        two_person: raw.is_some_and(|p| p.two_person),
    }
}
