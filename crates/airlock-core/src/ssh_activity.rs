//! sshd's log lines on a grant's timeline. Airlock's SSH certificates carry
//! the request id as their key id, so sshd's `Accepted publickey … ID <request
//! id> (serial N) …` ties a login to its request; the same session's
//! disconnect line (same user, client address and port) ends it. A log
//! shipper on the SSH host posts the lines (`POST /v1/grants/{id}/activity`);
//! this module reads them — which are logins and logouts of this grant,
//! which name another request (refused), which say nothing here (ignored) —
//! and decides the audit events, within a bound per grant so one reporter
//! cannot flood the hash chain.
//!
//! A line is read only in the shapes sshd writes (bare, as `sshd -e` and
//! `journalctl -o cat` give it, or after a syslog header ending in
//! `sshd[PID]: ` or `sshd-session[PID]: `), its message must *start* with
//! the phrase, and a login must *end* as sshd ends one (the CA's key type
//! and fingerprint): a client chooses the user name it offers, and sshd
//! logs an unknown one inside its own lines (`Invalid user NAME from ADDR
//! port N`), so a phrase found further in, or one followed by more, could
//! be a forgery. User names hold no space (sshd's accounts never do; a
//! forged one would).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::User;
use crate::request::{AccessRequest, Rejection, State};
use crate::text::{self, TextKind};
use crate::time::{human_duration, Timestamp};

/// Most lines one post may carry.
pub const MAX_LINES: usize = 500;
/// Longest line taken, in characters (sshd's own lines stay far below).
pub const MAX_LINE_CHARS: usize = 2_000;
/// Longest `source` (the host or shipper the lines come from).
pub const MAX_SOURCE_CHARS: usize = 200;
/// Most `ssh_login`/`ssh_logout` events one grant gets; lines past it are
/// counted, not recorded.
pub const MAX_EVENTS_PER_GRANT: usize = 500;
/// How long after a grant ended its lines are still taken: an SSH session
/// outlives the certificate's revocation (sshd checks the KRL at login
/// only), and shippers deliver late.
pub const LATE_LINES_WITHIN: Duration = Duration::from_secs(24 * 3600);
/// Most of a syslog header kept (`logged`).
const MAX_HEADER_CHARS: usize = 100;

/// One session as sshd names it: the account, the client's address and
/// port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub user: String,
    pub client: String,
    pub port: u16,
}

/// `Accepted publickey for USER from ADDR port N ssh2: TYPE FP [ID KEYID
/// (serial N) CA TYPE FP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub session: Endpoint,
    /// The key's type and fingerprint (`ED25519-CERT SHA256:…`).
    pub key: String,
    /// The certificate's key id and serial; `None` for a plain key.
    pub certificate: Option<(String, u64)>,
    /// The signing CA's type and fingerprint.
    pub ca: Option<String>,
}

/// How a session ended, as sshd says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `Disconnected from user …`: a disconnect message (the client's
    /// `exit`, or sshd's).
    Disconnected,
    /// `Connection closed by user …`.
    Closed,
    /// `Connection reset by user …`.
    Reset,
    /// `Timeout, client not responding from user …` or `Connection from
    /// user … timed out`.
    TimedOut,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Disconnected => "disconnected",
            Ending::Closed => "connection closed",
            Ending::Reset => "connection reset",
            Ending::TimedOut => "timed out",
        }
    }
}

/// What a line says, as far as a grant's timeline goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshdLine {
    Login {
        login: Login,
        /// The syslog header before the message (its time, host, pid).
        header: Option<String>,
    },
    Logout {
        session: Endpoint,
        ending: Ending,
        header: Option<String>,
    },
    /// Anything else: other sshd messages, other programs, noise.
    Other,
}

/// Reads one log line.
pub fn parse_line(line: &str) -> SshdLine {
    let (header, message) = split_header(line.trim_end());
    if let Some(rest) = message.strip_prefix("Accepted publickey for ") {
        return match parse_login(rest) {
            Some(login) => SshdLine::Login { login, header },
            None => SshdLine::Other,
        };
    }
    let endings = [
        ("Disconnected from user ", "", Ending::Disconnected),
        ("Connection closed by user ", "", Ending::Closed),
        ("Connection reset by user ", "", Ending::Reset),
        (
            "Timeout, client not responding from user ",
            "",
            Ending::TimedOut,
        ),
        ("Connection from user ", " timed out", Ending::TimedOut),
    ];
    for (prefix, suffix, ending) in endings {
        let Some(rest) = message
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
        else {
            continue;
        };
        return match parse_remote(rest) {
            Some(session) => SshdLine::Logout {
                session,
                ending,
                header,
            },
            None => SshdLine::Other,
        };
    }
    SshdLine::Other
}

/// The syslog header (`… sshd[PID]`) and the message after it; a line
/// without such a header is all message.
fn split_header(line: &str) -> (Option<String>, &str) {
    let Some((head, message)) = line.split_once("]: ") else {
        return (None, line);
    };
    let program = head
        .rsplit_once('[')
        .filter(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .map(|(before, _pid)| before)
        .and_then(|before| before.rsplit(' ').next());
    match program {
        Some("sshd" | "sshd-session") => {
            let kept: String = head.chars().take(MAX_HEADER_CHARS).collect();
            (Some(format!("{kept}]")), message)
        }
        _ => (None, line),
    }
}

/// `USER ADDR port N`, read from the right (the port and address hold no
/// space; the user name is what is left).
fn parse_remote(rest: &str) -> Option<Endpoint> {
    let (left, port) = rest.rsplit_once(" port ")?;
    let (user, client) = left.rsplit_once(' ')?;
    endpoint(user, client, port)
}

fn endpoint(user: &str, client: &str, port: &str) -> Option<Endpoint> {
    if user.is_empty() || client.is_empty() || user.contains(' ') || client.contains(' ') {
        return None;
    }
    Some(Endpoint {
        user: user.to_owned(),
        client: client.to_owned(),
        port: port.parse().ok()?,
    })
}

/// `USER from ADDR port N ssh2: TYPE FP [ID KEYID (serial N) CA TYPE FP]`.
fn parse_login(rest: &str) -> Option<Login> {
    let (who, key) = rest.split_once(" ssh2: ")?;
    let (left, port) = who.rsplit_once(" port ")?;
    let (user, client) = left.rsplit_once(" from ")?;
    let session = endpoint(user, client, port)?;
    let mut words = key.splitn(3, ' ');
    let key_type = words.next()?;
    let fingerprint = words.next()?;
    let key = format!("{key_type} {fingerprint}");
    let Some(cert) = words.next().and_then(|c| c.strip_prefix("ID ")) else {
        return Some(Login {
            session,
            key,
            certificate: None,
            ca: None,
        });
    };
    let (key_id, after) = cert.rsplit_once(" (serial ")?;
    let (serial, tail) = after.split_once(')')?;
    // Nothing after the CA's key type and fingerprint, as sshd ends it.
    let ca = match tail {
        "" => None,
        tail => {
            let ca = tail.strip_prefix(" CA ")?;
            let mut words = ca.split(' ');
            let (_type, _fingerprint) = (words.next()?, words.next()?);
            if words.next().is_some() {
                return None;
            }
            Some(ca.to_owned())
        }
    };
    Some(Login {
        session,
        key,
        certificate: Some((key_id.to_owned(), serial.parse().ok()?)),
        ca,
    })
}

/// A session's identity on a timeline: where the lines came from and
/// sshd's endpoint.
type SessionKey = (String, Endpoint);

/// What a grant's timeline already holds of sshd's activity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    logins: BTreeSet<SessionKey>,
    logouts: BTreeSet<SessionKey>,
    events: usize,
}

impl Recorded {
    /// Read back from the grant's stored `ssh_login`/`ssh_logout` events
    /// (action and details; any other event is passed over).
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
    ) -> Recorded {
        let mut recorded = Recorded::default();
        for (action, details) in events {
            let set = if action == AuditAction::SshLogin.as_str() {
                &mut recorded.logins
            } else if action == AuditAction::SshLogout.as_str() {
                &mut recorded.logouts
            } else {
                continue;
            };
            recorded.events += 1;
            let get = |k: &str| details.get(k).map(String::as_str).unwrap_or_default();
            if let Some(session) = endpoint(get("user"), get("client"), get("port")) {
                set.insert((get("source").to_owned(), session));
            }
        }
        recorded
    }

    /// How many activity events the grant has.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Logins whose logout is not on the timeline (yet): sessions open.
    pub fn open_sessions(&self) -> usize {
        self.logins.difference(&self.logouts).count()
    }
}

/// What a post of lines comes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// The events to append, in the lines' order.
    pub events: Vec<AuditEvent>,
    /// Lines that are no login or logout of this grant (other messages, a
    /// plain key's login, a logout of a session this grant never had).
    pub ignored: usize,
    /// Logins and logouts already on the timeline (a shipper's retry).
    pub duplicates: usize,
    /// Logins and logouts past [`MAX_EVENTS_PER_GRANT`], not recorded.
    pub over_limit: usize,
}

/// Whether lines about `request` are still taken at `now`: while it is
/// active, and for [`LATE_LINES_WITHIN`] after it ended.
pub fn takes_lines(request: &AccessRequest, now: Timestamp) -> Result<(), Rejection> {
    let until = match (request.state, request.ended_at) {
        (State::Active, _) => return Ok(()),
        (State::Expired | State::Released | State::Revoked, Some(ended)) => {
            ended.plus(LATE_LINES_WITHIN)
        }
        (state, _) => {
            return Err(Rejection::Conflict(format!(
                "`{}` is {}: log lines are taken only for a grant that is active or ended within the last {}",
                request.id,
                state.as_str(),
                human_duration(LATE_LINES_WITHIN)
            )))
        }
    };
    if now > until {
        return Err(Rejection::Conflict(format!(
            "`{}` ended more than {} ago: its log lines were taken until {}",
            request.id,
            human_duration(LATE_LINES_WITHIN),
            until.to_rfc3339()
        )));
    }
    Ok(())
}

/// Why a post was refused: the field at fault (`source`, `lines`,
/// `lines[3]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LineRefusal {
    pub field: String,
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> LineRefusal {
    LineRefusal {
        field: field.into(),
        message: message.into(),
    }
}

/// The events `lines` from `source` add to `request`'s timeline, given
/// what it holds already; `by` is the reporter. Every line passes the text
/// rule first, and a login whose certificate names another request refuses
/// the whole post, naming the line: nothing is recorded.
pub fn report(
    request: &AccessRequest,
    by: &User,
    source: &str,
    lines: &[String],
    before: &Recorded,
    now: Timestamp,
) -> Result<Reported, LineRefusal> {
    text::check(source, TextKind::Line, MAX_SOURCE_CHARS)
        .map_err(|e| refuse("source", e.to_string()))?;
    if source.trim().is_empty() {
        return Err(refuse(
            "source",
            "must name where the lines come from (the SSH host)",
        ));
    }
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(refuse(
            "lines",
            format!("must hold between 1 and {MAX_LINES} lines"),
        ));
    }
    let mut parsed = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let field = || format!("lines[{index}]");
        text::check(line, TextKind::Line, MAX_LINE_CHARS)
            .map_err(|e| refuse(field(), e.to_string()))?;
        let read = parse_line(line);
        if let SshdLine::Login {
            login:
                Login {
                    certificate: Some((key_id, _)),
                    ..
                },
            ..
        } = &read
        {
            if key_id != request.id.as_str() {
                return Err(refuse(
                    field(),
                    format!(
                        "a login with a certificate for `{key_id}`, not `{}`: post it to that request",
                        request.id
                    ),
                ));
            }
        }
        parsed.push(read);
    }

    // A logout belongs to this grant when its session's login was recorded
    // before or comes in the same post, wherever in it: shippers need not
    // keep lines in order, and a post sent again then records nothing new.
    let posted_logins: BTreeSet<SessionKey> = parsed
        .iter()
        .filter_map(|read| match read {
            SshdLine::Login {
                login:
                    Login {
                        session,
                        certificate: Some(_),
                        ..
                    },
                ..
            } => Some((source.to_owned(), session.clone())),
            _ => None,
        })
        .collect();
    let mut logins = before.logins.clone();
    let mut logouts = before.logouts.clone();
    let mut room = MAX_EVENTS_PER_GRANT.saturating_sub(before.events);
    let mut out = Reported::default();
    let event = |action: AuditAction, details: BTreeMap<String, String>| AuditEvent {
        at: now,
        actor: Actor::of(by),
        action,
        request: Some(request.id.clone()),
        entitlement: Some(request.entitlement.clone()),
        subject: Some(request.requester.clone()),
        details,
    };
    let base = |session: &Endpoint, header: &Option<String>| {
        let mut details = BTreeMap::from([
            ("source".to_owned(), source.to_owned()),
            ("user".to_owned(), session.user.clone()),
            ("client".to_owned(), session.client.clone()),
            ("port".to_owned(), session.port.to_string()),
        ]);
        if let Some(h) = header {
            details.insert("logged".to_owned(), h.clone());
        }
        details
    };
    for read in parsed {
        let (key, action, details) = match read {
            SshdLine::Login {
                login:
                    Login {
                        session,
                        key,
                        certificate: Some((_, serial)),
                        ca,
                    },
                header,
            } => {
                let mut details = base(&session, &header);
                details.insert("serial".to_owned(), serial.to_string());
                details.insert("key".to_owned(), key);
                if let Some(ca) = ca {
                    details.insert("ca".to_owned(), ca);
                }
                ((source.to_owned(), session), AuditAction::SshLogin, details)
            }
            SshdLine::Logout {
                session,
                ending,
                header,
            } => {
                let key = (source.to_owned(), session);
                if !logins.contains(&key) && !posted_logins.contains(&key) {
                    // Not a session of this grant (or its login never came).
                    out.ignored += 1;
                    continue;
                }
                let mut details = base(&key.1, &header);
                details.insert("how".to_owned(), ending.as_str().to_owned());
                (key, AuditAction::SshLogout, details)
            }
            SshdLine::Login { .. } | SshdLine::Other => {
                out.ignored += 1;
                continue;
            }
        };
        let seen = if action == AuditAction::SshLogin {
            &mut logins
        } else {
            &mut logouts
        };
        if seen.contains(&key) {
            out.duplicates += 1;
            continue;
        }
        // Known from here on even when not recorded, so its logout counts
        // as over the limit too rather than as a stranger's.
        seen.insert(key);
        if room == 0 {
            out.over_limit += 1;
            continue;
        }
        room -= 1;
        out.events.push(event(action, details));
    }
    Ok(out)
}
