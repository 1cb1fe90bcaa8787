//! How access is used, for the regular review of the rules: per
//! entitlement how it was asked for and decided; eligibilities nobody used
//! (candidates for removal); and approval-quality signals — approvers who
//! approve nearly everything, approvals given within seconds of the
//! request, one approver deciding most requests of an entitlement. Pure:
//! the requests of the period and who is eligible are passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::{EntitlementId, UserId};
use crate::request::{AccessRequest, State};

/// An approver with at least this many decisions, approving at least
/// [`RUBBER_STAMP_RATE`] of them, is flagged as approving nearly everything.
pub const RUBBER_STAMP_MIN_DECISIONS: usize = 10;
pub const RUBBER_STAMP_RATE: f64 = 0.95;
/// An approval this soon after the request was hardly read.
pub const QUICK_APPROVAL: Duration = Duration::from_secs(30);
/// An approver with at least this many approvals, half of them quick, is
/// flagged as approving within seconds.
pub const QUICK_MIN_APPROVALS: usize = 5;
/// One approver deciding at least this share of an entitlement's decided
/// requests (of at least [`DOMINANT_MIN_DECISIONS`]) is flagged.
pub const DOMINANT_SHARE: f64 = 0.8;
pub const DOMINANT_MIN_DECISIONS: usize = 5;

/// How one entitlement was asked for in the period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntitlementUsage {
    pub requests: usize,
    /// Granted at once by policy (break-glass uses not counted).
    pub auto_approved: usize,
    /// Routed to approvers.
    pub needing_approval: usize,
    pub break_glass: usize,
    /// Refused by the policies outright.
    pub denied_by_policy: usize,
    /// Denied by an approver.
    pub denied_by_approver: usize,
}

/// One approver's decisions in the period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApproverRecord {
    pub approvals: usize,
    pub denials: usize,
    /// Approvals given within [`QUICK_APPROVAL`] of the request.
    pub quick_approvals: usize,
    /// What stands out, in words (empty: nothing).
    pub signals: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    pub entitlements: BTreeMap<EntitlementId, EntitlementUsage>,
    pub approvers: BTreeMap<UserId, ApproverRecord>,
    /// Entitlements one approver decides most requests of: the approver,
    /// their decisions and the entitlement's decided requests.
    pub dominant: Vec<(EntitlementId, UserId, usize, usize)>,
    /// Who may request what but did not in the period.
    pub unused: Vec<(UserId, EntitlementId)>,
}

/// The report over `requests` (those created in the period) and who is
/// `eligible` for what.
pub fn usage(requests: &[AccessRequest], eligible: &[(UserId, EntitlementId)]) -> Usage {
    let mut report = Usage::default();
    let mut deciders: BTreeMap<&EntitlementId, BTreeMap<&UserId, usize>> = BTreeMap::new();
    let mut used: BTreeSet<(&UserId, &EntitlementId)> = BTreeSet::new();
    for r in requests {
        used.insert((&r.requester, &r.entitlement));
        let e = report
            .entitlements
            .entry(r.entitlement.clone())
            .or_default();
        e.requests += 1;
        let routed = !r.approval_tiers.is_empty();
        let denied = r.state == State::Denied;
        match (routed, denied, r.break_glass) {
            (false, true, _) => e.denied_by_policy += 1,
            (false, false, true) => e.break_glass += 1,
            (false, false, false) => e.auto_approved += 1,
            (true, _, _) => e.needing_approval += 1,
        }
        if !routed {
            continue;
        }
        let mut decided_by: BTreeSet<&UserId> = BTreeSet::new();
        for a in &r.approvals {
            let rec = report.approvers.entry(a.approver.clone()).or_default();
            rec.approvals += 1;
            if r.created_at.until(a.at) <= QUICK_APPROVAL {
                rec.quick_approvals += 1;
            }
            decided_by.insert(&a.approver);
        }
        if denied {
            e.denied_by_approver += 1;
            if let Some(by) = &r.ended_by {
                report.approvers.entry(by.clone()).or_default().denials += 1;
                decided_by.insert(by);
            }
        }
        for who in decided_by {
            *deciders
                .entry(&r.entitlement)
                .or_default()
                .entry(who)
                .or_default() += 1;
        }
    }
    for (entitlement, by) in &deciders {
        let decided = requests
            .iter()
            .filter(|r| &&r.entitlement == entitlement && !r.approval_tiers.is_empty())
            .filter(|r| !r.approvals.is_empty() || r.state == State::Denied)
            .count();
        for (who, n) in by {
            if decided >= DOMINANT_MIN_DECISIONS && share(*n, decided) >= DOMINANT_SHARE {
                report
                    .dominant
                    .push(((*entitlement).clone(), (*who).clone(), *n, decided));
            }
        }
    }
    for (who, rec) in &mut report.approvers {
        let decisions = rec.approvals + rec.denials;
        if decisions >= RUBBER_STAMP_MIN_DECISIONS
            && share(rec.approvals, decisions) >= RUBBER_STAMP_RATE
        {
            rec.signals.push(format!(
                "approves nearly everything ({} of {decisions})",
                rec.approvals
            ));
        }
        if rec.approvals >= QUICK_MIN_APPROVALS && rec.quick_approvals * 2 >= rec.approvals {
            rec.signals.push(format!(
                "approves within seconds ({} of {} approvals within {}s of the request)",
                rec.quick_approvals,
                rec.approvals,
                QUICK_APPROVAL.as_secs()
            ));
        }
        for (entitlement, _, n, of) in report.dominant.iter().filter(|d| &d.1 == who) {
            rec.signals.push(format!(
                "decides most requests for {entitlement} ({n} of {of})"
            ));
        }
    }
    report.unused = eligible
        .iter()
        .filter(|(u, e)| !used.contains(&(u, e)))
        .cloned()
        .collect();
    report
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    // Counts are far below 2^52: exact as floats.
    #[expect(clippy::cast_precision_loss, reason = "counts of requests")]
    let (p, w) = (part as f64, whole as f64);
    p / w
}
