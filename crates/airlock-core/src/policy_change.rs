//! Changes to the policy set itself, as audited decisions: a set is put in
//! force directly, or (under the two-person rule) proposed by one admin and
//! put in force only when a second, different admin approves it while the
//! set it was compared against is still the one in force. A set no person
//! proposed (reloaded by a signal) needs two different admins' approvals:
//! two people, whoever starts the change.
//!
//! The shell loads, validates and diffs the sets; this module only decides
//! whether a change may happen and what the audit record says.

use std::collections::BTreeMap;

use crate::access::{self, Capability};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::User;
use crate::ids::UserId;
use crate::request::Rejection;
use crate::time::Timestamp;

/// How a change reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Loaded when the server started.
    Start,
    /// The process got SIGHUP.
    Signal,
    /// An admin asked through the API.
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Signal => "sighup",
            Trigger::Api => "api",
        }
    }
}

/// A validated policy set waiting for a second admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub id: String,
    /// `None` when proposed by a signal rather than a person.
    pub proposed_by: Option<User>,
    pub proposed_at: Timestamp,
    /// The version in force when it was proposed (what the diff compares with).
    pub base_version: String,
    pub version: String,
    /// What changes for whom, one line each, as reviewed.
    pub changes: Vec<String>,
    /// The admins who approved it so far, in order.
    pub approvals: Vec<UserId>,
}

impl Proposal {
    /// How many admins must approve it: one besides its proposer, or two
    /// when no person proposed it.
    pub fn approvals_needed(&self) -> usize {
        if self.proposed_by.is_some() {
            1
        } else {
            2
        }
    }
}

/// What an admin's approval of a proposal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalStep {
    /// Recorded; the proposal waits for another admin.
    Recorded(AuditEvent),
    /// The proposal's set goes in force.
    Activated(AuditEvent),
}

fn event(
    at: Timestamp,
    actor: Actor,
    action: AuditAction,
    details: BTreeMap<String, String>,
) -> AuditEvent {
    AuditEvent {
        at,
        actor,
        action,
        request: None,
        entitlement: None,
        subject: None,
        details,
    }
}

fn actor_of(user: Option<&User>) -> Actor {
    user.map_or(Actor::System, Actor::of)
}

/// Records a set put in force without a second person (at start, or with
/// the two-person rule off).
pub fn activated(
    previous: Option<&str>,
    version: &str,
    policies: usize,
    trigger: Trigger,
    by: Option<&User>,
    now: Timestamp,
) -> AuditEvent {
    let mut details = BTreeMap::from([
        ("version".to_owned(), version.to_owned()),
        ("policies".to_owned(), policies.to_string()),
        ("via".to_owned(), trigger.as_str().to_owned()),
    ]);
    if let Some(p) = previous {
        details.insert("previous_version".to_owned(), p.to_owned());
    }
    event(now, actor_of(by), AuditAction::PolicyActivated, details)
}

/// Records a set that failed to load or validate; the one in force stays.
pub fn refused(errors: &str, trigger: Trigger, by: Option<&User>, now: Timestamp) -> AuditEvent {
    let details = BTreeMap::from([
        ("errors".to_owned(), errors.to_owned()),
        ("via".to_owned(), trigger.as_str().to_owned()),
    ]);
    event(now, actor_of(by), AuditAction::PolicyRefused, details)
}

/// Records a proposal.
pub fn proposed(proposal: &Proposal, trigger: Trigger) -> AuditEvent {
    let details = BTreeMap::from([
        ("proposal".to_owned(), proposal.id.clone()),
        ("version".to_owned(), proposal.version.clone()),
        ("base_version".to_owned(), proposal.base_version.clone()),
        ("changes".to_owned(), proposal.changes.join("; ")),
        ("via".to_owned(), trigger.as_str().to_owned()),
    ]);
    event(
        proposal.proposed_at,
        actor_of(proposal.proposed_by.as_ref()),
        AuditAction::PolicyProposed,
        details,
    )
}

/// Decides whether `approver` may approve `proposal` now, and whether that
/// approval puts it in force; returns the audit event either way. The
/// proposer never approves their own proposal, nobody approves one twice,
/// and a proposal compared against a set that is no longer in force must be
/// made again, because its reviewed diff no longer says what would change.
/// The shell adds the approver to [`Proposal::approvals`] on
/// [`ProposalStep::Recorded`].
pub fn approve(
    proposal: &Proposal,
    approver: &User,
    in_force: &str,
    policies: usize,
    now: Timestamp,
) -> Result<ProposalStep, Rejection> {
    access::may(approver, Capability::ApprovePolicyChanges)?;
    if proposal
        .proposed_by
        .as_ref()
        .is_some_and(|p| p.id == approver.id)
    {
        return Err(Rejection::Forbidden(format!(
            "`{}` proposed `{}` and may not also approve it: a second admin must",
            approver.id, proposal.id
        )));
    }
    if proposal.approvals.contains(&approver.id) {
        return Err(Rejection::Conflict(format!(
            "`{}` already approved `{}`: a different admin must",
            approver.id, proposal.id
        )));
    }
    if proposal.base_version != in_force {
        return Err(Rejection::Conflict(format!(
            "proposal `{}` was compared with policy set {}, but {} is in force now: propose it again",
            proposal.id, proposal.base_version, in_force
        )));
    }
    let approvals = proposal.approvals.len() + 1;
    let approved_by = proposal
        .approvals
        .iter()
        .chain([&approver.id])
        .map(UserId::as_str)
        .collect::<Vec<_>>()
        .join(",");
    let mut details = BTreeMap::from([
        ("version".to_owned(), proposal.version.clone()),
        ("policies".to_owned(), policies.to_string()),
        ("proposal".to_owned(), proposal.id.clone()),
        (
            "proposed_by".to_owned(),
            actor_of(proposal.proposed_by.as_ref()).as_str().to_owned(),
        ),
        ("approved_by".to_owned(), approved_by),
        (
            "approvals".to_owned(),
            format!("{approvals}/{}", proposal.approvals_needed()),
        ),
    ]);
    let actor = Actor::of(approver);
    if approvals < proposal.approvals_needed() {
        return Ok(ProposalStep::Recorded(event(
            now,
            actor,
            AuditAction::PolicyApprovalRecorded,
            details,
        )));
    }
    details.insert("previous_version".to_owned(), in_force.to_owned());
    details.insert("via".to_owned(), "proposal".to_owned());
    Ok(ProposalStep::Activated(event(
        now,
        actor,
        AuditAction::PolicyActivated,
        details,
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::catalog::Role;

    fn admin(id: &str) -> User {
        User {
            id: UserId::parse(id).unwrap(),
            groups: BTreeSet::new(),
            roles: BTreeSet::from([Role::Admin]),
            kind: Default::default(),
            token: None,
            external: None,
        }
    }

    fn proposal(by: Option<User>) -> Proposal {
        Proposal {
            id: "p1".to_owned(),
            proposed_by: by,
            proposed_at: Timestamp::from_unix_millis(0),
            base_version: "old".to_owned(),
            version: "new".to_owned(),
            changes: vec!["`a` gains request on `db`".to_owned()],
            approvals: Vec::new(),
        }
    }

    fn activated(step: Result<ProposalStep, Rejection>) -> AuditEvent {
        match step {
            Ok(ProposalStep::Activated(e)) => e,
            other => panic!("expected activation, got {other:?}"),
        }
    }

    #[test]
    fn a_second_admin_approves_against_the_set_it_was_compared_with() {
        let now = Timestamp::from_unix_millis(5);
        let p = proposal(Some(admin("ann")));
        assert!(matches!(
            approve(&p, &admin("ann"), "old", 3, now),
            Err(Rejection::Forbidden(_))
        ));
        let mut plain = admin("bo");
        plain.roles.clear();
        assert!(matches!(
            approve(&p, &plain, "old", 3, now),
            Err(Rejection::Forbidden(_))
        ));
        assert!(matches!(
            approve(&p, &admin("bo"), "other", 3, now),
            Err(Rejection::Conflict(_))
        ));
        let e = activated(approve(&p, &admin("bo"), "old", 3, now));
        assert_eq!(e.action, AuditAction::PolicyActivated);
        assert_eq!(e.actor, Actor::User(UserId::parse("bo").unwrap()));
        assert_eq!(
            e.details.get("proposed_by").map(String::as_str),
            Some("ann")
        );
        assert_eq!(e.details.get("version").map(String::as_str), Some("new"));
    }

    #[test]
    fn a_proposal_no_person_made_needs_two_different_admins() {
        let now = Timestamp::from_unix_millis(0);
        let mut p = proposal(None);
        let first = approve(&p, &admin("ann"), "old", 1, now);
        let Ok(ProposalStep::Recorded(e)) = first else {
            panic!("one admin must not activate a signal's proposal: {first:?}");
        };
        assert_eq!(e.action, AuditAction::PolicyApprovalRecorded);
        assert_eq!(e.details.get("approvals").map(String::as_str), Some("1/2"));
        p.approvals.push(UserId::parse("ann").unwrap());
        assert!(matches!(
            approve(&p, &admin("ann"), "old", 1, now),
            Err(Rejection::Conflict(_))
        ));
        let e = activated(approve(&p, &admin("bo"), "old", 1, now));
        assert_eq!(
            e.details.get("approved_by").map(String::as_str),
            Some("ann,bo")
        );
        assert_eq!(
            e.details.get("proposed_by").map(String::as_str),
            Some("system")
        );
    }
}
