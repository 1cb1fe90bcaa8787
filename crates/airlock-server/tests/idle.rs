//! Idle limits over the real API, on SQLite and on PostgreSQL, with a clock
//! the test moves: a grant nobody uses is warned (an audit event and a
//! notification to its holder) and then released as idle — audited as a
//! release with the cause `idle`, by the system, and removed from the
//! target like any release; a grant its holder checks is not; one with an
//! SSH session open is not until the session ends, and then is once idle
//! for the limit; a grant of an entitlement without a limit never is.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::sync::Arc;
use std::time::Duration;

use airlock_server::api::{AuditEventView, CreateRequest, DurationInput, NotificationsQuery};
use airlock_server::client::Client;
use airlock_server::config::Settings;
use airlock_server::engine::{ManualClock, ACTIVITY_LAG, CHECKS_FLUSH_EVERY, IDLE_ROUND};
use airlock_testkit::until;
use fixtures::{audit_of_action, boot_at_t0, on_database, wait_for_state, ConfigText, T0};

mod fixtures;

const MINUTE: Duration = Duration::from_secs(60);
/// `idle_limit = "10m"`: warned 2m30s (a quarter) before the release.
const LIMIT: Duration = Duration::from_secs(600);
const WARNING: Duration = Duration::from_secs(150);

fn settings(dir: &std::path::Path) -> Settings {
    ConfigText::new(dir, "")
        .noop_connector()
        .auto_approved("logs", "2h", "idle_limit = \"10m\"\n")
        .auto_approved("db", "2h", "")
        .text(
            r#"
[notifications]
requester = ["hook"]

[notifications.channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/airlock"
secret = "idle-test-webhook-secret"
"#,
        )
        .users(&[
            ("alice", r#"groups = ["eng"]"#),
            ("bob", r#"groups = ["eng"]"#),
            ("carol", r#"groups = ["eng"]"#),
            ("ann", r#"roles = ["auditor"]"#),
            ("rhea", r#"roles = ["reporter"]"#),
        ])
        .parse("idle.toml")
}

/// A request for two hours.
fn ask(entitlement: &str) -> CreateRequest {
    CreateRequest {
        duration: Some(DurationInput::Seconds(7200)),
        ..fixtures::ask(entitlement)
    }
}

fn login(id: &str) -> String {
    format!("Accepted publickey for root from 127.0.0.1 port 45468 ssh2: ED25519-CERT SHA256:Fr0t38rBxraldJoI60PyB3uHyCfWAKhoWJzJ39AVFd0 ID {id} (serial 42) CA ED25519 SHA256:W3BEapHdTBr2G+ZaBSajgel+DqANKZBWGX4mONb+jd0")
}

const LOGOUT: &str = "Disconnected from user root 127.0.0.1 port 45468";

/// Waits for `id`'s first `action` event. The runner reads the clock once
/// per round and sleeps a round after it: should the clock have moved on
/// while a round ran, the next round is due only a round later, so the
/// clock is moved on by a round each time a wait drags on.
async fn event_at(ann: &Client, clock: &ManualClock, id: &str, action: &str) -> AuditEventView {
    for _ in 0..10 {
        // The outer bound ends the wait; the inner one, which panics, is
        // only there to be longer.
        let found = tokio::time::timeout(
            Duration::from_secs(3),
            until(Duration::from_secs(60), action, || async {
                audit_of_action(ann, id, action).await.into_iter().next()
            }),
        )
        .await;
        if let Ok(event) = found {
            return event;
        }
        clock.advance(IDLE_ROUND);
    }
    panic!("no `{action}` event on `{id}`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_grants_are_warned_then_released_on_sqlite_and_postgres() {
    airlock_testkit::on_sqlite_and_postgres(
        "airlock_idle",
        Duration::from_secs(180),
        the_whole_flow,
    )
    .await;
}

async fn the_whole_flow(postgres: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let settings = on_database(settings(dir.path()), postgres.as_deref());
    let (server, base, clock) = boot_at_t0(settings).await;
    let client = |name: &str| fixtures::client(&base, name);
    let (alice, bob, carol, ann, rhea) = (
        client("alice"),
        client("bob"),
        client("carol"),
        client("ann"),
        client("rhea"),
    );
    let at = |d: Duration| T0.plus(d);

    // Granted at T0: three grants of `logs` (10m idle limit) and alice's
    // grant of `db` (none).
    let alices = alice.create_request(&ask("logs")).await.unwrap().id;
    let bobs = bob.create_request(&ask("logs")).await.unwrap().id;
    let carols = carol.create_request(&ask("logs")).await.unwrap().id;
    let alices_db = alice.create_request(&ask("db")).await.unwrap().id;
    for id in [&alices, &bobs, &carols, &alices_db] {
        wait_for_state(&ann, id, "active").await;
    }

    // At 5m bob checks his grant and carol logs in over SSH.
    clock.advance_to(at(5 * MINUTE));
    assert!(bob.check("bob", "logs").await.unwrap().holds);
    let posted = rhea
        .report_activity(&carols, "web-1", vec![login(&carols)])
        .await
        .unwrap();
    assert_eq!(posted.recorded, 1);

    // alice's grant, unused since T0, is due at 10m (+ the lag): her
    // warning comes 2m30s before.
    let due = at(LIMIT + ACTIVITY_LAG);
    clock.advance_to(due.minus(WARNING));
    let warning = event_at(&ann, &clock, &alices, "idle_warned").await;
    let warned_at = airlock_server::api::parse_time(&warning.at).unwrap();
    assert!(warned_at >= due.minus(WARNING), "{warning:?}");
    assert_eq!(warning.actor, "system");
    assert_eq!(
        warning.details.get("idle_since").map(String::as_str),
        Some(T0.to_rfc3339().as_str())
    );
    let release_at = due.max(warned_at.plus(WARNING));
    assert_eq!(
        warning.details.get("release_at").map(String::as_str),
        Some(release_at.to_rfc3339().as_str())
    );
    // The holder is told, on the requester's channel.
    let outbox = ann
        .notifications(&NotificationsQuery {
            request: Some(alices.clone()),
            ..NotificationsQuery::default()
        })
        .await
        .unwrap();
    assert!(
        outbox
            .notifications
            .iter()
            .any(|n| n.topic == "idle_warning" && n.channel == "hook"),
        "{outbox:?}"
    );
    // Still active until then.
    assert_eq!(ann.get_request(&alices).await.unwrap().state, "active");

    // At the release time it is released as idle, and removed.
    clock.advance_to(release_at);
    let released = event_at(&ann, &clock, &alices, "released").await;
    assert_eq!(released.actor, "system");
    assert_eq!(
        released.details.get("cause").map(String::as_str),
        Some("idle")
    );
    let r = until(Duration::from_secs(20), "the removal", || async {
        let r = ann.get_request(&alices).await.unwrap();
        r.deprovisioned_at.is_some().then_some(r)
    })
    .await;
    assert_eq!(r.state, "released");
    assert_eq!(r.ended_by, None);
    assert!(
        r.end_reason.as_deref().is_some_and(
            |w| w.starts_with("idle: not used since") && w.contains("(idle limit 10m)")
        ),
        "{:?}",
        r.end_reason
    );
    assert_eq!(ann.get_request(&alices_db).await.unwrap().state, "active");

    // bob keeps checking; carol's session stays open until 20m.
    let check_at = |d: Duration| {
        let bob = bob.clone();
        let clock = Arc::clone(&clock);
        async move {
            clock.advance_to(at(d));
            assert!(bob.check("bob", "logs").await.unwrap().holds);
        }
    };
    check_at(11 * MINUTE).await;
    check_at(16 * MINUTE).await;
    clock.advance_to(at(20 * MINUTE));
    rhea.report_activity(&carols, "web-1", vec![LOGOUT.to_owned()])
        .await
        .unwrap();
    check_at(21 * MINUTE).await;
    check_at(26 * MINUTE).await;

    // carol's grant is idle from her logout: warned, then released.
    let carol_due = at(20 * MINUTE + LIMIT + ACTIVITY_LAG);
    clock.advance_to(carol_due.minus(WARNING));
    let warning = event_at(&ann, &clock, &carols, "idle_warned").await;
    let warned_at = airlock_server::api::parse_time(&warning.at).unwrap();
    assert!(
        warned_at >= carol_due.minus(WARNING),
        "carol was warned while her session was open: {warning:?}"
    );
    check_at(31 * MINUTE).await;
    clock.advance_to(carol_due.max(warned_at.plus(WARNING)));
    let released = event_at(&ann, &clock, &carols, "released").await;
    assert_eq!(
        released.details.get("cause").map(String::as_str),
        Some("idle")
    );

    // bob, who kept checking, was never warned; nor was the grant of an
    // entitlement without a limit.
    for id in [&bobs, &alices_db] {
        assert_eq!(ann.get_request(id).await.unwrap().state, "active");
        let warned = audit_of_action(&ann, id, "idle_warned").await;
        assert!(warned.is_empty(), "{id} ({bobs} is bob's): {warned:?}");
    }
    // Each of bob's checks counted once (the last one stored a second on).
    clock.advance(CHECKS_FLUSH_EVERY);
    until(Duration::from_secs(20), "bob's six checks", || async {
        (ann.get_request(&bobs).await.unwrap().check_count == 6).then_some(())
    })
    .await;
    server.shutdown().await;
}
