//! Everything Airlock serves over HTTP, one module each: `extract` (who
//! the caller is, bodies and queries within their limits), `error` (the
//! one error type), `json_api` (the `/v1` API), `tokens` (`/v1/tokens`),
//! `tickets` (the ticket system's signed webhook),
//! `scim` (`/scim/v2`) and `ui` (the web UI under `/ui`, not part of the
//! JSON API). This root holds the shared state and puts the
//! routes together behind the same limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::UserId;
use axum::http::StatusCode;
use axum::Router;

use crate::config::ScimSettings;
use crate::engine::Engine;
use crate::oidc::Verifier;

mod access_reviews;
mod error;
mod extract;
mod json_api;
mod ssh_sessions;
mod tickets;
mod tokens;
mod ui;

pub use error::ApiError;
pub(crate) use error::{require, ApiResult};
pub(crate) use extract::refuse_long_uris;
pub use extract::{ApiJson, ApiQuery, Caller, MfaAt, MAX_BODY_BYTES, MAX_URI_BYTES};
pub(crate) use json_api::parse_duration_input;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// SHA-256 hex of each token to its user.
    pub tokens: Arc<HashMap<String, UserId>>,
    /// Where an authenticating proxy states the user's last MFA, if one does.
    pub mfa_header: Option<String>,
    /// The public key audit checkpoints are signed with (`ed25519:` hex).
    pub checkpoint_key: Option<String>,
    /// How long a request body may take to arrive (`server.body_timeout`).
    pub body_timeout: Duration,
    /// Checks the identity provider's tokens (`server.oidc`), if configured.
    pub oidc: Option<Arc<Verifier>>,
    /// SCIM provisioning (`server.scim`); `None`: no `/scim/v2` routes.
    pub scim: Option<Arc<ScimSettings>>,
    /// Signs elevation claims and publishes their key.
    pub elevation: Arc<crate::elevation::ElevationSigner>,
}

/// Every route of the API, so the OpenAPI test can check none is undocumented.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/metrics"),
    ("get", "/v1/me"),
    ("get", "/v1/auth/oidc"),
    ("get", "/v1/entitlements"),
    ("post", "/v1/requests"),
    ("get", "/v1/requests"),
    ("get", "/v1/requests/{id}"),
    ("post", "/v1/requests/{id}/approve"),
    ("post", "/v1/requests/{id}/deny"),
    ("post", "/v1/requests/{id}/cancel"),
    ("post", "/v1/requests/{id}/release"),
    ("post", "/v1/requests/{id}/revoke"),
    ("post", "/v1/requests/{id}/extend"),
    ("post", "/v1/requests/{id}/credential"),
    ("post", "/v1/requests/{id}/review"),
    ("post", "/v1/requests/{id}/elevation"),
    ("get", "/v1/requests/{id}/explain"),
    ("get", "/v1/policy"),
    ("post", "/v1/policy/reload"),
    ("get", "/v1/policy/proposals"),
    ("post", "/v1/policy/proposals/{id}/approve"),
    ("get", "/v1/grants"),
    ("post", "/v1/grants/{id}/activity"),
    ("post", "/v1/requests/{id}/ssh-sessions"),
    ("get", "/v1/requests/{id}/ssh-sessions"),
    ("get", "/v1/ssh-sessions/{id}"),
    ("get", "/v1/check"),
    ("get", "/v1/reviews"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/verify"),
    ("get", "/v1/audit/export"),
    ("get", "/v1/reports/approval-waits"),
    ("get", "/v1/reports/standing"),
    ("get", "/v1/reports/usage"),
    ("get", "/v1/audit/checkpoint-key"),
    ("post", "/v1/reconcile"),
    ("get", "/v1/access-reviews"),
    ("post", "/v1/access-reviews"),
    ("get", "/v1/access-reviews/{id}"),
    ("post", "/v1/access-reviews/{id}/items/{item}"),
    ("get", "/v1/notifications"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("post", "/v1/tokens/{id}/revoke"),
    ("post", "/v1/tickets/{ref}/closed"),
];

pub const OPENAPI: &str = include_str!("openapi.json");

pub mod scim;

pub fn router(state: AppState) -> Router {
    let routes = if state.scim.is_some() {
        scim::routes()
    } else {
        Router::new()
    };
    routes
        .merge(json_api::routes())
        .merge(ssh_sessions::routes())
        .merge(ui::routes(state.clone()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method (see /openapi.json)",
            )
        })
        .layer(axum::middleware::from_fn(refuse_long_uris))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
