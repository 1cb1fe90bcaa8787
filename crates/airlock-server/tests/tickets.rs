//! The ticket system's signed webhook (`POST /v1/tickets/{ref}/closed`)
//! over the real API, on SQLite and on PostgreSQL, with a clock the test
//! moves: a closed ticket revokes the grants and cancels the unstarted
//! requests carrying it and leaves other tickets' alone, audited as the
//! ticket system's doing with the ticket as the cause; a missing header, a
//! wrong secret, a changed body, a timestamp outside the window either way
//! and a body naming another ticket are refused and change nothing; a
//! replayed delivery is refused and changes nothing, after a restart too
//! and, on PostgreSQL, on another replica; closing the ticket again ends
//! nothing more; the previous secret is taken during a rotation.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use airlock_connectors::webhook::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use airlock_core::Timestamp;
use airlock_server::api::{format_time, AuditQuery, CreateRequest};
use airlock_server::client::Client;
use airlock_server::config::Settings;
use airlock_server::engine::{Clock, ManualClock};
use airlock_testkit::{bounded, until};
use fixtures::{
    audit_of, audit_of_action, boot, boot_at_t0, on_database, wait_for_state, ConfigText, T0, WAIT,
};
use serde_json::Value;

mod fixtures;

const SECRET: &[u8] = b"ticket-secret-0123456789";
const PREVIOUS: &[u8] = b"old-ticket-secret-0123";

fn settings(dir: &std::path::Path, data: &str) -> Settings {
    ConfigText::with_data_in(dir, data, "")
        .noop_connector()
        .auto_approved("logs", "2h", "")
        .approved_by_sre("db", "2h", "")
        .text(&format!(
            "\n[tickets]\nsecret = \"{}\"\nprevious_secret = \"{}\"\n",
            String::from_utf8_lossy(SECRET),
            String::from_utf8_lossy(PREVIOUS),
        ))
        .users(&[
            ("alice", r#"groups = ["eng"]"#),
            ("bob", r#"groups = ["eng"]"#),
            ("carol", r#"groups = ["sre"]"#),
            ("ann", r#"roles = ["auditor"]"#),
        ])
        .parse("tickets.toml")
}

fn ask(entitlement: &str, ticket: &str, start_at: Option<Timestamp>) -> CreateRequest {
    CreateRequest {
        ticket: Some(ticket.to_owned()),
        start_at: start_at.map(format_time),
        ..fixtures::ask(entitlement)
    }
}

/// One delivery as the ticket system would send it: `body`, signed with
/// `secret` at `signed_at` (Unix seconds), or with `signature` as given.
#[derive(Clone)]
struct Delivery {
    path_ref: String,
    body: String,
    timestamp: Option<String>,
    signature: Option<String>,
}

impl Delivery {
    fn signed(path_ref: &str, body_ticket: &str, secret: &[u8], signed_at: Timestamp) -> Delivery {
        Delivery::signed_body(
            path_ref,
            serde_json::json!({ "ticket": body_ticket }),
            secret,
            signed_at,
        )
    }

    fn signed_body(path_ref: &str, body: Value, secret: &[u8], signed_at: Timestamp) -> Delivery {
        let body = body.to_string();
        let timestamp = (signed_at.unix_millis() / 1000).to_string();
        Delivery {
            path_ref: path_ref.to_owned(),
            signature: Some(sign(secret, &timestamp, body.as_bytes())),
            timestamp: Some(timestamp),
            body,
        }
    }

    async fn send(&self, base: &str) -> (u16, Value) {
        let mut post = reqwest::Client::new()
            .post(format!("{base}/v1/tickets/{}/closed", self.path_ref))
            .header("content-type", "application/json")
            .body(self.body.clone());
        if let Some(t) = &self.timestamp {
            post = post.header(TIMESTAMP_HEADER, t);
        }
        if let Some(s) = &self.signature {
            post = post.header(SIGNATURE_HEADER, s);
        }
        let response = post.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// The error a refused delivery answered: (status, code, field).
fn error(answer: &(u16, Value)) -> (u16, String, Option<String>) {
    let e = &answer.1["error"];
    (
        answer.0,
        e["code"].as_str().unwrap_or_default().to_owned(),
        e["field"].as_str().map(str::to_owned),
    )
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// Everything a refused delivery must leave as it was: each request's
/// state and the whole audit record.
async fn snapshot(ann: &Client, requests: &[&str]) -> (Vec<String>, usize, i64) {
    let mut states = Vec::new();
    for id in requests {
        states.push(ann.get_request(id).await.unwrap().state);
    }
    let events = ann
        .audit(&AuditQuery {
            limit: Some(1000),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let head = events.iter().map(|e| e.seq).max().unwrap_or(0);
    (states, events.len(), head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_ticket_ends_its_access_on_sqlite_and_postgres() {
    airlock_testkit::on_sqlite_and_postgres(
        "airlock_tickets",
        Duration::from_secs(120),
        the_whole_flow,
    )
    .await;
}

async fn the_whole_flow(postgres: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let with_database = |data: &str| on_database(settings(dir.path(), data), postgres.as_deref());
    let clock = Arc::new(ManualClock::new(T0));
    let (server, base) = boot(with_database("data"), &clock).await;
    let client = |name: &str| fixtures::client(&base, name);
    let (alice, bob, carol, ann) = (
        client("alice"),
        client("bob"),
        client("carol"),
        client("ann"),
    );

    // INC-1: alice's grant and her pending request, bob's approved request
    // that starts in an hour; INC-2: bob's grant.
    let alice_logs = alice
        .create_request(&ask("logs", "INC-1", None))
        .await
        .unwrap()
        .id;
    let alice_db = alice
        .create_request(&ask("db", "INC-1", None))
        .await
        .unwrap()
        .id;
    let bob_logs = bob
        .create_request(&ask("logs", "INC-2", None))
        .await
        .unwrap()
        .id;
    let bob_db = bob
        .create_request(&ask(
            "db",
            "INC-1",
            Some(T0.plus(Duration::from_secs(3600))),
        ))
        .await
        .unwrap()
        .id;
    carol
        .act(
            &bob_db,
            &airlock_server::client::Action::Approve { comment: None },
        )
        .await
        .unwrap();
    wait_for_state(&ann, &alice_logs, "active").await;
    wait_for_state(&ann, &bob_logs, "active").await;
    assert_eq!(ann.get_request(&alice_db).await.unwrap().state, "pending");
    assert_eq!(ann.get_request(&bob_db).await.unwrap().state, "approved");
    let all = [
        alice_logs.as_str(),
        alice_db.as_str(),
        bob_logs.as_str(),
        bob_db.as_str(),
    ];
    let before = snapshot(&ann, &all).await;

    // Refused deliveries, each naming what was wrong; nothing changes.
    let good = Delivery::signed("INC-1", "INC-1", SECRET, T0);
    let five_minutes = Duration::from_secs(300);
    let refusals = [
        (
            "no timestamp",
            Delivery {
                timestamp: None,
                ..good.clone()
            },
            (401, "bad_signature", Some(TIMESTAMP_HEADER)),
        ),
        (
            "no signature",
            Delivery {
                signature: None,
                ..good.clone()
            },
            (401, "bad_signature", Some(SIGNATURE_HEADER)),
        ),
        (
            "another secret",
            Delivery::signed("INC-1", "INC-1", b"not-the-ticket-secret", T0),
            (401, "bad_signature", Some(SIGNATURE_HEADER)),
        ),
        (
            "a changed body",
            Delivery {
                body: r#"{"ticket":"INC-2"}"#.to_owned(),
                ..good.clone()
            },
            (401, "bad_signature", Some(SIGNATURE_HEADER)),
        ),
        (
            "a changed timestamp",
            Delivery {
                timestamp: Some("1800000001".to_owned()),
                ..good.clone()
            },
            (401, "bad_signature", Some(SIGNATURE_HEADER)),
        ),
        (
            "five minutes old",
            Delivery::signed("INC-1", "INC-1", SECRET, T0.minus(five_minutes)),
            (401, "stale_delivery", Some(TIMESTAMP_HEADER)),
        ),
        (
            "five minutes ahead",
            Delivery::signed("INC-1", "INC-1", SECRET, T0.plus(five_minutes)),
            (401, "stale_delivery", Some(TIMESTAMP_HEADER)),
        ),
        (
            "the body closes another ticket",
            Delivery::signed("INC-1", "INC-2", SECRET, T0),
            (400, "invalid_input", Some("ticket")),
        ),
        (
            "a blank ticket",
            Delivery::signed("%20", " ", SECRET, T0),
            (400, "invalid_input", Some("ref")),
        ),
    ];
    for (what, delivery, (status, code, field)) in refusals {
        let answer = delivery.send(&base).await;
        assert_eq!(
            error(&answer),
            (status, code.to_owned(), field.map(str::to_owned)),
            "{what}: {}",
            answer.1
        );
        assert_eq!(
            snapshot(&ann, &all).await,
            before,
            "{what} changed something"
        );
    }
    let stale = Delivery::signed(
        "INC-1",
        "INC-1",
        SECRET,
        T0.minus(Duration::from_secs(3600)),
    );
    let (_, said) = stale.send(&base).await;
    let message = said["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("signed 1h ago") && message.contains("within 5m"),
        "{message}"
    );

    // The ticket closes: INC-1's grant is revoked, its unstarted requests
    // cancelled; INC-2's grant stays.
    let (status, closed) = good.send(&base).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["ticket"], "INC-1");
    assert_eq!(
        ids(&closed["revoked"]),
        BTreeSet::from([alice_logs.clone()])
    );
    assert_eq!(
        ids(&closed["cancelled"]),
        BTreeSet::from([alice_db.clone(), bob_db.clone()])
    );
    let revoked = wait_for_state(&ann, &alice_logs, "revoked").await;
    assert_eq!(
        revoked.end_reason.as_deref(),
        Some("ticket `INC-1` was closed")
    );
    for id in [&alice_db, &bob_db] {
        wait_for_state(&ann, id, "cancelled").await;
    }
    assert_eq!(ann.get_request(&bob_logs).await.unwrap().state, "active");
    // The record says who and why; the removal from the target follows.
    let events = audit_of(&ann, &alice_logs).await;
    let revocation = events.iter().find(|e| e.action == "revoked").unwrap();
    assert_eq!(revocation.actor, "tickets:webhook");
    // Without an id of its own, the delivery is named by its signature.
    let signature = good.signature.clone().unwrap();
    assert_eq!(
        (
            revocation.details.get("cause").map(String::as_str),
            revocation.details.get("ticket").map(String::as_str),
            revocation.details.get("delivery").map(String::as_str),
        ),
        (
            Some("ticket `INC-1` was closed"),
            Some("INC-1"),
            signature.get(7..23)
        )
    );
    until(WAIT, "the grant's removal", || async {
        ann.get_request(&alice_logs)
            .await
            .unwrap()
            .deprovisioned_at
            .map(|_| ())
    })
    .await;
    let after = snapshot(&ann, &all).await;

    // The same delivery again is a replay: refused, nothing changes.
    assert_eq!(
        error(&good.send(&base).await),
        (409, "replayed_delivery".to_owned(), None)
    );
    assert_eq!(snapshot(&ann, &all).await, after);
    // So it is after a restart (the store remembers, not the process) ...
    // (each start records the policy set it starts with).
    server.shutdown().await;
    let (server, base) = boot(with_database("data"), &clock).await;
    let ann = fixtures::client(&base, "ann");
    let replica = match &postgres {
        Some(_) => Some(boot(with_database("replica"), &clock).await),
        None => None,
    };
    let after = snapshot(&ann, &all).await;
    assert_eq!(
        error(&good.send(&base).await),
        (409, "replayed_delivery".to_owned(), None)
    );
    // ... and on another replica sharing the database.
    if let Some((_, replica_base)) = &replica {
        assert_eq!(
            error(&good.send(replica_base).await),
            (409, "replayed_delivery".to_owned(), None)
        );
        let fresh = Delivery::signed("INC-1", "INC-1", SECRET, T0.plus(Duration::from_secs(2)));
        assert_eq!(fresh.send(&base).await.0, 200);
        assert_eq!(
            error(&fresh.send(replica_base).await),
            (409, "replayed_delivery".to_owned(), None)
        );
    }
    assert_eq!(snapshot(&ann, &all).await, after);

    // Closed again, signed anew (with the previous secret, mid-rotation):
    // nothing more to end.
    let again = Delivery::signed("INC-1", "INC-1", PREVIOUS, T0.plus(Duration::from_secs(1)));
    let (status, closed) = again.send(&base).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(
        (ids(&closed["revoked"]), ids(&closed["cancelled"])),
        (BTreeSet::new(), BTreeSet::new())
    );
    assert_eq!(snapshot(&ann, &all).await, after);

    // Past its window the first delivery is refused by its timestamp.
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        error(&good.send(&base).await),
        (
            401,
            "stale_delivery".to_owned(),
            Some(TIMESTAMP_HEADER.to_owned())
        )
    );
    // A ticket no request carries closes with nothing to end.
    let (status, closed) = Delivery::signed("INC-9", "INC-9", SECRET, clock.now())
        .send(&base)
        .await;
    assert_eq!(
        (status, closed["revoked"].clone()),
        (200, Value::Array(vec![]))
    );
    assert_eq!(snapshot(&ann, &all).await, after);
    // INC-2 closes, the ticket system naming its delivery: bob's grant
    // ends, and the record names the delivery.
    let (status, closed) = Delivery::signed_body(
        "INC-2",
        serde_json::json!({"ticket": "INC-2", "delivery": "evt-2"}),
        SECRET,
        clock.now(),
    )
    .send(&base)
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(ids(&closed["revoked"]), BTreeSet::from([bob_logs.clone()]));
    let events = audit_of_action(&ann, &bob_logs, "revoked").await;
    assert_eq!(
        events
            .first()
            .and_then(|e| e.details.get("delivery"))
            .map(String::as_str),
        Some("evt-2")
    );
    if let Some((replica, _)) = replica {
        replica.shutdown().await;
    }
    server.shutdown().await;
}

/// Without `[tickets]` the webhook refuses everything, saying it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tickets_table_the_webhook_is_off() {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), "data");
        s.tickets = None;
        let (server, base, _clock) = boot_at_t0(s).await;
        let answer = Delivery::signed("INC-1", "INC-1", SECRET, T0)
            .send(&base)
            .await;
        assert_eq!(error(&answer), (404, "not_found".to_owned(), None));
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("[tickets]"), "{message}");
        server.shutdown().await;
    })
    .await;
}
