//! The web UI's access-review pages: the campaigns one may see (admins
//! start one of a configured kind there) and one campaign's items, each
//! with Confirm and Remove for those the signed-in person may decide. Each
//! asks the same `http::access_reviews` function as its `/v1` counterpart;
//! who may see or decide what is `airlock_core::access`'s.

use airlock_core::access::{may_review_item, Capability, ReviewerStanding};
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::super::access_reviews::{decide_of, detail_of, list_of, start_of};
use super::super::{require, AppState};
use super::oversight::flag;
use super::session::{Fields, Posted, Session};
use super::{problem_page, render, Chrome, FormError};
use crate::api::{
    AccessReviewItemView, AccessReviewTemplateView, AccessReviewView, DecideItemBody,
};

#[derive(Template)]
#[template(path = "ui/access_reviews.html")]
struct CampaignsPage {
    chrome: Chrome,
    /// Open campaigns, newest first.
    open: Vec<AccessReviewView>,
    completed: Vec<AccessReviewView>,
    templates: Vec<AccessReviewTemplateView>,
    /// Admins: a form to start a campaign of each template.
    may_start: bool,
    error: Option<FormError>,
}

async fn campaigns_page(
    state: &AppState,
    session: &Session,
    error: Option<FormError>,
    status: StatusCode,
) -> Response {
    let list = match list_of(state, &session.user, false).await {
        Ok(list) => list,
        Err(e) => return problem_page(state, session, &e).await,
    };
    let (open, completed) = list
        .campaigns
        .into_iter()
        .partition(|c| c.completed_at.is_none());
    let page = CampaignsPage {
        chrome: Chrome::new(state, session, "access-reviews").await,
        open,
        completed,
        templates: list.templates,
        may_start: require(&session.user, Capability::StartAccessReviews).is_ok(),
        error,
    };
    render(status, &page)
}

/// The campaigns this user may see, open ones first.
pub(super) async fn campaigns(State(state): State<AppState>, session: Session) -> Response {
    campaigns_page(&state, &session, None, StatusCode::OK).await
}

/// An admin starts a campaign of the posted `template`, then sees it.
pub(super) async fn start(
    State(state): State<AppState>,
    Posted { session, fields }: Posted,
) -> Response {
    let template = fields.get("template").unwrap_or_default();
    match start_of(&state, &session.user, template).await {
        Ok(started) => Redirect::to(&format!("/ui/access-reviews/{}", started.id)).into_response(),
        Err(e) => {
            let status = e.status;
            campaigns_page(&state, &session, Some(e.into()), status).await
        }
    }
}

/// One item as the campaign page shows it.
struct ItemRow {
    v: AccessReviewItemView,
    /// Open, and the rules let this user decide it: the form shows.
    may_decide: bool,
    /// What went wrong deciding it just now, beside its form.
    error: Option<FormError>,
    /// The comment typed with that attempt, shown again.
    comment: String,
}

#[derive(Template)]
#[template(path = "ui/access_review.html")]
struct CampaignPage {
    chrome: Chrome,
    c: AccessReviewView,
    items: Vec<ItemRow>,
    /// `?open=1`: only the items still open.
    open_only: bool,
    /// An error that belongs to no item shown.
    error: Option<FormError>,
}

/// A failed attempt to decide item `item`, shown beside its form.
struct Attempt {
    item: String,
    comment: String,
    error: FormError,
}

async fn campaign_page(
    state: &AppState,
    session: &Session,
    (id, open_only): (&str, bool),
    attempt: Option<Attempt>,
    status: StatusCode,
) -> Response {
    let (detail, campaign, items) = match detail_of(state, &session.user, id).await {
        Ok(found) => found,
        // One that is not theirs to see is as unknown as one that is not.
        Err(e) => return problem_page(state, session, &e).await,
    };
    let groups = campaign.reviewer_groups();
    let mut attempt = attempt;
    let mut rows = Vec::new();
    for (v, item) in detail.items.into_iter().zip(&items) {
        let open = item.decided.is_none();
        if open_only && !open {
            continue;
        }
        let standing = ReviewerStanding {
            groups: &groups,
            about: item.subject.user(),
        };
        let (error, comment) = if attempt
            .as_ref()
            .is_some_and(|a| a.item == item.number.to_string())
        {
            attempt
                .take()
                .map(|a| (Some(a.error), a.comment))
                .unwrap_or_default()
        } else {
            (None, String::new())
        };
        rows.push(ItemRow {
            may_decide: open && may_review_item(&session.user, &standing).is_ok(),
            v,
            error,
            comment,
        });
    }
    let page = CampaignPage {
        chrome: Chrome::new(state, session, "access-reviews").await,
        c: detail.campaign,
        items: rows,
        open_only,
        error: attempt.map(|a| a.error),
    };
    render(status, &page)
}

/// One campaign and its items (`?open=1`: the open ones only).
pub(super) async fn campaign(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let open_only = flag(&Fields::query(query.as_deref()), "open");
    campaign_page(&state, &session, (&id, open_only), None, StatusCode::OK).await
}

/// Confirms or removes an item, as the button pressed says, then goes back
/// to the campaign's page with the same filter; an error shows beside the
/// item's form, with the comment as typed.
pub(super) async fn decide(
    State(state): State<AppState>,
    Path((id, item)): Path<(String, String)>,
    Posted { session, fields }: Posted,
) -> Response {
    let open_only = flag(&fields, "open");
    let body = DecideItemBody {
        decision: fields.get("decision").unwrap_or_default().to_owned(),
        comment: fields.get("comment").unwrap_or_default().to_owned(),
    };
    match decide_of(&state, &session.user, (&id, &item), &body).await {
        Ok(_) => {
            let filter = if open_only { "?open=1" } else { "" };
            Redirect::to(&format!("/ui/access-reviews/{id}{filter}")).into_response()
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => problem_page(&state, &session, &e).await,
        Err(e) => {
            let status = e.status;
            let attempt = Attempt {
                item,
                comment: body.comment,
                error: FormError::from(e),
            };
            campaign_page(&state, &session, (&id, open_only), Some(attempt), status).await
        }
    }
}
