//! People and groups as the organisation's identity provider provisions them
//! (SCIM 2.0): what a stored directory user and group are, the group name
//! policies see for a provisioned group, and what a change to either means —
//! its audit events and what must happen to the requests of the people it
//! touches (every request ended for a user deactivated or deleted, and for
//! the external principals they sponsor; every request of an external
//! principal whose terms changed; the open requests of a user who left a
//! group decided again). The shell stores the
//! change and its events in one transaction, then carries out the
//! consequences through the request lifecycle
//! ([`crate::request::Command::Deprovision`],
//! [`crate::request::Command::Redecide`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::{terms_change, External, VENDOR};
use crate::ids::{GroupName, IdError, UserId};
use crate::time::Timestamp;

/// One e-mail address of a directory user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub value: String,
    /// `work`, `home`…, as the provider sends it.
    pub kind: Option<String>,
    pub primary: bool,
}

/// A person the identity provider provisioned. `user_name` is who they are
/// everywhere else in Airlock (the provider's tokens carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Airlock's id for the resource (the SCIM `id`).
    pub id: String,
    pub user_name: UserId,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub emails: Vec<Email>,
    pub active: bool,
    /// The enterprise extension's `employeeType`, in lower case: `vendor`
    /// makes an external principal.
    pub employment: Option<String>,
    /// An external principal's sponsor (a user name) and account end.
    pub sponsor: Option<UserId>,
    pub account_expires: Option<Timestamp>,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// Bumped on every change (the SCIM `meta.version`, an ETag).
    pub version: u64,
}

impl DirectoryUser {
    /// Whether the provider calls them a vendor (an external principal).
    pub fn is_vendor(&self) -> bool {
        self.employment.as_deref() == Some(VENDOR)
    }

    /// A vendor's terms: `None` for anyone else, and for a vendor the
    /// provider gave no sponsor or account end (who is refused at sign-in:
    /// nobody answers for them).
    pub fn external(&self) -> Option<External> {
        match (self.is_vendor(), &self.sponsor, self.account_expires) {
            (true, Some(sponsor), Some(account_expires)) => Some(External {
                sponsor: sponsor.clone(),
                account_expires,
            }),
            _ => None,
        }
    }
}

/// A group the identity provider provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGroup {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// Directory user ids.
    pub members: BTreeSet<String>,
    pub created: Timestamp,
    pub modified: Timestamp,
    pub version: u64,
}

impl DirectoryGroup {
    /// The group as policies see it (`Airlock::Group::"…"`): see [`group_name`].
    pub fn name(&self) -> Result<GroupName, IdError> {
        group_name(&self.display_name)
    }
}

/// The group name policies see for a provisioned group's display name:
/// the name itself, with every character an id may not hold (spaces, say)
/// replaced by `-`, so `Platform Engineers` is `Platform-Engineers`.
pub fn group_name(display_name: &str) -> Result<GroupName, IdError> {
    let mapped: String = display_name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                c
            } else {
                '-'
            }
        })
        .collect();
    GroupName::parse(&mapped)
}

/// Why a directory write was refused; nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no {kind} `{id}`")]
    NotFound { kind: &'static str, id: String },
    /// Another resource holds the unique value (a user name).
    #[error("{0}")]
    Uniqueness(String),
    #[error("`{field}` {message}")]
    Invalid { field: String, message: String },
    /// The caller's `If-Match` version is not the stored one.
    #[error("{0}")]
    VersionMismatch(String),
}

/// What a directory change requires of a user's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consequence {
    /// The user was deactivated or deleted, or the terms their requests
    /// were made under no longer hold: every unfinished request of theirs
    /// ends now (grants revoked, the rest cancelled).
    Deprovision { user: UserId, cause: String },
    /// The user left `group`: each unfinished request of theirs is decided
    /// again, with and without it, by the policy set.
    Redecide {
        user: UserId,
        group: GroupName,
        cause: String,
    },
}

impl Consequence {
    /// What this means for the external principals `sponsored` by its user
    /// (the shell finds them, in the config and the directory): a sponsor
    /// who leaves takes every request they answer for with them.
    pub fn for_sponsored(&self, sponsored: &[UserId]) -> Vec<Consequence> {
        let Consequence::Deprovision { user, cause } = self else {
            return Vec::new();
        };
        sponsored
            .iter()
            .filter(|vendor| *vendor != user)
            .map(|vendor| Consequence::Deprovision {
                user: vendor.clone(),
                cause: format!("the sponsor of `{vendor}` left: {cause}"),
            })
            .collect()
    }
}

/// A directory change, decided: the events to store with it and what the
/// shell must do afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub events: Vec<AuditEvent>,
    pub consequences: Vec<Consequence>,
}

fn event(
    at: Timestamp,
    action: AuditAction,
    subject: Option<&UserId>,
    details: BTreeMap<String, String>,
) -> AuditEvent {
    AuditEvent {
        at,
        actor: Actor::Provisioning,
        action,
        request: None,
        entitlement: None,
        subject: subject.cloned(),
        details,
    }
}

fn details<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A user created (`before` none), replaced or patched, or deleted (`after`
/// none) by `operation` (`POST /Users`, say, for the record).
pub fn user_change(
    before: Option<&DirectoryUser>,
    after: Option<&DirectoryUser>,
    operation: &str,
    now: Timestamp,
) -> Change {
    let mut change = Change::default();
    let op = || ("operation", operation.to_owned());
    match (before, after) {
        (None, None) => {}
        (None, Some(new)) => {
            change.events.push(event(
                now,
                AuditAction::UserProvisioned,
                Some(&new.user_name),
                details([
                    op(),
                    ("id", new.id.clone()),
                    ("active", new.active.to_string()),
                ]),
            ));
            // Someone signed in through the provider before being
            // provisioned may hold requests already.
            // So may a vendor, whose requests nobody sponsored then.
            let (inactive, vendor) = (!new.active, new.is_vendor());
            if inactive || vendor {
                change.consequences.push(Consequence::Deprovision {
                    user: new.user_name.clone(),
                    cause: format!(
                        "user `{}` provisioned as {} by the identity provider ({operation})",
                        new.user_name,
                        if inactive {
                            "inactive"
                        } else {
                            "an external principal"
                        }
                    ),
                });
            }
        }
        (Some(old), None) => {
            change.events.push(event(
                now,
                AuditAction::UserDeleted,
                Some(&old.user_name),
                details([op(), ("id", old.id.clone())]),
            ));
            change.consequences.push(Consequence::Deprovision {
                user: old.user_name.clone(),
                cause: format!(
                    "user `{}` deleted by the identity provider ({operation})",
                    old.user_name
                ),
            });
        }
        (Some(old), Some(new)) => {
            let mut changed: Vec<&str> = Vec::new();
            if old.user_name != new.user_name {
                changed.push("userName");
            }
            if old.external_id != new.external_id {
                changed.push("externalId");
            }
            if old.display_name != new.display_name {
                changed.push("displayName");
            }
            if old.emails != new.emails {
                changed.push("emails");
            }
            if old.employment != new.employment {
                changed.push("employeeType");
            }
            if old.sponsor != new.sponsor {
                changed.push("sponsor");
            }
            if old.account_expires != new.account_expires {
                changed.push("accountExpires");
            }
            if !changed.is_empty() {
                let mut d = details([op(), ("id", new.id.clone()), ("changed", changed.join(","))]);
                if old.user_name != new.user_name {
                    d.insert("previous_user_name".to_owned(), old.user_name.to_string());
                }
                change.events.push(event(
                    now,
                    AuditAction::UserUpdated,
                    Some(&new.user_name),
                    d,
                ));
            }
            if old.active && !new.active {
                change.events.push(event(
                    now,
                    AuditAction::UserDeactivated,
                    Some(&new.user_name),
                    details([op(), ("id", new.id.clone())]),
                ));
            } else if !old.active && new.active {
                change.events.push(event(
                    now,
                    AuditAction::UserReactivated,
                    Some(&new.user_name),
                    details([op(), ("id", new.id.clone())]),
                ));
            }
            // Inactive (every write that leaves a user inactive deprovisions
            // again, so a provider retrying after a failure repairs what the
            // first attempt left), or known under another name now: the old
            // name's requests lose the person behind them.
            if !new.active || old.user_name != new.user_name {
                let why = if old.user_name == new.user_name {
                    "deactivated"
                } else {
                    "renamed"
                };
                change.consequences.push(Consequence::Deprovision {
                    user: old.user_name.clone(),
                    cause: format!(
                        "user `{}` {why} by the identity provider ({operation})",
                        old.user_name
                    ),
                });
            } else if let Some(why) = (new.is_vendor() && new.external().is_none())
                .then(|| "is a vendor with no sponsor or account end".to_owned())
                .or_else(|| terms_change(old.external().as_ref(), new.external().as_ref()))
            {
                change.consequences.push(Consequence::Deprovision {
                    user: old.user_name.clone(),
                    cause: format!(
                        "`{}` {why} by the identity provider ({operation})",
                        old.user_name
                    ),
                });
            }
        }
    }
    change
}

/// A group created, replaced or patched, or deleted by `operation`.
/// `user_names` maps the directory user ids involved to their user names
/// (members the map lacks, deleted meanwhile, are left out of events).
pub fn group_change(
    before: Option<&DirectoryGroup>,
    after: Option<&DirectoryGroup>,
    user_names: &BTreeMap<String, UserId>,
    operation: &str,
    now: Timestamp,
) -> Change {
    let mut change = Change::default();
    let op = || ("operation", operation.to_owned());
    let empty = BTreeSet::new();
    let old_members = before.map_or(&empty, |g| &g.members);
    let new_members = after.map_or(&empty, |g| &g.members);
    match (before, after) {
        (None, None) => return change,
        (None, Some(g)) => change.events.push(event(
            now,
            AuditAction::GroupProvisioned,
            None,
            details([
                op(),
                ("id", g.id.clone()),
                ("group", g.display_name.clone()),
            ]),
        )),
        (Some(g), None) => change.events.push(event(
            now,
            AuditAction::GroupDeleted,
            None,
            details([
                op(),
                ("id", g.id.clone()),
                ("group", g.display_name.clone()),
            ]),
        )),
        (Some(old), Some(new)) => {
            if old.display_name != new.display_name || old.external_id != new.external_id {
                change.events.push(event(
                    now,
                    AuditAction::GroupUpdated,
                    None,
                    details([
                        op(),
                        ("id", new.id.clone()),
                        ("group", new.display_name.clone()),
                        ("previous_group", old.display_name.clone()),
                    ]),
                ));
            }
        }
    }
    let group = after
        .or(before)
        .map_or(String::new(), |g| g.display_name.clone());
    // A rename takes the old name away from every member: policies that
    // named it no longer see them in it.
    let renamed = matches!((before, after), (Some(o), Some(n)) if o.display_name != n.display_name);
    for id in new_members.difference(old_members) {
        if let Some(user) = user_names.get(id) {
            change.events.push(event(
                now,
                AuditAction::MembershipAdded,
                Some(user),
                details([op(), ("group", group.clone())]),
            ));
        }
    }
    let left: Vec<&String> = if renamed {
        old_members.iter().collect()
    } else {
        old_members.difference(new_members).collect()
    };
    let old_group = before.map_or(String::new(), |g| g.display_name.clone());
    // A name policies cannot see (no valid group name) decided nothing.
    let lost = before.and_then(|g| g.name().ok());
    for id in left {
        if let Some(user) = user_names.get(id) {
            if !renamed || !new_members.contains(id) {
                change.events.push(event(
                    now,
                    AuditAction::MembershipRemoved,
                    Some(user),
                    details([op(), ("group", old_group.clone())]),
                ));
            }
            if let Some(group) = &lost {
                change.consequences.push(Consequence::Redecide {
                    user: user.clone(),
                    group: group.clone(),
                    cause: format!("`{user}` left group `{old_group}` ({operation})"),
                });
            }
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str, active: bool) -> DirectoryUser {
        DirectoryUser {
            id: id.to_owned(),
            user_name: UserId::parse(name).unwrap(),
            external_id: None,
            display_name: None,
            emails: Vec::new(),
            active,
            employment: None,
            sponsor: None,
            account_expires: None,
            created: Timestamp::from_unix_millis(0),
            modified: Timestamp::from_unix_millis(0),
            version: 1,
        }
    }

    fn group(name: &str, members: &[&str]) -> DirectoryGroup {
        DirectoryGroup {
            id: "g1".to_owned(),
            display_name: name.to_owned(),
            external_id: None,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            created: Timestamp::from_unix_millis(0),
            modified: Timestamp::from_unix_millis(0),
            version: 1,
        }
    }

    fn actions(c: &Change) -> Vec<&str> {
        c.events.iter().map(|e| e.action.as_str()).collect()
    }

    #[test]
    fn group_names_replace_what_an_id_may_not_hold() {
        assert_eq!(
            group_name(" Platform Engineers ").unwrap().as_str(),
            "Platform-Engineers"
        );
        assert_eq!(group_name("sre").unwrap().as_str(), "sre");
        assert!(group_name("  ").is_err());
    }

    #[test]
    fn deactivation_and_deletion_deprovision_and_creation_does_not() {
        let now = Timestamp::from_unix_millis(5);
        let (on, off) = (user("u1", "alice", true), user("u1", "alice", false));
        let c = user_change(None, Some(&on), "POST /Users", now);
        assert_eq!(actions(&c), ["user_provisioned"]);
        assert!(c.consequences.is_empty());
        let c = user_change(Some(&on), Some(&off), "PATCH /Users/u1", now);
        assert_eq!(actions(&c), ["user_deactivated"]);
        assert!(
            matches!(&c.consequences[..], [Consequence::Deprovision { user, cause }]
            if user.as_str() == "alice" && cause.contains("deactivated") && cause.contains("PATCH /Users/u1"))
        );
        assert_eq!(c.events[0].actor, Actor::Provisioning);
        let c = user_change(Some(&off), Some(&on), "PUT /Users/u1", now);
        assert_eq!(actions(&c), ["user_reactivated"]);
        assert!(c.consequences.is_empty());
        let c = user_change(Some(&on), None, "DELETE /Users/u1", now);
        assert_eq!(actions(&c), ["user_deleted"]);
        assert_eq!(c.consequences.len(), 1);
        let renamed = user("u1", "alice2", true);
        let c = user_change(Some(&on), Some(&renamed), "PUT /Users/u1", now);
        assert_eq!(actions(&c), ["user_updated"]);
        assert!(
            matches!(&c.consequences[..], [Consequence::Deprovision { user, .. }] if user.as_str() == "alice")
        );
    }

    #[test]
    fn leaving_a_group_redecides_and_joining_does_not() {
        let now = Timestamp::from_unix_millis(5);
        let names = BTreeMap::from([
            ("u1".to_owned(), UserId::parse("alice").unwrap()),
            ("u2".to_owned(), UserId::parse("bob").unwrap()),
        ]);
        let before = group("sre", &["u1"]);
        let after = group("sre", &["u2"]);
        let c = group_change(Some(&before), Some(&after), &names, "PATCH /Groups/g1", now);
        assert_eq!(actions(&c), ["membership_added", "membership_removed"]);
        assert!(
            matches!(&c.consequences[..], [Consequence::Redecide { user, cause, .. }]
            if user.as_str() == "alice" && cause.contains("`sre`"))
        );
        let c = group_change(Some(&after), None, &names, "DELETE /Groups/g1", now);
        assert_eq!(actions(&c), ["group_deleted", "membership_removed"]);
        assert_eq!(c.consequences.len(), 1);
        let renamed = group("sre-old", &["u2"]);
        let c = group_change(Some(&after), Some(&renamed), &names, "PUT /Groups/g1", now);
        assert_eq!(actions(&c), ["group_updated"]);
        assert_eq!(c.consequences.len(), 1, "members lost the old name");
    }
}
