//! `--profile`, the part `perf` cannot see: how long the server's database
//! statements took, as sqlx times each one on its connection (its
//! `sqlx::query` debug log). A connection waiting for the disk — SQLite's
//! commit syncing its write-ahead log — uses no CPU, so CPU samples show
//! the threads idle or switching while the one writer is in fact busy;
//! the statements' own times show it.
//!
//! The profiled server writes its log to a file ([`log_file`]), not a
//! pipe: a reader woken for every line would take CPU from the server
//! while it is measured. The lines written between [`open_window`] (at
//! `Profile::start`) and [`close_window`] (at its finish) are read once
//! the window closes and tallied by sqlx's summary of each statement (its
//! first words), every connection together; the window's other lines are
//! passed on to the bench's stderr.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;

use crate::report::say;

/// Statements listed in a summary.
const TOP_STATEMENTS: usize = 10;

/// The log filter a profiled server runs with: what was asked of it, and
/// sqlx's line for every statement.
pub(crate) fn log_filter(asked: Option<&str>) -> String {
    match asked {
        Some(asked) if !asked.trim().is_empty() => format!("{asked},sqlx::query=debug"),
        _ => "warn,sqlx::query=debug".to_owned(),
    }
}

/// The profiled server's log file and, while a window is open, where the
/// window began in it.
struct Log {
    path: PathBuf,
    window_from: Option<u64>,
}

static LOG: Mutex<Option<Log>> = Mutex::new(None);

fn log() -> std::sync::MutexGuard<'static, Option<Log>> {
    LOG.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the profiled server about to start writes its log (in the
/// system's temporary directory, removed when it stops: [`remove_log`]).
pub(crate) fn log_file(server: &str) -> anyhow::Result<std::fs::File> {
    let path =
        std::env::temp_dir().join(format!("airlock-bench-{}-{server}.log", std::process::id()));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("creating the server's log {}", path.display()))?;
    if let Some(old) = log().replace(Log {
        path,
        window_from: None,
    }) {
        let _ = std::fs::remove_file(old.path);
    }
    Ok(file)
}

/// The profiled server's log file, for a message about its start.
pub(crate) fn log_path() -> Option<PathBuf> {
    log().as_ref().map(|l| l.path.clone())
}

/// Removes the stopped server's log file.
pub(crate) fn remove_log() {
    if let Some(old) = log().take() {
        let _ = std::fs::remove_file(old.path);
    }
}

/// Starts a window: the log from here on (before it: the start-up).
pub(crate) fn open_window() -> anyhow::Result<()> {
    if let Some(log) = log().as_mut() {
        log.window_from = Some(std::fs::metadata(&log.path)?.len());
    }
    Ok(())
}

/// Ends the window: the statements that took the most time in all over
/// it, first. Nothing when the server does not log to a file.
pub(crate) fn close_window(elapsed: Duration) -> anyhow::Result<Vec<Statement>> {
    let (path, from) = match log().as_mut() {
        Some(log) => match log.window_from.take() {
            Some(from) => (log.path.clone(), from),
            None => return Ok(Vec::new()),
        },
        None => return Ok(Vec::new()),
    };
    let mut file = std::fs::File::open(&path)?;
    let to = file.metadata()?.len();
    file.seek(SeekFrom::Start(from))?;
    let mut tally: HashMap<String, Vec<f64>> = HashMap::new();
    for line in BufReader::new(file.take(to.saturating_sub(from))).lines() {
        let line = line?;
        match parse(&line) {
            Some((summary, ms)) => tally.entry(summary.to_owned()).or_default().push(ms),
            None => eprintln!("{line}"),
        }
    }
    Ok(summarise(tally, elapsed))
}

/// The summary and the time in ms of sqlx's line for a statement:
/// `… DEBUG sqlx::query: summary="COMMIT" db.statement="" … elapsed_secs=0.00049`.
fn parse(line: &str) -> Option<(&str, f64)> {
    let rest = line.split_once(" sqlx::query: ")?.1;
    let summary = rest.strip_prefix("summary=\"")?;
    let (summary, rest) = summary.split_once('"')?;
    let secs = rest.rsplit_once(" elapsed_secs=")?.1;
    let secs: f64 = secs.split_whitespace().next()?.parse().ok()?;
    Some((summary, secs * 1000.0))
}

/// One statement's figures over a window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) summary: String,
    pub(crate) count: usize,
    /// All its executions' time, as a share of the window: how much of
    /// the time a connection was busy with it (above 100%: several at once).
    pub(crate) busy: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

fn summarise(tally: HashMap<String, Vec<f64>>, elapsed: Duration) -> Vec<Statement> {
    let window_ms = elapsed.as_secs_f64() * 1000.0;
    let mut list: Vec<(f64, Statement)> = tally
        .into_iter()
        .map(|(summary, mut times)| {
            times.sort_by(f64::total_cmp);
            let total: f64 = times.iter().sum();
            let statement = Statement {
                count: times.len(),
                busy: if window_ms > 0.0 {
                    100.0 * total / window_ms
                } else {
                    0.0
                },
                p50_ms: crate::percentile(&times, 50.0),
                p99_ms: crate::percentile(&times, 99.0),
                max_ms: times.last().copied().unwrap_or(0.0),
                summary,
            };
            (total, statement)
        })
        .collect();
    list.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.summary.cmp(&b.1.summary))
    });
    list.into_iter()
        .take(TOP_STATEMENTS)
        .map(|(_, s)| s)
        .collect()
}

/// Prints the list under a profile.
pub(crate) fn say(statements: &[Statement]) {
    if statements.is_empty() {
        say!("  statements: none logged");
        return;
    }
    say!("  statements (sqlx's time for each, every connection; busy: their time in all over the window):");
    for s in statements {
        say!(
            "  {:5.1}% busy {:7} x  p50 {:6.3} ms  p99 {:7.3} ms  max {:7.2} ms  {}",
            s.busy,
            s.count,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.summary
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_line_gives_its_summary_and_time_and_other_lines_nothing() {
        let line = "2026-12-07T22:20:10.178250Z DEBUG sqlx::query: summary=\"INSERT INTO requests (id, …\" \
                    db.statement=\"\\n\\nINSERT INTO requests (id) VALUES (\\\"x\\\")\" rows_affected=1 \
                    rows_returned=0 elapsed=489.2µs elapsed_secs=4.892e-4";
        let (summary, ms) = parse(line).unwrap();
        assert_eq!(summary, "INSERT INTO requests (id, …");
        assert!((ms - 0.4892).abs() < 1e-9, "{ms}");
        assert_eq!(
            parse("2026-12-07T22:20:10Z  WARN airlock_server::engine: a grant failed"),
            None
        );
        assert_eq!(
            parse("… DEBUG sqlx::query: summary=\"COMMIT\" elapsed=1ms"),
            None,
            "no elapsed_secs"
        );
    }

    #[test]
    fn statements_are_ranked_by_their_time_in_all() {
        let tally = HashMap::from([
            ("COMMIT".to_owned(), vec![0.5; 100]),
            ("BEGIN".to_owned(), vec![0.1, 0.2, 9.0]),
        ]);
        let list = summarise(tally, Duration::from_millis(100));
        assert_eq!(list[0].summary, "COMMIT");
        assert_eq!(list[0].count, 100);
        assert!((list[0].busy - 50.0).abs() < 1e-9);
        assert_eq!(list[1].max_ms, 9.0);
        assert_eq!(list[1].p50_ms, 0.2);
    }

    #[test]
    fn the_servers_own_filter_is_kept() {
        assert_eq!(log_filter(None), "warn,sqlx::query=debug");
        assert_eq!(
            log_filter(Some("info,tower_http=debug")),
            "info,tower_http=debug,sqlx::query=debug"
        );
    }
}
