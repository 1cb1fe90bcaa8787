//! Access-review campaigns over the real API, on a server whose clock the
//! test moves: a scheduled campaign starting by itself, reviewers mailed
//! through a real SMTP server (aiosmtpd), decisions with their place in the
//! audit chain, a removed eligibility refusing the next request until a
//! later campaign confirms it, reminders, escalation, completion and the
//! backlog in `/metrics`.

#![expect(
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::time::Duration;

use airlock_server::api::{
    AccessReviewDetail, AccessReviewItemView, AuditExportQuery, DecideItemBody,
};
use airlock_server::client::ClientError;
use airlock_server::config::Settings;
use airlock_testkit::smtp::SmtpSink;
use airlock_testkit::{bounded, until};
use fixtures::{ask, boot_at_t0, metrics, ConfigText, T0, WAIT};

mod fixtures;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn settings(dir: &std::path::Path, smtp_port: u16) -> Settings {
    ConfigText::new(dir, "")
        .noop_connector()
        .approved_by_sre("db", "2h", "")
        .auto_approved("logs", "1h", "")
        .text("\n[notifications]\napprovers = [\"mail\"]\n")
        .smtp_channel("mail", smtp_port)
        .text(
            r#"
[access_reviews.quarterly]
every = "90d"
reviewers = ["sre"]
due_within = "7d"
remind_after = "2d"
escalate_after = "5d"
escalate_to = ["security"]
include = ["eligibilities"]
"#,
        )
        .users_with_email(&[
            ("alice", r#"groups = ["eng"]"#),
            ("bob", r#"groups = ["eng", "sre"]"#),
            ("carol", r#"groups = ["sre"]"#),
            ("erin", r#"groups = ["eng"]"#),
            ("sam", r#"groups = ["security"]"#),
            ("admin", "groups = [\"ops\"]\nroles = [\"admin\"]"),
        ])
        .parse("reviews.toml")
}

fn decide(decision: &str, comment: &str) -> DecideItemBody {
    DecideItemBody {
        decision: decision.to_owned(),
        comment: comment.to_owned(),
    }
}

/// The item about `user` asking for `entitlement`.
fn item(detail: &AccessReviewDetail, user: &str, entitlement: &str) -> AccessReviewItemView {
    detail
        .items
        .iter()
        .find(|i| i.user.as_deref() == Some(user) && i.entitlement.as_deref() == Some(entitlement))
        .unwrap_or_else(|| panic!("no item {user} / {entitlement}: {detail:#?}"))
        .clone()
}

fn status(e: &ClientError) -> (u16, Option<String>) {
    match e {
        ClientError::Api { status, field, .. } => (*status, field.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_runs_on_its_schedule_and_its_decisions_hold() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = SmtpSink::start(dir.path()) else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let (server, base, clock) = boot_at_t0(settings(dir.path(), smtp.port)).await;
        let client = |name: &str| fixtures::client(&base, name);
        let (admin, carol, bob, alice, sam) = (
            client("admin"),
            client("carol"),
            client("bob"),
            client("alice"),
            client("sam"),
        );

        // The first campaign starts by itself: the schedule has none yet.
        let campaign = until(WAIT, "the scheduled campaign", || async {
            admin.access_reviews(false).await.unwrap().campaigns.pop()
        })
        .await;
        assert_eq!(
            (campaign.template.as_str(), campaign.started_by.as_str()),
            ("quarterly", "system")
        );
        assert_eq!(
            campaign.due_at,
            airlock_server::api::format_time(T0.plus(7 * DAY))
        );
        // alice, bob and erin (eng) may each ask for db and logs.
        assert_eq!((campaign.items, campaign.open_items), (6, 6));
        let list = carol.access_reviews(true).await.unwrap();
        assert_eq!(list.templates[0].every.as_deref(), Some("90d"));
        // Its reviewers hear of it; nobody else does.
        for reviewer in ["bob@example.com", "carol@example.com"] {
            until(WAIT, "the reviewers' mail", || async {
                smtp.subjects(reviewer)
                    .iter()
                    .any(|s| s.contains("access review quarterly: 6 items"))
                    .then_some(())
            })
            .await;
        }
        assert!(smtp.subjects("sam@example.com").is_empty());

        let detail = carol.access_review(&campaign.id).await.unwrap();
        let alice_db = item(&detail, "alice", "db");
        let route = alice_db.route.clone().unwrap();
        assert!(route.starts_with("1 from [sre]"), "{route}");
        assert_eq!(
            item(&detail, "alice", "logs").route.as_deref(),
            Some("auto")
        );

        // Who may not: the person it is about, someone outside the
        // reviewer groups (who cannot even see it), a removal without why.
        let bob_db = item(&detail, "bob", "db");
        let own = bob
            .decide_access_review_item(&campaign.id, bob_db.item, &decide("confirm", ""))
            .await
            .unwrap_err();
        assert_eq!(status(&own).0, 403, "{own}");
        assert!(own.to_string().contains("their own access"), "{own}");
        let outsider = alice.access_review(&campaign.id).await.unwrap_err();
        assert_eq!(status(&outsider).0, 404);
        let unexplained = carol
            .decide_access_review_item(&campaign.id, alice_db.item, &decide("remove", " "))
            .await
            .unwrap_err();
        assert_eq!(status(&unexplained), (400, Some("comment".to_owned())));
        let unknown = carol
            .decide_access_review_item(&campaign.id, 99, &decide("confirm", ""))
            .await
            .unwrap_err();
        assert_eq!(status(&unknown), (400, Some("item".to_owned())));
        let nonsense = carol
            .decide_access_review_item(&campaign.id, alice_db.item, &decide("maybe", ""))
            .await
            .unwrap_err();
        assert_eq!(status(&nonsense), (400, Some("decision".to_owned())));

        // carol removes alice's eligibility for db: the decision is in the
        // chain, at the place the item names.
        clock.advance(Duration::from_secs(3600));
        let removed = carol
            .decide_access_review_item(
                &campaign.id,
                alice_db.item,
                &decide("remove", "left the DBA rotation"),
            )
            .await
            .unwrap();
        assert_eq!(
            (removed.decision.as_deref(), removed.decided_by.as_deref()),
            (Some("remove"), Some("carol"))
        );
        let seq = removed.seq.unwrap();
        let event = admin
            .audit_export(&AuditExportQuery {
                after: seq - 1,
                limit: Some(1),
            })
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            (event.seq, event.action.as_str(), Some(event.hash.clone())),
            (seq, "access_review_decided", removed.hash.clone())
        );
        assert_eq!(event.details["comment"], "left the DBA rotation");
        assert_eq!(event.subject.as_deref(), Some("alice"));
        let twice = bob
            .decide_access_review_item(&campaign.id, alice_db.item, &decide("confirm", ""))
            .await
            .unwrap_err();
        assert_eq!(status(&twice).0, 409);
        assert!(twice.to_string().contains("already decided"), "{twice}");

        // alice's next request for db is refused, saying why; logs is not.
        let refused = alice.create_request(&ask("db")).await.unwrap_err();
        assert_eq!(status(&refused).0, 403);
        let why = refused.to_string();
        assert!(
            why.contains("denied by policy")
                && why.contains(&campaign.id)
                && why.contains("left the DBA rotation"),
            "{why}"
        );
        assert_eq!(
            alice.create_request(&ask("logs")).await.unwrap().state,
            "approved"
        );

        // Two days in, the reviewers are reminded; five, security may decide.
        clock.advance(2 * DAY);
        until(WAIT, "the reminder", || async {
            smtp.subjects("carol@example.com")
                .iter()
                .any(|s| s.contains("reminder: access review quarterly has 5 unanswered items"))
                .then_some(())
        })
        .await;
        assert_eq!(
            status(&sam.access_review(&campaign.id).await.unwrap_err()).0,
            404
        );
        clock.advance(3 * DAY);
        until(WAIT, "the escalation", || async {
            smtp.subjects("sam@example.com")
                .iter()
                .any(|s| s.contains("escalated to you: access review quarterly"))
                .then_some(())
        })
        .await;
        let alice_logs = item(&detail, "alice", "logs");
        sam.decide_access_review_item(
            &campaign.id,
            alice_logs.item,
            &decide("confirm", "still on call"),
        )
        .await
        .unwrap();
        let metrics = metrics(&base).await;
        assert!(
            metrics.contains("airlock_access_review_items_open 4\n"),
            "{metrics}"
        );

        // Past due: overdue until the last item is decided, then complete.
        clock.advance(3 * DAY);
        assert!(
            admin
                .access_review(&campaign.id)
                .await
                .unwrap()
                .campaign
                .overdue
        );
        for (user, entitlement, by) in [
            ("bob", "db", &carol),
            ("bob", "logs", &carol),
            ("erin", "db", &bob),
            ("erin", "logs", &bob),
        ] {
            by.decide_access_review_item(
                &campaign.id,
                item(&detail, user, entitlement).item,
                &decide("confirm", ""),
            )
            .await
            .unwrap();
        }
        let done = admin.access_review(&campaign.id).await.unwrap();
        assert_eq!(done.campaign.open_items, 0);
        assert!(done.campaign.completed_at.is_some() && !done.campaign.overdue);
        assert!(done
            .items
            .iter()
            .all(|i| i.seq.is_some() && i.hash.is_some()));
        let completed = admin
            .audit_export(&AuditExportQuery {
                after: 0,
                limit: Some(1000),
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "access_review_completed")
            .count();
        assert_eq!(completed, 1);

        // The next quarter's campaign starts by itself; confirming alice's
        // eligibility there lifts the removal.
        clock.advance(90 * DAY);
        let next = until(WAIT, "the next scheduled campaign", || async {
            let list = admin.access_reviews(true).await.unwrap();
            list.campaigns.into_iter().find(|c| c.id != campaign.id)
        })
        .await;
        let again = carol.access_review(&next.id).await.unwrap();
        carol
            .decide_access_review_item(
                &next.id,
                item(&again, "alice", "db").item,
                &decide("confirm", "back on the rotation"),
            )
            .await
            .unwrap();
        assert_eq!(
            alice.create_request(&ask("db")).await.unwrap().state,
            "pending"
        );

        // Only admins start one on demand, and only of a kind the config has.
        assert_eq!(
            status(&carol.start_access_review("quarterly").await.unwrap_err()).0,
            403
        );
        let unknown = admin.start_access_review("yearly").await.unwrap_err();
        assert_eq!(status(&unknown), (400, Some("template".to_owned())));
        assert!(unknown.to_string().contains("`quarterly`"), "{unknown}");
        let on_demand = admin.start_access_review("quarterly").await.unwrap();
        assert_eq!(on_demand.started_by, "admin");
        server.shutdown().await;
    })
    .await;
}
