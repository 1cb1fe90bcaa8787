//! A connector that tells an HTTP service to grant or revoke access. It exists
//! for targets that already run a service of their own (an internal admin
//! API, a workflow tool): they receive a small signed JSON document instead of
//! Airlock learning their API.
//!
//! Each call is one `POST` of
//! `{"action", "request_id", "user", "entitlement", "expires_at", "expires_at_unix", "claim"}`
//! (a health check sends only `{"action": "health"}`), signed with
//! HMAC-SHA256 over `"<timestamp>.<body>"` so the receiver can tell Airlock
//! from anyone else who can reach it. Receivers should use
//! [`verify_signature`] and reject timestamps far from their own clock, which
//! stops an old request from being replayed. The `idempotency-key` header is
//! the same on every retry of a call, so a receiver can drop duplicates.
//!
//! The connector makes exactly one attempt per call: the engine owns retries
//! and their backoff, and a second retry loop here would multiply them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use sha2::Sha256;
use tracing::Instrument;

use crate::{rfc3339, Action, Connector, ConnectorError, GrantSpec, Granted};

/// Header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-airlock-timestamp";
/// Header carrying `sha256=<lowercase hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-airlock-signature";
/// Header carrying `<request_id>:<action>`, stable across retries.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

const SIGNATURE_PREFIX: &str = "sha256=";

/// How much of a failed response's body goes into the error message: enough
/// for the receiver's explanation, not enough to flood the audit log.
const BODY_LIMIT: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// Configuration for a [`WebhookConnector`].
#[derive(Clone)]
pub struct WebhookSettings {
    /// Where calls are posted; `http` or `https`.
    pub url: String,
    /// The HMAC key shared with the receiver.
    pub secret: Vec<u8>,
    /// Upper bound on one call, connection and response body included.
    pub timeout: Duration,
}

// Written by hand so the secret (and a URL that may embed a token) can never
// reach a log line through `{:?}`.
impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &redacted_origin(&self.url))
            .field("secret", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Posts signed grant and revoke requests to one URL.
#[derive(Clone)]
pub struct WebhookConnector {
    client: reqwest::Client,
    url: Url,
    /// Scheme, host and port only: what error messages name, since the path
    /// or query of a webhook URL often carries a token.
    origin: String,
    secret: Vec<u8>,
    timeout: Duration,
}

impl fmt::Debug for WebhookConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConnector")
            .field("origin", &self.origin)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookConnector {
    /// Checks the settings and builds the one HTTP client every call reuses.
    /// All failures are `Permanent`: they are configuration mistakes.
    pub fn new(settings: WebhookSettings) -> Result<Self, ConnectorError> {
        let url = Url::parse(&settings.url).map_err(|e| {
            ConnectorError::Permanent(format!("webhook url is not a valid url: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::Permanent(format!(
                "webhook url must use `http` or `https`, not `{}`",
                url.scheme()
            )));
        }
        if settings.secret.is_empty() {
            return Err(ConnectorError::Permanent(
                "webhook secret must not be empty".to_owned(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirect would re-send (or, for 301/302, silently drop) a
            // signed grant to a URL nobody configured; report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ConnectorError::Permanent(format!(
                    "could not build the webhook http client: {}",
                    error_chain(&e.without_url())
                ))
            })?;
        Ok(Self {
            client,
            origin: url.origin().ascii_serialization(),
            url,
            secret: settings.secret,
            timeout: settings.timeout,
        })
    }

    async fn call(
        &self,
        action: &'static str,
        spec: Option<&GrantSpec>,
    ) -> Result<(), ConnectorError> {
        let span = match spec {
            Some(spec) => tracing::info_span!(
                "webhook_connector",
                action,
                request_id = spec.request_id.as_str()
            ),
            None => tracing::info_span!("webhook_connector", action),
        };
        self.post(action, spec).instrument(span).await
    }

    async fn post(
        &self,
        action: &'static str,
        spec: Option<&GrantSpec>,
    ) -> Result<(), ConnectorError> {
        let origin = &self.origin;
        let body = serde_json::to_vec(&Payload::new(action, spec)).map_err(|e| {
            ConnectorError::Permanent(format!("could not encode the webhook body: {e}"))
        })?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signature_headers(&self.secret, &body) {
            request = request.header(name, value);
        }
        if let Some(spec) = spec {
            request = request.header(
                IDEMPOTENCY_KEY_HEADER,
                format!("{}:{action}", spec.request_id.as_str()),
            );
        }

        let response = request.body(body).send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_timeout() {
                ConnectorError::Retryable(format!(
                    "webhook `{origin}` did not answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            } else if e.is_builder() {
                ConnectorError::Permanent(format!(
                    "could not build the webhook request: {}",
                    error_chain(&e)
                ))
            } else {
                // Refused connections, resets, DNS and TLS failures: the
                // receiver may be restarting, so let the engine back off.
                ConnectorError::Retryable(format!(
                    "webhook `{origin}` request failed: {}",
                    error_chain(&e)
                ))
            }
        })?;

        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let head = format!("webhook `{origin}` answered {status}");
        let body = body_head(response).await;
        let message = if body.is_empty() {
            head
        } else {
            format!("{head}: {body}")
        };
        if is_retryable(status) {
            Err(ConnectorError::Retryable(message))
        } else {
            Err(ConnectorError::Permanent(message))
        }
    }
}

#[async_trait::async_trait]
impl Connector for WebhookConnector {
    async fn grant(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        self.call(Action::Grant.as_str(), Some(spec)).await?;
        Ok(Granted::default())
    }

    async fn revoke(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        self.call(Action::Revoke.as_str(), Some(spec)).await
    }

    async fn health(&self) -> Result<(), ConnectorError> {
        self.call("health", None).await
    }

    fn call_timeout(&self) -> Duration {
        self.timeout
    }
}

/// The JSON document a receiver gets; the wire format of this connector.
#[derive(Serialize)]
struct Payload<'a> {
    action: &'a str,
    #[serde(flatten)]
    grant: Option<GrantFields<'a>>,
}

#[derive(Serialize)]
struct GrantFields<'a> {
    request_id: &'a str,
    user: &'a str,
    entitlement: &'a str,
    expires_at: String,
    expires_at_unix: i64,
    claim: u64,
}

impl<'a> Payload<'a> {
    fn new(action: &'a str, spec: Option<&'a GrantSpec>) -> Self {
        Self {
            action,
            grant: spec.map(|spec| GrantFields {
                request_id: spec.request_id.as_str(),
                user: spec.user.as_str(),
                entitlement: spec.entitlement.as_str(),
                expires_at: rfc3339(spec.expires_at),
                expires_at_unix: spec.expires_at.unix_millis().div_euclid(1000),
                claim: spec.claim,
            }),
        }
    }
}

/// Statuses that say "not now" rather than "no".
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The trimmed start of a response body, reading no more of it than needed.
/// A body that fails half-way still yields what arrived.
async fn body_head(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = BODY_LIMIT.saturating_sub(bytes.len());
        bytes.extend(chunk.iter().take(room));
        if chunk.len() > room {
            truncated = true;
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if truncated {
        format!("{text} [truncated]")
    } else {
        text.to_owned()
    }
}

/// An error and its causes on one line; reqwest's own message alone ("error
/// sending request") hides the useful part ("connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn redacted_origin(url: &str) -> String {
    Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "[invalid url]".to_owned())
}

// The signature timestamp is the wall clock at send time by definition (the
// receiver compares it with its own clock), not a domain decision, so it is
// read here rather than passed in.
#[expect(
    clippy::disallowed_methods,
    reason = "the signature timestamp is wall-clock time by definition"
)]
fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    // HMAC accepts keys of any length, so this never fails in practice.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The headers that sign `body` now: the timestamp and the signature over
/// it and the body. Everything Airlock posts signed (this connector, signed
/// notification webhooks) is signed by this one function.
pub fn signature_headers(secret: &[u8], body: &[u8]) -> [(&'static str, String); 2] {
    let timestamp = unix_now_secs().to_string();
    let signature = sign(secret, &timestamp, body);
    [(TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature)]
}

/// The `x-airlock-signature` value for a request: `sha256=` and the lowercase
/// hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // `mac` cannot fail (see there); if it ever did, the empty digest sent
    // instead is one no receiver accepts, so the call fails visibly rather
    // than the broker panicking.
    let digest = mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("{SIGNATURE_PREFIX}{digest}")
}

/// Whether `header_value` is the signature of `"<timestamp>.<body>"` under
/// `secret`, compared in constant time. Checking that `timestamp` is recent
/// is left to the receiver, which owns the clock it trusts.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header_value: &str) -> bool {
    let Some(hex_digest) = header_value.trim().strip_prefix(SIGNATURE_PREFIX) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&expected).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED_HEX: &str = "c9615980b519a1c709e88c38393fbe80e96cfda79b710d3888656cf51c852beb";

    #[test]
    fn sign_matches_an_independent_hmac_and_verifies() {
        // Computed with `printf '1700000000.{"action":"health"}' |
        //   openssl dgst -sha256 -hmac s3cret`.
        let body = br#"{"action":"health"}"#;
        let sig = sign(b"s3cret", "1700000000", body);
        assert_eq!(sig, format!("sha256={}", EXPECTED_HEX));
        assert!(verify_signature(b"s3cret", "1700000000", body, &sig));
        assert!(!verify_signature(b"other", "1700000000", body, &sig));
        assert!(!verify_signature(b"s3cret", "1700000001", body, &sig));
        assert!(!verify_signature(b"s3cret", "1700000000", b"{}", &sig));
        assert!(!verify_signature(
            b"s3cret",
            "1700000000",
            body,
            EXPECTED_HEX
        ));
        assert!(!verify_signature(
            b"s3cret",
            "1700000000",
            body,
            "sha256=zz"
        ));
    }

    #[test]
    fn retryable_statuses_are_5xx_408_and_429() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 409, 422] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret_and_the_url_path() {
        let settings = WebhookSettings {
            url: "https://hooks.example.com/t/abc123token".to_owned(),
            secret: b"s3cret".to_vec(),
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc123token"),
            "{shown}"
        );
        let connector = WebhookConnector::new(settings).unwrap();
        let shown = format!("{connector:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc123token"),
            "{shown}"
        );
    }

    #[test]
    fn bad_settings_are_permanent_errors() {
        let base = WebhookSettings {
            url: "https://hooks.example.com/".to_owned(),
            secret: b"s3cret".to_vec(),
            timeout: Duration::from_secs(1),
        };
        for settings in [
            WebhookSettings {
                url: "not a url".to_owned(),
                ..base.clone()
            },
            WebhookSettings {
                url: "ftp://example.com/".to_owned(),
                ..base.clone()
            },
            WebhookSettings {
                secret: Vec::new(),
                ..base.clone()
            },
        ] {
            let err = WebhookConnector::new(settings).unwrap_err();
            assert!(!err.is_retryable(), "{err}");
        }
    }

    #[test]
    fn payload_has_the_documented_fields() {
        let spec = GrantSpec {
            request_id: airlock_core::RequestId::parse("req-1").unwrap(),
            user: airlock_core::UserId::parse("alice").unwrap(),
            entitlement: airlock_core::EntitlementId::parse("prod-db").unwrap(),
            expires_at: airlock_core::Timestamp::from_unix_millis(1_700_000_000_999),
            claim: 1,
            public_key: None,
        };
        let grant: serde_json::Value =
            serde_json::to_value(Payload::new("grant", Some(&spec))).unwrap();
        assert_eq!(
            grant,
            serde_json::json!({
                "action": "grant",
                "request_id": "req-1",
                "user": "alice",
                "entitlement": "prod-db",
                "expires_at": "2023-11-14T22:13:20Z",
                "expires_at_unix": 1_700_000_000,
                "claim": 1,
            })
        );
        let health = serde_json::to_value(Payload::new("health", None)).unwrap();
        assert_eq!(health, serde_json::json!({"action": "health"}));
    }
}
