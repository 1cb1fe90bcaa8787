//! `airlock extend` over the real API, on SQLite and on PostgreSQL, with a
//! clock the test moves: extended at once (the expiry moves once the target
//! confirmed), beyond the maximum, waiting for approvers (and listed in
//! their `pending`), approved, denied, refused by a policy, one at a time,
//! and lapsing when the grant expires first; every step audited.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::time::Duration;

use airlock_server::api::{format_time, RequestQuery};
use airlock_server::client::Action;
use airlock_server::config::Settings;

use fixtures::{
    ask, audit_of, boot_at_t0, extend, on_database, refusal, wait_for_extension, wait_for_state,
    ConfigText, Refusal, T0,
};

mod fixtures;

const MINUTE: Duration = Duration::from_secs(60);

/// alice asks, bob approves database access, ann audits.
const PEOPLE: [(&str, &str); 3] = [
    ("alice", r#"groups = ["eng"]"#),
    ("bob", r#"groups = ["sre"]"#),
    ("ann", r#"roles = ["auditor"]"#),
];

fn settings(dir: &std::path::Path) -> Settings {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    // Logs extend at once (the shorthand), but never past 90 minutes in all.
    std::fs::write(
        dir.join("policies/logs.cedar"),
        "@id(\"logs-at-most-90m\")\n@reason(\"logs are held at most 90 minutes in all\")\n\
         forbid (principal, action == Airlock::Action::\"extend\", resource == Airlock::Entitlement::\"logs\")\n\
         when { context.total_seconds > 5400 };\n",
    )
    .unwrap();
    ConfigText::new(dir, "")
        .policies_folder()
        .noop_connector()
        .approved_by_sre("db", "3h", "")
        .auto_approved("logs", "2h", "")
        .users(&PEOPLE)
        .parse("extensions.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_over_http_on_sqlite_and_postgres() {
    airlock_testkit::on_sqlite_and_postgres(
        "airlock_extend",
        Duration::from_secs(120),
        the_whole_flow,
    )
    .await;
}

async fn the_whole_flow(postgres: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let settings = on_database(settings(dir.path()), postgres.as_deref());
    let (server, base, clock) = boot_at_t0(settings).await;
    let client = |name: &str| fixtures::client(&base, name);
    let (alice, bob, ann) = (client("alice"), client("bob"), client("ann"));

    // Extended at once: the expiry moves when the target confirmed.
    let logs = alice.create_request(&ask("logs")).await.unwrap().id;
    wait_for_state(&alice, &logs, "active").await;
    let asked = alice
        .act(&logs, &extend("30m", "the export runs long"))
        .await
        .unwrap();
    let e = asked.extension.as_ref().unwrap();
    assert_eq!(
        (e.by_seconds, e.previous_expires_at.as_str()),
        (1800, format_time(T0.plus(60 * MINUTE)).as_str())
    );
    let r = wait_for_extension(&alice, &logs, "extended").await;
    assert_eq!(r.expires_at, Some(format_time(T0.plus(90 * MINUTE))));
    assert_eq!(r.duration_seconds, 90 * 60);
    assert_eq!(r.state, "active");

    // Past the entitlement's maximum (2h): the field and the allowance.
    let Refusal {
        status,
        code,
        field,
        message,
    } = refusal(alice.act(&logs, &extend("1h", "more")).await);
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (400, "invalid_input", Some("by"))
    );
    assert!(message.contains("at most 30m"), "{message}");
    // A reason is required; a malformed duration is named.
    let Refusal { status, field, .. } = refusal(alice.act(&logs, &extend("10m", " ")).await);
    assert_eq!((status, field.as_deref()), (400, Some("reason")));
    let Refusal { status, field, .. } = refusal(alice.act(&logs, &extend("soon", "x")).await);
    assert_eq!((status, field.as_deref()), (400, Some("by")));
    // A forbid of the policy set: recorded, refused with its reason.
    let Refusal {
        status,
        code,
        message,
        ..
    } = refusal(alice.act(&logs, &extend("10m", "more")).await);
    assert_eq!((status, code.as_str()), (403, "denied_by_policy"));
    assert!(message.contains("logs-at-most-90m"), "{message}");
    assert!(message.contains("at most 90 minutes"), "{message}");
    let r = alice.get_request(&logs).await.unwrap();
    assert_eq!(r.extension.as_ref().unwrap().state, "denied");
    assert_eq!(r.expires_at, Some(format_time(T0.plus(90 * MINUTE))));
    // Nobody else extends it (bob cannot even see it).
    let Refusal { status, .. } = refusal(bob.act(&logs, &extend("10m", "mine now")).await);
    assert_eq!(status, 404);

    // Waiting for approvers: listed in their pending, approved, extended.
    let db = alice.create_request(&ask("db")).await.unwrap().id;
    bob.act(&db, &Action::Approve { comment: None })
        .await
        .unwrap();
    wait_for_state(&alice, &db, "active").await;
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
    let Refusal { status, code, .. } = refusal(alice.act(&db, &extend("10m", "and more")).await);
    assert_eq!((status, code.as_str()), (409, "conflict"));
    // Nobody approves their own.
    let Refusal { status, .. } = refusal(alice.act(&db, &Action::Approve { comment: None }).await);
    assert_eq!(status, 403);
    bob.act(&db, &Action::Approve { comment: None })
        .await
        .unwrap();
    let r = wait_for_extension(&alice, &db, "extended").await;
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
    let r = wait_for_state(&alice, &db, "expired").await;
    assert_eq!(r.extension.as_ref().unwrap().state, "lapsed");
    assert!(bob.list_requests(&awaiting).await.unwrap().is_empty());

    // Audited, with the extension and the old and new expiry.
    let events = audit_of(&ann, &db).await;
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
