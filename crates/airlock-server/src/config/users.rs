//! The `[users.NAME]` tables: the people the config itself knows (the demo,
//! tests, and small installations without an identity provider), their
//! groups, roles, token hashes and the attributes policies see, and for an
//! external principal (`employment = "vendor"`) their sponsor and account
//! end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use airlock_core::catalog::{Catalog, External, Role, User, VENDOR};
use airlock_core::{GroupName, Timestamp, UserId};
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
    /// A vendor's sponsor: the internal person who answers for them.
    sponsor: Option<Spanned<String>>,
    /// When a vendor's account ends: RFC 3339, quoted or as a TOML
    /// date-time with an offset.
    account_expires: Option<Spanned<toml::Value>>,
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

/// `provider`: an identity provider (`server.oidc` or `server.scim`) may
/// bring a sponsor the config does not list.
pub(super) fn users_table(
    src: &Source<'_>,
    users: &BTreeMap<String, Spanned<RawUser>>,
    provider: bool,
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
        let mut user = User::person(id, groups, roles);
        user.external = external_terms(src, name, user_raw, &employment)?;
        directory.users.insert(
            user.id.clone(),
            UserFacts::from_user(&user, &user_team(user_raw), &employment, user_raw.on_call),
        );
        catalog.users.insert(user.id.clone(), user);
    }

    check_sponsors(src, users, &catalog, provider)?;
    Ok(People {
        catalog,
        token_hashes,
        directory,
        emails,
    })
}

/// A vendor's sponsor and account end, both required of a vendor and
/// refused of anyone else.
fn external_terms(
    src: &Source<'_>,
    name: &str,
    user: &RawUser,
    employment: &str,
) -> Result<Option<External>, ConfigError> {
    let field = |f: &str| format!("users.{name}.{f}");
    if employment != VENDOR {
        if let Some(s) = &user.sponsor {
            return Err(src.error(
                s.span(),
                format!(
                    "{}: only a vendor (employment = \"{VENDOR}\") has a sponsor",
                    field("sponsor")
                ),
            ));
        }
        if let Some(e) = &user.account_expires {
            return Err(src.error(
                e.span(),
                format!(
                    "{}: only a vendor (employment = \"{VENDOR}\") has an account end",
                    field("account_expires")
                ),
            ));
        }
        return Ok(None);
    }
    let (Some(sponsor), Some(expires)) = (&user.sponsor, &user.account_expires) else {
        let missing = if user.sponsor.is_none() {
            format!(
                "{}: a vendor needs a sponsor, the internal user who answers for them",
                field("sponsor")
            )
        } else {
            format!(
                "{}: a vendor needs an account end (RFC 3339, like \"2027-03-31T00:00:00Z\")",
                field("account_expires")
            )
        };
        let at = user
            .sponsor
            .as_ref()
            .map(Spanned::span)
            .or_else(|| user.account_expires.as_ref().map(Spanned::span))
            .unwrap_or(0..0);
        return Err(src.error(at, missing));
    };
    let sponsor_id = src.id(&field("sponsor"), sponsor, UserId::parse)?;
    if sponsor_id.as_str() == name {
        return Err(src.error(
            sponsor.span(),
            format!("{}: `{name}` cannot sponsor themselves", field("sponsor")),
        ));
    }
    let raw = match expires.get_ref() {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) if d.offset.is_some() && d.time.is_some() => d.to_string(),
        toml::Value::Datetime(d) => {
            return Err(src.error(
                expires.span(),
                format!(
                    "{}: `{d}` needs a date, a time and a UTC offset (like 2027-03-31T00:00:00Z)",
                    field("account_expires")
                ),
            ))
        }
        other => {
            return Err(src.error(
                expires.span(),
                format!(
                    "{}: must be an RFC 3339 time, not a {}",
                    field("account_expires"),
                    other.type_str()
                ),
            ))
        }
    };
    let account_expires: Timestamp = crate::api::parse_time(&raw)
        .map_err(|e| src.error(expires.span(), format!("{}: {e}", field("account_expires"))))?;
    Ok(Some(External {
        sponsor: sponsor_id,
        account_expires,
    }))
}

/// Every vendor's sponsor is an internal person: one of the config's
/// people who is no vendor, or (with an identity provider) someone the
/// config does not list, checked at each sign-in instead.
fn check_sponsors(
    src: &Source<'_>,
    users: &BTreeMap<String, Spanned<RawUser>>,
    catalog: &Catalog,
    provider: bool,
) -> Result<(), ConfigError> {
    for (name, raw) in users {
        let (Some(span), Some(terms)) = (
            raw.get_ref().sponsor.as_ref().map(Spanned::span),
            UserId::parse(name)
                .ok()
                .and_then(|id| catalog.user(&id))
                .and_then(|u| u.external.as_ref()),
        ) else {
            continue;
        };
        let field = format!("users.{name}.sponsor");
        match catalog.user(&terms.sponsor) {
            Some(s) if s.external.is_some() => {
                return Err(src.error(
                    span,
                    format!(
                        "{field}: `{}` is a vendor too; a sponsor is an internal person",
                        terms.sponsor
                    ),
                ))
            }
            Some(_) => {}
            None if provider => {}
            None => {
                return Err(src.error(
                    span,
                    format!("{field}: no user `{}` in [users]", terms.sponsor),
                ))
            }
        }
    }
    Ok(())
}

fn user_team(user: &RawUser) -> String {
    user.team.trim().to_owned()
}
