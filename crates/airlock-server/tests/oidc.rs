//! Sign-in with a real identity provider: `oidc-provider` (the certified
//! node implementation, `tests/oidc/provider.mjs`) issues RS256 JWT access
//! tokens, and the real server on port 0 checks them against the keys it
//! discovers from the provider. Covers sign-in, groups reaching Cedar
//! policies, key rotation at the provider, and the refusals: expired, wrong
//! audience, unknown key, `alg: none`, HS256 keyed with the public key, a
//! signature that does not match; and MFA step-up with ID tokens from the
//! device flow, logged in with and without a second factor.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::time::Duration;

use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server};
use airlock_testkit::oidc::{Browser, Provider, ACR_MFA, CLI_CLIENT};
use airlock_testkit::{bounded, until};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

const BOUND: Duration = Duration::from_secs(60);
const AUDIENCE: &str = "https://airlock.test";

/// Logs are read by the `dev` group through a Cedar policy, and granted at
/// once; nobody else may ask. `ops` has a static config token.
const POLICY: &str = r#"
@id("dev-reads-logs")
permit (principal in Airlock::Group::"dev", action == Airlock::Action::"request", resource == Airlock::Entitlement::"logs-read");
@id("dev-logs-at-once")
permit (principal in Airlock::Group::"dev", action == Airlock::Action::"auto_approve", resource == Airlock::Entitlement::"logs-read");
"#;

struct Airlock {
    server: Server,
    base: String,
    _dir: tempfile::TempDir,
}

async fn boot(issuer: &str, clock_skew: &str) -> Airlock {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/logs.cedar"), POLICY).unwrap();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'

[server.oidc]
issuer = "{issuer}"
audience = "{AUDIENCE}"
admin_groups = ["airlock-admins"]
clock_skew = "{clock_skew}"
jwks_refetch_after = "1s"
client_id = "{CLI_CLIENT}"
mfa_acr_values = ["{ACR_MFA}"]

[server.scim]
token_sha256 = "{scim}"

[users.ops]
groups = ["ops"]
token_sha256 = "{}"

[connectors.log]
type = "command"
program = "/bin/true"

[entitlements.logs-read]
max_duration = "1h"
require_reason = false
connector = "log"

[entitlements.prod-db]
max_duration = "1h"
require_reason = false
connector = "log"
requestable_by = ["dev"]
auto_approve = true
require_mfa_within = "5m"

[entitlements.vault-root]
max_duration = "1h"
require_reason = false
connector = "log"
requestable_by = ["dev"]
auto_approve = true
require_mfa_within = "1s"

[policy]
dir = '{root}/policies'
"#,
        token_hash("static-ops-token"),
        scim = token_hash(SCIM_TOKEN),
    );
    let settings = Settings::parse("oidc-test.toml", &toml, dir.path()).unwrap();
    let server = start(settings).await.unwrap();
    let base = format!("http://{}", server.addr());
    Airlock {
        server,
        base,
        _dir: dir,
    }
}

/// The identity provider's provisioning token (`[server.scim]`).
const SCIM_TOKEN: &str = "scim-provisioning-token";

/// What the API answered: status, body, and `WWW-Authenticate`.
struct Answer {
    status: u16,
    body: Value,
    challenge: String,
}

impl Airlock {
    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => client.post(url).json(&body.unwrap_or(json!({}))),
            "PATCH" => client.patch(url).json(&body.unwrap_or(json!({}))),
            _ => client.get(url),
        };
        req = req.bearer_auth(token);
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            body,
            challenge,
        }
    }

    async fn me(&self, token: &str) -> Answer {
        self.call("GET", "/v1/me", token, None).await
    }

    /// The API refuses `token` with a 401 whose message contains `why`.
    async fn assert_refused(&self, token: &str, why: &str, case: &str) {
        let a = self.me(token).await;
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(a.status, 401, "{case}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "unauthorized", "{case}");
        assert!(message.contains(why), "{case}: `{message}` lacks `{why}`");
        assert!(
            a.challenge
                .starts_with("Bearer error=\"invalid_token\", error_description=\"")
                && a.challenge.contains(&why.replace('`', "'")),
            "{case}: WWW-Authenticate `{}`",
            a.challenge
        );
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn part(token: &str, i: usize) -> Value {
    let raw = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).unwrap()).unwrap()
}

#[tokio::test]
async fn provider_tokens_sign_in_and_their_groups_reach_policies() {
    bounded(BOUND, async {
        let Some(idp) = Provider::start().await else {
            return;
        };
        let airlock = boot(&idp.issuer, "60s").await;

        let alice = idp.token("alice", AUDIENCE).await;
        let me = airlock.me(&alice).await;
        assert_eq!(me.status, 200, "{}", me.body);
        // `Domain Users` is no Airlock group name: left out, not fatal.
        assert_eq!(
            me.body,
            json!({"user": "alice", "groups": ["dev"], "roles": [], "kind": "person"})
        );
        let bob = idp.token("bob", AUDIENCE).await;
        assert_eq!(
            airlock.me(&bob).await.body,
            json!({"user": "bob", "groups": ["airlock-admins", "dba"], "roles": ["admin"], "kind": "person"})
        );

        // The Cedar policy sees the provider's groups.
        let ask = json!({"entitlement": "logs-read", "duration": "10m"});
        let granted = airlock
            .call("POST", "/v1/requests", &alice, Some(ask.clone()))
            .await;
        assert_eq!(granted.status, 201, "{}", granted.body);
        assert_eq!(granted.body["requester"], "alice");
        let state = granted.body["state"].as_str().unwrap();
        assert!(["approved", "active"].contains(&state), "{state}");
        let refused = airlock.call("POST", "/v1/requests", &bob, Some(ask)).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(refused.body["error"]["code"], "denied_by_policy");

        // The config's static tokens keep working beside the provider's.
        let ops = airlock.me("static-ops-token").await;
        assert_eq!(ops.body["user"], "ops", "{}", ops.body);
        let unknown = airlock.me("al_not-a-token").await;
        assert_eq!(unknown.status, 401);
        assert_eq!(unknown.body["error"]["message"], "unknown token");
        airlock.server.shutdown().await;

        // A provider that cannot be reached: its tokens cannot be checked,
        // which is the provider's fault, not the caller's.
        // Port 1: nothing listens there, and no other test can take it
        // meanwhile, as a port freed by a listener can be (a test server
        // there that never answers HTTP would hang this one).
        let cut_off = boot("http://127.0.0.1:1", "60s").await;
        let a = cut_off.me(&alice).await;
        assert_eq!(a.status, 503, "{}", a.body);
        assert_eq!(a.body["error"]["code"], "idp_unavailable");
        cut_off.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_rotated_provider_key_is_fetched_and_forged_tokens_are_refused() {
    bounded(BOUND, async {
        let Some(idp) = Provider::start().await else {
            return;
        };
        let Some(other) = Provider::start().await else {
            return;
        };
        let airlock = boot(&idp.issuer, "0s").await;
        let alice = idp.token("alice", AUDIENCE).await;
        assert_eq!(airlock.me(&alice).await.status, 200);

        // Rotation: tokens signed with the new key are accepted once the
        // re-fetch interval (1s) allows looking again; old ones still are.
        let new_kid = idp.rotate().await;
        let rotated = idp.token("alice", AUDIENCE).await;
        assert_eq!(part(&rotated, 0)["kid"], new_kid.as_str());
        until(
            Duration::from_secs(10),
            "the rotated key to be fetched",
            || async { (airlock.me(&rotated).await.status == 200).then_some(()) },
        )
        .await;
        assert_eq!(airlock.me(&alice).await.status, 200);

        let wrong_audience = idp.token("alice", "https://other.test").await;
        airlock
            .assert_refused(
                &wrong_audience,
                "audience `https://other.test` not accepted",
                "wrong audience",
            )
            .await;

        // Another provider's token: its key is not the trusted provider's.
        let foreign = other.token("alice", AUDIENCE).await;
        let foreign_kid = part(&foreign, 0)["kid"].as_str().unwrap().to_owned();
        airlock
            .assert_refused(
                &foreign,
                &format!("unknown key id `{foreign_kid}`"),
                "unknown key",
            )
            .await;

        let [head, payload, signature] = {
            let p: Vec<&str> = rotated.split('.').collect();
            [p[0], p[1], p[2]]
        };
        let mut claims = part(&rotated, 1);
        claims["preferred_username"] = json!("bob");
        claims["groups"] = json!(["airlock-admins"]);
        let forged_payload = b64(claims.to_string().as_bytes());
        airlock
            .assert_refused(
                &format!("{head}.{forged_payload}.{signature}"),
                "bad signature",
                "payload changed under the provider's signature",
            )
            .await;
        airlock
            .assert_refused(
                &format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
                "algorithm `none` refused",
                "alg none",
            )
            .await;

        // HS256 keyed with the provider's public key (its JWK modulus, and
        // the whole JWK text): refused before any key is used.
        let jwks = idp.jwks().await;
        let jwk = &jwks["keys"][0];
        let hs_head = b64(json!({"alg": "HS256", "kid": jwk["kid"]})
            .to_string()
            .as_bytes());
        for secret in [
            URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
            jwk.to_string().into_bytes(),
        ] {
            let signed = format!("{hs_head}.{payload}");
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
            let tag = ring::hmac::sign(&key, signed.as_bytes());
            airlock
                .assert_refused(
                    &format!("{signed}.{}", b64(tag.as_ref())),
                    "algorithm `HS256` refused",
                    "HS256 with the public key",
                )
                .await;
        }

        // A token that lives 2s; with no skew allowed it is refused once
        // the server's clock passes its `exp`.
        let brief = idp.token("brief", AUDIENCE).await;
        let exp = part(&brief, 1)["exp"].as_i64().unwrap();
        until(
            Duration::from_secs(10),
            "the brief token to expire",
            || async { (airlock.me(&brief).await.status == 401).then_some(()) },
        )
        .await;
        let expired_at = airlock_core::Timestamp::from_unix_millis(exp * 1000).to_rfc3339();
        airlock
            .assert_refused(&brief, &format!("token expired at {expired_at}"), "expired")
            .await;
        airlock.server.shutdown().await;
    })
    .await;
}

/// Signs `who` in through the device flow, as a person at a browser would,
/// with a second factor or not; the ID token `airlock login` would send.
async fn device_login(idp: &Provider, who: &str, mfa: bool) -> String {
    let code = idp.device_code(&[]).await;
    let link = code["verification_uri_complete"].as_str().unwrap();
    let page = Browser::new(idp).approve_device(link, who, mfa).await;
    assert!(page.contains("Sign-in Success"), "{page}");
    let tokens = idp
        .device_tokens(code["device_code"].as_str().unwrap())
        .await;
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no ID token: {tokens}"))
        .to_owned()
}

#[tokio::test]
async fn a_request_needing_fresher_mfa_gets_a_step_up_challenge_and_nothing_is_recorded() {
    bounded(BOUND, async {
        let Some(idp) = Provider::start().await else {
            return;
        };
        let airlock = boot(&idp.issuer, "60s").await;

        // How `airlock login` finds out how to sign in: no token needed.
        let info = airlock.call("GET", "/v1/auth/oidc", "", None).await;
        assert_eq!(info.status, 200, "{}", info.body);
        assert_eq!(
            info.body,
            json!({
                "issuer": idp.issuer,
                "client_id": CLI_CLIENT,
                "scopes": ["openid", "profile", "offline_access"],
                "token": "id_token",
                "mfa_acr_values": [ACR_MFA],
            })
        );

        let password_only = device_login(&idp, "alice", false).await;
        assert_eq!(airlock.me(&password_only).await.body["user"], "alice");
        let ask = |e: &str| json!({"entitlement": e, "duration": "10m"});
        let refused = airlock
            .call("POST", "/v1/requests", &password_only, Some(ask("prod-db")))
            .await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(
            refused.body["error"]["code"], "insufficient_user_authentication",
            "{}",
            refused.body
        );
        assert!(
            refused.challenge.starts_with(
                "Bearer error=\"insufficient_user_authentication\", error_description=\""
            ) && refused
                .challenge
                .ends_with(&format!(", acr_values=\"{ACR_MFA}\", max_age=300")),
            "{}",
            refused.challenge
        );
        // A step-up is no denial: nothing is recorded.
        let mine = airlock
            .call("GET", "/v1/requests?mine=true", &password_only, None)
            .await;
        assert_eq!(mine.body, json!([]), "{}", mine.body);
        // What demands no MFA is granted on the same token.
        let logs = airlock
            .call(
                "POST",
                "/v1/requests",
                &password_only,
                Some(ask("logs-read")),
            )
            .await;
        assert_eq!(logs.status, 201, "{}", logs.body);

        // Signed in again with a second factor: the provider's `auth_time`
        // is the MFA's age policies see, within the 5 minutes demanded.
        let with_mfa = device_login(&idp, "alice", true).await;
        let granted = airlock
            .call("POST", "/v1/requests", &with_mfa, Some(ask("prod-db")))
            .await;
        assert_eq!(granted.status, 201, "{}", granted.body);

        // Where a second must not have passed, that MFA is soon too old.
        let auth_time = part(&with_mfa, 1)["auth_time"].as_i64().unwrap();
        until(Duration::from_secs(10), "a second past the MFA", || async {
            (airlock_testkit::wall_clock_unix_millis() > (auth_time + 2) * 1000).then_some(())
        })
        .await;
        let stale = airlock
            .call("POST", "/v1/requests", &with_mfa, Some(ask("vault-root")))
            .await;
        assert_eq!(stale.status, 401, "{}", stale.body);
        assert!(
            stale.challenge.ends_with("max_age=1"),
            "{}",
            stale.challenge
        );
        airlock.server.shutdown().await;
    })
    .await;
}

/// A person known only to the identity provider (signed in with its token,
/// provisioned over SCIM, in no `[users]` table) owns API tokens like
/// anyone else: the token stands for them as the directory has them at each
/// use, and stops when the provider deactivates them.
#[tokio::test]
async fn a_provisioned_person_owns_api_tokens_that_follow_the_directory() {
    bounded(BOUND, async {
        let Some(idp) = Provider::start().await else {
            return;
        };
        let airlock = boot(&idp.issuer, "60s").await;
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "alice",
            "active": true
        });
        let created = airlock
            .call("POST", "/scim/v2/Users", SCIM_TOKEN, Some(user))
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_owned();
        let group = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "sre",
            "members": [{"value": id}]
        });
        let g = airlock
            .call("POST", "/scim/v2/Groups", SCIM_TOKEN, Some(group))
            .await;
        assert_eq!(g.status, 201, "{}", g.body);

        let alice = idp.token("alice", AUDIENCE).await;
        let ask = json!({"name": "laptop", "expires_in": "1d", "scopes": ["read", "request"]});
        let made = airlock.call("POST", "/v1/tokens", &alice, Some(ask)).await;
        assert_eq!(made.status, 201, "{}", made.body);
        let secret = made.body["secret"].as_str().unwrap().to_owned();
        // Her provisioned group, not the provider token's (no token now).
        let me = airlock.me(&secret).await;
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(me.body["user"], "alice");
        assert_eq!(me.body["groups"], json!(["sre"]));

        // Someone the provider signed in but never provisioned cannot.
        let carol = idp.token("bob", AUDIENCE).await;
        let refused = airlock
            .call("POST", "/v1/tokens", &carol, Some(json!({"name": "x"})))
            .await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(refused.body["error"]["field"], "owner");

        // Deactivated by the provider: her API token is refused at once.
        let off = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}]
        });
        let patched = airlock
            .call(
                "PATCH",
                &format!("/scim/v2/Users/{id}"),
                SCIM_TOKEN,
                Some(off),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.body);
        let after = airlock.me(&secret).await;
        assert_eq!(after.status, 401, "{}", after.body);
        airlock.server.shutdown().await;
    })
    .await;
}
