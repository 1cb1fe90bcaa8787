//! The `check` bench: `GET /v1/check` at a fixed rate against the real
//! server on loopback with N active grants.
//!
//! It seeds N active grants (users `u0`…, one entitlement each, through
//! `seed`, whose marker lets `--reuse` keep them), starts the real server as a
//! child process (this binary again, `serve-config`, so that its memory and
//! CPU time are its own), and drives checks of random holders open-loop:
//! request i is due at start + i/rate whatever came back before, spread
//! over many keep-alive connections, each a plain HTTP/1.1 exchange written
//! by hand so the load generator costs little. Latency is measured from
//! sending to the whole answer; how late each request was sent after it
//! was due (tokio's 1 ms timer, its connection still busy, the generator
//! behind) is printed beside it. It prints the rate achieved, p50/p99/max latency,
//! errors, the server's resident memory, and the CPU time of both
//! processes over the run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_server::store::sql::Location;
use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::child::{cpu_time, on_own_thread, status_kib, ChildServer};
use crate::percentile;
use crate::profile::{self, Profile, Summary};
use crate::report::say;
use crate::seed::{self, ensure, seeded_location, Shape, ShapeArgs};
use crate::store::{Backend, Scratch};

/// The checker's config token.
const CHECKER_TOKEN: &str = "bench-check-token";
/// Target of issue 15 on this machine.
const TARGET_P99_MS: f64 = 1.0;

#[derive(clap::Args, Clone)]
pub struct CheckArgs {
    /// Active grants seeded before the run (one per user).
    #[arg(long, default_value_t = 1_000_000)]
    grants: usize,
    /// Requests in the store (at least --grants; the default is as many
    /// as grants). More than grants seeds `seed`'s shape: the rest ended in
    /// realistic states, over its default users and 40 entitlements.
    #[arg(long)]
    requests: Option<usize>,
    /// Checks per second asked for (open loop).
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Seconds of checks.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keep-alive connections the checks are spread over.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Run against PostgreSQL (a scratch database created on this server)
    /// instead of SQLite; with --reuse, the database this URL names.
    #[arg(long)]
    postgres: Option<String>,
    /// Keep the seeded store and reuse it on the next run with the same
    /// --grants (the grants last 30 days): with SQLite the database in
    /// DIR, with --postgres the database the URL names (seeded there when
    /// DIR has no marker yet).
    #[arg(long, value_name = "DIR")]
    reuse: Option<PathBuf>,
    /// Print latency second by second, not only the worst second.
    #[arg(long)]
    timeline: bool,
}

impl CheckArgs {
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    if args.rate == 0 || args.seconds == 0 || args.connections == 0 || args.grants == 0 {
        bail!("--grants, --rate, --seconds and --connections must be at least 1");
    }
    let backend = match args.postgres {
        Some(_) => Backend::Postgres,
        None => Backend::Sqlite,
    };
    if let Some(dir) = &args.reuse {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        return bench(&args, backend, dir, &seeded_location(&args.postgres, dir)).await;
    }
    let scratch = Scratch::create(backend, args.postgres.as_deref().unwrap_or_default()).await?;
    let result = bench(&args, backend, &scratch.dir, &scratch.location).await;
    scratch.remove().await?;
    result
}

async fn bench(
    args: &CheckArgs,
    backend: Backend,
    dir: &Path,
    location: &Location,
) -> anyhow::Result<()> {
    say!(
        "airlock-bench check: {} active grants among {} requests on {}, {} checks/s for {}s over {} connections, on {} cores",
        args.grants,
        args.requests.unwrap_or(args.grants),
        backend.label(),
        args.rate,
        args.seconds,
        args.connections,
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get)
    );
    let data_dir = seed::data_dir(dir);
    std::fs::create_dir_all(&data_dir)?;
    let location = seed::in_data_dir(location, dir);
    // Only grants: one entitlement per holder, as many holders as grants
    // (`seed`'s shape with two entitlements, the grants on the first).
    // With more requests, `seed`'s own default shape.
    let requests = args.requests.unwrap_or(args.grants);
    let shape = if requests == args.grants {
        Shape::new(
            args.grants,
            args.grants,
            ShapeArgs {
                users: Some(args.grants),
                entitlements: 2,
                approvers: 10,
            },
        )?
    } else {
        Shape::new(args.grants, requests, ShapeArgs::default())?
    };
    ensure(&location, dir, &shape).await?;

    let config = dir.join("airlock.toml");
    std::fs::write(&config, server_config(&data_dir, &location, &shape))?;
    let server = ChildServer::start(&config).await?;
    let (pid, addr) = (server.pid, server.addr.clone());
    say!(
        "server (pid {pid}) ready in {:.2}s from its start (store open, scheduler running, listening on {addr}), {:.1} MiB resident at rest",
        server.ready.as_secs_f64(),
        status_kib(pid, "VmRSS")? as f64 / 1024.0
    );

    // The load generator runs on one thread of its own: on a 2-core
    // machine each more runnable thread of it takes a core from the server
    // it measures, and the queueing for a core that follows is latency the
    // server did not cause.
    let (drive_args, drive_addr) = (args.clone(), addr.clone());
    let figures =
        on_own_thread(async move { drive(&drive_args, &drive_addr, pid, shape).await }).await;
    server.stop().await;
    let f = figures?;
    print_figures(args, &f);
    Ok(())
}

/// The server's config: loopback, the store seeded, the entitlement, and
/// a checker whose token the load generator uses.
fn server_config(data_dir: &Path, location: &Location, shape: &Shape) -> String {
    format!(
        r#"{server}
[users.checker]
roles = ["checker"]
token_sha256 = "{hash}"

# The seeded store's entitlements and approvers. Its holders (u0, u1, …)
# need not be config users: a check asks about any principal.
{tables}"#,
        server = crate::server_table(data_dir, location),
        hash = airlock_server::config::token_hash(CHECKER_TOKEN),
        tables = shape.config_tables(),
    )
}

/// What the run measured.
struct Figures {
    sent: usize,
    ok: usize,
    errors: usize,
    /// Answers that did not say the holder holds the grant.
    wrong: usize,
    /// How long after its due time each request was sent, sorted.
    lag_ms: Vec<f64>,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
    /// The latencies of the requests sent in each second of the run, sorted.
    seconds: Vec<Vec<f64>>,
    first_error: Option<String>,
    server_rss_kib: u64,
    /// The most the server was ever resident.
    server_peak_kib: u64,
    server_cpu: Duration,
    client_cpu: Duration,
    /// Where the server's time went (`--profile`).
    profile: Option<Summary>,
}

/// What one connection measured.
#[derive(Default)]
struct Leg {
    latencies_ms: Vec<f64>,
    /// When each answered request was sent, in seconds from the start.
    sent_s: Vec<f64>,
    errors: usize,
    wrong: usize,
    /// How long after its due time each request was sent.
    lag_ms: Vec<f64>,
    first_error: Option<String>,
}

async fn drive(
    args: &CheckArgs,
    addr: &str,
    server_pid: u32,
    shape: Shape,
) -> anyhow::Result<Figures> {
    let total = usize::try_from(u64::from(args.rate) * args.seconds)?;
    let interval = Duration::from_secs(1).as_secs_f64() / f64::from(args.rate);
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn::new(stream);
        // Warm-up: the connection accepted, the token and the plan cached.
        let (status, body) = conn.check(&shape, 0).await?;
        if status != 200 {
            bail!("warm-up check answered {status}: {body}");
        }
        conns.push(conn);
    }
    // perf first: its start-up stays out of the CPU figures.
    let profile = Profile::start(server_pid).await?;
    let (server_cpu_before, client_cpu_before) =
        (cpu_time(server_pid)?, cpu_time(std::process::id())?);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let grants = args.grants;
    let stride = args.connections;
    let mut legs = JoinSet::new();
    for (k, mut conn) in conns.into_iter().enumerate() {
        legs.spawn(async move {
            let mut leg = Leg::default();
            let mut rng = (k as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(1);
            let mut i = k;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 * interval);
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                leg.lag_ms
                    .push(sent.duration_since(due).as_secs_f64() * 1000.0);
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let who = usize::try_from(rng % grants as u64).unwrap_or(0);
                match conn.check(&shape, who).await {
                    Ok((200, body)) if body.contains("\"holds\":true") => {
                        leg.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                        leg.sent_s.push(sent.duration_since(start).as_secs_f64());
                    }
                    Ok((200, body)) => {
                        leg.wrong += 1;
                        leg.first_error.get_or_insert(format!(
                            "{} does not hold: {body}",
                            shape.holder(who).0
                        ));
                    }
                    Ok((status, body)) => {
                        leg.errors += 1;
                        leg.first_error.get_or_insert(format!("{status}: {body}"));
                    }
                    Err(e) => {
                        leg.errors += 1;
                        leg.first_error.get_or_insert(e.to_string());
                        // The connection is gone: the rest of this leg fails.
                        leg.errors += (total - i) / stride;
                        break;
                    }
                }
                i += stride;
            }
            leg
        });
    }
    let mut figures = Figures {
        sent: total,
        ok: 0,
        errors: 0,
        wrong: 0,
        lag_ms: Vec::with_capacity(total),
        elapsed: Duration::ZERO,
        latencies_ms: Vec::with_capacity(total),
        first_error: None,
        seconds: Vec::new(),
        server_rss_kib: 0,
        server_peak_kib: 0,
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
        profile: None,
    };
    while let Some(leg) = legs.join_next().await {
        let leg = leg?;
        figures.ok += leg.latencies_ms.len();
        for (at, ms) in leg.sent_s.iter().zip(&leg.latencies_ms) {
            // Truncation is the point: the second the request was sent in.
            let second = *at as usize;
            if figures.seconds.len() <= second {
                figures.seconds.resize_with(second + 1, Vec::new);
            }
            if let Some(bucket) = figures.seconds.get_mut(second) {
                bucket.push(*ms);
            }
        }
        figures.latencies_ms.extend(leg.latencies_ms);
        figures.errors += leg.errors;
        figures.wrong += leg.wrong;
        figures.lag_ms.extend(leg.lag_ms);
        if figures.first_error.is_none() {
            figures.first_error = leg.first_error;
        }
    }
    figures.elapsed = tokio::time::Instant::now().duration_since(start);
    figures.server_cpu = cpu_time(server_pid)?.saturating_sub(server_cpu_before);
    figures.client_cpu = cpu_time(std::process::id())?.saturating_sub(client_cpu_before);
    figures.profile = profile::finish(profile, figures.elapsed, figures.server_cpu).await?;
    figures.server_rss_kib = status_kib(server_pid, "VmRSS")?;
    figures.server_peak_kib = status_kib(server_pid, "VmHWM")?;
    for v in [&mut figures.latencies_ms, &mut figures.lag_ms]
        .into_iter()
        .chain(figures.seconds.iter_mut())
    {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    }
    Ok(figures)
}

fn print_figures(args: &CheckArgs, f: &Figures) {
    let secs = f.elapsed.as_secs_f64();
    let p = |q| percentile(&f.latencies_ms, q);
    let max = f.latencies_ms.last().copied().unwrap_or(f64::NAN);
    say!(
        "checks: {} sent, {} answered holds, {} errors, {} wrong answers",
        f.sent,
        f.ok,
        f.errors,
        f.wrong
    );
    say!(
        "sent after due (timer granularity 1 ms, or the connection still busy): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&f.lag_ms, 50.0),
        percentile(&f.lag_ms, 99.0),
        f.lag_ms.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(e) = &f.first_error {
        say!("first error: {e}");
    }
    say!(
        "rate: {:.0} checks/s achieved ({} asked) over {secs:.2}s",
        f.ok as f64 / secs,
        args.rate
    );
    say!(
        "latency (sent → whole answer): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        p(50.0),
        p(99.0),
        max
    );
    let second_line = |i: usize, v: &[f64]| {
        format!(
            "second {i}: {} answered, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            v.len(),
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    if args.timeline {
        for (i, v) in f.seconds.iter().enumerate() {
            say!("  {}", second_line(i, v));
        }
    }
    // Whether the tail is spread over the run or one stall.
    let worst = f.seconds.iter().enumerate().max_by(|(_, a), (_, b)| {
        percentile(a, 99.0)
            .partial_cmp(&percentile(b, 99.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if let Some((i, v)) = worst {
        say!("worst {}", second_line(i, v));
    }
    say!(
        "server: {:.1} MiB resident ({:.1} MiB at its peak), {:.2}s CPU ({:.0}% of one core); load generator: {:.2}s CPU ({:.0}%)",
        f.server_rss_kib as f64 / 1024.0,
        f.server_peak_kib as f64 / 1024.0,
        f.server_cpu.as_secs_f64(),
        100.0 * f.server_cpu.as_secs_f64() / secs,
        f.client_cpu.as_secs_f64(),
        100.0 * f.client_cpu.as_secs_f64() / secs
    );
    let pass = p(99.0) <= TARGET_P99_MS && f.errors == 0 && f.wrong == 0;
    say!(
        "target: p99 <= {TARGET_P99_MS} ms at {} checks/s with {} active grants, no errors: {}",
        args.rate,
        args.grants,
        if pass { "PASS" } else { "FAIL" }
    );
    if let Some(profile) = &f.profile {
        profile.say("under the checks");
    }
}

/// One keep-alive connection speaking just enough HTTP/1.1.
struct Conn {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// Checks whether the holder of seeded grant `who` holds its
    /// entitlement; the status and body.
    async fn check(&mut self, shape: &Shape, who: usize) -> anyhow::Result<(u16, String)> {
        let (principal, entitlement) = shape.holder(who);
        let request = format!(
            "GET /v1/check?principal={principal}&entitlement={entitlement} HTTP/1.1\r\n\
             Host: bench\r\nAuthorization: Bearer {CHECKER_TOKEN}\r\n\r\n"
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            bail!("the server closed the connection");
        }
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP status line: {:?}", self.line))?;
        let mut length = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("the server closed the connection mid-answer");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.context("an answer without Content-Length")?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok((status, String::from_utf8_lossy(&self.body).into_owned()))
    }
}
