//! The web UI's sessions and forms: a session is an API token (so it works
//! on every replica, shows in `airlock token list` and is revoked at sign
//! out) whose secret rides in an HttpOnly, SameSite=Strict cookie; every
//! form post carries a CSRF token derived from that secret, and comes from
//! this server's own origin. Authentication is `extract::authenticate`,
//! the API's own.

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_core::catalog::User;
use airlock_core::token::{Scope, Scopes};
use airlock_core::Timestamp;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::super::extract::{authenticate, token_mfa};
use super::super::{tokens::TOKEN_PREFIX, ApiError, AppState, MAX_BODY_BYTES};
use super::error_response;
use crate::engine::{EngineError, TokenAsk};

/// The cookie that holds a session's API token secret.
const COOKIE: &str = "airlock_session";

/// How long a web session lasts at most (never past the server's
/// `token_max_lifetime`, nor past the API token signed in with).
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What the CSRF token is an HMAC of, keyed by the session's secret: no
/// server-side storage, and one session's token is no use in another.
const CSRF_LABEL: &[u8] = b"airlock web ui csrf v1";

/// A signed-in person: who they are (as the API's `Caller` would say) and
/// their session's CSRF token for the forms of the page.
pub(crate) struct Session {
    pub user: User,
    pub csrf: String,
    /// When they last completed MFA, as an identity provider's session
    /// token says (`None` for a session signed in with an API token).
    pub mfa_at: Option<Timestamp>,
    /// The session token's secret, the CSRF token's key.
    secret: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = session_secret(&parts.headers) else {
            return Err(to_login(parts));
        };
        match authenticate(parts, state, &secret).await {
            Ok(user) => Ok(Session {
                user,
                csrf: csrf_token(&secret),
                mfa_at: token_mfa(parts),
                secret,
            }),
            // Expired, revoked, or its owner gone: sign in again.
            Err(_) => Err(signed_out(&parts.headers, to_login(parts))),
        }
    }
}

/// A form post from a signed-in person: its origin checked, its CSRF token
/// checked against the session, and its fields.
pub(crate) struct Posted {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !same_origin(req.headers()) {
            return Err(foreign_post());
        }
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let fields = Fields::read(Request::from_parts(parts, body), state).await?;
        let csrf_ok = fields
            .get("csrf")
            .and_then(|given| hex::decode(given).ok())
            .is_some_and(|tag| {
                ring::hmac::verify(&csrf_key(&session.secret), CSRF_LABEL, &tag).is_ok()
            });
        if !csrf_ok {
            return Err(forbidden(
                "this form's CSRF token is missing or wrong: reload the page and try again",
            ));
        }
        Ok(Posted { session, fields })
    }
}

/// The fields of a URL-encoded form, in order (the inbox repeats `id`).
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) async fn read(req: Request, state: &AppState) -> Result<Fields, Response> {
        let limit = state.body_timeout;
        let bytes = tokio::time::timeout(limit, axum::body::Bytes::from_request(req, state))
            .await
            .map_err(|_| {
                error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "the form did not arrive in time",
                )
            })?
            .map_err(|_| {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("a form may be at most {MAX_BODY_BYTES} bytes"),
                )
            })?;
        Ok(Fields(
            form_urlencoded::parse(&bytes).into_owned().collect(),
        ))
    }

    /// The fields of a page's query string (a filter form sent by GET).
    pub(crate) fn query(raw: Option<&str>) -> Fields {
        Fields(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Refuses a post that says it comes from another site: by `Sec-Fetch-Site`
/// (anything but `same-origin`, or `none` for what the person did
/// themselves), or by an `Origin` naming another host. Under our
/// `Referrer-Policy: no-referrer` browsers send `Origin: null` even for our
/// own forms, so `null` passes only where `Sec-Fetch-Site` vouches for it;
/// a post that has neither header is left to the CSRF token.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    let fetch_site = text(header::HeaderName::from_static("sec-fetch-site"));
    let host = text(header::HOST);
    match (text(header::ORIGIN), fetch_site) {
        (_, Some(site)) if site != "same-origin" && site != "none" => false,
        (None, _) => true,
        (Some("null"), site) => site.is_some(),
        (Some(origin), _) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .zip(host)
            .is_some_and(|(o, h)| o.eq_ignore_ascii_case(h)),
    }
}

/// The answer to a post [`same_origin`] refuses.
pub(crate) fn foreign_post() -> Response {
    forbidden(
        "this form was posted from another site: Airlock accepts forms only from its own pages",
    )
}

/// Whether the browser reached this server over https (the `Origin` of its
/// post says, or the proxy in front says with `X-Forwarded-Proto`): only
/// then is the cookie marked `Secure`, or a browser on plain http (the demo,
/// the tests on loopback) would drop it.
pub(super) fn over_https(headers: &HeaderMap) -> bool {
    let says = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(prefix))
    };
    says("origin", "https://") || says("x-forwarded-proto", "https")
}

/// The session cookie's secret, if the request has one that can be a
/// session: an API token, or an identity provider's ID token (a config
/// token is never put in a cookie, so none is taken from one).
pub(super) fn session_secret(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
        .filter(|v| v.starts_with(TOKEN_PREFIX) || crate::oidc::Verifier::looks_like_jwt(v))
}

/// The value of the request's cookie `name`.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_pairs(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Puts `secret` in the request's session cookie in place of the one it
/// came with (a session renewed on the way in).
pub(super) fn replace_session(headers: &mut HeaderMap, secret: &str) {
    let mut pairs: Vec<String> = cookie_pairs(headers)
        .filter(|(n, _)| *n != COOKIE)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    pairs.push(format!("{COOKIE}={secret}"));
    if let Ok(v) = HeaderValue::from_str(&pairs.join("; ")) {
        headers.remove(header::COOKIE);
        headers.insert(header::COOKIE, v);
    }
}

/// Adds a `Set-Cookie`: HttpOnly always, `Secure` when the browser came
/// over https; `max_age` 0 deletes the cookie.
pub(super) fn set_cookie(
    response: &mut Response,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
) {
    let mut cookie =
        format!("{name}={value}; HttpOnly; SameSite={same_site}; Path={path}; Max-Age={max_age}");
    if over_https(headers) {
        cookie.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets the session cookie (SameSite=Strict: no other site's page can make
/// the browser send it).
pub(super) fn set_session(
    response: &mut Response,
    headers: &HeaderMap,
    secret: &str,
    max_age: u64,
) {
    set_cookie(response, headers, COOKIE, secret, "/", "Strict", max_age);
}

/// Where to go after signing in: a page of the UI, else the start page
/// (never another site, nor a path a browser would read as one).
pub(super) fn safe_next(raw: Option<&str>) -> String {
    match raw {
        Some(next)
            if next.starts_with("/ui/")
                && next.len() <= 1024
                && !next.contains("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// The session's CSRF token: HMAC-SHA256 of a fixed label keyed by the
/// session's secret (checked with ring's constant-time `verify`).
fn csrf_token(secret: &str) -> String {
    hex::encode(ring::hmac::sign(&csrf_key(secret), CSRF_LABEL).as_ref())
}

fn csrf_key(secret: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())
}

/// Signs in with `token` (anything the API takes as a bearer token): the
/// same authentication, then a new short-lived API token owned by that
/// person with their scopes (or the signing-in token's), whose secret
/// becomes the session cookie.
pub(crate) async fn sign_in(
    parts: &mut Parts,
    state: &AppState,
    token: &str,
    next: &str,
) -> Result<Response, String> {
    let user = authenticate(parts, state, token)
        .await
        .map_err(|_| "that token does not sign in: it is unknown, expired or revoked".to_owned())?;
    let now = state.engine.now();
    let mut lifetime = SESSION_LIFETIME.min(state.engine.token_max_lifetime());
    let scopes = match &user.token {
        Some(t) => {
            // A token cannot mint one that outlives it.
            if let Ok(Some(parent)) = state.engine.store().token(&t.id).await {
                lifetime = lifetime.min(now.until(parent.expires_at));
            }
            t.scopes.clone()
        }
        None => Scopes::new(Scope::ALL.into_iter().collect::<BTreeSet<_>>())
            .map_err(|e| e.to_string())?,
    };
    let ask = TokenAsk {
        // Names are unique among a person's live tokens: one per browser.
        name: format!("web session {}", hex::encode(rand::random::<[u8; 4]>())),
        owner: None,
        scopes,
        lifetime,
    };
    let created = state
        .engine
        .create_token(&user, ask)
        .await
        .map_err(|e: EngineError| ApiError::from(e).message)?;
    tracing::info!(user = %user.id, token = %created.token.id, "web session started");
    let mut response = Redirect::to(&safe_next(Some(next))).into_response();
    set_session(
        &mut response,
        &parts.headers,
        &created.secret,
        lifetime.as_secs(),
    );
    Ok(response)
}

/// Ends the session: an API token session's token is revoked, an identity
/// provider session's refresh token revoked at the provider, the cookies
/// cleared.
pub(crate) async fn sign_out(state: &AppState, headers: &HeaderMap, session: &Session) -> Response {
    if let Some(t) = &session.user.token {
        if let Err(e) = state.engine.revoke_token(&session.user, &t.id).await {
            tracing::warn!(user = %session.user.id, error = %e, "could not revoke a web session's token");
        }
    }
    let mut response = Redirect::to("/ui/login").into_response();
    super::idp::sign_out(state, headers, &mut response).await;
    signed_out(headers, response)
}

fn signed_out(headers: &HeaderMap, mut response: Response) -> Response {
    set_session(&mut response, headers, "", 0);
    set_cookie(
        &mut response,
        headers,
        super::idp::REFRESH_COOKIE,
        "",
        "/ui",
        "Strict",
        0,
    );
    response
}

/// To the sign-in page, and back to this page afterwards when it was one
/// to come back to (a page, not a form's post).
fn to_login(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|_| parts.method == axum::http::Method::GET)
        .map(|p| safe_next(Some(p)))
        .filter(|p| p != "/ui/");
    match here {
        Some(next) => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &next)
                .finish();
            Redirect::to(&format!("/ui/login?{query}")).into_response()
        }
        None => Redirect::to("/ui/login").into_response(),
    }
}

pub(crate) fn forbidden(message: &str) -> Response {
    error_response(StatusCode::FORBIDDEN, message)
}
