//! Notifications end to end through the real server on a `ManualClock`: a
//! real SMTP server on loopback (aiosmtpd, started by the test) and a local
//! HTTP receiver playing a Slack incoming webhook, a signed-webhook
//! consumer and the connector's target. What must hold: each message
//! reaches the people it concerns with the request's facts, signed where
//! the channel signs, once per idempotency key; a channel that is down for
//! a while loses and duplicates nothing; one that refuses for good, or stays
//! down past the horizon, is given up on, visibly.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_connectors::webhook::{verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use airlock_core::Timestamp;
use airlock_server::api::{
    parse_time, CreateRequest, DurationInput, NotificationsQuery, NotificationsView,
};
use airlock_server::client::{Action, Client};
use airlock_server::config::{token_hash, Settings};
use airlock_server::engine::{Clock, ManualClock};
use airlock_server::server::Server;
use airlock_testkit::smtp::SmtpSink;
use airlock_testkit::{bounded, until};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fixtures::{ask, audit_of, boot_at_t0, extend, token, wait_for_state, ConfigText, T0};

mod fixtures;

const SECRET: &str = "notify-test-connector-secret";
const HOOK_SECRET: &str = "notify-test-webhook-secret";
const SCIM_TOKEN: &str = "notify-test-provisioning-token";
const WAIT: Duration = Duration::from_secs(15);

/// One post a receiver accepted.
#[derive(Debug, Clone)]
struct Post {
    headers: HeaderMap,
    body: serde_json::Value,
    raw: Bytes,
}

/// The local HTTP receiver: `/connector` grants and revokes, `/slack` and
/// `/hook` record what they accept. Each path answers `up` or a status.
#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<BTreeMap<String, Vec<Post>>>>,
    /// Path to the status it answers instead of 200 (absent: up).
    down: Arc<Mutex<BTreeMap<String, u16>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/{path}", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, base)
    }

    fn set(&self, path: &str, status: Option<u16>) {
        let mut down = self.down.lock().unwrap();
        match status {
            Some(s) => down.insert(path.to_owned(), s),
            None => down.remove(path),
        };
    }

    fn posts(&self, path: &str) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

async fn receive(
    State(r): State<Receiver>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    if let Some(status) = r.down.lock().unwrap().get(&path) {
        return StatusCode::from_u16(*status).unwrap();
    }
    let body = serde_json::from_slice(&raw).unwrap();
    r.posts
        .lock()
        .unwrap()
        .entry(path)
        .or_default()
        .push(Post { headers, body, raw });
    StatusCode::OK
}

fn settings(dir: &std::path::Path, smtp_port: u16, base: &str) -> Settings {
    let scim = format!(
        "scim = {{ token_sha256 = \"{}\" }}\n",
        token_hash(SCIM_TOKEN)
    );
    ConfigText::new(dir, &scim)
        .text(&format!(
            r#"
[connectors.target]
type = "webhook"
url = "{base}/connector"
secret = "{SECRET}"
timeout = "2s"

[entitlements.db]
requestable_by = ["eng"]
max_duration = "2h"
approvals_required = 1
approvers = ["sre"]
require_reason = false
connector = "target"

[entitlements.db-glass]
requestable_by = ["eng"]
max_duration = "2h"
approvals_required = 1
approvers = ["sre"]
require_reason = false
connector = "target"

[entitlements.db-glass.break_glass]
max_duration = "1h"
review_by = ["sre"]

[notifications]
approvers = ["mail", "chat"]
requester = ["mail"]
security = ["siem"]
expiry_warning = "15m"
retry_base = "10s"
retry_cap = "1m"
give_up_after = "10m"

# Break-glass there is for the security route alone.
[notifications.entitlements.db-glass]
requester = []
reviewers = []

# Break-glass reviewed by `security` (some provisioned by SCIM) within the
# hour, then by `leads` too; the reviewers hear on their own hook.
[entitlements.ops]
requestable_by = ["eng"]
max_duration = "2h"
auto_approve = true
require_reason = false
connector = "target"

[entitlements.ops.break_glass]
max_duration = "1h"
review_by = ["security"]
review_within = "1h"
escalate_to = ["leads"]

[notifications.entitlements.ops]
requester = []
reviewers = ["reviews"]

[notifications.channels.reviews]
type = "webhook"
url = "{base}/reviews"
secret = "{HOOK_SECRET}"
timeout = "2s"
"#
        ))
        .smtp_channel("mail", smtp_port)
        .text(&format!(
            r#"
[notifications.channels.chat]
type = "slack"
url = "{base}/slack"
timeout = "2s"

[notifications.channels.siem]
type = "webhook"
url = "{base}/hook"
secret = "{HOOK_SECRET}"
timeout = "2s"

[users.bob]
groups = ["sre"]
email = "Bob Builder <bob@example.com>"
token_sha256 = "{}"

[users.carol]
groups = ["sre"]

[users.admin]
roles = ["admin"]
token_sha256 = "{}"
"#,
            token_hash(&token("bob")),
            token_hash(&token("admin")),
        ))
        .users(&[
            ("sam", r#"groups = ["security"]"#),
            ("lee", r#"groups = ["leads"]"#),
        ])
        .users_with_email(&[
            ("alice", r#"groups = ["eng"]"#),
            ("dave", r#"groups = ["eng"]"#),
            ("erin", r#"groups = ["eng"]"#),
            ("fred", r#"groups = ["eng"]"#),
        ])
        .parse("notify.toml")
}

struct Harness {
    server: Server,
    clock: Arc<ManualClock>,
    base: String,
    receiver: Receiver,
    /// The receiver's address.
    target: String,
    smtp: SmtpSink,
    dir: tempfile::TempDir,
}

async fn boot() -> Option<Harness> {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(dir.path())?;
    let (receiver, target) = Receiver::start().await;
    let (server, base, clock) = boot_at_t0(settings(dir.path(), smtp.port, &target)).await;
    Some(Harness {
        server,
        clock,
        base,
        receiver,
        target,
        smtp,
        dir,
    })
}

impl Harness {
    /// Stops the server, lets `run` move the clock while it is down, and
    /// starts it again on the same database.
    async fn restart_after(mut self, run: impl FnOnce(&ManualClock)) -> Harness {
        self.server.shutdown().await;
        run(&self.clock);
        let settings = settings(self.dir.path(), self.smtp.port, &self.target);
        (self.server, self.base) = fixtures::boot(settings, &self.clock).await;
        self
    }

    /// A SCIM `POST` to `path` with the provisioning token; the new id.
    async fn provision(&self, path: &str, body: serde_json::Value) -> String {
        let (status, created) = fixtures::scim(&self.base, SCIM_TOKEN, "POST", path, body).await;
        assert_eq!(status, 201);
        created["id"].as_str().unwrap().to_owned()
    }

    /// Posts to `path` about `topic`, once each is there.
    async fn posts_about(&self, path: &str, topic: &str, count: usize) -> Vec<Post> {
        until(
            WAIT,
            &format!("{count} `{topic}` posts to /{path}"),
            || async {
                let posts: Vec<Post> = self
                    .receiver
                    .posts(path)
                    .into_iter()
                    .filter(|p| p.body["topic"] == topic)
                    .collect();
                (posts.len() == count).then_some(posts)
            },
        )
        .await
    }

    fn client(&self, who: &str) -> Client {
        fixtures::client(&self.base, who)
    }

    /// An ordinary request for `db`, or a break-glass one for `db-glass`.
    async fn request(&self, who: &str, break_glass: bool) -> String {
        self.client(who)
            .create_request(&CreateRequest {
                reason: format!("{who} fixes the database"),
                break_glass,
                ..ask(if break_glass { "db-glass" } else { "db" })
            })
            .await
            .unwrap()
            .id
    }

    async fn outbox(&self) -> NotificationsView {
        self.client("admin")
            .notifications(&NotificationsQuery {
                limit: Some(1000),
                ..NotificationsQuery::default()
            })
            .await
            .unwrap()
    }

    /// Mails received, as (recipients, headers and body text).
    fn mails(&self) -> Vec<(Vec<String>, String)> {
        self.smtp
            .messages()
            .iter()
            .map(|line| {
                let m: serde_json::Value = serde_json::from_str(line).unwrap();
                let to = m["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect();
                (to, m["data"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// Waits until the dispatcher has tried everything due at `now`: every
    /// row still pending waits for an attempt after it.
    async fn tried_up_to(&self, now: Timestamp) {
        until(WAIT, "the attempts due by now", || async {
            let o = self.outbox().await;
            o.notifications
                .iter()
                .filter(|n| n.state == "pending")
                .all(|n| {
                    n.next_attempt_at
                        .as_deref()
                        .is_some_and(|t| parse_time(t).unwrap() > now)
                })
                .then_some(())
        })
        .await;
    }

    /// Waits until the outbox has nothing due and `sent` rows are sent.
    async fn settled(&self, sent: u64) -> NotificationsView {
        until(WAIT, &format!("{sent} notifications sent"), || async {
            let o = self.outbox().await;
            (o.backlog == 0 && o.counts["sent"] == sent).then_some(o)
        })
        .await
    }

    async fn metric(&self, line_start: &str) -> f64 {
        let text = fixtures::metrics(&self.base).await;
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in {text}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// The header `name` of a mail.
fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {mail}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_reaches_the_people_it_concerns_on_every_channel() {
    bounded(Duration::from_secs(90), async {
        let Some(h) = boot().await else { return };
        let id = h.request("alice", false).await;
        // fred breaks glass elsewhere: the security route alone hears.
        let glass = h.request("fred", true).await;

        // Approvers: mail to bob (carol has no address), the chat room; and
        // the break-glass alert on the signed webhook.
        h.settled(3).await;
        let mails = h.mails();
        assert_eq!(mails.len(), 1, "{mails:?}");
        let (to, mail) = &mails[0];
        assert_eq!(to, &["bob@example.com"]);
        assert!(header(mail, "To").contains("bob@example.com"), "{mail}");
        assert!(
            header(mail, "Subject").contains("alice asks for db"),
            "{mail}"
        );
        assert!(mail.contains(&format!("airlock approve {id}")), "{mail}");
        assert!(mail.contains("reason: alice fixes the database"), "{mail}");

        let chat = h.receiver.posts("slack");
        assert_eq!(chat.len(), 1);
        let blocks = serde_json::to_string(&chat[0].body["blocks"]).unwrap();
        assert!(chat[0].body["text"]
            .as_str()
            .unwrap()
            .contains("alice asks for db"));
        assert!(blocks.contains("requester: alice"));
        assert!(
            blocks.contains(&format!("airlock approve {id}")),
            "{blocks}"
        );
        assert!(!blocks.contains("mrkdwn"), "people's text is never markup");

        let hooks = h.receiver.posts("hook");
        assert_eq!(hooks.len(), 1);
        let hook = &hooks[0];
        assert_eq!(hook.body["topic"], "break_glass");
        assert_eq!(hook.body["audience"], "security");
        assert_eq!(hook.body["facts"]["request"], glass.as_str());
        assert_eq!(hook.body["facts"]["break_glass"], "true");
        let stamp = hook.headers[TIMESTAMP_HEADER].to_str().unwrap();
        let signature = hook.headers[SIGNATURE_HEADER].to_str().unwrap();
        assert!(verify_signature(
            HOOK_SECRET.as_bytes(),
            stamp,
            &hook.raw,
            signature
        ));
        assert!(!verify_signature(
            SECRET.as_bytes(),
            stamp,
            &hook.raw,
            signature
        ));
        assert_eq!(
            hook.headers["idempotency-key"].to_str().unwrap(),
            hook.body["idempotency_key"].as_str().unwrap()
        );

        // Approved and provisioned: the requester hears both by mail.
        h.client("bob")
            .act(&id, &Action::Approve { comment: None })
            .await
            .unwrap();
        let o = h.settled(5).await;
        assert_eq!(o.scheduled, 1, "the expiry warning waits for its time");
        let alice: Vec<String> = h
            .mails()
            .into_iter()
            .filter(|(to, _)| to == &["alice@example.com"])
            .map(|(_, m)| header(&m, "Subject").to_owned())
            .collect();
        assert_eq!(alice.len(), 2, "{alice:?}");
        assert!(alice.iter().any(|s| s.contains("db for alice is approved")));
        assert!(alice
            .iter()
            .any(|s| s.contains("db for alice is active until")));

        // Fifteen minutes before the end, and at the end.
        h.clock
            .advance_to(T0.plus(Duration::from_secs(45 * 60 + 1)));
        h.settled(6).await;
        h.clock.advance_to(T0.plus(Duration::from_secs(3600 + 1)));
        until(WAIT, "the grant to be removed", || async {
            let r = h.client("alice").get_request(&id).await.unwrap();
            r.deprovisioned_at.is_some().then_some(())
        })
        .await;
        h.settled(7).await;
        let subjects: Vec<String> = h
            .mails()
            .iter()
            .map(|(_, m)| header(m, "Subject").to_owned())
            .collect();
        assert!(
            subjects.iter().any(|s| s.contains("db for alice ends at")),
            "{subjects:?}"
        );
        assert!(subjects
            .iter()
            .any(|s| s.contains("db for alice has ended (expired)")));

        // The overdue checks (alice's, and fred's, whose hour ended too) fall
        // due after the removals were confirmed: dropped.
        h.clock
            .advance_to(T0.plus(Duration::from_secs(3600 + 6 * 60)));
        let o = until(WAIT, "the overdue checks to be dropped", || async {
            let o = h.outbox().await;
            (o.counts["dropped"] == 2).then_some(o)
        })
        .await;
        assert_eq!((o.backlog, o.scheduled, o.counts["failed"]), (0, 0, 0));

        // Every mail carries its idempotency key as its Message-ID, once.
        let keys: Vec<String> = o
            .notifications
            .iter()
            .filter(|n| n.channel == "mail" && n.state == "sent")
            .map(|n| format!("<{}@airlock>", n.key.replace(':', ".")))
            .collect();
        let ids: Vec<String> = h
            .mails()
            .iter()
            .map(|(_, m)| header(m, "Message-ID").to_owned())
            .collect();
        assert_eq!(
            keys.iter().collect::<BTreeSet<_>>(),
            ids.iter().collect::<BTreeSet<_>>()
        );
        assert_eq!(ids.len(), keys.len(), "a mail was sent twice");
        assert_eq!(h.metric("airlock_notifications_backlog ").await, 0.0);
        assert_eq!(
            h.metric("airlock_notifications{state=\"sent\"} ").await,
            7.0
        );
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_down_for_a_while_loses_and_duplicates_nothing() {
    bounded(Duration::from_secs(120), async {
        let Some(mut h) = boot().await else { return };
        h.smtp.stop();
        h.receiver.set("slack", Some(503));
        let mut ids = Vec::new();
        for who in ["alice", "dave", "erin"] {
            ids.push(h.request(who, false).await);
        }
        // Each tried once and waiting for its retry, with the error in view.
        let o = until(WAIT, "a first failed attempt of each", || async {
            let o = h.outbox().await;
            let tried = o
                .notifications
                .iter()
                .filter(|n| n.state == "pending" && n.attempts == 1)
                .count();
            (tried == 6).then_some(o)
        })
        .await;
        assert_eq!(o.backlog, 6);
        assert!(o.last_error.is_some());
        let errors: BTreeSet<&str> = o
            .notifications
            .iter()
            .map(|n| n.last_error.as_deref().unwrap())
            .collect();
        assert!(errors.iter().any(|e| e.contains("503")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("mail")), "{errors:?}");
        assert_eq!(h.metric("airlock_notifications_backlog ").await, 6.0);

        // Still down through two more retries (10 s, then 20 s later).
        for secs in [10, 30] {
            h.clock.advance_to(T0.plus(Duration::from_secs(secs)));
            h.tried_up_to(T0.plus(Duration::from_secs(secs))).await;
        }
        assert!(h.mails().is_empty() && h.receiver.posts("slack").is_empty());
        assert!(h.metric("airlock_notifications_oldest_age_seconds ").await >= 30.0);

        // Back: everything arrives at the next retry, once.
        h.smtp.resume();
        h.receiver.set("slack", None);
        h.clock.advance_to(T0.plus(Duration::from_secs(30 + 40)));
        let o = h.settled(6).await;
        assert!(o.notifications.iter().all(|n| n.attempts >= 3));
        let chat: Vec<String> = h
            .receiver
            .posts("slack")
            .iter()
            .map(|p| p.headers["idempotency-key"].to_str().unwrap().to_owned())
            .collect();
        assert_eq!(chat.len(), 3);
        assert_eq!(chat.iter().collect::<BTreeSet<_>>().len(), 3);
        let mails = h.mails();
        assert_eq!(mails.len(), 3);
        for id in &ids {
            assert_eq!(
                mails
                    .iter()
                    .filter(|(_, m)| m.contains(&format!("request: {id}")))
                    .count(),
                1
            );
        }

        // A receiver that refuses for good is given up on at once; a room
        // that stays down is given up on past the ten-minute horizon.
        h.receiver.set("hook", Some(400));
        h.receiver.set("slack", Some(503));
        h.request("fred", false).await;
        h.request("fred", true).await;
        let o = until(WAIT, "the refused alert to fail", || async {
            let o = h.outbox().await;
            (o.counts["failed"] == 1).then_some(o)
        })
        .await;
        let failed = o
            .notifications
            .iter()
            .find(|n| n.state == "failed")
            .unwrap();
        assert_eq!((failed.channel.as_str(), failed.attempts), ("siem", 1));
        assert!(failed.last_error.as_deref().unwrap().contains("400"));
        let mut now = T0.plus(Duration::from_secs(70));
        while now < T0.plus(Duration::from_secs(70 + 11 * 60)) {
            now = now.plus(Duration::from_secs(60));
            h.clock.advance_to(now);
            h.tried_up_to(now).await;
        }
        let o = until(WAIT, "the chat message to be given up on", || async {
            let o = h.outbox().await;
            (o.counts["failed"] == 2 && o.backlog == 0).then_some(o)
        })
        .await;
        assert_eq!(o.counts["sent"], 7, "fred's mail to bob still went");
        assert_eq!(
            h.metric("airlock_notifications{state=\"failed\"} ").await,
            2.0
        );
        assert_eq!(
            h.metric("airlock_notification_attempts_total{outcome=\"failed\"} ")
                .await,
            2.0
        );
        h.server.shutdown().await;
    })
    .await;
}

/// The users a message was for, by name.
fn recipients(post: &Post) -> BTreeSet<String> {
    post.body["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_use_is_announced_reviewed_and_chased_across_a_restart() {
    bounded(Duration::from_secs(90), async {
        let Some(h) = boot().await else { return };
        // sid is in `security` only through the identity provider.
        let sid = h
            .provision(
                "Users",
                serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                   "userName": "sid", "active": true}),
            )
            .await;
        h.provision(
            "Groups",
            serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                               "displayName": "security", "members": [{"value": sid}]}),
        )
        .await;

        let id = h
            .client("erin")
            .create_request(&CreateRequest {
                duration: Some(DurationInput::Seconds(20 * 60)),
                reason: "the queue is wedged".to_owned(),
                break_glass: true,
                ..ask("ops")
            })
            .await
            .unwrap()
            .id;
        wait_for_state(&h.client("erin"), &id, "active").await;
        // Security hears at once; the reviewers (config and provisioned,
        // never erin herself) are asked to review.
        let alert = h.posts_about("hook", "break_glass", 1).await;
        assert_eq!(alert[0].body["facts"]["request"], id.as_str());
        let asked = h.posts_about("reviews", "review_requested", 1).await;
        assert_eq!(
            recipients(&asked[0]),
            ["sam", "sid"].map(String::from).into()
        );
        assert_eq!(asked[0].body["facts"]["review_by"], "security");

        // Reviewers and admins see it waiting; others do not see it at all.
        let waiting = h.client("sam").reviews(false).await.unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].id, id);
        assert!(h.client("bob").reviews(false).await.unwrap().is_empty());
        assert!(h.client("bob").get_request(&id).await.is_err());
        let glass = h.client("admin").grants_where(true).await.unwrap();
        assert_eq!(
            glass.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [id.as_str()]
        );
        assert_eq!(h.metric("airlock_break_glass_unreviewed ").await, 1.0);
        assert_eq!(h.metric("airlock_break_glass_reviews_overdue ").await, 0.0);
        // Extended, a break-glass grant still ends within its own maximum.
        let longer = h
            .client("erin")
            .act(&id, &extend("50m", "still wedged"))
            .await;
        let refusal = format!("{longer:?}");
        assert!(refusal.contains("at most 40m"), "{refusal}");
        // leads may not review before it is overdue.
        let early = h
            .client("lee")
            .act(
                &id,
                &Action::Review {
                    acceptable: true,
                    comment: "fine".to_owned(),
                },
            )
            .await;
        assert!(early.is_err(), "{early:?}");

        // Down while the review falls due: the restarted server escalates it.
        let h = h
            .restart_after(|clock| clock.advance(Duration::from_secs(3600 + 1)))
            .await;
        let chased = h.posts_about("reviews", "review_escalated", 1).await;
        assert_eq!(
            recipients(&chased[0]),
            ["lee", "sam", "sid"].map(String::from).into()
        );
        h.posts_about("hook", "review_overdue", 1).await;
        let r = h.client("admin").get_request(&id).await.unwrap();
        let review = r.review.unwrap();
        assert!(review.overdue && review.escalated_at.is_some());
        assert_eq!(review.review_by, ["leads", "security"]);
        assert_eq!(h.metric("airlock_break_glass_reviews_overdue ").await, 1.0);

        // erin may not judge her own use; lee may now, once.
        let own = h
            .client("erin")
            .act(
                &id,
                &Action::Review {
                    acceptable: true,
                    comment: "it was needed".to_owned(),
                },
            )
            .await;
        assert!(own.is_err(), "{own:?}");
        let judged = h
            .client("lee")
            .act(
                &id,
                &Action::Review {
                    acceptable: false,
                    comment: "no incident on record".to_owned(),
                },
            )
            .await
            .unwrap();
        let verdict = judged.review.unwrap().verdict.unwrap();
        assert_eq!(
            (verdict.reviewer.as_str(), verdict.acceptable),
            ("lee", false)
        );
        h.posts_about("hook", "use_unacceptable", 1).await;
        assert!(h.client("sam").reviews(false).await.unwrap().is_empty());
        assert_eq!(h.client("sam").reviews(true).await.unwrap().len(), 1);
        assert_eq!(h.metric("airlock_break_glass_unreviewed ").await, 0.0);
        let events = audit_of(&h.client("admin"), &id).await;
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert!(actions.contains(&"review_overdue"), "{actions:?}");
        assert!(actions.contains(&"reviewed"), "{actions:?}");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_notifications_leave_the_outbox_after_their_keep() {
    bounded(Duration::from_secs(60), async {
        let Some(h) = boot().await else { return };
        h.request("alice", false).await;
        let first: BTreeSet<String> = h
            .settled(2)
            .await
            .notifications
            .into_iter()
            .map(|n| n.key)
            .collect();
        // A day on, they stay (kept 30 days by default)...
        h.clock.advance(Duration::from_secs(24 * 3600 + 60));
        h.tried_up_to(h.clock.now()).await;
        let keys = |o: NotificationsView| -> BTreeSet<String> {
            o.notifications.into_iter().map(|n| n.key).collect()
        };
        assert!(keys(h.outbox().await).is_superset(&first));
        // ...a month on, they are gone; what the month brought stays. (Time
        // goes on while the test looks: a dispatcher that was mid-pass when
        // the month passed looks again at its next wake-up.)
        h.clock.advance(Duration::from_secs(30 * 24 * 3600));
        let left = until(WAIT, "the month-old notifications to go", || async {
            h.clock.advance(Duration::from_secs(60));
            let left = keys(h.outbox().await);
            left.is_disjoint(&first).then_some(left)
        })
        .await;
        assert!(!left.is_empty(), "the time-out's notification stays");
        h.server.shutdown().await;
    })
    .await;
}
