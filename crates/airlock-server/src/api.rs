//! The HTTP API's wire types, shared by the server, the CLI and the
//! benchmarks so that both ends always agree. Domain types never derive serde;
//! conversions live here.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use airlock_core::audit::AuditRecord;
use airlock_core::catalog::Entitlement;
use airlock_core::request::AccessRequest;
use airlock_core::waits::ApprovalWaits;
use airlock_core::{RequestId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::engine::{
    ConnectorOutcome, FindingReport, FixOutcome, ListingOutcome, ReconcileReport, StandingReport,
};
use crate::store::PageKey;

/// The response header of `GET /v1/requests` that carries the cursor of
/// the next page; absent on the last page. (A header keeps the body the
/// JSON array it always was.)
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// The opaque `cursor` of a page of requests: where the previous page
/// ended, as hex of `created_at:id`. Opaque so that the order's key can
/// change without clients noticing.
pub fn encode_cursor(key: &PageKey) -> String {
    hex::encode(format!("{}:{}", key.created_at.unix_millis(), key.id))
}

/// The opaque `cursor` of a page of audit events: the `seq` of the oldest
/// event of the previous page (the next one holds older events), as hex.
pub fn encode_audit_cursor(seq: i64) -> String {
    hex::encode(seq.to_string())
}

/// Reads a cursor made by [`encode_audit_cursor`]; anything else is refused.
pub fn decode_audit_cursor(raw: &str) -> Result<i64, String> {
    let bad = || format!("`{raw}` is not an audit cursor this server gave out");
    let bytes = hex::decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.parse::<i64>()
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(bad)
}

/// Reads a cursor made by [`encode_cursor`]; anything else is refused.
pub fn decode_cursor(raw: &str) -> Result<PageKey, String> {
    let bad = || format!("`{raw}` is not a cursor this server gave out");
    let bytes = hex::decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (millis, id) = text.split_once(':').ok_or_else(bad)?;
    Ok(PageKey {
        created_at: Timestamp::from_unix_millis(millis.parse().map_err(|_| bad())?),
        id: RequestId::parse(id).map_err(|_| bad())?,
    })
}

/// RFC 3339 UTC with milliseconds.
pub fn format_time(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// Accepts RFC 3339 (`2026-11-23T10:00:00Z`, or with any UTC offset:
/// `2026-11-23T12:00:00+02:00`, as identity providers send it) or Unix
/// seconds.
pub fn parse_time(raw: &str) -> Result<Timestamp, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(Timestamp::from_unix_millis(secs.saturating_mul(1000)));
    }
    // humantime reads `Z` alone: the local time is read as UTC, then moved
    // back by the offset.
    let (local, offset) = match utc_offset(raw) {
        Some((local, offset)) => (format!("{local}Z"), offset),
        None => (raw.to_owned(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&local)
        .map_err(|e| format!("`{raw}` is not an RFC 3339 time or Unix seconds ({e})"))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{raw}` is before 1970"))?
        .as_millis();
    let ms = i64::try_from(ms)
        .unwrap_or(i64::MAX)
        .saturating_sub(offset.saturating_mul(1000));
    Ok(Timestamp::from_unix_millis(ms))
}

/// A date-time's numeric UTC offset (`+02:00`, `-05:30`): the time before
/// it, and the offset in seconds. `None` without one.
fn utc_offset(raw: &str) -> Option<(&str, i64)> {
    let (local, offset) = raw.split_at_checked(raw.len().checked_sub(6)?)?;
    let sign = match offset.get(..1)? {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let (hours, minutes) = offset.get(1..)?.split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (local.contains(['T', 't', ' ']) && hours < 24 && minutes < 60)
        .then_some((local, sign * (hours * 3600 + minutes * 60)))
}

/// A duration given as `"2h"` / `"90m"` or as a number of seconds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DurationInput {
    Seconds(u64),
    Text(String),
}

/// By hand rather than `untagged`, whose error names the Rust type instead
/// of saying what the field takes.
impl<'de> Deserialize<'de> for DurationInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Expect;
        impl serde::de::Visitor<'_> for Expect {
            type Value = DurationInput;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"2h\" or \"90m\", or a whole number of seconds")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationInput, E> {
                Ok(DurationInput::Seconds(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationInput, E> {
                u64::try_from(v)
                    .map(DurationInput::Seconds)
                    .map_err(|_| E::custom(format!("`{v}` is negative: a duration is at least 1s")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationInput, E> {
                Ok(DurationInput::Text(v.to_owned()))
            }
        }
        d.deserialize_any(Expect)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The entitlement asked for; or `bundle`, or `entitlements` (exactly
    /// one of the three).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entitlement: String,
    /// A bundle the config names (`[bundles.NAME]`): its entitlements
    /// together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Entitlements asked for together (an ad-hoc bundle, at least two).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub entitlements: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationInput>,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// RFC 3339 or Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// Declares an emergency; policies decide what that changes, and the
    /// audit record says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// OpenSSH public key line, for entitlements granted as SSH certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl CreateRequest {
    /// A request for `entitlement`, for `duration` (the entitlement's
    /// default when `None`), for `reason`; nothing else set.
    pub fn for_entitlement(
        entitlement: &str,
        duration: Option<DurationInput>,
        reason: &str,
    ) -> CreateRequest {
        CreateRequest {
            entitlement: entitlement.to_owned(),
            bundle: None,
            entitlements: Vec::new(),
            duration,
            reason: reason.to_owned(),
            ticket: None,
            start_at: None,
            break_glass: false,
            public_key: None,
        }
    }
}

/// A list that may be sent as `null` (like every optional field).
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of deny and revoke.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: String,
}

/// Body of extend: how much longer (`"30m"` or seconds) and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    pub by: DurationInput,
    #[serde(default)]
    pub reason: String,
}

/// Body of cancel and release (nothing to say).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalView {
    pub approver: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobView {
    /// `grant` or `revoke`.
    pub action: String,
    pub attempts: u32,
    pub in_flight: bool,
    pub next_attempt_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestView {
    pub id: String,
    pub requester: String,
    pub entitlement: String,
    pub state: String,
    /// Approved, with a start time still in the future.
    pub scheduled: bool,
    pub reason: String,
    pub ticket: Option<String>,
    pub duration_seconds: u64,
    pub start_at: Option<String>,
    pub created_at: String,
    /// While pending: when it times out.
    pub pending_deadline: Option<String>,
    /// Approvals needed in all (the seats of every tier, and for an
    /// external requester their sponsor's).
    pub required_approvals: u32,
    /// Every group of every tier.
    pub approver_groups: Vec<String>,
    /// What the policy set required: every tier must be met, each by
    /// different people.
    #[serde(default)]
    pub approval_tiers: Vec<TierView>,
    pub approvals: Vec<ApprovalView>,
    /// Content hash of the policy set that decided the request.
    #[serde(default)]
    pub policy_version: String,
    #[serde(default)]
    pub break_glass: bool,
    /// The SSH certificate (or other non-secret artifact) the grant issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    pub decided_at: Option<String>,
    pub activates_at: Option<String>,
    pub expires_at: Option<String>,
    pub granted_at: Option<String>,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    /// Deny or revoke reason, or why provisioning failed.
    pub end_reason: Option<String>,
    /// Outstanding connector work.
    pub job: Option<JobView>,
    /// When the target confirmed the grant was removed.
    pub deprovisioned_at: Option<String>,
    /// The request ended but the target has not confirmed removal in time.
    pub revocation_overdue: bool,
    /// While active: seconds until expiry.
    pub time_left_seconds: Option<u64>,
    /// Reminders and escalation while it waited for approvers: when each is
    /// (or was) due, and when it happened.
    pub waiting: WaitingView,
    /// The review of a break-glass use; absent for any other request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewView>,
    /// The latest extension asked for, whatever became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionView>,
    /// For an external principal's request: their sponsor, whose approval
    /// it needs besides the tiers', and their account's end when they
    /// asked (no grant of theirs outlasts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_expires: Option<String>,
    /// How often the grant was checked (`GET /v1/check`), as stored: each
    /// replica adds its checks about once a second.
    #[serde(default)]
    pub check_count: u64,
    /// When it was last checked (as stored).
    #[serde(default)]
    pub last_checked_at: Option<String>,
    /// The bundle it is a part of, with each part's state: in the answers
    /// about one request (absent from lists, and for a request asked for
    /// alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleView>,
}

/// A bundle's parts, each with where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleView {
    /// The first part's id.
    pub id: String,
    /// The config's bundle; absent for entitlements asked for together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub parts: Vec<BundlePartView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundlePartView {
    pub id: String,
    pub entitlement: String,
    pub state: String,
    /// Deny or revoke reason, or why provisioning failed.
    pub end_reason: Option<String>,
    pub granted_at: Option<String>,
    /// When the target confirmed the grant was removed.
    pub deprovisioned_at: Option<String>,
}

/// The review of a break-glass use (`request::Review`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewView {
    /// Groups whose members may judge the use now (the escalation groups
    /// too once it is overdue).
    pub review_by: Vec<String>,
    pub due_at: String,
    /// Unreviewed past `due_at`.
    pub overdue: bool,
    pub escalate_to: Vec<String>,
    pub escalated_at: Option<String>,
    /// Absent until a reviewer judged it.
    pub verdict: Option<ReviewVerdictView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewVerdictView {
    pub reviewer: String,
    pub at: String,
    pub acceptable: bool,
    pub comment: String,
}

/// Body of `POST /v1/requests/{id}/review`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Was the emergency use acceptable?
    pub acceptable: bool,
    /// Why (required).
    #[serde(default)]
    pub comment: String,
}

/// Query of `GET /v1/reviews`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewsQuery {
    /// Reviewed uses too, not only those awaiting a verdict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/grants`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    /// Only break-glass grants.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// An extension of an active grant (`request::Extension`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionView {
    pub by_seconds: u64,
    pub reason: String,
    pub requested_at: String,
    /// `pending`, `provisioning`, `extended`, `denied`, `failed` or `lapsed`.
    pub state: String,
    pub required_approvals: u32,
    pub approval_tiers: Vec<TierView>,
    pub approvals: Vec<ApprovalView>,
    /// The expiry when it was asked for, and the one it asks for.
    pub previous_expires_at: String,
    pub expires_at: String,
    pub decided_at: Option<String>,
    pub ended_at: Option<String>,
    /// Why it was denied, failed or lapsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ExtensionView {
    /// The extension of `r` (whose sponsor's seat, for an external
    /// principal's, counts among the approvals it needs).
    fn of(r: &AccessRequest, e: &airlock_core::request::Extension) -> Self {
        ExtensionView {
            by_seconds: e.by.as_secs(),
            reason: e.reason.clone(),
            requested_at: format_time(e.requested_at),
            state: e.state.as_str().to_owned(),
            required_approvals: r.extension_seats().map_or(0, |s| s.needed()),
            approval_tiers: e.approval_tiers.iter().map(TierView::from).collect(),
            approvals: e.approvals.iter().map(ApprovalView::from).collect(),
            previous_expires_at: format_time(e.previous_expires_at),
            expires_at: format_time(e.expires_at),
            decided_at: e.decided_at.map(format_time),
            ended_at: e.ended_at.map(format_time),
            note: e.note.clone(),
        }
    }
}

impl From<&airlock_core::request::Approval> for ApprovalView {
    fn from(a: &airlock_core::request::Approval) -> Self {
        ApprovalView {
            approver: a.approver.to_string(),
            at: format_time(a.at),
            comment: a.comment.clone(),
        }
    }
}

/// A request's reminder and escalation (`request::WaitingPlan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingView {
    pub remind_at: Option<String>,
    pub reminded_at: Option<String>,
    pub escalate_at: Option<String>,
    /// Groups whose members may approve too once escalated.
    pub escalate_to: Vec<String>,
    pub escalated_at: Option<String>,
}

impl RequestView {
    pub fn new(r: &AccessRequest, now: Timestamp, overdue_after: Duration) -> Self {
        let opt = |t: Option<Timestamp>| t.map(format_time);
        RequestView {
            id: r.id.to_string(),
            requester: r.requester.to_string(),
            entitlement: r.entitlement.to_string(),
            state: r.state.as_str().to_owned(),
            scheduled: r.is_scheduled(now),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            duration_seconds: r.duration.as_secs(),
            start_at: opt(r.start_at),
            created_at: format_time(r.created_at),
            pending_deadline: (r.state == airlock_core::request::State::Pending)
                .then(|| format_time(r.pending_deadline)),
            required_approvals: r.approvals_needed(),
            approver_groups: r
                .approver_groups()
                .iter()
                .map(ToString::to_string)
                .collect(),
            approval_tiers: r.approval_tiers.iter().map(TierView::from).collect(),
            policy_version: r.policy_version.clone(),
            break_glass: r.break_glass,
            certificate: r.certificate.clone(),
            approvals: r.approvals.iter().map(ApprovalView::from).collect(),
            extension: r.extension.as_ref().map(|e| ExtensionView::of(r, e)),
            sponsor: r.sponsor().map(ToString::to_string),
            account_expires: r.external.as_ref().map(|e| format_time(e.account_expires)),
            decided_at: opt(r.decided_at),
            activates_at: opt(r.activates_at),
            expires_at: opt(r.expires_at),
            granted_at: opt(r.granted_at),
            ended_at: opt(r.ended_at),
            ended_by: r.ended_by.as_ref().map(ToString::to_string),
            end_reason: r.end_note.clone(),
            job: r.job.as_ref().map(|j| JobView {
                action: j.action.as_str().to_owned(),
                attempts: j.attempts,
                in_flight: j.claimed_until.is_some_and(|u| u > now),
                next_attempt_at: format_time(j.next_attempt_at),
                last_error: j.last_error.clone(),
            }),
            deprovisioned_at: opt(r.deprovisioned_at),
            revocation_overdue: r.revocation_overdue(now, overdue_after),
            waiting: WaitingView {
                remind_at: opt(r.waiting.remind_at),
                reminded_at: opt(r.waiting.reminded_at),
                escalate_at: opt(r.waiting.escalate_at),
                escalate_to: r
                    .waiting
                    .escalate_to
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                escalated_at: opt(r.waiting.escalated_at),
            },
            review: r.review.as_ref().map(|v| ReviewView {
                review_by: v.groups().iter().map(ToString::to_string).collect(),
                due_at: format_time(v.due_at),
                overdue: v.is_overdue(now),
                escalate_to: v.escalate_to.iter().map(ToString::to_string).collect(),
                escalated_at: opt(v.escalated_at),
                verdict: v.verdict.as_ref().map(|d| ReviewVerdictView {
                    reviewer: d.reviewer.to_string(),
                    at: format_time(d.at),
                    acceptable: d.acceptable,
                    comment: d.comment.clone(),
                }),
            }),
            check_count: r.checks.count,
            last_checked_at: opt(r.checks.last_at),
            time_left_seconds: (r.state == airlock_core::request::State::Active)
                .then(|| r.expires_at.map(|e| now.until(e).as_secs()))
                .flatten(),
            bundle: None,
        }
    }

    /// The view with its bundle's parts (`parts`: every part as stored,
    /// in the bundle's order; a part not found is left out).
    pub fn with_bundle(mut self, r: &AccessRequest, parts: &[AccessRequest]) -> Self {
        self.bundle = r.bundle.as_ref().map(|b| BundleView {
            id: b.id().map(ToString::to_string).unwrap_or_default(),
            name: b.name.clone(),
            parts: b
                .parts
                .iter()
                .filter_map(|id| parts.iter().find(|p| p.id == *id))
                .map(|p| BundlePartView {
                    id: p.id.to_string(),
                    entitlement: p.entitlement.to_string(),
                    state: p.state.as_str().to_owned(),
                    end_reason: p.end_note.clone(),
                    granted_at: p.granted_at.map(format_time),
                    deprovisioned_at: p.deprovisioned_at.map(format_time),
                })
                .collect(),
        });
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntitlementView {
    pub id: String,
    pub description: String,
    pub max_duration_seconds: u64,
    pub default_duration_seconds: u64,
    pub reason_required: bool,
    pub ticket_required: bool,
    pub ticket_pattern: Option<String>,
    /// The connector that provisions it: the target system.
    pub connector: String,
    /// How an ordinary request by the caller would be decided: `auto`, or
    /// the tiers it needs (`1 from [approvers] (policy) and ...`).
    pub approval: String,
    /// What an ordinary request needs besides a duration (`ticket`,
    /// `ticket matching `…``, `reason`, `recent MFA`), from the
    /// entitlement's rules and the policies.
    pub needs: Vec<String>,
    /// Emergency access, when the entitlement allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassView>,
    /// A grant unused this long is released early (`idle_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_limit_seconds: Option<u64>,
}

/// An entitlement's break-glass rules (`catalog::BreakGlassRules`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BreakGlassView {
    pub max_duration_seconds: u64,
    pub review_by: Vec<String>,
    pub review_within_seconds: u64,
    pub escalate_to: Vec<String>,
}

impl EntitlementView {
    pub fn new(e: &Entitlement, approval: String, needs: Vec<String>) -> Self {
        EntitlementView {
            id: e.id.to_string(),
            description: e.description.clone(),
            max_duration_seconds: e.max_duration.as_secs(),
            default_duration_seconds: e.default_duration.as_secs(),
            reason_required: e.reason_required,
            ticket_required: e.ticket.required,
            ticket_pattern: e.ticket.pattern.as_ref().map(|p| p.as_str().to_owned()),
            connector: e.connector.clone(),
            approval,
            needs,
            break_glass: e.break_glass.as_ref().map(|b| BreakGlassView {
                max_duration_seconds: b.max_duration.as_secs(),
                review_by: b.review_by.iter().map(ToString::to_string).collect(),
                review_within_seconds: b.review_within.as_secs(),
                escalate_to: b.escalate_to.iter().map(ToString::to_string).collect(),
            }),
            idle_limit_seconds: None,
        }
    }
}

/// One approval tier of a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TierView {
    pub count: u32,
    pub groups: Vec<String>,
    /// The policy that asked for it.
    pub policy: String,
}

impl From<&airlock_core::approval::ApprovalTier> for TierView {
    fn from(t: &airlock_core::approval::ApprovalTier) -> Self {
        TierView {
            count: t.count,
            groups: t.groups.iter().map(ToString::to_string).collect(),
            policy: t.policy.clone(),
        }
    }
}

/// Which policies decided a request, from its audit record, and how the
/// policy set in force now would decide the same request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExplainView {
    pub request: String,
    pub state: String,
    /// The policy set version that decided the request.
    pub policy_version: String,
    /// `denied`, `auto_approved`, or `needs ...` (the tiers).
    pub decision: String,
    /// The policies that permitted or routed it, or the forbids that denied it.
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (and failed closed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_errors: Vec<String>,
    /// Why it was denied, when a policy denied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_because: Option<String>,
    pub approvals: Vec<ApprovalExplained>,
    /// The same request judged by the policy set in force now.
    pub now: ReDecision,
    /// Every recorded step of the request and who took it: with which API
    /// token, and whether a service principal.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// One audit event of a request, as far as who acted goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: String,
    pub action: String,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_kind: Option<String>,
    /// What the event records (for activity: the session, its client and
    /// statement; for an elevation claim: its id and audience).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl HistoryEntry {
    /// The event in words when it is activity during the grant — a
    /// session the connector saw, an SSH login or logout sshd logged, an
    /// elevation claim, a warning that it was unused — for `airlock show`
    /// and the request's web page.
    pub fn activity(&self) -> Option<String> {
        let detail = |k: &str| self.details.get(k).cloned().unwrap_or_default();
        let what = match self.action.as_str() {
            "session_seen" => format!(
                "session {} as {} from {}{}",
                detail("session"),
                detail("login"),
                detail("client"),
                self.details
                    .get("statement")
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            ),
            "session_gone" => format!(
                "session {} gone{}",
                detail("session"),
                self.details
                    .get("why")
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            ),
            "ssh_login" => format!(
                "ssh login as {} from {} port {} on {} (certificate serial {})",
                detail("user"),
                detail("client"),
                detail("port"),
                detail("source"),
                detail("serial")
            ),
            "ssh_logout" => format!(
                "ssh logout of {} from {} port {} on {} ({})",
                detail("user"),
                detail("client"),
                detail("port"),
                detail("source"),
                detail("how")
            ),
            "idle_warned" => format!(
                "unused since {}: warned that it is released at {} unless used (idle limit {})",
                detail("idle_since"),
                detail("release_at"),
                detail("idle_limit")
            ),
            "elevation_claimed" => format!(
                "elevation claim {}{}, until {}",
                detail("claim"),
                self.details
                    .get("audience")
                    .map(|a| format!(" for {a}"))
                    .unwrap_or_default(),
                detail("expires_at")
            ),
            _ => return None,
        };
        Some(what)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalExplained {
    pub approver: String,
    pub at: String,
    /// `approval_recorded` or `denied`.
    pub action: String,
    /// The `approve` policies that let them decide.
    pub policies: Vec<String>,
    pub policy_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReDecision {
    pub policy_version: String,
    pub decision: String,
    pub policies: Vec<String>,
    /// Whether the version in force is the one that decided.
    pub same_version: bool,
}

/// What a policy reload (or a proposal's approval) did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyReloadView {
    /// `activated` (in force now), `proposed` (waiting for a second admin)
    /// or `approval_recorded` (approved, waiting for another admin).
    pub outcome: String,
    /// The version in force before (and, when proposed, still).
    pub previous_version: String,
    pub version: String,
    pub policies: usize,
    /// When proposed: its id, for `POST /v1/policy/proposals/{id}/approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    /// When proposed: who gains or loses what.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}

/// A policy set waiting for a second admin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProposalView {
    pub id: String,
    /// `system` when proposed by SIGHUP.
    pub proposed_by: String,
    pub proposed_at: String,
    /// The set in force it was compared with.
    pub base_version: String,
    pub version: String,
    /// Who gains or loses the ability to request, be auto-approved for or
    /// approve which entitlement, and in which circumstances.
    pub changes: Vec<String>,
    /// The admins who approved it so far.
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// How many admins must approve it (two when no person proposed it).
    pub approvals_needed: usize,
}

impl From<&airlock_core::policy_change::Proposal> for ProposalView {
    fn from(p: &airlock_core::policy_change::Proposal) -> Self {
        ProposalView {
            id: p.id.clone(),
            proposed_by: p
                .proposed_by
                .as_ref()
                .map_or_else(|| "system".to_owned(), |u| u.id.to_string()),
            proposed_at: format_time(p.proposed_at),
            base_version: p.base_version.clone(),
            version: p.version.clone(),
            changes: p.changes.clone(),
            approved_by: p.approvals.iter().map(ToString::to_string).collect(),
            approvals_needed: p.approvals_needed(),
        }
    }
}

/// The policy set in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyView {
    pub version: String,
    pub policies: Vec<String>,
    /// Whether changes need a second admin's approval.
    pub two_person: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub request: Option<String>,
    pub entitlement: Option<String>,
    pub subject: Option<String>,
    pub details: std::collections::BTreeMap<String, String>,
    /// The API token the actor used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `service` when the actor is a service principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_kind: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditRecord> for AuditEventView {
    fn from(r: &AuditRecord) -> Self {
        AuditEventView {
            seq: r.seq,
            at: format_time(r.at),
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyView {
    pub ok: bool,
    pub checked: u64,
    pub head_hash: String,
    /// The first bad event's sequence number, and what is wrong with it.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
    /// The last event checked.
    #[serde(default)]
    pub head_seq: i64,
    /// Checked against a checkpoint log: the newest checkpoint that matched.
    #[serde(default)]
    pub last_checkpoint: Option<i64>,
    /// Checked against a checkpoint log: events after its newest
    /// checkpoint, which no signature covers yet (removing them is not
    /// detectable).
    #[serde(default)]
    pub unsigned: Option<u64>,
}

impl From<airlock_core::audit::ChainReport> for VerifyView {
    fn from(report: airlock_core::audit::ChainReport) -> Self {
        VerifyView {
            ok: report.first_break.is_none(),
            checked: report.checked,
            head_hash: report.head_hash,
            first_bad_seq: report.first_break.as_ref().map(|b| b.seq()),
            problem: report.first_break.map(|b| b.to_string()),
            head_seq: report.head_seq,
            last_checkpoint: report.last_checkpoint,
            unsigned: None,
        }
    }
}

/// A one-time credential a grant created (e.g. a temporary database login).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialView {
    pub request_id: String,
    pub login: String,
    pub secret: String,
    /// When the grant (and with it the credential) ends.
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for CredentialView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialView")
            .field("request_id", &self.request_id)
            .field("login", &self.login)
            .field("secret", &"***")
            .finish()
    }
}

/// Body of `POST /v1/reconcile`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileBody {
    /// Apply the fixes the rule decides; without it, findings are only
    /// recorded and reported.
    #[serde(default)]
    pub fix: bool,
}

/// What a reconciliation found and did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileView {
    pub at: String,
    /// Whether fixes were applied.
    pub fix: bool,
    /// Findings left in place: reported only, not attempted, failed or skipped.
    pub unfixed: usize,
    /// Connectors whose holders could not be checked.
    pub errors: usize,
    pub connectors: Vec<ConnectorReconcileView>,
}

impl ReconcileView {
    /// Whether the target and Airlock agree (or were made to).
    pub fn clean(&self) -> bool {
        self.unfixed == 0 && self.errors == 0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectorReconcileView {
    pub connector: String,
    /// `checked`, `skipped` (it cannot list holders) or `error`.
    pub status: String,
    /// Holders the target listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub findings: Vec<FindingView>,
}

/// One difference between the target and Airlock's grants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FindingView {
    /// `unmanaged`, `lingering`, `unknown_request` or `missing`.
    pub kind: String,
    /// The identity in the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The requester, for a request the store knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    /// What the rule decides: `none`, `remove_holder`, `revoke` or `grant`.
    pub fix: String,
    /// `not_attempted` (no `fix` asked), `none`, `fixed`, `failed` or `skipped`.
    pub outcome: String,
    /// Why nothing is done, what else a fix did, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<&FindingReport> for FindingView {
    fn from(f: &FindingReport) -> Self {
        let finding = &f.drift.finding;
        let request = finding.request();
        let detail = match (&f.outcome, f.drift.fix) {
            (FixOutcome::Fixed { note }, _) => note.clone(),
            (FixOutcome::Failed { error, .. }, _) => Some(error.clone()),
            (FixOutcome::Skipped { why }, _) => Some(why.clone()),
            (_, airlock_core::drift::Fix::None { why }) => Some(why.to_owned()),
            _ => None,
        };
        FindingView {
            kind: finding.kind().to_owned(),
            principal: finding.principal().map(str::to_owned),
            request: finding.request_id().map(ToString::to_string),
            user: request.map(|r| r.requester.to_string()),
            entitlement: request.map(|r| r.entitlement.to_string()),
            fix: f.drift.fix.as_str().to_owned(),
            outcome: f.outcome.as_str().to_owned(),
            detail,
        }
    }
}

impl From<&ReconcileReport> for ReconcileView {
    fn from(r: &ReconcileReport) -> Self {
        let connectors = r
            .connectors
            .iter()
            .map(|c| {
                let (status, holders, error, findings) = match &c.outcome {
                    ConnectorOutcome::Skipped => ("skipped", None, None, Vec::new()),
                    ConnectorOutcome::Failed(e) => ("error", None, Some(e.clone()), Vec::new()),
                    ConnectorOutcome::Checked { holders, findings } => (
                        "checked",
                        Some(*holders),
                        None,
                        findings.iter().map(FindingView::from).collect(),
                    ),
                };
                ConnectorReconcileView {
                    connector: c.connector.clone(),
                    status: status.to_owned(),
                    holders,
                    error,
                    findings,
                }
            })
            .collect();
        ReconcileView {
            at: format_time(r.at),
            fix: r.fix,
            unfixed: r.unfixed(),
            errors: r.errors(),
            connectors,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WhoAmI {
    pub user: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// `person` or `service`.
    #[serde(default)]
    pub kind: String,
    /// The API token the caller authenticated with, if any, and its scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// For an external principal (a vendor): their sponsor and when their
    /// account ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_expires: Option<String>,
}

/// `GET /v1/auth/oidc`: how `airlock login` signs in to this server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OidcInfo {
    /// The identity provider; its discovery document names the endpoints.
    pub issuer: String,
    /// The public client to sign in as.
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Which of the provider's tokens to send as the bearer token
    /// (`id_token`: its audience is the client id, which the server accepts).
    pub token: String,
    /// `acr` values that count as MFA here, to ask for on a step-up.
    pub mfa_acr_values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// `invalid_input`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `internal`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Query of `GET /v1/requests`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestQuery {
    /// Comma-separated states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only the caller's own requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mine: Option<bool>,
    /// Only pending requests the caller may approve and has not yet approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_me: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// At most this many (1 to 1000, 100 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The page after the one whose response carried this cursor (in its
    /// `X-Next-Cursor` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    /// Only events of this kind (`requested`, `policy_activated`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only events done with this API token (`tok_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// RFC 3339 or Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The page of older events after the one whose response carried this
    /// cursor (in its `X-Next-Cursor` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/notifications`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsQuery {
    /// Only rows in this state: `pending`, `sent`, `failed` or `dropped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only notifications about this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The notification outbox: how far behind it is, what failed, and its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationsView {
    /// Due and not sent yet (being sent or waiting for a retry).
    pub backlog: u64,
    /// Not due yet (expiry warnings, overdue checks).
    pub scheduled: u64,
    /// When the oldest of the backlog fell due.
    pub oldest_due: Option<String>,
    /// Rows by state (`pending`, `sent`, `failed`, `dropped`).
    pub counts: std::collections::BTreeMap<String, u64>,
    pub last_error: Option<NotificationErrorView>,
    /// The matching rows, most recently changed first.
    pub notifications: Vec<NotificationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationErrorView {
    pub key: String,
    pub error: String,
    pub at: String,
}

/// One message on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    /// `<audit seq>-<topic>:<channel>`; also the idempotency key it is sent with.
    pub key: String,
    pub topic: String,
    pub channel: String,
    pub request: Option<String>,
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    pub first_due: String,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub settled_at: Option<String>,
}

impl NotificationsView {
    pub fn new(summary: &crate::store::OutboxSummary, rows: &[crate::store::OutboxEntry]) -> Self {
        NotificationsView {
            backlog: summary.backlog,
            scheduled: summary.scheduled,
            oldest_due: summary.oldest_due.map(format_time),
            counts: crate::store::OutboxState::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str().to_owned(),
                        summary.counts.get(s).copied().unwrap_or(0),
                    )
                })
                .collect(),
            last_error: summary
                .last_error
                .as_ref()
                .map(|(key, error, at)| NotificationErrorView {
                    key: key.clone(),
                    error: error.clone(),
                    at: format_time(*at),
                }),
            notifications: rows
                .iter()
                .map(|n| NotificationView {
                    key: n.key.clone(),
                    topic: n.topic.as_str().to_owned(),
                    channel: n.channel.clone(),
                    request: n.request.as_ref().map(|r| r.to_string()),
                    state: n.state.as_str().to_owned(),
                    attempts: n.attempts,
                    created_at: format_time(n.created_at),
                    first_due: format_time(n.first_due),
                    next_attempt_at: n.next_attempt_at.map(format_time),
                    last_error: n.last_error.clone(),
                    settled_at: n.settled_at.map(format_time),
                })
                .collect(),
        }
    }
}

/// `POST /v1/tokens`: a new API token for the caller, or for a service
/// principal they own (`owner`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    pub name: String,
    /// How long it lives (`30d`, or seconds); default 30 days, at most
    /// `server.token_max_lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<DurationInput>,
    /// `read`, `request`, `approve`, `admin`, `tokens`; default `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// A service principal the caller owns; default the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub scopes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: String,
    /// To the minute: uses are recorded at most once a minute.
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
}

impl TokenView {
    pub fn new(t: &airlock_core::token::ApiToken, now: Timestamp) -> TokenView {
        TokenView {
            id: t.id.to_string(),
            name: t.name.clone(),
            owner: t.owner.to_string(),
            scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            state: t.state(now).to_owned(),
            created_at: format_time(t.created_at),
            created_by: t.created_by.to_string(),
            expires_at: format_time(t.expires_at),
            last_used_at: t.last_used_at.map(format_time),
            revoked_at: t.revoked_at.map(format_time),
            revoked_by: t.revoked_by.as_ref().map(ToString::to_string),
        }
    }
}

/// A token just created: the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreatedTokenView {
    pub secret: String,
    pub token: TokenView,
}

/// `GET /v1/tokens`: `all=true` lists every token (admins and auditors).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// Which requests `GET /v1/reports/approval-waits` and
/// `GET /v1/reports/usage` count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitsQuery {
    /// Requests created since: an RFC 3339 time, Unix seconds, or a
    /// duration back from now (`30d`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Which audit events `GET /v1/audit/export` returns: the next ones of the
/// chain after `after`, oldest first, for shipping to a SIEM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExportQuery {
    /// The `seq` of the last event already shipped (0: from the start).
    #[serde(default)]
    pub after: i64,
    /// 1 to 1,000 (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// How access was used in a period (`GET /v1/reports/usage`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReportView {
    /// Requests created since this time (RFC 3339) were counted.
    pub since: String,
    pub entitlements: Vec<EntitlementUsageView>,
    /// Everyone who approved or denied in the period, with what stands out.
    pub approvers: Vec<ApproverView>,
    /// Who may request what but did not in the period: candidates for removal.
    pub unused: Vec<UnusedEligibility>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntitlementUsageView {
    pub entitlement: String,
    pub requests: usize,
    pub auto_approved: usize,
    pub needing_approval: usize,
    pub break_glass: usize,
    pub denied_by_policy: usize,
    pub denied_by_approver: usize,
    /// Of the requests the policies let through, the share granted at once
    /// (0 to 1); `None` without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approval_rate: Option<f64>,
    /// Approval waits of those decided by a person (nearest rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_p50_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_p95_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApproverView {
    pub approver: String,
    pub approvals: usize,
    pub denials: usize,
    /// Approvals given within 30 seconds of the request.
    pub quick_approvals: usize,
    /// What stands out: approving nearly everything, within seconds, most
    /// requests of one entitlement.
    pub signals: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnusedEligibility {
    pub user: String,
    pub entitlement: String,
}

/// What `POST /v1/requests/{id}/elevation` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevationBody {
    /// The application the claim is for (its `aud`), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// A signed elevation claim: a JWT (EdDSA) an application verifies against
/// `/.well-known/jwks.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ElevationView {
    pub token: String,
    /// The claim's `jti`, as audited.
    pub id: String,
    pub issuer: String,
    /// The key that signed it (`kid`).
    pub key_id: String,
    /// RFC 3339: the sooner of the claim's lifetime and the grant's expiry.
    pub expires_at: String,
}

/// `GET /v1/check`: both are required (optional here so that a missing one
/// is refused naming it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
}

/// Whether a principal holds an entitlement right now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckView {
    pub principal: String,
    pub entitlement: String,
    /// An active grant whose expiry has not passed.
    pub holds: bool,
    /// The request that grants it, while it holds.
    pub request_id: Option<String>,
    /// When that grant ends.
    pub expires_at: Option<String>,
}

/// `POST /v1/grants/{id}/activity`: log lines from a target about the
/// grant (sshd's, from a log shipper on the SSH host).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActivityBody {
    /// Where the lines come from (the SSH host): part of a session's
    /// identity, recorded with each event.
    pub source: String,
    pub lines: Vec<String>,
}

/// What a post of log lines recorded on a grant's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivityView {
    pub request_id: String,
    /// Logins and logouts added to the timeline (`ssh_login`, `ssh_logout`).
    pub recorded: usize,
    /// Lines that are no login or logout of this grant.
    pub ignored: usize,
    /// Logins and logouts already on the timeline (a retried post).
    pub duplicates: usize,
    /// Logins and logouts past the grant's bound, not recorded.
    pub over_limit: usize,
    /// The most activity events one grant gets.
    pub limit: usize,
}

/// `POST /v1/requests/{id}/ssh-sessions`: the SSH companion's record of one
/// session (defined with the companion, which sends it).
pub use airlock_session::upload::SessionUpload;

/// One SSH session recorded under a request (`GET
/// /v1/requests/{id}/ssh-sessions`, and the answer to a post).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshSessionView {
    pub id: String,
    pub request_id: String,
    pub host: String,
    pub user: String,
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub started_at: String,
    pub ended_at: String,
    /// `exited`, `expired` or `revoked`.
    pub ending: String,
    /// The recording's size as kept, in bytes.
    pub recording_bytes: u64,
    /// What was not kept, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<String>,
    pub received_at: String,
    /// In the answer to a post: `true` when the session was stored before
    /// (a resend), and nothing was written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

impl SshSessionView {
    pub fn new(s: &crate::store::ssh_sessions::StoredSession) -> SshSessionView {
        let r = &s.report;
        SshSessionView {
            id: r.id.clone(),
            request_id: s.request.to_string(),
            host: r.host.clone(),
            user: r.user.clone(),
            client: r.client.clone(),
            command: r.command.clone(),
            started_at: format_time(r.started_at),
            ended_at: format_time(r.ended_at),
            ending: r.ending.as_str().to_owned(),
            recording_bytes: s.recording_bytes,
            cut: r.cut.clone(),
            received_at: format_time(s.received_at),
            duplicate: false,
        }
    }
}

/// `GET /v1/ssh-sessions/{id}`: a session with its recording (asciicast v2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshSessionRecordingView {
    #[serde(flatten)]
    pub session: SshSessionView,
    pub recording: String,
}

/// `POST /v1/tickets/{ref}/closed`: the ticket system says a ticket is
/// closed. Signed (`x-airlock-timestamp`, `x-airlock-signature`), so the
/// body names the ticket too: the signature covers the body, not the path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TicketClosedBody {
    pub ticket: String,
    /// The ticket system's id of this delivery (its event id), recorded
    /// with what it ended; two closings signed in the same second are two
    /// deliveries only if their bodies differ, which it ensures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

/// What closing a ticket ended (both lists empty when nothing was left to
/// end: a ticket closed again, or one no request was asked for under).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TicketClosedView {
    pub ticket: String,
    /// Grants revoked; their removal from the targets follows.
    pub revoked: Vec<String>,
    /// Requests cancelled before they started.
    pub cancelled: Vec<String>,
}

impl TicketClosedView {
    pub fn new(closed: &crate::engine::TicketClosed) -> TicketClosedView {
        let ids = |ids: &[RequestId]| ids.iter().map(ToString::to_string).collect();
        TicketClosedView {
            ticket: closed.ticket.clone(),
            revoked: ids(&closed.revoked),
            cancelled: ids(&closed.cancelled),
        }
    }
}

/// `GET /v1/reports/standing` takes no parameters (unknown ones are refused).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandingQuery {}

/// Who holds each connector's access, granted by Airlock or standing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandingReportView {
    /// When the targets were asked (RFC 3339).
    pub at: String,
    pub connectors: Vec<StandingConnectorView>,
    /// Highest risk first, then by connector and principal.
    pub holders: Vec<StandingHolderView>,
    /// How many holders have each status (`granted`, `standing`,
    /// `lingering`, `unknown_request`); every status appears.
    pub by_status: BTreeMap<String, usize>,
    /// How many holders have each risk (`low` … `critical`); every level appears.
    pub by_risk: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandingConnectorView {
    pub connector: String,
    /// `listed`, `skipped` (it cannot list holders) or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub holders: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandingHolderView {
    pub connector: String,
    /// The identity in the target (a database role, a certificate key id).
    pub principal: String,
    /// `granted` (an Airlock request explains it), `standing` (none does),
    /// `lingering` (held for an ended request), `unknown_request`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The Airlock user behind it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `person`, `service` or `unknown` (no Airlock user answers for it).
    pub kind: String,
    /// What it gives: the request's entitlement, or for access no grant
    /// explains, every entitlement provisioned through the connector.
    pub entitlements: Vec<String>,
    /// Held since (RFC 3339), where known: when Airlock's grant was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Held until (RFC 3339): an Airlock grant's expiry; standing access has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Per entitlement, how this holder would get it through Airlock under
    /// the policies in force.
    pub approval: BTreeMap<String, String>,
    /// The highest sensitivity among `entitlements`.
    pub sensitivity: String,
    pub risk: String,
}

impl From<&StandingReport> for StandingReportView {
    fn from(report: &StandingReport) -> Self {
        let mut holders = Vec::new();
        let mut connectors = Vec::new();
        for c in &report.connectors {
            let (outcome, error, rows) = match &c.outcome {
                ListingOutcome::Skipped => ("skipped", None, &[][..]),
                ListingOutcome::Failed(e) => ("failed", Some(e.clone()), &[][..]),
                ListingOutcome::Listed(rows) => ("listed", None, rows.as_slice()),
            };
            connectors.push(StandingConnectorView {
                connector: c.connector.clone(),
                outcome: outcome.to_owned(),
                error,
                holders: rows.len(),
            });
            holders.extend(rows.iter().map(|h| {
                (
                    h.risk,
                    StandingHolderView {
                        connector: c.connector.clone(),
                        principal: h.principal.clone(),
                        status: h.status.to_owned(),
                        request: h.request.as_ref().map(ToString::to_string),
                        user: h.user.as_ref().map(ToString::to_string),
                        kind: h.kind.as_str().to_owned(),
                        entitlements: h.entitlements.iter().map(ToString::to_string).collect(),
                        since: h.since.map(format_time),
                        until: h.until.map(format_time),
                        approval: h
                            .approval
                            .iter()
                            .map(|(e, how)| (e.to_string(), how.clone()))
                            .collect(),
                        sensitivity: h.sensitivity.as_str().to_owned(),
                        risk: h.risk.as_str().to_owned(),
                    },
                )
            }));
        }
        holders.sort_by(|(ra, a), (rb, b)| {
            rb.cmp(ra)
                .then_with(|| a.connector.cmp(&b.connector))
                .then_with(|| a.principal.cmp(&b.principal))
        });
        let holders: Vec<StandingHolderView> = holders.into_iter().map(|(_, h)| h).collect();
        let count = |keys: &[&str], of: &dyn Fn(&StandingHolderView) -> &str| {
            keys.iter()
                .map(|k| {
                    let n = holders.iter().filter(|h| of(h) == *k).count();
                    ((*k).to_owned(), n)
                })
                .collect::<BTreeMap<_, _>>()
        };
        StandingReportView {
            at: format_time(report.at),
            by_status: count(&STANDING_STATUSES, &|h| h.status.as_str()),
            by_risk: count(
                &airlock_core::standing::Sensitivity::ALL.map(|s| s.as_str()),
                &|h| h.risk.as_str(),
            ),
            connectors,
            holders,
        }
    }
}

/// The standing-privilege report's columns, as the CLI's table and every
/// CSV of it (`airlock report standing --csv`, the web UI's download) head
/// them.
pub const STANDING_COLUMNS: &[&str] = &[
    "RISK",
    "STATUS",
    "CONNECTOR",
    "PRINCIPAL",
    "USER",
    "KIND",
    "ENTITLEMENTS",
    "SENSITIVITY",
    "REQUEST",
    "SINCE",
    "UNTIL",
    "APPROVAL",
];

/// The statuses a standing report's holder has, in the order they are
/// shown (and counted in `by_status`).
pub const STANDING_STATUSES: [&str; 4] = ["granted", "standing", "lingering", "unknown_request"];

impl StandingHolderView {
    /// Its cells under [`STANDING_COLUMNS`]; `none` stands for what it
    /// lacks.
    pub fn cells(&self, none: &str) -> Vec<String> {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| none.to_owned());
        vec![
            self.risk.clone(),
            self.status.clone(),
            self.connector.clone(),
            self.principal.clone(),
            or(&self.user),
            self.kind.clone(),
            self.entitlements.join(" "),
            self.sensitivity.clone(),
            or(&self.request),
            or(&self.since),
            or(&self.until),
            self.approval_route(),
        ]
    }

    /// How it would get each entitlement through Airlock, in one line
    /// (`entitlement: route; …`).
    pub fn approval_route(&self) -> String {
        self.approval
            .iter()
            .map(|(e, how)| format!("{e}: {how}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Holders of the standing-privilege report as CSV (RFC 4180): a header of
/// [`STANDING_COLUMNS`] in lower case, then one line per holder, each line
/// ending in a line feed.
pub fn standing_csv<'a>(holders: impl IntoIterator<Item = &'a StandingHolderView>) -> String {
    let mut out = csv_line(STANDING_COLUMNS.iter().map(|c| c.to_lowercase()));
    out.push('\n');
    for h in holders {
        out.push_str(&csv_line(h.cells("")));
        out.push('\n');
    }
    out
}

/// One CSV line: fields with a comma, quote or line break quoted (quotes
/// doubled); a field a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@`, tab, carriage return first) is prefixed with `'`, since principals
/// come from the targets and anyone with access there can name one.
pub fn csv_line(fields: impl IntoIterator<Item = String>) -> String {
    fields
        .into_iter()
        .map(|f| {
            let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{f}")
            } else {
                f
            };
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod csv_tests {
    use super::csv_line;

    fn line(fields: &[&str]) -> String {
        csv_line(fields.iter().map(|f| (*f).to_owned()))
    }

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        assert_eq!(line(&["a", "b c", ""]), "a,b c,");
        assert_eq!(
            line(&["x,y", "say \"hi\"", "two\nlines"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\""
        );
        assert_eq!(
            line(&["=HYPERLINK(\"x\")", "+1", "-2", "@cmd"]),
            "\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@cmd"
        );
        assert_eq!(line(&["2026-12-06T13:00:00Z"]), "2026-12-06T13:00:00Z");
    }
}

/// How long requests waited for an approver, per entitlement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalWaitsReport {
    /// Requests created since this time (RFC 3339) were counted.
    pub since: String,
    pub entitlements: Vec<ApprovalWaitsView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalWaitsView {
    pub entitlement: String,
    /// Requests the policies routed to approvers.
    pub needing_approval: usize,
    /// Of them, approved or denied by a person.
    pub decided: usize,
    /// Waits of the decided ones, nearest-rank; `null` when none was decided.
    pub p50_seconds: Option<u64>,
    pub p95_seconds: Option<u64>,
    pub longest_seconds: Option<u64>,
    /// Still waiting, and the longest wait among them so far.
    pub waiting: usize,
    pub oldest_waiting_seconds: Option<u64>,
    pub timed_out: usize,
    /// Withdrawn (or ended by deprovisioning) before anyone decided.
    pub withdrawn: usize,
}

impl From<&ApprovalWaits> for ApprovalWaitsView {
    fn from(w: &ApprovalWaits) -> Self {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        ApprovalWaitsView {
            entitlement: w.entitlement.to_string(),
            needing_approval: w.needing_approval,
            decided: w.decided,
            p50_seconds: secs(w.p50),
            p95_seconds: secs(w.p95),
            longest_seconds: secs(w.longest),
            waiting: w.waiting,
            oldest_waiting_seconds: secs(w.oldest_waiting),
            timed_out: w.timed_out,
            withdrawn: w.withdrawn,
        }
    }
}

/// Body of `POST /v1/access-reviews`: start a campaign now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartAccessReviewBody {
    /// The name of its `[access_reviews.NAME]` table.
    pub template: String,
}

/// Query of `GET /v1/access-reviews`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessReviewQuery {
    /// Only campaigns with items still open.
    #[serde(default)]
    pub open: bool,
}

/// The campaigns one may see, and the kinds of campaign the config defines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessReviewList {
    pub campaigns: Vec<AccessReviewView>,
    pub templates: Vec<AccessReviewTemplateView>,
}

/// A kind of campaign (`[access_reviews.NAME]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessReviewTemplateView {
    pub name: String,
    /// How often one starts by itself (`90d`); absent: on demand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    pub reviewers: Vec<String>,
    pub due_within: String,
    /// `eligibilities`, `standing`.
    pub include: Vec<String>,
}

/// One campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessReviewView {
    pub id: String,
    pub template: String,
    pub started_by: String,
    /// RFC 3339, as every time below.
    pub started_at: String,
    pub due_at: String,
    /// The groups whose members may decide its items now (with the
    /// escalation groups once it escalated).
    pub reviewers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    pub items: u32,
    pub open_items: u32,
    /// Items still open past the due time.
    pub overdue: bool,
}

/// A campaign with its items: what `GET /v1/access-reviews/{id}` answers,
/// and the evidence `airlock access-review evidence` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessReviewDetail {
    pub campaign: AccessReviewView,
    pub items: Vec<AccessReviewItemView>,
}

/// One item of a campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessReviewItemView {
    pub item: u32,
    /// `eligibility` (the user may ask for the entitlement) or `holder`
    /// (the target lists the principal and no open grant explains it).
    pub kind: String,
    /// The Airlock user it is about, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An eligibility's entitlement; a holder's are in `entitlements`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    /// An eligibility's approval route (`auto`, the tiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A holder's status: `standing`, `lingering` or `unknown_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<String>,
    /// `confirm` or `remove`; absent while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The decision's place in the audit chain: its event's seq and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// For a removed holder: `pending`, `failed` (tried again) or `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal_error: Option<String>,
}

/// Body of `POST /v1/access-reviews/{id}/items/{item}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideItemBody {
    /// `confirm` or `remove`.
    pub decision: String,
    /// Why (required to remove).
    #[serde(default)]
    pub comment: String,
}

impl AccessReviewView {
    pub fn of(c: &airlock_core::access_review::Campaign, now: Timestamp) -> Self {
        AccessReviewView {
            id: c.id.to_string(),
            template: c.template.clone(),
            started_by: c.started_by.clone(),
            started_at: c.started_at.to_rfc3339(),
            due_at: c.due_at.to_rfc3339(),
            reviewers: c
                .reviewer_groups()
                .iter()
                .map(ToString::to_string)
                .collect(),
            reminded_at: c.reminded_at.map(Timestamp::to_rfc3339),
            escalated_at: c.escalated_at.map(Timestamp::to_rfc3339),
            completed_at: c.completed_at.map(Timestamp::to_rfc3339),
            items: c.items,
            open_items: c.open_items,
            overdue: c.is_overdue(now),
        }
    }
}

impl AccessReviewItemView {
    /// `item` with its decision's chain hash from `hashes` (seq to hash).
    pub fn of(item: &airlock_core::access_review::Item, hashes: &BTreeMap<i64, String>) -> Self {
        use airlock_core::access_review::Subject;
        let mut view = AccessReviewItemView {
            item: item.number,
            kind: item.subject.kind().to_owned(),
            user: item.subject.user().map(ToString::to_string),
            entitlement: None,
            route: None,
            connector: None,
            principal: None,
            status: None,
            request: None,
            entitlements: Vec::new(),
            risk: None,
            decision: None,
            decided_by: None,
            decided_at: None,
            comment: None,
            seq: None,
            hash: None,
            removal: None,
            removed_at: None,
            removal_error: None,
        };
        match &item.subject {
            Subject::Eligibility {
                entitlement, route, ..
            } => {
                view.entitlement = Some(entitlement.to_string());
                view.route = Some(route.clone());
            }
            Subject::Holder {
                connector,
                principal,
                status,
                request,
                entitlements,
                risk,
                ..
            } => {
                view.connector = Some(connector.clone());
                view.principal = Some(principal.clone());
                view.status = Some(status.clone());
                view.request = request.as_ref().map(ToString::to_string);
                view.entitlements = entitlements.iter().map(ToString::to_string).collect();
                view.risk = Some(risk.as_str().to_owned());
            }
        }
        if let Some(d) = &item.decided {
            view.decision = Some(d.decision.as_str().to_owned());
            view.decided_by = Some(d.by.to_string());
            view.decided_at = Some(d.at.to_rfc3339());
            view.comment = Some(d.comment.clone());
            view.seq = d.seq;
            view.hash = d.seq.and_then(|s| hashes.get(&s).cloned());
        }
        let removal = item.removal.clone().unwrap_or_default();
        if item.removal_outstanding() || removal.done_at.is_some() {
            view.removal = Some(
                match (removal.done_at, &removal.last_error) {
                    (Some(_), _) => "done",
                    (None, Some(_)) => "failed",
                    (None, None) => "pending",
                }
                .to_owned(),
            );
            view.removed_at = removal.done_at.map(Timestamp::to_rfc3339);
            view.removal_error = removal.last_error.filter(|_| removal.done_at.is_none());
        }
        view
    }
}

impl AccessReviewTemplateView {
    pub fn of(t: &airlock_core::access_review::Template) -> Self {
        let mut include = Vec::new();
        if t.eligibilities {
            include.push("eligibilities".to_owned());
        }
        if t.standing {
            include.push("standing".to_owned());
        }
        AccessReviewTemplateView {
            name: t.name.clone(),
            every: t.every.map(airlock_core::time::human_duration),
            reviewers: t.reviewers.iter().map(ToString::to_string).collect(),
            due_within: airlock_core::time::human_duration(t.due_within),
            include,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_any_utc_offset() {
        let utc = parse_time("2027-06-30T10:00:00Z").unwrap();
        for same in [
            "2027-06-30T12:00:00+02:00",
            "2027-06-30T04:30:00-05:30",
            "2027-06-30T10:00:00+00:00",
            "2027-06-30T10:00:00.000Z",
        ] {
            assert_eq!(parse_time(same), Ok(utc), "{same}");
        }
        assert_eq!(parse_time("1814349600"), Ok(utc));
        for bad in [
            "2027-06-30",
            "2027-06-30T10:00:00+25:00",
            "soon",
            "2027-06-30T10:00:00+2:0",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
