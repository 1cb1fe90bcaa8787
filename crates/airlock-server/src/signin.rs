//! Signing the CLI in with the organisation's identity provider
//! (`airlock login`): the OAuth 2.0 device authorization grant (RFC 8628)
//! where the provider offers it, otherwise the authorization-code flow with
//! PKCE (RFC 7636) and a loopback redirect (RFC 8252); refreshing and
//! revoking; and the per-server token cache in the user's config directory,
//! written owner-only and atomically, refused when others can read it.
//!
//! The CLI prints and prompts; everything that talks to the provider or
//! touches the cache is here, with typed errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_connectors::keyfile;
use airlock_core::Timestamp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::OidcInfo;
use crate::oidc::trusted_url;

/// The grant type of a device code (RFC 8628 §3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How much sooner than its `exp` a cached token is refreshed, so it does
/// not expire on the way to the server.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(10);
/// The longest request head the loopback redirect reads.
const MAX_REDIRECT_BYTES: usize = 16 * 1024;
/// The most of a provider's answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("{0}")]
    Http(String),
    /// The provider refused, with its OAuth error code and description.
    #[error("the identity provider refused: {code}{}", description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        code: String,
        description: Option<String>,
    },
    #[error("the code expired before it was entered; run `airlock login` again")]
    Expired,
    #[error("sign-in was denied at the identity provider")]
    Denied,
    #[error("the redirect carried state `{0}`, not the one this sign-in sent: refusing it (another page or program may be trying to sign you in as someone else)")]
    StateMismatch(String),
    #[error("the ID token does not carry this sign-in's nonce: refusing it (it was issued for another sign-in)")]
    NonceMismatch,
    #[error("the identity provider's answer has no `{0}`")]
    Missing(&'static str),
    #[error("token cache: {0}")]
    Cache(String),
}

fn http_error(what: &str) -> impl Fn(reqwest::Error) -> SignInError + '_ {
    move |e| SignInError::Http(format!("{what}: {}", e.without_url()))
}

/// The endpoints of the provider's discovery document that signing in uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    authorization_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

/// What a fresh sign-in asks of the provider beyond the usual: RFC 9470's
/// step-up asks for a new login (`prompt=login`) no older than `max_age`
/// seconds, with one of `acr_values`.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    pub max_age: Option<u64>,
    pub acr_values: Vec<String>,
}

impl Freshness {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(age) = self.max_age {
            params.push(("prompt", "login".to_owned()));
            params.push(("max_age", age.to_string()));
        }
        if !self.acr_values.is_empty() {
            params.push(("acr_values", self.acr_values.join(" ")));
        }
        params
    }
}

/// The provider as `airlock login` sees it: its endpoints and the public
/// client to sign in as.
pub struct Provider {
    discovery: Discovery,
    info: OidcInfo,
    http: reqwest::Client,
}

/// What the token endpoint answered.
#[derive(Debug, Clone, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

impl TokenAnswer {
    /// The token the API takes (`kind`: `id_token` or `access_token`), and
    /// when it expires.
    fn bearer(&self, kind: &str) -> Result<(String, i64), SignInError> {
        let (token, name) = match kind {
            "access_token" => (&self.access_token, "access_token"),
            _ => (&self.id_token, "id_token"),
        };
        let token = token.clone().ok_or(SignInError::Missing(name))?;
        let expires_at = token_expiry(&token)?;
        Ok((token, expires_at))
    }
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Debug, Clone, Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// A device authorization in progress: what to show the user, and what to
/// poll with.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceCode {
    device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default = "five")]
    pub interval: u64,
}

/// RFC 8628 §3.2: clients poll every 5 seconds unless told otherwise.
fn five() -> u64 {
    5
}

impl Provider {
    /// Reads the provider's discovery document (issuer named by the server).
    pub async fn discover(info: OidcInfo) -> Result<Provider, SignInError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(http_error("cannot build an HTTP client"))?;
        let base = info.issuer.trim_end_matches('/');
        let url = trusted_url(&format!("{base}/.well-known/openid-configuration"))
            .map_err(SignInError::Http)?;
        let what = format!("GET `{url}`");
        let response = http.get(url).send().await.map_err(http_error(&what))?;
        if !response.status().is_success() {
            return Err(SignInError::Http(format!(
                "{what}: answered {}",
                response.status()
            )));
        }
        let discovery: Discovery = serde_json::from_slice(&read_capped(response, &what).await?)
            .map_err(|e| SignInError::Http(format!("the discovery document is not valid: {e}")))?;
        if discovery.issuer != info.issuer {
            return Err(SignInError::Http(format!(
                "the discovery document names issuer `{}`, not `{}`",
                discovery.issuer, info.issuer
            )));
        }
        for url in [
            Some(&discovery.token_endpoint),
            discovery.revocation_endpoint.as_ref(),
            discovery.authorization_endpoint.as_ref(),
            discovery.device_authorization_endpoint.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            trusted_url(url).map_err(SignInError::Http)?;
        }
        Ok(Provider {
            discovery,
            info,
            http,
        })
    }

    /// Whether the provider offers the device authorization grant.
    pub fn has_device_flow(&self) -> bool {
        self.discovery.device_authorization_endpoint.is_some()
    }

    /// Starts a device authorization (RFC 8628 §3.1).
    pub async fn start_device(&self, fresh: &Freshness) -> Result<DeviceCode, SignInError> {
        let url = self
            .discovery
            .device_authorization_endpoint
            .as_deref()
            .ok_or(SignInError::Missing("device_authorization_endpoint"))?;
        let mut form = vec![
            ("client_id", self.info.client_id.clone()),
            ("scope", self.info.scopes.join(" ")),
        ];
        form.extend(fresh.params());
        let answer = self.post(url, &form).await?;
        answer.map_err(refused)
    }

    /// Polls the token endpoint until the user has decided (RFC 8628 §3.5):
    /// `authorization_pending` waits, `slow_down` waits 5 seconds longer
    /// from then on, `expired_token` and `access_denied` end it.
    pub async fn finish_device(&self, code: &DeviceCode) -> Result<SignedIn, SignInError> {
        let mut interval = Duration::from_secs(code.interval.max(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
        loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() > deadline {
                return Err(SignInError::Expired);
            }
            let form = [
                ("grant_type", DEVICE_GRANT.to_owned()),
                ("device_code", code.device_code.clone()),
                ("client_id", self.info.client_id.clone()),
            ];
            match self
                .post::<TokenAnswer>(&self.discovery.token_endpoint, &form)
                .await?
            {
                Ok(tokens) => return self.signed_in(tokens),
                Err(e) => match e.error.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval += Duration::from_secs(5),
                    "expired_token" => return Err(SignInError::Expired),
                    "access_denied" => return Err(SignInError::Denied),
                    _ => return Err(refused(e)),
                },
            }
        }
    }

    /// Starts an authorization-code sign-in with PKCE: listens on a random
    /// loopback port for the one redirect (RFC 8252 §7.3).
    pub async fn start_browser(&self, fresh: &Freshness) -> Result<Loopback, SignInError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| SignInError::Http(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| SignInError::Http(format!("cannot listen on 127.0.0.1: {e}")))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let authorization = self.authorize(&redirect_uri, fresh)?;
        Ok(Loopback {
            listener,
            redirect_uri,
            authorization,
        })
    }

    /// Waits for the browser's redirect, checks its `state`, answers it,
    /// and trades the code (with the PKCE verifier) for tokens.
    pub async fn finish_browser(&self, loopback: Loopback) -> Result<SignedIn, SignInError> {
        let code = loopback.receive().await?;
        self.redeem(&code, &loopback.redirect_uri, &loopback.authorization)
            .await
    }

    /// Where to send the browser for an authorization-code sign-in with
    /// PKCE (RFC 7636, S256) that comes back to `redirect_uri`, with a
    /// fresh `state` and `nonce` to check on the way back.
    pub fn authorize(
        &self,
        redirect_uri: &str,
        fresh: &Freshness,
    ) -> Result<Authorization, SignInError> {
        let endpoint = self
            .discovery
            .authorization_endpoint
            .as_deref()
            .ok_or(SignInError::Missing("authorization_endpoint"))?;
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = reqwest::Url::parse(endpoint)
            .map_err(|e| SignInError::Http(format!("`{endpoint}` is not a URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.info.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.info.scopes.join(" "))
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in fresh.params() {
                query.append_pair(k, &v);
            }
        }
        Ok(Authorization {
            url: url.to_string(),
            state,
            verifier,
            nonce,
        })
    }

    /// Trades the code the redirect brought (with the PKCE verifier) for
    /// tokens, and checks the ID token answers this sign-in's `nonce`
    /// (the signature is the API's to check, as for every token).
    pub async fn redeem(
        &self,
        code: &str,
        redirect_uri: &str,
        authorization: &Authorization,
    ) -> Result<SignedIn, SignInError> {
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("client_id", self.info.client_id.clone()),
            ("code_verifier", authorization.verifier.clone()),
        ];
        let tokens = self
            .post::<TokenAnswer>(&self.discovery.token_endpoint, &form)
            .await?
            .map_err(refused)?;
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or(SignInError::Missing("id_token"))?;
        let nonce = token_claims(id_token)?
            .get("nonce")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        if nonce.as_deref() != Some(authorization.nonce.as_str()) {
            return Err(SignInError::NonceMismatch);
        }
        self.signed_in(tokens)
    }

    /// A session resumed from the tokens it holds (the web UI keeps them in
    /// its cookies), to refresh or revoke.
    pub fn resume(
        &self,
        token: String,
        refresh_token: Option<String>,
    ) -> Result<SignedIn, SignInError> {
        Ok(SignedIn {
            issuer: self.info.issuer.clone(),
            client_id: self.info.client_id.clone(),
            token_kind: self.info.token.clone(),
            expires_at: token_expiry(&token)?,
            token,
            refresh_token,
            token_endpoint: self.discovery.token_endpoint.clone(),
            revocation_endpoint: self.discovery.revocation_endpoint.clone(),
        })
    }

    /// The session fresh tokens make.
    fn signed_in(&self, tokens: TokenAnswer) -> Result<SignedIn, SignInError> {
        let (token, expires_at) = tokens.bearer(&self.info.token)?;
        Ok(SignedIn {
            issuer: self.info.issuer.clone(),
            client_id: self.info.client_id.clone(),
            token_kind: self.info.token.clone(),
            token,
            expires_at,
            refresh_token: tokens.refresh_token,
            token_endpoint: self.discovery.token_endpoint.clone(),
            revocation_endpoint: self.discovery.revocation_endpoint.clone(),
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        form: &[(&str, String)],
    ) -> Result<Result<T, OAuthError>, SignInError> {
        post_form(&self.http, url, form).await
    }
}

/// POSTs a form; a 2xx answer is `Ok(T)`, an OAuth error answer `Err`.
async fn post_form<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, String)],
) -> Result<Result<T, OAuthError>, SignInError> {
    let what = format!("POST `{url}`");
    let response = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(http_error(&what))?;
    let status = response.status();
    let body = read_capped(response, &what).await?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map(Ok)
            .map_err(|e| SignInError::Http(format!("{what}: unexpected answer: {e}")));
    }
    match serde_json::from_slice::<OAuthError>(&body) {
        Ok(e) => Ok(Err(e)),
        Err(_) => Err(SignInError::Http(format!("{what}: answered {status}"))),
    }
}

async fn read_capped(mut response: reqwest::Response, what: &str) -> Result<Vec<u8>, SignInError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http_error(what))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(SignInError::Http(format!(
                "{what}: answer longer than {MAX_ANSWER_BYTES} bytes"
            )));
        }
    }
    Ok(body)
}

fn refused(e: OAuthError) -> SignInError {
    SignInError::Refused {
        code: e.error,
        description: e.error_description,
    }
}

/// A JWT's claims, unverified: only for deciding when to refresh and for
/// matching the nonce; the signature is the API's to check.
pub(crate) fn token_claims(
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, SignInError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| SignInError::Http("the token is not a JWT".to_owned()))?;
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| SignInError::Http("the token's payload is not a JSON object".to_owned()))
}

/// When a JWT expires (Unix seconds), from its `exp`.
pub(crate) fn token_expiry(token: &str) -> Result<i64, SignInError> {
    token_claims(token)?
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or(SignInError::Missing("exp"))
}

/// One authorization-code sign-in in progress: the URL to send the browser
/// to, and what must come back (kept by whoever waits for the redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub url: String,
    /// The redirect must carry it back unchanged.
    pub state: String,
    /// The PKCE verifier, sent with the code.
    pub verifier: String,
    /// The ID token must carry it back unchanged.
    pub nonce: String,
}

/// The loopback redirect of one authorization-code sign-in.
pub struct Loopback {
    listener: tokio::net::TcpListener,
    redirect_uri: String,
    authorization: Authorization,
}

impl Loopback {
    /// The URL to open in the browser.
    pub fn url(&self) -> &str {
        &self.authorization.url
    }

    /// Serves the one redirect to `/callback` (anything else, such as a
    /// browser's favicon request, is answered 404) and returns its code.
    async fn receive(&self) -> Result<String, SignInError> {
        loop {
            let (mut socket, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| SignInError::Http(format!("loopback redirect: {e}")))?;
            let Some(target) = read_request_target(&mut socket).await else {
                continue;
            };
            let Some(query) = target.strip_prefix("/callback?") else {
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            };
            let params: std::collections::HashMap<String, String> =
                form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
            let outcome = if params.get("state") != Some(&self.authorization.state) {
                Err(SignInError::StateMismatch(
                    params.get("state").cloned().unwrap_or_default(),
                ))
            } else if let Some(error) = params.get("error") {
                Err(if error == "access_denied" {
                    SignInError::Denied
                } else {
                    SignInError::Refused {
                        code: error.clone(),
                        description: params.get("error_description").cloned(),
                    }
                })
            } else {
                params
                    .get("code")
                    .cloned()
                    .ok_or(SignInError::Missing("code"))
            };
            let page = match &outcome {
                Ok(_) => "Signed in to Airlock. You can close this window.",
                Err(_) => "Airlock sign-in failed: see the terminal.",
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
            return outcome;
        }
    }
}

/// The target of an HTTP/1 `GET`, read from the request head.
async fn read_request_target(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 || head.len() + n > MAX_REDIRECT_BYTES {
            return None;
        }
        head.extend_from_slice(buf.get(..n)?);
    }
    let line = head.split(|b| *b == b'\r').next()?;
    let mut words = std::str::from_utf8(line).ok()?.split(' ');
    (words.next()? == "GET").then_some(())?;
    words.next().map(str::to_owned)
}

/// A signed-in session as cached per server: the token the API takes, when
/// it expires, and how to refresh and revoke it without asking the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignedIn {
    pub issuer: String,
    pub client_id: String,
    /// `id_token` or `access_token`: which one `token` is.
    pub token_kind: String,
    pub token: String,
    /// Unix seconds, from the token's `exp`.
    pub expires_at: i64,
    pub refresh_token: Option<String>,
    pub token_endpoint: String,
    pub revocation_endpoint: Option<String>,
}

impl SignedIn {
    /// Whether the token is expired, or about to be, at `now`.
    pub fn stale(&self, now: Timestamp) -> bool {
        now.plus(REFRESH_MARGIN).unix_millis() >= self.expires_at.saturating_mul(1000)
    }

    /// Fresh tokens for the refresh token (RFC 6749 §6).
    pub async fn refresh(&self) -> Result<SignedIn, SignInError> {
        let refresh_token = self
            .refresh_token
            .as_deref()
            .ok_or(SignInError::Missing("refresh_token"))?;
        let http = plain_client()?;
        let form = [
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.to_owned()),
            ("client_id", self.client_id.clone()),
        ];
        let tokens: TokenAnswer = post_form(&http, &self.token_endpoint, &form)
            .await?
            .map_err(refused)?;
        let (token, expires_at) = tokens.bearer(&self.token_kind)?;
        Ok(SignedIn {
            expires_at,
            token,
            // Kept when the provider does not rotate it.
            refresh_token: tokens.refresh_token.or(Some(refresh_token.to_owned())),
            ..self.clone()
        })
    }

    /// Revokes the refresh token at the provider (RFC 7009), if it has a
    /// revocation endpoint; `false` when there was nothing to revoke.
    pub async fn revoke(&self) -> Result<bool, SignInError> {
        let (Some(url), Some(token)) = (&self.revocation_endpoint, &self.refresh_token) else {
            return Ok(false);
        };
        let http = plain_client()?;
        let what = format!("POST `{url}`");
        let response = http
            .post(url)
            .form(&[
                ("token", token.as_str()),
                ("token_type_hint", "refresh_token"),
                ("client_id", self.client_id.as_str()),
            ])
            .send()
            .await
            .map_err(http_error(&what))?;
        if !response.status().is_success() {
            return Err(SignInError::Http(format!(
                "{what}: answered {}",
                response.status()
            )));
        }
        Ok(true)
    }
}

fn plain_client() -> Result<reqwest::Client, SignInError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(http_error("cannot build an HTTP client"))
}

/// Where tokens are cached: `$XDG_CONFIG_HOME/airlock`, or
/// `~/.config/airlock`.
pub fn cache_dir() -> Result<PathBuf, SignInError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".config"))
            .ok_or_else(|| {
                SignInError::Cache("neither XDG_CONFIG_HOME nor HOME is set".to_owned())
            })?,
    };
    Ok(base.join("airlock"))
}

/// The cache file of one server: one per server URL (its trailing slash
/// aside), named by a hash so any URL makes a safe file name.
pub fn cache_file(dir: &Path, server_url: &str) -> PathBuf {
    let key = Sha256::digest(server_url.trim_end_matches('/').as_bytes());
    let hex = hex::encode(key);
    dir.join(format!("token-{}.json", hex.get(..16).unwrap_or(&hex)))
}

/// One server's cached sign-in, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    server: String,
    #[serde(flatten)]
    session: SignedIn,
}

/// Reads the cached sign-in for `server_url`; `None` when there is none.
/// A file other users can read is refused, as ssh refuses such keys.
pub fn load(path: &Path, server_url: &str) -> Result<Option<SignedIn>, SignInError> {
    let cache = |e: String| SignInError::Cache(e);
    if !keyfile::exists(path).map_err(|e| cache(e.to_string()))? {
        return Ok(None);
    }
    let bytes = keyfile::read_private(path).map_err(|e| cache(e.to_string()))?;
    let entry: CacheEntry = serde_json::from_slice(&bytes)
        .map_err(|e| cache(format!("`{}` is not a token cache: {e}", path.display())))?;
    if entry.server.trim_end_matches('/') != server_url.trim_end_matches('/') {
        return Err(cache(format!(
            "`{}` holds a sign-in for `{}`, not `{server_url}`",
            path.display(),
            entry.server
        )));
    }
    Ok(Some(entry.session))
}

/// Writes the sign-in for `server_url`: to a new owner-only file beside
/// the cache (directories created 0700), synced, then renamed over it, so
/// a reader sees the old or the new entry, never half of one.
pub fn store(path: &Path, server_url: &str, session: &SignedIn) -> Result<(), SignInError> {
    let cache = |e: String| SignInError::Cache(e);
    let entry = CacheEntry {
        server: server_url.trim_end_matches('/').to_owned(),
        session: session.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&entry).map_err(|e| cache(e.to_string()))?;
    let dir = keyfile::parent_dir(path);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| cache(format!("cannot create `{}`: {e}", dir.display())))?;
    }
    let tmp = keyfile::sibling(path, &format!(".tmp-{}", std::process::id()));
    keyfile::write_new_file(&tmp, &bytes, 0o600)
        .map_err(|e| cache(format!("cannot write `{}`: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cache(format!("cannot replace `{}`: {e}", path.display()))
    })
}

/// Forgets the sign-in; `false` when there was none.
pub fn forget(path: &Path) -> Result<bool, SignInError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SignInError::Cache(format!(
            "cannot remove `{}`: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    fn session(token: &str) -> SignedIn {
        SignedIn {
            issuer: "http://127.0.0.1:1".to_owned(),
            client_id: "airlock-cli".to_owned(),
            token_kind: "id_token".to_owned(),
            token: token.to_owned(),
            expires_at: 1_000,
            refresh_token: Some("r".to_owned()),
            token_endpoint: "http://127.0.0.1:1/token".to_owned(),
            revocation_endpoint: None,
        }
    }

    #[test]
    fn the_cache_is_per_server_owner_only_replaced_whole_and_refused_once_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("airlock");
        let a = cache_file(&root, "http://a.test:8080/");
        assert_eq!(a, cache_file(&root, "http://a.test:8080"));
        let b = cache_file(&root, "http://b.test:8080");
        assert_ne!(a, b);
        assert!(load(&a, "http://a.test:8080").unwrap().is_none());

        store(&a, "http://a.test:8080/", &session("one")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a), 0o600);
        assert_eq!(mode(&root), 0o700);
        store(&a, "http://a.test:8080", &session("two")).unwrap();
        assert_eq!(
            load(&a, "http://a.test:8080").unwrap(),
            Some(session("two"))
        );
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);

        // Another server's entry under this name is not used.
        let err = load(&a, "http://b.test:8080").unwrap_err().to_string();
        assert!(
            err.contains("holds a sign-in for `http://a.test:8080`"),
            "{err}"
        );

        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&a, "http://a.test:8080").unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );

        assert!(forget(&a).unwrap());
        assert!(!forget(&a).unwrap());
    }

    #[test]
    fn a_token_is_stale_from_ten_seconds_before_it_expires() {
        let s = session("t");
        assert!(!s.stale(Timestamp::from_unix_millis(989_999)));
        assert!(s.stale(Timestamp::from_unix_millis(990_000)));
        assert!(s.stale(Timestamp::from_unix_millis(2_000_000)));
    }

    /// What the scripted token endpoint was sent: when (since the start),
    /// and the form.
    type Calls = Arc<std::sync::Mutex<Vec<(Duration, String)>>>;

    /// A provider whose token endpoint answers with `script`, in order,
    /// recording each call.
    async fn scripted(script: Vec<serde_json::Value>) -> (Provider, Calls) {
        let (provider, calls, _) = scripted_queue(script).await;
        (provider, calls)
    }

    /// The token endpoint's answers still to give, for a test that writes
    /// one only once it knows what it must say (the nonce of a sign-in).
    type Answers = Arc<std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>>;

    async fn scripted_queue(script: Vec<serde_json::Value>) -> (Provider, Calls, Answers) {
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let polls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = tokio::time::Instant::now();
        let answers: Answers = Arc::new(std::sync::Mutex::new(script.into()));
        let queue = Arc::clone(&answers);
        let discovery = serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "device_authorization_endpoint": format!("{issuer}/device/auth"),
            "authorization_endpoint": format!("{issuer}/auth"),
        });
        let recorded = Arc::clone(&polls);
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/device/auth",
                post(|| async {
                    axum::Json(serde_json::json!({
                        "device_code": "dc", "user_code": "ABCD-EFGH",
                        "verification_uri": "http://127.0.0.1/device",
                        "expires_in": 60, "interval": 1,
                    }))
                }),
            )
            .route(
                "/token",
                post(move |form: String| async move {
                    recorded.lock().unwrap().push((started.elapsed(), form));
                    let answer = answers.lock().unwrap().pop_front().unwrap();
                    let status = if answer.get("error").is_some() {
                        axum::http::StatusCode::BAD_REQUEST
                    } else {
                        axum::http::StatusCode::OK
                    };
                    (status, axum::Json(answer))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let info = OidcInfo {
            issuer,
            client_id: "airlock-cli".to_owned(),
            scopes: vec!["openid".to_owned()],
            token: "id_token".to_owned(),
            mfa_acr_values: Vec::new(),
        };
        (Provider::discover(info).await.unwrap(), polls, queue)
    }

    fn error(code: &str) -> serde_json::Value {
        serde_json::json!({ "error": code })
    }

    #[tokio::test]
    async fn device_polling_waits_while_pending_slows_down_when_told_and_stops_on_a_verdict() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp": 2000000000}"#);
        let done = serde_json::json!({
            "id_token": format!("h.{payload}.s"), "refresh_token": "r", "token_type": "Bearer",
        });
        let (provider, polls) = scripted(vec![
            error("authorization_pending"),
            error("slow_down"),
            done,
        ])
        .await;
        assert!(provider.has_device_flow());
        let code = provider.start_device(&Freshness::default()).await.unwrap();
        assert_eq!(code.user_code, "ABCD-EFGH");
        let session = provider.finish_device(&code).await.unwrap();
        assert_eq!(session.expires_at, 2_000_000_000);
        assert_eq!(session.refresh_token.as_deref(), Some("r"));
        let polls: Vec<Duration> = polls.lock().unwrap().iter().map(|c| c.0).collect();
        let [first, second, third] = polls.as_slice() else {
            panic!("{polls:?}");
        };
        // Every `interval` (1s), then 5 seconds more after `slow_down`.
        assert!(*first >= Duration::from_secs(1), "{polls:?}");
        assert!(*second - *first >= Duration::from_secs(1), "{polls:?}");
        assert!(*third - *second >= Duration::from_secs(6), "{polls:?}");

        for (answer, expected) in [
            ("access_denied", "sign-in was denied"),
            ("expired_token", "the code expired"),
            ("invalid_client", "refused: invalid_client"),
        ] {
            let (provider, _) = scripted(vec![error(answer)]).await;
            let code = provider.start_device(&Freshness::default()).await.unwrap();
            let err = provider.finish_device(&code).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{answer}: {err}");
        }
    }

    /// What the loopback redirect answers a browser's GET of `target`.
    async fn visit(redirect_uri: &str, target: &str) -> (u16, String) {
        let base = redirect_uri.trim_end_matches("/callback");
        let response = reqwest::get(format!("{base}{target}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn the_loopback_redirect_checks_state_and_the_code_goes_with_the_pkce_verifier() {
        let (provider, calls, answers) = scripted_queue(Vec::new()).await;
        // The token endpoint answers with an ID token carrying `nonce`.
        let answer = |nonce: &str| {
            let claims = serde_json::json!({"exp": 2_000_000_000, "nonce": nonce});
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            serde_json::json!({"id_token": format!("h.{payload}.s"), "token_type": "Bearer"})
        };
        let param = |url: &str, name: &str| {
            reqwest::Url::parse(url)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };

        // A redirect carrying another state is refused, whatever its code.
        let loopback = provider.start_browser(&Freshness::default()).await.unwrap();
        let redirect_uri = param(loopback.url(), "redirect_uri");
        assert!(
            redirect_uri.starts_with("http://127.0.0.1:"),
            "{redirect_uri}"
        );
        let visitor = tokio::spawn({
            let redirect_uri = redirect_uri.clone();
            async move {
                // Anything but the callback (a favicon) is not it.
                assert_eq!(visit(&redirect_uri, "/favicon.ico").await.0, 404);
                visit(&redirect_uri, "/callback?code=stolen&state=forged").await
            }
        });
        let err = provider.finish_browser(loopback).await.unwrap_err();
        assert!(
            matches!(&err, SignInError::StateMismatch(s) if s == "forged"),
            "{err}"
        );
        assert!(visitor.await.unwrap().1.contains("failed"));
        assert!(calls.lock().unwrap().is_empty(), "no code was traded");

        // The right state: the code is traded with the verifier whose S256
        // hash is the challenge the authorization URL carried.
        let loopback = provider.start_browser(&Freshness::default()).await.unwrap();
        let (url, state) = (loopback.url().to_owned(), param(loopback.url(), "state"));
        assert_eq!(param(&url, "code_challenge_method"), "S256");
        answers
            .lock()
            .unwrap()
            .push_back(answer(&param(&url, "nonce")));
        let redirect_uri = param(&url, "redirect_uri");
        let visitor = tokio::spawn(async move {
            visit(&redirect_uri, &format!("/callback?code=c0de&state={state}")).await
        });
        let session = provider.finish_browser(loopback).await.unwrap();
        assert_eq!(session.expires_at, 2_000_000_000);
        assert!(visitor.await.unwrap().1.contains("Signed in"));
        let form = calls.lock().unwrap()[0].1.clone();
        let sent: std::collections::HashMap<String, String> =
            form_urlencoded::parse(form.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(sent["grant_type"], "authorization_code");
        assert_eq!(sent["code"], "c0de");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(Sha256::digest(sent["code_verifier"].as_bytes())),
            param(&url, "code_challenge")
        );

        // An ID token minted for another sign-in (another nonce) is refused.
        let loopback = provider.start_browser(&Freshness::default()).await.unwrap();
        let (url, state) = (loopback.url().to_owned(), param(loopback.url(), "state"));
        answers.lock().unwrap().push_back(answer("someone-elses"));
        let redirect_uri = param(&url, "redirect_uri");
        let visitor = tokio::spawn(async move {
            visit(&redirect_uri, &format!("/callback?code=c0de&state={state}")).await
        });
        let err = provider.finish_browser(loopback).await.unwrap_err();
        assert!(matches!(err, SignInError::NonceMismatch), "{err}");
        visitor.await.unwrap();
    }

    #[test]
    fn a_step_up_asks_for_a_fresh_login_no_older_than_max_age() {
        let fresh = Freshness {
            max_age: Some(300),
            acr_values: vec!["urn:a".to_owned(), "urn:b".to_owned()],
        };
        assert_eq!(
            fresh.params(),
            [
                ("prompt", "login".to_owned()),
                ("max_age", "300".to_owned()),
                ("acr_values", "urn:a urn:b".to_owned())
            ]
        );
        assert!(Freshness::default().params().is_empty());
    }
}
