//! Activity during a grant: the sessions a connector sees the grantee hold
//! while the grant is active, sampled by the shell. What started and what
//! ended since the last look becomes audit events on the request's
//! timeline — one when a session is first seen, one when it is gone, never
//! one per sample — so what was done while elevated is tied to the request
//! in the same tamper-evident record as the grant itself.

use std::collections::BTreeMap;

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::ids::{EntitlementId, RequestId, UserId};
use crate::time::Timestamp;

/// The most of a statement kept (targets cut theirs too).
pub const MAX_STATEMENT_CHARS: usize = 300;

/// One session as the target listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The target's id of the session: the same session keeps it.
    pub id: u64,
    pub login: String,
    /// The client's address; `None` on a local socket.
    pub client: Option<String>,
    /// What it ran when first seen; `None` when idle.
    pub statement: Option<String>,
    /// When it connected, where the target says.
    pub connected_at: Option<Timestamp>,
}

/// The grant a sample is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampled {
    pub request: RequestId,
    pub entitlement: EntitlementId,
    pub requester: UserId,
    pub connector: String,
}

/// The events between what was seen on `grant` before and what is listed
/// now: `session_seen` for each new session, `session_gone` for each that
/// is no longer listed (`why` says why, when the shell knows: the grant
/// ended).
pub fn changes(
    grant: &Sampled,
    before: &BTreeMap<u64, Session>,
    now: &[Session],
    why_gone: Option<&str>,
    at: Timestamp,
) -> Vec<AuditEvent> {
    let event = |action: AuditAction, details: BTreeMap<String, String>| AuditEvent {
        at,
        actor: Actor::System,
        action,
        request: Some(grant.request.clone()),
        entitlement: Some(grant.entitlement.clone()),
        subject: Some(grant.requester.clone()),
        details,
    };
    let mut out = Vec::new();
    for s in now.iter().filter(|s| !before.contains_key(&s.id)) {
        let mut details = BTreeMap::from([
            ("connector".to_owned(), grant.connector.clone()),
            ("session".to_owned(), s.id.to_string()),
            ("login".to_owned(), s.login.clone()),
            (
                "client".to_owned(),
                s.client
                    .clone()
                    .unwrap_or_else(|| "local socket".to_owned()),
            ),
        ]);
        if let Some(statement) = &s.statement {
            details.insert("statement".to_owned(), kept_statement(statement));
        }
        if let Some(t) = s.connected_at {
            details.insert("connected_at".to_owned(), t.to_rfc3339());
        }
        out.push(event(AuditAction::SessionSeen, details));
    }
    for s in before
        .values()
        .filter(|b| !now.iter().any(|n| n.id == b.id))
    {
        let mut details = BTreeMap::from([
            ("connector".to_owned(), grant.connector.clone()),
            ("session".to_owned(), s.id.to_string()),
            ("login".to_owned(), s.login.clone()),
        ]);
        if let Some(why) = why_gone {
            details.insert("why".to_owned(), why.to_owned());
        }
        out.push(event(AuditAction::SessionGone, details));
    }
    out
}

/// What of a statement goes into the record: one line, at most
/// [`MAX_STATEMENT_CHARS`], and nothing of one that may carry a secret
/// (setting a password), since the audit log is read by many and kept long.
pub fn kept_statement(statement: &str) -> String {
    let lower = statement.to_lowercase();
    if ["password", "identified by", "secret"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return "(a statement that may carry a secret: not kept)".to_owned();
    }
    let one_line: String = statement
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if one_line.chars().count() > MAX_STATEMENT_CHARS {
        let cut: String = one_line.chars().take(MAX_STATEMENT_CHARS).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, statement: Option<&str>) -> Session {
        Session {
            id,
            login: "alice".to_owned(),
            client: Some("10.0.0.7".to_owned()),
            statement: statement.map(str::to_owned),
            connected_at: None,
        }
    }

    fn grant() -> Sampled {
        Sampled {
            request: RequestId::parse("req1").unwrap_or_else(|e| panic!("{e}")),
            entitlement: EntitlementId::parse("db").unwrap_or_else(|e| panic!("{e}")),
            requester: UserId::parse("alice").unwrap_or_else(|e| panic!("{e}")),
            connector: "pg".to_owned(),
        }
    }

    fn render(events: &[AuditEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let d = |k: &str| e.details.get(k).cloned().unwrap_or_else(|| "-".to_owned());
                format!(
                    "{} {} {} {}",
                    e.action.as_str(),
                    d("session"),
                    d("statement"),
                    d("why")
                )
            })
            .collect()
    }

    #[test]
    fn only_starts_and_ends_become_events() {
        let at = Timestamp::from_unix_millis(1_700_000_000_000);
        let before = BTreeMap::from([(1, session(1, None)), (2, session(2, Some("SELECT 1")))]);
        // 1 is still there (now running something else: not an event), 2
        // is gone, 3 is new.
        let now = [
            session(1, Some("UPDATE t SET x = 1")),
            session(3, Some("DELETE\nFROM   t")),
        ];
        assert_eq!(
            render(&changes(&grant(), &before, &now, None, at)),
            ["session_seen 3 DELETE FROM t -", "session_gone 2 - -"]
        );
        assert_eq!(
            render(&changes(
                &grant(),
                &before,
                &[],
                Some("the grant ended"),
                at
            )),
            [
                "session_gone 1 - the grant ended",
                "session_gone 2 - the grant ended"
            ]
        );
    }

    #[test]
    fn statements_are_cut_and_secrets_not_kept() {
        assert_eq!(
            kept_statement("ALTER ROLE x PASSWORD 'hunter2'"),
            "(a statement that may carry a secret: not kept)"
        );
        let long = "SELECT ".to_owned() + &"x, ".repeat(200);
        let kept = kept_statement(&long);
        assert_eq!(kept.chars().count(), MAX_STATEMENT_CHARS + 1);
        assert!(kept.ends_with('…'));
    }
}
