//! `/v1/tokens`: create, list and revoke API tokens, and the `Caller`
//! extractor's hook that authenticates with one. Parse, ask the engine,
//! render: who may is `airlock_core::access`'s.

use std::time::Duration;

use airlock_core::catalog::User;
use airlock_core::token::Scopes;
use airlock_core::{TokenId, UserId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{parse_duration_input, ApiError, ApiJson, ApiQuery, ApiResult, AppState, Caller};
use crate::api::{CreateTokenBody, CreatedTokenView, EmptyBody, TokenQuery, TokenView};
use crate::engine::{EngineError, TokenAsk, TokenRefused};

pub use crate::engine::tokens::TOKEN_PREFIX;

/// A token's lifetime when the request names none (or the server's
/// maximum, if that is shorter).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Authenticates an `alk_` bearer token: 401 saying whether it is unknown,
/// expired or revoked.
/// (The directory's word on its owner, deactivated say, is the caller's
/// next check, as for every token.)
pub(super) async fn authenticate(state: &AppState, secret: &str) -> Result<User, Response> {
    match state.engine.authenticate_token(secret).await {
        Ok(user) => Ok(user),
        Err(TokenRefused::Store(e)) => Err(ApiError::from(EngineError::from(e)).into_response()),
        Err(e) => Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()).into_response(),
        ),
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<CreateTokenBody>,
) -> ApiResult<(StatusCode, Json<CreatedTokenView>)> {
    let lifetime = match &body.expires_in {
        Some(d) => parse_duration_input(d, "expires_in").map_err(|_| {
            ApiError::invalid(
                "expires_in",
                "must be a duration such as `30d` or a number of seconds",
            )
        })?,
        None => DEFAULT_LIFETIME.min(state.engine.token_max_lifetime()),
    };
    let scopes = Scopes::parse(
        &body
            .scopes
            .unwrap_or_else(|| vec!["read".to_owned()])
            .join(","),
    )
    .map_err(EngineError::Rejected)?;
    let owner = body
        .owner
        .as_deref()
        .map(|o| UserId::parse(o).map_err(|e| ApiError::invalid("owner", format!("`{o}` {e}"))))
        .transpose()?;
    let ask = TokenAsk {
        name: body.name,
        owner,
        scopes,
        lifetime,
    };
    let created = state.engine.create_token(&user, ask).await?;
    tracing::info!(by = %user.id, token = %created.token.id, owner = %created.token.owner, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenView {
            secret: created.secret,
            token: TokenView::new(&created.token, state.engine.now()),
        }),
    ))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = state
        .engine
        .list_tokens(&user, q.all.unwrap_or(false))
        .await?;
    let now = state.engine.now();
    Ok(Json(
        tokens.iter().map(|t| TokenView::new(t, now)).collect(),
    ))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(EmptyBody {}): ApiJson<EmptyBody>,
) -> ApiResult<Json<TokenView>> {
    let token_id = TokenId::parse(&id).map_err(|_| EngineError::UnknownToken(id.clone()))?;
    let revoked = state.engine.revoke_token(&user, &token_id).await?;
    tracing::info!(by = %user.id, token = %revoked.id, "API token revoked");
    Ok(Json(TokenView::new(&revoked, state.engine.now())))
}
