//! A connector that runs an operator-supplied program for each grant, revoke
//! and health check. It exists so that any target reachable from a shell
//! script (an LDAP group, a cloud CLI, a database `GRANT`) can be wired into
//! Airlock without writing Rust.
//!
//! The contract with the program is positional arguments plus `AIRLOCK_*`
//! environment variables (see [`CommandConnector`]), and its exit status:
//! `0` is success, `75` (`EX_TEMPFAIL` from `sysexits.h`) asks for a retry, and
//! anything else is a permanent failure. The program must be idempotent like
//! every connector: the engine may run the same grant twice after a crash.
//!
//! The program inherits nothing of the server's environment: the server's
//! configuration and secrets (a webhook's `secret_env`, database URLs) live
//! there, and a script has no business seeing them. It gets the variables its
//! configuration lists, `PATH` (the configured one, or [`DEFAULT_PATH`]) and
//! the protocol's `AIRLOCK_*` variables.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::Instrument;

use crate::{rfc3339, Action, Connector, ConnectorError, GrantSpec, Granted};

/// How much of the program's stderr is kept for the error message: enough for
/// a useful diagnostic, small enough for an audit record.
const STDERR_LIMIT: usize = 2048;

/// How long to keep reading stderr after the program has exited. A background
/// process the script started may hold the pipe open forever; waiting for EOF
/// would turn a successful call into a timeout.
const PIPE_GRACE: Duration = Duration::from_millis(250);

/// The `PATH` a program gets unless its configuration sets one: the system
/// directories, never the server's own `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The exit status a program uses to ask for a retry (`EX_TEMPFAIL`).
pub const EXIT_TEMPFAIL: i32 = 75;

/// Validated configuration for a [`CommandConnector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSettings {
    /// The program to run; a path is used as given, a bare name is looked up
    /// in `PATH`.
    pub program: PathBuf,
    /// Arguments placed before the action and its positional arguments.
    pub args: Vec<String>,
    /// Upper bound on one run; the program is killed when it is exceeded.
    pub timeout: Duration,
    /// The program's whole environment besides `PATH` and the protocol's
    /// variables (nothing is inherited).
    pub env: Vec<(String, String)>,
}

/// Runs `program [args...] ACTION USER ENTITLEMENT REQUEST_ID EXPIRES_AT` for
/// each call (`program [args...] health` for a health check), with the same
/// values in `AIRLOCK_ACTION`, `AIRLOCK_USER`, `AIRLOCK_ENTITLEMENT`,
/// `AIRLOCK_REQUEST_ID`, `AIRLOCK_EXPIRES_AT` (RFC 3339) and
/// `AIRLOCK_EXPIRES_AT_UNIX` (seconds) and `AIRLOCK_CLAIM` (the fencing token).
///
/// Only the direct child is killed on timeout: a script that starts
/// long-running tools should `exec` them so the kill reaches them.
#[derive(Debug, Clone)]
pub struct CommandConnector {
    settings: CommandSettings,
}

/// What one run is asked to do; health carries no grant.
#[derive(Clone, Copy)]
enum Call<'a> {
    Change(Action, &'a GrantSpec),
    Health,
}

impl Call<'_> {
    fn action(self) -> &'static str {
        match self {
            Call::Change(action, _) => action.as_str(),
            Call::Health => "health",
        }
    }
}

impl CommandConnector {
    pub fn new(settings: CommandSettings) -> Self {
        Self { settings }
    }

    pub fn settings(&self) -> &CommandSettings {
        &self.settings
    }

    fn command(&self, call: Call<'_>) -> Command {
        let mut cmd = Command::new(&self.settings.program);
        cmd.args(&self.settings.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A call abandoned by the engine (or by our own timeout) must not
            // leave a half-finished provisioning run behind.
            .kill_on_drop(true);

        cmd.env_clear().env("PATH", DEFAULT_PATH);
        // Configured variables first, so they cannot shadow the protocol ones.
        cmd.envs(self.settings.env.iter().map(|(k, v)| (k, v)));
        cmd.arg(call.action()).env("AIRLOCK_ACTION", call.action());

        if let Call::Change(_, spec) = call {
            let expires_at = rfc3339(spec.expires_at);
            let expires_at_unix = spec.expires_at.unix_millis().div_euclid(1000).to_string();
            cmd.args([
                spec.user.as_str(),
                spec.entitlement.as_str(),
                spec.request_id.as_str(),
                expires_at.as_str(),
            ])
            .env("AIRLOCK_USER", spec.user.as_str())
            .env("AIRLOCK_ENTITLEMENT", spec.entitlement.as_str())
            .env("AIRLOCK_REQUEST_ID", spec.request_id.as_str())
            .env("AIRLOCK_EXPIRES_AT", &expires_at)
            .env("AIRLOCK_EXPIRES_AT_UNIX", expires_at_unix)
            .env("AIRLOCK_CLAIM", spec.claim.to_string());
        }
        cmd
    }

    async fn call(&self, call: Call<'_>) -> Result<(), ConnectorError> {
        let span = match call {
            Call::Change(action, spec) => tracing::info_span!(
                "command_connector",
                action = action.as_str(),
                request_id = spec.request_id.as_str()
            ),
            Call::Health => tracing::info_span!("command_connector", action = "health"),
        };
        self.run(call).instrument(span).await
    }

    async fn run(&self, call: Call<'_>) -> Result<(), ConnectorError> {
        let program = self.settings.program.display();
        let mut child = self.command(call).spawn().map_err(|e| {
            // Usually a deployment problem (missing file, bad permissions)
            // that an operator can fix without the request being lost.
            ConnectorError::Retryable(format!("could not start `{program}`: {e}"))
        })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let mut captured = Captured::default();
        let outcome = {
            // Both pipes are drained while waiting: a program that fills a
            // pipe buffer would otherwise block forever on its next write.
            let pipes = async {
                tokio::join!(drain(stdout, None), drain(stderr, Some(&mut captured)));
            };
            tokio::pin!(pipes);
            let run = async {
                tokio::select! {
                    biased;
                    status = child.wait() => {
                        let _ = tokio::time::timeout(PIPE_GRACE, &mut pipes).await;
                        status
                    }
                    () = &mut pipes => child.wait().await,
                }
            };
            tokio::time::timeout(self.settings.timeout, run).await
        };

        let stderr = captured.into_message();
        let with_stderr = |head: String| {
            if stderr.is_empty() {
                head
            } else {
                format!("{head}: {stderr}")
            }
        };
        match outcome {
            Err(_elapsed) => {
                // Kill and reap now rather than leaving it to the drop, so the
                // program is gone before the engine retries.
                let _ = child.kill().await;
                Err(ConnectorError::Retryable(with_stderr(format!(
                    "`{program}` timed out after {} and was killed",
                    humantime::format_duration(self.settings.timeout)
                ))))
            }
            Ok(Err(e)) => Err(ConnectorError::Retryable(format!(
                "could not wait for `{program}`: {e}"
            ))),
            Ok(Ok(status)) => classify(status).map_err(|failure| match failure {
                Failure::TempFail => ConnectorError::Retryable(with_stderr(format!(
                    "`{program}` exited with status {EXIT_TEMPFAIL}"
                ))),
                Failure::Code(code) => ConnectorError::Permanent(with_stderr(format!(
                    "`{program}` exited with status {code}"
                ))),
                Failure::Signal(signal) => ConnectorError::Permanent(with_stderr(format!(
                    "`{program}` was killed by signal {signal}"
                ))),
            }),
        }
    }
}

/// Why a finished program counts as a failure.
enum Failure {
    TempFail,
    Code(i32),
    Signal(i32),
}

fn classify(status: ExitStatus) -> Result<(), Failure> {
    match status.code() {
        Some(0) => Ok(()),
        Some(EXIT_TEMPFAIL) => Err(Failure::TempFail),
        Some(code) => Err(Failure::Code(code)),
        None => Err(Failure::Signal(signal_of(status))),
    }
}

#[cfg(unix)]
fn signal_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(-1)
}

#[cfg(not(unix))]
fn signal_of(_status: ExitStatus) -> i32 {
    -1
}

/// The first [`STDERR_LIMIT`] bytes of a stream, and whether more followed.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn push(&mut self, chunk: &[u8]) {
        let room = STDERR_LIMIT.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes.extend(chunk.iter().take(room));
    }

    /// Trimmed, valid UTF-8 (a multi-byte character cut at the limit becomes
    /// a replacement character), marked when truncated.
    fn into_message(self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        if self.truncated {
            format!("{text} [truncated]")
        } else {
            text.to_owned()
        }
    }
}

/// Reads a pipe to EOF, keeping the start of it in `keep` if given. Read
/// errors end the read: the exit status is what decides the outcome.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, mut keep: Option<&mut Captured>) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let (Some(keep), Some(chunk)) = (keep.as_deref_mut(), buf.get(..n)) {
                    keep.push(chunk);
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Connector for CommandConnector {
    async fn grant(&self, spec: &GrantSpec) -> Result<Granted, ConnectorError> {
        self.call(Call::Change(Action::Grant, spec)).await?;
        Ok(Granted::default())
    }

    async fn revoke(&self, spec: &GrantSpec) -> Result<(), ConnectorError> {
        self.call(Call::Change(Action::Revoke, spec)).await
    }

    async fn health(&self) -> Result<(), ConnectorError> {
        self.call(Call::Health).await
    }

    fn call_timeout(&self) -> Duration {
        self.settings.timeout
    }
}
