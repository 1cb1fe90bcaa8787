//! Sign-in with the organisation's identity provider: the API accepts the
//! provider's signed JWTs (access or ID tokens), checked against the keys it
//! publishes, so people and groups come from the provider, not the config.
//!
//! The checks are written out here rather than taken from a JWT library so
//! each refusal says exactly why (the 401 body and `WWW-Authenticate`), and
//! so only public-key algorithms can ever verify: `none` and every HMAC
//! algorithm are refused before a key is looked at, which closes the
//! "HS256 signed with the RSA public key" confusion. Signatures are checked
//! by `ring`, already compiled for TLS.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::catalog::{Catalog, Role, User};
use airlock_core::{GroupName, Timestamp, UserId};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// What the `[server.oidc]` table configures.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The provider's issuer URL, compared exactly with each token's `iss`.
    pub issuer: String,
    /// A token's `aud` must contain one of these (the API's audience, and
    /// the client id for ID tokens when one is configured).
    pub audiences: Vec<String>,
    /// The claim holding the Airlock user id (default `preferred_username`).
    pub username_claim: String,
    /// The claim holding the list of group names (default `groups`).
    pub groups_claim: String,
    /// Members of these provider groups are Airlock admins.
    pub admin_groups: BTreeSet<GroupName>,
    /// Members of these provider groups are Airlock auditors.
    pub auditor_groups: BTreeSet<GroupName>,
    /// How far `exp`, `nbf` and `iat` may be off (clocks drift).
    pub clock_skew: Duration,
    /// An unknown key id fetches the provider's keys again at most this
    /// often, so forged key ids cannot make Airlock hammer the provider.
    pub refetch_after: Duration,
    /// The client `airlock login` signs in as (a public client: device
    /// flow, or authorization code with PKCE and a loopback redirect).
    pub client_id: Option<String>,
    /// The scopes `airlock login` asks for.
    pub scopes: Vec<String>,
    /// `acr` values that count as multi-factor authentication, besides an
    /// `amr` naming one of [`MFA_METHODS`].
    pub mfa_acr_values: Vec<String>,
}

impl OidcSettings {
    /// How people sign in interactively (`airlock login`, the web UI): the
    /// configured public client; `None` without `client_id`.
    pub fn sign_in_info(&self) -> Option<crate::api::OidcInfo> {
        Some(crate::api::OidcInfo {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone()?,
            scopes: self.scopes.clone(),
            // Its audience is the client id, which the API accepts.
            token: "id_token".to_owned(),
            mfa_acr_values: self.mfa_acr_values.clone(),
        })
    }
}

/// What `airlock login` asks for unless `server.oidc.scopes` says:
/// the ID token with the user's name (and groups, at most providers),
/// and a refresh token.
pub const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "offline_access"];

/// `amr` values (RFC 8176) that show a second factor was used.
pub const MFA_METHODS: &[&str] = &["mfa", "otp", "hwk", "sc", "fido"];

/// Who a verified token stands for, and when they last completed MFA
/// (`auth_time`, when `amr` or `acr` shows it was multi-factor).
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: User,
    pub mfa_at: Option<Timestamp>,
}

/// The longest token looked at; a real one is a few kilobytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The most of a token's own text an error message repeats.
const MAX_ECHO_CHARS: usize = 80;

/// Why a token was refused. The message is safe to return to the caller:
/// it names the check that failed and what the token said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm `{0}` refused: tokens must carry the provider's public-key signature")]
    AlgorithmRefused(String),
    #[error(
        "algorithm `{0}` is not supported (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA are)"
    )]
    UnsupportedAlgorithm(String),
    #[error("unknown key id `{0}`: the provider does not publish it")]
    UnknownKey(String),
    #[error("the token has no key id (`kid`) and the provider publishes several keys for `{0}`")]
    NoKeyId(String),
    #[error("key `{kid}` cannot verify `{alg}` signatures")]
    KeyMismatch { kid: String, alg: String },
    #[error("bad signature")]
    BadSignature,
    #[error("issuer `{0}` not trusted")]
    WrongIssuer(String),
    #[error("audience `{0}` not accepted")]
    WrongAudience(String),
    #[error("token expired at {0}")]
    Expired(String),
    #[error("token not valid before {0}")]
    NotYetValid(String),
    #[error("token issued in the future ({0})")]
    IssuedInFuture(String),
    #[error("claim `{claim}` {message}")]
    BadClaim { claim: String, message: String },
    #[error("the identity provider's keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

impl TokenError {
    /// Whether the provider, not the token, is at fault (answered 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TokenError::KeysUnavailable(_))
    }
}

/// Why the provider's keys could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// Where the provider's key set (a JWKS document) comes from: HTTP in the
/// server, a fixed document in tests.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The provider's current JWKS as JSON text.
    async fn fetch(&self) -> Result<String, FetchError>;
}

/// A public key the provider publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    /// The one algorithm the key may be used with, when the JWK says.
    alg: Option<String>,
    key: PublicKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    fn parse(raw: &str) -> Result<Alg, TokenError> {
        Ok(match raw {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            _ if raw.eq_ignore_ascii_case("none") || raw.to_ascii_uppercase().starts_with("HS") => {
                return Err(TokenError::AlgorithmRefused(echo(raw)))
            }
            _ => return Err(TokenError::UnsupportedAlgorithm(echo(raw))),
        })
    }

    fn fits(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512,
                PublicKey::Rsa { .. }
            ) | (Alg::Es256, PublicKey::P256(_))
                | (Alg::Es384, PublicKey::P384(_))
                | (Alg::EdDsa, PublicKey::Ed25519(_))
        )
    }

    fn verify(self, key: &PublicKey, message: &[u8], sig: &[u8]) -> Result<(), TokenError> {
        let rsa = |params: &'static signature::RsaParameters, n: &[u8], e: &[u8]| {
            RsaPublicKeyComponents { n, e }.verify(params, message, sig)
        };
        let point = |params: &'static dyn signature::VerificationAlgorithm, k: &[u8]| {
            UnparsedPublicKey::new(params, k).verify(message, sig)
        };
        let checked = match (self, key) {
            (Alg::Rs256, PublicKey::Rsa { n, e }) => {
                rsa(&signature::RSA_PKCS1_2048_8192_SHA256, n, e)
            }
            (Alg::Rs384, PublicKey::Rsa { n, e }) => {
                rsa(&signature::RSA_PKCS1_2048_8192_SHA384, n, e)
            }
            (Alg::Rs512, PublicKey::Rsa { n, e }) => {
                rsa(&signature::RSA_PKCS1_2048_8192_SHA512, n, e)
            }
            (Alg::Ps256, PublicKey::Rsa { n, e }) => {
                rsa(&signature::RSA_PSS_2048_8192_SHA256, n, e)
            }
            (Alg::Ps384, PublicKey::Rsa { n, e }) => {
                rsa(&signature::RSA_PSS_2048_8192_SHA384, n, e)
            }
            (Alg::Ps512, PublicKey::Rsa { n, e }) => {
                rsa(&signature::RSA_PSS_2048_8192_SHA512, n, e)
            }
            (Alg::Es256, PublicKey::P256(k)) => point(&signature::ECDSA_P256_SHA256_FIXED, k),
            (Alg::Es384, PublicKey::P384(k)) => point(&signature::ECDSA_P384_SHA384_FIXED, k),
            (Alg::EdDsa, PublicKey::Ed25519(k)) => point(&signature::ED25519, k),
            _ => return Err(TokenError::BadSignature),
        };
        checked.map_err(|_| TokenError::BadSignature)
    }
}

/// A token's text repeated in a message: bounded, and without anything
/// that could break the `WWW-Authenticate` header or a terminal.
fn echo(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .take(MAX_ECHO_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '`') || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if raw.chars().count() > MAX_ECHO_CHARS {
        out.push('…');
    }
    out
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("the {what} is not base64url")))
}

fn json_object(part: &str, what: &str) -> Result<Map<String, Value>, TokenError> {
    serde_json::from_slice(&b64(part, what)?)
        .map_err(|_| TokenError::Malformed(format!("the {what} is not a JSON object")))
}

/// Parses a JWKS document; keys Airlock cannot use (other types, curves,
/// encryption keys, broken fields) are skipped with a log line, so one
/// exotic key does not hide the others.
fn parse_jwks(text: &str) -> Result<Vec<Jwk>, FetchError> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Map<String, Value>>,
    }
    let set: Set = serde_json::from_str(text)
        .map_err(|e| FetchError(format!("the key set is not a JWKS document: {e}")))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|k| match parse_jwk(k) {
            Ok(jwk) => Some(jwk),
            Err(why) => {
                tracing::info!(kid = ?k.get("kid"), %why, "skipping a key of the identity provider");
                None
            }
        })
        .collect())
}

fn parse_jwk(k: &Map<String, Value>) -> Result<Jwk, String> {
    let text = |name: &str| k.get(name).and_then(Value::as_str);
    let bytes = |name: &str| {
        text(name)
            .ok_or_else(|| format!("no `{name}`"))
            .and_then(|v| {
                URL_SAFE_NO_PAD
                    .decode(v)
                    .map_err(|_| format!("`{name}` is not base64url"))
            })
    };
    if text("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key".to_owned());
    }
    let fixed = |name: &str, len: usize| {
        bytes(name).and_then(|b| {
            if b.len() == len {
                Ok(b)
            } else {
                Err(format!("`{name}` is not {len} bytes"))
            }
        })
    };
    let point = |len: usize| -> Result<Vec<u8>, String> {
        let mut p = vec![4u8];
        p.extend(fixed("x", len)?);
        p.extend(fixed("y", len)?);
        Ok(p)
    };
    let key = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => PublicKey::Rsa {
            n: bytes("n")?,
            e: bytes("e")?,
        },
        (Some("EC"), Some("P-256")) => PublicKey::P256(point(32)?),
        (Some("EC"), Some("P-384")) => PublicKey::P384(point(48)?),
        (Some("OKP"), Some("Ed25519")) => PublicKey::Ed25519(fixed("x", 32)?),
        (kty, crv) => return Err(format!("unsupported key type {kty:?} / curve {crv:?}")),
    };
    Ok(Jwk {
        kid: text("kid").map(str::to_owned),
        alg: text("alg").map(str::to_owned),
        key,
    })
}

/// The keys last fetched, and when a fetch was last tried.
#[derive(Default)]
struct KeyCache {
    keys: Vec<Jwk>,
    tried_at: Option<Timestamp>,
}

/// Checks tokens against the provider's keys and maps them to users.
pub struct Verifier {
    settings: OidcSettings,
    source: Arc<dyn KeySource>,
    cache: std::sync::Mutex<KeyCache>,
    /// Held while fetching, so concurrent unknown key ids fetch once.
    fetch_turn: tokio::sync::Mutex<()>,
}

impl Verifier {
    pub fn new(settings: OidcSettings, source: Arc<dyn KeySource>) -> Self {
        Verifier {
            settings,
            source,
            cache: std::sync::Mutex::new(KeyCache::default()),
            fetch_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The key cache; never held across an await. Nothing panics while it
    /// is held, but a poisoned lock would still hold consistent keys.
    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a bearer token is shaped like a JWT (three dot-separated
    /// parts), as opposed to one of the config's static tokens.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The user a token stands for, or why it is refused. A user the config
    /// also lists keeps its config roles; groups come from the token only.
    pub async fn authenticate(
        &self,
        token: &str,
        now: Timestamp,
        catalog: &Catalog,
    ) -> Result<User, TokenError> {
        self.sign_in(token, now, catalog).await.map(|i| i.user)
    }

    /// [`Verifier::authenticate`], with the MFA facts the token carries.
    pub async fn sign_in(
        &self,
        token: &str,
        now: Timestamp,
        catalog: &Catalog,
    ) -> Result<Identity, TokenError> {
        let claims = self.verify(token, now).await?;
        let mut user = self.user_of(&claims)?;
        if let Some(known) = catalog.user(&user.id) {
            user.roles.extend(known.roles.iter().copied());
        }
        let mfa_at = self.mfa_at(&claims)?;
        Ok(Identity { user, mfa_at })
    }

    /// The settings this verifier checks tokens with.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// When the caller last completed MFA: the token's `auth_time`, if its
    /// `amr` names a second factor or its `acr` is one of
    /// `server.oidc.mfa_acr_values`; `None` otherwise.
    fn mfa_at(&self, claims: &Map<String, Value>) -> Result<Option<Timestamp>, TokenError> {
        let amr_mfa = match claims.get("amr") {
            Some(Value::Array(methods)) => methods
                .iter()
                .filter_map(Value::as_str)
                .any(|m| MFA_METHODS.contains(&m)),
            _ => false,
        };
        let acr_mfa = claims
            .get("acr")
            .and_then(Value::as_str)
            .is_some_and(|acr| self.settings.mfa_acr_values.iter().any(|v| v == acr));
        if !(amr_mfa || acr_mfa) {
            return Ok(None);
        }
        time_claim(claims, "auth_time")
    }

    /// Checks the signature, issuer, audience and validity times; returns
    /// the claims.
    async fn verify(&self, token: &str, now: Timestamp) -> Result<Map<String, Value>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, sig_b64] = parts.as_slice() else {
            return Err(TokenError::Malformed(
                "a JWT has three dot-separated parts".to_owned(),
            ));
        };
        let header = json_object(header_b64, "header")?;
        let alg_raw = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Malformed("the header has no `alg`".to_owned()))?;
        let alg = Alg::parse(alg_raw)?;
        if header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "the header lists critical extensions (`crit`) Airlock does not understand"
                    .to_owned(),
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => {
                return Err(TokenError::Malformed(
                    "the header's `kid` is not a string".to_owned(),
                ))
            }
        };
        let sig = b64(sig_b64, "signature")?;
        let key = self.key_for(kid, alg, alg_raw, now).await?;
        let signed = token
            .get(..header_b64.len() + 1 + payload_b64.len())
            .ok_or_else(|| TokenError::Malformed("truncated".to_owned()))?;
        alg.verify(&key, signed.as_bytes(), &sig)?;
        let claims = json_object(payload_b64, "payload")?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// The key that must have signed a token, fetching the provider's keys
    /// again (rate-limited) when the token names one not seen yet.
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Alg,
        alg_raw: &str,
        now: Timestamp,
    ) -> Result<PublicKey, TokenError> {
        let known = |cache: &KeyCache| match kid {
            Some(kid) => cache.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => !cache.keys.is_empty(),
        };
        let is_known = known(&self.cache());
        if !is_known {
            // One fetch at a time; tokens with known keys never wait for it.
            let _turn = self.fetch_turn.lock().await;
            let may_fetch = {
                let mut cache = self.cache();
                let due = cache
                    .tried_at
                    .is_none_or(|at| at.plus(self.settings.refetch_after) <= now);
                // Another caller may have fetched it while this one waited.
                let fetch = !known(&cache) && due;
                if fetch {
                    cache.tried_at = Some(now);
                }
                fetch
            };
            if may_fetch {
                match self.source.fetch().await.and_then(|t| parse_jwks(&t)) {
                    Ok(keys) => {
                        tracing::info!(keys = keys.len(), "fetched the identity provider's keys");
                        self.cache().keys = keys;
                    }
                    // The keys in hand stay: a provider outage must not sign
                    // everyone out.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fetch the identity provider's keys");
                        if self.cache().keys.is_empty() {
                            return Err(TokenError::KeysUnavailable(e.0));
                        }
                    }
                }
            }
        }
        let cache = self.cache();
        let candidates: Vec<&Jwk> = match kid {
            Some(kid) => cache
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => cache.keys.iter().filter(|k| alg.fits(&k.key)).collect(),
        };
        let jwk = match (kid, candidates.as_slice()) {
            (_, [one]) => *one,
            (Some(kid), []) => return Err(TokenError::UnknownKey(echo(kid))),
            (Some(kid), [..]) => {
                // Duplicate key ids: take the one that fits the algorithm.
                candidates
                    .iter()
                    .find(|k| alg.fits(&k.key))
                    .copied()
                    .ok_or_else(|| TokenError::KeyMismatch {
                        kid: echo(kid),
                        alg: echo(alg_raw),
                    })?
            }
            (None, []) => return Err(TokenError::UnknownKey("(none given)".to_owned())),
            (None, [..]) => return Err(TokenError::NoKeyId(echo(alg_raw))),
        };
        let fits_alg = jwk.alg.as_deref().is_none_or(|a| a == alg_raw);
        if !alg.fits(&jwk.key) || !fits_alg {
            return Err(TokenError::KeyMismatch {
                kid: echo(jwk.kid.as_deref().unwrap_or("")),
                alg: echo(alg_raw),
            });
        }
        Ok(jwk.key.clone())
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: Timestamp) -> Result<(), TokenError> {
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.settings.issuer {
            return Err(TokenError::WrongIssuer(echo(iss)));
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| self.settings.audiences.iter().any(|ok| ok == a))
        {
            return Err(TokenError::WrongAudience(echo(&audiences.join(" "))));
        }
        let skew = self.settings.clock_skew;
        let exp = time_claim(claims, "exp")?.ok_or_else(|| TokenError::BadClaim {
            claim: "exp".to_owned(),
            message: "is missing: tokens must expire".to_owned(),
        })?;
        if now.minus(skew) >= exp {
            return Err(TokenError::Expired(exp.to_rfc3339()));
        }
        if let Some(nbf) = time_claim(claims, "nbf")? {
            if now.plus(skew) < nbf {
                return Err(TokenError::NotYetValid(nbf.to_rfc3339()));
            }
        }
        if let Some(iat) = time_claim(claims, "iat")? {
            if now.plus(skew) < iat {
                return Err(TokenError::IssuedInFuture(iat.to_rfc3339()));
            }
        }
        Ok(())
    }

    fn user_of(&self, claims: &Map<String, Value>) -> Result<User, TokenError> {
        let name_claim = &self.settings.username_claim;
        let bad = |message: String| TokenError::BadClaim {
            claim: name_claim.clone(),
            message,
        };
        let name = claims
            .get(name_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| bad("is missing or not a string".to_owned()))?;
        let id = UserId::parse(name)
            .map_err(|e| bad(format!("`{}` is not an Airlock user id: {e}", echo(name))))?;
        let groups_claim = &self.settings.groups_claim;
        let raw_groups = match claims.get(groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(Value::String(one)) => vec![Value::String(one.clone())],
            Some(_) => {
                return Err(TokenError::BadClaim {
                    claim: groups_claim.clone(),
                    message: "must be a list of group names".to_owned(),
                })
            }
        };
        // A provider's group names may hold spaces ("Domain Users"); such a
        // group cannot appear in a policy, so it is left out rather than
        // locking its members out.
        let groups: BTreeSet<GroupName> = raw_groups
            .iter()
            .filter_map(|g| {
                let parsed = g.as_str().map(GroupName::parse);
                if !matches!(parsed, Some(Ok(_))) {
                    tracing::info!(user = %id, group = %g, "ignoring a group that is not an Airlock group name");
                }
                parsed.and_then(Result::ok)
            })
            .collect();
        let mut roles = BTreeSet::new();
        if groups
            .iter()
            .any(|g| self.settings.admin_groups.contains(g))
        {
            roles.insert(Role::Admin);
        }
        if groups
            .iter()
            .any(|g| self.settings.auditor_groups.contains(g))
        {
            roles.insert(Role::Auditor);
        }
        Ok(User::person(id, groups, roles))
    }
}

/// A NumericDate claim (whole seconds since the epoch), if present.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<Timestamp>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(|s| Some(Timestamp::from_unix_millis(s.saturating_mul(1000))))
            .ok_or_else(|| TokenError::BadClaim {
                claim: name.to_owned(),
                message: "must be a whole number of seconds since the epoch".to_owned(),
            }),
    }
}

/// Whether a URL may be fetched: HTTPS, or plain HTTP to this machine only
/// (a provider started for a test or the demo).
pub fn trusted_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("`{}` is not a URL ({e})", echo(url)))?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(format!(
            "`{}` must be https (plain http only to 127.0.0.1, ::1 or localhost)",
            echo(url)
        )),
    }
}

/// The most of a discovery or JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Fetches the key set over HTTP: the issuer's discovery document names
/// its `jwks_uri`.
pub struct HttpKeySource {
    issuer: String,
    client: reqwest::Client,
}

impl HttpKeySource {
    pub fn new(issuer: String) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| FetchError(format!("cannot build an HTTP client: {e}")))?;
        Ok(HttpKeySource { issuer, client })
    }

    async fn get(&self, url: reqwest::Url) -> Result<Vec<u8>, FetchError> {
        let shown = url.to_string();
        let fail = |e: String| FetchError(format!("GET `{shown}`: {e}"));
        let mut response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("answered {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(fail(format!("longer than {MAX_DOCUMENT_BYTES} bytes")));
            }
        }
        Ok(body)
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn fetch(&self) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let base = self.issuer.trim_end_matches('/');
        let discovery_url =
            trusted_url(&format!("{base}/.well-known/openid-configuration")).map_err(FetchError)?;
        let doc: Discovery = serde_json::from_slice(&self.get(discovery_url).await?)
            .map_err(|e| FetchError(format!("the discovery document is not valid: {e}")))?;
        // OpenID Connect Discovery 1.0 §4.3: the document must name the
        // issuer it was fetched for.
        if doc.issuer != self.issuer {
            return Err(FetchError(format!(
                "the discovery document names issuer `{}`, not `{}`",
                echo(&doc.issuer),
                self.issuer
            )));
        }
        let jwks_url = trusted_url(&doc.jwks_uri).map_err(FetchError)?;
        String::from_utf8(self.get(jwks_url).await?)
            .map_err(|_| FetchError("the key set is not UTF-8".to_owned()))
    }
}

#[cfg(test)]
mod tests;
