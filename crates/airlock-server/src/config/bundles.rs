//! The `[bundles.NAME]` tables: entitlements an operator puts together
//! under one name (the database, the SSH fleet and the deploy role for an
//! incident), asked for together and decided, provisioned and ended
//! together (`airlock_core::request::bundle`).

use std::collections::{BTreeMap, BTreeSet};

use airlock_core::catalog::{Bundle, Entitlement};
use airlock_core::EntitlementId;
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBundle {
    #[serde(default)]
    description: String,
    entitlements: Spanned<Vec<Spanned<String>>>,
}

/// Reads the bundles against the entitlements the config defines: each
/// names at least two of them, each once, and no bundle is named like an
/// entitlement (a name asked for must mean one thing).
pub(super) fn bundles_table(
    src: &Source<'_>,
    raw: &BTreeMap<String, Spanned<RawBundle>>,
    entitlements: &BTreeMap<EntitlementId, Entitlement>,
) -> Result<BTreeMap<String, Bundle>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, spanned) in raw {
        let b = spanned.get_ref();
        let field = |f: &str| format!("bundles.{name}.{f}");
        if airlock_core::ids::check_id(name).is_err() {
            return Err(src.error(
                spanned.span(),
                format!(
                    "bundles.{name}: a bundle's name may only contain letters, digits, `-`, `_`, `.` and `@`"
                ),
            ));
        }
        if entitlements.keys().any(|e| e.as_str() == name) {
            return Err(src.error(
                spanned.span(),
                format!(
                    "bundles.{name}: an entitlement has this name too; name the bundle differently"
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for raw in b.entitlements.get_ref() {
            let id = src.id(&field("entitlements"), raw, EntitlementId::parse)?;
            if !entitlements.contains_key(&id) {
                let hint = airlock_core::text::did_you_mean(
                    id.as_str(),
                    entitlements.keys().map(EntitlementId::as_str),
                )
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
                return Err(src.error(
                    raw.span(),
                    format!("{}: no entitlement `{id}`{hint}", field("entitlements")),
                ));
            }
            if !seen.insert(id.clone()) {
                return Err(src.error(
                    raw.span(),
                    format!("{}: `{id}` is listed twice", field("entitlements")),
                ));
            }
            list.push(id);
        }
        if list.len() < 2 {
            return Err(src.error(
                b.entitlements.span(),
                format!(
                    "{}: a bundle holds at least two entitlements",
                    field("entitlements")
                ),
            ));
        }
        out.insert(
            name.clone(),
            Bundle {
                name: name.clone(),
                description: b.description.clone(),
                entitlements: list,
            },
        );
    }
    Ok(out)
}
