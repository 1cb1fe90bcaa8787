//! The JSON API under `/v1` (and the health, readiness, metrics and
//! OpenAPI documents): parsing of wire input into domain values and views
//! of the results. Handlers hold no logic beyond that; the engine decides.

use std::time::Duration;

use airlock_core::access::Capability;
use airlock_core::audit::AuditAction;
use airlock_core::catalog::User;
use airlock_core::policy_change::{Proposal, Trigger};
use airlock_core::request::{AccessRequest, ExtensionState, State};
use airlock_core::{EntitlementId, RequestId, Timestamp, TokenId, UserId};
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api::{
    decode_audit_cursor, decode_cursor, encode_audit_cursor, encode_cursor, format_time,
    parse_time, ActivityBody, ActivityView, ApprovalExplained, ApprovalWaitsReport,
    ApprovalWaitsView, ApproveBody, ApproverView, AuditEventView, AuditExportQuery, AuditQuery,
    CheckQuery, CheckView, CreateRequest, CredentialView, DurationInput, ElevationBody,
    ElevationView, EmptyBody, EntitlementUsageView, EntitlementView, ExplainView, ExtendBody,
    GrantsQuery, HistoryEntry, OidcInfo, PolicyReloadView, PolicyView, ProposalView, ReDecision,
    ReasonBody, ReconcileBody, ReconcileView, RequestQuery, RequestView, ReviewBody, ReviewsQuery,
    StandingQuery, StandingReportView, UnusedEligibility, UsageReportView, VerifyView, WaitsQuery,
    WhoAmI, NEXT_CURSOR_HEADER,
};
use crate::config::parse_duration;
use crate::engine::{ApproverDecision, Ask, Asked, EngineError, PolicyChange, UserCommand};
use crate::policy::{self, Reloaded};
use crate::store::{AuditFilter, PageKey, RequestFilter, StoreError};

use super::{
    require, tokens, ApiError, ApiJson, ApiQuery, ApiResult, AppState, Caller, MfaAt, OPENAPI,
};

/// The JSON API's routes (`ROUTES` lists them for the OpenAPI test).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/metrics", get(metrics))
        .route("/v1/notifications", get(notifications))
        .route("/v1/me", get(me))
        .route("/v1/auth/oidc", get(oidc_info))
        .route("/v1/entitlements", get(entitlements))
        .route("/v1/requests", post(create_request).get(list_requests))
        .route("/v1/requests/{id}", get(show_request))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/requests/{id}/cancel", post(cancel))
        .route("/v1/requests/{id}/release", post(release))
        .route("/v1/requests/{id}/revoke", post(revoke))
        .route("/v1/requests/{id}/extend", post(extend))
        .route("/v1/requests/{id}/credential", post(collect_credential))
        .route("/v1/requests/{id}/elevation", post(elevation_claim))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/requests/{id}/explain", get(explain))
        .route("/v1/policy", get(show_policy))
        .route("/v1/policy/reload", post(reload_policy))
        .route("/v1/policy/proposals", get(policy_proposals))
        .route(
            "/v1/policy/proposals/{id}/approve",
            post(approve_policy_proposal),
        )
        .route("/v1/requests/{id}/review", post(review))
        .route("/v1/grants", get(grants))
        .route("/v1/grants/{id}/activity", post(report_activity))
        .route("/v1/check", get(check))
        .route("/v1/reviews", get(reviews))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/reports/approval-waits", get(approval_waits))
        .route("/v1/reports/standing", get(standing_report))
        .route("/v1/reports/usage", get(usage_report))
        .route("/v1/audit/checkpoint-key", get(checkpoint_key))
        .route("/v1/reconcile", post(reconcile))
        .route(
            "/v1/access-reviews",
            post(super::access_reviews::start).get(super::access_reviews::list),
        )
        .route("/v1/access-reviews/{id}", get(super::access_reviews::show))
        .route(
            "/v1/access-reviews/{id}/items/{item}",
            post(super::access_reviews::decide),
        )
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}/revoke", post(tokens::revoke))
        .route("/v1/tickets/{ref}/closed", post(super::tickets::closed))
}

fn request_id(raw: &str) -> ApiResult<RequestId> {
    RequestId::parse(raw).map_err(|_| ApiError::not_found(raw))
}

pub(super) fn view(state: &AppState, r: &AccessRequest) -> RequestView {
    RequestView::new(r, state.engine.now(), state.engine.overdue_after())
}

/// The view of one request, with its bundle's parts when it is a part of one.
pub(super) async fn full_view(state: &AppState, r: &AccessRequest) -> ApiResult<RequestView> {
    let v = view(state, r);
    if r.bundle.is_none() {
        return Ok(v);
    }
    let parts = state.engine.bundle_parts(r).await?;
    Ok(v.with_bundle(r, &parts))
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<impl IntoResponse> {
    // A store that cannot count the backlog fails the scrape: an alert on
    // overdue revocations must not read a silent zero.
    let backlog = state.engine.revocation_backlog().await?;
    let outbox = state.engine.notification_summary().await?;
    let reviews = state.engine.review_backlog().await?;
    let (open_items, overdue_campaigns) = state.engine.access_review_backlog().await?;
    let mut text = state.engine.metrics().render(backlog);
    text.push_str(&state.engine.metrics().render_reviews(reviews));
    text.push_str(
        &state
            .engine
            .metrics()
            .render_access_reviews(open_items, overdue_campaigns),
    );
    text.push_str(
        &state
            .engine
            .metrics()
            .render_notifications(&outbox, state.engine.now()),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// The notification outbox: backlog, failures, the last error, and rows
/// (admins and auditors).
async fn notifications(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<crate::api::NotificationsQuery>,
) -> ApiResult<Json<crate::api::NotificationsView>> {
    require(&user, Capability::ReadEverything)?;
    let states = match q.state.as_deref() {
        None => Vec::new(),
        Some(raw) => vec![crate::store::OutboxState::parse(raw).ok_or_else(|| {
            ApiError::invalid("state", "must be one of pending, sent, failed, dropped")
        })?],
    };
    let filter = crate::store::OutboxFilter {
        states,
        request: q
            .request
            .as_deref()
            .map(|raw| {
                RequestId::parse(raw).map_err(|e| ApiError::invalid("request", e.to_string()))
            })
            .transpose()?,
        limit: limit(q.limit)?,
    };
    let summary = state.engine.notification_summary().await?;
    let rows = state.engine.notifications(&filter).await?;
    Ok(Json(crate::api::NotificationsView::new(&summary, &rows)))
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<serde_json::Value>> {
    state.engine.ready().await.map_err(|e| {
        tracing::error!(error = %e, "not ready");
        // Schema versions are safe to show; a connection error may name hosts.
        let message = match &e {
            EngineError::Store(
                schema @ (StoreError::SchemaTooNew { .. } | StoreError::SchemaBehind { .. }),
            ) => schema.to_string(),
            // Names the event and the problem; nothing secret.
            untrusted @ EngineError::AuditUntrusted(_) => untrusted.to_string(),
            _ => "database unreachable".to_owned(),
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    })?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

async fn me(Caller(user): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: user.id.to_string(),
        groups: user.groups.iter().map(ToString::to_string).collect(),
        roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        kind: user.kind.as_str().to_owned(),
        token: user.token.as_ref().map(|t| t.id.to_string()),
        scopes: user
            .token
            .as_ref()
            .map(|t| t.scopes.iter().map(|s| s.as_str().to_owned()).collect()),
        sponsor: user.external.as_ref().map(|e| e.sponsor.to_string()),
        account_expires: user
            .external
            .as_ref()
            .map(|e| crate::api::format_time(e.account_expires)),
    })
}

/// How `airlock login` signs in: unauthenticated, since it comes before
/// any token.
async fn oidc_info(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<OidcInfo>> {
    let missing = |why: &str| ApiError::new(StatusCode::NOT_FOUND, "not_found", why);
    let oidc = state.oidc.as_ref().ok_or_else(|| {
        missing("this server has no sign-in with an identity provider (`server.oidc`): use an API token (--token or AIRLOCK_TOKEN)")
    })?;
    let info = oidc.settings().sign_in_info().ok_or_else(|| {
        missing("this server names no client for `airlock login` (`server.oidc.client_id`): use an API token (--token or AIRLOCK_TOKEN)")
    })?;
    Ok(Json(info))
}

/// The entitlements the caller could request in an ordinary request (see
/// `RequestContext::typical`), with how it would be decided.
async fn entitlements(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<EntitlementView>>> {
    entitlement_views(&state, &user).map(Json)
}

/// What `GET /v1/entitlements` lists (the web UI's request page shows the same).
pub(super) fn entitlement_views(state: &AppState, user: &User) -> ApiResult<Vec<EntitlementView>> {
    require(user, Capability::Read)?;
    let policies = state.engine.policies();
    let set = policies.current();
    let views = state
        .engine
        .catalog()
        .entitlements
        .values()
        .filter_map(|e| {
            let ask = policies.typical_ask(&set, user, e)?;
            Some(EntitlementView {
                idle_limit_seconds: state.engine.idle_limit(&e.id).map(|l| l.limit().as_secs()),
                ..EntitlementView::new(e, ask.approval(), ask.needs)
            })
        })
        .collect();
    Ok(views)
}

pub(crate) fn parse_duration_input(d: &DurationInput, field: &'static str) -> ApiResult<Duration> {
    match d {
        DurationInput::Seconds(s) => Ok(Duration::from_secs(*s)),
        DurationInput::Text(t) => parse_duration(t).map_err(|e| ApiError::invalid(field, e)),
    }
}

async fn create_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    MfaAt(mfa_at): MfaAt,
    ApiJson(body): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    let request = submit(&state, &user, mfa_at, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(full_view(&state, &request).await?),
    ))
}

/// Parses and submits a new request; one the policy set denies is
/// recorded but answered 403 with its reasons.
pub(super) async fn submit(
    state: &AppState,
    user: &User,
    mfa_at: Option<airlock_core::Timestamp>,
    body: CreateRequest,
) -> ApiResult<AccessRequest> {
    let parse = |raw: &str, field: &'static str| {
        EntitlementId::parse(raw).map_err(|e| ApiError::invalid(field, format!("`{raw}` {e}")))
    };
    let what = match (
        body.entitlement.as_str(),
        body.bundle,
        body.entitlements.is_empty(),
    ) {
        // A bundle's name may come as the entitlement (`airlock request
        // incident-kit`): no entitlement shares a bundle's name.
        (raw, None, true) if state.engine.catalog().bundles.contains_key(raw) => {
            Asked::Bundle(raw.to_owned())
        }
        (raw, None, true) if !raw.is_empty() => Asked::Entitlement(parse(raw, "entitlement")?),
        ("", Some(name), true) => Asked::Bundle(name),
        ("", None, false) => Asked::Entitlements(
            body.entitlements
                .iter()
                .map(|raw| parse(raw, "entitlements"))
                .collect::<ApiResult<Vec<_>>>()?,
        ),
        ("", None, true) => {
            return Err(ApiError::invalid(
                "entitlement",
                "is required: give `entitlement`, `bundle` or `entitlements`",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                "bundle",
                "give only one of `entitlement`, `bundle` and `entitlements`",
            ))
        }
    };
    let duration = body
        .duration
        .as_ref()
        .map(|d| parse_duration_input(d, "duration"))
        .transpose()?;
    let start_at = body
        .start_at
        .as_deref()
        .map(|s| parse_time(s).map_err(|e| ApiError::invalid("start_at", e)))
        .transpose()?;
    let ask = Ask {
        what,
        duration,
        reason: body.reason,
        ticket: body.ticket,
        start_at,
        break_glass: body.break_glass,
        public_key: body.public_key,
        mfa_at,
    };
    let request = state.engine.submit(user, ask).await.map_err(|e| match e {
        EngineError::StepUp { max_age } => {
            let acr = state
                .oidc
                .as_ref()
                .map(|o| o.settings().mfa_acr_values.as_slice());
            ApiError::step_up(max_age, acr.unwrap_or_default())
        }
        other => other.into(),
    })?;
    if request.state == State::Denied {
        // Recorded (so `explain` and the audit log show it), but refused.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "denied_by_policy",
            format!(
                "request `{}` was denied: {}",
                request.id,
                request.end_note.as_deref().unwrap_or("denied by policy")
            ),
        ));
    }
    Ok(request)
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

fn limit(raw: Option<u32>) -> ApiResult<u32> {
    page_limit(raw, DEFAULT_LIMIT)
}

/// A page's `limit`: 1 to 1,000, `default` if absent (the web UI's pages
/// show more by default than the API sends).
pub(super) fn page_limit(raw: Option<u32>, default: u32) -> ApiResult<u32> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

async fn list_requests(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<RequestQuery>,
) -> ApiResult<Response> {
    require(&user, Capability::Read)?;
    let mut filter = RequestFilter::default();
    if let Some(states) = &q.state {
        for s in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            filter.states.push(State::parse(s).ok_or_else(|| {
                let known: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid(
                    "state",
                    format!("unknown state `{s}` (known: {})", known.join(", ")),
                )
            })?);
        }
    }
    if let Some(e) = &q.entitlement {
        filter.entitlement = Some(
            EntitlementId::parse(e)
                .map_err(|err| ApiError::invalid("entitlement", format!("`{e}` {err}")))?,
        );
    }
    if let Some(r) = &q.requester {
        filter.requester = Some(
            UserId::parse(r)
                .map_err(|err| ApiError::invalid("requester", format!("`{r}` {err}")))?,
        );
    }
    if q.mine.unwrap_or(false) {
        filter.requester = Some(user.id.clone());
    }
    if q.awaiting_me.unwrap_or(false) {
        filter.awaiting_approval_of = Some(user.clone());
    }
    filter.visible_to = Some(user);
    page(&state, filter, q.limit, q.cursor.as_deref()).await
}

/// One page of the requests `filter` matches, `limit` (1 to 1,000, default
/// 100) from `cursor` on, with the next page's cursor in a header when more
/// follow.
async fn page(
    state: &AppState,
    filter: RequestFilter,
    limit_param: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<Response> {
    let (requests, next) = page_of(state, filter, limit(limit_param)?, cursor).await?;
    let views: Vec<RequestView> = requests.iter().map(|r| view(state, r)).collect();
    Ok(with_next_cursor(next, views))
}

/// A page of a list as JSON, with the next page's cursor in its header
/// when more follow.
fn with_next_cursor<T: serde::Serialize>(next: Option<String>, page: Vec<T>) -> Response {
    match next {
        Some(cursor) => ([(NEXT_CURSOR_HEADER, cursor)], Json(page)).into_response(),
        None => Json(page).into_response(),
    }
}

/// The `wanted` requests `filter` matches from `cursor` on, and the next
/// page's cursor when more follow (the `/v1` lists and the web UI's).
pub(super) async fn page_of(
    state: &AppState,
    mut filter: RequestFilter,
    wanted: u32,
    cursor: Option<&str>,
) -> ApiResult<(Vec<AccessRequest>, Option<String>)> {
    if let Some(c) = cursor {
        filter.after = Some(decode_cursor(c).map_err(|e| ApiError::invalid("cursor", e))?);
    }
    // One more than asked for tells whether a next page exists.
    filter.limit = wanted.saturating_add(1);
    let mut requests = state.engine.list(&filter).await?;
    let more = requests.len() > usize::try_from(wanted).unwrap_or(usize::MAX);
    requests.truncate(usize::try_from(wanted).unwrap_or(usize::MAX));
    let next = requests
        .last()
        .filter(|_| more)
        .map(|r| encode_cursor(&PageKey::of(r)));
    Ok((requests, next))
}

async fn show_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    require(&user, Capability::Read)?;
    let id = request_id(&id)?;
    let request = state.engine.get(&id).await?;
    if !request.visible_to(&user) {
        return Err(ApiError::not_found(id.as_str()));
    }
    Ok(Json(full_view(&state, &request).await?))
}

/// A request the caller can see (others get 404, so ids of other people's
/// requests are not confirmed).
pub(super) async fn visible(
    state: &AppState,
    user: &User,
    raw_id: &str,
) -> ApiResult<AccessRequest> {
    let id = request_id(raw_id)?;
    let current = state.engine.get(&id).await?;
    if !current.visible_to(user) {
        return Err(ApiError::not_found(id.as_str()));
    }
    Ok(current)
}

/// Runs a command on a request the caller can see.
async fn command(
    state: &AppState,
    user: &User,
    raw_id: &str,
    command: UserCommand,
) -> ApiResult<Json<RequestView>> {
    let request = act(state, user, raw_id, command).await?;
    Ok(Json(full_view(state, &request).await?))
}

/// Runs a command on a request the caller can see (the web UI's forms too).
pub(super) async fn act(
    state: &AppState,
    user: &User,
    raw_id: &str,
    command: UserCommand,
) -> ApiResult<AccessRequest> {
    let current = visible(state, user, raw_id).await?;
    Ok(state.engine.act(&current.id, user, command).await?)
}

/// Approves or denies a request the caller can see.
async fn decide(
    state: &AppState,
    user: &User,
    raw_id: &str,
    decision: ApproverDecision,
) -> ApiResult<Json<RequestView>> {
    let request = decide_request(state, user, raw_id, decision).await?;
    Ok(Json(full_view(state, &request).await?))
}

/// Approves or denies a request the caller can see (the web UI's inbox too).
pub(super) async fn decide_request(
    state: &AppState,
    user: &User,
    raw_id: &str,
    decision: ApproverDecision,
) -> ApiResult<AccessRequest> {
    let current = visible(state, user, raw_id).await?;
    Ok(state.engine.decide(&current, user, decision).await?)
}

async fn approve(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> ApiResult<Json<RequestView>> {
    let comment = body
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    decide(&state, &user, &id, ApproverDecision::Approve { comment }).await
}

async fn deny(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<RequestView>> {
    decide(
        &state,
        &user,
        &id,
        ApproverDecision::Deny {
            reason: body.reason,
        },
    )
    .await
}

async fn cancel(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(EmptyBody {}): ApiJson<EmptyBody>,
) -> ApiResult<Json<RequestView>> {
    command(&state, &user, &id, UserCommand::Cancel).await
}

async fn release(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(EmptyBody {}): ApiJson<EmptyBody>,
) -> ApiResult<Json<RequestView>> {
    command(&state, &user, &id, UserCommand::Release).await
}

async fn revoke(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> ApiResult<Json<RequestView>> {
    command(
        &state,
        &user,
        &id,
        UserCommand::Revoke {
            reason: body.reason,
        },
    )
    .await
}

/// The requester asks for more time on their active grant. An extension
/// the policy set denies at once is recorded (the audit log shows it) but
/// answered 403, like a denied request.
async fn extend(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> ApiResult<Json<RequestView>> {
    let request = extend_grant(&state, &user, &id, body).await?;
    Ok(Json(full_view(&state, &request).await?))
}

/// Asks for more time on a grant the caller can see; an extension the
/// policy set denies at once is recorded but answered 403.
pub(super) async fn extend_grant(
    state: &AppState,
    user: &User,
    raw_id: &str,
    body: ExtendBody,
) -> ApiResult<AccessRequest> {
    let by = parse_duration_input(&body.by, "by")?;
    let current = visible(state, user, raw_id).await?;
    let request = state
        .engine
        .extend(&current.id, user, by, body.reason)
        .await?;
    if let Some(note) = request.extension.as_ref().and_then(|e| {
        // Denied with no tiers: the policy set's word, not an approver's.
        (e.state == ExtensionState::Denied && e.approval_tiers.is_empty())
            .then(|| e.note.clone().unwrap_or_default())
    }) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "denied_by_policy",
            format!("the extension of `{}` was {note}", request.id),
        ));
    }
    Ok(request)
}

/// A signed proof of the caller's active grant (an elevation claim).
async fn elevation_claim(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ElevationBody>,
) -> ApiResult<Json<ElevationView>> {
    let id = request_id(&id)?;
    if !state.engine.get(&id).await?.visible_to(&user) {
        return Err(ApiError::not_found(id.as_str()));
    }
    let signer = &state.elevation;
    let claim = state
        .engine
        .elevation_claim(
            &id,
            &user,
            body.audience.as_deref(),
            signer.settings().lifetime,
        )
        .await?;
    Ok(Json(ElevationView {
        token: signer.sign(&claim),
        id: claim.id,
        issuer: signer.settings().issuer.clone(),
        key_id: signer.kid().to_owned(),
        expires_at: format_time(claim.expires_at),
    }))
}

/// The key set elevation claims are verified with (unauthenticated: it is
/// public, and applications fetch it before they have any token).
async fn jwks(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.elevation.jwks()),
    )
        .into_response()
}

/// Hands the requester their grant's one-time credential (POST: it is consumed).
async fn collect_credential(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<CredentialView>> {
    let id = request_id(&id)?;
    let current = state.engine.get(&id).await?;
    if !current.visible_to(&user) {
        return Err(ApiError::not_found(id.as_str()));
    }
    let (request, credential) = state.engine.collect_credential(&id, &user).await?;
    Ok(Json(CredentialView {
        request_id: request.id.to_string(),
        login: credential.login.clone(),
        secret: credential.secret().to_owned(),
        expires_at: request.expires_at.map(crate::api::format_time),
    }))
}

async fn grants(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<GrantsQuery>,
) -> ApiResult<Response> {
    let filter = grants_filter(&user, q.break_glass)?;
    page(&state, filter, q.limit, q.cursor.as_deref()).await
}

/// Log lines from a target about a grant (sshd's, posted by a log shipper
/// on the SSH host): its logins and logouts go on the grant's timeline
/// (admins and reporters).
async fn report_activity(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ActivityBody>,
) -> ApiResult<Json<ActivityView>> {
    require(&user, Capability::ReportActivity)?;
    let id = request_id(&id)?;
    let reported = state
        .engine
        .report_activity(&user, &id, &body.source, &body.lines)
        .await?;
    Ok(Json(ActivityView {
        request_id: id.to_string(),
        recorded: reported.events.len(),
        ignored: reported.ignored,
        duplicates: reported.duplicates,
        over_limit: reported.over_limit,
        limit: airlock_core::ssh_activity::MAX_EVENTS_PER_GRANT,
    }))
}

/// Who holds access now (`GET /v1/grants`, the web UI's grants page): every
/// grant for admins and auditors, one's own for anyone else.
pub(super) fn grants_filter(user: &User, break_glass: bool) -> ApiResult<RequestFilter> {
    require(user, Capability::Read)?;
    Ok(RequestFilter {
        holding_access: true,
        break_glass,
        requester: require(user, Capability::ReadEverything)
            .is_err()
            .then(|| user.id.clone()),
        ..RequestFilter::default()
    })
}

/// Break-glass uses the caller may see, newest first: those awaiting a
/// reviewer's verdict, or (`all`) every one.
async fn reviews(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<ReviewsQuery>,
) -> ApiResult<Response> {
    let filter = reviews_filter(&user, q.all)?;
    page(&state, filter, q.limit, q.cursor.as_deref()).await
}

/// Break-glass uses `user` may see (`GET /v1/reviews`, the web UI's reviews
/// page): those awaiting a verdict, or (`all`) every one.
pub(super) fn reviews_filter(user: &User, all: bool) -> ApiResult<RequestFilter> {
    require(user, Capability::Read)?;
    Ok(RequestFilter {
        break_glass: true,
        review_open: !all,
        visible_to: Some(user.clone()),
        ..RequestFilter::default()
    })
}

async fn review(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> ApiResult<Json<RequestView>> {
    command(
        &state,
        &user,
        &id,
        UserCommand::Review {
            acceptable: body.acceptable,
            comment: body.comment,
        },
    )
    .await
}

/// Which policies decided a request and who approved under which policies,
/// from its audit record; and how the set in force now would decide it.
async fn explain(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ExplainView>> {
    explain_view(&state, &user, &id).await.map(Json)
}

/// `GET /v1/requests/{id}/explain`'s facts (the web UI's request page shows them).
pub(super) async fn explain_view(
    state: &AppState,
    user: &User,
    raw_id: &str,
) -> ApiResult<ExplainView> {
    require(user, Capability::Read)?;
    let request = visible(state, user, raw_id).await?;
    let events = state
        .engine
        .audit(&AuditFilter {
            request: Some(request.id.to_string()),
            limit: MAX_LIMIT,
            ..AuditFilter::default()
        })
        .await?;
    let split = |raw: Option<&String>| -> Vec<String> {
        raw.map(|p| {
            p.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let requested = events.iter().find(|e| e.action == "requested");
    let detail = |key: &str| requested.and_then(|e| e.details.get(key));
    let approvals = events
        .iter()
        .filter(|e| {
            e.action == "approval_recorded"
                || (e.action == "denied" && e.details.contains_key("policy_version"))
        })
        .map(|e| ApprovalExplained {
            approver: e.actor.clone(),
            at: format_time(e.at),
            action: e.action.clone(),
            policies: split(e.details.get("policies")),
            policy_version: e.details.get("policy_version").cloned().unwrap_or_default(),
        })
        .collect();
    let denied_because = (request.ended_by.is_none() && request.state == State::Denied)
        .then(|| request.end_note.clone())
        .flatten();
    let policies = state.engine.policies();
    let set = policies.current();
    let requester = state.engine.known_user_now(&request.requester).await?;
    let now = policy::verdict(&set, &policies.stored_request_facts(&requester, &request));
    Ok(ExplainView {
        request: request.id.to_string(),
        state: request.state.as_str().to_owned(),
        policy_version: request.policy_version.clone(),
        decision: detail("decision").cloned().unwrap_or_default(),
        policies: split(detail("policies")),
        policy_errors: detail("policy_errors")
            .map(|e| e.split("; ").map(str::to_owned).collect())
            .unwrap_or_default(),
        denied_because,
        approvals,
        now: ReDecision {
            same_version: now.policy_version == request.policy_version,
            decision: now.route.summary(),
            policy_version: now.policy_version,
            policies: now.policies,
        },
        history: events
            .iter()
            .map(|e| HistoryEntry {
                at: format_time(e.at),
                action: e.action.clone(),
                actor: e.actor.clone(),
                token: e.token.clone(),
                actor_kind: e.actor_kind.clone(),
                details: e.details.clone(),
            })
            .collect(),
    })
}

async fn show_policy(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<PolicyView>> {
    policy_view(&state, &user).map(Json)
}

/// The policy set in force (`GET /v1/policy`, the web UI's policies page).
pub(super) fn policy_view(state: &AppState, user: &User) -> ApiResult<PolicyView> {
    require(user, Capability::ReadEverything)?;
    let set = state.engine.policies().current();
    Ok(PolicyView {
        version: set.version().to_owned(),
        policies: set.policy_ids().map(str::to_owned).collect(),
        two_person: state.engine.policies().two_person(),
    })
}

/// Re-reads the policy folder; a set that fails validation is refused with
/// every error and the one in force stays. Under the two-person rule the
/// new set is proposed instead (202), with what it changes for whom.
async fn reload_policy(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiJson(EmptyBody {}): ApiJson<EmptyBody>,
) -> ApiResult<(StatusCode, Json<PolicyReloadView>)> {
    require(&user, Capability::ChangePolicies)?;
    let change = state
        .engine
        .change_policies(Some(&user), Trigger::Api)
        .await
        .inspect_err(|e| tracing::error!(by = %user.id, error = %e, "policy reload refused"))?;
    Ok(match change {
        PolicyChange::Activated(r) => {
            tracing::info!(by = %user.id, previous = %r.previous, version = %r.version, "policy set reloaded");
            (StatusCode::OK, Json(activated(r)))
        }
        PolicyChange::Proposed(p) => (StatusCode::ACCEPTED, Json(waiting(&state, &p, "proposed"))),
    })
}

/// A proposal that waits for (another) admin's approval.
fn waiting(state: &AppState, p: &Proposal, outcome: &str) -> PolicyReloadView {
    PolicyReloadView {
        outcome: outcome.to_owned(),
        previous_version: p.base_version.clone(),
        version: p.version.clone(),
        policies: state
            .engine
            .policies()
            .proposal(&p.id)
            .map_or(0, |pending| pending.set.policy_ids().count()),
        proposal: Some(p.id.clone()),
        changes: p.changes.clone(),
    }
}

fn activated(r: Reloaded) -> PolicyReloadView {
    PolicyReloadView {
        outcome: "activated".to_owned(),
        previous_version: r.previous,
        version: r.version,
        policies: r.policies,
        proposal: None,
        changes: Vec::new(),
    }
}

async fn policy_proposals(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<ProposalView>>> {
    proposal_views(&state, &user).map(Json)
}

/// The proposed sets that wait for approval (`GET /v1/policy/proposals`,
/// the web UI's policies page).
pub(super) fn proposal_views(state: &AppState, user: &User) -> ApiResult<Vec<ProposalView>> {
    require(user, Capability::ReadEverything)?;
    let proposals = state.engine.policies().proposals();
    Ok(proposals.iter().map(ProposalView::from).collect())
}

/// An admin approves a proposed set: in force once it has every approval
/// it needs (202 while it waits for another admin).
async fn approve_policy_proposal(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(EmptyBody {}): ApiJson<EmptyBody>,
) -> ApiResult<(StatusCode, Json<PolicyReloadView>)> {
    let (status, view) = approve_proposal(&state, &user, &id).await?;
    Ok((status, Json(view)))
}

/// An admin's approval of a proposed set (`POST
/// /v1/policy/proposals/{id}/approve`, the web UI's policies page): 200
/// when it is in force, 202 while it waits for another admin.
pub(super) async fn approve_proposal(
    state: &AppState,
    user: &User,
    id: &str,
) -> ApiResult<(StatusCode, PolicyReloadView)> {
    require(user, Capability::ApprovePolicyChanges)?;
    Ok(match state.engine.approve_policy_change(id, user).await? {
        PolicyChange::Activated(r) => {
            tracing::info!(by = %user.id, proposal = %id, version = %r.version, "proposed policy set approved");
            (StatusCode::OK, activated(r))
        }
        PolicyChange::Proposed(p) => {
            tracing::info!(by = %user.id, proposal = %id, "approval recorded; the proposal needs another admin");
            (
                StatusCode::ACCEPTED,
                waiting(state, &p, "approval_recorded"),
            )
        }
    })
}

async fn audit(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let (events, next) = audit_events(&state, &user, q).await?;
    Ok(with_next_cursor(next, events))
}

/// The chain's next events after `after`, oldest first (admins and
/// auditors): what a SIEM shipper reads, resuming from the last `seq` it
/// shipped.
async fn audit_export(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<AuditExportQuery>,
) -> ApiResult<Json<Vec<AuditEventView>>> {
    require(&user, Capability::ReadEverything)?;
    if q.after < 0 {
        return Err(ApiError::invalid("after", "must be 0 or more"));
    }
    let limit = match q.limit {
        None => 500,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(ApiError::invalid("limit", "must be between 1 and 1000")),
    };
    let events = state
        .engine
        .store()
        .export_audit(q.after, limit)
        .await
        .map_err(crate::engine::EngineError::from)?;
    Ok(Json(events.iter().map(AuditEventView::from).collect()))
}

/// The audit events `q` selects, in sequence order, and the cursor of the
/// page of older ones when more match (`GET /v1/audit`, the web UI's audit
/// page).
pub(super) async fn audit_events(
    state: &AppState,
    user: &User,
    q: AuditQuery,
) -> ApiResult<(Vec<AuditEventView>, Option<String>)> {
    require(user, Capability::ReadEverything)?;
    if let Some(a) = &q.action {
        if !AuditAction::ALL.iter().any(|known| known.as_str() == a) {
            return Err(ApiError::invalid(
                "action",
                format!("`{a}` is not an audit action, such as `requested` or `revoked`"),
            ));
        }
    }
    if let Some(t) = &q.token {
        TokenId::parse(t).map_err(|err| ApiError::invalid("token", format!("`{t}` {err}")))?;
    }
    let before_seq = q
        .cursor
        .as_deref()
        .map(|c| decode_audit_cursor(c).map_err(|e| ApiError::invalid("cursor", e)))
        .transpose()?;
    let time = |field: &str, raw: &Option<String>| {
        raw.as_deref()
            .map(|s| parse_time(s).map_err(|e| ApiError::invalid(field, e)))
            .transpose()
    };
    let filter = AuditFilter {
        request: q.request,
        user: q.user,
        entitlement: q.entitlement,
        action: q.action,
        token: q.token,
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        before_seq,
        limit: limit(q.limit)?,
    };
    // One more than asked for tells whether older events match; the store
    // gives the newest `limit`, oldest first, so the extra one leads.
    let wanted = usize::try_from(filter.limit).unwrap_or(usize::MAX);
    let filter = AuditFilter {
        limit: filter.limit.saturating_add(1),
        ..filter
    };
    let mut records = state.engine.audit(&filter).await?;
    let more = records.len() > wanted;
    if more {
        records.remove(0);
    }
    let next = records
        .first()
        .filter(|_| more)
        .map(|r| encode_audit_cursor(r.seq));
    Ok((records.iter().map(AuditEventView::from).collect(), next))
}

/// How far back the approval-wait report looks unless told.
const DEFAULT_REPORT_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Does a principal hold an entitlement right now? For applications and
/// scripts that gate privileged actions; each check that finds a grant is
/// counted on it (not audited: see `engine::checks`).
async fn check(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<CheckQuery>,
) -> ApiResult<Json<CheckView>> {
    let principal = q
        .principal
        .as_deref()
        .ok_or_else(|| ApiError::invalid("principal", "required: the user or service to check"))
        .and_then(|raw| {
            UserId::parse(raw).map_err(|e| ApiError::invalid("principal", e.to_string()))
        })?;
    let entitlement = q
        .entitlement
        .as_deref()
        .ok_or_else(|| ApiError::invalid("entitlement", "required: the entitlement to check"))
        .and_then(|raw| {
            EntitlementId::parse(raw).map_err(|e| ApiError::invalid("entitlement", e.to_string()))
        })?;
    let answer = match state.engine.check(&user, &principal, &entitlement).await {
        Ok(answer) => answer,
        // What is asked about does not exist: 404, not a malformed query.
        Err(e @ EngineError::UnknownEntitlement { .. }) => {
            return Err(ApiError::unknown("entitlement", e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(CheckView {
        principal: answer.principal.to_string(),
        entitlement: answer.entitlement.to_string(),
        holds: answer.held.is_some(),
        request_id: answer.held.as_ref().map(|(id, _)| id.to_string()),
        expires_at: answer.held.as_ref().map(|(_, at)| format_time(*at)),
    }))
}

async fn approval_waits(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<WaitsQuery>,
) -> ApiResult<Json<ApprovalWaitsReport>> {
    require(&user, Capability::ReadEverything)?;
    let since = report_since(&state, q.since.as_deref())?;
    let waits = state.engine.approval_waits(since).await?;
    Ok(Json(ApprovalWaitsReport {
        since: format_time(since),
        entitlements: waits.iter().map(ApprovalWaitsView::from).collect(),
    }))
}

/// Where a report's period starts: `since` as a time, or as a duration
/// back from now (default the last [`DEFAULT_REPORT_PERIOD`]).
fn report_since(state: &AppState, since: Option<&str>) -> ApiResult<Timestamp> {
    let now = state.engine.now();
    match since.map(str::trim) {
        None => Ok(now.minus(DEFAULT_REPORT_PERIOD)),
        Some(raw) => parse_time(raw).or_else(|time_error| {
            parse_duration(raw)
                .map(|back| now.minus(back))
                .map_err(|_| {
                    ApiError::invalid(
                        "since",
                        format!("{time_error}, nor a duration such as `30d`"),
                    )
                })
        }),
    }
}

/// How access was used: per entitlement, per approver (with what stands
/// out), and eligibilities nobody used (admins and auditors).
async fn usage_report(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<WaitsQuery>,
) -> ApiResult<Json<UsageReportView>> {
    require(&user, Capability::ReadEverything)?;
    let since = report_since(&state, q.since.as_deref())?;
    let (usage, waits) = state.engine.usage_report(since).await?;
    let seconds = |d: Option<Duration>| d.map(|d| d.as_secs());
    Ok(Json(UsageReportView {
        since: format_time(since),
        entitlements: usage
            .entitlements
            .iter()
            .map(|(id, u)| {
                let wait = waits.iter().find(|w| &w.entitlement == id);
                let let_through = u.requests - u.denied_by_policy;
                #[expect(clippy::cast_precision_loss, reason = "counts of requests")]
                let rate = (let_through > 0).then(|| u.auto_approved as f64 / let_through as f64);
                EntitlementUsageView {
                    entitlement: id.to_string(),
                    requests: u.requests,
                    auto_approved: u.auto_approved,
                    needing_approval: u.needing_approval,
                    break_glass: u.break_glass,
                    denied_by_policy: u.denied_by_policy,
                    denied_by_approver: u.denied_by_approver,
                    auto_approval_rate: rate,
                    wait_p50_seconds: seconds(wait.and_then(|w| w.p50)),
                    wait_p95_seconds: seconds(wait.and_then(|w| w.p95)),
                }
            })
            .collect(),
        approvers: usage
            .approvers
            .iter()
            .map(|(who, r)| ApproverView {
                approver: who.to_string(),
                approvals: r.approvals,
                denials: r.denials,
                quick_approvals: r.quick_approvals,
                signals: r.signals.clone(),
            })
            .collect(),
        unused: usage
            .unused
            .iter()
            .map(|(u, e)| UnusedEligibility {
                user: u.to_string(),
                entitlement: e.to_string(),
            })
            .collect(),
    }))
}

/// Who holds each connector's access: Airlock's grants and standing
/// privileges, with their risk (admins and auditors).
async fn standing_report(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiQuery(_): ApiQuery<StandingQuery>,
) -> ApiResult<Json<StandingReportView>> {
    standing_view(&state, &user).await.map(Json)
}

/// `GET /v1/reports/standing`'s report (the web UI's standing page and its
/// CSV show it): admins and auditors.
pub(super) async fn standing_view(state: &AppState, user: &User) -> ApiResult<StandingReportView> {
    require(user, Capability::ReadEverything)?;
    let report = state.engine.standing_report().await?;
    Ok(StandingReportView::from(&report))
}

async fn verify_audit(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<VerifyView>> {
    verify_view(&state, &user).await.map(Json)
}

/// Whether the audit chain holds (`GET /v1/audit/verify`, the head of the
/// web UI's audit page).
pub(super) async fn verify_view(state: &AppState, user: &User) -> ApiResult<VerifyView> {
    require(user, Capability::ReadEverything)?;
    let report = state.engine.verify_audit().await?;
    Ok(VerifyView::from(report))
}

/// The public key audit checkpoints are signed with. Public on purpose: a
/// third party who pins it can check shipped checkpoint logs.
async fn checkpoint_key(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<serde_json::Value>> {
    let key = state.checkpoint_key.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server signs no audit checkpoints",
        )
    })?;
    Ok(Json(serde_json::json!({"public_key": key})))
}

/// Compares every connector's holders with Airlock's grants (admin). Every
/// finding is audited; with `fix`, the fixes the rule decides are applied
/// and audited too.
async fn reconcile(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<ReconcileBody>,
) -> ApiResult<Json<ReconcileView>> {
    require(&user, Capability::Reconcile)?;
    let report = state.engine.reconcile(body.fix, Some(&user)).await?;
    let view = ReconcileView::from(&report);
    tracing::info!(by = %user.id, fix = body.fix, unfixed = view.unfixed, errors = view.errors, "reconciled");
    Ok(Json(view))
}
