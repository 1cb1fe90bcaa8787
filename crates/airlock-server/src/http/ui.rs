//! The web UI under `/ui`: server-rendered HTML pages (askama templates,
//! escaped by default) over the same engine calls as the JSON API, with
//! plain forms and links that work without JavaScript; one small script of
//! our own only adds the live countdown, "select all" and filling the
//! sign-in form from a link. Assets are embedded; every response carries a
//! strict Content-Security-Policy. Sessions and CSRF are `session`'s. Lists
//! page with the API's own cursors; an unknown page is a 404 page.

use airlock_core::request::{AccessRequest, ExtensionState, State};
use airlock_core::time::human_duration;
use askama::Template;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;

use super::json_api::{
    act, decide_request, entitlement_views, explain_view, extend_grant, page_limit, page_of,
    reviews_filter, submit, view,
};
use super::{require, ApiError, AppState, MfaAt};
use crate::api::{
    CreateRequest, DurationInput, EntitlementView, ExplainView, ExtendBody, RequestView,
};
use crate::engine::{ApproverDecision, UserCommand};
use crate::store::RequestFilter;
use airlock_core::access::{may_act, Capability, RequestAction};

mod access_reviews;
mod idp;
mod oversight;
mod session;

use session::{same_origin, Fields, Posted, Session};

/// The UI's routes; not part of the JSON API (`ROUTES`, the OpenAPI document).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    // The pages renew an identity provider's session on the way in; the
    // sign-in pages and the assets have none to renew.
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(request_page))
        .route("/ui/request", get(request_page).post(submit_request))
        .route("/ui/logout", post(logout))
        .route("/ui/mine", get(mine))
        .route("/ui/inbox", get(inbox).post(decide_many))
        .route("/ui/requests/{id}", get(show))
        .route("/ui/requests/{id}/{action}", post(act_on))
        .route("/ui/grants", get(oversight::grants))
        .route("/ui/reviews", get(oversight::reviews))
        .route("/ui/audit", get(oversight::audit))
        .route("/ui/policies", get(oversight::policies))
        .route("/ui/standing", get(oversight::standing))
        .route("/ui/standing.csv", get(oversight::standing_download))
        .route(
            "/ui/policies/proposals/{id}/approve",
            post(oversight::approve_proposal),
        )
        .route(
            "/ui/access-reviews",
            get(access_reviews::campaigns).post(access_reviews::start),
        )
        .route("/ui/access-reviews/{id}", get(access_reviews::campaign))
        .route(
            "/ui/access-reviews/{id}/items/{item}",
            post(access_reviews::decide),
        )
        .route("/ui/{*unknown}", any(not_found))
        .layer(axum::middleware::from_fn_with_state(state, idp::renew));
    Router::new()
        .merge(pages)
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/oidc/start", get(idp::start))
        .route(idp::CALLBACK_PATH, get(idp::callback))
        .route("/ui/assets/ui.css", get(|| asset("text/css", CSS)))
        .route("/ui/assets/ui.js", get(|| asset("text/javascript", JS)))
        .layer(axum::middleware::map_response(security_headers))
}

const CSS: &str = include_str!("ui/assets/ui.css");
const JS: &str = include_str!("ui/assets/ui.js");

/// No inline script or style anywhere, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages show who holds what now: no copy kept by the browser or a proxy.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a web UI template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// What every signed-in page's header shows: who, where, the pages the
/// rules let them see, how many break-glass uses await a review they could
/// give and how many access-review items they could decide, and the
/// sign-out form (with its CSRF token).
struct Chrome {
    user: String,
    csrf: String,
    current: &'static str,
    /// Admins and auditors: the grants, audit and policies pages.
    oversees: bool,
    /// Break-glass uses awaiting a verdict that this user may see and judge.
    reviews: usize,
    /// Access reviews: whether the menu offers them (something to see).
    access_reviews: bool,
    /// The open access-review items this user may decide.
    to_decide: u64,
}

impl Chrome {
    async fn new(state: &AppState, session: &Session, current: &'static str) -> Chrome {
        let user = &session.user;
        let reviews = match reviews_filter(user, false) {
            // Those they could judge: not their own.
            Ok(filter) => requests(state, filter).await.map_or(0, |open| {
                open.iter()
                    .filter(|r| may_act(user, r, RequestAction::Review).is_ok())
                    .count()
            }),
            Err(_) => 0,
        };
        let workload = state
            .engine
            .access_review_workload(user)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot count the access-review items for the menu");
                None
            });
        Chrome {
            user: user.id.to_string(),
            csrf: session.csrf.clone(),
            current,
            oversees: require(user, Capability::ReadEverything).is_ok(),
            reviews,
            access_reviews: workload.is_some(),
            to_decide: workload.unwrap_or(0),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
}

/// A page that says what went wrong, with the status to match.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        message: message.to_owned(),
    };
    render(status, &page)
}

fn api_error_page(e: &ApiError) -> Response {
    error_response(e.status, &e.message)
}

/// An error page inside the signed-in layout: the menu stays.
#[derive(Template)]
#[template(path = "ui/problem.html")]
struct ProblemPage {
    chrome: Chrome,
    status: u16,
    title: String,
    message: String,
}

/// What went wrong, for a signed-in person, with the status to match.
async fn problem_page(state: &AppState, session: &Session, e: &ApiError) -> Response {
    let page = ProblemPage {
        chrome: Chrome::new(state, session, "").await,
        status: e.status.as_u16(),
        title: e.status.canonical_reason().unwrap_or("Error").to_owned(),
        message: e.message.clone(),
    };
    render(e.status, &page)
}

/// Any other address under `/ui/`: a 404 page (with the menu for a
/// signed-in person), where `/v1` answers with its JSON error.
async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
    session: Result<Session, Response>,
) -> Response {
    let message = format!("there is no page `{}` here", uri.path());
    match session {
        Ok(session) => {
            let e = ApiError::new(StatusCode::NOT_FOUND, "not_found", message);
            problem_page(&state, &session, &e).await
        }
        Err(_) => error_response(StatusCode::NOT_FOUND, &message),
    }
}

/// An error from the engine, shown beside the form it came from.
struct FormError {
    field: Option<String>,
    message: String,
}

impl From<ApiError> for FormError {
    fn from(e: ApiError) -> Self {
        FormError {
            field: e.field,
            message: e.message,
        }
    }
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    error: Option<String>,
    /// The page to return to once signed in.
    next: String,
    /// Where signing in with the identity provider starts, where offered.
    idp_start: Option<String>,
}

/// Sent on from the identity provider: the next step, taken from our page.
#[derive(Template)]
#[template(path = "ui/signed_in.html")]
struct SignedInPage {
    next: String,
}

async fn login_page(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let next = session::safe_next(Fields::query(query.as_deref()).get("next"));
    render(
        StatusCode::OK,
        &LoginPage {
            error: None,
            idp_start: idp::start_link(&state, &next),
            next,
        },
    )
}

/// The sign-in page again, saying why signing in did not work.
fn login_error(state: &AppState, status: StatusCode, message: String, next: &str) -> Response {
    render(
        status,
        &LoginPage {
            error: Some(message),
            idp_start: idp::start_link(state, next),
            next: session::safe_next(Some(next)),
        },
    )
}

/// Signs in with a pasted token (no session yet, so no CSRF token: the
/// origin check and the SameSite cookie stand in).
async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
) -> Response {
    if !same_origin(req.headers()) {
        return session::foreign_post();
    }
    let (mut parts, body) = req.into_parts();
    let fields = match Fields::read(Request::from_parts(parts.clone(), body), &state).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let next = session::safe_next(fields.get("next"));
    let Some(token) = fields.get("token") else {
        let error = "paste your token to sign in".to_owned();
        return login_error(&state, StatusCode::BAD_REQUEST, error, &next);
    };
    match session::sign_in(&mut parts, &state, token, &next).await {
        Ok(signed_in) => signed_in,
        Err(message) => login_error(&state, StatusCode::UNAUTHORIZED, message, &next),
    }
}

async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    posted: Posted,
) -> Response {
    session::sign_out(&state, &headers, &posted.session).await
}

/// One entitlement as the request page shows it.
struct EntitlementRow {
    view: EntitlementView,
    max: String,
    break_glass_max: Option<String>,
}

/// What the request form was filled with, shown again beside an error.
#[derive(Default)]
struct RequestForm {
    entitlement: String,
    duration: String,
    reason: String,
    ticket: String,
    start_at: String,
    break_glass: bool,
}

#[derive(Template)]
#[template(path = "ui/request.html")]
struct RequestPage {
    chrome: Chrome,
    /// Those that match the search, else all.
    entitlements: Vec<EntitlementRow>,
    /// How many this user may request in all.
    total: usize,
    /// The search, as typed (`?q=`).
    q: String,
    form: RequestForm,
    error: Option<FormError>,
    any_break_glass: bool,
}

/// Whether `e` matches the search `q`: in its name, description or target
/// (the connector that provisions it), ignoring case.
fn matches_search(e: &EntitlementView, q: &str) -> bool {
    let q = q.to_lowercase();
    [&e.id, &e.description, &e.connector]
        .iter()
        .any(|field| field.to_lowercase().contains(&q))
}

fn secs(s: u64) -> String {
    human_duration(std::time::Duration::from_secs(s))
}

async fn request_form_page(
    state: &AppState,
    session: &Session,
    (form, q): (RequestForm, String),
    error: Option<FormError>,
    status: StatusCode,
) -> Response {
    let views = match entitlement_views(state, &session.user) {
        Ok(v) => v,
        Err(e) => return api_error_page(&e),
    };
    let total = views.len();
    let entitlements: Vec<EntitlementRow> = views
        .into_iter()
        .filter(|view| matches_search(view, &q))
        .map(|view| EntitlementRow {
            max: secs(view.max_duration_seconds),
            break_glass_max: view
                .break_glass
                .as_ref()
                .map(|b| secs(b.max_duration_seconds)),
            view,
        })
        .collect();
    let page = RequestPage {
        chrome: Chrome::new(state, session, "request").await,
        any_break_glass: entitlements.iter().any(|e| e.break_glass_max.is_some()),
        entitlements,
        total,
        q,
        form,
        error,
    };
    render(status, &page)
}

/// The request page, its list narrowed by the search `?q=`.
async fn request_page(
    axum::extract::State(state): axum::extract::State<AppState>,
    session: Session,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = Fields::query(query.as_deref())
        .get("q")
        .unwrap_or_default()
        .to_owned();
    let form = (RequestForm::default(), q);
    request_form_page(&state, &session, form, None, StatusCode::OK).await
}

async fn submit_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    MfaAt(mfa_at): MfaAt,
    Posted { session, fields }: Posted,
) -> Response {
    let text = |name: &str| fields.get(name).unwrap_or_default().to_owned();
    let form = RequestForm {
        entitlement: text("entitlement"),
        duration: text("duration"),
        reason: text("reason"),
        ticket: text("ticket"),
        start_at: text("start_at"),
        break_glass: fields.get("break_glass").is_some(),
    };
    let optional = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let body = CreateRequest {
        entitlement: form.entitlement.clone(),
        duration: optional(&form.duration).map(DurationInput::Text),
        reason: form.reason.clone(),
        ticket: optional(&form.ticket),
        start_at: optional(&form.start_at),
        break_glass: form.break_glass,
        public_key: None,
        bundle: None,
        entitlements: Vec::new(),
    };
    let mfa_at = session.mfa_at.or(mfa_at);
    match submit(&state, &session.user, mfa_at, body).await {
        Ok(request) => Redirect::to(&format!("/ui/requests/{}", request.id)).into_response(),
        Err(e) => {
            let status = e.status;
            let form = (form, String::new());
            request_form_page(&state, &session, form, Some(e.into()), status).await
        }
    }
}

/// One request in a list, with what the view leaves to the reader to work out.
struct Row {
    v: RequestView,
    duration: String,
    waited: String,
    time_left: Option<String>,
    tiers: String,
    /// An extension that waits for approval: by how much.
    extension: Option<String>,
}

impl Row {
    fn new(state: &AppState, r: &AccessRequest) -> Row {
        let now = state.engine.now();
        let v = view(state, r);
        Row {
            duration: human_duration(r.duration),
            waited: human_duration(r.created_at.until(now)),
            time_left: v.time_left_seconds.map(secs),
            tiers: v
                .approval_tiers
                .iter()
                .map(|t| format!("{} of {} ({})", t.count, t.groups.join(" or "), t.policy))
                .chain(r.sponsor().map(|s| format!("the sponsor {s}")))
                .collect::<Vec<_>>()
                .join("; then "),
            extension: r
                .extension
                .as_ref()
                .filter(|e| e.state == ExtensionState::Pending)
                .map(|e| human_duration(e.by)),
            v,
        }
    }
}

/// The requests `filter` matches on the page `paging` asks for, and the
/// cursor of the next page when more follow; an error is a page.
async fn requests_page(
    state: &AppState,
    filter: RequestFilter,
    paging: &Paging,
) -> Result<(Vec<AccessRequest>, Option<String>), Response> {
    page_of(state, filter, paging.limit, paging.cursor.as_deref())
        .await
        .map_err(|e| api_error_page(&e))
}

/// The first page of what `filter` matches.
async fn requests(state: &AppState, filter: RequestFilter) -> Result<Vec<AccessRequest>, Response> {
    let (found, _) = requests_page(state, filter, &Paging::default()).await?;
    Ok(found)
}

async fn rows(
    state: &AppState,
    filter: RequestFilter,
    paging: &Paging,
) -> Result<(Vec<Row>, Option<String>), Response> {
    let (requests, next) = requests_page(state, filter, paging).await?;
    Ok((requests.iter().map(|r| Row::new(state, r)).collect(), next))
}

/// How many rows a list on a page shows unless `?limit=` says (1 to 1,000,
/// as the API's); the rest are on the next pages.
const PAGE_ROWS: u32 = 200;

/// Which page of a list to show: `?limit=` and the API's own `?cursor=`.
struct Paging {
    limit: u32,
    /// The limit the address asked for, kept in the links to other pages.
    asked_limit: Option<u32>,
    cursor: Option<String>,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            limit: PAGE_ROWS,
            asked_limit: None,
            cursor: None,
        }
    }
}

impl Paging {
    fn read(fields: &Fields) -> Result<Paging, ApiError> {
        let asked_limit = fields
            .get("limit")
            .map(|raw| {
                raw.parse::<u32>()
                    .map_err(|_| ApiError::invalid("limit", format!("`{raw}` is not a number")))
            })
            .transpose()?;
        Ok(Paging {
            limit: page_limit(asked_limit, PAGE_ROWS)?,
            asked_limit,
            cursor: fields.get("cursor").map(str::to_owned),
        })
    }

    /// The page of `filters` and this limit from `cursor` on; the first
    /// page without one.
    fn link(&self, path: &str, filters: &[(&str, &str)], cursor: Option<&str>) -> String {
        let limit = self.asked_limit.map(|l| l.to_string());
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in filters.iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(name, value);
        }
        if let Some(limit) = &limit {
            query.append_pair("limit", limit);
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        match query.finish() {
            q if q.is_empty() => path.to_owned(),
            q => format!("{path}?{q}"),
        }
    }
}

/// What a list says under it when it was cut: how many it shows, the link
/// to the next page (older rows, the active filters kept) and, on a later
/// page, back to the newest.
struct Pager {
    shown: usize,
    /// What the list holds (`grants`, `events`, …).
    what: &'static str,
    next: Option<String>,
    newest: Option<String>,
}

impl Pager {
    fn new(
        paging: &Paging,
        (path, filters): (&str, &[(&str, &str)]),
        what: &'static str,
        shown: usize,
        next_cursor: Option<&str>,
    ) -> Pager {
        Pager {
            shown,
            what,
            next: next_cursor.map(|c| paging.link(path, filters, Some(c))),
            newest: paging
                .cursor
                .as_ref()
                .map(|_| paging.link(path, filters, None)),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/mine.html")]
struct MinePage {
    chrome: Chrome,
    pending: Vec<Row>,
    active: Vec<Row>,
    history: Vec<Row>,
    pager: Pager,
}

async fn mine(
    axum::extract::State(state): axum::extract::State<AppState>,
    session: Session,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let paging = match Paging::read(&Fields::query(query.as_deref())) {
        Ok(p) => p,
        Err(e) => return problem_page(&state, &session, &e).await,
    };
    let filter = RequestFilter {
        requester: Some(session.user.id.clone()),
        visible_to: Some(session.user.clone()),
        ..RequestFilter::default()
    };
    let (all, next) = match rows(&state, filter, &paging).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let pager = Pager::new(
        &paging,
        ("/ui/mine", &[]),
        "requests",
        all.len(),
        next.as_deref(),
    );
    let (mut pending, mut active, mut history) = (Vec::new(), Vec::new(), Vec::new());
    for row in all {
        match State::parse(&row.v.state) {
            Some(State::Pending | State::Approved) => pending.push(row),
            Some(State::Active) => active.push(row),
            _ => history.push(row),
        }
    }
    let page = MinePage {
        chrome: Chrome::new(&state, &session, "mine").await,
        pending,
        active,
        history,
        pager,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "ui/inbox.html")]
struct InboxPage {
    chrome: Chrome,
    rows: Vec<Row>,
    done: Vec<String>,
    failed: Vec<String>,
    pager: Pager,
}

async fn inbox_page(
    state: &AppState,
    session: &Session,
    (done, failed): (Vec<String>, Vec<String>),
    paging: &Paging,
) -> Response {
    // The same filter as `airlock pending` (`awaiting_me`).
    let filter = RequestFilter {
        awaiting_approval_of: Some(session.user.clone()),
        visible_to: Some(session.user.clone()),
        ..RequestFilter::default()
    };
    let (rows, next) = match rows(state, filter, paging).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let pager = Pager::new(
        paging,
        ("/ui/inbox", &[]),
        "requests",
        rows.len(),
        next.as_deref(),
    );
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = InboxPage {
        chrome: Chrome::new(state, session, "inbox").await,
        rows,
        done,
        failed,
        pager,
    };
    render(status, &page)
}

async fn inbox(
    axum::extract::State(state): axum::extract::State<AppState>,
    session: Session,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    match Paging::read(&Fields::query(query.as_deref())) {
        Ok(paging) => inbox_page(&state, &session, (Vec::new(), Vec::new()), &paging).await,
        Err(e) => problem_page(&state, &session, &e).await,
    }
}

fn decision(verb: &str, comment: Option<&str>) -> Option<ApproverDecision> {
    match verb {
        "approve" => Some(ApproverDecision::Approve {
            comment: comment.map(str::to_owned),
        }),
        "deny" => Some(ApproverDecision::Deny {
            reason: comment.unwrap_or_default().to_owned(),
        }),
        _ => None,
    }
}

/// Approves or denies every checked request with one comment.
async fn decide_many(
    axum::extract::State(state): axum::extract::State<AppState>,
    Posted { session, fields }: Posted,
) -> Response {
    let verb = fields.get("action").unwrap_or_default();
    let ids = fields.all("id");
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    if ids.is_empty() {
        failed.push("select at least one request".to_owned());
    }
    for id in ids {
        let Some(decision) = decision(verb, fields.get("comment")) else {
            failed.push(format!("`{verb}` is neither approve nor deny"));
            break;
        };
        match decide_request(&state, &session.user, id, decision).await {
            Ok(r) => done.push(format!("{}: {}", r.id, r.state.as_str())),
            Err(e) => failed.push(format!("{id}: {}", e.message)),
        }
    }
    inbox_page(&state, &session, (done, failed), &Paging::default()).await
}

#[derive(Template)]
#[template(path = "ui/show.html")]
struct ShowPage {
    chrome: Chrome,
    row: Row,
    explain: Option<ExplainView>,
    mine: bool,
    awaits_me: bool,
    error: Option<FormError>,
}

async fn show_page(
    state: &AppState,
    session: &Session,
    id: &str,
    error: Option<FormError>,
    status: StatusCode,
) -> Response {
    let request = match super::json_api::visible(state, &session.user, id).await {
        Ok(r) => r,
        Err(e) => return problem_page(state, session, &e).await,
    };
    // `explain` needs the read scope and the audit log; the page stands without it.
    let explain = explain_view(state, &session.user, id).await.ok();
    // A bundle's parts, each with where it stands.
    let mut row = Row::new(state, &request);
    match super::json_api::full_view(state, &request).await {
        Ok(v) => row.v = v,
        Err(e) => return problem_page(state, session, &e).await,
    }
    let page = ShowPage {
        chrome: Chrome::new(state, session, "").await,
        mine: request.requester == session.user.id,
        awaits_me: request.awaits_approval_of(&session.user),
        row,
        explain,
        error,
    };
    render(status, &page)
}

async fn show(
    axum::extract::State(state): axum::extract::State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    show_page(&state, &session, &id, None, StatusCode::OK).await
}

/// The buttons of the request, My access, grants and reviews pages:
/// release, cancel, extend, approve, deny, revoke, review. Success goes back where it came from
/// (`back`); an error shows on the request's page.
async fn act_on(
    axum::extract::State(state): axum::extract::State<AppState>,
    Path((id, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Posted { session, fields } = match Posted::from_request(req, &state).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let comment = fields.get("comment");
    let result = match action.as_str() {
        "release" => act(&state, &session.user, &id, UserCommand::Release).await,
        "cancel" => act(&state, &session.user, &id, UserCommand::Cancel).await,
        "revoke" => {
            let reason = fields.get("reason").unwrap_or_default().to_owned();
            act(&state, &session.user, &id, UserCommand::Revoke { reason }).await
        }
        "review" => {
            let acceptable = match fields.get("verdict") {
                Some("acceptable") => true,
                Some("unacceptable") => false,
                _ => {
                    let e = ApiError::invalid("verdict", "choose acceptable or unacceptable");
                    let status = e.status;
                    return show_page(&state, &session, &id, Some(e.into()), status).await;
                }
            };
            let comment = comment.unwrap_or_default().to_owned();
            let review = UserCommand::Review {
                acceptable,
                comment,
            };
            act(&state, &session.user, &id, review).await
        }
        "extend" => {
            let body = ExtendBody {
                by: DurationInput::Text(fields.get("by").unwrap_or_default().to_owned()),
                reason: fields.get("reason").unwrap_or_default().to_owned(),
            };
            extend_grant(&state, &session.user, &id, body).await
        }
        verb => match decision(verb, comment) {
            Some(d) => decide_request(&state, &session.user, &id, d).await,
            None => return error_response(StatusCode::NOT_FOUND, "no such action"),
        },
    };
    match result {
        Ok(r) => {
            let back = match fields.get("back") {
                Some("mine") => "/ui/mine".to_owned(),
                Some("inbox") => "/ui/inbox".to_owned(),
                Some("grants") => "/ui/grants".to_owned(),
                Some("reviews") => "/ui/reviews".to_owned(),
                _ => format!("/ui/requests/{}", r.id),
            };
            Redirect::to(&back).into_response()
        }
        Err(e) => {
            let status = e.status;
            show_page(&state, &session, &id, Some(e.into()), status).await
        }
    }
}
