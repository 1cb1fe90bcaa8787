//! How long people wait for a person to approve their access: the figures
//! behind "acceptable waiting times". Only requests the policies routed to
//! approvers count; auto-approved and policy-denied ones never waited.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::request::{AccessRequest, State};
use crate::time::Timestamp;
use crate::EntitlementId;

/// Approval waits for one entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalWaits {
    pub entitlement: EntitlementId,
    /// Requests that needed an approver.
    pub needing_approval: usize,
    /// Of them, approved or denied by a person.
    pub decided: usize,
    /// The decided ones' waits, nearest-rank percentiles; `None` when none
    /// was decided.
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub longest: Option<Duration>,
    /// Still waiting now, and the longest of those waits so far.
    pub waiting: usize,
    pub oldest_waiting: Option<Duration>,
    /// Ran out of time with nobody deciding.
    pub timed_out: usize,
    /// Withdrawn (or ended by deprovisioning) before anyone decided.
    pub withdrawn: usize,
}

/// What became of one request that needed an approver.
enum Wait {
    Decided(Duration),
    Waiting(Duration),
    TimedOut,
    Withdrawn,
}

fn wait_of(request: &AccessRequest, now: Timestamp) -> Option<Wait> {
    if request.approval_tiers.is_empty() {
        return None;
    }
    let since = |t: Timestamp| request.created_at.until(t);
    Some(
        match (request.state, request.decided_at, request.ended_at) {
            (State::Pending, _, _) => Wait::Waiting(since(now)),
            (_, Some(decided), _) => Wait::Decided(since(decided)),
            // An approver's denial ends the request at the decision.
            (State::Denied, None, Some(ended)) => Wait::Decided(since(ended)),
            (State::TimedOut, _, _) => Wait::TimedOut,
            _ => Wait::Withdrawn,
        },
    )
}

/// Nearest-rank percentile `p` (0–100) of sorted, non-empty `values`.
fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Approval waits per entitlement, ordered by entitlement, over `requests`
/// (typically those created in a period), as of `now`.
pub fn approval_waits(requests: &[AccessRequest], now: Timestamp) -> Vec<ApprovalWaits> {
    let mut by_entitlement: BTreeMap<&EntitlementId, Vec<Wait>> = BTreeMap::new();
    for request in requests {
        if let Some(wait) = wait_of(request, now) {
            by_entitlement
                .entry(&request.entitlement)
                .or_default()
                .push(wait);
        }
    }
    by_entitlement
        .into_iter()
        .map(|(entitlement, waits)| {
            let mut decided: Vec<Duration> = Vec::new();
            let mut waiting: Vec<Duration> = Vec::new();
            let (mut timed_out, mut withdrawn) = (0, 0);
            for wait in &waits {
                match wait {
                    Wait::Decided(d) => decided.push(*d),
                    Wait::Waiting(d) => waiting.push(*d),
                    Wait::TimedOut => timed_out += 1,
                    Wait::Withdrawn => withdrawn += 1,
                }
            }
            decided.sort();
            ApprovalWaits {
                entitlement: entitlement.clone(),
                needing_approval: waits.len(),
                decided: decided.len(),
                p50: percentile(&decided, 50),
                p95: percentile(&decided, 95),
                longest: decided.last().copied(),
                waiting: waiting.len(),
                oldest_waiting: waiting.iter().max().copied(),
                timed_out,
                withdrawn,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let one_to_hundred: Vec<Duration> = (1..=100).map(secs).collect();
        assert_eq!(percentile(&one_to_hundred, 50), Some(secs(50)));
        assert_eq!(percentile(&one_to_hundred, 95), Some(secs(95)));
        assert_eq!(percentile(&[secs(7)], 95), Some(secs(7)));
        let three = [secs(1), secs(2), secs(10)];
        assert_eq!(percentile(&three, 50), Some(secs(2)));
        assert_eq!(percentile(&three, 95), Some(secs(10)));
        assert_eq!(percentile(&[], 50), None);
    }
}
