//! The `lifecycle` bench: a real server in process with the webhook connector
//! pointed at a local receiver that checks signatures and records calls; N
//! complete lifecycles driven through the HTTP API (request → approve → grant
//! → expiry → revoke). Shared by the `lifecycle` and `store` subcommands, so
//! both measure exactly the same path.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_connectors::webhook::{verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use airlock_server::api::parse_time;
use airlock_server::client::{Action, Client};
use airlock_server::config::{token_hash, Settings};
use airlock_server::store::sql::Location;
use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

use crate::report::say;
use crate::{ask, now_ms, percentile, requester_users, toml_string};

pub(crate) const SECRET: &str = "bench-webhook-secret-0123456789";

/// What one run measured.
pub struct LifecycleFigures {
    /// Lifecycles per second from the first request to the last revoke.
    pub end_to_end_per_s: f64,
    /// Lifecycles per second for the request and approve calls alone.
    pub submitted_per_s: f64,
}

/// What the webhook receiver saw.
#[derive(Default)]
pub(crate) struct Received {
    pub(crate) grants: usize,
    /// Request id → arrival time (Unix ms) of its first revoke.
    pub(crate) revokes: HashMap<String, i64>,
    pub(crate) bad_signatures: usize,
    /// Notification idempotency key → how often it arrived.
    notifications: HashMap<String, usize>,
    /// When the newest notification arrived (Unix ms).
    last_notification: i64,
}

async fn receive(
    axum::extract::State(seen): axum::extract::State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrived = now_ms();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let Ok(mut seen) = seen.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    if !verify_signature(
        SECRET.as_bytes(),
        header(TIMESTAMP_HEADER),
        &body,
        header(SIGNATURE_HEADER),
    ) {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let field = |k: &str| {
        event
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if let Some(key) = event
        .get("idempotency_key")
        .and_then(serde_json::Value::as_str)
    {
        *seen.notifications.entry(key.to_owned()).or_default() += 1;
        seen.last_notification = arrived;
        return StatusCode::OK;
    }
    let id = field("request_id");
    match field("action").as_str() {
        "grant" => seen.grants += 1,
        "revoke" => {
            seen.revokes.entry(id).or_insert(arrived);
        }
        _ => {}
    }
    StatusCode::OK
}

/// A webhook target on loopback checking signatures made with [`SECRET`]:
/// its URL and what it saw.
pub(crate) async fn spawn_receiver() -> anyhow::Result<(String, Arc<Mutex<Received>>)> {
    let seen = Arc::new(Mutex::new(Received::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&seen));
    tokio::spawn(async move { axum::serve(receiver, app).await });
    Ok((hook, seen))
}

/// Notifications each lifecycle causes for its requester when they are on
/// (approved, provisioned, ended). The approvers' message is dropped
/// instead of sent when the bench approved the request before it was due.
pub const NOTIFICATIONS_PER_LIFECYCLE: usize = 3;

fn for_approvers(key: &str) -> bool {
    key.contains("-awaiting_approval:")
}

fn config(
    n: usize,
    hook: &str,
    data_dir: &Path,
    database: &Location,
    notify: bool,
) -> (String, Vec<String>) {
    let database = match database {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => url.clone(),
    };
    let mut text = String::new();
    let _ = write!(
        text,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {}\ndatabase = {}\n\n\
         [connectors.hook]\ntype = \"webhook\"\nurl = \"{hook}\"\nsecret = \"{SECRET}\"\ntimeout = \"10s\"\n\n\
         [entitlements.bench-db]\nrequestable_by = [\"requesters\"]\nmax_duration = \"1h\"\nrequire_reason = true\n\
         approvals_required = 1\napprovers = [\"approvers\"]\nconnector = \"hook\"\n\n\
         [users.approver]\ngroups = [\"approvers\"]\ntoken_sha256 = \"{}\"\n",
        toml_string(&data_dir.display().to_string()),
        toml_string(&database),
        token_hash("approver-token")
    );
    if notify {
        // Signed webhooks to the same receiver: every message of the
        // lifecycle goes through the outbox and the dispatcher.
        let _ = write!(
            text,
            "\n[notifications]\napprovers = [\"hook\"]\nrequester = [\"hook\"]\nsecurity = [\"hook\"]\n\n\
             [notifications.channels.hook]\ntype = \"webhook\"\nurl = \"{hook}\"\nsecret = \"{SECRET}\"\n"
        );
    }
    let tokens = requester_users(&mut text, n, "bench-token-");
    (text, tokens)
}

/// Runs `n` lifecycles against a server whose store is `database` and prints
/// the figures. `data_dir` must exist; the caller removes it.
pub async fn run(
    database: &Location,
    data_dir: &Path,
    n: usize,
    concurrency: usize,
    grant_seconds: u64,
    notify: bool,
) -> anyhow::Result<LifecycleFigures> {
    let (hook, seen) = spawn_receiver().await?;

    let (text, tokens) = config(n, &hook, data_dir, database, notify);
    let settings = Settings::parse("bench.toml", &text, data_dir).context("bench config")?;
    let server = airlock_server::server::start(settings).await?;
    match database {
        Location::Sqlite(path) => say!(
            "store: SQLite (WAL, synchronous=FULL) in {}",
            path.parent().unwrap_or(data_dir).display()
        ),
        Location::Postgres(_) => say!("store: PostgreSQL at {}", database.describe()),
    }
    // The server is stopped on every path out, so a failed run leaves no
    // scheduler working on the database.
    let driven = drive(
        &format!("http://{}", server.addr()),
        &seen,
        tokens,
        concurrency,
        grant_seconds,
        if notify {
            n * NOTIFICATIONS_PER_LIFECYCLE
        } else {
            0
        },
    )
    .await;
    server.shutdown().await;
    let (latencies, expiries, submitted, total) = driven?;
    report(
        &seen,
        latencies,
        expiries,
        submitted,
        total,
        n,
        grant_seconds,
    )
}

/// Per-call API latencies (ms), each request's id and expiry (Unix ms),
/// the time to submit everything and the time until the last revoke.
type Driven = (Vec<f64>, Vec<(String, i64)>, Duration, Duration);

async fn drive(
    url: &str,
    seen: &Mutex<Received>,
    tokens: Vec<String>,
    concurrency: usize,
    grant_seconds: u64,
    notifications: usize,
) -> anyhow::Result<Driven> {
    let n = tokens.len();
    let base = Client::new(url, "approver-token")?;
    say!("airlock-bench lifecycle: {n} lifecycles, {concurrency} concurrent clients, {grant_seconds}s grants{}",
        if notifications > 0 { ", notifications on" } else { "" });
    let next = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(tokens);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, tokens, base) = (Arc::clone(&next), Arc::clone(&tokens), base.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies_ms = Vec::new();
            let mut expiries = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let requester = base.with_token(token);
                let t = Instant::now();
                let created = requester
                    .create_request(&ask("bench-db", grant_seconds, "benchmark"))
                    .await?;
                latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                let t = Instant::now();
                let approved = base
                    .act(&created.id, &Action::Approve { comment: None })
                    .await?;
                latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                let expires = approved
                    .expires_at
                    .as_deref()
                    .context("approved without expiry")?;
                let expires = parse_time(expires).map_err(anyhow::Error::msg)?;
                expiries.push((approved.id, expires.unix_millis()));
            }
            anyhow::Ok((latencies_ms, expiries))
        }));
    }
    let mut latencies = Vec::new();
    let mut expiries = Vec::new();
    for w in workers {
        let (l, e) = w.await??;
        latencies.extend(l);
        expiries.extend(e);
    }
    let submitted = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(grant_seconds + 120);
    loop {
        let done = seen.lock().map(|s| s.revokes.len()).unwrap_or(0);
        let told = seen
            .lock()
            .map(|s| s.notifications.keys().filter(|k| !for_approvers(k)).count())
            .unwrap_or(0);
        if done >= n && told >= notifications {
            break;
        }
        if Instant::now() > deadline {
            bail!("within the deadline only {done} of {n} grants were revoked and {told} of {notifications} notifications arrived");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((latencies, expiries, submitted, started.elapsed()))
}

fn report(
    seen: &Mutex<Received>,
    mut latencies: Vec<f64>,
    expiries: Vec<(String, i64)>,
    submitted: Duration,
    total: Duration,
    n: usize,
    grant_seconds: u64,
) -> anyhow::Result<LifecycleFigures> {
    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    let mut lags: Vec<f64> = expiries
        .iter()
        .filter_map(|(id, exp)| seen.revokes.get(id).map(|r| (r - exp) as f64))
        .collect();
    lags.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    let max_lag = lags.last().copied().unwrap_or(f64::NAN);
    let figures = LifecycleFigures {
        end_to_end_per_s: n as f64 / total.as_secs_f64(),
        submitted_per_s: n as f64 / submitted.as_secs_f64(),
    };
    say!(
        "grants received: {}, revokes received: {}, bad signatures: {}",
        seen.grants,
        seen.revokes.len(),
        seen.bad_signatures
    );
    say!(
        "throughput: {:.0} lifecycles/s end to end ({n} in {:.2}s, including the {grant_seconds}s grant time); \
         {:.0} lifecycles/s submitted (request+approve, {:.2}s)",
        figures.end_to_end_per_s,
        total.as_secs_f64(),
        figures.submitted_per_s,
        submitted.as_secs_f64()
    );
    say!(
        "api latency (request and approve calls): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    say!(
        "revocation lag (receiver revoke time - expiry): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        max_lag
    );
    if !seen.notifications.is_empty() {
        let twice = seen.notifications.values().filter(|c| **c > 1).count();
        let last_revoke = seen.revokes.values().copied().max().unwrap_or(0);
        let approvers = seen
            .notifications
            .keys()
            .filter(|k| for_approvers(k))
            .count();
        say!(
            "notifications: {} received through the outbox ({} for requesters, {approvers} for approvers: the others were approved before their message was sent and were dropped), {twice} more than once; the last one {} ms after the last revoke",
            seen.notifications.len(),
            seen.notifications.len() - approvers,
            seen.last_notification - last_revoke
        );
    }
    if seen.grants < n || lags.len() < n {
        bail!(
            "incomplete run: {} grants, {} lags for {n} lifecycles",
            seen.grants,
            lags.len()
        );
    }
    Ok(figures)
}
