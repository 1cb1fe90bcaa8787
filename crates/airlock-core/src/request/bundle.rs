//! Bundles: several entitlements asked for together, as one request per
//! entitlement (its parts) that are decided, provisioned and ended
//! together.
//!
//! Each part is an ordinary [`AccessRequest`], so everything that works on
//! one request (the one-open-request rule, checks, reconciliation, the
//! standing report, expiry) works on a part unchanged. What makes them a
//! bundle is decided here:
//!
//! - [`submit_bundle`] checks every part as [`super::submit`] checks one
//!   request, then combines the policy set's verdicts: a denial of one part
//!   denies every part; otherwise every part needs the union of all parts'
//!   approval tiers (so each seat is a different person, as the approval
//!   matching ensures for one request), or none when every part was granted
//!   at once.
//! - [`apply_bundle`] applies a command to a part and its siblings in one
//!   decision: what a person decides or asks (approve, deny, cancel,
//!   release, revoke, extend) applies to every part still open, refused
//!   whole when one part refuses it (an approver may decide the bundle
//!   when the policies let them decide one of its parts: the seats they
//!   fill are their groups' to decide); a tick applies every part's
//!   deadlines; and once one part has ended (failed, timed out, expired,
//!   denied again), every part still open ends with it, naming the part
//!   and why.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    check_new, create, invalid, step, AccessRequest, Command, JobAction, LifecycleSettings,
    NewRequest, Outcome, Rejection, State, Transition,
};
use crate::approval::{Route, Verdict};
use crate::audit::{Actor, AuditAction};
use crate::catalog::{Entitlement, User};
use crate::ids::RequestId;
use crate::time::Timestamp;

/// Which bundle a request is a part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRef {
    /// The config's bundle (`[bundles.NAME]`); `None` for entitlements
    /// asked for together ad hoc.
    pub name: Option<String>,
    /// Every part, this one included, in the order asked for; the first
    /// one's id is the bundle's.
    pub parts: Vec<RequestId>,
}

impl BundleRef {
    /// The bundle's id: its first part's.
    pub fn id(&self) -> Option<&RequestId> {
        self.parts.first()
    }

    /// `incident-kit` or `ad hoc`, for messages.
    pub fn label(&self) -> String {
        self.name
            .as_ref()
            .map_or_else(|| "ad hoc".to_owned(), |n| format!("`{n}`"))
    }
}

/// One part of a bundle asked for: the entitlement, the requester's open
/// request for it if any, and the policy set's verdict on it alone.
pub struct BundlePart<'a> {
    pub id: RequestId,
    pub entitlement: &'a Entitlement,
    pub open_request: Option<&'a RequestId>,
    pub verdict: Verdict,
}

/// Creates the parts of a bundle, one request per entitlement, from one
/// ask (`new`'s id is ignored: each part brings its own). Every part's
/// input is checked as [`super::submit`] checks it, the error naming the
/// part; without a duration, every part lasts the shortest default of
/// them, so that they start and end together. Then the verdicts are
/// combined (see the module documentation); nothing is recorded when a
/// part's input is refused or a part conflicts with an open request.
pub fn submit_bundle(
    new: NewRequest,
    name: Option<String>,
    parts: Vec<BundlePart<'_>>,
    requester: &User,
    settings: &LifecycleSettings,
    now: Timestamp,
) -> Result<Vec<Transition>, Rejection> {
    crate::access::may(requester, crate::access::Capability::Request)?;
    if parts.len() < 2 {
        return Err(invalid(
            "entitlements",
            "a bundle needs at least two entitlements",
        ));
    }
    let mut seen = BTreeSet::new();
    for part in &parts {
        if !seen.insert(&part.entitlement.id) {
            return Err(invalid(
                "entitlements",
                format!("`{}` is asked for twice", part.entitlement.id),
            ));
        }
    }
    let entitlements: Vec<&Entitlement> = parts.iter().map(|p| p.entitlement).collect();
    let duration = shared_duration(&new, &entitlements);
    let mut checked = Vec::with_capacity(parts.len());
    for part in &parts {
        let ask = NewRequest {
            id: part.id.clone(),
            duration,
            ..new.clone()
        };
        checked.push(
            check_new(ask, requester, part.entitlement, settings, now)
                .map_err(|e| in_part(e, part.entitlement))?,
        );
    }
    for part in &parts {
        if let Some(open) = part.open_request {
            return Err(Rejection::Conflict(format!(
                "`{}` already has an open request `{open}` for `{}`, a part of the bundle",
                requester.id, part.entitlement.id
            )));
        }
    }
    let bundle = BundleRef {
        name,
        parts: parts.iter().map(|p| p.id.clone()).collect(),
    };
    let verdicts = combine(
        parts
            .iter()
            .map(|p| (p.entitlement.id.as_str(), &p.verdict))
            .collect(),
    );
    let mut transitions = Vec::with_capacity(parts.len());
    for ((checked, part), verdict) in checked.into_iter().zip(&parts).zip(verdicts) {
        transitions.push(
            create(
                checked,
                requester,
                part.entitlement,
                verdict,
                Some(bundle.clone()),
                settings,
                now,
            )
            .map_err(|e| in_part(e, part.entitlement))?,
        );
    }
    Ok(transitions)
}

/// How long every part of a bundle lasts: what was asked for, else the
/// shortest of the parts' defaults, so that they start and end together.
pub fn shared_duration(new: &NewRequest, entitlements: &[&Entitlement]) -> Option<Duration> {
    new.duration
        .or_else(|| entitlements.iter().map(|e| new.effective_duration(e)).min())
}

/// The verdict each part is decided by, from the policy set's verdict on
/// each part alone (with its entitlement's name): any denial denies every
/// part, with every denied part's reasons, each naming its part; else
/// when a part needs approvals every part needs all their tiers; else
/// every part is granted at once. A part keeps its own policy version and
/// waiting times.
pub fn combine(parts: Vec<(&str, &Verdict)>) -> Vec<Verdict> {
    let mut denials = Vec::new();
    let mut denying = Vec::new();
    let mut tiers = Vec::new();
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (name, verdict) in &parts {
        match &verdict.route {
            Route::Denied { reasons } => {
                denials.push(format!("`{name}`: {}", reasons.join("; ")));
                denying.extend(verdict.policies.iter().cloned());
            }
            Route::NeedsApprovals(t) => tiers.extend(t.iter().cloned()),
            Route::AutoApproved => {}
        }
        for p in &verdict.policies {
            if !policies.contains(p) {
                policies.push(p.clone());
            }
        }
        errors.extend(verdict.errors.iter().cloned());
    }
    let (route, policies) = if !denials.is_empty() {
        (Route::Denied { reasons: denials }, denying)
    } else if !tiers.is_empty() {
        (Route::NeedsApprovals(tiers), policies)
    } else {
        (Route::AutoApproved, policies)
    };
    parts
        .into_iter()
        .map(|(_, v)| Verdict {
            route: route.clone(),
            policy_version: v.policy_version.clone(),
            policies: policies.clone(),
            errors: errors.clone(),
            waiting: v.waiting.clone(),
        })
        .collect()
}

/// A part's refusal, saying which part refused.
fn in_part(e: Rejection, entitlement: &Entitlement) -> Rejection {
    e.map_message(|m| format!("{m} (the bundle's part `{}`)", entitlement.id))
}

/// What the audit record keeps of a part's bundle.
pub(super) fn details(bundle: &BundleRef, details: &mut BTreeMap<String, String>) {
    if let Some(id) = bundle.id() {
        details.insert("bundle".to_owned(), id.to_string());
    }
    if let Some(name) = &bundle.name {
        details.insert("bundle_name".to_owned(), name.clone());
    }
    details.insert(
        "bundle_parts".to_owned(),
        bundle
            .parts
            .iter()
            .map(RequestId::as_str)
            .collect::<Vec<_>>()
            .join(","),
    );
}

/// Whether a command a person gives to one part is meant for the bundle.
fn for_every_part(command: &Command) -> bool {
    matches!(
        command,
        Command::Approve { .. }
            | Command::Deny { .. }
            | Command::Cancel { .. }
            | Command::Release { .. }
            | Command::Revoke { .. }
            | Command::Extend { .. }
            | Command::Deprovision { .. }
    )
}

/// Applies a command to the part `addressed` of the bundle whose parts
/// (all of them, in the bundle's order; one request alone for a request
/// that is no part of a bundle) are `parts`, in one decision. `command`
/// builds the command for each part it applies to (an approver's
/// permission is the policy set's answer for that part). Returns a
/// transition for every part, unchanged ones included.
///
/// A command a person gives applies to every part still open (those
/// already ended are skipped), and a refusal by any part refuses it whole,
/// naming the part; an approval or denial of an extension applies to the
/// parts whose extension waits for approvers. A tick applies every part's
/// deadlines. Connector results, reviews and re-decisions apply to their
/// part. Then, if a part has ended while others are still open, those end
/// too: as the part did when it was denied, timed out or expired in the
/// same state, else cancelled when they have not started and revoked when
/// they have, with a note naming the part and why it ended.
pub fn apply_bundle(
    parts: Vec<AccessRequest>,
    addressed: &RequestId,
    command: &dyn Fn(&AccessRequest) -> Command,
    settings: &LifecycleSettings,
    now: Timestamp,
) -> Result<Vec<Transition>, Rejection> {
    let Some(target) = parts.iter().position(|p| p.id == *addressed) else {
        return Err(Rejection::Conflict(format!(
            "`{addressed}` is not among the parts of its bundle"
        )));
    };
    let mut parts: Vec<(AccessRequest, Outcome)> =
        parts.into_iter().map(|p| (p, Outcome::default())).collect();
    let Some((first, _)) = parts.get(target) else {
        return Ok(Vec::new());
    };
    let first_command = command(first);
    let extension = first.extension_awaiting_approval().is_some();
    let alone = first.bundle.is_none() || parts.len() == 1;
    let together = !alone && !first.state.is_terminal() && for_every_part(&first_command);
    let tick = !alone && matches!(first_command, Command::Tick);
    let several = parts.len() > 1;
    let deciding = matches!(
        first_command,
        Command::Approve { .. } | Command::Deny { .. }
    );
    // The command for each part it applies to, in order.
    let mut commands: Vec<Option<Command>> = Vec::with_capacity(parts.len());
    for (i, (part, _)) in parts.iter().enumerate() {
        let applies = i == target
            || tick
            || (together
                && !part.state.is_terminal()
                && (!deciding || part.extension_awaiting_approval().is_some() == extension));
        commands.push(match (applies, i == target) {
            (false, _) => None,
            (true, true) => Some(first_command.clone()),
            (true, false) => Some(command(part)),
        });
    }
    if together && deciding {
        share_permission(&mut commands);
    }
    for ((part, out), cmd) in parts.iter_mut().zip(commands) {
        let Some(cmd) = cmd else { continue };
        step(part, &cmd, settings, now, out).map_err(|e| {
            if several && together {
                part_refused(e, part)
            } else {
                e
            }
        })?;
    }
    if !alone {
        end_together(&mut parts, settings, now);
    }
    Ok(parts
        .into_iter()
        .map(|(request, out)| out.finish(request))
        .collect())
}

/// An approver decides a bundle when the policy set lets them decide one
/// of its parts: each part needs the union of the parts' tiers, and the
/// policies of one part commonly name only its own approvers (the
/// entitlement shorthand's `approvers`), so requiring a permit on every
/// part would leave a bundle of entitlements with different approvers to
/// nobody. Which seats an approval fills is still decided by the
/// approver's groups, tier by tier. The parts whose policies did not
/// permit them record the permit of the first part that did.
fn share_permission(commands: &mut [Option<Command>]) {
    let permit = commands.iter().flatten().find_map(|c| match c {
        Command::Approve { permission, .. } | Command::Deny { permission, .. }
            if permission.outcome.is_ok() =>
        {
            Some(permission.clone())
        }
        _ => None,
    });
    let Some(permit) = permit else { return };
    for c in commands.iter_mut().flatten() {
        if let Command::Approve { permission, .. } | Command::Deny { permission, .. } = c {
            if permission.outcome.is_err() {
                *permission = permit.clone();
            }
        }
    }
}

/// A part's refusal of a command for the bundle, naming the part.
fn part_refused(e: Rejection, part: &AccessRequest) -> Rejection {
    e.map_message(|m| {
        format!(
            "the bundle's part `{}` ({}): {m}",
            part.id, part.entitlement
        )
    })
}

/// Once a part has ended, the parts still open end with it.
fn end_together(
    parts: &mut [(AccessRequest, Outcome)],
    settings: &LifecycleSettings,
    now: Timestamp,
) {
    let ended = parts
        .iter()
        .filter(|(p, _)| p.state.is_terminal())
        .min_by_key(|(p, _)| p.ended_at);
    let Some((cause, _)) = ended else { return };
    let (cause_id, cause_state, note) = (cause.id.clone(), cause.state, cause_note(cause));
    for (part, out) in parts.iter_mut() {
        if part.state.is_terminal() {
            continue;
        }
        let started = !(part.state == State::Pending
            || (part.state == State::Approved
                && part
                    .job
                    .as_ref()
                    .is_some_and(|j| j.action == JobAction::Grant && j.attempts == 0)));
        let (state, action) = match (part.state, cause_state) {
            (State::Pending, State::Denied) => (State::Denied, AuditAction::Denied),
            (State::Pending, State::TimedOut) => (State::TimedOut, AuditAction::TimedOut),
            (_, State::Expired) if started => (State::Expired, AuditAction::Expired),
            _ if started => (State::Revoked, AuditAction::Revoked),
            _ => (State::Cancelled, AuditAction::Cancelled),
        };
        part.end(state, now, None, Some(note.clone()), action, out);
        if let Some(event) = out.events.last_mut() {
            event.actor = Actor::System;
            event
                .details
                .insert("bundle_part_ended".to_owned(), cause_id.to_string());
        }
        part.settle(now, settings, out);
    }
}

/// Why the parts still open end: which part ended, how, and why.
fn cause_note(cause: &AccessRequest) -> String {
    let why = cause
        .end_note
        .as_deref()
        .map(|n| format!(": {n}"))
        .unwrap_or_default();
    format!(
        "the bundle's part `{}` for `{}` ended ({}){why}",
        cause.id,
        cause.entitlement,
        cause.state.as_str()
    )
}
