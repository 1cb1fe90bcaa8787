//! The `throughput` bench: how many requests a node takes and how many it
//! approves with a few busy clients (issue 17: eight clients on SQLite,
//! ≥ 5,000 request creations/s and ≥ 2,500 approvals/s, each approval's
//! grant confirmed by a webhook target, p99 ≤ 5 ms).
//!
//! Two phases against the real server in a process of its own
//! ([`ChildServer`]): the clients first create N requests for an
//! entitlement approvers decide, each for a person of its own, as fast as
//! the server answers (closed loop); then the same number of clients, as
//! approvers, approve them all. An approval counts once the signed webhook
//! target on loopback has received its grant. The clients run on one thread
//! of their own, and the bench prints their CPU time beside the server's so
//! that a slow generator shows.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_server::client::{Action, Client};
use airlock_server::config::token_hash;
use airlock_server::store::sql::Location;
use anyhow::bail;

use crate::child::{cpu_time, on_own_thread, status_kib, ChildServer};
use crate::lifecycle::{spawn_receiver, Received, SECRET};
use crate::profile::{self, Profile, Summary};
use crate::report::say;
use crate::store::{Backend, Scratch};
use crate::{ask, percentile, requester_users, seed, server_table};

/// The entitlement approvers decide.
const ENTITLEMENT: &str = "app-db";
/// How long each grant lasts: longer than the run, so nothing falls due.
const GRANT_SECONDS: u64 = 3_600;

#[derive(clap::Args, Clone)]
pub struct ThroughputArgs {
    /// Requests to create, and then to approve.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent clients in each phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Run against PostgreSQL (a scratch database created on this server)
    /// instead of SQLite.
    #[arg(long)]
    postgres: Option<String>,
}

impl ThroughputArgs {
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// Targets of issue 17, for eight clients on SQLite.
const TARGET_CREATIONS_PER_S: f64 = 5_000.0;
const TARGET_APPROVALS_PER_S: f64 = 2_500.0;
const TARGET_P99_MS: f64 = 5.0;

pub async fn run(args: ThroughputArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    if args.requests == 0 || args.clients == 0 {
        bail!("--requests and --clients must be at least 1");
    }
    let backend = match args.postgres {
        Some(_) => Backend::Postgres,
        None => Backend::Sqlite,
    };
    let scratch = Scratch::create(backend, args.postgres.as_deref().unwrap_or_default()).await?;
    let result = bench(&args, backend, &scratch.dir, &scratch.location).await;
    scratch.remove().await?;
    result
}

fn approver_token(i: usize) -> String {
    format!("throughput-approver-{i}")
}

fn config(
    args: &ThroughputArgs,
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

[entitlements.{ENTITLEMENT}]
requestable_by = ["requesters"]
max_duration = "2h"
require_reason = true
approvals_required = 1
approvers = ["approvers"]
connector = "hook"
"#,
        server = server_table(data_dir, database),
    );
    for i in 0..args.clients {
        let _ = write!(
            text,
            "\n[users.approver{i}]\ngroups = [\"approvers\"]\ntoken_sha256 = \"{}\"\n",
            token_hash(&approver_token(i))
        );
    }
    let tokens = requester_users(&mut text, args.requests, "throughput-token-");
    (text, tokens)
}

/// What one phase measured.
struct Phase {
    /// Each call's latency, sorted (ms).
    latencies_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    /// From the first call to the last answer (and, for approvals, to the
    /// last grant the target received).
    elapsed: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
    /// Request ids created (the create phase).
    created: Vec<String>,
    /// Where the server's time went (`--profile`).
    profile: Option<Summary>,
}

async fn bench(
    args: &ThroughputArgs,
    backend: Backend,
    dir: &Path,
    location: &Location,
) -> anyhow::Result<()> {
    say!(
        "airlock-bench throughput: {} requests created then approved by {} concurrent clients on {}, on {} cores",
        args.requests,
        args.clients,
        backend.label(),
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    let (hook, seen) = spawn_receiver().await?;
    let data_dir = seed::data_dir(dir);
    std::fs::create_dir_all(&data_dir)?;
    let location = seed::in_data_dir(location, dir);
    let (text, tokens) = config(args, &hook, &data_dir, &location);
    let config = dir.join("airlock.toml");
    std::fs::write(&config, text)?;
    let server = ChildServer::start(&config).await?;
    let pid = server.pid;
    say!(
        "server (pid {pid}) ready in {:.2}s, {:.1} MiB resident at rest",
        server.ready.as_secs_f64(),
        status_kib(pid, "VmRSS")? as f64 / 1024.0
    );
    let url = format!("http://{}", server.addr);
    let clients = args.clients;
    let phases = on_own_thread(async move {
        let base = Client::new(&url, "none")?;
        let create = create_phase(&base, tokens, clients, pid).await?;
        let approve = approve_phase(&base, &create.created, clients, pid, &seen).await?;
        anyhow::Ok((create, approve))
    })
    .await;
    let peak_kib = status_kib(pid, "VmHWM")?;
    server.stop().await;
    let (create, approve) = phases?;
    let creations = print_phase("create", &create);
    let approvals = print_phase("approve", &approve);
    say!(
        "server memory peak (VmHWM): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    let p99_ok = [&create, &approve]
        .iter()
        .all(|p| percentile(&p.latencies_ms, 99.0) <= TARGET_P99_MS);
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    say!(
        "target: >= {TARGET_CREATIONS_PER_S:.0} creations/s: {}; >= {TARGET_APPROVALS_PER_S:.0} approvals/s confirmed by the target: {}; p99 <= {TARGET_P99_MS} ms: {}",
        verdict(creations >= TARGET_CREATIONS_PER_S),
        verdict(approvals >= TARGET_APPROVALS_PER_S),
        verdict(p99_ok)
    );
    Ok(())
}

/// Latencies, errors and what each client collected, merged.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    created: Vec<String>,
}

impl Tally {
    fn record<T>(
        &mut self,
        started: Instant,
        answer: Result<T, impl std::fmt::Display>,
    ) -> Option<T> {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Ok(v) => {
                self.latencies_ms.push(ms);
                Some(v)
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                None
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_ms.extend(other.latencies_ms);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.created.extend(other.created);
    }
}

/// When a phase started, and the CPU time the server and this process had
/// used by then.
struct Meter {
    server_pid: u32,
    started: Instant,
    server_cpu: Duration,
    client_cpu: Duration,
    profile: Option<Profile>,
}

impl Meter {
    async fn start(server_pid: u32) -> anyhow::Result<Meter> {
        // perf first: its start-up stays out of the CPU figures.
        let profile = Profile::start(server_pid).await?;
        Ok(Meter {
            server_pid,
            profile,
            server_cpu: cpu_time(server_pid)?,
            client_cpu: cpu_time(std::process::id())?,
            started: Instant::now(),
        })
    }

    /// The phase that ends now with what `tally` holds.
    async fn finish(self, mut tally: Tally) -> anyhow::Result<Phase> {
        let elapsed = self.started.elapsed();
        let server_cpu = cpu_time(self.server_pid)?.saturating_sub(self.server_cpu);
        let client_cpu = cpu_time(std::process::id())?.saturating_sub(self.client_cpu);
        let profile = profile::finish(self.profile, elapsed, server_cpu).await?;
        tally.latencies_ms.sort_by(f64::total_cmp);
        Ok(Phase {
            latencies_ms: tally.latencies_ms,
            errors: tally.errors,
            first_error: tally.first_error,
            elapsed,
            server_cpu,
            client_cpu,
            created: tally.created,
            profile,
        })
    }
}

async fn create_phase(
    base: &Client,
    tokens: Vec<String>,
    clients: usize,
    server_pid: u32,
) -> anyhow::Result<Phase> {
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(server_pid).await?;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (tokens, next, base) = (Arc::clone(&tokens), Arc::clone(&next), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while let Some(token) = tokens.get(next.fetch_add(1, Ordering::Relaxed)) {
                let client = base.with_token(token);
                let t = Instant::now();
                let answer = client
                    .create_request(&ask(ENTITLEMENT, GRANT_SECONDS, "throughput benchmark"))
                    .await;
                if let Some(view) = tally.record(t, answer) {
                    tally.created.push(view.id);
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await?);
    }
    meter.finish(tally).await
}

async fn approve_phase(
    base: &Client,
    ids: &[String],
    clients: usize,
    server_pid: u32,
    seen: &Mutex<Received>,
) -> anyhow::Result<Phase> {
    let granted_before = seen.lock().map(|s| s.grants).unwrap_or(0);
    let ids = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(server_pid).await?;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (ids, next) = (Arc::clone(&ids), Arc::clone(&next));
        let approver = base.with_token(&approver_token(i));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                let answer = approver.act(id, &Action::Approve { comment: None }).await;
                tally.record(t, answer);
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await?);
    }
    // An approval counts once the target has the grant.
    let want = granted_before + ids.len() - tally.errors;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let granted = seen.lock().map(|s| s.grants).unwrap_or(0);
        if granted >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the target received {} of {} grants within 60 s of the last approval",
                granted - granted_before,
                want - granted_before
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    meter.finish(tally).await
}

/// Prints a phase's figures; its rate per second.
fn print_phase(name: &str, p: &Phase) -> f64 {
    let secs = p.elapsed.as_secs_f64();
    let rate = p.latencies_ms.len() as f64 / secs;
    say!(
        "{name}: {} in {secs:.2}s = {rate:.0}/s, {} errors; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; cpu: server {:.2}s ({:.0}% of one core), load generator and webhook target {:.2}s ({:.0}%)",
        p.latencies_ms.len(),
        p.errors,
        percentile(&p.latencies_ms, 50.0),
        percentile(&p.latencies_ms, 99.0),
        p.latencies_ms.last().copied().unwrap_or(f64::NAN),
        p.server_cpu.as_secs_f64(),
        100.0 * p.server_cpu.as_secs_f64() / secs,
        p.client_cpu.as_secs_f64(),
        100.0 * p.client_cpu.as_secs_f64() / secs,
    );
    if let Some(e) = &p.first_error {
        say!("first error of {name}: {e}");
    }
    if let Some(profile) = &p.profile {
        profile.say(name);
    }
    rate
}
