//! External principals (vendors) through the real API on a real SQLite
//! file, on a server whose clock the test moves: a vendor's request needs
//! their sponsor on top of the policy's approver (and of an auto-approval),
//! reaches only entitlements open to externals, ends with their account,
//! and is refused once the account ended; the sponsor is asked, mailed of
//! every grant (a real SMTP server, aiosmtpd) and revokes it; a Cedar
//! policy judges vendors by `principal.employment`; SCIM's enterprise and
//! Airlock extensions make a vendor; a sponsor's deactivation over SCIM,
//! and a sponsor changed in the config across a restart, end the vendor's
//! grants.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step should fail the test"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::Timestamp;
use airlock_server::api::{format_time, CreateRequest, DurationInput, RequestQuery, RequestView};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::{token_hash, Settings};
use airlock_server::engine::ManualClock;
use airlock_server::server::Server;
use airlock_testkit::smtp::SmtpSink;
use airlock_testkit::{bounded, until};
use fixtures::{audit_of_action, boot, boot_at_t0, my_requests, token, ConfigText, T0};
use serde_json::{json, Value};

mod fixtures;

const HOUR: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(15);
const SCIM_TOKEN: &str = "vendors-test-provisioning-token";

fn after(d: Duration) -> Timestamp {
    T0.plus(d)
}

/// The config: `sara` sponsors the vendor `vic` (account ending
/// `vic_ends` after T0), `tom` sponsors nobody in the config (SCIM makes
/// `vera` his vendor), `carol` approves for `sre`, `sam` is another
/// internal person. `staging-db` (one approver from `sre`) and `logs`
/// (auto-approved) are open to externals, `prod-db` is not. A Cedar
/// policy keeps vendors to two hours at a time.
fn config(dir: &Path, smtp_port: u16, vic_sponsor: &str, vic_ends: Duration) -> Settings {
    config_with(dir, smtp_port, vic_sponsor, vic_ends, |t| t)
}

/// Like [`config`], its text changed by `edit` first.
fn config_with(
    dir: &Path,
    smtp_port: u16,
    vic_sponsor: &str,
    vic_ends: Duration,
    edit: impl FnOnce(String) -> String,
) -> Settings {
    let root = dir.display().to_string();
    let log = dir.join("connector.log");
    std::fs::write(
        dir.join("log.sh"),
        format!(
            "#!/bin/sh\ncase \"$1\" in grant|revoke) echo \"$1 $2 $3 $4\" >> '{}' ;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/vendors.cedar"),
        r#"// Vendors hold access two hours at a time at most, whatever else permits.
@id("vendors-two-hours")
@reason("vendors hold access for at most two hours at a time")
forbid (
  principal,
  action == Airlock::Action::"request",
  resource
)
when { principal.employment == "vendor" && principal has sponsor && context.duration_seconds > 7200 };
"#,
    )
    .unwrap();
    let vic_ends = format_time(after(vic_ends));
    let server_lines = format!(
        "retry_base = \"100ms\"\nretry_cap = \"400ms\"\nscim = {{ token_sha256 = \"{}\" }}\n",
        token_hash(SCIM_TOKEN)
    );
    ConfigText::new(dir, &server_lines)
        .policies_folder()
        .text(&format!(
            r#"
[connectors.log]
type = "command"
program = "/bin/sh"
args = ['{root}/log.sh']
timeout = "5s"

[entitlements.staging-db]
requestable_by = ["eng"]
approvers = ["sre"]
max_duration = "4h"
require_reason = false
open_to_externals = true
connector = "log"

[entitlements.logs]
requestable_by = ["eng"]
auto_approve = true
max_duration = "4h"
require_reason = false
open_to_externals = true
connector = "log"

[entitlements.prod-db]
requestable_by = ["eng"]
approvers = ["sre"]
max_duration = "1h"
require_reason = false
connector = "log"

[notifications]
approvers = ["mail"]
requester = ["mail"]
sponsor = ["mail"]
expiry_warning = "0s"
"#
        ))
        .smtp_channel("mail", smtp_port)
        .text(&format!(
            r#"
[users.vic]
groups = ["eng"]
employment = "vendor"
sponsor = "{vic_sponsor}"
account_expires = "{vic_ends}"
email = "vic@example.com"
token_sha256 = "{vic_token}"
"#,
            vic_token = token_hash(&token("vic")),
        ))
        // vera is a vendor only because the directory says so.
        .users_with_email(&[
            ("vera", r#"groups = ["eng"]"#),
            ("sara", r#"groups = ["eng"]"#),
            ("tom", r#"groups = ["ops"]"#),
            ("carol", r#"groups = ["sre"]"#),
            ("sam", r#"groups = ["security"]"#),
            ("admin", "groups = [\"ops\"]\nroles = [\"admin\"]"),
        ])
        .parse_edited("vendors.toml", edit)
}

struct Harness {
    server: Server,
    clock: Arc<ManualClock>,
    base: String,
    smtp: SmtpSink,
    dir: tempfile::TempDir,
}

impl Harness {
    /// `None` when the SMTP sink cannot run here (and skipping is allowed).
    async fn start(vic_ends: Duration) -> Option<Harness> {
        let dir = tempfile::tempdir().unwrap();
        let smtp = SmtpSink::start(dir.path())?;
        let config = config(dir.path(), smtp.port, "sara", vic_ends);
        let (server, base, clock) = boot_at_t0(config).await;
        Some(Harness {
            server,
            clock,
            base,
            smtp,
            dir,
        })
    }

    fn client(&self, name: &str) -> Client {
        fixtures::client(&self.base, name)
    }

    /// Polls the request (as admin) until `done` holds.
    async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&RequestView) -> bool,
    ) -> RequestView {
        let admin = self.client("admin");
        let last = std::sync::Mutex::new(None);
        let found = tokio::time::timeout(
            WAIT,
            until(WAIT + Duration::from_secs(1), what, || async {
                let r = admin.get_request(id).await.unwrap();
                if let Ok(mut l) = last.lock() {
                    *l = Some(r.clone());
                }
                done(&r).then_some(r)
            }),
        )
        .await;
        found
            .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:#?}", last.lock().unwrap()))
    }

    /// Lines the connector script wrote: `ACTION USER ENTITLEMENT REQUEST`.
    fn target_saw(&self, action: &str, r: &RequestView) -> bool {
        let line = format!("{action} {} {} {}", r.requester, r.entitlement, r.id);
        std::fs::read_to_string(self.dir.path().join("connector.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == line)
    }

    async fn mailed(&self, to: &str, containing: &str) -> String {
        let found = tokio::time::timeout(
            WAIT,
            until(WAIT + Duration::from_secs(1), "a mail", || async {
                self.smtp
                    .subjects(to)
                    .into_iter()
                    .find(|s| s.contains(containing))
            }),
        )
        .await;
        match found {
            Ok(subject) => subject,
            Err(_) => {
                let outbox = self
                    .client("admin")
                    .notifications(&Default::default())
                    .await
                    .unwrap();
                panic!(
                    "no mail to {to} about {containing}: mailed {:?}; the outbox: {outbox:#?}",
                    self.smtp.messages()
                )
            }
        }
    }

    /// A SCIM call with the provisioning token: status and body.
    async fn scim(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        fixtures::scim(&self.base, SCIM_TOKEN, method, path, body).await
    }

    /// Provisions a user; their SCIM id.
    async fn provision(&self, body: Value) -> String {
        let (status, created) = self.scim("POST", "Users", body).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    async fn deactivate(&self, scim_id: &str) {
        let (status, body) = self
            .scim(
                "PATCH",
                &format!("Users/{scim_id}"),
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "Replace", "value": {"active": "False"}}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Asks, has the sponsor (and `carol` where a tier needs her) approve,
    /// and waits for the grant.
    async fn granted(&self, who: &str, sponsor: &str, entitlement: &str) -> RequestView {
        let r = self
            .client(who)
            .create_request(&ask(entitlement, 1800))
            .await
            .unwrap();
        assert_eq!(r.state, "pending", "{r:?}");
        if !r.approval_tiers.is_empty() {
            approve(&self.client("carol"), &r.id).await.unwrap();
        }
        approve(&self.client(sponsor), &r.id).await.unwrap();
        self.wait_for(&r.id, "the grant", |r| r.state == "active")
            .await
    }
}

fn ask(entitlement: &str, secs: u64) -> CreateRequest {
    CreateRequest {
        duration: Some(DurationInput::Seconds(secs)),
        ..fixtures::ask(entitlement)
    }
}

async fn approve(who: &Client, id: &str) -> Result<RequestView, ClientError> {
    who.act(id, &Action::Approve { comment: None }).await
}

fn status(e: &ClientError) -> (u16, String) {
    match e {
        ClientError::Api {
            status, message, ..
        } => (*status, message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendors_grant_needs_the_sponsor_and_ends_with_the_account_after_which_they_are_refused()
{
    bounded(Duration::from_secs(90), async {
        let Some(h) = Harness::start(2 * HOUR).await else {
            return;
        };
        let (vic, carol, sara) = (h.client("vic"), h.client("carol"), h.client("sara"));
        let me = vic.me().await.unwrap();
        assert_eq!(me.sponsor.as_deref(), Some("sara"));
        assert_eq!(me.account_expires, Some(format_time(after(2 * HOUR))));

        // Four hours asked with two left: cut to the account, which the
        // two-hour vendor policy then accepts (it judges what is granted).
        let r = vic
            .create_request(&ask("staging-db", 4 * 3600))
            .await
            .unwrap();
        assert_eq!((r.state.as_str(), r.duration_seconds), ("pending", 7200));
        assert_eq!(r.required_approvals, 2);
        assert_eq!(r.sponsor.as_deref(), Some("sara"));
        // The sponsor is asked, in the inbox and by mail.
        let inbox = sara
            .list_requests(&RequestQuery {
                awaiting_me: Some(true),
                ..RequestQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            inbox.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [r.id.as_str()]
        );
        h.mailed("sara@example.com", "waits for your approval")
            .await;

        // The policy's approver alone does not activate it.
        let after_carol = approve(&carol, &r.id).await.unwrap();
        assert_eq!(after_carol.state, "pending");
        assert!(!h.target_saw("grant", &r));
        // Nobody else from the tier stands in for the sponsor.
        let (code, message) = status(&approve(&h.client("admin"), &r.id).await.unwrap_err());
        assert_eq!(code, 403, "{message}");
        let after_sara = approve(&sara, &r.id).await.unwrap();
        assert_eq!(after_sara.state, "approved");
        let active = h
            .wait_for(&r.id, "the grant", |r| r.state == "active")
            .await;
        assert_eq!(active.expires_at, Some(format_time(after(2 * HOUR))));
        assert!(h.target_saw("grant", &r));
        let subject = h.mailed("sara@example.com", "whom you sponsor").await;
        assert!(
            subject.contains("vic") && subject.contains("staging-db"),
            "{subject}"
        );

        // The account ends: so does the grant, and so does the vendor.
        h.clock.advance_to(after(2 * HOUR));
        let ended = h
            .wait_for(&r.id, "the expiry", |r| {
                r.state == "expired" && r.job.is_none()
            })
            .await;
        assert!(h.target_saw("revoke", &ended));
        let (code, message) = status(&vic.me().await.unwrap_err());
        assert_eq!(code, 401);
        assert!(message.contains("the account `vic` ended"), "{message}");
        let (code, _) = status(&vic.create_request(&ask("logs", 600)).await.unwrap_err());
        assert_eq!(code, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_asks_only_for_what_is_open_to_externals() {
    bounded(Duration::from_secs(60), async {
        let Some(h) = Harness::start(10 * HOUR).await else {
            return;
        };
        let vic = h.client("vic");
        let listed: Vec<(String, String)> = vic
            .entitlements()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.approval))
            .collect();
        assert_eq!(
            listed,
            [
                ("logs".to_owned(), "the sponsor `sara`".to_owned()),
                (
                    "staging-db".to_owned(),
                    "1 from [sre] (config.staging-db.approvals) and the sponsor `sara`".to_owned()
                ),
            ]
        );
        let (code, message) = status(&vic.create_request(&ask("prod-db", 600)).await.unwrap_err());
        assert_eq!(code, 403);
        assert!(
            message.contains("`prod-db` is not open to external principals"),
            "{message}"
        );
        // Recorded as denied, like any denial by policy.
        let mine = my_requests(&vic).await;
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].state, "denied");
        assert!(mine[0]
            .end_reason
            .as_deref()
            .unwrap()
            .contains("sponsored by `sara`"));
        // Everyone else asks for it as before.
        let sara = h
            .client("sara")
            .create_request(&ask("prod-db", 600))
            .await
            .unwrap();
        assert_eq!(
            (sara.state.as_str(), sara.sponsor.as_deref()),
            ("pending", None)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_policies_approve_at_once_waits_for_the_sponsor_who_may_revoke_it() {
    bounded(Duration::from_secs(60), async {
        let Some(h) = Harness::start(10 * HOUR).await else {
            return;
        };
        let (vic, carol, sara) = (h.client("vic"), h.client("carol"), h.client("sara"));
        // Longer than the vendor policy allows, with time to spare on the
        // account: denied by it (`principal.employment == "vendor"`).
        let (code, message) = status(
            &vic.create_request(&ask("logs", 3 * 3600))
                .await
                .unwrap_err(),
        );
        assert_eq!(code, 403);
        assert!(message.contains("at most two hours"), "{message}");
        let r = vic.create_request(&ask("logs", 1800)).await.unwrap();
        assert_eq!((r.state.as_str(), r.required_approvals), ("pending", 1));
        // The sponsor may see it; an unrelated person may not.
        assert_eq!(sara.get_request(&r.id).await.unwrap().id, r.id);
        let (code, _) = status(&h.client("sam").get_request(&r.id).await.unwrap_err());
        assert_eq!(code, 404);
        // Nobody the policies name approves it, so nobody but the sponsor
        // sees it to decide, and an admin who sees everything may not.
        let (code, _) = status(&approve(&carol, &r.id).await.unwrap_err());
        assert_eq!(code, 404);
        let (code, message) = status(&approve(&h.client("admin"), &r.id).await.unwrap_err());
        assert_eq!(code, 403);
        assert!(message.contains("may not approve"), "{message}");
        approve(&sara, &r.id).await.unwrap();
        let active = h
            .wait_for(&r.id, "the grant", |r| r.state == "active")
            .await;
        h.mailed("sara@example.com", "whom you sponsor").await;
        h.mailed("vic@example.com", "is active until").await;

        // Nobody but an admin or the sponsor revokes it: not the vendor
        // (who releases instead), not someone who cannot even see it.
        let revoke = Action::Revoke {
            reason: "the engagement is paused".to_owned(),
        };
        let (code, message) = status(&vic.act(&r.id, &revoke).await.unwrap_err());
        assert_eq!(code, 403);
        assert!(message.contains("nor the sponsor"), "{message}");
        let (code, _) = status(&carol.act(&r.id, &revoke).await.unwrap_err());
        assert_eq!(code, 404);
        let revoked = sara.act(&r.id, &revoke).await.unwrap();
        assert_eq!(
            (revoked.state.as_str(), revoked.ended_by.as_deref()),
            ("revoked", Some("sara"))
        );
        let gone = h
            .wait_for(&r.id, "the removal", |r| r.deprovisioned_at.is_some())
            .await;
        assert!(h.target_saw("revoke", &active) && gone.job.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sponsors_deactivation_over_scim_ends_their_vendors_grants() {
    bounded(Duration::from_secs(90), async {
        let Some(h) = Harness::start(10 * HOUR).await else {
            return;
        };
        // The directory knows sara and tom, and makes vera tom's vendor.
        let sara_id = h
            .provision(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                              "userName": "sara", "active": true}))
            .await;
        let tom_id = h
            .provision(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                              "userName": "tom", "active": true}))
            .await;
        let vera_ends = format_time(after(10 * HOUR));
        let vera = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:airlock:2.0:User"],
            "userName": "vera", "active": true,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeType": "Vendor"},
            "urn:ietf:params:scim:schemas:extension:airlock:2.0:User":
                {"sponsor": "tom", "accountExpires": vera_ends},
        });
        // Malformed terms are refused, naming the attribute.
        let mut own = vera.clone();
        own["urn:ietf:params:scim:schemas:extension:airlock:2.0:User"]["sponsor"] = json!("vera");
        let (code, body) = h.scim("POST", "Users", own).await;
        assert_eq!((code, body["scimType"].as_str()), (400, Some("invalidValue")));
        assert!(body["detail"].as_str().unwrap().contains("`sponsor`"), "{body}");
        let mut bad = vera.clone();
        bad["urn:ietf:params:scim:schemas:extension:airlock:2.0:User"]["accountExpires"] =
            json!("soon");
        let (code, body) = h.scim("POST", "Users", bad).await;
        assert_eq!(code, 400);
        assert!(body["detail"].as_str().unwrap().contains("`accountExpires`"), "{body}");
        let vera_id = h.provision(vera).await;
        let (_, shown) = h.scim("GET", &format!("Users/{vera_id}"), Value::Null).await;
        assert_eq!(
            shown["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeType"],
            "vendor"
        );
        assert_eq!(
            shown["urn:ietf:params:scim:schemas:extension:airlock:2.0:User"]["sponsor"],
            "tom"
        );
        let me = h.client("vera").me().await.unwrap();
        assert_eq!(me.sponsor.as_deref(), Some("tom"));

        let vics = h.granted("vic", "sara", "logs").await;
        let veras = h.granted("vera", "tom", "staging-db").await;

        // sara leaves: vic's grant ends with her, vera's (tom's) stays.
        h.deactivate(&sara_id).await;
        let ended = h.client("admin").get_request(&vics.id).await.unwrap();
        assert_eq!(ended.state, "revoked", "ended before the SCIM call is answered");
        let events = audit_of_action(&h.client("admin"), &vics.id, "revoked").await;
        assert_eq!(events.len(), 1);
        let cause = &events[0].details["cause"];
        assert!(
            cause.contains("the sponsor of `vic` left") && cause.contains("`sara` deactivated"),
            "{cause}"
        );
        assert_eq!(events[0].actor, "scim:provisioning");
        h.wait_for(&vics.id, "vic's removal", |r| r.deprovisioned_at.is_some()).await;
        assert!(h.target_saw("revoke", &vics));
        assert_eq!(h.client("admin").get_request(&veras.id).await.unwrap().state, "active");
        // And vic may do nothing while nobody answers for him.
        let (code, message) = status(&h.client("vic").me().await.unwrap_err());
        assert_eq!(code, 401);
        assert!(message.contains("the sponsor `sara` of `vic` is deactivated"), "{message}");

        // tom leaves too: vera's grant ends.
        h.deactivate(&tom_id).await;
        let vera_ended = h.client("admin").get_request(&veras.id).await.unwrap();
        assert_eq!(vera_ended.state, "revoked");
        assert!(vera_ended.end_reason.unwrap().contains("the sponsor of `vera` left"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sponsor_changed_in_the_config_ends_the_vendors_grants_at_restart() {
    bounded(Duration::from_secs(90), async {
        let Some(h) = Harness::start(10 * HOUR).await else {
            return;
        };
        let grant = h.granted("vic", "sara", "logs").await;
        // vera holds a grant as an employee (no SCIM here).
        let veras = h
            .client("vera")
            .create_request(&ask("logs", 1800))
            .await
            .unwrap();
        assert_eq!(veras.sponsor, None);
        let veras = h
            .wait_for(&veras.id, "vera's grant", |r| r.state == "active")
            .await;
        let Harness {
            server,
            clock,
            smtp,
            dir,
            ..
        } = h;
        server.shutdown().await;
        // The config read again: vic is sam's vendor now, and vera a
        // vendor sara sponsors.
        let vera_ends = format_time(after(10 * HOUR));
        let config = config_with(dir.path(), smtp.port, "sam", 10 * HOUR, |t| {
            t.replace(
                "[users.vera]\n",
                &format!(
                    "[users.vera]\nemployment = \"vendor\"\nsponsor = \"sara\"\n\
                     account_expires = \"{vera_ends}\"\n"
                ),
            )
        });
        let (server, base) = boot(config, &clock).await;
        let h = Harness {
            base,
            server,
            clock,
            smtp,
            dir,
        };
        let ended = h
            .wait_for(&grant.id, "the revocation", |r| r.state == "revoked")
            .await;
        let reason = ended.end_reason.unwrap();
        assert!(
            reason.contains("sponsor changed from `sara` to `sam` in the configuration"),
            "{reason}"
        );
        h.wait_for(&grant.id, "the removal", |r| r.deprovisioned_at.is_some())
            .await;
        let vera_ended = h
            .wait_for(&veras.id, "vera's revocation", |r| r.state == "revoked")
            .await;
        let reason = vera_ended.end_reason.unwrap();
        assert!(
            reason
                .contains("became an external principal, sponsored by `sara` in the configuration"),
            "{reason}"
        );
        // Under the new terms, the new sponsor approves.
        let again = h.granted("vic", "sam", "logs").await;
        assert_eq!(again.sponsor.as_deref(), Some("sam"));
        h.server.shutdown().await;
    })
    .await;
}
