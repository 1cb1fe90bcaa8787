//! What a benchmark prints, and `--record FILE`: the same lines written into
//! that file's section for the benchmark, with the command that reruns it
//! and the machine it ran on. `BENCHMARKS.md` is written this way only, so
//! its figures are always a run's, never typed in.

use std::path::Path;

use anyhow::Context as _;

/// The lines the benchmark reported so far (`say!`).
static LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Prints a figure line and keeps it for the record: `say!("p99 {} ms", x)`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::report::say_line(format!($($arg)*))
    };
}
pub(crate) use say;

/// Prints `line` and keeps it for [`record`].
pub(crate) fn say_line(line: String) {
    println!("{line}");
    LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(line);
}

/// Replaces (or adds) `bench`'s section of the Markdown file at `path`
/// with the lines said so far, the command that reruns it and the machine.
pub(crate) fn record(path: &Path, bench: &str) -> anyhow::Result<()> {
    let lines = LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let report = Report { lines };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let section = report.section(bench, &rerun_command(), &Machine::read());
    let updated = replace_section(&existing, bench, &section)?;
    // Written aside and renamed: an interrupted write leaves the old file.
    let aside = path.with_extension("md.partial");
    std::fs::write(&aside, updated).with_context(|| format!("writing {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("replacing {}", path.display()))?;
    println!("recorded in {} (section `{bench}`)", path.display());
    Ok(())
}

/// A run's lines, as a section of the record.
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn section(&self, bench: &str, command: &str, machine: &Machine) -> String {
        let mut out = format!("{}\n## `{bench}`\n\n", begin_marker(bench));
        out.push_str(&format!("```sh\n{command}\n```\n\n"));
        out.push_str(&format!(
            "Ran {} on {} cores ({}), {:.1} GiB of memory, Linux {}; {}.\n\n",
            machine.date,
            machine.cores,
            machine.cpu,
            machine.memory_gib,
            machine.kernel,
            machine.speed
        ));
        out.push_str("```\n");
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("```\n");
        out.push_str(&end_marker(bench));
        out.push('\n');
        out
    }
}

const HEADER: &str =
    "# Benchmarks\n\nWritten by `airlock-bench --record BENCHMARKS.md <bench> …`: each section is \
the last recorded run of one benchmark, with the command that reruns it and the machine it ran on. \
Do not edit the sections by hand.\n";

fn begin_marker(bench: &str) -> String {
    format!("<!-- bench:{bench} begin -->")
}

fn end_marker(bench: &str) -> String {
    format!("<!-- bench:{bench} end -->")
}

/// `text` with `bench`'s section (between its markers) replaced by
/// `section`, or `section` appended when it has none yet.
fn replace_section(text: &str, bench: &str, section: &str) -> anyhow::Result<String> {
    let (begin, end) = (begin_marker(bench), end_marker(bench));
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            let after = e + end.len();
            let rest = text.get(after..).unwrap_or_default();
            let rest = rest.strip_prefix('\n').unwrap_or(rest);
            Ok(format!(
                "{}{section}{rest}",
                text.get(..b).unwrap_or_default()
            ))
        }
        (None, None) => {
            let mut out = text.trim_end().to_owned();
            out.push_str("\n\n");
            out.push_str(section);
            Ok(out)
        }
        _ => anyhow::bail!("the markers of section `{bench}` are broken: fix them by hand"),
    }
}

/// The command that reruns this benchmark, as one types it in the
/// repository: through cargo, in release mode, without `--record`.
fn rerun_command() -> String {
    let mut args = std::env::args().skip(1).peekable();
    let mut kept = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--record" {
            args.next();
            continue;
        }
        if arg.starts_with("--record=") {
            continue;
        }
        kept.push(arg);
    }
    let mut command = "cargo run --release -p airlock-bench --".to_owned();
    for arg in kept {
        command.push(' ');
        command.push_str(&arg);
    }
    command
}

/// The machine a run was on, read from the kernel.
struct Machine {
    date: String,
    cores: usize,
    cpu: String,
    memory_gib: f64,
    kernel: String,
    /// How fast this machine was when the run was recorded
    /// ([`machine_speed`]).
    speed: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |v| v.trim().to_owned());
        let now = airlock_core::Timestamp::from_unix_millis(crate::now_ms()).to_rfc3339();
        Machine {
            date: now.get(..10).unwrap_or(&now).to_owned(),
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
            cpu,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel,
            speed: machine_speed(),
        }
    }
}

/// Two reference figures measured now, so that runs recorded on different
/// days (virtual machines of one name that are not equally fast) can be
/// compared: one core's speed (SHA-256 over 64 MiB) and what it costs to
/// wake another thread and be woken back (a channel ping-pong), which is
/// what every statement handed to SQLite's worker thread pays twice.
fn machine_speed() -> String {
    use sha2::Digest as _;
    let block = vec![0x5au8; 1 << 20];
    let started = std::time::Instant::now();
    let mut hasher = sha2::Sha256::new();
    for _ in 0..64 {
        hasher.update(&block);
    }
    std::hint::black_box(hasher.finalize());
    let mib_per_s = 64.0 / started.elapsed().as_secs_f64();
    let (to_peer, from_me) = std::sync::mpsc::channel::<u32>();
    let (to_me, from_peer) = std::sync::mpsc::channel::<u32>();
    let peer = std::thread::spawn(move || {
        for n in from_me {
            if to_me.send(n).is_err() {
                break;
            }
        }
    });
    const ROUNDS: u32 = 20_000;
    let started = std::time::Instant::now();
    for n in 0..ROUNDS {
        if to_peer.send(n).is_err() || from_peer.recv().is_err() {
            break;
        }
    }
    let round_trip_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    drop(to_peer);
    let _ = peer.join();
    format!("reference: SHA-256 at {mib_per_s:.0} MiB/s on one core, a thread woken and waking back in {round_trip_us:.1} µs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> Report {
        Report {
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn machine() -> Machine {
        Machine {
            date: "2026-12-06".to_owned(),
            cores: 2,
            cpu: "Some CPU".to_owned(),
            memory_gib: 24.0,
            kernel: "6.1".to_owned(),
            speed: "reference: fast".to_owned(),
        }
    }

    #[test]
    fn a_section_is_added_then_replaced_leaving_the_others() {
        let first = report(&["p99 1.0 ms"]).section("check", "cargo run x", &machine());
        let text = replace_section(HEADER, "check", &first).unwrap();
        let other = report(&["42/s"]).section("load", "cargo run y", &machine());
        let text = replace_section(&text, "load", &other).unwrap();
        let again = report(&["p99 0.5 ms"]).section("check", "cargo run x", &machine());
        let text = replace_section(&text, "check", &again).unwrap();
        assert!(text.starts_with("# Benchmarks"));
        assert!(text.contains("p99 0.5 ms"), "{text}");
        assert!(!text.contains("p99 1.0 ms"), "{text}");
        assert!(text.contains("42/s"), "{text}");
        assert_eq!(text.matches("bench:check begin").count(), 1, "{text}");
        // The replaced section keeps its place, before `load`.
        assert!(text.find("p99 0.5 ms") < text.find("42/s"), "{text}");
        assert!(text.contains("on 2 cores (Some CPU), 24.0 GiB"), "{text}");
        assert!(text.contains("Linux 6.1; reference: fast."), "{text}");
    }

    #[test]
    fn broken_markers_are_refused_not_guessed() {
        let text = format!("{HEADER}\n{}\n", end_marker("check"));
        let section = report(&["x"]).section("check", "c", &machine());
        let err = replace_section(&text, "check", &section).unwrap_err();
        assert!(err.to_string().contains("`check`"), "{err}");
    }
}
