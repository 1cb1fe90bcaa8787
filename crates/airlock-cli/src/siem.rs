//! `airlock audit export`: ships the audit chain to a SIEM, oldest first,
//! resuming where it stopped — as JSON lines (to a file or stdout) or as
//! syslog messages (RFC 5424) over UDP (RFC 5426) or TCP (RFC 6587,
//! octet-counted). Delivery is at least once: events are written and
//! flushed before the cursor file moves past them, so a shipper that dies
//! in between sends a few again; each carries its `seq` and `hash`, which
//! is what a SIEM deduplicates on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_server::api::{AuditEventView, AuditExportQuery};
use airlock_server::client::Client;
use std::io::Write as _;

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;

/// The events one call asks for.
const BATCH: u32 = 500;
/// The syslog facility: 13, "log audit" (RFC 5424 §6.2.1).
const FACILITY_LOG_AUDIT: u8 = 13;
/// Severity 5, "notice": normal but significant.
const SEVERITY_NOTICE: u8 = 5;
/// RFC 5424 wants an SD-ID of our own qualified by an enterprise number;
/// Airlock has none, so it uses the number RFC 5612 sets aside for
/// documentation and examples.
const SD_ID: &str = "airlock@32473";

/// Where events go.
pub enum Sink {
    /// JSON lines, appended to a file, or to stdout.
    Lines(Box<dyn std::io::Write + Send>),
    /// One RFC 5424 message per datagram.
    Udp(tokio::net::UdpSocket),
    /// RFC 5424 messages framed by octet counting.
    Tcp(tokio::net::TcpStream),
}

impl Sink {
    /// `--output FILE` (appended to), `--syslog udp://HOST:PORT` or
    /// `tcp://HOST:PORT`, or stdout.
    pub async fn open(output: Option<&Path>, syslog: Option<&str>) -> anyhow::Result<Sink> {
        match (output, syslog) {
            (Some(_), Some(_)) => bail!("--output and --syslog: choose one"),
            (Some(path), None) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open `{}`", path.display()))?;
                Ok(Sink::Lines(Box::new(std::io::BufWriter::new(file))))
            }
            (None, Some(url)) => {
                let (scheme, addr) = url.split_once("://").with_context(|| {
                    format!("--syslog `{url}`: expected udp://HOST:PORT or tcp://HOST:PORT")
                })?;
                match scheme {
                    "udp" => {
                        let local = if addr.starts_with('[') {
                            "[::]:0"
                        } else {
                            "0.0.0.0:0"
                        };
                        let socket = tokio::net::UdpSocket::bind(local).await?;
                        socket
                            .connect(addr)
                            .await
                            .with_context(|| format!("--syslog `{url}`"))?;
                        Ok(Sink::Udp(socket))
                    }
                    "tcp" => Ok(Sink::Tcp(
                        tokio::net::TcpStream::connect(addr)
                            .await
                            .with_context(|| format!("--syslog `{url}`: cannot connect"))?,
                    )),
                    _ => bail!("--syslog `{url}`: the scheme must be udp or tcp"),
                }
            }
            (None, None) => Ok(Sink::Lines(Box::new(std::io::stdout()))),
        }
    }

    async fn send(&mut self, event: &AuditEventView, host: &str) -> anyhow::Result<()> {
        match self {
            Sink::Lines(out) => {
                // Escaped like every JSON the CLI prints: no terminal
                // control or bidirectional override reaches a reader as is.
                let line = crate::terminal::json_safe(&serde_json::to_string(event)?);
                writeln!(out, "{line}")?;
            }
            Sink::Udp(socket) => {
                socket.send(rfc5424(event, host)?.as_bytes()).await?;
            }
            Sink::Tcp(stream) => {
                let message = rfc5424(event, host)?;
                let framed = format!("{} {message}", message.len());
                stream.write_all(framed.as_bytes()).await?;
            }
        }
        Ok(())
    }

    /// Everything sent so far is out of this process (handed to the OS).
    async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Lines(out) => {
                out.flush()?;
            }
            Sink::Tcp(stream) => stream.flush().await?,
            Sink::Udp(_) => {}
        }
        Ok(())
    }
}

/// One event as an RFC 5424 message: facility log audit, severity notice,
/// the event's time, this host, `airlock`, the action as MSGID, `seq`,
/// `hash` and `request` as structured data, and the event as JSON in MSG.
pub fn rfc5424(event: &AuditEventView, host: &str) -> anyhow::Result<String> {
    let pri = u16::from(FACILITY_LOG_AUDIT) * 8 + u16::from(SEVERITY_NOTICE);
    // MSGID: 1 to 32 printable US-ASCII characters.
    let msgid: String = event
        .action
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    let msgid = if msgid.is_empty() {
        "-".to_owned()
    } else {
        msgid
    };
    let mut sd = format!(
        "[{SD_ID} seq=\"{}\" hash=\"{}\"",
        event.seq,
        sd_escape(&event.hash)
    );
    if let Some(r) = &event.request {
        sd.push_str(&format!(" request=\"{}\"", sd_escape(r)));
    }
    sd.push(']');
    Ok(format!(
        "<{pri}>1 {} {} airlock - {msgid} {sd} {}",
        event.at,
        host,
        serde_json::to_string(event)?
    ))
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 §6.3.3).
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// This machine's name for the HOSTNAME field (`-` when unknown), in the
/// printable ASCII RFC 5424 allows.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

/// The `seq` a cursor file says was shipped last (0 when it does not exist).
fn read_cursor(path: &Path) -> anyhow::Result<i64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().with_context(|| {
            format!(
                "cursor file `{}` does not hold a sequence number",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
}

/// Moves the cursor file to `seq`, whole or not at all (written aside, then
/// renamed over it).
fn write_cursor(path: &Path, seq: i64) -> anyhow::Result<()> {
    let aside = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&aside, format!("{seq}\n"))
        .with_context(|| format!("cannot write `{}`", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("cannot replace `{}`", path.display()))
}

/// What one export does.
pub struct Export {
    /// Start after this `seq` (instead of the cursor file's).
    pub after: Option<i64>,
    pub cursor: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub syslog: Option<String>,
    /// Keep going, asking for new events every `interval`, until stopped.
    pub follow: bool,
    pub interval: Duration,
}

/// Ships every event after the cursor, batch by batch; with `follow`, then
/// waits for more. Says on stderr how many it shipped and up to where.
pub async fn export(client: &Client, options: Export) -> anyhow::Result<()> {
    let mut after = match (options.after, &options.cursor) {
        (Some(after), _) => after,
        (None, Some(path)) => read_cursor(path)?,
        (None, None) => 0,
    };
    let mut sink = Sink::open(options.output.as_deref(), options.syslog.as_deref()).await?;
    let host = hostname();
    let mut shipped = 0usize;
    loop {
        let events = client
            .audit_export(&AuditExportQuery {
                after,
                limit: Some(BATCH),
            })
            .await?;
        for event in &events {
            sink.send(event, &host).await?;
        }
        sink.flush().await?;
        if let Some(last) = events.last() {
            after = last.seq;
            shipped += events.len();
            if let Some(path) = &options.cursor {
                write_cursor(path, after)?;
            }
        }
        if events.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            if !options.follow {
                break;
            }
            tokio::time::sleep(options.interval).await;
        }
    }
    crate::terminal::say_err!("shipped {shipped} audit event(s), up to seq {after}");
    Ok(())
}
