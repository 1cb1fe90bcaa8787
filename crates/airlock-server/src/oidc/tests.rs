//! The verifier against tokens signed in the test with fixed keys: every
//! refusal the API promises, and the rate-limited re-fetch of keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "https://airlock.example.com";
/// 2026-12-01T00:00:00Z, in seconds.
const NOW: i64 = 1_796_083_200;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW * 1000)
}

fn settings() -> OidcSettings {
    OidcSettings {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned(), "airlock-cli".to_owned()],
        username_claim: "preferred_username".to_owned(),
        groups_claim: "groups".to_owned(),
        admin_groups: [GroupName::parse("airlock-admins").unwrap()].into(),
        auditor_groups: [GroupName::parse("audit").unwrap()].into(),
        clock_skew: Duration::from_secs(60),
        refetch_after: Duration::from_secs(300),
        client_id: Some("airlock-cli".to_owned()),
        scopes: Vec::new(),
        mfa_acr_values: vec!["urn:test:mfa".to_owned()],
    }
}

/// A key set that counts its fetches and can be swapped (rotation) or
/// made to fail (an outage).
struct FixedKeys {
    jwks: Mutex<Result<String, FetchError>>,
    fetches: AtomicUsize,
}

impl FixedKeys {
    fn new(keys: Vec<Value>) -> Arc<Self> {
        Arc::new(FixedKeys {
            jwks: Mutex::new(Ok(json!({ "keys": keys }).to_string())),
            fetches: AtomicUsize::new(0),
        })
    }

    fn set(&self, next: Result<Vec<Value>, &str>) {
        *self.jwks.lock().unwrap() = next
            .map(|keys| json!({ "keys": keys }).to_string())
            .map_err(|e| FetchError(e.to_owned()));
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySource for FixedKeys {
    async fn fetch(&self) -> Result<String, FetchError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.jwks.lock().unwrap().clone()
    }
}

fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signer in the test, with its public JWK.
enum TestKey {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl TestKey {
    fn rsa() -> TestKey {
        let text: String = include_str!("test-rsa-key.pkcs1.b64")
            .split_whitespace()
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        TestKey::Rsa(RsaKeyPair::from_der(&der).unwrap())
    }

    fn p256() -> TestKey {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        TestKey::P256(EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).unwrap())
    }

    fn ed25519() -> TestKey {
        TestKey::Ed(Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            TestKey::Rsa(_) => "RS256",
            TestKey::P256(_) => "ES256",
            TestKey::Ed(_) => "EdDSA",
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            TestKey::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64e(&c.n), "e": b64e(&c.e)})
            }
            TestKey::P256(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64e(&p[1..33]), "y": b64e(&p[33..65])})
            }
            TestKey::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64e(k.public_key().as_ref())})
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
            TestKey::P256(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            TestKey::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "00u1",
        "preferred_username": "alice",
        "groups": ["dev", "airlock-admins", "Domain Users"],
        "iat": NOW - 10,
        "exp": NOW + 600,
    })
}

/// `header.payload.signature` with the header and claims as given.
fn token(key: &TestKey, header: Value, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        b64e(header.to_string().as_bytes()),
        b64e(claims.to_string().as_bytes())
    );
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", b64e(&sig))
}

fn signed(key: &TestKey, kid: &str, claims: &Value) -> String {
    token(
        key,
        json!({"alg": key.alg(), "kid": kid, "typ": "JWT"}),
        claims,
    )
}

fn verifier(source: Arc<FixedKeys>) -> Verifier {
    Verifier::new(settings(), source)
}

async fn check(v: &Verifier, token: &str) -> Result<User, TokenError> {
    check_at(v, token, 0).await
}

/// Checks a token `later` seconds after `NOW`.
async fn check_at(v: &Verifier, token: &str, later: u64) -> Result<User, TokenError> {
    let at = now().plus(Duration::from_secs(later));
    v.authenticate(token, at, &Catalog::default()).await
}

#[tokio::test]
async fn accepts_each_public_key_algorithm_and_maps_groups_to_roles() {
    for key in [TestKey::rsa(), TestKey::p256(), TestKey::ed25519()] {
        let v = verifier(FixedKeys::new(vec![key.jwk("k1")]));
        let user = check(&v, &signed(&key, "k1", &claims())).await.unwrap();
        assert_eq!(user.id.as_str(), "alice", "{}", key.alg());
        let groups: Vec<&str> = user.groups.iter().map(GroupName::as_str).collect();
        // `Domain Users` is no Airlock group name: left out, not fatal.
        assert_eq!(groups, ["airlock-admins", "dev"]);
        assert_eq!(user.roles, [Role::Admin].into());
    }
}

#[tokio::test]
async fn accepts_an_audience_list_and_the_skew() {
    let key = TestKey::ed25519();
    let v = verifier(FixedKeys::new(vec![key.jwk("k1")]));
    let mut c = claims();
    c["aud"] = json!(["other", "airlock-cli"]);
    c["exp"] = json!(NOW - 30);
    c["nbf"] = json!(NOW + 30);
    assert!(check(&v, &signed(&key, "k1", &c)).await.is_ok());
}

#[tokio::test]
async fn mfa_is_the_auth_time_of_a_token_whose_amr_or_acr_shows_a_second_factor() {
    let key = TestKey::ed25519();
    let v = verifier(FixedKeys::new(vec![key.jwk("k1")]));
    let auth_time = NOW - 120;
    let at = Timestamp::from_unix_millis(auth_time * 1000);
    let cases = [
        (json!({"amr": ["pwd", "otp"]}), Some(at)),
        (json!({"amr": ["mfa"]}), Some(at)),
        (json!({"acr": "urn:test:mfa"}), Some(at)),
        (json!({"amr": ["pwd"]}), None),
        (json!({"acr": "urn:test:pwd"}), None),
        (json!({}), None),
        // MFA without a time says nothing about how recent it is.
        (json!({"amr": ["mfa"], "auth_time": null}), None),
    ];
    for (extra, expected) in cases {
        let mut c = claims();
        c["auth_time"] = json!(auth_time);
        for (k, val) in extra.as_object().unwrap() {
            if val.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = val.clone();
            }
        }
        let who = v
            .sign_in(&signed(&key, "k1", &c), now(), &Catalog::default())
            .await
            .unwrap();
        assert_eq!(who.mfa_at, expected, "{extra}");
    }
}

#[tokio::test]
async fn refuses_each_bad_token_saying_why() {
    let rsa = TestKey::rsa();
    let v = verifier(FixedKeys::new(vec![rsa.jwk("k1")]));
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        signed(&rsa, "k1", &c)
    };
    let good = signed(&rsa, "k1", &claims());
    let (head, rest) = good.split_once('.').unwrap();
    let sig = rest.split_once('.').unwrap().1;
    let payload = |c: &Value| b64e(c.to_string().as_bytes());
    let mut richer = claims();
    richer["preferred_username"] = json!("root");
    // The classic confusion: HS256 keyed with the bytes of the RSA public key.
    let hs256 = {
        let signed = format!(
            "{}.{}",
            b64e(br#"{"alg":"HS256","kid":"k1"}"#),
            payload(&claims())
        );
        let TestKey::Rsa(pair) = &rsa else {
            unreachable!()
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pair.public().as_ref());
        let tag = ring::hmac::sign(&key, signed.as_bytes());
        format!("{signed}.{}", b64e(tag.as_ref()))
    };
    let cases: Vec<(&str, String, TokenError)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(NOW - 61)),
            TokenError::Expired("2026-11-30T23:58:59.000Z".to_owned()),
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(NOW + 120)),
            TokenError::NotYetValid("2026-12-01T00:02:00.000Z".to_owned()),
        ),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(NOW + 120)),
            TokenError::IssuedInFuture("2026-12-01T00:02:00.000Z".to_owned()),
        ),
        (
            "no expiry",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            TokenError::BadClaim {
                claim: "exp".to_owned(),
                message: "is missing: tokens must expire".to_owned(),
            },
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://other.example.com")),
            TokenError::WrongAudience("https://other.example.com".to_owned()),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example.com")),
            TokenError::WrongIssuer("https://evil.example.com".to_owned()),
        ),
        (
            "issuer with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{ISSUER}/"))),
            TokenError::WrongIssuer(format!("{ISSUER}/")),
        ),
        (
            "unknown key",
            signed(&rsa, "k9", &claims()),
            TokenError::UnknownKey("k9".to_owned()),
        ),
        (
            "alg none with an empty signature",
            format!("{}.{}.", b64e(br#"{"alg":"none"}"#), payload(&claims())),
            TokenError::AlgorithmRefused("none".to_owned()),
        ),
        (
            "HS256 keyed with the public key",
            hs256,
            TokenError::AlgorithmRefused("HS256".to_owned()),
        ),
        (
            "payload swapped under a good signature",
            format!("{head}.{}.{sig}", payload(&richer)),
            TokenError::BadSignature,
        ),
        (
            "ES256 claimed for an RSA key",
            token(
                &TestKey::p256(),
                json!({"alg": "ES256", "kid": "k1"}),
                &claims(),
            ),
            TokenError::KeyMismatch {
                kid: "k1".to_owned(),
                alg: "ES256".to_owned(),
            },
        ),
        (
            "two parts",
            format!("{head}.{}", payload(&claims())),
            TokenError::Malformed("a JWT has three dot-separated parts".to_owned()),
        ),
        (
            "header not base64url",
            format!("{head}!.{}.{sig}", payload(&claims())),
            TokenError::Malformed("the header is not base64url".to_owned()),
        ),
        (
            "user id with a space",
            with(&|c| c["preferred_username"] = json!("alice smith")),
            TokenError::BadClaim {
                claim: "preferred_username".to_owned(),
                message: "`alice smith` is not an Airlock user id: may only contain letters, digits, `-`, `_`, `.` and `@` (found ` `)".to_owned(),
            },
        ),
        (
            "groups not a list",
            with(&|c| c["groups"] = json!({"dev": true})),
            TokenError::BadClaim {
                claim: "groups".to_owned(),
                message: "must be a list of group names".to_owned(),
            },
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(check(&v, &token).await.unwrap_err(), want, "{name}");
    }
}

#[tokio::test]
async fn an_unknown_key_fetches_again_at_most_once_per_interval() {
    let (old, new) = (TestKey::ed25519(), TestKey::p256());
    let source = FixedKeys::new(vec![old.jwk("old")]);
    let v = verifier(source.clone());
    assert!(check(&v, &signed(&old, "old", &claims())).await.is_ok());
    assert!(check_at(&v, &signed(&old, "old", &claims()), 400)
        .await
        .is_ok());
    assert_eq!(source.fetches(), 1, "known keys are cached");

    // The provider rotates: the new key id triggers one fetch.
    source.set(Ok(vec![new.jwk("new"), old.jwk("old")]));
    assert!(check_at(&v, &signed(&new, "new", &claims()), 400)
        .await
        .is_ok());
    assert_eq!(source.fetches(), 2);

    // A flood of forged key ids within the interval fetches nothing.
    for kid in ["forged-1", "forged-2", "forged-3"] {
        assert_eq!(
            check_at(&v, &signed(&new, kid, &claims()), 500)
                .await
                .unwrap_err(),
            TokenError::UnknownKey(kid.to_owned())
        );
    }
    assert_eq!(source.fetches(), 2, "the last fetch was under 300s ago");

    // Once the interval has passed an unknown key is looked for again.
    let _ = check_at(&v, &signed(&new, "forged-4", &claims()), 700).await;
    assert_eq!(source.fetches(), 3);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_keys_in_hand() {
    let key = TestKey::ed25519();
    let source = FixedKeys::new(vec![key.jwk("k1")]);
    let v = verifier(source.clone());
    assert!(check(&v, &signed(&key, "k1", &claims())).await.is_ok());
    source.set(Err("connection refused"));
    assert_eq!(
        check_at(&v, &signed(&key, "k2", &claims()), 400)
            .await
            .unwrap_err(),
        TokenError::UnknownKey("k2".to_owned())
    );
    assert_eq!(source.fetches(), 2);
    assert!(check_at(&v, &signed(&key, "k1", &claims()), 400)
        .await
        .is_ok());

    let down = FixedKeys::new(vec![]);
    down.set(Err("connection refused"));
    let cold = verifier(down);
    let err = check(&cold, &signed(&key, "k1", &claims()))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[test]
fn jwks_keys_airlock_cannot_use_are_skipped() {
    let keys = parse_jwks(
        &json!({"keys": [
            {"kty": "RSA", "use": "enc", "kid": "e", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "secp256k1", "kid": "k", "x": "", "y": ""},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            TestKey::ed25519().jwk("ok"),
        ]})
        .to_string(),
    )
    .unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, [Some("ok")]);
}

#[test]
fn echo_keeps_messages_and_headers_safe() {
    assert_eq!(echo("a\"b\\c`d\ne"), "a?b?c?d?e");
    assert_eq!(echo(&"x".repeat(100)).chars().count(), MAX_ECHO_CHARS + 1);
}

#[test]
fn only_https_or_loopback_http_is_fetched() {
    assert!(trusted_url("https://idp.example.com").is_ok());
    assert!(trusted_url("http://127.0.0.1:8080").is_ok());
    assert!(trusted_url("http://localhost/x").is_ok());
    assert!(trusted_url("http://idp.example.com").is_err());
    assert!(trusted_url("file:///etc/passwd").is_err());
}

/// Answers the first fetch, then holds every later one until released: a
/// provider that hangs.
struct Hanging {
    first: String,
    release: tokio::sync::Notify,
    fetches: AtomicUsize,
}

#[async_trait]
impl KeySource for Hanging {
    async fn fetch(&self) -> Result<String, FetchError> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) > 0 {
            self.release.notified().await;
        }
        Ok(self.first.clone())
    }
}

#[tokio::test]
async fn a_hanging_fetch_does_not_hold_tokens_with_known_keys() {
    let key = TestKey::ed25519();
    let source = Arc::new(Hanging {
        first: json!({ "keys": [key.jwk("k1")] }).to_string(),
        release: tokio::sync::Notify::new(),
        fetches: AtomicUsize::new(0),
    });
    let v = Arc::new(Verifier::new(settings(), source.clone()));
    assert!(check(&v, &signed(&key, "k1", &claims())).await.is_ok());
    let unknown = {
        let (v, token) = (v.clone(), signed(&key, "k2", &claims()));
        tokio::spawn(async move { check_at(&v, &token, 400).await })
    };
    airlock_testkit::until(Duration::from_secs(5), "the second fetch", || async {
        (source.fetches.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    let known = airlock_testkit::bounded(
        Duration::from_secs(5),
        check_at(&v, &signed(&key, "k1", &claims()), 400),
    )
    .await;
    assert!(known.is_ok(), "{known:?}");
    source.release.notify_one();
    assert_eq!(
        unknown.await.unwrap().unwrap_err(),
        TokenError::UnknownKey("k2".to_owned())
    );
}
