//! `POST /v1/tickets/{ref}/closed`: the ticket system's signed webhook. No
//! bearer token: a delivery authenticates by its signature, which the
//! engine checks (`engine::tickets`) before the body is read.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::api::{TicketClosedBody, TicketClosedView};
use crate::engine::{Delivery, DeliveryRefused};

use super::extract::Signed;
use super::{ApiError, ApiResult, AppState};

pub(super) async fn closed(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    signed: Signed,
) -> ApiResult<Json<TicketClosedView>> {
    let delivery = Delivery {
        timestamp: signed.timestamp.as_deref(),
        signature: signed.signature.as_deref(),
        body: &signed.body,
    };
    let verified = state.engine.verify_delivery(&delivery).map_err(refused)?;
    let body: TicketClosedBody = signed.json()?;
    let closed = state
        .engine
        .close_ticket(verified, &reference, &body.ticket, body.delivery.as_deref())
        .await
        .map_err(refused)?;
    Ok(Json(TicketClosedView::new(&closed)))
}

/// 404 while the webhook is off; 401 naming the header at fault for a
/// signature or timestamp that does not check out; 409 for a replay; the
/// engine's errors as everywhere else (400 naming the field for a bad
/// ticket reference).
fn refused(e: DeliveryRefused) -> ApiError {
    let (status, code) = match &e {
        DeliveryRefused::Off => (StatusCode::NOT_FOUND, "not_found"),
        DeliveryRefused::Missing(_)
        | DeliveryRefused::BadTimestamp(_)
        | DeliveryRefused::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
        DeliveryRefused::Stale(_) => (StatusCode::UNAUTHORIZED, "stale_delivery"),
        DeliveryRefused::Replayed => (StatusCode::CONFLICT, "replayed_delivery"),
        DeliveryRefused::Engine(_) => {
            return match e {
                DeliveryRefused::Engine(e) => ApiError::from(e),
                other => ApiError::from(crate::engine::EngineError::Store(
                    crate::store::StoreError::Corrupt(other.to_string()),
                )),
            }
        }
    };
    ApiError {
        field: e.header().map(str::to_owned),
        challenge: Some(SIGNATURE_CHALLENGE.to_owned()),
        ..ApiError::new(status, code, e.to_string())
    }
}

/// What a 401 asks for instead of a bearer token.
const SIGNATURE_CHALLENGE: &str = "Signature headers=\"x-airlock-timestamp x-airlock-signature\"";
