//! Drives the webhook connector against a real HTTP receiver on a local port.
//! The receiver checks signatures with the crate's own [`verify_signature`],
//! as a production receiver would, and answers from a script of status codes,
//! so each test states exactly what the far side said and what the engine
//! must conclude.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the value in the message"
)]
#![expect(
    clippy::disallowed_methods,
    reason = "checks the signature timestamp against the wall clock"
)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_connectors::webhook::{
    sign, verify_signature, WebhookConnector, WebhookSettings, IDEMPOTENCY_KEY_HEADER,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use airlock_connectors::{Connector, GrantSpec};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// No test here may take longer than this, whatever the connector does.
const BOUND: Duration = Duration::from_secs(20);
const SECRET: &[u8] = b"correct horse battery staple";

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("test exceeded its time bound")
}

fn spec() -> GrantSpec {
    GrantSpec {
        request_id: RequestId::parse("req-1").unwrap(),
        user: UserId::parse("alice").unwrap(),
        entitlement: EntitlementId::parse("prod-db").unwrap(),
        expires_at: Timestamp::from_unix_millis(1_700_000_000_500),
        claim: 1,
        public_key: None,
    }
}

/// One request as the receiver saw it.
#[derive(Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    signature_ok: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct Receiver {
    statuses: Arc<Mutex<VecDeque<u16>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay: Duration,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Verifies, records, then answers 401 for a bad signature or the next
/// scripted status (200 once the script runs out). A 502 comes with a long
/// body, to check that error messages stay short.
async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    tokio::time::sleep(r.delay).await;
    let timestamp = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = verify_signature(SECRET, timestamp, &body, signature);
    r.seen.lock().unwrap().push(Seen {
        headers,
        body,
        signature_ok,
    });
    let code = if signature_ok {
        r.statuses.lock().unwrap().pop_front().unwrap_or(200)
    } else {
        401
    };
    let mut text = format!("receiver says {code}");
    if code == 502 {
        text.push_str(&"x".repeat(10_000));
    }
    (StatusCode::from_u16(code).unwrap(), text)
}

/// Starts a receiver on a free local port; returns its URL.
async fn start_receiver(statuses: &[u16], delay: Duration) -> (String, Receiver) {
    let receiver = Receiver {
        statuses: Arc::new(Mutex::new(statuses.iter().copied().collect())),
        seen: Arc::default(),
        delay,
    };
    let app = Router::new()
        .route("/hooks/airlock", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks/airlock"), receiver)
}

fn connector(url: &str, secret: &[u8], timeout: Duration) -> WebhookConnector {
    WebhookConnector::new(WebhookSettings {
        url: url.to_owned(),
        secret: secret.to_vec(),
        timeout,
    })
    .unwrap()
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test]
async fn success_is_ok_signed_and_carries_the_idempotency_key() {
    bounded(async {
        let (url, receiver) = start_receiver(&[200, 204, 200], Duration::ZERO).await;
        let connector = connector(&url, SECRET, Duration::from_secs(5));

        connector.grant(&spec()).await.unwrap();
        connector.revoke(&spec()).await.unwrap();
        connector.health().await.unwrap();

        let seen = receiver.seen();
        assert_eq!(seen.len(), 3);
        let [grant, revoke, health] = [&seen[0], &seen[1], &seen[2]];
        for s in &seen {
            assert!(s.signature_ok);
            assert_eq!(s.header("content-type"), Some("application/json"));
            let ts: i64 = s.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
            assert!((ts - now_secs()).abs() <= 60, "timestamp {ts}");
            let sig = s.header(SIGNATURE_HEADER).unwrap();
            assert_eq!(sig, sign(SECRET, &ts.to_string(), &s.body));
            assert_eq!(sig.len(), "sha256=".len() + 64);
            assert_eq!(sig, sig.to_lowercase());
        }
        assert_eq!(grant.header(IDEMPOTENCY_KEY_HEADER), Some("req-1:grant"));
        assert_eq!(revoke.header(IDEMPOTENCY_KEY_HEADER), Some("req-1:revoke"));
        assert_eq!(health.header(IDEMPOTENCY_KEY_HEADER), None);
        assert_eq!(
            grant.json(),
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
        assert_eq!(revoke.json()["action"], "revoke");
        assert_eq!(health.json(), serde_json::json!({"action": "health"}));
    })
    .await;
}

#[tokio::test]
async fn a_503_is_retryable_and_the_retry_reuses_the_key_with_one_attempt_per_call() {
    bounded(async {
        let (url, receiver) = start_receiver(&[503, 200], Duration::ZERO).await;
        let connector = connector(&url, SECRET, Duration::from_secs(5));

        let err = connector.grant(&spec()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let origin = url.trim_end_matches("/hooks/airlock");
        assert_eq!(
            err.message(),
            format!("webhook `{origin}` answered 503 Service Unavailable: receiver says 503")
        );
        connector.grant(&spec()).await.unwrap();

        let seen = receiver.seen();
        assert_eq!(seen.len(), 2, "exactly one attempt per call");
        assert_eq!(seen[0].header(IDEMPOTENCY_KEY_HEADER), Some("req-1:grant"));
        assert_eq!(seen[1].header(IDEMPOTENCY_KEY_HEADER), Some("req-1:grant"));
    })
    .await;
}

#[tokio::test]
async fn client_errors_are_permanent_except_408_and_429() {
    bounded(async {
        let (url, _receiver) = start_receiver(&[400, 404, 408, 429, 500], Duration::ZERO).await;
        let connector = connector(&url, SECRET, Duration::from_secs(5));
        for (code, retryable) in [
            (400, false),
            (404, false),
            (408, true),
            (429, true),
            (500, true),
        ] {
            let err = connector.grant(&spec()).await.unwrap_err();
            assert_eq!(err.is_retryable(), retryable, "{code}: {err}");
            assert!(
                err.message().contains(&format!("answered {code} ")),
                "{err}"
            );
            assert!(
                err.message().ends_with(&format!("receiver says {code}")),
                "{err}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn long_error_bodies_are_truncated_and_the_secret_never_appears() {
    bounded(async {
        let (url, _receiver) = start_receiver(&[502], Duration::ZERO).await;
        let err = connector(&url, SECRET, Duration::from_secs(5))
            .grant(&spec())
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.message().ends_with("[truncated]"), "{err}");
        assert!(err.message().len() < 700, "{}", err.message().len());
        let secret = std::str::from_utf8(SECRET).unwrap();
        assert!(!err.message().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
    })
    .await;
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retryable() {
    bounded(async {
        let (url, _receiver) = start_receiver(&[], Duration::from_secs(5)).await;
        let connector = connector(&url, SECRET, Duration::from_millis(300));
        let started = Instant::now();
        let err = connector.grant(&spec()).await.unwrap_err();
        let took = started.elapsed();
        assert!(err.is_retryable(), "{err}");
        assert!(
            err.message().contains("did not answer within 300ms"),
            "{err}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    })
    .await;
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    bounded(async {
        // Bind then drop: the port is free and nothing listens on it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = connector(
            &format!("http://{addr}/hooks/airlock"),
            SECRET,
            Duration::from_secs(5),
        )
        .grant(&spec())
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.message().contains("request failed"), "{err}");
        assert!(!err.message().contains("/hooks/airlock"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_secret_fails_verification() {
    bounded(async {
        let (url, receiver) = start_receiver(&[], Duration::ZERO).await;
        let err = connector(&url, b"not the shared secret", Duration::from_secs(5))
            .grant(&spec())
            .await
            .unwrap_err();
        // The receiver answers 401, which the engine must not retry.
        assert!(!err.is_retryable(), "{err}");
        assert!(err.message().contains("answered 401 Unauthorized"), "{err}");

        let seen = receiver.seen();
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].signature_ok);
        let ts = seen[0].header(TIMESTAMP_HEADER).unwrap();
        let sig = seen[0].header(SIGNATURE_HEADER).unwrap();
        assert!(!verify_signature(SECRET, ts, &seen[0].body, sig));
        assert!(verify_signature(
            b"not the shared secret",
            ts,
            &seen[0].body,
            sig
        ));
    })
    .await;
}
