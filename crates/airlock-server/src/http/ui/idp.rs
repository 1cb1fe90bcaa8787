//! Signing in to the web UI through the organisation's identity provider.
//! The server runs the authorization-code flow with PKCE (RFC 7636) as the
//! public client `airlock login` signs in as (`server.oidc.client_id`), so a
//! person signs in to the browser exactly as to the CLI.
//!
//! The ID token itself is the session: it rides in the session cookie (the
//! same HttpOnly, SameSite=Strict cookie a token sign-in uses) and is
//! authenticated on every request like any bearer token, so the person's
//! groups and MFA come from the provider and nothing about them is stored
//! here — which also serves people the config and SCIM do not know. The
//! refresh token rides in a second cookie; [`renew`] trades it for a fresh
//! ID token shortly before the current one expires, and signing out
//! revokes it at the provider.

use airlock_core::Timestamp;
use axum::extract::{RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::session::{self, cookie, over_https, safe_next, set_cookie};
use super::{login_error, render, SignedInPage};
use crate::http::extract::authenticate;
use crate::http::AppState;
use crate::oidc::Verifier;
use crate::signin::{token_expiry, Authorization, Freshness, Provider, REFRESH_MARGIN};

/// Where the provider sends the browser back.
pub(super) const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// The sign-in in progress: `state`, PKCE verifier, nonce and the page to
/// return to. SameSite=Lax, not Strict: it must come back with the
/// provider's redirect, a navigation from another site.
const FLOW_COOKIE: &str = "airlock_signin";
/// How long a person may take at the provider's login page.
const FLOW_SECONDS: u64 = 600;
/// The provider's refresh token, sent only to the UI's own pages.
pub(super) const REFRESH_COOKIE: &str = "airlock_refresh";

/// Where signing in with the identity provider starts (coming back to
/// `next`), if this server offers it.
pub(super) fn start_link(state: &AppState, next: &str) -> Option<String> {
    let offered = state
        .oidc
        .as_ref()
        .is_some_and(|o| o.settings().client_id.is_some());
    offered.then(|| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &safe_next(Some(next)))
            .finish();
        format!("/ui/oidc/start?{query}")
    })
}

/// The provider's endpoints, read from its discovery document each time a
/// sign-in starts, ends, renews or is revoked (a few times a day per
/// person: no cache to go stale when the provider moves an endpoint).
async fn provider(state: &AppState) -> Result<Provider, String> {
    let info = state
        .oidc
        .as_ref()
        .and_then(|o| o.settings().sign_in_info())
        .ok_or_else(|| {
            "this server offers no sign-in with an identity provider (`server.oidc.client_id`)"
                .to_owned()
        })?;
    Provider::discover(info)
        .await
        .map_err(|e| format!("cannot reach the identity provider: {e}"))
}

/// This server's callback as the browser reaches it: the provider must
/// list it among the client's redirect URIs, which also makes a forged
/// `Host` useless.
fn redirect_uri(headers: &HeaderMap) -> Result<String, String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', '\\', '@', ' ']))
        .ok_or_else(|| "the request names no usable Host".to_owned())?;
    let scheme = if over_https(headers) { "https" } else { "http" };
    Ok(format!("{scheme}://{host}{CALLBACK_PATH}"))
}

/// `GET /ui/oidc/start?next=…`: off to the provider's login page.
pub(super) async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let next = safe_next(session::Fields::query(query.as_deref()).get("next"));
    let began = async {
        let provider = provider(&state).await?;
        let authorization = provider
            .authorize(&redirect_uri(&headers)?, &Freshness::default())
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(authorization)
    };
    let authorization = match began.await {
        Ok(a) => a,
        Err(message) => {
            return login_error(&state, StatusCode::SERVICE_UNAVAILABLE, message, &next)
        }
    };
    let flow = [
        authorization.state.as_str(),
        authorization.verifier.as_str(),
        authorization.nonce.as_str(),
        &URL_SAFE_NO_PAD.encode(next.as_bytes()),
    ]
    .join(".");
    let mut response = Redirect::to(&authorization.url).into_response();
    set_cookie(
        &mut response,
        &headers,
        FLOW_COOKIE,
        &flow,
        "/ui/oidc",
        "Lax",
        FLOW_SECONDS,
    );
    response
}

/// `GET /ui/oidc/callback?code=…&state=…`: the provider's answer.
pub(super) async fn callback(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let flow = cookie(&parts.headers, FLOW_COOKIE).and_then(|v| {
        let mut fields = v.split('.');
        let authorization = Authorization {
            url: String::new(),
            state: fields.next()?.to_owned(),
            verifier: fields.next()?.to_owned(),
            nonce: fields.next()?.to_owned(),
        };
        let next = URL_SAFE_NO_PAD
            .decode(fields.next()?)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())?;
        Some((authorization, safe_next(Some(&next))))
    });
    let Some((authorization, next)) = flow else {
        return login_error(
            &state,
            StatusCode::BAD_REQUEST,
            "this sign-in was not started here or took longer than ten minutes: sign in again"
                .to_owned(),
            "/ui/",
        );
    };
    let mut response = match finish(&state, &mut parts, &authorization).await {
        Ok((token, refresh)) => {
            let now = state.engine.now();
            let lifetime = match (&refresh, token_expiry(&token)) {
                (Some(_), _) => session::SESSION_LIFETIME.as_secs(),
                (None, Ok(exp)) => {
                    u64::try_from(exp.saturating_sub(now.unix_millis() / 1000)).unwrap_or(0)
                }
                (None, Err(_)) => 0,
            };
            // A page, not a redirect: a SameSite=Strict cookie is withheld
            // from every step of a navigation that began at another site
            // (the provider's), so the browser must take the next step from
            // one of ours.
            let mut page = render(StatusCode::OK, &SignedInPage { next });
            session::set_session(&mut page, &parts.headers, &token, lifetime);
            if let Some(refresh) = refresh {
                set_cookie(
                    &mut page,
                    &parts.headers,
                    REFRESH_COOKIE,
                    &refresh,
                    "/ui",
                    "Strict",
                    lifetime,
                );
            }
            page
        }
        Err((status, message)) => login_error(&state, status, message, &next),
    };
    set_cookie(
        &mut response,
        &parts.headers,
        FLOW_COOKIE,
        "",
        "/ui/oidc",
        "Lax",
        0,
    );
    response
}

/// Checks the redirect against the flow, redeems the code and
/// authenticates the ID token as the API would; the token and the refresh
/// token, or the page's status and message.
async fn finish(
    state: &AppState,
    parts: &mut Parts,
    authorization: &Authorization,
) -> Result<(String, Option<String>), (StatusCode, String)> {
    let params = session::Fields::query(parts.uri.query());
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_owned());
    if params.get("state") != Some(authorization.state.as_str()) {
        return Err(bad("the identity provider's answer does not belong to this sign-in (its state differs): sign in again"));
    }
    if let Some(error) = params.get("error") {
        let why = params
            .get("error_description")
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return Err((
            StatusCode::UNAUTHORIZED,
            if error == "access_denied" {
                "sign-in was denied at the identity provider".to_owned()
            } else {
                format!("the identity provider refused: {error}{why}")
            },
        ));
    }
    let code = params
        .get("code")
        .ok_or_else(|| bad("the identity provider's answer has no code"))?;
    let unavailable = |m: String| (StatusCode::SERVICE_UNAVAILABLE, m);
    let provider = provider(state).await.map_err(unavailable)?;
    let redirect = redirect_uri(&parts.headers).map_err(|m| bad(&m))?;
    let signed_in = provider
        .redeem(code, &redirect, authorization)
        .await
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    let user = authenticate(parts, state, &signed_in.token)
        .await
        .map_err(|_| {
            (
                StatusCode::UNAUTHORIZED,
                "the identity provider signed you in, but Airlock refuses its token: ask an administrator (the server's log says why)".to_owned(),
            )
        })?;
    tracing::info!(user = %user.id, "web session started with the identity provider");
    Ok((signed_in.token, signed_in.refresh_token))
}

/// Renews an identity-provider session whose ID token is about to expire,
/// before the page sees it: the request goes on with the fresh token and
/// the answer carries it back. A refused refresh clears the refresh cookie
/// and lets the page send the person to sign in.
pub(super) async fn renew(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let due = |token: &str| {
        token_expiry(token).map_or(true, |exp| {
            state.engine.now().plus(REFRESH_MARGIN)
                >= Timestamp::from_unix_millis(exp.saturating_mul(1000))
        })
    };
    let (Some(token), Some(refresh)) = (
        session::session_secret(headers).filter(|t| Verifier::looks_like_jwt(t) && due(t)),
        cookie(headers, REFRESH_COOKIE),
    ) else {
        return next.run(request).await;
    };
    let renewed = async {
        provider(&state)
            .await?
            .resume(token, Some(refresh))
            .map_err(|e| e.to_string())?
            .refresh()
            .await
            .map_err(|e| e.to_string())
    };
    match renewed.await {
        Ok(fresh) => {
            let original = request.headers().clone();
            session::replace_session(request.headers_mut(), &fresh.token);
            let mut response = next.run(request).await;
            let lifetime = session::SESSION_LIFETIME.as_secs();
            session::set_session(&mut response, &original, &fresh.token, lifetime);
            if let Some(refresh) = &fresh.refresh_token {
                set_cookie(
                    &mut response,
                    &original,
                    REFRESH_COOKIE,
                    refresh,
                    "/ui",
                    "Strict",
                    lifetime,
                );
            }
            response
        }
        Err(e) => {
            tracing::info!(error = %e, "a web session's refresh was refused: signing in again");
            let original = request.headers().clone();
            let mut response = next.run(request).await;
            set_cookie(
                &mut response,
                &original,
                REFRESH_COOKIE,
                "",
                "/ui",
                "Strict",
                0,
            );
            response
        }
    }
}

/// Ends an identity-provider session: revokes its refresh token at the
/// provider (where it can; a failure is logged, the cookies go anyway) and
/// clears the cookie.
pub(super) async fn sign_out(state: &AppState, headers: &HeaderMap, response: &mut Response) {
    if let (Some(token), Some(refresh)) = (
        session::session_secret(headers).filter(|t| Verifier::looks_like_jwt(t)),
        cookie(headers, REFRESH_COOKIE),
    ) {
        let revoked = async {
            provider(state)
                .await?
                .resume(token, Some(refresh))
                .map_err(|e| e.to_string())?
                .revoke()
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = revoked.await {
            tracing::warn!(error = %e, "could not revoke a web session's refresh token");
        }
    }
    set_cookie(response, headers, REFRESH_COOKIE, "", "/ui", "Strict", 0);
}
