//! The HTTP API's wire types, shared by the server, the CLI and the
//! benchmarks so that both ends always agree. Domain types never derive serde;
//! conversions live here.

use std::time::{Duration, UNIX_EPOCH};

use airlock_core::audit::AuditRecord;
use airlock_core::catalog::{ApprovalRule, Entitlement};
use airlock_core::request::AccessRequest;
use airlock_core::Timestamp;
use serde::{Deserialize, Serialize};

/// RFC 3339 UTC with milliseconds.
pub fn format_time(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// Accepts RFC 3339 (`2026-11-23T10:00:00Z`) or Unix seconds.
pub fn parse_time(raw: &str) -> Result<Timestamp, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(Timestamp::from_unix_millis(secs.saturating_mul(1000)));
    }
    let t = humantime::parse_rfc3339_weak(raw)
        .map_err(|e| format!("`{raw}` is not an RFC 3339 time or Unix seconds ({e})"))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{raw}` is before 1970"))?
        .as_millis();
    Ok(Timestamp::from_unix_millis(
        i64::try_from(ms).unwrap_or(i64::MAX),
    ))
}

/// A duration given as `"2h"` / `"90m"` or as a number of seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DurationInput {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub entitlement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationInput>,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// RFC 3339 or Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
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
    pub required_approvals: u32,
    pub approver_groups: Vec<String>,
    pub approvals: Vec<ApprovalView>,
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
            required_approvals: r.required_approvals,
            approver_groups: r.approver_groups.iter().map(ToString::to_string).collect(),
            approvals: r
                .approvals
                .iter()
                .map(|a| ApprovalView {
                    approver: a.approver.to_string(),
                    at: format_time(a.at),
                    comment: a.comment.clone(),
                })
                .collect(),
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
            time_left_seconds: (r.state == airlock_core::request::State::Active)
                .then(|| r.expires_at.map(|e| now.until(e).as_secs()))
                .flatten(),
        }
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
    /// `auto`, or `N of [groups]`.
    pub approval: String,
}

impl From<&Entitlement> for EntitlementView {
    fn from(e: &Entitlement) -> Self {
        EntitlementView {
            id: e.id.to_string(),
            description: e.description.clone(),
            max_duration_seconds: e.max_duration.as_secs(),
            default_duration_seconds: e.default_duration.as_secs(),
            reason_required: e.reason_required,
            ticket_required: e.ticket.required,
            ticket_pattern: e.ticket.pattern.as_ref().map(|p| p.as_str().to_owned()),
            approval: match &e.approval {
                ApprovalRule::Auto => "auto".to_owned(),
                ApprovalRule::Approvals { count, from } => format!(
                    "{count} of [{}]",
                    from.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            },
        }
    }
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WhoAmI {
    pub user: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
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
    /// RFC 3339 or Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
