//! `[services.NAME]` (service principals) and `server.token_max_lifetime`.
//!
//! A service principal is automation (a deploy job): it has groups like a
//! person, so it requests entitlements under the same policies (which see
//! `principal.kind == "service"`), but it has no config token and no role
//! but `checker` (an application that gates privileged actions on
//! `GET /v1/check`), authenticates only with API tokens its owners (or an
//! admin) create, and never approves anything (`airlock_core::access`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::catalog::{Catalog, PrincipalKind, Role, User};
use airlock_core::{GroupName, UserId};
use airlock_policy::{Directory, UserFacts};
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

/// The longest lifetime of an API token when the config says nothing.
pub const DEFAULT_TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The most `server.token_max_lifetime` may be set to.
const LONGEST_TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    /// People who may create and revoke the service's API tokens.
    #[serde(default)]
    owners: Vec<Spanned<String>>,
    #[serde(default)]
    team: String,
    description: Option<String>,
    /// Only `checker`: automation never administers or audits.
    #[serde(default)]
    roles: Vec<Spanned<String>>,
}

/// `server.token_max_lifetime` (default 90 days, at most 366).
pub(super) fn token_max_lifetime(
    src: &Source<'_>,
    raw: Option<&Spanned<String>>,
) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(DEFAULT_TOKEN_MAX_LIFETIME),
        Some(raw) => src.duration_between(
            "server.token_max_lifetime",
            raw,
            (Duration::from_secs(60), LONGEST_TOKEN_MAX_LIFETIME),
        ),
    }
}

/// Adds each `[services.NAME]` to the catalog and the directory; its
/// owners must be users of the config, and its name no user's.
pub(super) fn services(
    src: &Source<'_>,
    raw: &BTreeMap<String, Spanned<RawService>>,
    catalog: &mut Catalog,
    directory: &mut Directory,
) -> Result<(), ConfigError> {
    for (name, service) in raw {
        let span = service.span();
        let id = UserId::parse(name)
            .map_err(|e| src.error(span.clone(), format!("services: `{name}` {e}")))?;
        if catalog.users.contains_key(&id) {
            return Err(src.error(
                span,
                format!("services.{name}: `{name}` is already a user; a service needs a name of its own"),
            ));
        }
        let service = service.get_ref();
        let _ = &service.description;
        let groups = service
            .groups
            .iter()
            .map(|g| src.id(&format!("services.{name}.groups"), g, GroupName::parse))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let mut owners = BTreeSet::new();
        for owner in &service.owners {
            let owner_id = src.id(&format!("services.{name}.owners"), owner, UserId::parse)?;
            match catalog.users.get(&owner_id) {
                Some(u) if u.kind == PrincipalKind::Person => {}
                _ => {
                    return Err(src.error(
                        owner.span(),
                        format!(
                            "services.{name}.owners: `{owner_id}` is not a user of this config (`[users.{owner_id}]`)"
                        ),
                    ))
                }
            }
            owners.insert(owner_id);
        }
        let mut roles = BTreeSet::new();
        for role in &service.roles {
            match Role::parse(role.get_ref()) {
                Some(role @ (Role::Checker | Role::Reporter)) => {
                    roles.insert(role);
                }
                _ => {
                    return Err(src.error(
                        role.span(),
                        format!(
                            "services.{name}.roles: `{}` is not a role a service may have (only `checker` and `reporter`)",
                            role.get_ref()
                        ),
                    ))
                }
            }
        }
        let user = User {
            kind: PrincipalKind::Service,
            ..User::person(id, groups, roles)
        };
        directory.users.insert(
            user.id.clone(),
            UserFacts::from_user(&user, service.team.trim(), "service", false),
        );
        catalog.service_owners.insert(user.id.clone(), owners);
        catalog.users.insert(user.id.clone(), user);
    }
    Ok(())
}
