//! The scheduler under injected time: targets that are out for ten hours,
//! simulated in seconds. The real server runs on a `ManualClock` that the
//! test moves from one retry to the next; the targets are real HTTP
//! receivers on 127.0.0.1 behind `webhook` connectors, one for each way a
//! target fails: it answers 503, it hangs past the connector's timeout, or
//! nothing listens. Connector timeouts are real time and kept short.
//!
//! What must hold: revocations are retried with backoff and never
//! abandoned, show as overdue in the API (what `airlock grants` prints) and
//! in `/metrics`, and once the targets are back everything due is revoked
//! within one backoff cap of simulated time.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::Timestamp;
use airlock_server::api::{parse_time, AuditQuery, RequestView};
use airlock_server::client::Client;
use airlock_server::config::Settings;
use airlock_server::engine::Clock;
use airlock_testkit::{bounded, until};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use fixtures::{ask, boot_at_t0, metrics, token, wait_for_state, ConfigText, T0};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod fixtures;

const SECRET: &str = "outage-test-webhook-secret";

const HOUR: Duration = Duration::from_secs(3600);
const OUTAGE: Duration = Duration::from_secs(10 * 3600);
/// `server.retry_cap`.
const RETRY_CAP: Duration = HOUR;
/// `server.revocation_overdue_after`.
const OVERDUE_AFTER: Duration = Duration::from_secs(300);

/// How a target answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// 503 to everything.
    Errors,
    /// Never answers.
    Hangs,
}

/// A webhook receiver on a fixed local port that can be taken down (the
/// port then refuses connections) and brought back on the same port.
struct Target {
    addr: std::net::SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Revoke calls that reached it.
    revokes: Arc<AtomicUsize>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

#[derive(Clone)]
struct Seen {
    mode: Arc<Mutex<Mode>>,
    revokes: Arc<AtomicUsize>,
}

async fn receive(State(seen): State<Seen>, body: Bytes) -> (StatusCode, &'static str) {
    let call: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if call["action"] == "revoke" {
        seen.revokes.fetch_add(1, Ordering::SeqCst);
    }
    let mode = *seen.mode.lock().unwrap();
    match mode {
        Mode::Up => (StatusCode::OK, "done"),
        Mode::Errors => (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance"),
        Mode::Hangs => std::future::pending().await,
    }
}

impl Target {
    async fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut target = Target {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Up)),
            revokes: Arc::default(),
            running: None,
        };
        target.serve(listener);
        target
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let seen = Seen {
            mode: Arc::clone(&self.mode),
            revokes: Arc::clone(&self.revokes),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(seen);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        });
        self.running = Some((stop, task));
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stops listening and closes every connection: calls are refused.
    async fn take_down(&mut self) {
        let (stop, task) = self.running.take().unwrap();
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(tokio::net::TcpStream::connect(self.addr).await.is_err());
    }

    async fn bring_back(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn revokes(&self) -> usize {
        self.revokes.load(Ordering::SeqCst)
    }
}

fn settings(dir: &std::path::Path, targets: &[(&str, &Target)]) -> Settings {
    let mut config = ConfigText::new(
        dir,
        "claim_lease = \"10s\"\nretry_base = \"1s\"\nretry_cap = \"1h\"\nrevocation_overdue_after = \"5m\"\n",
    )
    .users(&[
        ("alice", r#"groups = ["eng"]"#),
        ("ann", r#"roles = ["auditor"]"#),
    ]);
    for (name, target) in targets {
        config = config.text(&format!(
            r#"
[connectors.{name}]
type = "webhook"
url = "{}"
secret = "{SECRET}"
timeout = "300ms"

[entitlements.{name}]
requestable_by = ["eng"]
max_duration = "2h"
auto_approve = true
require_reason = false
connector = "{name}"
"#,
            target.url()
        ));
    }
    config.parse("outage.toml")
}

fn time(raw: &str) -> Timestamp {
    parse_time(raw).unwrap()
}

/// Waits until no revoke attempt due at `now` is still to be made or
/// reported: each request is either removed or waits for a later retry.
async fn settled(client: &Client, ids: &[String], now: Timestamp) -> Vec<RequestView> {
    until(
        Duration::from_secs(10),
        "every due attempt to report",
        || async {
            let mut views = Vec::new();
            for id in ids {
                let r = client.get_request(id).await.unwrap();
                let waiting = r.state == "expired"
                    && r.job.as_ref().is_some_and(|j| {
                        j.action == "revoke" && !j.in_flight && time(&j.next_attempt_at) > now
                    });
                if !(waiting || r.deprovisioned_at.is_some()) {
                    return None;
                }
                views.push(r);
            }
            Some(views)
        },
    )
    .await
}

/// The earliest retry still to come.
fn next_attempt(views: &[RequestView]) -> Timestamp {
    views
        .iter()
        .filter_map(|r| r.job.as_ref())
        .map(|j| time(&j.next_attempt_at))
        .min()
        .unwrap()
}

/// The value of an unlabelled gauge in the `/metrics` text.
async fn gauge(base: &str, name: &str) -> u64 {
    let text = metrics(base).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_outlast_a_ten_hour_outage_and_land_within_a_backoff_cap_of_recovery() {
    bounded(Duration::from_secs(90), async {
        let began = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let errors = Target::start().await;
        let hangs = Target::start().await;
        let mut refuses = Target::start().await;
        let names = ["errors", "hangs", "refuses"];
        let settings = settings(
            dir.path(),
            &[
                ("errors", &errors),
                ("hangs", &hangs),
                ("refuses", &refuses),
            ],
        );
        let (server, base, clock) = boot_at_t0(settings).await;
        let alice = fixtures::client(&base, "alice");

        // Three one-hour grants, provisioned while every target is up.
        let mut ids = Vec::new();
        for name in names {
            let r = alice.create_request(&ask(name)).await.unwrap();
            wait_for_state(&alice, &r.id, "active").await;
            ids.push(r.id);
        }

        // The outage starts; the grants expire an hour later.
        errors.set(Mode::Errors);
        hangs.set(Mode::Hangs);
        refuses.take_down().await;
        let expiry = T0.plus(HOUR);
        let recovery = expiry.plus(OUTAGE);
        clock.advance_to(expiry);

        // Step from each retry to the next until the outage ends.
        let mut attempts = vec![0u32; ids.len()];
        // When each request's next attempt was due, as of the last step.
        let mut due = vec![expiry; ids.len()];
        let mut steps = 0;
        loop {
            let now = clock.now();
            let views = settled(&alice, &ids, now).await;
            for (i, r) in views.iter().enumerate() {
                let job = r
                    .job
                    .as_ref()
                    .unwrap_or_else(|| panic!("abandoned: {r:#?}"));
                let attempted = due[i] <= now;
                assert_eq!(job.attempts > attempts[i], attempted, "{r:#?}");
                attempts[i] = job.attempts;
                due[i] = time(&job.next_attempt_at);
                let since = time(r.ended_at.as_deref().unwrap()).until(now);
                assert_eq!(r.revocation_overdue, since > OVERDUE_AFTER, "{r:#?}");
                let wait = now.until(due[i]);
                assert!(wait <= RETRY_CAP, "backed off {wait:?}: {r:#?}");
            }
            steps += 1;
            let next = next_attempt(&views);
            if next >= recovery {
                break;
            }
            clock.advance_to(next);
        }
        // Backoff doubles up to the cap: 12 retries reach an hour, then one
        // an hour for the rest of the ten.
        assert!(attempts.iter().all(|a| *a >= 20), "{attempts:?}");
        assert_eq!(errors.revokes(), attempts[0] as usize);
        assert_eq!(hangs.revokes(), attempts[1] as usize);
        assert_eq!(refuses.revokes(), 0);
        let auditor = alice.with_token(&token("ann"));
        for (id, a) in ids.iter().zip(&attempts) {
            let failures = auditor
                .audit(&AuditQuery {
                    request: Some(id.clone()),
                    action: Some("revoke_attempt_failed".to_owned()),
                    limit: Some(1000),
                    ..AuditQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(failures.len(), *a as usize, "{id}");
        }

        // At the end of the outage every one is overdue, in the API the CLI
        // prints and in the metrics.
        clock.advance_to(recovery);
        let grants = alice.grants().await.unwrap();
        assert_eq!(grants.len(), ids.len());
        assert!(grants
            .iter()
            .all(|g| g.state == "expired" && g.revocation_overdue));
        assert_eq!(gauge(&base, "airlock_revocations_outstanding").await, 3);
        assert_eq!(gauge(&base, "airlock_revocations_overdue").await, 3);

        // The targets come back; the retries already scheduled find them.
        errors.set(Mode::Up);
        hangs.set(Mode::Up);
        refuses.bring_back().await;
        let removed = loop {
            let views = settled(&alice, &ids, clock.now()).await;
            if views.iter().all(|r| r.deprovisioned_at.is_some()) {
                break views;
            }
            let next = next_attempt(&views);
            clock.advance_to(next);
        };
        for r in &removed {
            let at = time(r.deprovisioned_at.as_deref().unwrap());
            assert!(at >= recovery && at <= recovery.plus(RETRY_CAP), "{r:#?}");
            assert!(r.job.is_none() && !r.revocation_overdue, "{r:#?}");
        }
        assert_eq!(errors.revokes(), attempts[0] as usize + 1);
        assert_eq!(hangs.revokes(), attempts[1] as usize + 1);
        assert_eq!(refuses.revokes(), 1);
        assert!(alice.grants().await.unwrap().is_empty());
        assert_eq!(gauge(&base, "airlock_revocations_outstanding").await, 0);
        assert_eq!(gauge(&base, "airlock_revocations_overdue").await, 0);
        eprintln!(
            "{steps} retry steps over {}h of simulated outage in {:?}",
            OUTAGE.as_secs() / 3600,
            began.elapsed()
        );
        server.shutdown().await;
    })
    .await;
}
