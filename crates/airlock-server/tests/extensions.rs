//! `airlock extend` over the real API, on SQLite and on PostgreSQL, with a
//! clock the test moves: extended at once (the expiry moves once the target
//! confirmed), beyond the maximum, waiting for approvers (and listed in
//! their `pending`), approved, denied, refused by a policy, one at a time,
//! and lapsing when the grant expires first; every step audited.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::sync::Arc;
use std::time::Duration;

use airlock_core::Timestamp;
use airlock_server::api::{
    format_time, AuditQuery, CreateRequest, DurationInput, RequestQuery, RequestView,
};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::{token_hash, Settings};
use airlock_server::engine::{Clock, ManualClock};
use airlock_server::server::start_with_clock;
use airlock_server::store::sql::Location;
use airlock_testkit::{bounded, until};

const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
const MINUTE: Duration = Duration::from_secs(60);

/// alice asks, bob approves database access, ann audits.
const PEOPLE: [(&str, &str); 3] = [
    ("alice", r#"groups = ["eng"]"#),
    ("bob", r#"groups = ["sre"]"#),
    ("ann", r#"roles = ["auditor"]"#),
];

fn token(name: &str) -> String {
    format!("extensions-test-token-{name}")
}

fn settings(dir: &std::path::Path) -> Settings {
    let root = dir.display().to_string();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    // Logs extend at once (the shorthand), but never past 90 minutes in all.
    std::fs::write(
        dir.join("policies/logs.cedar"),
        "@id(\"logs-at-most-90m\")\n@reason(\"logs are held at most 90 minutes in all\")\n\
         forbid (principal, action == Airlock::Action::\"extend\", resource == Airlock::Entitlement::\"logs\")\n\
         when { context.total_seconds > 5400 };\n",
    )
    .unwrap();
    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'
reconcile_every = "off"

[policy]
dir = '{root}/policies'

[connectors.noop]
type = "command"
program = "/bin/true"
timeout = "5s"

[entitlements.db]
requestable_by = ["eng"]
approvers = ["sre"]
max_duration = "3h"
require_reason = false
connector = "noop"

[entitlements.logs]
requestable_by = ["eng"]
auto_approve = true
max_duration = "2h"
require_reason = false
connector = "noop"
"#
    );
    for (name, what) in PEOPLE {
        toml.push_str(&format!(
            "\n[users.{name}]\n{what}\ntoken_sha256 = \"{}\"\n",
            token_hash(&token(name))
        ));
    }
    Settings::parse("extensions.toml", &toml, dir).unwrap()
}

fn ask(entitlement: &str) -> CreateRequest {
    CreateRequest {
        entitlement: entitlement.to_owned(),
        duration: Some(DurationInput::Seconds(3600)),
        reason: String::new(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key: None,
        bundle: None,
        entitlements: Vec::new(),
    }
}

fn extend(by: &str, reason: &str) -> Action {
    Action::Extend {
        by: DurationInput::Text(by.to_owned()),
        reason: reason.to_owned(),
    }
}

/// Waits until `id`'s extension is in `state`.
async fn extension_state(client: &Client, id: &str, state: &str) -> RequestView {
    until(
        Duration::from_secs(20),
        &format!("the extension of {id} to be {state}"),
        || async {
            let r = client.get_request(id).await.unwrap();
            r.extension
                .as_ref()
                .is_some_and(|e| e.state == state)
                .then_some(r)
        },
    )
    .await
}

async fn active(client: &Client, id: &str) {
    until(Duration::from_secs(20), "the grant", || async {
        (client.get_request(id).await.unwrap().state == "active").then_some(())
    })
    .await;
}

fn api_error(result: Result<RequestView, ClientError>) -> (u16, String, Option<String>, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            field,
            message,
            ..
        }) => (status, code, field, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_over_http_on_sqlite_and_postgres() {
    for postgres in [false, true] {
        let db = if postgres {
            let Some(base) = airlock_testkit::service_url("AIRLOCK_TEST_POSTGRES_URL") else {
                continue;
            };
            Some(airlock_testkit::FreshDatabase::create(&base, "airlock_extend").await)
        } else {
            None
        };
        bounded(
            Duration::from_secs(120),
            the_whole_flow(db.as_ref().map(|d| d.url.clone())),
        )
        .await;
        if let Some(db) = db {
            db.drop_now().await;
        }
    }
}

async fn the_whole_flow(postgres: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path());
    if let Some(url) = postgres {
        settings.database = Location::Postgres(url);
    }
    let clock = Arc::new(ManualClock::new(T0));
    let server = start_with_clock(settings, Arc::clone(&clock) as Arc<dyn Clock>)
        .await
        .unwrap();
    let base = format!("http://{}", server.addr());
    let client = |name: &str| Client::new(&base, &token(name)).unwrap();
    let (alice, bob, ann) = (client("alice"), client("bob"), client("ann"));

    // Extended at once: the expiry moves when the target confirmed.
    let logs = alice.create_request(&ask("logs")).await.unwrap().id;
    active(&alice, &logs).await;
    let asked = alice
        .act(&logs, &extend("30m", "the export runs long"))
        .await
        .unwrap();
    let e = asked.extension.as_ref().unwrap();
    assert_eq!(
        (e.by_seconds, e.previous_expires_at.as_str()),
        (1800, format_time(T0.plus(60 * MINUTE)).as_str())
    );
    let r = extension_state(&alice, &logs, "extended").await;
    assert_eq!(r.expires_at, Some(format_time(T0.plus(90 * MINUTE))));
    assert_eq!(r.duration_seconds, 90 * 60);
    assert_eq!(r.state, "active");

    // Past the entitlement's maximum (2h): the field and the allowance.
    let (status, code, field, message) = api_error(alice.act(&logs, &extend("1h", "more")).await);
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (400, "invalid_input", Some("by"))
    );
    assert!(message.contains("at most 30m"), "{message}");
    // A reason is required; a malformed duration is named.
    let (status, _, field, _) = api_error(alice.act(&logs, &extend("10m", " ")).await);
    assert_eq!((status, field.as_deref()), (400, Some("reason")));
    let (status, _, field, _) = api_error(alice.act(&logs, &extend("soon", "x")).await);
    assert_eq!((status, field.as_deref()), (400, Some("by")));
    // A forbid of the policy set: recorded, refused with its reason.
    let (status, code, _, message) = api_error(alice.act(&logs, &extend("10m", "more")).await);
    assert_eq!((status, code.as_str()), (403, "denied_by_policy"));
    assert!(message.contains("logs-at-most-90m"), "{message}");
    assert!(message.contains("at most 90 minutes"), "{message}");
    let r = alice.get_request(&logs).await.unwrap();
    assert_eq!(r.extension.as_ref().unwrap().state, "denied");
    assert_eq!(r.expires_at, Some(format_time(T0.plus(90 * MINUTE))));
    // Nobody else extends it (bob cannot even see it).
    let (status, ..) = api_error(bob.act(&logs, &extend("10m", "mine now")).await);
    assert_eq!(status, 404);

    // Waiting for approvers: listed in their pending, approved, extended.
    let db = alice.create_request(&ask("db")).await.unwrap().id;
    bob.act(&db, &Action::Approve { comment: None })
        .await
        .unwrap();
    active(&alice, &db).await;
    let asked = alice
        .act(&db, &extend("30m", "the migration runs long"))
        .await
        .unwrap();
    assert_eq!(asked.extension.as_ref().unwrap().state, "pending");
    let awaiting = RequestQuery {
        awaiting_me: Some(true),
        ..RequestQuery::default()
    };
    let pending: Vec<String> = bob
        .list_requests(&awaiting)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, std::slice::from_ref(&db));
    assert!(alice.list_requests(&awaiting).await.unwrap().is_empty());
    // One at a time.
    let (status, code, ..) = api_error(alice.act(&db, &extend("10m", "and more")).await);
    assert_eq!((status, code.as_str()), (409, "conflict"));
    // Nobody approves their own.
    let (status, ..) = api_error(alice.act(&db, &Action::Approve { comment: None }).await);
    assert_eq!(status, 403);
    bob.act(&db, &Action::Approve { comment: None })
        .await
        .unwrap();
    let r = extension_state(&alice, &db, "extended").await;
    assert_eq!(r.expires_at, Some(format_time(T0.plus(90 * MINUTE))));
    assert!(bob.list_requests(&awaiting).await.unwrap().is_empty());

    // Denied by the approver: the grant stays as it was.
    alice.act(&db, &extend("15m", "again")).await.unwrap();
    let denied = bob
        .act(
            &db,
            &Action::Deny {
                reason: "finish tomorrow".to_owned(),
            },
        )
        .await
        .unwrap();
    assert_eq!(denied.state, "active");
    let e = denied.extension.as_ref().unwrap();
    assert_eq!(
        (e.state.as_str(), e.note.as_deref()),
        ("denied", Some("finish tomorrow"))
    );
    assert_eq!(denied.expires_at, Some(format_time(T0.plus(90 * MINUTE))));

    // Still waiting when the grant expires: it lapses with it.
    alice
        .act(&db, &extend("10m", "one last time"))
        .await
        .unwrap();
    clock.advance(90 * MINUTE);
    let r = until(Duration::from_secs(20), "the expiry", || async {
        let r = alice.get_request(&db).await.unwrap();
        (r.state == "expired").then_some(r)
    })
    .await;
    assert_eq!(r.extension.as_ref().unwrap().state, "lapsed");
    assert!(bob.list_requests(&awaiting).await.unwrap().is_empty());

    // Audited, with the extension and the old and new expiry.
    let events = ann
        .audit(&AuditQuery {
            request: Some(db.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e.action.as_str())
        .filter(|a| a.contains("extend") || a.contains("extension"))
        .collect();
    assert_eq!(
        actions,
        [
            "extension_requested",
            "extension_approval_recorded",
            "extension_approved",
            "extended",
            "extension_requested",
            "extension_denied",
            "extension_requested",
            "extension_lapsed",
        ]
    );
    let extended = events.iter().find(|e| e.action == "extended").unwrap();
    assert_eq!(
        extended.details.get("previous_expires_at"),
        Some(&format_time(T0.plus(60 * MINUTE)))
    );
    assert_eq!(
        extended.details.get("new_expires_at"),
        Some(&format_time(T0.plus(90 * MINUTE)))
    );
    assert_eq!(
        extended
            .details
            .get("extension_seconds")
            .map(String::as_str),
        Some("1800")
    );
    server.shutdown().await;
}
