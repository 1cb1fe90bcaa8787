//! The `load` bench: a steady mixed load on the HTTP API for a fixed time.
//! Requesters ask for access (one entitlement approvers decide, one
//! auto-approved), look at their request and their history, check their
//! grant and release it; approvers read their inbox and approve. Every grant
//! and revoke goes to a signed webhook target on loopback, which records
//! when each revoke arrived: a share of the auto-approved grants is left to
//! expire, so grants fall due all through the run and the revocation lag
//! (revoke arrival minus expiry) is measured under the load; with
//! `--due-per-minute` more grants, made only to fall due, add revocations at
//! a fixed rate on top (issue 17: 10,000 a minute). The server runs
//! in a process of its own ([`ChildServer`]); the bench prints per-endpoint
//! latency, the rates sustained, the server's memory (at rest, sampled,
//! peak) and the CPU time of the server and of the load generator.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_server::api::{parse_time, RequestQuery, RequestView};
use airlock_server::client::{Action, Client, ClientError};
use airlock_server::config::token_hash;
use airlock_server::store::sql::Location;
use anyhow::{bail, Context};

use crate::child::{cpu_time, status_kib, ChildServer};
use crate::lifecycle::{spawn_receiver, Received, SECRET};
use crate::profile::{self, Profile, Summary};
use crate::report::say;
use crate::seed::{self, seeded_location, Shape};
use crate::store::{Backend, Scratch};
use crate::{ask, now_ms, percentile, requester_users, server_table};

/// How long after a grant's expiry the bench asks for it again: the
/// revocation lag, with room to spare.
const EXPIRY_MARGIN_MS: i64 = 3_000;
/// Why the bench asks.
const REASON: &str = "load benchmark";
/// The entitlement approvers decide.
const DECIDED: &str = "app-approve";
/// The entitlement policy approves at once.
const AUTO: &str = "app-auto";
/// Auto-approved entitlements `due-0`, `due-1`, … for the grants made only
/// to fall due: each of their people holds one of each at a time.
const DUE_ENTITLEMENTS: usize = 40;

#[derive(clap::Args, Clone)]
pub struct LoadArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent requesters (each a client of its own, in turn acting for
    /// --users-each people).
    #[arg(long, default_value_t = 32)]
    requesters: usize,
    /// People each requester acts for, in turn.
    #[arg(long, default_value_t = 64)]
    users_each: usize,
    /// Concurrent approvers.
    #[arg(long, default_value_t = 4)]
    approvers: usize,
    /// How long each grant lasts, in seconds.
    #[arg(long, default_value_t = 10)]
    grant_seconds: u64,
    /// Pause of each requester between two rounds, in milliseconds (0: as
    /// fast as the server answers).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Spread of each pause around --think-ms, in percent: each lasts a
    /// uniformly drawn time within that much either side (the mean stays
    /// --think-ms), so requesters that start together do not stay in step
    /// and ask in bursts.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    think_spread: u8,
    /// Grants made only to fall due, this many a minute on top of the load
    /// (auto-approved, each lasting --due-seconds, asked on a fixed
    /// schedule whatever the answers take), so revocations run at that
    /// rate while the load goes on; their lag is measured with the rest.
    #[arg(long, default_value_t = 0)]
    due_per_minute: u64,
    /// How long each of the --due-per-minute grants lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    due_seconds: u64,
    /// Run against PostgreSQL (a scratch database created on this server)
    /// instead of SQLite; with --reuse, the database this URL names.
    #[arg(long)]
    postgres: Option<String>,
    /// Run on the store `check --reuse DIR` seeded (its requests, grants
    /// and audit chain stay; the load adds to them): with SQLite the
    /// database in DIR, with --postgres the database the URL names, its
    /// seeded marker in DIR. The load's people are the seeded requesters
    /// `u0`, `u1`, …, so their histories hold their seeded requests.
    #[arg(long, value_name = "DIR")]
    reuse: Option<PathBuf>,
}

impl LoadArgs {
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// What one endpoint measured.
#[derive(Default)]
struct Endpoint {
    latencies_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

/// What the clients measured, by endpoint.
#[derive(Default)]
struct Calls {
    endpoints: BTreeMap<&'static str, Endpoint>,
}

impl Calls {
    /// Times `call` as `endpoint`; its answer, or `None` when it failed
    /// (counted, the first error kept).
    async fn timed<T>(
        &mut self,
        endpoint: &'static str,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Option<T> {
        let started = Instant::now();
        let answer = call.await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let e = self.endpoints.entry(endpoint).or_default();
        match answer {
            Ok(v) => {
                e.latencies_ms.push(ms);
                Some(v)
            }
            Err(err) => {
                e.errors += 1;
                e.first_error.get_or_insert_with(|| err.to_string());
                None
            }
        }
    }

    fn merge(&mut self, other: Calls) {
        for (name, e) in other.endpoints {
            let mine = self.endpoints.entry(name).or_default();
            mine.latencies_ms.extend(e.latencies_ms);
            mine.errors += e.errors;
            if mine.first_error.is_none() {
                mine.first_error = e.first_error;
            }
        }
    }
}

/// One person a requester acts for, and what they hold.
#[derive(Default)]
struct Person {
    token: String,
    name: String,
    /// Their request approvers decide, still open.
    decided: Option<String>,
    /// Their auto-approved grant, its expiry (Unix ms), and whether they
    /// release it (else it is left to expire).
    auto: Option<(String, i64, bool)>,
}

/// A requester's pause between two rounds: `mean`, spread uniformly by
/// the fraction `spread` either side.
#[derive(Clone, Copy)]
struct Think {
    mean: Duration,
    spread: f64,
}

impl Think {
    fn pause(self) -> Duration {
        let factor = 1.0 + self.spread * (2.0 * rand::random::<f64>() - 1.0);
        self.mean.mul_f64(factor.max(0.0))
    }
}

/// What a requester leaves: its calls and the grants it let expire, with
/// their expiry (Unix ms).
type RequesterResult = (Calls, Vec<(String, i64)>);

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    if args.seconds == 0 || args.requesters == 0 || args.users_each == 0 || args.approvers == 0 {
        bail!("--seconds, --requesters, --users-each and --approvers must be at least 1");
    }
    let backend = match args.postgres {
        Some(_) => Backend::Postgres,
        None => Backend::Sqlite,
    };
    if let Some(dir) = &args.reuse {
        let shape = Shape::seeded_in(dir)?;
        let people = args.requesters * args.users_each;
        if people > shape.users {
            bail!(
                "{people} people (--requesters x --users-each) but the store in {} was seeded \
                 for {} users",
                dir.display(),
                shape.users
            );
        }
        return bench(
            &args,
            backend,
            dir,
            &seeded_location(&args.postgres, dir),
            Some(&shape),
        )
        .await;
    }
    let scratch = Scratch::create(backend, args.postgres.as_deref().unwrap_or_default()).await?;
    let result = bench(&args, backend, &scratch.dir, &scratch.location, None).await;
    scratch.remove().await?;
    result
}

async fn bench(
    args: &LoadArgs,
    backend: Backend,
    dir: &Path,
    location: &Location,
    seeded: Option<&Shape>,
) -> anyhow::Result<()> {
    let people = args.requesters * args.users_each;
    say!(
        "airlock-bench load: {} requesters acting for {people} people, {} approvers, {}s grants, for {}s on {}, on {} cores",
        args.requesters,
        args.approvers,
        args.grant_seconds,
        args.seconds,
        backend.label(),
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    if args.think_ms > 0 {
        say!(
            "each requester pausing {} ms ±{}% between rounds",
            args.think_ms,
            args.think_spread
        );
    }
    if args.due_per_minute > 0 {
        say!(
            "plus {} auto-approved grants a minute made only to fall due, {}s each",
            args.due_per_minute,
            args.due_seconds
        );
    }
    if let Some(shape) = seeded {
        say!(
            "on a seeded store: {} active grants among {} requests ({} users, {} entitlements)",
            shape.grants,
            shape.requests,
            shape.users,
            shape.entitlements
        );
    }
    let (hook, seen) = spawn_receiver().await?;
    let data_dir = seed::data_dir(dir);
    std::fs::create_dir_all(&data_dir)?;
    let location = seed::in_data_dir(location, dir);
    let (mut text, tokens) = config(args, &hook, &data_dir, &location);
    if let Some(shape) = seeded {
        text.push_str(&shape.entitlement_tables());
        text.push_str(&shape.approver_tables());
    }
    let config = dir.join("airlock.toml");
    std::fs::write(&config, text)?;
    let server = ChildServer::start(&config).await?;
    let pid = server.pid;
    say!(
        "server (pid {pid}) ready in {:.2}s from its start, {:.1} MiB resident at rest",
        server.ready.as_secs_f64(),
        status_kib(pid, "VmRSS")? as f64 / 1024.0
    );
    let url = format!("http://{}", server.addr);
    // The clients run on one thread of their own: on two cores every more
    // runnable thread of the load generator takes a core from the server.
    let (drive_args, drive_url) = (args.clone(), url.clone());
    let driven = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(drive(&drive_args, &drive_url, tokens, pid))
    })
    .await
    .context("the load generator's thread");
    let lags = match &driven {
        Ok(Ok(d)) => {
            let longest = args.grant_seconds.max(args.due_seconds);
            wait_for_revokes(&seen, &d.expiring, longest).await
        }
        _ => Vec::new(),
    };
    let peak_kib = status_kib(pid, "VmHWM")?;
    server.stop().await;
    let driven = driven??;
    print_figures(&driven, &seen, lags, peak_kib)
}

fn config(
    args: &LoadArgs,
    hook: &str,
    data_dir: &Path,
    database: &Location,
) -> (String, Vec<String>) {
    let mut text = format!(
        r#"{server}
[connectors.hook]
type = "webhook"
url = "{hook}"
secret = "{SECRET}"
timeout = "10s"

[entitlements.{DECIDED}]
requestable_by = ["requesters"]
max_duration = "1h"
require_reason = true
approvals_required = 1
approvers = ["approvers"]
connector = "hook"

[entitlements.{AUTO}]
requestable_by = ["requesters"]
max_duration = "1h"
auto_approve = true
connector = "hook"
"#,
        server = server_table(data_dir, database),
    );
    for i in 0..args.approvers {
        let _ = write!(
            text,
            "\n[users.load-approver{i}]\ngroups = [\"approvers\"]\ntoken_sha256 = \"{}\"\n",
            token_hash(&approver_token(i))
        );
    }
    for j in 0..DUE_ENTITLEMENTS.min(due_people(args)) {
        let _ = write!(
            text,
            "\n[entitlements.due-{j}]\nrequestable_by = [\"due\"]\nmax_duration = \"1h\"\n\
             auto_approve = true\nconnector = \"hook\"\n"
        );
    }
    for i in 0..due_people(args) {
        let _ = write!(
            text,
            "\n[users.due{i}]\ngroups = [\"due\"]\ntoken_sha256 = \"{}\"\n",
            token_hash(&due_token(i))
        );
    }
    let tokens = requester_users(&mut text, args.requesters * args.users_each, "load-token-");
    (text, tokens)
}

/// The (person, entitlement) slots the grants made to fall due take in
/// turn: enough that a slot is free again (its grant revoked, with
/// [`EXPIRY_MARGIN_MS`] to spare) before its next turn at the asked rate.
fn due_slots(args: &LoadArgs) -> usize {
    if args.due_per_minute == 0 {
        return 0;
    }
    let busy_seconds = args.due_seconds as f64 + EXPIRY_MARGIN_MS as f64 / 1000.0 + DUE_SLACK_S;
    (args.due_per_minute as f64 / 60.0 * busy_seconds * 1.25).ceil() as usize
}

fn due_people(args: &LoadArgs) -> usize {
    due_slots(args).div_ceil(DUE_ENTITLEMENTS)
}

fn due_token(i: usize) -> String {
    format!("load-due-{i}")
}

/// Seconds a slot waits beyond its grant's expiry and margin, for the time
/// the request took to be answered.
const DUE_SLACK_S: f64 = 2.0;

fn approver_token(i: usize) -> String {
    format!("load-approver-{i}")
}

/// What the clients did.
struct Driven {
    calls: Calls,
    /// Grants left to expire, with their expiry (Unix ms).
    expiring: Vec<(String, i64)>,
    elapsed: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
    /// The server's resident memory, sampled every 500 ms (KiB).
    server_rss_kib: Vec<u64>,
    /// Grants made only to fall due: asked, and turns skipped because no
    /// slot was free yet.
    due_asked: usize,
    due_skipped: usize,
    /// Where the server's time went (`--profile`).
    profile: Option<Summary>,
}

async fn drive(
    args: &LoadArgs,
    url: &str,
    tokens: Vec<String>,
    server_pid: u32,
) -> anyhow::Result<Driven> {
    let base = Client::new(url, "none")?;
    // perf first: its start-up stays out of the CPU figures.
    let profile = Profile::start(server_pid).await?;
    let (server_cpu_before, client_cpu_before) =
        (cpu_time(server_pid)?, cpu_time(std::process::id())?);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let stop = tokio::sync::watch::channel(false);
    let sampler = {
        let mut stopped = stop.1.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if let Ok(kib) = status_kib(server_pid, "VmRSS") {
                    samples.push(kib);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped.changed() => return samples,
                }
            }
        })
    };
    let mut requesters = Vec::new();
    for (k, chunk) in tokens.chunks(args.users_each).enumerate() {
        let people: Vec<Person> = chunk
            .iter()
            .enumerate()
            .map(|(j, token)| Person {
                token: token.clone(),
                name: format!("u{}", k * args.users_each + j),
                ..Person::default()
            })
            .collect();
        let base = base.clone();
        let grant_seconds = args.grant_seconds;
        let think = Think {
            mean: Duration::from_millis(args.think_ms),
            spread: f64::from(args.think_spread) / 100.0,
        };
        // Paced requesters start spread over one pause, not all in the
        // same millisecond: a burst of every requester's first calls at a
        // cold server had made the requests' p99 (at 64 slow calls, more
        // than 1% of a minute's requests) a figure of the start alone.
        let start_after = think.mean.mul_f64(k as f64 / args.requesters as f64);
        requesters.push(tokio::spawn(async move {
            tokio::time::sleep(start_after).await;
            requester(base, people, k, grant_seconds, think, until).await
        }));
    }
    let falling_due = (args.due_per_minute > 0).then(|| {
        tokio::spawn(fall_due(
            base.clone(),
            due_slots(args),
            args.due_per_minute,
            args.due_seconds,
            until,
        ))
    });
    let mut approvers = Vec::new();
    for i in 0..args.approvers {
        let client = base.with_token(&approver_token(i));
        let (count, grace) = (args.approvers, until + Duration::from_secs(5));
        approvers.push(tokio::spawn(async move {
            approver(client, i, count, grace).await
        }));
    }
    let mut calls = Calls::default();
    let mut expiring = Vec::new();
    for r in requesters {
        let (c, e) = r.await?;
        calls.merge(c);
        expiring.extend(e);
    }
    for a in approvers {
        calls.merge(a.await?);
    }
    let (mut due_asked, mut due_skipped) = (0, 0);
    if let Some(f) = falling_due {
        let due = f.await?;
        calls.merge(due.calls);
        expiring.extend(due.expiring);
        (due_asked, due_skipped) = (due.asked, due.skipped);
    }
    let elapsed = started.elapsed();
    let server_cpu = cpu_time(server_pid)?.saturating_sub(server_cpu_before);
    let client_cpu = cpu_time(std::process::id())?.saturating_sub(client_cpu_before);
    let profile = profile::finish(profile, elapsed, server_cpu).await?;
    let _ = stop.0.send(true);
    let server_rss_kib = sampler.await?;
    Ok(Driven {
        calls,
        expiring,
        elapsed,
        server_cpu,
        client_cpu,
        server_rss_kib,
        due_asked,
        due_skipped,
        profile,
    })
}

/// What [`fall_due`] did.
struct FallingDue {
    calls: Calls,
    expiring: Vec<(String, i64)>,
    asked: usize,
    skipped: usize,
}

/// Asks for `per_minute` auto-approved grants a minute, each lasting
/// `seconds`, until `until`: on a fixed schedule (each ask a task of its
/// own, so a slow answer never delays the next), taking the slots
/// (person, entitlement) in turn; a slot still held at its turn is skipped
/// and counted.
async fn fall_due(
    base: Client,
    slots: usize,
    per_minute: u64,
    seconds: u64,
    until: Instant,
) -> FallingDue {
    let interval = Duration::from_secs_f64(60.0 / per_minute as f64);
    // Each slot and the Unix ms from which it may ask again, in turn order.
    let mut turns: std::collections::VecDeque<(usize, i64)> = (0..slots).map(|s| (s, 0)).collect();
    let done = Arc::new(Mutex::new((Calls::default(), Vec::new())));
    let mut asks = tokio::task::JoinSet::new();
    let (mut asked, mut skipped) = (0, 0);
    let mut next = Instant::now();
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let Some(&(slot, free_at)) = turns.front() else {
            break;
        };
        let now = now_ms();
        if free_at > now {
            skipped += 1;
            continue;
        }
        turns.pop_front();
        let busy_ms =
            (seconds as f64 * 1000.0 + EXPIRY_MARGIN_MS as f64 + DUE_SLACK_S * 1000.0) as i64;
        turns.push_back((slot, now + busy_ms));
        asked += 1;
        let client = base.with_token(&due_token(slot / DUE_ENTITLEMENTS));
        let entitlement = format!("due-{}", slot % DUE_ENTITLEMENTS);
        let done = Arc::clone(&done);
        asks.spawn(async move {
            let mut calls = Calls::default();
            let view = calls
                .timed(
                    "due request",
                    client.create_request(&ask(&entitlement, seconds, REASON)),
                )
                .await;
            let expiring = view.and_then(|v| expiry_of(&v).map(|at| (v.id, at)));
            if let Ok(mut d) = done.lock() {
                d.0.merge(calls);
                d.1.extend(expiring);
            }
        });
    }
    while asks.join_next().await.is_some() {}
    let (calls, expiring) = match Arc::try_unwrap(done).map(Mutex::into_inner) {
        Ok(Ok(d)) => d,
        _ => (Calls::default(), Vec::new()),
    };
    FallingDue {
        calls,
        expiring,
        asked,
        skipped,
    }
}

fn expiry_of(view: &RequestView) -> Option<i64> {
    view.expires_at
        .as_deref()
        .and_then(|at| parse_time(at).ok())
        .map(airlock_core::Timestamp::unix_millis)
}

/// One requester: in turn for each of its people, ends what they hold
/// from the last round (releasing the decided grant, or cancelling it if
/// still pending; releasing every other auto-approved grant and letting
/// the rest expire), asks again, shows the request, lists their history,
/// and checks the auto-approved grant.
async fn requester(
    base: Client,
    mut people: Vec<Person>,
    k: usize,
    grant_seconds: u64,
    think: Think,
    until: Instant,
) -> RequesterResult {
    let mut calls = Calls::default();
    let mut expiring = Vec::new();
    let mut round = k;
    while Instant::now() < until {
        for person in &mut people {
            if Instant::now() >= until {
                break;
            }
            round += 1;
            let client = base.with_token(&person.token);
            if let Some(id) = person.decided.take() {
                let view = calls.timed("show", client.get_request(&id)).await;
                match view.map(|v| v.state) {
                    Some(state) if state == "active" => {
                        calls
                            .timed("release", client.act(&id, &Action::Release))
                            .await;
                    }
                    Some(state) if state == "pending" || state == "approved" => {
                        calls
                            .timed("cancel", client.act(&id, &Action::Cancel))
                            .await;
                    }
                    _ => {}
                }
            }
            let created = calls
                .timed(
                    "request",
                    client.create_request(&ask(DECIDED, grant_seconds, REASON)),
                )
                .await;
            person.decided = created.map(|v| v.id);
            let mine = RequestQuery {
                mine: Some(true),
                limit: Some(20),
                ..RequestQuery::default()
            };
            calls.timed("list mine", client.list_requests(&mine)).await;
            let free = match &person.auto {
                None => true,
                Some((id, _, true)) => {
                    let id = id.clone();
                    calls
                        .timed("release", client.act(&id, &Action::Release))
                        .await
                        .is_some()
                }
                // Past its expiry the grant stays open until the server
                // has revoked it: asking again before then is refused.
                Some((_, expires, false)) => expires.saturating_add(EXPIRY_MARGIN_MS) <= now_ms(),
            };
            if free {
                person.auto = None;
                if let Some(view) = calls
                    .timed(
                        "auto request",
                        client.create_request(&ask(AUTO, grant_seconds, REASON)),
                    )
                    .await
                {
                    if let Some(expires) = expiry_of(&view) {
                        // Every other grant is released, the rest expire.
                        let release = round.is_multiple_of(2);
                        if !release {
                            expiring.push((view.id.clone(), expires));
                        }
                        person.auto = Some((view.id, expires, release));
                    }
                }
            }
            calls.timed("check", client.check(&person.name, AUTO)).await;
            if !think.mean.is_zero() {
                tokio::time::sleep(think.pause()).await;
            }
        }
    }
    (calls, expiring)
}

/// One approver: reads the requests awaiting them and approves its share
/// (request ids are split between approvers, so two never race for one),
/// until `until`.
async fn approver(client: Client, i: usize, count: usize, until: Instant) -> Calls {
    let mut calls = Calls::default();
    let inbox = RequestQuery {
        awaiting_me: Some(true),
        limit: Some(50),
        ..RequestQuery::default()
    };
    while Instant::now() < until {
        let Some(waiting) = calls.timed("inbox", client.list_requests(&inbox)).await else {
            continue;
        };
        let mine: Vec<RequestView> = waiting
            .into_iter()
            .filter(|r| share_of(&r.id, count) == i)
            .collect();
        if mine.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for r in mine {
            calls
                .timed(
                    "approve",
                    client.act(&r.id, &Action::Approve { comment: None }),
                )
                .await;
        }
    }
    calls
}

/// Which of `count` approvers approves request `id`.
fn share_of(id: &str, count: usize) -> usize {
    let sum = id.bytes().fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    sum % count.max(1)
}

/// Waits (bounded) until the receiver saw the revoke of every grant left
/// to expire; the lag of each (revoke arrival minus expiry, ms), sorted.
async fn wait_for_revokes(
    seen: &Mutex<Received>,
    expiring: &[(String, i64)],
    grant_seconds: u64,
) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(grant_seconds + 30);
    loop {
        let arrived = seen
            .lock()
            .map(|s| {
                expiring
                    .iter()
                    .filter(|(id, _)| s.revokes.contains_key(id))
                    .count()
            })
            .unwrap_or(0);
        if arrived >= expiring.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Ok(seen) = seen.lock() else {
        return Vec::new();
    };
    let mut lags: Vec<f64> = expiring
        .iter()
        .filter_map(|(id, expires)| seen.revokes.get(id).map(|at| (at - expires) as f64))
        .collect();
    lags.sort_by(f64::total_cmp);
    lags
}

fn print_figures(
    d: &Driven,
    seen: &Arc<Mutex<Received>>,
    lags: Vec<f64>,
    peak_kib: u64,
) -> anyhow::Result<()> {
    let secs = d.elapsed.as_secs_f64();
    let mut total = 0usize;
    let mut errors = 0usize;
    say!("endpoint      calls   per s     p50 ms    p99 ms    max ms  errors");
    for (name, e) in &d.calls.endpoints {
        let mut l = e.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        total += l.len();
        errors += e.errors;
        say!(
            "{name:<12} {:>6} {:>7.0} {:>10.2} {:>9.2} {:>9.2} {:>7}",
            l.len(),
            l.len() as f64 / secs,
            percentile(&l, 50.0),
            percentile(&l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            e.errors
        );
    }
    for (name, e) in &d.calls.endpoints {
        if let Some(first) = &e.first_error {
            say!("first error of {name}: {first}");
        }
    }
    let mut all: Vec<f64> = d
        .calls
        .endpoints
        .values()
        .flat_map(|e| e.latencies_ms.iter().copied())
        .collect();
    all.sort_by(f64::total_cmp);
    say!(
        "sustained: {:.0} calls/s over {secs:.1}s ({total} calls, {errors} errors); all calls p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total as f64 / secs,
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN)
    );
    let (grants, bad) = seen
        .lock()
        .map(|s| (s.grants, s.bad_signatures))
        .unwrap_or_default();
    say!("target: {grants} grants confirmed by the webhook, {bad} bad signatures");
    if d.due_asked + d.due_skipped > 0 {
        say!(
            "grants made to fall due: {} asked ({:.0} a minute), {} turns skipped (slot still held)",
            d.due_asked,
            d.due_asked as f64 * 60.0 / secs,
            d.due_skipped
        );
    }
    let due_per_min = d.expiring.len() as f64 * 60.0 / secs;
    say!(
        "revocation lag (revoke arrival - expiry) of {} grants left to expire ({due_per_min:.0} falling due per minute): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} not revoked in time",
        d.expiring.len(),
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or(f64::NAN),
        d.expiring.len() - lags.len()
    );
    let mut rss = d.server_rss_kib.clone();
    rss.sort_unstable();
    let mib = |kib: u64| kib as f64 / 1024.0;
    say!(
        "server memory: {:.1} MiB resident at the median sample, {:.1} MiB at the largest, {:.1} MiB peak (VmHWM)",
        mib(rss.get(rss.len() / 2).copied().unwrap_or(0)),
        mib(rss.last().copied().unwrap_or(0)),
        mib(peak_kib)
    );
    say!(
        "cpu: server {:.1}s ({:.0}% of one core), load generator {:.1}s ({:.0}%), over {secs:.1}s on {} cores",
        d.server_cpu.as_secs_f64(),
        100.0 * d.server_cpu.as_secs_f64() / secs,
        d.client_cpu.as_secs_f64(),
        100.0 * d.client_cpu.as_secs_f64() / secs,
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    let p99_ok = d.calls.endpoints.values().all(|e| {
        let mut l = e.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        percentile(&l, 99.0) <= TARGET_P99_MS
    });
    let lag_ok = percentile(&lags, 99.0) <= TARGET_LAG_P99_MS && lags.len() == d.expiring.len();
    say!(
        "target: every endpoint's p99 <= {TARGET_P99_MS} ms: {}; revocation lag p99 <= {TARGET_LAG_P99_MS} ms: {}",
        if p99_ok { "PASS" } else { "FAIL" },
        if lag_ok { "PASS" } else { "FAIL" }
    );
    if let Some(profile) = &d.profile {
        profile.say("under the load");
    }
    Ok(())
}

/// Targets of issue 17.
const TARGET_P99_MS: f64 = 20.0;
const TARGET_LAG_P99_MS: f64 = 1000.0;
