//! `/v1/access-reviews`: list and start campaigns, show one with its items
//! (each decision with its place in the audit chain: the evidence), and
//! decide an item. Parse, ask the engine, render: who may is
//! `airlock_core::access`'s, what a decision means the core's.

use std::collections::BTreeMap;

use airlock_core::access_review::Decision;
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
    let now = state.engine.now();
    let campaigns = state.engine.access_reviews(&user, query.open).await?;
    Ok(Json(AccessReviewList {
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
    }))
}

pub(super) async fn start(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<StartAccessReviewBody>,
) -> ApiResult<(StatusCode, Json<AccessReviewView>)> {
    let campaign = state
        .engine
        .start_access_review(&body.template, &user)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AccessReviewView::of(&campaign, state.engine.now())),
    ))
}

/// One campaign with its items, as `viewer` may see it.
pub(super) async fn detail_of(
    state: &AppState,
    viewer: &airlock_core::catalog::User,
    id: &CampaignId,
) -> ApiResult<AccessReviewDetail> {
    let (campaign, items) = state.engine.access_review(viewer, id).await?;
    let hashes: BTreeMap<i64, String> = state.engine.decision_hashes(&items).await?;
    Ok(AccessReviewDetail {
        campaign: AccessReviewView::of(&campaign, state.engine.now()),
        items: items
            .iter()
            .map(|i| AccessReviewItemView::of(i, &hashes))
            .collect(),
    })
}

pub(super) async fn show(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessReviewDetail>> {
    let id = campaign_id(&id)?;
    detail_of(&state, &user, &id).await.map(Json)
}

pub(super) async fn decide(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((id, item)): Path<(String, String)>,
    ApiJson(body): ApiJson<DecideItemBody>,
) -> ApiResult<Json<AccessReviewItemView>> {
    let id = campaign_id(&id)?;
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
        .decide_access_review_item(&user, &id, number, decision, &body.comment)
        .await?;
    let hashes = state
        .engine
        .decision_hashes(std::slice::from_ref(&decided))
        .await?;
    Ok(Json(AccessReviewItemView::of(&decided, &hashes)))
}
