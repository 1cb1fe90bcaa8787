//! Elevation claims: the holder of an active grant obtains a short-lived,
//! signed statement of it — who, which entitlement, which request, until
//! when — that an application checks against Airlock's published keys
//! before a privileged action, without calling Airlock each time. What a
//! claim says, who may have one and how long it lasts are decided here;
//! signing is the shell's (`airlock-server::elevation`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::access::{may_act, RequestAction};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::User;
use crate::ids::{EntitlementId, RequestId, UserId};
use crate::request::{AccessRequest, Rejection};
use crate::time::Timestamp;

/// The longest an audience may be.
pub const MAX_AUDIENCE_CHARS: usize = 256;

/// What a claim states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Unique per claim, so an application can refuse a replay it saw.
    pub id: String,
    pub principal: UserId,
    pub entitlement: EntitlementId,
    pub request: RequestId,
    pub break_glass: bool,
    /// The application it is for, when the holder named one.
    pub audience: Option<String>,
    pub issued_at: Timestamp,
    /// The sooner of the claim's lifetime and the grant's own expiry: a
    /// claim never outlives the grant it states.
    pub expires_at: Timestamp,
}

/// A claim for `holder` on `request` at `now`, lasting at most `lifetime`,
/// and the audit event that records it; refused unless the holder may
/// prove this grant and the grant gives access now.
pub fn claim(
    request: &AccessRequest,
    holder: &User,
    audience: Option<&str>,
    id: String,
    lifetime: Duration,
    now: Timestamp,
) -> Result<(Claim, AuditEvent), Rejection> {
    may_act(holder, request, RequestAction::ProveElevation)?;
    let expires = request.expires_at.filter(|_| request.holds_access(now));
    let Some(grant_expires) = expires else {
        return Err(Rejection::Conflict(format!(
            "`{}` is not an active grant (it is {}): there is nothing to prove",
            request.id,
            request.state.as_str()
        )));
    };
    let audience = match audience.map(str::trim) {
        None | Some("") => None,
        Some(a) if a.chars().count() > MAX_AUDIENCE_CHARS || a.chars().any(char::is_control) => {
            return Err(Rejection::Invalid {
                field: "audience",
                message: format!(
                    "must be at most {MAX_AUDIENCE_CHARS} characters without control characters"
                ),
            })
        }
        Some(a) => Some(a.to_owned()),
    };
    let claim = Claim {
        id,
        principal: request.requester.clone(),
        entitlement: request.entitlement.clone(),
        request: request.id.clone(),
        break_glass: request.break_glass,
        audience,
        issued_at: now,
        expires_at: now.plus(lifetime).min(grant_expires),
    };
    let mut details = BTreeMap::from([
        ("claim".to_owned(), claim.id.clone()),
        ("expires_at".to_owned(), claim.expires_at.to_rfc3339()),
    ]);
    if let Some(a) = &claim.audience {
        details.insert("audience".to_owned(), a.clone());
    }
    let event = AuditEvent {
        at: now,
        actor: Actor::of(holder),
        action: AuditAction::ElevationClaimed,
        request: Some(request.id.clone()),
        entitlement: Some(request.entitlement.clone()),
        subject: Some(request.requester.clone()),
        details,
    };
    Ok((claim, event))
}
