//! Fuzzes the API's request bodies and query strings through the real
//! router, in process: one server (demo catalog and policies, SQLite in a
//! temporary folder, a `command` connector running `/bin/true`) serves every
//! input. The first bytes choose the route, the caller, the request the
//! route acts on and the content type; the rest is the body (or, for a GET,
//! the query). No input may panic, hang or get a 5xx, a body that is not one
//! JSON object is never accepted, and every error is the JSON error body.

#![no_main]

use std::sync::{Arc, OnceLock};

use airlock_server::config::{token_hash, Settings};
use airlock_server::elevation::ElevationSigner;
use airlock_server::engine::{Engine, EngineParts, SystemClock};
use airlock_server::http::{router, AppState};
use airlock_server::policy::Policies;
use airlock_server::server::build_connectors;
use airlock_server::store::sql::SqlStore;
use airlock_server::store::Store;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const USERS: [&str; 4] = ["alice", "bob", "carol", "admin"];

/// (method, path); `{id}` is replaced by one of the requests made at start.
const ROUTES: [(&str, &str); 12] = [
    ("POST", "/v1/requests"),
    ("POST", "/v1/requests/{id}/approve"),
    ("POST", "/v1/requests/{id}/deny"),
    ("POST", "/v1/requests/{id}/cancel"),
    ("POST", "/v1/requests/{id}/release"),
    ("POST", "/v1/requests/{id}/revoke"),
    ("POST", "/v1/policy/reload"),
    ("POST", "/v1/policy/proposals/{id}/approve"),
    ("POST", "/v1/reconcile"),
    ("GET", "/v1/requests"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/entitlements"),
];

const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    None,
];

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: Router,
    /// Requests in different states, for the `{id}` routes.
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path) -> String {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/demo");
    let users = USERS
        .iter()
        .map(|u| {
            let (groups, roles) = match *u {
                "alice" => (r#"["engineers"]"#, "[]"),
                "bob" => (r#"["engineers", "approvers"]"#, "[]"),
                "carol" => (r#"["approvers"]"#, "[]"),
                _ => (r#"["security"]"#, r#"["admin", "auditor"]"#),
            };
            format!(
                "[users.{u}]\ngroups = {groups}\nroles = {roles}\ntoken_sha256 = \"{}\"\n\n",
                token_hash(u)
            )
        })
        .collect::<String>();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

{users}
[connectors.true]
type = "command"
program = "/bin/true"
timeout = "5s"

[policy]
dir = "{policies}"

[entitlements.staging-shell]
max_duration = "1h"
require_reason = true
sensitivity = 1
connector = "true"

[entitlements.prod-db-admin]
max_duration = "4h"
ticket_pattern = "^(INC|CHG)-[0-9]+$"
sensitivity = 3
owner_group = "approvers"
connector = "true"
idle_limit = "30m"

[tickets]
secret = "fuzz-ticket-secret-0123"
"#,
        data = dir.display(),
    )
}

async fn start(dir: &std::path::Path) -> Router {
    let settings = Settings::parse("fuzz.toml", &config(dir), dir)
        .unwrap_or_else(|e| panic!("the fuzz config does not parse: {e}"));
    let policies = Policies::load(
        settings.policy_source.clone(),
        settings.directory.clone(),
        settings.policy_two_person,
    )
    .unwrap_or_else(|e| panic!("the demo policies do not load: {e}"));
    let store = SqlStore::open(&settings.database)
        .await
        .unwrap_or_else(|e| panic!("cannot open the store: {e}"));
    let store: Arc<dyn Store> = Arc::new(store);
    let connectors =
        build_connectors(&settings).unwrap_or_else(|e| panic!("cannot build the connectors: {e}"));
    let engine = Engine::new(EngineParts {
        store,
        catalog: Arc::new(settings.catalog.clone()),
        policies: Arc::new(policies),
        lifecycle: settings.lifecycle.clone(),
        overdue_after: settings.revocation_overdue_after,
        connectors,
        clock: Arc::new(SystemClock),
        routing: settings.notifications.routing.clone(),
        token_max_lifetime: std::time::Duration::from_secs(90 * 24 * 3600),
        access_reviews: Default::default(),
        tickets: settings.tickets.clone(),
        idle_limits: settings.idle_limits.clone(),
    });
    router(AppState {
        engine,
        tokens: Arc::new(settings.token_hashes.clone()),
        mfa_header: Some("x-auth-mfa-at".to_owned()),
        checkpoint_key: None,
        body_timeout: settings.http.body_timeout,
        oidc: None,
        scim: None,
        elevation: Arc::new(ElevationSigner::new(
            airlock_server::elevation::SigningKey::from_bytes(&[7; 32]),
            settings.elevation.clone(),
        )),
    })
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    user: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Option<(StatusCode, Vec<u8>)> {
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {user}"));
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    // Invalid URIs never reach the router: hyper refuses them.
    let req = req.body(Body::from(body)).ok()?;
    let response = app.clone().oneshot(req).await.ok()?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()?;
    Some((status, bytes.to_vec()))
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("no runtime: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary folder: {e}"));
        let (app, ids) = runtime.block_on(async {
            let app = start(dir.path()).await;
            let mut ids = Vec::new();
            for (user, body) in [
                ("alice", r#"{"entitlement":"staging-shell","duration":"30m","reason":"check"}"#),
                ("alice", r#"{"entitlement":"prod-db-admin","duration":"1h","reason":"fix","ticket":"CHG-1"}"#),
                ("bob", r#"{"entitlement":"prod-db-admin","duration":"1h","reason":"outage","break_glass":true}"#),
            ] {
                let created = call(&app, "POST", "/v1/requests", user, Some("application/json"), body.into())
                    .await
                    .and_then(|(_, b)| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["id"].as_str().map(str::to_owned));
                ids.extend(created);
            }
            (app, ids)
        });
        Harness {
            runtime,
            app,
            ids,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [route, user, target, content_type, rest @ ..] = data else {
        return;
    };
    let h = harness();
    let (method, path) = ROUTES[usize::from(*route) % ROUTES.len()];
    let user = USERS[usize::from(*user) % USERS.len()];
    let id = h
        .ids
        .get(usize::from(*target) % h.ids.len().max(1))
        .map_or("unknown", String::as_str);
    let path = path.replace("{id}", id);
    let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
    let (uri, sent) = if method == "GET" {
        let Ok(query) = std::str::from_utf8(rest) else {
            return;
        };
        (format!("{path}?{query}"), Vec::new())
    } else {
        (path, rest.to_vec())
    };
    let Some((status, body)) =
        h.runtime
            .block_on(call(&h.app, method, &uri, user, content_type, sent.clone()))
    else {
        return;
    };
    let text = String::from_utf8_lossy(&body);
    assert!(
        !status.is_server_error(),
        "{method} {uri} answered {status}: {text}"
    );
    // A body is nothing (JSON whitespace) or one JSON object; anything
    // else must be refused, not read as something it is not.
    let empty = sent
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    assert!(
        !status.is_success()
            || empty
            || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&sent).is_ok(),
        "{method} {uri} accepted a body that is not one JSON object ({status}): {:?}",
        String::from_utf8_lossy(&sent)
    );
    if status.is_client_error() {
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{method} {uri} answered {status} with a body that is not JSON ({e}): {text}")
        });
        assert!(
            error["error"]["code"].is_string() && error["error"]["message"].is_string(),
            "{method} {uri} answered {status} without the error body: {text}"
        );
    }
});
