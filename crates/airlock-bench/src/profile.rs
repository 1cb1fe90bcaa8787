//! `--profile`: where the server's CPU time goes during a bench's measured
//! window, sampled by Linux `perf` and summarised in the bench's own
//! output (so `--record` puts the profile in BENCHMARKS.md beside the
//! figures it explains): the share of each thread (is the one SQLite
//! writer saturated?), of each body of code (SQLite, the kernel, the
//! allocator, each Rust crate) and the functions that use the most.
//!
//! The server alone: sampling a local PostgreSQL's processes as well
//! (its postmaster followed into the backends it forks) was tried and
//! made the load it was to explain several times slower on this machine.
//!
//! Self time only: the release build has no frame pointers, and DWARF
//! unwinding costs more than the server it would measure on two cores.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::report::say;
use crate::statements::{self, Statement};

/// Set by `--profile`.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Samples per second per thread asked of `perf` (a prime, so sampling does
/// not beat in step with the server's own timers).
const FREQUENCY: u32 = 997;

/// Functions listed in a summary.
const TOP_FUNCTIONS: usize = 12;

/// Turns profiling on for this run (`--profile`), after checking that
/// `perf` can be run.
/// Whether this run profiles (`--profile`).
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() -> anyhow::Result<()> {
    let found = std::process::Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("--profile needs Linux `perf` on the PATH (Debian: apt-get install linux-perf)");
    }
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// `perf record` sampling one process's threads, from [`Profile::start`]
/// until [`Profile::finish`].
pub(crate) struct Profile {
    perf: tokio::process::Child,
    data: PathBuf,
}

impl Profile {
    /// Starts sampling `pid` when `--profile` was given; `None` otherwise.
    pub(crate) async fn start(pid: u32) -> anyhow::Result<Option<Profile>> {
        if !enabled() {
            return Ok(None);
        }
        let data = std::env::temp_dir().join(format!(
            "airlock-bench-{}-{pid}-{}.perf",
            std::process::id(),
            crate::now_ms()
        ));
        let mut perf = tokio::process::Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F"])
            .arg(FREQUENCY.to_string())
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting perf record")?;
        // perf opens its events on every thread before it samples; its data
        // file's header is written by then.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&data).map_or(0, |m| m.len()) == 0 {
            if let Some(status) = perf.try_wait()? {
                let mut said = String::new();
                if let Some(mut stderr) = perf.stderr.take() {
                    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut said).await;
                }
                bail!(
                    "perf record exited at once ({status}): {} (is perf allowed here? kernel.perf_event_paranoid)",
                    said.trim()
                );
            }
            if Instant::now() > deadline {
                bail!("perf record did not start within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        statements::open_window()?;
        Ok(Some(Profile { perf, data }))
    }

    /// Stops sampling and summarises what was sampled, over the bench's
    /// measured window: `elapsed`, in which the server used `server_cpu`
    /// (the figures the bench prints, so the profile's shares of a core
    /// are of the same measurement).
    pub(crate) async fn finish(
        mut self,
        elapsed: Duration,
        server_cpu: Duration,
    ) -> anyhow::Result<Summary> {
        let statements = statements::close_window(elapsed)?;
        let perf_pid = self.perf.id().context("perf record exited early")?;
        // SIGINT makes perf write its samples out and exit.
        let interrupted = std::process::Command::new("kill")
            .args(["-INT", &perf_pid.to_string()])
            .status()?;
        if !interrupted.success() {
            bail!("could not stop perf record (pid {perf_pid})");
        }
        // Its exit status says little (an interrupted perf may report the
        // signal); `perf report` below refuses a file it did not finish.
        tokio::time::timeout(Duration::from_secs(60), self.perf.wait())
            .await
            .context("perf record did not stop within 60 s")??;
        let report = tokio::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--quiet",
                "--no-children",
                "--sort",
                "comm,dso,sym",
                "--field-separator",
                FIELD_SEPARATOR,
                "-i",
            ])
            .arg(&self.data)
            .output()
            .await
            .context("running perf report")?;
        let _ = std::fs::remove_file(&self.data);
        if !report.status.success() {
            bail!(
                "perf report failed: {}",
                String::from_utf8_lossy(&report.stderr).trim()
            );
        }
        let samples = parse_report(&String::from_utf8_lossy(&report.stdout))?;
        Ok(Summary {
            statements,
            ..Summary::of(&samples, elapsed, server_cpu)
        })
    }
}

/// [`Profile::finish`] of a profile that was started; `None` otherwise.
pub(crate) async fn finish(
    profile: Option<Profile>,
    elapsed: Duration,
    server_cpu: Duration,
) -> anyhow::Result<Option<Summary>> {
    match profile {
        Some(p) => Ok(Some(p.finish(elapsed, server_cpu).await?)),
        None => Ok(None),
    }
}

/// Between `perf report`'s columns (a control character no symbol holds).
const FIELD_SEPARATOR: &str = "\u{1f}";

/// One line of `perf report --sort comm,dso,sym`: a share of the samples.
#[derive(Debug, Clone, PartialEq)]
struct Sampled {
    percent: f64,
    thread: String,
    dso: String,
    symbol: String,
}

fn parse_report(text: &str) -> anyhow::Result<Vec<Sampled>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(FIELD_SEPARATOR).map(str::trim).collect();
        let [percent, thread, dso, symbol] = fields.as_slice() else {
            bail!("perf report line {}: expected 4 columns: {line}", n + 1);
        };
        let percent = percent
            .strip_suffix('%')
            .and_then(|p| p.parse::<f64>().ok())
            .with_context(|| format!("perf report line {}: no percentage: {line}", n + 1))?;
        // "[.] name" (user space) or "[k] name" (kernel).
        let symbol = symbol
            .split_once("] ")
            .map_or(*symbol, |(_, name)| name)
            .to_owned();
        rows.push(Sampled {
            percent,
            thread: (*thread).to_owned(),
            dso: (*dso).to_owned(),
            symbol,
        });
    }
    Ok(rows)
}

/// The body of code a sampled function belongs to.
fn area(row: &Sampled) -> String {
    if row.dso.starts_with("[kernel") || row.dso == "[vdso]" {
        return "kernel".to_owned();
    }
    let symbol = row.symbol.as_str();
    if row.dso.starts_with("libc.so") || row.dso.starts_with("ld-linux") {
        let allocator = ["malloc", "free", "cfree", "realloc", "calloc", "_int_"];
        return if allocator.iter().any(|p| symbol.starts_with(p)) {
            "malloc".to_owned()
        } else {
            "libc".to_owned()
        };
    }
    if symbol.starts_with("0x") {
        return format!("{} (no symbol)", row.dso);
    }
    match rust_crate(symbol) {
        Some(name) => crate_area(name).to_owned(),
        // Rust's allocator shims, which call malloc.
        None if ["__rust_", "__rdl_", "__rg_"]
            .iter()
            .any(|p| symbol.starts_with(p)) =>
        {
            "malloc".to_owned()
        }
        // The C linked into the binary: SQLite (libsqlite3-sys, bundled)
        // and ring's primitives, the only C crates in Cargo.lock, beside
        // the C runtime's few underscored entry points.
        None if symbol.starts_with("ring_core") => "ring".to_owned(),
        None if symbol.starts_with('_') => "C runtime".to_owned(),
        None => "SQLite".to_owned(),
    }
}

/// The crate a demangled Rust symbol's path starts with: `tokio` for
/// `<tokio::runtime::task::… as …>::poll`; `None` for a C symbol.
fn rust_crate(symbol: &str) -> Option<&str> {
    let path = symbol.trim_start_matches(['<', '&', '*']);
    let path = path
        .strip_prefix("mut ")
        .or_else(|| path.strip_prefix("dyn "))
        .or_else(|| path.strip_prefix("const "))
        .unwrap_or(path);
    let end = path.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    path.get(end..)?
        .starts_with("::")
        .then(|| path.get(..end))?
}

/// Crates reported together: `HTTP` is hyper, axum, tower and the crates
/// under them.
fn crate_area(name: &str) -> &str {
    match name {
        "sqlx_core" | "sqlx_sqlite" | "sqlx_postgres" => "sqlx",
        "tokio" | "mio" => "tokio",
        "hyper" | "hyper_util" | "h2" | "http" | "http_body" | "http_body_util" | "httparse"
        | "axum" | "axum_core" | "tower" | "tower_http" => "HTTP",
        "serde" | "serde_json" | "serde_urlencoded" => "serde",
        "core" | "alloc" | "std" => "Rust core and std",
        n if n.starts_with("airlock_") => "airlock",
        n if n.starts_with("cedar_policy") => "cedar",
        n => n,
    }
}

/// A profile's shares, most first.
pub(crate) struct Summary {
    elapsed: Duration,
    cpu: Duration,
    by_thread: Vec<(String, f64)>,
    by_area: Vec<(String, f64)>,
    top: Vec<Sampled>,
    /// The server's database statements over the same window.
    statements: Vec<Statement>,
}

impl Summary {
    fn of(rows: &[Sampled], elapsed: Duration, cpu: Duration) -> Summary {
        let total: f64 = rows.iter().map(|r| r.percent).sum();
        // Shares of what was sampled (perf's percentages leave out the
        // lines it did not print).
        let share = |p: f64| if total > 0.0 { 100.0 * p / total } else { 0.0 };
        let grouped = |key: &dyn Fn(&Sampled) -> String| {
            let mut sums: HashMap<String, f64> = HashMap::new();
            for r in rows {
                *sums.entry(key(r)).or_default() += share(r.percent);
            }
            let mut sums: Vec<(String, f64)> = sums.into_iter().collect();
            sums.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            sums
        };
        let by_thread = grouped(&|r| r.thread.clone());
        let by_area = grouped(&area);
        let mut by_function: HashMap<(String, String), f64> = HashMap::new();
        for r in rows {
            *by_function
                .entry((r.dso.clone(), r.symbol.clone()))
                .or_default() += share(r.percent);
        }
        let mut top: Vec<Sampled> = by_function
            .into_iter()
            .map(|((dso, symbol), percent)| Sampled {
                percent,
                thread: String::new(),
                dso,
                symbol,
            })
            .collect();
        top.sort_by(|a, b| {
            b.percent
                .total_cmp(&a.percent)
                .then_with(|| a.symbol.cmp(&b.symbol))
        });
        top.truncate(TOP_FUNCTIONS);
        Summary {
            elapsed,
            cpu,
            by_thread,
            by_area,
            top,
            statements: Vec::new(),
        }
    }

    /// Prints the summary as bench lines, headed by `what`.
    pub(crate) fn say(&self, what: &str) {
        let seconds = self.elapsed.as_secs_f64();
        let cpu = self.cpu.as_secs_f64();
        say!(
            "profile of the server, {what} (perf record -e cpu-clock, self time): {cpu:.1}s CPU over {seconds:.1}s"
        );
        // A thread's share of the CPU, as a share of one core over the
        // window: near 100% is a thread that is the bottleneck.
        let threads: Vec<String> = self
            .by_thread
            .iter()
            .filter(|(_, p)| *p >= 0.5)
            .map(|(name, p)| {
                let core = if seconds > 0.0 {
                    p * cpu / seconds
                } else {
                    0.0
                };
                format!("{name} {p:.0}% ({core:.0}% of a core)")
            })
            .collect();
        say!("  by thread: {}", threads.join(", "));
        let areas: Vec<String> = self
            .by_area
            .iter()
            .filter(|(_, p)| *p >= 0.5)
            .map(|(name, p)| format!("{name} {p:.0}%"))
            .collect();
        say!("  by code: {}", areas.join(", "));
        say!("  functions:");
        for f in &self.top {
            let mut symbol = f.symbol.clone();
            if symbol.len() > 110 {
                let cut = (0..=110)
                    .rev()
                    .find(|&i| symbol.is_char_boundary(i))
                    .unwrap_or(0);
                symbol.truncate(cut);
                symbol.push('…');
            }
            say!("  {:5.1}%  {:<10} {symbol}", f.percent, area(f));
        }
        statements::say(&self.statements);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fields: [&str; 4]) -> String {
        fields.join(FIELD_SEPARATOR)
    }

    #[test]
    fn a_report_is_summed_by_thread_code_and_function() {
        let text = [
            line([
                "    30.00%  ",
                "sqlx-sqlite-wor ",
                "airlock-bench  ",
                "[.] sqlite3VdbeExec",
            ]),
            line([
                "    20.00%  ",
                "tokio-runtime-w ",
                "[kernel.kallsyms]",
                "[k] do_syscall_64",
            ]),
            line([
                "    10.00%  ",
                "tokio-runtime-w ",
                "libc.so.6",
                "[.] _int_malloc",
            ]),
            line([
                "    10.00%  ",
                "sqlx-sqlite-wor ",
                "libc.so.6",
                "[.] _int_malloc",
            ]),
            line([
                "    15.00%  ",
                "tokio-runtime-w ",
                "airlock-bench",
                "[.] <tokio::runtime::task::raw::RawTask as core::ops::Drop>::drop",
            ]),
            line([
                "    15.00%  ",
                "tokio-runtime-w ",
                "airlock-bench",
                "[.] airlock_server::store::sql::Store::apply::{{closure}}",
            ]),
            "# a comment perf may print".to_owned(),
        ]
        .join("\n");
        let rows = parse_report(&text).unwrap();
        assert_eq!(rows.len(), 6);
        let summary = Summary::of(&rows, Duration::from_secs(10), Duration::from_secs(15));
        assert_eq!(
            summary.by_thread,
            vec![
                ("tokio-runtime-w".to_owned(), 60.0),
                ("sqlx-sqlite-wor".to_owned(), 40.0)
            ]
        );
        let areas: Vec<(&str, f64)> = summary
            .by_area
            .iter()
            .map(|(a, p)| (a.as_str(), *p))
            .collect();
        assert_eq!(
            areas,
            vec![
                ("SQLite", 30.0),
                ("kernel", 20.0),
                ("malloc", 20.0),
                ("airlock", 15.0),
                ("tokio", 15.0)
            ]
        );
        // The allocator's two threads are one function.
        let first = summary.top.first().unwrap();
        assert_eq!(
            (first.symbol.as_str(), first.percent),
            ("sqlite3VdbeExec", 30.0)
        );
        let malloc = summary
            .top
            .iter()
            .find(|f| f.symbol == "_int_malloc")
            .unwrap();
        assert!((malloc.percent - 20.0).abs() < 1e-9);
    }

    #[test]
    fn a_line_without_its_columns_is_refused_by_number() {
        let err = parse_report("  12.0%  only two").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_report(&line(["x", "t", "d", "[.] s"])).unwrap_err();
        assert!(err.to_string().contains("no percentage"), "{err}");
    }

    #[test]
    fn the_crate_of_a_rust_symbol_is_the_start_of_its_path() {
        assert_eq!(rust_crate("tokio::runtime::park::wake"), Some("tokio"));
        assert_eq!(
            rust_crate("<&mut serde_json::ser::Serializer<W> as serde::Serializer>::x"),
            Some("serde_json")
        );
        assert_eq!(rust_crate("core::ptr::drop_in_place<a::B>"), Some("core"));
        assert_eq!(rust_crate("sqlite3BtreeNext"), None);
        assert_eq!(rust_crate("balance_nonroot"), None);
    }

    #[test]
    fn c_symbols_are_sqlite_unless_they_are_rusts_allocator_or_ring() {
        let at = |symbol: &str| {
            area(&Sampled {
                percent: 1.0,
                thread: "t".to_owned(),
                dso: "airlock".to_owned(),
                symbol: symbol.to_owned(),
            })
        };
        assert_eq!(at("balance_nonroot"), "SQLite");
        assert_eq!(at("sqlite3VdbeExec"), "SQLite");
        assert_eq!(at("__rust_alloc"), "malloc");
        assert_eq!(at("__rdl_dealloc"), "malloc");
        assert_eq!(at("ring_core_0_17_14__sha256_block_data_order"), "ring");
        assert_eq!(at("_start"), "C runtime");
        assert_eq!(at("0x00000000001234"), "airlock (no symbol)");
    }
}
