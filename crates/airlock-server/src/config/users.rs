//! The `[users.NAME]` tables: the people the config itself knows (the demo,
//! tests, and small installations without an identity provider), their
//! groups, roles, token hashes and the attributes policies see.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use airlock_core::catalog::{Catalog, Role, User};
use airlock_core::{GroupName, UserId};
use airlock_policy::{Directory, UserFacts};
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    token_sha256: Option<Spanned<String>>,
    /// Attributes policies may look at.
    #[serde(default)]
    team: String,
    employment: Option<Spanned<String>>,
    #[serde(default)]
    on_call: bool,
    /// Where notifications for this person are mailed.
    email: Option<Spanned<String>>,
}

/// The config's users: a catalog and a directory holding only them (the
/// entitlements are added by their own table), and their tokens' hashes.
pub(super) struct People {
    pub(super) catalog: Catalog,
    pub(super) token_hashes: HashMap<String, UserId>,
    pub(super) directory: Directory,
    /// Each user's email address, for notifications.
    pub(super) emails: BTreeMap<UserId, String>,
}

pub(super) fn users_table(
    src: &Source<'_>,
    users: &BTreeMap<String, Spanned<RawUser>>,
) -> Result<People, ConfigError> {
    let mut catalog = Catalog::default();
    let mut token_hashes = HashMap::new();
    let mut directory = Directory::default();
    let mut emails = BTreeMap::new();
    for (name, user) in users {
        let span = user.span();
        let id = UserId::parse(name)
            .map_err(|e| src.error(span.clone(), format!("users: `{name}` {e}")))?;
        let user = user.get_ref();
        let user_raw = user;
        let groups = user
            .groups
            .iter()
            .map(|g| src.id(&format!("users.{name}.groups"), g, GroupName::parse))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let roles = user
            .roles
            .iter()
            .map(|r| {
                Role::parse(r.get_ref()).ok_or_else(|| {
                    src.error(
                        r.span(),
                        format!(
                            "users.{name}.roles: unknown role `{}` (known: admin, auditor, checker, reporter)",
                            r.get_ref()
                        ),
                    )
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        if let Some(t) = &user.token_sha256 {
            let hash = t.get_ref().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(src.error(
                    t.span(),
                    format!("users.{name}.token_sha256: must be 64 hex characters (`airlock token` prints a token and its hash)"),
                ));
            }
            if token_hashes.insert(hash, id.clone()).is_some() {
                return Err(src.error(
                    t.span(),
                    format!(
                        "users.{name}.token_sha256: the same token is already used by another user"
                    ),
                ));
            }
        }
        let employment = match &user.employment {
            Some(e) if e.get_ref().trim().is_empty() => {
                return Err(src.error(
                    e.span(),
                    format!("users.{name}.employment: must not be empty"),
                ))
            }
            Some(e) => e.get_ref().clone(),
            None => "employee".to_owned(),
        };
        if let Some(email) = &user.email {
            let address =
                super::notifications::mailbox(src, &format!("users.{name}.email"), email)?;
            emails.insert(id.clone(), address);
        }
        let user = User::person(id, groups, roles);
        directory.users.insert(
            user.id.clone(),
            UserFacts::from_user(&user, &user_team(user_raw), &employment, user_raw.on_call),
        );
        catalog.users.insert(user.id.clone(), user);
    }

    Ok(People {
        catalog,
        token_hashes,
        directory,
        emails,
    })
}

fn user_team(user: &RawUser) -> String {
    user.team.trim().to_owned()
}
