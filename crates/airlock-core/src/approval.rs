//! Approval routing as the lifecycle sees it: what the policy set decided
//! about a request ([`Verdict`]), the approval tiers it needs, and when the
//! approvals given meet them.
//!
//! The policy set (in `airlock-policy`) is evaluated by the shell, which
//! hands its answer in as these plain values, so the lifecycle neither knows
//! Cedar nor re-evaluates anything.
//!
//! A request needs every tier. One person's approval counts toward one tier
//! only, even when their groups qualify them for several: "one owner and one
//! security approver" must mean two people. Whether the approvals given meet
//! the tiers is a bipartite matching of approvers to tier seats.
//!
//! An external principal's request (a vendor's) has one more seat, on top
//! of the tiers, that only their sponsor fills ([`Seats`]): the sponsor's
//! approval counts toward no tier, and nobody else's counts toward it.

use std::collections::BTreeSet;
use std::fmt;

use crate::catalog::WaitingTimes;
use crate::ids::{GroupName, UserId};
use crate::request::Approval;

/// One group of approvals a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalTier {
    /// Distinct approvers needed (at least 1).
    pub count: u32,
    /// Any member of any of these groups qualifies.
    pub groups: BTreeSet<GroupName>,
    /// The policy that asked for this tier.
    pub policy: String,
}

impl fmt::Display for ApprovalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<&str> = self.groups.iter().map(GroupName::as_str).collect();
        write!(
            f,
            "{} from [{}] ({})",
            self.count,
            groups.join(", "),
            self.policy
        )
    }
}

/// How a new request goes, as the policy set decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Refused by policy; the request is recorded as denied.
    Denied {
        reasons: Vec<String>,
    },
    AutoApproved,
    /// Pending until every tier is met.
    NeedsApprovals(Vec<ApprovalTier>),
}

impl Route {
    /// `denied`, `auto_approved`, or `needs <tier> and <tier>`, as the
    /// audit record and `explain` show it.
    pub fn summary(&self) -> String {
        match self {
            Route::Denied { .. } => "denied".to_owned(),
            Route::AutoApproved => "auto_approved".to_owned(),
            Route::NeedsApprovals(tiers) => format!(
                "needs {}",
                tiers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }
    }
}

/// The policy set's decision on a new request, with what the audit record
/// needs to show why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub route: Route,
    /// Content hash of the policy set that decided.
    pub policy_version: String,
    /// The policies that decided (permits, or the forbids that denied).
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (they failed closed).
    pub errors: Vec<String>,
    /// Acceptable waiting times the routing policies set themselves
    /// (`@remind_after`, ...); what they leave unset is the entitlement's.
    pub waiting: WaitingTimes,
}

/// The policy set's answer to "may this person approve (or deny) this
/// request?". The requester is refused by the lifecycle before this is
/// consulted, whatever it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverVerdict {
    /// `Ok(permitting policies)` or `Err(why not)`.
    pub outcome: Result<Vec<String>, String>,
    pub policy_version: String,
}

/// Indexes of the tiers a member of `groups` qualifies for.
pub fn qualifying_tiers(tiers: &[ApprovalTier], groups: &BTreeSet<GroupName>) -> BTreeSet<u32> {
    tiers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.groups.iter().any(|g| groups.contains(g)))
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

/// Seats needed across all tiers.
pub fn seats_needed(tiers: &[ApprovalTier]) -> u32 {
    tiers.iter().map(|t| t.count).fold(0, u32::saturating_add)
}

/// How many tier seats the approvals fill at best, each approver filling at
/// most one seat of a tier they qualified for when they approved.
pub fn seats_filled(tiers: &[ApprovalTier], approvals: &[Approval]) -> u32 {
    // Seat k belongs to tier `seat_tier[k]`. Sizes are tiny (a few tiers of
    // a few approvers), so simple augmenting paths are plenty.
    let seat_tier: Vec<u32> = tiers
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            std::iter::repeat_n(i, usize::try_from(t.count).unwrap_or(0))
        })
        .collect();
    let mut seat_holder: Vec<Option<usize>> = vec![None; seat_tier.len()];
    let mut filled = 0;
    for approver in 0..approvals.len() {
        let mut visited = vec![false; seat_tier.len()];
        if augment(
            approver,
            approvals,
            &seat_tier,
            &mut seat_holder,
            &mut visited,
        ) {
            filled += 1;
        }
    }
    filled
}

fn augment(
    approver: usize,
    approvals: &[Approval],
    seat_tier: &[u32],
    seat_holder: &mut [Option<usize>],
    visited: &mut [bool],
) -> bool {
    let Some(eligible) = approvals.get(approver).map(|a| &a.tiers) else {
        return false;
    };
    for seat in 0..seat_tier.len() {
        let fits = seat_tier.get(seat).is_some_and(|t| eligible.contains(t));
        if !fits || visited.get(seat).copied().unwrap_or(true) {
            continue;
        }
        if let Some(v) = visited.get_mut(seat) {
            *v = true;
        }
        let holder = seat_holder.get(seat).copied().flatten();
        let free = match holder {
            None => true,
            Some(other) => augment(other, approvals, seat_tier, seat_holder, visited),
        };
        if free {
            if let Some(h) = seat_holder.get_mut(seat) {
                *h = Some(approver);
            }
            return true;
        }
    }
    false
}

/// Whether the approvals meet every tier.
pub fn tiers_met(tiers: &[ApprovalTier], approvals: &[Approval]) -> bool {
    seats_filled(tiers, approvals) >= seats_needed(tiers)
}

/// Every seat a request (or an extension) needs: its tiers', and, for an
/// external principal's, their sponsor's.
#[derive(Debug, Clone, Copy)]
pub struct Seats<'a> {
    pub tiers: &'a [ApprovalTier],
    pub sponsor: Option<&'a UserId>,
}

impl Seats<'_> {
    /// Approvals needed in all.
    pub fn needed(&self) -> u32 {
        seats_needed(self.tiers).saturating_add(u32::from(self.sponsor.is_some()))
    }

    /// Whether the sponsor, if there is one, approved.
    pub fn sponsor_approved(&self, approvals: &[Approval]) -> bool {
        self.sponsor
            .is_some_and(|s| approvals.iter().any(|a| &a.approver == s))
    }

    /// Seats filled at best: the tiers' (the sponsor's approval is recorded
    /// qualifying for no tier, so it fills none of theirs) and the
    /// sponsor's.
    pub fn filled(&self, approvals: &[Approval]) -> u32 {
        seats_filled(self.tiers, approvals)
            .saturating_add(u32::from(self.sponsor_approved(approvals)))
    }

    /// Whether the approvals meet every tier and the sponsor approved.
    pub fn met(&self, approvals: &[Approval]) -> bool {
        tiers_met(self.tiers, approvals)
            && (self.sponsor.is_none() || self.sponsor_approved(approvals))
    }

    /// What is needed, for messages and the audit record: `1 from
    /// [approvers] (policy) and the sponsor `alice``.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.tiers.iter().map(ToString::to_string).collect();
        if let Some(s) = self.sponsor {
            parts.push(format!("the sponsor `{s}`"));
        }
        parts.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::time::Timestamp;

    fn tier(count: u32, groups: &[&str]) -> ApprovalTier {
        ApprovalTier {
            count,
            groups: groups
                .iter()
                .map(|g| GroupName::parse(g).unwrap())
                .collect(),
            policy: "p".to_owned(),
        }
    }

    fn approval(who: &str, tiers: &[u32]) -> Approval {
        Approval {
            approver: UserId::parse(who).unwrap(),
            at: Timestamp::from_unix_millis(0),
            comment: None,
            tiers: tiers.iter().copied().collect(),
        }
    }

    #[test]
    fn one_person_fills_one_seat_even_when_qualified_for_two() {
        let tiers = [tier(1, &["owners"]), tier(1, &["security"])];
        let both = approval("bob", &[0, 1]);
        assert_eq!(seats_filled(&tiers, std::slice::from_ref(&both)), 1);
        assert!(!tiers_met(&tiers, std::slice::from_ref(&both)));
        assert!(tiers_met(&tiers, &[both, approval("sam", &[1])]));
    }

    #[test]
    fn a_later_approver_can_move_an_earlier_one_to_another_tier() {
        // bob (owner and security) first takes the owner seat; sam (security
        // only) arrives: the best assignment is bob→owners, sam→security,
        // whichever order the search tries.
        let tiers = [tier(1, &["security"]), tier(1, &["owners"])];
        let approvals = [approval("bob", &[0, 1]), approval("sam", &[0])];
        assert!(tiers_met(&tiers, &approvals));
    }

    #[test]
    fn counts_need_distinct_people() {
        let tiers = [tier(2, &["owners"])];
        assert_eq!(seats_needed(&tiers), 2);
        assert!(!tiers_met(&tiers, &[approval("a", &[0])]));
        assert!(tiers_met(
            &tiers,
            &[approval("a", &[0]), approval("b", &[0])]
        ));
        // Someone who qualified for no tier fills nothing.
        assert_eq!(seats_filled(&tiers, &[approval("x", &[])]), 0);
    }

    #[test]
    fn qualification_follows_groups() {
        let tiers = [tier(1, &["owners"]), tier(1, &["security", "sre"])];
        let groups: BTreeSet<GroupName> = [GroupName::parse("sre").unwrap()].into();
        assert_eq!(qualifying_tiers(&tiers, &groups), BTreeSet::from([1]));
        assert!(qualifying_tiers(&tiers, &BTreeSet::new()).is_empty());
    }
}
