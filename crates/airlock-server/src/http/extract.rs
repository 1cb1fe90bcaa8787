//! What every handler reads from a request before it runs: the caller
//! (a config token, an API token, or the identity provider's token), their
//! MFA time, and bodies and queries whose errors name the field at fault,
//! within the size and time limits no client may exceed.

use airlock_core::catalog::User;
use airlock_core::Timestamp;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::api::parse_time;
use crate::config::token_hash;
use crate::engine::Refused;
use crate::oidc::{TokenError, Verifier};

use super::{tokens, ApiError, AppState};

/// When the caller last completed MFA: as their identity provider's token
/// says (`auth_time` with `amr`/`acr`, see `oidc::Identity`), or else as
/// the authenticating proxy in front of Airlock says
/// (`server.mfa_header`); `None` when neither says. Extract it after
/// [`Caller`], which leaves the token's facts in the request.
pub struct MfaAt(pub Option<Timestamp>);

/// The MFA facts of the caller's identity-provider token, left by [`Caller`].
#[derive(Clone, Copy)]
struct TokenMfa(Timestamp);

/// When the caller last completed MFA, as the identity-provider token that
/// [`authenticate`] just checked says.
pub(super) fn token_mfa(parts: &Parts) -> Option<Timestamp> {
    parts.extensions.get::<TokenMfa>().map(|TokenMfa(at)| *at)
}

impl FromRequestParts<AppState> for MfaAt {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(at) = token_mfa(parts) {
            return Ok(MfaAt(Some(at)));
        }
        let Some(name) = &state.mfa_header else {
            return Ok(MfaAt(None));
        };
        let Some(value) = parts.headers.get(name.as_str()) else {
            return Ok(MfaAt(None));
        };
        let raw = value
            .to_str()
            .map_err(|_| ApiError::invalid(name, "must be text"))?;
        parse_time(raw)
            .map(|t| MfaAt(Some(t)))
            .map_err(|e| ApiError::invalid(name, e))
    }
}

/// The authenticated user behind a bearer token: one of the config's static
/// tokens, or a JWT from the identity provider (`server.oidc`).
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m).into_response();
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>` header"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?
            .to_owned();
        authenticate(parts, state, &token).await.map(Caller)
    }
}

/// Who `token` stands for: a config token, an API token or the identity
/// provider's token, with the directory's last word. The one path every
/// caller takes, the API's bearer tokens and the web UI's session cookie
/// and sign-in form alike, so the UI adds no authentication of its own.
pub(super) async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
    token: &str,
) -> Result<User, Response> {
    let unauthorized =
        |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m).into_response();
    let catalog = state.engine.catalog();
    let user = if token.starts_with(tokens::TOKEN_PREFIX) {
        tokens::authenticate(state, token).await?
    } else if let Some(user) = state
        .tokens
        .get(&token_hash(token))
        .and_then(|id| catalog.user(id))
    {
        user.clone()
    } else {
        match &state.oidc {
            Some(oidc) if Verifier::looks_like_jwt(token) => {
                let who = oidc
                    .sign_in(token, state.engine.now(), catalog)
                    .await
                    .map_err(token_refused)?;
                // A service principal authenticates only with API tokens.
                if catalog.user(&who.user.id).is_some_and(User::is_service) {
                    return Err(unauthorized(
                        "a service principal signs in only with an API token",
                    ));
                }
                if let Some(at) = who.mfa_at {
                    parts.extensions.insert(TokenMfa(at));
                }
                who.user
            }
            _ => return Err(unauthorized("unknown token")),
        }
    };
    // The identity provider's directory has the last word: its groups
    // join the caller's, and a deactivated or deleted person is refused
    // whatever token they hold.
    match state.engine.signed_in(user).await {
        Ok(user) => Ok(user),
        Err(Refused::Engine(e)) => Err(ApiError::from(e).into_response()),
        Err(refused) => Err(unauthorized(&refused.to_string())),
    }
}

/// A refused identity-provider token: 401 with RFC 6750's `invalid_token`
/// challenge saying why (in a quoted string, so quotes, backslashes and
/// backticks become `'`), or 503
/// when the provider's keys cannot be had.
fn token_refused(e: TokenError) -> Response {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "refusing a token: no keys to check it with");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "idp_unavailable",
            e.to_string(),
        )
        .into_response();
    }
    let message = e.to_string();
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.clone()).into_response();
    let challenge = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        message.replace(['"', '\\', '`'], "'")
    );
    if let Ok(v) = header::HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The largest request body the API reads: far above any valid request (a
/// reason is at most 2,000 characters, a public key 8,192), far below what
/// would let one client fill the server's memory.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest request target (path and query) the API reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A JSON body whose parse errors name the field at fault. An empty body
/// reads as `{}` so commands without arguments need none; any other body
/// must say it is JSON and be exactly one JSON object.
/// The whole body must arrive within `server.body_timeout`, so a client
/// cannot hold a handler by sending it slowly.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared_json = declared_json(&req);
        let bytes = body_bytes(req, state).await?;
        json_object(&bytes, declared_json).map(ApiJson)
    }
}

/// A signed body (the ticket system's webhook): the signature headers and
/// the body's bytes as sent, which the signature covers, read within the
/// same limits as any body. Read it as JSON with [`Signed::json`] once the
/// signature checked out.
pub struct Signed {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub body: axum::body::Bytes,
    declared_json: Option<bool>,
}

impl Signed {
    /// The body as `T`, read like [`ApiJson`]'s.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        json_object(&self.body, self.declared_json)
    }
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let timestamp = header_text(&req, airlock_connectors::webhook::TIMESTAMP_HEADER);
        let signature = header_text(&req, airlock_connectors::webhook::SIGNATURE_HEADER);
        let declared_json = declared_json(&req);
        let body = body_bytes(req, state).await?;
        Ok(Signed {
            timestamp,
            signature,
            body,
            declared_json,
        })
    }
}

/// A header's value as text (bytes that are not UTF-8 replaced), if sent.
fn header_text(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Whether the request says its body is JSON (`None`: it says nothing).
fn declared_json(req: &Request) -> Option<bool> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| is_json_media_type(v.as_bytes()))
}

/// The whole body, within [`MAX_BODY_BYTES`] and `server.body_timeout`.
async fn body_bytes(req: Request, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.body_timeout;
    tokio::time::timeout(limit, axum::body::Bytes::from_request(req, state))
        .await
        .map_err(|_| ApiError {
            field: Some("body".to_owned()),
            ..ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(limit)
                ),
            )
        })?
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body must be at most {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::invalid("body", e.body_text())
            }
        })
}

/// A body that must be one JSON object (none at all reads as `{}`), as
/// `T`; errors name the field at fault.
fn json_object<T: DeserializeOwned>(
    bytes: &[u8],
    declared_json: Option<bool>,
) -> Result<T, ApiError> {
    // No body at all stands for `{}`; anything else must be a JSON
    // object (whitespace alone is not JSON).
    let bytes: &[u8] = if bytes.is_empty() {
        b"{}"
    } else if declared_json != Some(true) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a request body must be JSON, sent with `Content-Type: application/json`",
        ));
    } else {
        bytes
    };
    // serde reads a struct from a JSON array too (`[true]` as
    // `{"fix": true}`); every body the API takes is an object.
    if bytes.iter().find(|b| !is_json_whitespace(b)) != Some(&b'{') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // Broken JSON is the body's fault, wherever the parser stopped.
        let syntax = matches!(
            e.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let field = if path == "." || syntax {
            "body".to_owned()
        } else {
            path
        };
        ApiError::invalid(&field, e.inner().to_string())
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(
            "body",
            format!("unexpected data after the JSON value ({e})"),
        )
    })?;
    Ok(value)
}

/// What JSON counts as whitespace: narrower than ASCII's, which has the form
/// feed (schemathesis found a body of one form feed read as `{}`).
fn is_json_whitespace(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json_media_type(raw: &[u8]) -> bool {
    let essence = raw.split(|b| *b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// Answers 414 in the API's error shape for a request target longer than
/// [`MAX_URI_BYTES`], before any handler or extractor reads it.
pub(crate) async fn refuse_long_uris(req: Request, next: axum::middleware::Next) -> Response {
    let length = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if length > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request path and query must be at most {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// A query string whose parse errors name the parameter at fault.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                ApiError::invalid(&field, e.inner().to_string())
            })
    }
}
