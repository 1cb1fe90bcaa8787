//! Elevation claims over the real API: the holder of an active grant gets a
//! JWT that an application verifies with an ordinary JWT library (node's
//! `jose`, `tests/oidc/verify-jwt.mjs`) against `/.well-known/jwks.json`,
//! pinned to EdDSA, with issuer and audience checked; a token altered in
//! transit is refused; a claim never outlives its grant; only the holder
//! gets one, only while the grant is active; each is audited; the key
//! survives a restart. Skips loudly without node or the npm packages.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_server::api::{CreateRequest, DurationInput, RequestView};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::Settings;
use airlock_server::server::start;
use airlock_testkit::{bounded, service_path, service_program};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fixtures::{ask, audit_by_action, base_url, token, wait_for_state, ConfigText};
use serde_json::Value;

mod fixtures;

const BOUND: Duration = Duration::from_secs(60);
const ISSUER: &str = "https://airlock.test";

fn settings(dir: &Path) -> Settings {
    ConfigText::new(dir, "")
        .text(&format!(
            "\n[server.elevation]\nissuer = \"{ISSUER}\"\nlifetime = \"10m\"\n"
        ))
        .noop_connector()
        .auto_approved("db-admin", "2h", "")
        .auto_approved("db-read", "2h", "")
        .users(&[
            ("alice", r#"groups = ["eng"]"#),
            ("bob", r#"groups = ["eng"]"#),
            ("ann", r#"roles = ["auditor"]"#),
        ])
        .parse("elevation.toml")
}

/// `verify-jwt.mjs` with node, once the npm packages are there.
fn verifier() -> Option<(PathBuf, PathBuf)> {
    let node = service_program("node")?;
    let dir = airlock_testkit::oidc::provider_dir();
    service_path(
        &dir.join("node_modules/jose"),
        "npm ci --prefix crates/airlock-server/tests/oidc",
    )?;
    Some((node, dir.join("verify-jwt.mjs")))
}

/// What the application's JWT library says of `jwt`: the header and
/// claims, or why it refused.
async fn verify(
    (node, script): &(PathBuf, PathBuf),
    base: &str,
    jwt: &str,
    audience: Option<&str>,
) -> Result<Value, String> {
    let out = tokio::process::Command::new(node)
        .arg(script)
        .arg(format!("{base}/.well-known/jwks.json"))
        .arg(jwt)
        .arg(ISSUER)
        .args(audience)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn granted(client: &Client, entitlement: &str, minutes: u64) -> RequestView {
    let created = client
        .create_request(&CreateRequest {
            duration: Some(DurationInput::Seconds(minutes * 60)),
            ..ask(entitlement)
        })
        .await
        .unwrap();
    wait_for_state(client, &created.id, "active").await
}

fn unix_seconds(rfc3339: &str) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339).unwrap();
    i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_verifies_a_claim_that_never_outlives_its_grant() {
    let Some(tools) = verifier() else {
        return;
    };
    bounded(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let server = start(settings(dir.path())).await.unwrap();
        let base = base_url(&server);
        let alice = fixtures::client(&base, "alice");
        let bob = alice.with_token(&token("bob"));

        // An hour's grant: the claim lasts its configured ten minutes.
        let hour = granted(&alice, "db-admin", 60).await;
        let claim = alice
            .elevation(&hour.id, Some("billing".to_owned()))
            .await
            .unwrap();
        assert_eq!(claim.issuer, ISSUER);
        let verified = verify(&tools, &base, &claim.token, Some("billing"))
            .await
            .unwrap_or_else(|e| panic!("the application refused a good claim: {e}"));
        let claims = &verified["claims"];
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["entitlement"], "db-admin");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["request"], hour.id.as_str());
        assert_eq!(claims["aud"], "billing");
        assert_eq!(claims["jti"], claim.id.as_str());
        assert_eq!(claims["break_glass"], false);
        assert_eq!(verified["header"]["kid"], claim.key_id.as_str());
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 600, "{claims}");
        assert_eq!(exp, unix_seconds(&claim.expires_at));

        // Another application, or one expecting another issuer's claims,
        // refuses it; so does everyone when a byte of it changed.
        let wrong_audience = verify(&tools, &base, &claim.token, Some("payroll")).await;
        assert!(wrong_audience.unwrap_err().contains("aud"));
        let parts: Vec<&str> = claim.token.split('.').collect();
        let mut payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = Value::String("bob".to_owned());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        let refused = verify(&tools, &base, &forged, Some("billing")).await;
        assert!(
            refused.as_ref().unwrap_err().contains("signature"),
            "{refused:?}"
        );

        // A two-minute grant: the claim ends with the grant, not later.
        let short = granted(&alice, "db-read", 2).await;
        let brief = alice.elevation(&short.id, None).await.unwrap();
        assert_eq!(
            unix_seconds(&brief.expires_at),
            unix_seconds(short.expires_at.as_deref().unwrap()),
        );
        let claims = verify(&tools, &base, &brief.token, None).await.unwrap();
        assert!(claims["claims"].get("aud").is_none(), "{claims}");

        // Only the holder, and only while the grant gives access: bob
        // cannot even see it; the auditor sees it but holds nothing.
        match bob.elevation(&hour.id, None).await {
            Err(ClientError::Api { status: 404, .. }) => {}
            other => panic!("bob got a claim on alice's grant: {other:?}"),
        }
        match alice
            .with_token(&token("ann"))
            .elevation(&hour.id, None)
            .await
        {
            Err(ClientError::Api {
                status: 403,
                message,
                ..
            }) => assert!(message.contains("only the requester"), "{message}"),
            other => panic!("the auditor got a claim on alice's grant: {other:?}"),
        }
        match alice.elevation(&hour.id, Some("x".repeat(257))).await {
            Err(ClientError::Api {
                status: 400, field, ..
            }) => assert_eq!(field.as_deref(), Some("audience")),
            other => panic!("an overlong audience was taken: {other:?}"),
        }
        alice.act(&short.id, &Action::Release).await.unwrap();
        match alice.elevation(&short.id, None).await {
            Err(ClientError::Api {
                status: 409,
                message,
                ..
            }) => assert!(message.contains("not an active grant"), "{message}"),
            other => panic!("a released grant was proved: {other:?}"),
        }

        // Each claim is in the audit log, with its id.
        let events = audit_by_action(&alice.with_token(&token("ann")), "elevation_claimed").await;
        assert_eq!(events.len(), 2, "{events:#?}");
        assert!(
            events.iter().any(|e| e.action == "elevation_claimed"
                && e.details.get("claim") == Some(&claim.id)
                && e.details.get("audience").map(String::as_str) == Some("billing")),
            "{events:#?}"
        );
        server.shutdown().await;

        // The key is kept: after a restart the same key signs and the old
        // claim still verifies.
        let server = start(settings(dir.path())).await.unwrap();
        let base = base_url(&server);
        let again = fixtures::client(&base, "alice")
            .elevation(&hour.id, None)
            .await
            .unwrap();
        assert_eq!(again.key_id, claim.key_id);
        verify(&tools, &base, &claim.token, Some("billing"))
            .await
            .unwrap();
        server.shutdown().await;
    })
    .await;
}
