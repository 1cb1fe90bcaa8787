//! Records wait in the spool folder until Airlock takes them, so recording
//! never holds up a session: every record is written there first (a file
//! per session, written whole and renamed into place), then a sender started
//! apart from the session (its own process group, no terminal) posts what
//! the folder holds, oldest first, and removes each file Airlock took. When
//! Airlock cannot be reached the sender tries again with a growing pause
//! for `retry_for`; what is left is sent by the next session's sender or by
//! `airlock-session send` (e.g. from a timer). A file Airlock refuses for
//! good (4xx) is moved to `refused/`, never deleted unread.
//!
//! The spool is bounded (`spool_max_bytes`): a record that would pass the
//! bound is kept without its recording, and says so.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_core::Timestamp;

use crate::config::Config;
use crate::upload::Spooled;

/// The longest pause between two tries of a sender.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// The most one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(15);

/// Writes `record` to the spool; its path.
pub fn keep(config: &Config, record: &Spooled, started_at: Timestamp) -> Result<PathBuf, String> {
    let dir = &config.spool_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let mut record = record.clone();
    let mut text = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let held = spooled_bytes(dir);
    if held + text.len() as u64 > config.spool_max_bytes {
        let dropped = record.upload.recording.len();
        let header_end = record.upload.recording.find('\n').map_or(0, |at| at + 1);
        record.upload.recording.truncate(header_end);
        let note = format!(
            "the recording ({dropped} bytes) was not kept: the spool on {} held {held} bytes of at most {}",
            config.host, config.spool_max_bytes
        );
        record.upload.cut = Some(match record.upload.cut.take() {
            Some(before) => format!("{before}; {note}"),
            None => note,
        });
        text = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    }
    let name = format!(
        "{:016}-{}.json",
        started_at.unix_millis().max(0),
        record.upload.id
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // Owner-only: a recording may hold what the user typed.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot rename `{}`: {e}", tmp.display()))?;
    Ok(path)
}

fn spooled_bytes(dir: &Path) -> u64 {
    pending(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The records waiting, oldest first.
pub fn pending(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| !n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// What a sender did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    pub refused: usize,
    pub left: usize,
}

/// Why one post did not go through.
enum PostError {
    /// Airlock could not be reached or answered 5xx, 408 or 429.
    Later(String),
    /// Airlock refused the record for good.
    Refused(String),
}

/// Posts every waiting record (or only `only`, one the caller wrote: a
/// spool its accounts may write but not list still sends each session's
/// own record); with `retry`, keeps trying what could not be sent for
/// `config.retry_for`.
pub fn send_all(config: &Config, retry: bool, only: Option<&Path>) -> Result<Sent, String> {
    let waiting = || match only {
        Some(file) if file.exists() => vec![file.to_owned()],
        Some(_) => Vec::new(),
        None => pending(&config.spool_dir),
    };
    let Some(url) = &config.url else {
        return Ok(Sent {
            left: waiting().len(),
            ..Sent::default()
        });
    };
    let token_file = config.token_file.as_ref().ok_or("token_file is not set")?;
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the token file `{}`: {e}", token_file.display()))?
        .trim()
        .to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the sender: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let until = Instant::now() + config.retry_for;
    let mut pause = Duration::from_secs(1);
    let mut done = Sent::default();
    loop {
        let mut blocked = None;
        for file in waiting() {
            match runtime.block_on(post(&client, url, &token, &file)) {
                Ok(()) => {
                    done.sent += 1;
                    let _ = std::fs::remove_file(&file);
                }
                Err(PostError::Refused(why)) => {
                    done.refused += 1;
                    eprintln!("airlock-session: `{}` refused: {why}", file.display());
                    let refused = config.spool_dir.join("refused");
                    let _ = std::fs::create_dir_all(&refused);
                    if let Some(name) = file.file_name() {
                        let _ = std::fs::rename(&file, refused.join(name));
                    }
                }
                Err(PostError::Later(why)) => {
                    blocked = Some(why);
                    break;
                }
            }
        }
        let Some(why) = blocked else {
            return Ok(done);
        };
        if !retry || Instant::now() + pause > until {
            done.left = waiting().len();
            eprintln!(
                "airlock-session: {} records left in the spool: {why}",
                done.left
            );
            return Ok(done);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    file: &Path,
) -> Result<(), PostError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        // Another sender took it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(PostError::Later(format!(
                "cannot read `{}`: {e}",
                file.display()
            )))
        }
    };
    let record: Spooled = serde_json::from_str(&text)
        .map_err(|e| PostError::Refused(format!("not a session record: {e}")))?;
    let answer = client
        .post(format!("{url}/v1/requests/{}/ssh-sessions", record.request))
        .bearer_auth(token)
        .json(&record.upload)
        .send()
        .await
        .map_err(|e| PostError::Later(format!("cannot reach {url}: {e}")))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body = answer.text().await.unwrap_or_default();
    let why = format!("{status}: {}", body.chars().take(500).collect::<String>());
    if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::UNAUTHORIZED
    {
        Err(PostError::Later(why))
    } else {
        Err(PostError::Refused(why))
    }
}

/// Starts a sender apart from the session (its own process group, no
/// terminal, its messages appended to `spool_dir/sender.log`), so the
/// session ends without waiting for Airlock: for `only` (the session's own
/// record), or for whatever the spool holds.
pub fn start_sender(config: &Config, config_path: &Path, only: Option<&Path>) {
    if config.url.is_none() || (only.is_none() && pending(&config.spool_dir).is_empty()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.spool_dir.join("sender.log"));
    let stderr = match log {
        Ok(f) => std::process::Stdio::from(f),
        Err(_) => std::process::Stdio::null(),
    };
    let mut command = std::process::Command::new(exe);
    command
        .arg("--config")
        .arg(config_path)
        .args(["send", "--retry"]);
    if let Some(file) = only {
        command.arg("--file").arg(file);
    }
    let _ = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn();
}
