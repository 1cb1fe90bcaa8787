//! The server a benchmark measures, in a process of its own (the bench
//! binary's hidden `serve-config` subcommand), so that its memory and CPU
//! time are its own and not the load generator's: starting it, timing how
//! long it takes to be ready, stopping it, and reading its figures from
//! `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::statements;

/// How long a server may take to start before the bench gives up.
/// A first start on a store no checkpoint covers yet verifies the whole
/// audit chain: minutes on a freshly seeded store of millions of events.
const START_LIMIT: Duration = Duration::from_secs(20 * 60);

/// A running `serve-config` child.
pub(crate) struct ChildServer {
    process: tokio::process::Child,
    pub(crate) pid: u32,
    /// `host:port` it listens on.
    pub(crate) addr: String,
    /// From the process's start until it said it was listening: the store
    /// open, the scheduler and the other tasks running.
    pub(crate) ready: Duration,
}

impl ChildServer {
    /// Starts the server the config at `config` describes and waits until
    /// it listens.
    pub(crate) async fn start(config: &Path) -> anyhow::Result<ChildServer> {
        let spawned = Instant::now();
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .arg("serve-config")
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // Profiled, the server logs every statement's time, to a file the
        // bench reads over the measured window (`statements`).
        if crate::profile::enabled() {
            let asked = std::env::var("AIRLOCK_LOG").ok();
            command
                .env("AIRLOCK_LOG", statements::log_filter(asked.as_deref()))
                .stderr(statements::log_file("server")?);
        }
        let mut process = command.spawn().context("starting the server")?;
        let pid = process.id().context("the server exited at once")?;
        let mut lines = BufReader::new(process.stdout.take().context("no server stdout")?).lines();
        let addr = loop {
            let line = tokio::time::timeout(START_LIMIT, lines.next_line())
                .await
                .with_context(|| {
                    format!(
                        "the server did not start within {} s",
                        START_LIMIT.as_secs()
                    )
                })??
                .with_context(|| match statements::log_path() {
                    Some(log) => format!(
                        "the server exited before listening (its log: {})",
                        log.display()
                    ),
                    None => "the server exited before listening".to_owned(),
                })?;
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        Ok(ChildServer {
            process,
            pid,
            addr,
            ready: spawned.elapsed(),
        })
    }

    /// Stops the server: closing its stdin shuts it down (which flushes
    /// the check counts); killed if it takes longer than 30 s.
    pub(crate) async fn stop(mut self) {
        drop(self.process.stdin.take());
        let stopped = tokio::time::timeout(Duration::from_secs(30), self.process.wait()).await;
        if stopped.is_err() {
            let _ = self.process.kill().await;
        }
        statements::remove_log();
    }
}

/// `serve-config PATH`: the server the bench measures, in a process of its
/// own. Prints `listening on ADDR`, then serves until its stdin closes.
/// With `AIRLOCK_LOG` set (as for `airlock serve`) it logs to stderr:
/// `AIRLOCK_LOG=sqlx::query=debug` shows every statement and its time,
/// which is how a bench's time is traced to a query.
pub async fn serve_config(path: PathBuf) -> anyhow::Result<()> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let text = std::fs::read_to_string(&path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let settings =
        airlock_server::config::Settings::parse(&path.display().to_string(), &text, base)?;
    let server = airlock_server::server::start(settings).await?;
    println!("listening on {}", server.addr());
    tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut sink = [0u8; 64];
        while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

/// Runs `work` on a thread of its own with a single-threaded runtime: on
/// two cores every more runnable thread of the load generator takes a core
/// from the server it measures.
pub(crate) async fn on_own_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    })
    .await
    .context("the load generator's thread")?
}

/// User plus system CPU time of a process so far (`/proc/PID/stat`, in
/// clock ticks of 1/100 s: Linux's `USER_HZ` on every common platform).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()?)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
    let ticks = tick(11)? + tick(12)?;
    Ok(Duration::from_millis(ticks * 10))
}

/// A process's memory figure from `/proc/PID/status` in KiB: `VmRSS`
/// (resident now) or `VmHWM` (resident at its peak).
pub(crate) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
