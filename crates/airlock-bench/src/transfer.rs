//! `airlock-bench transfer`: export, import and `audit verify` of a seeded
//! store, each by the real `airlock` binary in a process of its own, so
//! its time and peak resident memory (`VmHWM`, read from `/proc` while it
//! runs) are its own. What streaming promises is that the peaks stay flat
//! as the store grows: run it on stores of two sizes and compare.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use airlock_server::store::sql::Location;
use anyhow::{bail, Context};

use crate::report::say;
use crate::seed::{locate, Shape};
use crate::store::{Backend, Scratch};

#[derive(clap::Args, Clone)]
pub struct TransferArgs {
    /// The seeded store: `sqlite:DIR` or a postgres:// URL (see `seed`).
    #[arg(long)]
    database: String,
    /// Where a PostgreSQL store's seeded marker is (and the export goes).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `airlock` binary (default: beside this one).
    #[arg(long)]
    airlock: Option<PathBuf>,
}

impl TransferArgs {
    pub fn on_postgres(&self) -> bool {
        matches!(Location::parse(&self.database), Location::Postgres(_))
    }
}

/// What one child process measured.
pub(crate) struct Run {
    pub(crate) took: Duration,
    pub(crate) peak_kib: u64,
    pub(crate) stderr: String,
    pub(crate) stdout: String,
}

pub async fn run(args: TransferArgs) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let (location, dir) = locate(&args.database, args.dir.as_deref())?;
    let shape = Shape::seeded_in(&dir)?;
    let airlock = match &args.airlock {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("airlock"),
    };
    if !airlock.exists() {
        bail!(
            "no `airlock` binary at {} (build it, or pass --airlock)",
            airlock.display()
        );
    }
    say!(
        "airlock-bench transfer: {} requests ({} active grants) in {}",
        shape.requests,
        shape.grants,
        location.describe()
    );
    let db = database_arg(&location);
    let export = dir.join("export.jsonl");
    let exported = measure(
        &airlock,
        &[
            "export",
            "--database",
            &db,
            "--output",
            &export.display().to_string(),
        ],
    )
    .await?;
    let bytes = std::fs::metadata(&export).map_or(0, |m| m.len());
    report("export", &exported, shape.requests, bytes);

    // Into a fresh database of the same kind (on the same PostgreSQL server).
    let (backend, server) = match &location {
        Location::Sqlite(_) => (Backend::Sqlite, ""),
        Location::Postgres(url) => (Backend::Postgres, url.as_str()),
    };
    let target = Scratch::create(backend, server).await?;
    let result = async {
        let into = database_arg(&target.location);
        let imported = measure(
            &airlock,
            &[
                "import",
                "--database",
                &into,
                "--input",
                &export.display().to_string(),
            ],
        )
        .await?;
        report("import", &imported, shape.requests, bytes);
        let verified = measure(&airlock, &["audit", "verify", "--database", &db]).await?;
        report("audit verify", &verified, shape.requests, 0);
        anyhow::Ok(())
    }
    .await;
    target.remove().await?;
    let _ = std::fs::remove_file(&export);
    result
}

fn database_arg(location: &Location) -> String {
    match location {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => url.clone(),
    }
}

fn report(what: &str, run: &Run, requests: usize, bytes: u64) {
    let secs = run.took.as_secs_f64();
    let size = if bytes > 0 {
        format!(
            ", {:.0} MiB ({:.0} MiB/s)",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / (1024.0 * 1024.0) / secs
        )
    } else {
        String::new()
    };
    say!(
        "{what}: {secs:.1}s ({:.0} requests/s{size}), peak resident {:.1} MiB — {}",
        requests as f64 / secs,
        run.peak_kib as f64 / 1024.0,
        run.stdout
            .lines()
            .chain(run.stderr.lines())
            .rfind(|line| !is_log_line(line))
            .unwrap_or("")
    );
}

/// Whether `line` is one of the command's log lines (a timestamp, then a
/// level), which can follow its own summary on standard error.
fn is_log_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let stamped = words
        .next()
        .is_some_and(|w| w.ends_with('Z') && w.starts_with(|c: char| c.is_ascii_digit()));
    stamped
        && words
            .next()
            .is_some_and(|w| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&w))
}

/// Runs `program args` to the end, sampling its peak resident set every
/// 20 ms; fails, with its error output, if it fails.
pub(crate) async fn measure(program: &Path, args: &[&str]) -> anyhow::Result<Run> {
    let began = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id().context("the child exited at once")?;
    let output = child.wait_with_output();
    tokio::pin!(output);
    let mut peak_kib = 0;
    let output = loop {
        tokio::select! {
            done = &mut output => break done?,
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                peak_kib = peak_kib.max(crate::child::status_kib(pid, "VmHWM").unwrap_or(0));
            }
        }
    };
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}): {stderr}",
            program.display(),
            args.join(" "),
            output.status
        );
    }
    Ok(Run {
        took,
        peak_kib,
        stderr,
        stdout,
    })
}
