//! The web UI's pages for overseeing access: active grants (revoke),
//! break-glass reviews (judge), the audit log (filter, chain status), the
//! policy set (approve a proposal) and the standing-privilege report
//! (filter by status, download as CSV). Each asks the same `json_api` function
//! as its `/v1` counterpart, and pages with its cursor; who may see or do
//! what stays the core's and the engine's to decide.

use airlock_core::access::{may_act, Capability, RequestAction};
use airlock_core::audit::AuditAction;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::super::json_api::{
    audit_events, grants_filter, policy_view, proposal_views, reviews_filter, standing_view,
    verify_view,
};
use super::super::{require, ApiError, ApiResult, AppState};
use super::session::{Fields, Posted, Session};
use super::{
    api_error_page, problem_page, render, requests_page, Chrome, FormError, Pager, Paging, Row,
};
use crate::api::{
    standing_csv, AuditEventView, AuditQuery, PolicyView, ProposalView, StandingConnectorView,
    StandingHolderView, VerifyView, STANDING_STATUSES,
};
use crate::store::RequestFilter;

/// A request in an oversight list, with whether this user may act on it
/// (the form is left out where the rules would refuse; the server refuses
/// regardless).
struct Item {
    row: Row,
    may_act: bool,
}

/// The page of requests `filter` matches as items, `action` deciding each
/// one's form, and the next page's cursor; a filter the caller may not
/// have is the error's page.
async fn items(
    state: &AppState,
    session: &Session,
    filter: ApiResult<RequestFilter>,
    (action, paging): (RequestAction, &Paging),
) -> Result<(Vec<Item>, Option<String>), Response> {
    let filter = filter.map_err(|e| api_error_page(&e))?;
    let (found, next) = requests_page(state, filter, paging).await?;
    let items = found
        .iter()
        .map(|r| Item {
            row: Row::new(state, r),
            may_act: may_act(&session.user, r, action).is_ok(),
        })
        .collect();
    Ok((items, next))
}

/// Whether a query's flag (`?break_glass=1`, `?all=1`) is on.
pub(super) fn flag(fields: &Fields, name: &str) -> bool {
    matches!(fields.get(name), Some("1" | "true" | "on"))
}

#[derive(Template)]
#[template(path = "ui/grants.html")]
struct GrantsPage {
    chrome: Chrome,
    items: Vec<Item>,
    break_glass: bool,
    pager: Pager,
}

/// Who holds what now (admins and auditors: every grant, as `GET
/// /v1/grants` shows them).
pub(super) async fn grants(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = Fields::query(query.as_deref());
    let break_glass = flag(&fields, "break_glass");
    let paging = match Paging::read(&fields) {
        Ok(p) => p,
        Err(e) => return problem_page(&state, &session, &e).await,
    };
    let filter = require(&session.user, Capability::ReadEverything)
        .and_then(|()| grants_filter(&session.user, break_glass));
    let action = (RequestAction::Revoke, &paging);
    let (items, next) = match items(&state, &session, filter, action).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let filters = [("break_glass", if break_glass { "1" } else { "" })];
    let pager = Pager::new(
        &paging,
        ("/ui/grants", &filters),
        "grants",
        items.len(),
        next.as_deref(),
    );
    let page = GrantsPage {
        chrome: Chrome::new(&state, &session, "grants").await,
        items,
        break_glass,
        pager,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "ui/reviews.html")]
struct ReviewsPage {
    chrome: Chrome,
    items: Vec<Item>,
    all: bool,
    pager: Pager,
}

/// Break-glass uses this user may see: those awaiting a verdict, or
/// (`?all=1`) every one with its verdict.
pub(super) async fn reviews(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = Fields::query(query.as_deref());
    let all = flag(&fields, "all");
    let paging = match Paging::read(&fields) {
        Ok(p) => p,
        Err(e) => return problem_page(&state, &session, &e).await,
    };
    let filter = reviews_filter(&session.user, all);
    let action = (RequestAction::Review, &paging);
    let (items, next) = match items(&state, &session, filter, action).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let filters = [("all", if all { "1" } else { "" })];
    let pager = Pager::new(
        &paging,
        ("/ui/reviews", &filters),
        "uses",
        items.len(),
        next.as_deref(),
    );
    let page = ReviewsPage {
        chrome: Chrome::new(&state, &session, "reviews").await,
        items,
        all,
        pager,
    };
    render(StatusCode::OK, &page)
}

/// The audit page's filter, as typed (shown again in the form).
#[derive(Default)]
struct AuditForm {
    request: String,
    user: String,
    entitlement: String,
    action: String,
    token: String,
    since: String,
    until: String,
}

impl AuditForm {
    /// The filters by their query names, as the links to other pages keep them.
    fn filters(&self) -> [(&'static str, &str); 7] {
        [
            ("request", &self.request),
            ("user", &self.user),
            ("entitlement", &self.entitlement),
            ("action", &self.action),
            ("token", &self.token),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    chrome: Chrome,
    form: AuditForm,
    /// Every audit action (the core's list), and whether it is the filter's.
    actions: Vec<(&'static str, bool)>,
    verify: Option<VerifyView>,
    events: Vec<AuditEventView>,
    pager: Pager,
    error: Option<FormError>,
}

/// The audit log filtered by user, entitlement, request, action, API token
/// and time, newest first, a page at a time, under the chain's
/// verification status (admins and auditors).
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
        action: text("action"),
        token: text("token"),
        since: text("since"),
        until: text("until"),
    };
    let actions = AuditAction::ALL
        .iter()
        .map(|a| (a.as_str(), a.as_str() == form.action))
        .collect();
    let verify = match verify_view(&state, &session.user).await {
        Ok(v) => Some(v),
        // Not theirs to see: the page says so, as the API would.
        Err(e) if e.status == StatusCode::FORBIDDEN => return api_error_page(&e),
        Err(_) => None,
    };
    let optional = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let (paging, found) = match Paging::read(&fields) {
        Ok(paging) => {
            let q = AuditQuery {
                request: optional(&form.request),
                user: optional(&form.user),
                entitlement: optional(&form.entitlement),
                action: optional(&form.action),
                token: optional(&form.token),
                since: optional(&form.since),
                until: optional(&form.until),
                limit: Some(paging.limit),
                cursor: paging.cursor.clone(),
            };
            let found = audit_events(&state, &session.user, q).await;
            (paging, found)
        }
        Err(e) => (Paging::default(), Err(e)),
    };
    let (events, next, error, status) = match found {
        Ok((mut events, next)) => {
            events.reverse();
            (events, next, None, StatusCode::OK)
        }
        Err(e) => {
            let status = e.status;
            (Vec::new(), None, Some(FormError::from(e)), status)
        }
    };
    let pager = Pager::new(
        &paging,
        ("/ui/audit", &form.filters()),
        "events",
        events.len(),
        next.as_deref(),
    );
    let page = AuditPage {
        chrome: Chrome::new(&state, &session, "audit").await,
        actions,
        verify,
        events,
        pager,
        error,
        form,
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

#[derive(Template)]
#[template(path = "ui/standing.html")]
struct StandingPage {
    chrome: Chrome,
    at: String,
    connectors: Vec<StandingConnectorView>,
    holders: Vec<StandingHolderView>,
    /// Every status with how many holders have it, and whether it is the
    /// filter's.
    statuses: Vec<(&'static str, usize, bool)>,
    /// The filter (empty: every status).
    status: String,
    /// Holders in the report, whatever the filter.
    total: usize,
}

/// The status filter of the standing page and its CSV (`?status=`, empty:
/// every status); anything else is refused naming the field.
fn standing_status(fields: &Fields) -> ApiResult<Option<&'static str>> {
    match fields.get("status").unwrap_or_default() {
        "" => Ok(None),
        raw => STANDING_STATUSES
            .into_iter()
            .find(|s| *s == raw)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("must be one of {}", STANDING_STATUSES.join(", ")),
                )
            }),
    }
}

/// Who holds each target's access, granted by Airlock or standing, with
/// the risk and the approval route each holder would meet (admins and
/// auditors, as `GET /v1/reports/standing`), filtered by status.
pub(super) async fn standing(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = Fields::query(query.as_deref());
    let report = match standing_view(&state, &session.user).await {
        Ok(report) => report,
        Err(e) => return api_error_page(&e),
    };
    let status = match standing_status(&fields) {
        Ok(status) => status,
        Err(e) => return problem_page(&state, &session, &e).await,
    };
    let statuses = STANDING_STATUSES
        .into_iter()
        .map(|s| {
            let count = report.by_status.get(s).copied().unwrap_or(0);
            (s, count, Some(s) == status)
        })
        .collect();
    let total = report.holders.len();
    let page = StandingPage {
        chrome: Chrome::new(&state, &session, "standing").await,
        at: report.at,
        connectors: report.connectors,
        holders: report
            .holders
            .into_iter()
            .filter(|h| status.is_none_or(|s| h.status == s))
            .collect(),
        statuses,
        status: status.unwrap_or_default().to_owned(),
        total,
    };
    render(StatusCode::OK, &page)
}

/// The standing page's holders as CSV, with the same filter and the CLI's
/// columns and rules (`api::standing_csv`).
pub(super) async fn standing_download(
    State(state): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = Fields::query(query.as_deref());
    let (report, status) = match standing_view(&state, &session.user).await.and_then(|r| {
        let status = standing_status(&fields)?;
        Ok((r, status))
    }) {
        Ok(found) => found,
        Err(e) => return api_error_page(&e),
    };
    let csv = standing_csv(
        report
            .holders
            .iter()
            .filter(|h| status.is_none_or(|s| h.status == s)),
    );
    let name = format!(
        "attachment; filename=\"airlock-standing{}.csv\"",
        status.map(|s| format!("-{s}")).unwrap_or_default()
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        csv,
    )
        .into_response()
}
