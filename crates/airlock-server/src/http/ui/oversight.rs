//! The web UI's pages for overseeing access: active grants (revoke),
//! break-glass reviews (judge), the audit log (filter, chain status) and the
//! policy set (approve a proposal). Each asks the same `json_api` function
//! as its `/v1` counterpart; who may see or do what stays the core's and
//! the engine's to decide.

use airlock_core::access::{may_act, Capability, RequestAction};
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::super::json_api::{
    audit_events, grants_filter, policy_view, proposal_views, reviews_filter, verify_view,
};
use super::super::{require, ApiResult, AppState};
use super::session::{Fields, Posted, Session};
use super::{api_error_page, render, requests, Chrome, FormError, Row};
use crate::api::{AuditEventView, AuditQuery, PolicyView, ProposalView, VerifyView};
use crate::store::RequestFilter;

/// A request in an oversight list, with whether this user may act on it
/// (the form is left out where the rules would refuse; the server refuses
/// regardless).
struct Item {
    row: Row,
    may_act: bool,
}

/// The requests `filter` matches as items, `action` deciding each one's
/// form; a filter the caller may not have is the error's page.
async fn items(
    state: &AppState,
    session: &Session,
    filter: ApiResult<RequestFilter>,
    action: RequestAction,
) -> Result<Vec<Item>, Response> {
    let filter = filter.map_err(|e| api_error_page(&e))?;
    let found = requests(state, filter).await?;
    Ok(found
        .iter()
        .map(|r| Item {
            row: Row::new(state, r),
            may_act: may_act(&session.user, r, action).is_ok(),
        })
        .collect())
}

/// Whether a query's flag (`?break_glass=1`, `?all=1`) is on.
fn flag(fields: &Fields, name: &str) -> bool {
    matches!(fields.get(name), Some("1" | "true" | "on"))
}

#[derive(Template)]
#[template(path = "ui/grants.html")]
struct GrantsPage {
    chrome: Chrome,
    items: Vec<Item>,
    break_glass: bool,
}

/// Who holds what now (admins and auditors: every grant, as `GET
/// /v1/grants` shows them).
pub(super) async fn grants(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let break_glass = flag(&Fields::query(query.as_deref()), "break_glass");
    let filter = require(&session.user, Capability::ReadEverything)
        .and_then(|()| grants_filter(&session.user, break_glass));
    let items = match items(&state, &session, filter, RequestAction::Revoke).await {
        Ok(items) => items,
        Err(page) => return page,
    };
    let page = GrantsPage {
        chrome: Chrome::new(&state, &session, "grants").await,
        items,
        break_glass,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "ui/reviews.html")]
struct ReviewsPage {
    chrome: Chrome,
    items: Vec<Item>,
    all: bool,
}

/// Break-glass uses this user may see: those awaiting a verdict, or
/// (`?all=1`) every one with its verdict.
pub(super) async fn reviews(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let all = flag(&Fields::query(query.as_deref()), "all");
    let filter = reviews_filter(&session.user, all);
    let items = match items(&state, &session, filter, RequestAction::Review).await {
        Ok(items) => items,
        Err(page) => return page,
    };
    let page = ReviewsPage {
        chrome: Chrome::new(&state, &session, "reviews").await,
        items,
        all,
    };
    render(StatusCode::OK, &page)
}

/// The audit page's filter, as typed (shown again in the form).
#[derive(Default)]
struct AuditForm {
    request: String,
    user: String,
    entitlement: String,
    since: String,
    until: String,
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    chrome: Chrome,
    form: AuditForm,
    verify: Option<VerifyView>,
    events: Vec<AuditEventView>,
    error: Option<FormError>,
}

/// How many events the audit page shows (the newest that match).
const AUDIT_ROWS: u32 = 200;

/// The audit log filtered by user, entitlement, request and time, newest
/// first, under the chain's verification status (admins and auditors).
pub(super) async fn audit(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = Fields::query(query.as_deref());
    let text = |name: &str| fields.get(name).unwrap_or_default().to_owned();
    let form = AuditForm {
        request: text("request"),
        user: text("user"),
        entitlement: text("entitlement"),
        since: text("since"),
        until: text("until"),
    };
    let verify = match verify_view(&state, &session.user).await {
        Ok(v) => Some(v),
        // Not theirs to see: the page says so, as the API would.
        Err(e) if e.status == StatusCode::FORBIDDEN => return api_error_page(&e),
        Err(_) => None,
    };
    let optional = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let q = AuditQuery {
        request: optional(&form.request),
        user: optional(&form.user),
        entitlement: optional(&form.entitlement),
        since: optional(&form.since),
        until: optional(&form.until),
        limit: Some(AUDIT_ROWS),
        ..AuditQuery::default()
    };
    let (events, error, status) = match audit_events(&state, &session.user, q).await {
        Ok(mut events) => {
            events.reverse();
            (events, None, StatusCode::OK)
        }
        Err(e) => {
            let status = e.status;
            (Vec::new(), Some(FormError::from(e)), status)
        }
    };
    let page = AuditPage {
        chrome: Chrome::new(&state, &session, "audit").await,
        form,
        verify,
        events,
        error,
    };
    render(status, &page)
}

#[derive(Template)]
#[template(path = "ui/policies.html")]
struct PoliciesPage {
    chrome: Chrome,
    set: PolicyView,
    proposals: Vec<ProposalView>,
    may_approve: bool,
    done: Option<String>,
    error: Option<FormError>,
}

async fn policies_page(
    state: &AppState,
    session: &Session,
    done: Option<String>,
    error: Option<FormError>,
    status: StatusCode,
) -> Response {
    let (set, proposals) = match policy_view(state, &session.user)
        .and_then(|set| Ok((set, proposal_views(state, &session.user)?)))
    {
        Ok(found) => found,
        Err(e) => return api_error_page(&e),
    };
    let page = PoliciesPage {
        chrome: Chrome::new(state, session, "policies").await,
        set,
        proposals,
        may_approve: require(&session.user, Capability::ApprovePolicyChanges).is_ok(),
        done,
        error,
    };
    render(status, &page)
}

/// The policy set in force and the proposals that wait for approval.
pub(super) async fn policies(State(state): State<AppState>, session: Session) -> Response {
    policies_page(&state, &session, None, None, StatusCode::OK).await
}

/// An admin approves a proposed set, as `POST
/// /v1/policy/proposals/{id}/approve` does.
pub(super) async fn approve_proposal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { session, .. }: Posted,
) -> Response {
    match super::super::json_api::approve_proposal(&state, &session.user, &id).await {
        Ok((status, view)) => {
            let done = if status == StatusCode::OK {
                format!("{id} approved: version {} is in force", view.version)
            } else {
                format!("{id}: your approval is recorded; it needs another admin")
            };
            policies_page(&state, &session, Some(done), None, StatusCode::OK).await
        }
        Err(e) => {
            let status = e.status;
            policies_page(&state, &session, None, Some(e.into()), status).await
        }
    }
}
