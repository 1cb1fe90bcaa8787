//! `/v1/access-reviews`: list and start campaigns, show one with its items
//! (each decision with its place in the audit chain: the evidence), and
//! decide an item. Parse, ask the engine, render: who may is
//! `airlock_core::access`'s, what a decision means the core's.

use std::collections::BTreeMap;

use airlock_core::access_review::{Campaign, Decision, Item};
use airlock_core::catalog::User;
use airlock_core::CampaignId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ApiError, ApiJson, ApiQuery, ApiResult, AppState, Caller};
use crate::api::{
    AccessReviewDetail, AccessReviewItemView, AccessReviewList, AccessReviewQuery,
    AccessReviewTemplateView, AccessReviewView, DecideItemBody, StartAccessReviewBody,
};
use crate::engine::EngineError;

fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(raw).map_err(|_| EngineError::UnknownAccessReview(raw.to_owned()).into())
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(query): ApiQuery<AccessReviewQuery>,
) -> ApiResult<Json<AccessReviewList>> {
    list_of(&state, &user, query.open).await.map(Json)
}

/// The campaigns `viewer` may see (only open ones with `open_only`),
/// newest first, and the kinds the config defines.
pub(super) async fn list_of(
    state: &AppState,
    viewer: &User,
    open_only: bool,
) -> ApiResult<AccessReviewList> {
    let now = state.engine.now();
    let campaigns = state.engine.access_reviews(viewer, open_only).await?;
    Ok(AccessReviewList {
        campaigns: campaigns
            .iter()
            .map(|c| AccessReviewView::of(c, now))
            .collect(),
        templates: state
            .engine
            .access_review_templates()
            .values()
            .map(AccessReviewTemplateView::of)
            .collect(),
    })
}

pub(super) async fn start(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<StartAccessReviewBody>,
) -> ApiResult<(StatusCode, Json<AccessReviewView>)> {
    let started = start_of(&state, &user, &body.template).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// `by` starts a campaign of `template` now.
pub(super) async fn start_of(
    state: &AppState,
    by: &User,
    template: &str,
) -> ApiResult<AccessReviewView> {
    let campaign = state.engine.start_access_review(template, by).await?;
    Ok(AccessReviewView::of(&campaign, state.engine.now()))
}

/// One campaign with its items as `viewer` may see it: the view, and the
/// core's campaign and items it shows (for what the viewer may do).
pub(super) async fn detail_of(
    state: &AppState,
    viewer: &User,
    id: &str,
) -> ApiResult<(AccessReviewDetail, Campaign, Vec<Item>)> {
    let id = campaign_id(id)?;
    let (campaign, items) = state.engine.access_review(viewer, &id).await?;
    let hashes: BTreeMap<i64, String> = state.engine.decision_hashes(&items).await?;
    let detail = AccessReviewDetail {
        campaign: AccessReviewView::of(&campaign, state.engine.now()),
        items: items
            .iter()
            .map(|i| AccessReviewItemView::of(i, &hashes))
            .collect(),
    };
    Ok((detail, campaign, items))
}

pub(super) async fn show(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessReviewDetail>> {
    let (detail, ..) = detail_of(&state, &user, &id).await?;
    Ok(Json(detail))
}

pub(super) async fn decide(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((id, item)): Path<(String, String)>,
    ApiJson(body): ApiJson<DecideItemBody>,
) -> ApiResult<Json<AccessReviewItemView>> {
    decide_of(&state, &user, (&id, &item), &body)
        .await
        .map(Json)
}

/// `by` confirms or removes item `item` of campaign `id`, as `body` says.
pub(super) async fn decide_of(
    state: &AppState,
    by: &User,
    (id, item): (&str, &str),
    body: &DecideItemBody,
) -> ApiResult<AccessReviewItemView> {
    let id = campaign_id(id)?;
    let number: u32 = item
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid("item", format!("`{item}` is not an item number")))?;
    let decision = Decision::parse(&body.decision).ok_or_else(|| {
        ApiError::invalid(
            "decision",
            format!("`{}` is neither `confirm` nor `remove`", body.decision),
        )
    })?;
    let decided = state
        .engine
        .decide_access_review_item(by, &id, number, decision, &body.comment)
        .await?;
    let hashes = state
        .engine
        .decision_hashes(std::slice::from_ref(&decided))
        .await?;
    Ok(AccessReviewItemView::of(&decided, &hashes))
}
