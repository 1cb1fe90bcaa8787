//! SSH sessions run under Airlock's companion program (`airlock-session`,
//! sshd's `ForceCommand` on a host that trusts Airlock's CA): which
//! certificates it admits, when it must end a session, and what a recorded
//! session becomes on the request's history.
//!
//! sshd checks a certificate's validity and the KRL only at login; a session
//! opened during the grant would outlive it. The companion asks these rules
//! each time it looks (`must_end`) and ends the session itself; the server
//! takes its record (`POST /v1/requests/{id}/ssh-sessions`) through
//! [`accept`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::User;
use crate::ids::RequestId;
use crate::request::{AccessRequest, Rejection};
use crate::text::{self, TextKind};
use crate::time::{human_duration, Timestamp};

/// Most bytes of a session's recording (asciicast text) kept; output past
/// it is cut, and the record says how much.
pub const MAX_RECORDING_BYTES: usize = 1024 * 1024;
/// Longest host, user, client and command kept, in characters.
pub const MAX_FIELD_CHARS: usize = 2_000;
/// Longest note of what was not kept.
pub const MAX_CUT_CHARS: usize = 2_000;
/// Longest session id (chosen by the companion; it makes a resend of the
/// same session a duplicate).
pub const MAX_SESSION_ID_CHARS: usize = 64;

/// Why a certificate is not admitted by the companion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    #[error("the certificate's key id `{0}` names no Airlock request; this host admits only Airlock's SSH certificates")]
    NotAirlocks(String),
    #[error("the certificate expired at {0}")]
    Expired(String),
    #[error("the certificate is revoked")]
    Revoked,
}

/// The request a certificate is for: Airlock's SSH CA writes the request id
/// as the key id, and only an id of the shape Airlock gives requests counts
/// (the CA's own health check, `airlock-health-check`, does not; nor does a
/// key id some other CA chose).
pub fn request_of_key_id(key_id: &str) -> Result<RequestId, NotAdmitted> {
    RequestId::parse_generated(key_id).ok_or_else(|| {
        NotAdmitted::NotAirlocks(text::escape_for_terminal(
            &key_id.chars().take(80).collect::<String>(),
        ))
    })
}

/// Why a session was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The user's command or shell exited.
    Exited,
    /// The certificate's validity (the grant's expiry) ran out.
    Expired,
    /// The KRL lists the certificate: the grant was released or revoked.
    Revoked,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Exited => "exited",
            Ending::Expired => "expired",
            Ending::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Ending> {
        [Ending::Exited, Ending::Expired, Ending::Revoked]
            .into_iter()
            .find(|e| e.as_str() == raw)
    }

    /// What the user reads before the session is cut.
    pub fn message(self, request: &RequestId) -> String {
        match self {
            Ending::Exited => String::new(),
            Ending::Expired => {
                format!("airlock: the grant {request} has expired; this session ends now")
            }
            Ending::Revoked => format!(
                "airlock: the grant {request} was released or revoked; this session ends now"
            ),
        }
    }
}

/// Whether a session under a certificate valid before `valid_before` must
/// end at `now`, and why: at once when the KRL lists it, at its expiry
/// otherwise (sshd's rule: valid while `now < valid_before`). Revocation
/// wins when both hold, since it is the stronger word.
pub fn must_end(valid_before: Timestamp, revoked: bool, now: Timestamp) -> Option<Ending> {
    if revoked {
        Some(Ending::Revoked)
    } else if now >= valid_before {
        Some(Ending::Expired)
    } else {
        None
    }
}

/// How long the companion may wait before it looks again: its polling
/// interval, but never past the expiry, so a session ends at it and not up
/// to a poll later.
pub fn next_look(valid_before: Timestamp, now: Timestamp, poll: Duration) -> Duration {
    now.until(valid_before).min(poll)
}

/// Whether a certificate is admitted at login: an Airlock request's, not
/// expired, not revoked.
pub fn admit(
    key_id: &str,
    valid_before: Timestamp,
    revoked: bool,
    now: Timestamp,
) -> Result<RequestId, NotAdmitted> {
    let request = request_of_key_id(key_id)?;
    match must_end(valid_before, revoked, now) {
        Some(Ending::Revoked) => Err(NotAdmitted::Revoked),
        Some(_) => Err(NotAdmitted::Expired(valid_before.to_rfc3339())),
        None => Ok(request),
    }
}

/// A session as the companion reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// Chosen by the companion, so a resent report is the same session.
    pub id: String,
    /// The SSH host (its name as the companion was told or found it).
    pub host: String,
    /// The account the session ran as.
    pub user: String,
    /// `$SSH_CONNECTION`'s client address and port.
    pub client: String,
    /// The command asked for (`$SSH_ORIGINAL_COMMAND`); `None`: a shell.
    pub command: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub ending: Ending,
    /// The terminal output, asciicast v2 text.
    pub recording: String,
    /// What the companion could not keep, in its words.
    pub cut: Option<String>,
}

/// Why a session report was refused: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

fn refuse(field: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A report as it is kept: the recording within [`MAX_RECORDING_BYTES`],
/// what was cut (the companion's note and the server's), and the audit
/// event that puts it on the request's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub report: SessionReport,
    /// The recording's size as sent, in bytes.
    pub sent_bytes: usize,
    pub event: AuditEvent,
}

/// Checks a report of a session under `request` from `by` (a reporter: the
/// host's companion) at `now`: each field within its rules, the recording cut
/// at the last whole event line within the bound. The audit event names
/// the session and says what was cut.
pub fn accept(
    request: &AccessRequest,
    by: &User,
    mut report: SessionReport,
    now: Timestamp,
) -> Result<Accepted, Refusal> {
    let id_ok = !report.id.is_empty()
        && report.id.len() <= MAX_SESSION_ID_CHARS
        && report
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !id_ok {
        return Err(refuse(
            "id",
            format!("must be 1 to {MAX_SESSION_ID_CHARS} letters, digits or `-`"),
        ));
    }
    for (field, value) in [
        ("host", Some(&report.host)),
        ("user", Some(&report.user)),
        ("client", Some(&report.client)),
        ("command", report.command.as_ref()),
    ] {
        if let Some(value) = value {
            text::check(value, TextKind::Line, MAX_FIELD_CHARS)
                .map_err(|e| refuse(field, e.to_string()))?;
        }
    }
    if report.host.trim().is_empty() {
        return Err(refuse("host", "must name the SSH host"));
    }
    if let Some(cut) = &report.cut {
        text::check(cut, TextKind::Line, MAX_CUT_CHARS)
            .map_err(|e| refuse("cut", e.to_string()))?;
    }
    if report.ended_at < report.started_at {
        return Err(refuse("ended_at", "must not be before `started_at`"));
    }
    if !report.recording.starts_with('{') {
        return Err(refuse(
            "recording",
            "must be asciicast v2: a JSON header line, then event lines",
        ));
    }
    let sent_bytes = report.recording.len();
    if sent_bytes > MAX_RECORDING_BYTES {
        let kept = cut_recording(&report.recording, MAX_RECORDING_BYTES);
        let note = format!(
            "the server kept {} of {sent_bytes} bytes of the recording (at most {MAX_RECORDING_BYTES})",
            kept.len()
        );
        report.recording = kept;
        report.cut = Some(match report.cut.take() {
            Some(before) => format!("{before}; {note}"),
            None => note,
        });
    }
    let mut details = BTreeMap::from([
        ("session".to_owned(), report.id.clone()),
        ("host".to_owned(), report.host.clone()),
        ("user".to_owned(), report.user.clone()),
        ("client".to_owned(), report.client.clone()),
        ("started_at".to_owned(), report.started_at.to_rfc3339()),
        ("ended_at".to_owned(), report.ended_at.to_rfc3339()),
        ("ending".to_owned(), report.ending.as_str().to_owned()),
        (
            "lasted".to_owned(),
            human_duration(report.started_at.until(report.ended_at)),
        ),
        (
            "recording_bytes".to_owned(),
            report.recording.len().to_string(),
        ),
    ]);
    if let Some(command) = &report.command {
        details.insert("command".to_owned(), command.clone());
    }
    if let Some(cut) = &report.cut {
        details.insert("cut".to_owned(), cut.clone());
    }
    let event = AuditEvent {
        at: now,
        actor: Actor::of(by),
        action: AuditAction::SshSessionRecorded,
        request: Some(request.id.clone()),
        entitlement: Some(request.entitlement.clone()),
        subject: Some(request.requester.clone()),
        details,
    };
    Ok(Accepted {
        report,
        sent_bytes,
        event,
    })
}

/// `recording` cut to at most `max` bytes at the end of a whole line, so
/// what is kept still plays.
pub fn cut_recording(recording: &str, max: usize) -> String {
    if recording.len() <= max {
        return recording.to_owned();
    }
    let mut end = 0;
    for (at, _) in recording.match_indices('\n') {
        if at + 1 > max {
            break;
        }
        end = at + 1;
    }
    recording.get(..end).unwrap_or_default().to_owned()
}

/// Whether a session report about `request` is a conflict with its state:
/// only a request that was granted had sessions.
pub fn takes_sessions(request: &AccessRequest) -> Result<(), Rejection> {
    if request.granted_at.is_some() {
        Ok(())
    } else {
        Err(Rejection::Conflict(format!(
            "`{}` was never granted: no SSH session could run under it",
            request.id
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    #[test]
    fn only_key_ids_shaped_like_airlocks_request_ids_are_admitted() {
        let generated = RequestId::from_entropy([7; 12]);
        assert_eq!(request_of_key_id(generated.as_str()), Ok(generated.clone()));
        for other in [
            "",
            "airlock-health-check",
            "alice@laptop",
            "r",
            "rabc",
            "req_someone_else",
            // one character short, one too many, a look-alike (`1`, `l`, `o`)
            "rabcdefghjkm",
            "rabcdefghjkmnp",
            "rabcdefghjk1m",
            "rabcdefghjklm",
            "rabcdefghjkom",
            "Rabcdefghjkmn",
        ] {
            assert!(
                matches!(request_of_key_id(other), Err(NotAdmitted::NotAirlocks(_))),
                "`{other}` admitted"
            );
        }
        assert!(request_of_key_id("rabcdefghjkmn").is_ok());
        // A key id holding escape sequences is named harmlessly.
        let Err(e) = request_of_key_id("\u{1b}[2Jx") else {
            unreachable!("admitted")
        };
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
    }

    #[test]
    fn a_session_ends_at_expiry_or_at_once_when_revoked() {
        let before = T;
        let second = Duration::from_secs(1);
        assert_eq!(must_end(before, false, T.minus(second)), None);
        assert_eq!(must_end(before, false, T), Some(Ending::Expired));
        assert_eq!(
            must_end(before, false, T.plus(second)),
            Some(Ending::Expired)
        );
        assert_eq!(
            must_end(before, true, T.minus(second)),
            Some(Ending::Revoked)
        );
        assert_eq!(
            must_end(before, true, T.plus(second)),
            Some(Ending::Revoked)
        );
    }

    #[test]
    fn the_companion_looks_again_at_the_expiry_at_the_latest() {
        let poll = Duration::from_millis(200);
        assert_eq!(next_look(T, T.minus(Duration::from_secs(5)), poll), poll);
        assert_eq!(
            next_look(T, T.minus(Duration::from_millis(50)), poll),
            Duration::from_millis(50)
        );
        assert_eq!(
            next_look(T, T.plus(Duration::from_secs(1)), poll),
            Duration::ZERO
        );
    }

    #[test]
    fn admission_names_why_a_certificate_is_refused() {
        let id = "rabcdefghjkmn";
        assert!(admit(id, T, false, T.minus(Duration::from_secs(1))).is_ok());
        assert_eq!(
            admit(id, T, false, T),
            Err(NotAdmitted::Expired(T.to_rfc3339()))
        );
        assert_eq!(
            admit(id, T, true, T.minus(Duration::from_secs(1))),
            Err(NotAdmitted::Revoked)
        );
        assert!(matches!(
            admit(
                "airlock-health-check",
                T,
                false,
                T.minus(Duration::from_secs(1))
            ),
            Err(NotAdmitted::NotAirlocks(_))
        ));
    }

    #[test]
    fn a_recording_is_cut_after_its_last_whole_line_within_the_bound() {
        let rec = "{\"version\":2}\n[0.1,\"o\",\"ab\"]\n[0.2,\"o\",\"cd\"]\n";
        assert_eq!(cut_recording(rec, rec.len()), rec);
        assert_eq!(
            cut_recording(rec, rec.len() - 1),
            "{\"version\":2}\n[0.1,\"o\",\"ab\"]\n"
        );
        assert_eq!(cut_recording(rec, 14), "{\"version\":2}\n");
        assert_eq!(cut_recording(rec, 3), "");
    }
}
