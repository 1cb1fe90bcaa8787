//! Waiting for approvers, over the real API on a server whose clock the test
//! moves, so times are exact: reminders and escalation driven by the
//! scheduler, and the reports of how long requests waited and of how
//! access was used (approval-quality signals included).

use std::time::Duration;

use airlock_server::api::{format_time, RequestQuery, WaitsQuery};
use airlock_server::client::{Action, ClientError};
use airlock_server::config::Settings;
use airlock_testkit::{bounded, until};
use fixtures::{ask, audit_of, boot_at_t0, wait_for_state, ConfigText, T0};

mod fixtures;

const MINUTE: Duration = Duration::from_secs(60);

/// Requesters (engineers), an approver and an auditor.
const PEOPLE: [(&str, &str); 9] = [
    ("alice", r#"groups = ["eng"]"#),
    ("carol", r#"groups = ["eng"]"#),
    ("dave", r#"groups = ["eng"]"#),
    ("erin", r#"groups = ["eng"]"#),
    ("frank", r#"groups = ["eng"]"#),
    ("george", r#"groups = ["eng"]"#),
    ("bob", r#"groups = ["sre"]"#),
    ("sam", r#"groups = ["security"]"#),
    ("ann", r#"roles = ["auditor"]"#),
];

fn settings(dir: &std::path::Path) -> Settings {
    ConfigText::new(dir, "pending_timeout = \"1h\"\n")
        .noop_connector()
        .approved_by_sre("db", "2h", "")
        .approved_by_sre(
            "db-escalating",
            "2h",
            r#"remind_after = "10m"
escalate_after = "20m"
escalate_to = ["security"]
pending_timeout = "1h"
"#,
        )
        .auto_approved("logs", "1h", "")
        .users(&PEOPLE)
        .parse("reports.toml")
}

#[tokio::test]
async fn approval_waits_count_only_what_waited_for_a_person() {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (server, base, clock) = boot_at_t0(settings(dir.path())).await;
        let client = |name: &str| fixtures::client(&base, name);
        let request = |name: &'static str| {
            let c = client(name);
            async move { c.create_request(&ask("db")).await.unwrap().id }
        };

        let approved_soon = request("alice").await;
        let denied = request("carol").await;
        let withdrawn = request("dave").await;
        let approved_late = request("erin").await;
        let timed_out = request("frank").await;
        // Auto-approved: never waited, never counted.
        client("alice").create_request(&ask("logs")).await.unwrap();

        let bob = client("bob");
        clock.advance(10 * MINUTE);
        bob.act(&approved_soon, &Action::Approve { comment: None })
            .await
            .unwrap();
        clock.advance(20 * MINUTE);
        bob.act(
            &denied,
            &Action::Deny {
                reason: "no".to_owned(),
            },
        )
        .await
        .unwrap();
        clock.advance(10 * MINUTE);
        client("dave")
            .act(&withdrawn, &Action::Cancel)
            .await
            .unwrap();
        clock.advance(10 * MINUTE);
        bob.act(&approved_late, &Action::Approve { comment: None })
            .await
            .unwrap();
        clock.advance(5 * MINUTE);
        let still_waiting = request("george").await;
        // Past frank's pending deadline (an hour), six minutes after george asked.
        clock.advance(6 * MINUTE);
        wait_for_state(&client("frank"), &timed_out, "timed_out").await;

        let ann = client("ann");
        let report = ann.approval_waits(&WaitsQuery::default()).await.unwrap();
        assert_eq!(report.entitlements.len(), 1, "{report:?}");
        let db = &report.entitlements[0];
        assert_eq!(db.entitlement, "db");
        assert_eq!(
            (
                db.needing_approval,
                db.decided,
                db.waiting,
                db.timed_out,
                db.withdrawn
            ),
            (6, 3, 1, 1, 1)
        );
        // Decided after 10, 30 and 50 minutes: nearest-rank p50 and p95.
        assert_eq!(
            (db.p50_seconds, db.p95_seconds, db.longest_seconds),
            (Some(1800), Some(3000), Some(3000))
        );
        assert_eq!(db.oldest_waiting_seconds, Some(360));

        // Only requests created since a time (george's), or a duration back.
        let since = format_time(T0.plus(55 * MINUTE));
        let recent = ann
            .approval_waits(&WaitsQuery { since: Some(since) })
            .await
            .unwrap();
        assert_eq!(recent.entitlements[0].needing_approval, 1);
        assert_eq!(recent.entitlements[0].decided, 0);
        assert_eq!(recent.entitlements[0].p50_seconds, None);
        let last_ten_minutes = ann
            .approval_waits(&WaitsQuery {
                since: Some("10m".to_owned()),
            })
            .await
            .unwrap();
        assert_eq!(last_ten_minutes.entitlements[0].waiting, 1);
        assert_eq!(last_ten_minutes.since, format_time(T0.plus(51 * MINUTE)));

        // A bad `since` is named; only admins and auditors read reports.
        match ann
            .approval_waits(&WaitsQuery {
                since: Some("last tuesday".to_owned()),
            })
            .await
        {
            Err(ClientError::Api {
                status,
                field,
                message,
                ..
            }) => {
                assert_eq!((status, field.as_deref()), (400, Some("since")));
                assert!(message.contains("`last tuesday`"), "{message}");
            }
            other => panic!("expected a 400, got {other:?}"),
        }
        assert!(matches!(
            client("bob").approval_waits(&WaitsQuery::default()).await,
            Err(ClientError::Api { status: 403, .. })
        ));
        let george = client("george").get_request(&still_waiting).await.unwrap();
        assert_eq!(george.state, "pending");

        // The usage report over the same requests: per entitlement, per
        // approver, and who could ask but did not.
        let usage = ann.usage_report(&WaitsQuery::default()).await.unwrap();
        let by = |name: &str| {
            usage
                .entitlements
                .iter()
                .find(|e| e.entitlement == name)
                .unwrap()
                .clone()
        };
        let db = by("db");
        assert_eq!(
            (
                db.requests,
                db.needing_approval,
                db.auto_approved,
                db.denied_by_approver
            ),
            (6, 6, 0, 1)
        );
        assert_eq!(
            (db.wait_p50_seconds, db.wait_p95_seconds),
            (Some(1800), Some(3000))
        );
        assert_eq!(db.auto_approval_rate, Some(0.0));
        let logs = by("logs");
        assert_eq!((logs.requests, logs.auto_approved), (1, 1));
        assert_eq!(logs.auto_approval_rate, Some(1.0));
        assert_eq!(usage.approvers.len(), 1);
        let b = &usage.approvers[0];
        assert_eq!(
            (
                b.approver.as_str(),
                b.approvals,
                b.denials,
                b.quick_approvals
            ),
            ("bob", 2, 1, 0)
        );
        assert!(b.signals.is_empty(), "{b:?}");
        // Six engineers may ask for three entitlements: six asked for db,
        // alice for logs, nobody for db-escalating.
        assert_eq!(usage.unused.len(), 11, "{:?}", usage.unused);
        assert!(usage
            .unused
            .iter()
            .any(|u| u.user == "carol" && u.entitlement == "logs"));

        // Bob approves five requests the moment they arrive: within seconds,
        // and every decision on db-escalating is his.
        for name in ["alice", "carol", "dave", "erin", "frank"] {
            let id = client(name)
                .create_request(&ask("db-escalating"))
                .await
                .unwrap()
                .id;
            bob.act(&id, &Action::Approve { comment: None })
                .await
                .unwrap();
        }
        let usage = ann.usage_report(&WaitsQuery::default()).await.unwrap();
        let b = &usage.approvers[0];
        assert_eq!((b.approvals, b.quick_approvals), (7, 5));
        assert_eq!(
            b.signals,
            [
                "approves within seconds (5 of 7 approvals within 30s of the request)",
                "decides most requests for db-escalating (5 of 5)"
            ]
        );
        assert!(matches!(
            client("bob").usage_report(&WaitsQuery::default()).await,
            Err(ClientError::Api { status: 403, .. })
        ));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_waiting_request_reminds_then_escalates_and_the_escalation_group_approves() {
    bounded(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (server, base, clock) = boot_at_t0(settings(dir.path())).await;
        let client = |name: &str| fixtures::client(&base, name);
        let alice = client("alice");
        let sam = client("sam");
        let r = alice.create_request(&ask("db-escalating")).await.unwrap();
        assert_eq!(r.waiting.remind_at, Some(format_time(T0.plus(10 * MINUTE))));
        assert_eq!(
            r.waiting.escalate_at,
            Some(format_time(T0.plus(20 * MINUTE)))
        );
        assert_eq!(r.waiting.escalate_to, ["security"]);
        assert_eq!(r.pending_deadline, Some(format_time(T0.plus(60 * MINUTE))));
        // Before the escalation, security may not see or approve it.
        assert!(matches!(
            sam.act(&r.id, &Action::Approve { comment: None }).await,
            Err(ClientError::Api { status: 404, .. })
        ));

        clock.advance(10 * MINUTE);
        let reminded = until(Duration::from_secs(20), "the reminder", || async {
            let r = alice.get_request(&r.id).await.unwrap();
            r.waiting.reminded_at.is_some().then_some(r)
        })
        .await;
        assert_eq!(
            reminded.waiting.reminded_at,
            Some(format_time(T0.plus(10 * MINUTE)))
        );
        assert_eq!(reminded.waiting.escalated_at, None);

        clock.advance(10 * MINUTE);
        let escalated = until(Duration::from_secs(20), "the escalation", || async {
            let r = alice.get_request(&r.id).await.unwrap();
            r.waiting.escalated_at.is_some().then_some(r)
        })
        .await;
        assert_eq!(escalated.state, "pending");
        assert_eq!(escalated.approver_groups, ["security", "sre"]);
        // Now security sees it waiting for them, and may approve.
        let pending = sam
            .list_requests(&RequestQuery {
                awaiting_me: Some(true),
                ..RequestQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        let approved = sam
            .act(&r.id, &Action::Approve { comment: None })
            .await
            .unwrap();
        assert_eq!(approved.state, "approved");

        // The record says when and to whom.
        let events = audit_of(&client("ann"), &r.id).await;
        // (The grant that follows the approval may be recorded by now too.)
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).take(5).collect();
        assert_eq!(
            actions,
            [
                "requested",
                "approval_reminded",
                "approval_escalated",
                "approval_recorded",
                "approved"
            ]
        );
        let escalation = events
            .iter()
            .find(|e| e.action == "approval_escalated")
            .unwrap();
        assert_eq!(escalation.details["escalated_to"], "security");
        assert_eq!(escalation.details["waited_seconds"], "1200");
        server.shutdown().await;
    })
    .await;
}
