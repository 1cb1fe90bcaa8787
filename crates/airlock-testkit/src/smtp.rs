//! A real SMTP server on loopback for tests of email notifications:
//! `aiosmtpd` (PyPI; `.ci/run` installs the pinned version) with a handler
//! that appends each accepted message to a file as a JSON line. It can be
//! stopped and started again on the same port, to play a mail server that
//! is down for a while.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HANDLER: &str = include_str!("smtp_sink.py");

pub struct SmtpSink {
    python: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl SmtpSink {
    /// Starts the server on a free loopback port, or returns `None` after
    /// saying why the test skips (Python or aiosmtpd missing; a failure
    /// where `AIRLOCK_REQUIRE_SERVICES=1`).
    ///
    /// # Panics
    /// When it cannot be started though it is installed.
    #[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
    pub fn start(dir: &std::path::Path) -> Option<SmtpSink> {
        let python = crate::service_program("python3")?;
        let installed = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("the Python module `aiosmtpd` is not installed but AIRLOCK_REQUIRE_SERVICES=1: this test must not skip (pip install aiosmtpd; .ci/run pins it)");
            }
            crate::announce_skip("the Python module `aiosmtpd` is not installed");
            return None;
        }
        std::fs::write(dir.join("airlock_smtp_sink.py"), HANDLER)
            .unwrap_or_else(|e| panic!("cannot write the smtp handler: {e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut sink = SmtpSink {
            python,
            dir: dir.to_owned(),
            port,
            child: None,
        };
        sink.resume();
        Some(sink)
    }

    /// The file messages are appended to.
    pub fn log(&self) -> PathBuf {
        self.dir.join("mail.jsonl")
    }

    /// Every message received so far, one JSON document each.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The subjects of the mails `to` received, in order, header lines the
    /// sender folded joined again.
    pub fn subjects(&self, to: &str) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|line| {
                let m: serde_json::Value = serde_json::from_str(line).ok()?;
                let mut rcpt = m.get("rcpt_tos")?.as_array()?.iter();
                if !rcpt.any(|a| a.as_str() == Some(to)) {
                    return None;
                }
                let mut lines = m
                    .get("data")?
                    .as_str()?
                    .split("\r\n")
                    .skip_while(|l| !l.starts_with("Subject: "));
                let mut subject = lines.next()?.strip_prefix("Subject: ")?.to_owned();
                for more in lines.take_while(|l| l.starts_with([' ', '\t'])) {
                    subject.push_str(more);
                }
                Some(subject)
            })
            .collect()
    }

    /// Stops the server; its port refuses connections until [`SmtpSink::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port and waits until it answers.
    ///
    /// # Panics
    /// When it does not answer within 20 seconds.
    #[expect(clippy::panic, reason = "a test helper: failing the test is the point")]
    pub fn resume(&mut self) {
        self.stop();
        let child = Command::new(&self.python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "airlock_smtp_sink.Sink"])
            .arg(self.log())
            .env("PYTHONPATH", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start aiosmtpd: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                panic!("aiosmtpd did not listen on port {} within 20 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
