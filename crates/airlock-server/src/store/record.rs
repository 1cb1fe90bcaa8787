//! Requests as stored: plain values that map one-to-one onto the `requests`
//! table's columns and serialise for `airlock export`. The conversion to and
//! from the domain type lives here once, for reading rows, writing rows,
//! exporting and importing.

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::approval::ApprovalTier;
use airlock_core::audit::AuditRecord;
use airlock_core::catalog::External;
use airlock_core::request::{
    AccessRequest, Approval, BundleRef, CheckActivity, ConnectorJob, Extension, ExtensionState,
    JobAction, Review, ReviewVerdict, State, WaitingPlan,
};
use airlock_core::{EntitlementId, GroupName, RequestId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub approver: String,
    pub at: i64,
    pub comment: Option<String>,
    /// Indexes of the tiers the approver qualified for (absent before
    /// schema version 2, when there was one tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierRecord {
    pub count: u32,
    pub groups: Vec<String>,
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub action: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub claimed_until: Option<i64>,
    pub last_error: Option<String>,
}

/// One `requests` row (without the derived `due_at` and `updated_at`).
/// Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    pub id: String,
    pub requester: String,
    pub entitlement: String,
    pub state: String,
    pub duration_ms: i64,
    pub reason: String,
    pub ticket: Option<String>,
    pub start_at: Option<i64>,
    pub created_at: i64,
    /// Derived: seats across all tiers, and the sponsor's.
    pub required_approvals: i64,
    /// Derived: every group of every tier.
    pub approver_groups: Vec<String>,
    /// Empty in rows from before schema version 2: then one tier of
    /// `required_approvals` from `approver_groups`.
    #[serde(default)]
    pub approval_tiers: Vec<TierRecord>,
    pub approvals: Vec<ApprovalRecord>,
    #[serde(default)]
    pub policy_version: String,
    #[serde(default)]
    pub break_glass: bool,
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub certificate: Option<String>,
    /// An external principal's sponsor and account end when they asked
    /// (schema version 16); absent for anyone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_expires: Option<i64>,
    pub pending_deadline: i64,
    pub decided_at: Option<i64>,
    pub activates_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub granted_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub ended_by: Option<String>,
    pub end_note: Option<String>,
    pub job: Option<JobRecord>,
    pub claim_token: i64,
    pub deprovisioned_at: Option<i64>,
    /// Absent (and NULL) when the request has no reminder or escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingRecord>,
    /// Absent (and NULL) unless the request was a break-glass use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewRecord>,
    /// Absent (and NULL) when no extension was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionRecord>,
    /// How often the grant was checked (`check_count`, schema version
    /// 12); written only by [`crate::store::Store::add_checks`], never by
    /// a request's change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub check_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<i64>,
    /// Absent (and NULL) unless the request is a part of a bundle (schema
    /// version 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleRecord>,
}

/// The bundle a request is a part of (`request::BundleRef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub parts: Vec<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The review of a break-glass use (`request::Review`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRecord {
    pub reviewers: Vec<String>,
    pub due_at: i64,
    pub escalate_to: Vec<String>,
    pub escalated_at: Option<i64>,
    pub verdict: Option<ReviewVerdictRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewVerdictRecord {
    pub reviewer: String,
    pub at: i64,
    pub acceptable: bool,
    pub comment: String,
}

/// An active grant's latest extension (`request::Extension`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionRecord {
    pub by_ms: i64,
    pub reason: String,
    pub requested_at: i64,
    pub state: String,
    pub approval_tiers: Vec<TierRecord>,
    pub approvals: Vec<ApprovalRecord>,
    pub policy_version: String,
    pub previous_expires_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub note: Option<String>,
}

/// A request's reminders and escalation (`request::WaitingPlan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingRecord {
    pub remind_at: Option<i64>,
    pub reminded_at: Option<i64>,
    pub escalate_at: Option<i64>,
    pub escalate_to: Vec<String>,
    pub escalated_at: Option<i64>,
}

fn millis(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::unix_millis)
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_unix_millis)
}

impl RequestRecord {
    pub fn from_request(r: &AccessRequest) -> RequestRecord {
        RequestRecord {
            id: r.id.to_string(),
            requester: r.requester.to_string(),
            entitlement: r.entitlement.to_string(),
            state: r.state.as_str().to_owned(),
            duration_ms: i64::try_from(r.duration.as_millis()).unwrap_or(i64::MAX),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            start_at: millis(r.start_at),
            created_at: r.created_at.unix_millis(),
            required_approvals: i64::from(r.approvals_needed()),
            approver_groups: r
                .approver_groups()
                .iter()
                .map(ToString::to_string)
                .collect(),
            approval_tiers: tier_records(&r.approval_tiers),
            approvals: approval_records(&r.approvals),
            policy_version: r.policy_version.clone(),
            break_glass: r.break_glass,
            public_key: r.public_key.clone(),
            certificate: r.certificate.clone(),
            sponsor: r.external.as_ref().map(|e| e.sponsor.to_string()),
            account_expires: r.external.as_ref().map(|e| e.account_expires.unix_millis()),
            pending_deadline: r.pending_deadline.unix_millis(),
            decided_at: millis(r.decided_at),
            activates_at: millis(r.activates_at),
            expires_at: millis(r.expires_at),
            granted_at: millis(r.granted_at),
            ended_at: millis(r.ended_at),
            ended_by: r.ended_by.as_ref().map(ToString::to_string),
            end_note: r.end_note.clone(),
            job: r.job.as_ref().map(|j| JobRecord {
                action: j.action.as_str().to_owned(),
                attempts: i64::from(j.attempts),
                next_attempt_at: j.next_attempt_at.unix_millis(),
                claimed_until: millis(j.claimed_until),
                last_error: j.last_error.clone(),
            }),
            claim_token: i64::try_from(r.claim_token).unwrap_or(i64::MAX),
            deprovisioned_at: millis(r.deprovisioned_at),
            waiting: (r.waiting != WaitingPlan::default()).then(|| WaitingRecord {
                remind_at: millis(r.waiting.remind_at),
                reminded_at: millis(r.waiting.reminded_at),
                escalate_at: millis(r.waiting.escalate_at),
                escalate_to: r
                    .waiting
                    .escalate_to
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                escalated_at: millis(r.waiting.escalated_at),
            }),
            review: r.review.as_ref().map(|v| ReviewRecord {
                reviewers: v.reviewers.iter().map(ToString::to_string).collect(),
                due_at: v.due_at.unix_millis(),
                escalate_to: v.escalate_to.iter().map(ToString::to_string).collect(),
                escalated_at: millis(v.escalated_at),
                verdict: v.verdict.as_ref().map(|d| ReviewVerdictRecord {
                    reviewer: d.reviewer.to_string(),
                    at: d.at.unix_millis(),
                    acceptable: d.acceptable,
                    comment: d.comment.clone(),
                }),
            }),
            extension: r.extension.as_ref().map(|e| ExtensionRecord {
                by_ms: i64::try_from(e.by.as_millis()).unwrap_or(i64::MAX),
                reason: e.reason.clone(),
                requested_at: e.requested_at.unix_millis(),
                state: e.state.as_str().to_owned(),
                approval_tiers: tier_records(&e.approval_tiers),
                approvals: approval_records(&e.approvals),
                policy_version: e.policy_version.clone(),
                previous_expires_at: e.previous_expires_at.unix_millis(),
                expires_at: e.expires_at.unix_millis(),
                decided_at: millis(e.decided_at),
                ended_at: millis(e.ended_at),
                note: e.note.clone(),
            }),
            check_count: i64::try_from(r.checks.count).unwrap_or(i64::MAX),
            last_checked_at: millis(r.checks.last_at),
            bundle: r.bundle.as_ref().map(|b| BundleRecord {
                name: b.name.clone(),
                parts: b.parts.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    /// Parses the stored values back, refusing anything the domain would not produce.
    pub fn into_request(self) -> Result<AccessRequest, StoreError> {
        let id = self.id;
        let bad = |what: String| StoreError::Corrupt(format!("request `{id}`: {what}"));
        let user = |raw: &str| UserId::parse(raw).map_err(|e| bad(format!("user `{raw}` {e}")));
        let state = State::parse(&self.state)
            .ok_or_else(|| bad(format!("unknown state `{}`", self.state)))?;
        let groups = |names: &[String]| {
            names
                .iter()
                .map(|g| GroupName::parse(g).map_err(|e| bad(format!("group `{g}` {e}"))))
                .collect::<Result<BTreeSet<_>, _>>()
        };
        // A sponsor's seat, alone, is no tier: only rows from before
        // schema version 2 (which had no sponsors) need one made up.
        let legacy = self.approval_tiers.is_empty() && self.sponsor.is_none();
        let approval_tiers = if legacy && self.required_approvals > 0 {
            vec![ApprovalTier {
                count: u32::try_from(self.required_approvals)
                    .map_err(|_| bad("bad required_approvals".to_owned()))?,
                groups: groups(&self.approver_groups)?,
                policy: "config".to_owned(),
            }]
        } else {
            tiers_of(&self.approval_tiers, groups)?
        };
        let approvals = approvals_of(self.approvals, user)?;
        let external = match (&self.sponsor, self.account_expires) {
            (None, None) => None,
            (Some(sponsor), Some(end)) => Some(External {
                sponsor: user(sponsor)?,
                account_expires: Timestamp::from_unix_millis(end),
            }),
            _ => {
                return Err(bad(
                    "a sponsor without an account end, or the other way round".to_owned(),
                ))
            }
        };
        let job = self
            .job
            .map(|j| {
                Ok::<_, StoreError>(ConnectorJob {
                    action: JobAction::parse(&j.action)
                        .ok_or_else(|| bad(format!("unknown job `{}`", j.action)))?,
                    attempts: u32::try_from(j.attempts)
                        .map_err(|_| bad("negative job attempts".to_owned()))?,
                    next_attempt_at: Timestamp::from_unix_millis(j.next_attempt_at),
                    claimed_until: ts(j.claimed_until),
                    last_error: j.last_error,
                })
            })
            .transpose()?;
        let waiting = match &self.waiting {
            None => WaitingPlan::default(),
            Some(w) => WaitingPlan {
                remind_at: ts(w.remind_at),
                reminded_at: ts(w.reminded_at),
                escalate_at: ts(w.escalate_at),
                escalate_to: groups(&w.escalate_to)?,
                escalated_at: ts(w.escalated_at),
            },
        };
        let review = self
            .review
            .as_ref()
            .map(|v| {
                Ok::<_, StoreError>(Review {
                    reviewers: groups(&v.reviewers)?,
                    due_at: Timestamp::from_unix_millis(v.due_at),
                    escalate_to: groups(&v.escalate_to)?,
                    escalated_at: ts(v.escalated_at),
                    verdict: v
                        .verdict
                        .as_ref()
                        .map(|d| {
                            Ok::<_, StoreError>(ReviewVerdict {
                                reviewer: user(&d.reviewer)?,
                                at: Timestamp::from_unix_millis(d.at),
                                acceptable: d.acceptable,
                                comment: d.comment.clone(),
                            })
                        })
                        .transpose()?,
                })
            })
            .transpose()?;
        let extension = self
            .extension
            .map(|e| {
                Ok::<_, StoreError>(Extension {
                    by: Duration::from_millis(
                        u64::try_from(e.by_ms).map_err(|_| bad("negative extension".to_owned()))?,
                    ),
                    reason: e.reason,
                    requested_at: Timestamp::from_unix_millis(e.requested_at),
                    state: ExtensionState::parse(&e.state)
                        .ok_or_else(|| bad(format!("unknown extension state `{}`", e.state)))?,
                    approval_tiers: tiers_of(&e.approval_tiers, groups)?,
                    approvals: approvals_of(e.approvals, user)?,
                    policy_version: e.policy_version,
                    previous_expires_at: Timestamp::from_unix_millis(e.previous_expires_at),
                    expires_at: Timestamp::from_unix_millis(e.expires_at),
                    decided_at: ts(e.decided_at),
                    ended_at: ts(e.ended_at),
                    note: e.note,
                })
            })
            .transpose()?;
        let bundle = self
            .bundle
            .map(|b| {
                let parts = b
                    .parts
                    .iter()
                    .map(|p| RequestId::parse(p).map_err(|e| bad(format!("bundle part `{p}` {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                if !parts.iter().any(|p| p.as_str() == id) {
                    return Err(bad("its bundle does not list it".to_owned()));
                }
                Ok(BundleRef {
                    name: b.name,
                    parts,
                })
            })
            .transpose()?;
        Ok(AccessRequest {
            bundle,
            extension,
            id: RequestId::parse(&id).map_err(|e| bad(format!("id {e}")))?,
            requester: user(&self.requester)?,
            entitlement: EntitlementId::parse(&self.entitlement)
                .map_err(|e| bad(format!("entitlement `{}` {e}", self.entitlement)))?,
            duration: Duration::from_millis(
                u64::try_from(self.duration_ms).map_err(|_| bad("negative duration".to_owned()))?,
            ),
            reason: self.reason,
            ticket: self.ticket,
            start_at: ts(self.start_at),
            created_at: Timestamp::from_unix_millis(self.created_at),
            state,
            approval_tiers,
            approvals,
            policy_version: self.policy_version,
            break_glass: self.break_glass,
            public_key: self.public_key,
            external,
            certificate: self.certificate,
            pending_deadline: Timestamp::from_unix_millis(self.pending_deadline),
            decided_at: ts(self.decided_at),
            activates_at: ts(self.activates_at),
            expires_at: ts(self.expires_at),
            granted_at: ts(self.granted_at),
            ended_at: ts(self.ended_at),
            ended_by: self.ended_by.as_deref().map(user).transpose()?,
            end_note: self.end_note,
            job,
            claim_token: u64::try_from(self.claim_token)
                .map_err(|_| bad("negative claim token".to_owned()))?,
            deprovisioned_at: ts(self.deprovisioned_at),
            waiting,
            review,
            checks: CheckActivity {
                count: u64::try_from(self.check_count)
                    .map_err(|_| bad("negative check count".to_owned()))?,
                last_at: ts(self.last_checked_at),
            },
        })
    }
}

fn tier_records(tiers: &[ApprovalTier]) -> Vec<TierRecord> {
    tiers
        .iter()
        .map(|t| TierRecord {
            count: t.count,
            groups: t.groups.iter().map(ToString::to_string).collect(),
            policy: t.policy.clone(),
        })
        .collect()
}

fn approval_records(approvals: &[Approval]) -> Vec<ApprovalRecord> {
    approvals
        .iter()
        .map(|a| ApprovalRecord {
            approver: a.approver.to_string(),
            at: a.at.unix_millis(),
            comment: a.comment.clone(),
            tiers: Some(a.tiers.iter().copied().collect()),
        })
        .collect()
}

fn tiers_of(
    tiers: &[TierRecord],
    groups: impl Fn(&[String]) -> Result<BTreeSet<GroupName>, StoreError>,
) -> Result<Vec<ApprovalTier>, StoreError> {
    tiers
        .iter()
        .map(|t| {
            Ok(ApprovalTier {
                count: t.count,
                groups: groups(&t.groups)?,
                policy: t.policy.clone(),
            })
        })
        .collect()
}

fn approvals_of(
    approvals: Vec<ApprovalRecord>,
    user: impl Fn(&str) -> Result<UserId, StoreError>,
) -> Result<Vec<Approval>, StoreError> {
    approvals
        .into_iter()
        .map(|a| {
            Ok(Approval {
                approver: user(&a.approver)?,
                at: Timestamp::from_unix_millis(a.at),
                comment: a.comment,
                // Absent before schema version 2, when there was one tier.
                tiers: a
                    .tiers
                    .map_or_else(|| BTreeSet::from([0]), |t| t.into_iter().collect()),
            })
        })
        .collect()
}

/// One `audit_events` row, as exported (times in Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub request: Option<String>,
    pub entitlement: Option<String>,
    pub subject: Option<String>,
    pub details: std::collections::BTreeMap<String, String>,
    /// The API token the actor used (absent in exports made before tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `service` for a service principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_kind: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditRecord> for AuditRow {
    fn from(r: &AuditRecord) -> Self {
        AuditRow {
            seq: r.seq,
            at: r.at.unix_millis(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            request: r.request.clone(),
            entitlement: r.entitlement.clone(),
            subject: r.subject.clone(),
            details: r.details.clone(),
            token: r.token.clone(),
            actor_kind: r.actor_kind.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        AuditRecord {
            seq: r.seq,
            at: Timestamp::from_unix_millis(r.at),
            actor: r.actor,
            action: r.action,
            request: r.request,
            entitlement: r.entitlement,
            subject: r.subject,
            details: r.details,
            token: r.token,
            actor_kind: r.actor_kind,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}
