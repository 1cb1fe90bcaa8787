//! A real OpenSSH server for tests, because what an SSH certificate grant
//! is worth is decided by sshd: whether it trusts the certificate for the
//! mapped account, and whether it refuses it once the KRL lists it. The
//! connector's tests and the server's end-to-end test drive the same sshd the
//! same way, so the harness lives here once.
//!
//! The harness is synchronous on purpose: it drives other processes, and
//! nothing in the test's own process serves them, so blocking the test for
//! one login (each step bounded by a deadline) holds nothing up.

#![expect(clippy::panic, reason = "a test helper: failing the test is the point")]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::service_program;

/// How long sshd may take to answer on its port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `ssh` login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sshd may take to log a line after the client has exited.
const LOG_TIMEOUT: Duration = Duration::from_secs(2);

/// The OpenSSH programs these tests drive.
pub struct OpenSsh {
    /// `/usr/sbin/sshd`.
    pub sshd: PathBuf,
    /// `ssh`, from `PATH`.
    pub ssh: PathBuf,
    /// `ssh-keygen`, from `PATH`.
    pub keygen: PathBuf,
}

impl OpenSsh {
    /// All three programs, or `None` after [`service_program`] has said which
    /// one is missing (and panics instead where `AIRLOCK_REQUIRE_SERVICES=1`).
    pub fn find() -> Option<OpenSsh> {
        Some(OpenSsh {
            sshd: service_program("/usr/sbin/sshd")?,
            ssh: service_program("ssh")?,
            keygen: service_program("ssh-keygen")?,
        })
    }

    /// The validity window `ssh-keygen -L` reads from a certificate file,
    /// as `(from, to)` in UTC (`2026-12-06T10:00:00`).
    ///
    /// # Panics
    /// When ssh-keygen cannot run or prints no window.
    pub fn validity(&self, certificate: &Path) -> (String, String) {
        let out = Command::new(&self.keygen)
            .arg("-L")
            .arg("-f")
            .arg(certificate)
            .env("TZ", "UTC")
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Valid: from "))
            .and_then(|l| l.split_once(" to "))
            .map(|(from, to)| (from.to_owned(), to.to_owned()))
            .unwrap_or_else(|| panic!("no validity in `ssh-keygen -L`: {text}"))
    }

    /// A new Ed25519 key pair from `ssh-keygen`, unencrypted, at `path` and
    /// `path.pub`.
    pub fn new_key(&self, path: &Path) -> UserKey {
        let status = Command::new(&self.keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "airlock-test", "-f"])
            .arg(path)
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
        assert!(status.success(), "ssh-keygen failed: {status}");
        let public_path = PathBuf::from(format!("{}.pub", path.display()));
        let public = std::fs::read_to_string(&public_path)
            .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", public_path.display()));
        UserKey {
            path: path.to_owned(),
            public: public.trim().to_owned(),
        }
    }
}

/// A key pair on disk: `path` is the private key ssh is given, `public` the
/// line a requester sends.
pub struct UserKey {
    /// The private key file, mode 0600 as ssh insists.
    pub path: PathBuf,
    /// The public key in OpenSSH's one-line format.
    pub public: String,
}

impl UserKey {
    /// Writes `certificate` where ssh looks for it, `<key>-cert.pub`, and
    /// returns that path.
    pub fn write_certificate(&self, certificate: &str) -> PathBuf {
        let path = PathBuf::from(format!("{}-cert.pub", self.path.display()));
        write(&path, &format!("{certificate}\n"));
        path
    }
}

/// Whom an [`Sshd`] lets in: certificates signed by one CA for one
/// principal, which it maps to the current unix user, unless a KRL lists
/// them.
pub struct Trust<'a> {
    /// The CA's public key file (`TrustedUserCAKeys`).
    pub ca_public_key: &'a Path,
    /// The principal the `AuthorizedPrincipalsFile` maps to the current user.
    pub principal: &'a str,
    /// The key revocation list, read on every login (`RevokedKeys`).
    pub krl: &'a Path,
}

/// A real sshd on a free port of 127.0.0.1, with a host key of its own, that
/// logs to memory. Killed on drop.
pub struct Sshd {
    child: Child,
    port: u16,
    ssh: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Sshd {
    /// Writes a host key and a config under `dir/sshd`, starts sshd and waits
    /// until it answers with its banner.
    ///
    /// # Panics
    /// When sshd exits or does not listen in time, with what it logged.
    pub fn start(tools: &OpenSsh, dir: &Path, trust: &Trust<'_>) -> Sshd {
        Sshd::start_with(tools, dir, trust, "")
    }

    /// [`Sshd::start`] with `extra` lines at the end of sshd's config (e.g.
    /// `ExposeAuthInfo yes` and a `ForceCommand`).
    pub fn start_with(tools: &OpenSsh, dir: &Path, trust: &Trust<'_>, extra: &str) -> Sshd {
        let dir = dir.join("sshd");
        let principals = dir.join("principals");
        create_dir(&principals);
        let host_key = tools.new_key(&dir.join("host_ed25519")).path;
        write(
            &principals.join(current_unix_user()),
            &format!("{}\n", trust.principal),
        );
        let config = dir.join("sshd_config");
        // `UsePAM no` makes sshd check the account itself: a password field
        // starting with `!` (locked) would refuse the login; root's `*` is
        // fine. `StrictModes no` accepts the temporary folders.
        write(
            &config,
            &format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 TrustedUserCAKeys {ca_pub}\n\
                 AuthorizedPrincipalsFile {principals}/%u\n\
                 RevokedKeys {krl}\n\
                 AuthorizedKeysFile none\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 UseDNS no\n\
                 LogLevel INFO\n\
                 {extra}\n",
                host_key = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                ca_pub = trust.ca_public_key.display(),
                principals = principals.display(),
                krl = trust.krl.display(),
            ),
        );
        // sshd insists on its privilege separation directory when run as root.
        let _ = std::fs::create_dir_all("/run/sshd");

        let port = free_port();
        let mut child = Command::new(&tools.sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut sshd = Sshd {
            child,
            port,
            ssh: tools.ssh.clone(),
            log,
        };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}:\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything sshd has logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `needle` shows in the log within a short wait: sshd may write
    /// the line just after the client has exited.
    pub fn log_contains(&self, needle: &str) -> bool {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Logs in as the current user with `key` and `certificate` (and nothing
    /// else: no agent, no config, no known hosts) and runs `true`; `Err`
    /// carries what ssh said.
    ///
    /// # Panics
    /// When ssh cannot run or does not finish in time.
    pub fn login(&self, key: &UserKey, certificate: &Path) -> Result<(), String> {
        let mut child = self
            .ssh_command(key, certificate, false)
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
        let said = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut said = String::new();
                let _ = stderr.read_to_string(&mut said);
                said
            })
        });
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("ssh did not finish within {LOGIN_TIMEOUT:?}");
                }
                Err(e) => panic!("cannot wait for ssh: {e}"),
            }
        };
        let said = said
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(said)
        }
    }

    /// Opens a session as the current user with `key` and `certificate`
    /// running `command` (none: the login shell), with a pseudo-terminal
    /// when `tty` (`ssh -tt`); what it prints is collected as it comes, and
    /// its input is a pipe the test writes to.
    pub fn open_session(
        &self,
        key: &UserKey,
        certificate: &Path,
        command: Option<&str>,
        tty: bool,
    ) -> SshSession {
        let mut cmd = self.ssh_command(key, certificate, tty);
        if let Some(command) = command {
            cmd.arg(command);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ssh: {e}"));
        let output: Arc<Output> = Arc::default();
        output.lock().open_streams = 2;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            let mut stream = stream;
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .bytes
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                    sink.changed.notify_all();
                }
                sink.lock().open_streams -= 1;
                sink.changed.notify_all();
            });
        }
        let stdin = child.stdin.take();
        SshSession {
            child,
            stdin,
            output,
        }
    }

    /// `ssh` with only `key` and `certificate` (no agent, no config, no
    /// known hosts) to this sshd as the current user.
    fn ssh_command(&self, key: &UserKey, certificate: &Path, tty: bool) -> Command {
        let mut command = Command::new(&self.ssh);
        command
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(&key.path)
            .arg("-o")
            .arg(format!("CertificateFile={}", certificate.display()))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                "-p",
            ])
            .arg(self.port.to_string())
            .env_remove("SSH_AUTH_SOCK");
        if tty {
            command.arg("-tt");
        }
        command.arg(format!("{}@127.0.0.1", current_unix_user()));
        command
    }

    /// Logs in, or fails the test with `context`, what ssh said and sshd's
    /// log.
    pub fn assert_logs_in(&self, key: &UserKey, certificate: &Path, context: &str) {
        if let Err(said) = self.login(key, certificate) {
            panic!("{context}: {said}\nsshd:\n{}", self.log());
        }
    }

    /// Fails the test unless the login is refused and sshd logs `reason`;
    /// `what` names the certificate in the failure.
    pub fn assert_refused(&self, key: &UserKey, certificate: &Path, what: &str, reason: &str) {
        assert!(self.login(key, certificate).is_err(), "{what} logged in");
        assert!(
            self.log_contains(reason),
            "sshd did not refuse {what} with `{reason}`:\n{}",
            self.log()
        );
    }

    /// Fails the test unless sshd logs `needle` (within [`Sshd::log_contains`]'s
    /// wait).
    pub fn assert_logged(&self, needle: &str) {
        assert!(
            self.log_contains(needle),
            "sshd log lacks `{needle}`:\n{}",
            self.log()
        );
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user sshd is to let in: whoever runs the test.
fn current_unix_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `id -un`: {e}"));
    assert!(out.status.success(), "`id -un` failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A port that was free a moment ago (the kernel picks it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

fn create_dir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", path.display()));
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write `{}`: {e}", path.display()));
}

/// What an `ssh` session printed and how many of its output streams are
/// still open, with word each time either changes.
#[derive(Default)]
struct Output {
    printed: Mutex<Printed>,
    changed: Condvar,
}

#[derive(Default)]
struct Printed {
    bytes: Vec<u8>,
    open_streams: usize,
}

impl Output {
    fn lock(&self) -> std::sync::MutexGuard<'_, Printed> {
        self.printed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits, at most `within`, until `done` holds of what was printed
    /// (woken by each read of the session's output, not on a timer);
    /// whether it does.
    fn wait_for(&self, within: Duration, done: impl Fn(&Printed) -> bool) -> bool {
        let (printed, _) = self
            .changed
            .wait_timeout_while(self.lock(), within, |p| !done(p))
            .unwrap_or_else(PoisonError::into_inner);
        done(&printed)
    }
}

/// An `ssh` session a test drives: input through a pipe, output collected.
/// Killed on drop.
pub struct SshSession {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    output: Arc<Output>,
}

impl SshSession {
    /// Everything the session printed so far (stdout and stderr), as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().bytes).into_owned()
    }

    /// Types `text` into the session.
    ///
    /// # Panics
    /// When the session's input is closed.
    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("input closed"));
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot type into the session: {e}"));
    }

    /// Whether `needle` shows in the output within `within`.
    pub fn shows(&self, needle: &str, within: Duration) -> bool {
        let needle = needle.as_bytes();
        self.output.wait_for(within, |p| {
            needle.is_empty() || p.bytes.windows(needle.len()).any(|w| w == needle)
        })
    }

    /// The exit status once ssh has ended, if it ends within `within`.
    pub fn ended_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // ssh's output closes when it ends: wait for that, then reap it.
        if !self.output.wait_for(within, |p| p.open_streams == 0) {
            return None;
        }
        self.child.wait().ok()
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
