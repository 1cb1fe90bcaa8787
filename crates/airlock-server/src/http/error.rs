//! The API's one error type, which turns every failure into a JSON body
//! with the right status, a stable code and the field at fault.

use airlock_core::access::{self, Capability};
use airlock_core::catalog::User;
use airlock_core::request::Rejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{ErrorBody, ErrorDetail};
use crate::engine::EngineError;

/// The API's one error: a status, a stable code, a safe message and, for bad
/// input, the field at fault.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<String>,
    /// `WWW-Authenticate` of a 401 (plain `Bearer` when `None`).
    pub(crate) challenge: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            challenge: None,
        }
    }

    /// RFC 9470's step-up challenge: 401 `insufficient_user_authentication`
    /// with the MFA age the policies demand and, when the provider's
    /// `acr` values for MFA are configured, those.
    pub(crate) fn step_up(max_age: u64, acr_values: &[String]) -> Self {
        let message = EngineError::StepUp { max_age }.to_string();
        // Quoted strings of the header: no quote or backslash inside.
        let quoted = |text: &str| text.replace(['"', '\\', '`'], "'");
        let mut challenge = format!(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"{}\"",
            quoted(&message)
        );
        if !acr_values.is_empty() {
            challenge.push_str(&format!(
                ", acr_values=\"{}\"",
                quoted(&acr_values.join(" "))
            ));
        }
        challenge.push_str(&format!(", max_age={max_age}"));
        ApiError {
            challenge: Some(challenge),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "insufficient_user_authentication",
                message,
            )
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
        }
    }

    /// 404 for something named in the query that does not exist.
    pub(crate) fn unknown(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no request `{id}` that you can see"),
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(Rejection::Invalid { field, message }) => {
                ApiError::invalid(field, message)
            }
            EngineError::Rejected(Rejection::Forbidden(m)) => ApiError::forbidden(m),
            EngineError::Rejected(Rejection::Conflict(m)) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", m)
            }
            EngineError::NotFound(id) => ApiError::not_found(id.as_str()),
            e @ EngineError::UnknownEntitlement { .. } => {
                ApiError::invalid("entitlement", e.to_string())
            }
            e @ EngineError::UnknownBundle { .. } => ApiError::invalid("bundle", e.to_string()),
            EngineError::Policy(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policies",
                format!("{e}\nthe policy set in force stays"),
            ),
            e @ (EngineError::UnknownProposal(_)
            | EngineError::UnknownToken(_)
            | EngineError::UnknownAccessReview(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            e @ EngineError::AuditUntrusted(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_untrusted",
                e.to_string(),
            ),
            EngineError::StepUp { max_age } => ApiError::step_up(max_age, &[]),
            EngineError::Lines(e) => ApiError::invalid(&e.field, e.message),
            EngineError::Session(e) => ApiError::invalid(&e.field, e.message),
            EngineError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = self.challenge.as_deref().unwrap_or("Bearer");
            if let Ok(v) = header::HeaderValue::from_str(challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Refuses with 403 unless `user` holds `capability` (the rule is the
/// core's: `access::may`).
pub(crate) fn require(user: &User, capability: Capability) -> ApiResult<()> {
    Ok(access::may(user, capability).map_err(EngineError::Rejected)?)
}
