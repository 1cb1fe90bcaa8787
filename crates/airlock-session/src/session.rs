//! One SSH session under the companion: the certificate read from
//! `$SSH_USER_AUTH` and admitted, the user's shell or command started in a
//! session and process group of its own (under a pseudo-terminal the
//! companion owns when the client asked for one, plain pipes otherwise),
//! its output relayed and recorded, and the whole group ended — after a
//! message to the user — as soon as the grant ends.
//!
//! The child is started through `setsid` (util-linux; `setsid -c` also makes
//! the pseudo-terminal its controlling terminal), since the workspace
//! forbids the `unsafe` a `pre_exec` would need. Not being a process group
//! leader, the child's `setsid` does not fork: its pid is the session's and
//! the process group's id.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airlock_core::ssh_session::{self, Ending, NotAdmitted};
use airlock_core::{RequestId, Timestamp};
use rustix::process::{Pid, Signal};
use rustix::termios::{self, OptionalActions, Termios, Winsize};

use crate::asciicast::{Header, HeaderEnv, Recorder};
use crate::config::Config;
use crate::krl::{KrlWatch, Verdict};
use crate::upload::{SessionUpload, Spooled};
use crate::wall_now;

/// How often the companion looks at the KRL, the child and the window size.
pub const POLL: Duration = Duration::from_millis(200);
/// How long the group has after SIGHUP and SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_millis(300);
/// How long output still arriving after the child exited is waited for.
const DRAIN: Duration = Duration::from_millis(300);
/// Looks in a row that could not test the certificate against the KRL
/// before the session is ended as sshd would refuse a login then (about 2 s).
const KRL_FAILURES_BEFORE_END: u32 = 10;

/// What sshd tells the session.
#[derive(Debug, Clone, Default)]
pub struct SshEnv {
    /// `$SSH_USER_AUTH`: the file naming the methods that authenticated.
    pub user_auth: Option<PathBuf>,
    /// `$SSH_ORIGINAL_COMMAND`.
    pub command: Option<String>,
    /// `$SSH_CONNECTION`: client address and port, server address and port.
    pub connection: Option<String>,
    pub shell: Option<String>,
    pub user: Option<String>,
    pub term: Option<String>,
}

impl SshEnv {
    pub fn from_process() -> SshEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        SshEnv {
            user_auth: var("SSH_USER_AUTH").map(PathBuf::from),
            command: var("SSH_ORIGINAL_COMMAND"),
            connection: var("SSH_CONNECTION"),
            shell: var("SHELL"),
            user: var("USER").or_else(|| var("LOGNAME")),
            term: var("TERM"),
        }
    }

    /// The client's address and port.
    fn client(&self) -> String {
        let mut parts = self.connection.as_deref().unwrap_or("").split(' ');
        match (parts.next(), parts.next()) {
            (Some(addr), Some(port)) if !addr.is_empty() => format!("{addr} port {port}"),
            _ => "unknown".to_owned(),
        }
    }
}

/// The certificate that authenticated the session.
pub struct Admitted {
    pub request: RequestId,
    pub valid_before: Timestamp,
    /// The certificate in OpenSSH's one-line form.
    pub line: String,
}

/// The certificate `$SSH_USER_AUTH` names (`publickey TYPE-cert-v01@openssh.com
/// BASE64`), parsed. Refused when there is none: a session this program
/// guards is one an Airlock certificate opened.
pub fn certificate(user_auth: Option<&Path>) -> Result<(String, ssh_key::Certificate), String> {
    let path = user_auth.ok_or(
        "sshd did not say how this session was authenticated ($SSH_USER_AUTH is unset: `ExposeAuthInfo yes` is missing)",
    )?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let line = text
        .lines()
        .filter_map(|l| l.strip_prefix("publickey "))
        .find(|l| {
            l.split(' ')
                .next()
                .is_some_and(|t| t.ends_with("-cert-v01@openssh.com"))
        })
        .ok_or(
            "this session was not opened with an SSH certificate; this host admits only Airlock's",
        )?;
    let cert = ssh_key::Certificate::from_openssh(line.trim())
        .map_err(|e| format!("cannot read the session's certificate: {e}"))?;
    Ok((line.trim().to_owned(), cert))
}

fn unix_secs(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(
        i64::try_from(secs)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .unwrap_or(i64::MAX),
    )
}

/// Admits the session's certificate or says why not.
pub fn admit(env: &SshEnv, watch: &mut KrlWatch, cert_file: &Path) -> Result<Admitted, String> {
    let (line, cert) = certificate(env.user_auth.as_deref())?;
    let valid_before = unix_secs(cert.valid_before());
    // The key id decides first: a certificate that is not Airlock's is
    // refused for that, whatever the KRL says.
    ssh_session::request_of_key_id(cert.key_id()).map_err(|e| e.to_string())?;
    write_private(cert_file, &format!("{line}\n"))
        .map_err(|e| format!("cannot write `{}`: {e}", cert_file.display()))?;
    let revoked = match watch.look(cert_file) {
        Verdict::Listed => true,
        Verdict::NotListed => false,
        Verdict::Unknown(why) => return Err(why.clone()),
    };
    let request = ssh_session::admit(cert.key_id(), valid_before, revoked, wall_now())
        .map_err(|e: NotAdmitted| e.to_string())?;
    Ok(Admitted {
        request,
        valid_before,
        line,
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Something the relay threads tell the main loop.
enum Relay {
    Output(Instant, Vec<u8>),
    Closed,
}

/// The user's terminal, in raw mode while the session runs (the inner
/// pseudo-terminal does the line editing), restored on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// The running child and how its output comes back.
struct Running {
    child: Child,
    group: Option<Pid>,
    /// The pseudo-terminal's master side, when there is one.
    master: Option<File>,
    rx: mpsc::Receiver<Relay>,
    /// Output streams still open.
    open_streams: usize,
}

fn spawn_reader(mut from: impl Read + Send + 'static, to_stderr: bool, tx: mpsc::Sender<Relay>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = buf.get(..n).unwrap_or_default().to_vec();
                    let written = if to_stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&chunk).and_then(|()| e.flush())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&chunk).and_then(|()| o.flush())
                    };
                    if tx.send(Relay::Output(Instant::now(), chunk)).is_err() {
                        break;
                    }
                    // The user's side closed: output still goes to the recording.
                    let _ = written;
                }
            }
        }
        let _ = tx.send(Relay::Closed);
    });
}

fn spawn_writer(mut to: impl Write + Send + 'static) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let Some(chunk) = buf.get(..n) else { break };
                    if to.write_all(chunk).and_then(|()| to.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        // `to` is dropped: a pipe's reader sees the end of its input.
    });
}

/// The user's shell, as sshd names it.
fn shell(env: &SshEnv) -> String {
    env.shell.clone().unwrap_or_else(|| "/bin/sh".to_owned())
}

/// The arguments after the shell: the command through `-c`, or a login shell.
fn shell_args(env: &SshEnv) -> Vec<String> {
    match &env.command {
        Some(command) => vec!["-c".to_owned(), command.clone()],
        None => vec!["-l".to_owned()],
    }
}

fn start_in_pty(env: &SshEnv, size: Option<Winsize>) -> std::io::Result<Running> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master: OwnedFd = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let name = PathBuf::from(name.to_string_lossy().into_owned());
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits().try_into().unwrap_or(0))
        .open(&name)?;
    if let Some(size) = size {
        let _ = termios::tcsetwinsize(&slave, size);
    }
    let child = Command::new("setsid")
        .arg("-c")
        .arg(shell(env))
        .args(shell_args(env))
        .env("SSH_TTY", &name)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .spawn()?;
    let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let master = File::from(master);
    let (tx, rx) = mpsc::channel();
    spawn_reader(master.try_clone()?, false, tx);
    spawn_writer(master.try_clone()?);
    Ok(Running {
        child,
        group,
        master: Some(master),
        rx,
        open_streams: 1,
    })
}

fn start_with_pipes(env: &SshEnv) -> std::io::Result<Running> {
    let mut child = Command::new("setsid")
        .arg(shell(env))
        .args(shell_args(env))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let (tx, rx) = mpsc::channel();
    let mut open_streams = 0;
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, false, tx.clone());
        open_streams += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, true, tx);
        open_streams += 1;
    }
    if let Some(input) = child.stdin.take() {
        spawn_writer(input);
    }
    Ok(Running {
        child,
        group,
        master: None,
        rx,
        open_streams,
    })
}

/// Ends every process of the session's group: SIGHUP, SIGCONT and SIGTERM,
/// then SIGKILL to whatever is left after [`GRACE`].
fn end_group(running: &mut Running) {
    if let Some(group) = running.group {
        for signal in [Signal::HUP, Signal::CONT, Signal::TERM] {
            let _ = rustix::process::kill_process_group(group, signal);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            let _ = running.child.try_wait();
            if rustix::process::test_kill_process_group(group).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
}

/// How a session went, for its record and the companion's exit status.
pub struct Outcome {
    pub ending: Ending,
    pub exit_code: i32,
    pub spooled: Option<PathBuf>,
}

/// Runs the session: admitted first (a refusal is said to the user and
/// nothing runs), then relayed, recorded and ended with the grant.
pub fn run(config: &Config, env: &SshEnv) -> Result<Outcome, String> {
    std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
        format!(
            "cannot create the spool `{}`: {e}",
            config.spool_dir.display()
        )
    })?;
    let session_id = new_session_id()?;
    let cert_file = config.spool_dir.join(format!("{session_id}.cert"));
    let mut watch = KrlWatch::new(&config.krl, &config.ssh_keygen);
    let admitted = admit(env, &mut watch, &cert_file);
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_file(&cert_file);
            return Err(e);
        }
    };
    let result = run_admitted(config, env, &admitted, &session_id, &cert_file, &mut watch);
    let _ = std::fs::remove_file(&cert_file);
    result
}

fn run_admitted(
    config: &Config,
    env: &SshEnv,
    admitted: &Admitted,
    session_id: &str,
    cert_file: &Path,
    watch: &mut KrlWatch,
) -> Result<Outcome, String> {
    let started_at = wall_now();
    let start = Instant::now();
    let stdin = std::io::stdin();
    let interactive = termios::isatty(stdin.as_fd());
    let mut size = if interactive {
        termios::tcgetwinsize(stdin.as_fd()).ok()
    } else {
        None
    };
    let header = Header {
        width: size.map_or(80, |s| s.ws_col),
        height: size.map_or(24, |s| s.ws_row),
        timestamp: started_at.unix_millis() / 1000,
        command: env.command.clone(),
        env: HeaderEnv {
            term: env.term.clone(),
            shell: env.shell.clone(),
        },
    };
    let mut recorder = Recorder::new(&header, ssh_session::MAX_RECORDING_BYTES);
    let raw = if interactive { RawMode::enter() } else { None };
    let running = if interactive {
        start_in_pty(env, size)
    } else {
        start_with_pipes(env)
    };
    let mut running = match running {
        Ok(r) => r,
        Err(e) => {
            drop(raw);
            return Err(format!("cannot start the session's shell: {e}"));
        }
    };

    let mut krl_failures = 0u32;
    let mut exited_at: Option<Instant> = None;
    let ending = loop {
        let now = wall_now();
        let revoked = match watch.look(cert_file) {
            Verdict::Listed => true,
            Verdict::NotListed => {
                krl_failures = 0;
                false
            }
            Verdict::Unknown(_) => {
                krl_failures += 1;
                krl_failures >= KRL_FAILURES_BEFORE_END
            }
        };
        if let Some(ending) = ssh_session::must_end(admitted.valid_before, revoked, now) {
            break ending;
        }
        if exited_at.is_none() && matches!(running.child.try_wait(), Ok(Some(_))) {
            exited_at = Some(Instant::now());
        }
        if let Some(at) = exited_at {
            if running.open_streams == 0 || at.elapsed() >= DRAIN {
                break Ending::Exited;
            }
        }
        if let (Some(master), Some(before)) = (&running.master, size) {
            if let Ok(now_size) = termios::tcgetwinsize(stdin.as_fd()) {
                if (now_size.ws_row, now_size.ws_col) != (before.ws_row, before.ws_col) {
                    let _ = termios::tcsetwinsize(master, now_size);
                    size = Some(now_size);
                }
            }
        }
        let wait = ssh_session::next_look(admitted.valid_before, now, POLL);
        let wait = if exited_at.is_some() {
            wait.min(Duration::from_millis(20))
        } else {
            wait
        };
        match running.rx.recv_timeout(wait) {
            Ok(message) => {
                take(&mut recorder, &mut running, start, message);
                while let Ok(more) = running.rx.try_recv() {
                    take(&mut recorder, &mut running, start, more);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => running.open_streams = 0,
        }
    };

    let message = ending.message(&admitted.request);
    if !message.is_empty() {
        let mut to_user: Box<dyn Write> = if interactive {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::io::stderr())
        };
        let _ = write!(to_user, "\r\n{message}\r\n");
        let _ = to_user.flush();
    }
    end_group(&mut running);
    let exit_code = match (ending, running.child.try_wait()) {
        (Ending::Exited, Ok(Some(status))) => status.code().unwrap_or(1),
        _ => 1,
    };
    // What the child wrote before it ended, within a short bound.
    let deadline = Instant::now() + DRAIN;
    while running.open_streams > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match running.rx.recv_timeout(left) {
            Ok(message) => take(&mut recorder, &mut running, start, message),
            Err(_) => break,
        }
    }
    // The user's terminal mode comes back only now: output relayed after
    // it would be translated (`\n` to `\r\n`) and differ from the recording.
    drop(raw);
    let ended_at = wall_now();
    let recording = recorder.finish(start.elapsed());
    let upload = SessionUpload {
        id: session_id.to_owned(),
        host: config.host.clone(),
        user: env.user.clone().unwrap_or_else(|| "unknown".to_owned()),
        client: env.client(),
        command: env.command.clone(),
        started_at: started_at.to_rfc3339(),
        ended_at: ended_at.to_rfc3339(),
        ending: ending.as_str().to_owned(),
        recording: recording.text,
        cut: recording.cut,
    };
    let spooled = crate::spool::keep(
        config,
        &Spooled {
            request: admitted.request.to_string(),
            upload,
        },
        started_at,
    );
    let spooled = match spooled {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!("airlock-session: the session's record was not kept: {e}");
            None
        }
    };
    Ok(Outcome {
        ending,
        exit_code,
        spooled,
    })
}

fn take(recorder: &mut Recorder, running: &mut Running, start: Instant, message: Relay) {
    match message {
        Relay::Output(at, bytes) => recorder.output(at.saturating_duration_since(start), &bytes),
        Relay::Closed => running.open_streams = running.open_streams.saturating_sub(1),
    }
}

/// 16 random bytes as hex: names the session's record, so a resend is
/// the same session.
fn new_session_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = bytes.get_mut(filled..).unwrap_or_default();
        match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(e) => return Err(format!("cannot draw a session id: {e}")),
        }
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
