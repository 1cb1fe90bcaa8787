//! API tokens: what a token may do (its scopes), whether it still works,
//! how long one may live, when its last use is worth writing down, and the
//! audit events of creating and revoking one. The secret itself, its hash
//! and storage are the shell's; who may create, list or revoke a token is
//! `access`'s.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::catalog::User;
use crate::ids::{TokenId, UserId};
use crate::request::Rejection;
use crate::time::Timestamp;

/// One thing a token may be used for. A token never has more rights than
/// its owner has when it is used: scopes only take away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read requests, grants, entitlements; with the owner's role, the
    /// audit log and the policy set.
    Read,
    /// Ask for entitlements, withdraw and release one's own, collect a
    /// credential.
    Request,
    /// Approve or deny others' requests.
    Approve,
    /// What only admins may do: revoke grants, change policies, reconcile.
    Admin,
    /// Create, list and revoke API tokens (a token without it cannot make
    /// another).
    Tokens,
    /// Post what was seen on a target to a grant's timeline (a log
    /// shipper's sshd lines), with the owner's `reporter` or `admin` role.
    Report,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Read,
        Scope::Request,
        Scope::Approve,
        Scope::Admin,
        Scope::Tokens,
        Scope::Report,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Request => "request",
            Scope::Approve => "approve",
            Scope::Admin => "admin",
            Scope::Tokens => "tokens",
            Scope::Report => "report",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A token's scopes: never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// Parses a comma-separated list (`read,request`); the error names
    /// `scopes` and the known ones.
    pub fn parse(raw: &str) -> Result<Scopes, Rejection> {
        let mut set = BTreeSet::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| Rejection::Invalid {
                field: "scopes",
                message: format!(
                    "unknown scope `{}` (known: {})",
                    crate::text::escape_for_terminal(part),
                    Scope::ALL.map(Scope::as_str).join(", ")
                ),
            })?;
            set.insert(scope);
        }
        Scopes::new(set)
    }

    pub fn new(set: BTreeSet<Scope>) -> Result<Scopes, Rejection> {
        if set.is_empty() {
            return Err(Rejection::Invalid {
                field: "scopes",
                message: format!(
                    "must name at least one scope (known: {})",
                    Scope::ALL.map(Scope::as_str).join(", ")
                ),
            });
        }
        Ok(Scopes(set))
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Whether every scope of `self` is also in `other`.
    pub fn within(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// The token a caller authenticated with, as far as deciding goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    pub id: TokenId,
    pub scopes: Scopes,
}

/// A stored API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    /// Whose rights it carries (a person or a service), read at each use.
    pub owner: UserId,
    /// Unique among the owner's tokens that are not revoked.
    pub name: String,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    /// Who made it: the owner, or for a service one of its owners or an admin.
    pub created_by: UserId,
    pub expires_at: Timestamp,
    /// Recorded at most once per [`LAST_USE_PRECISION`].
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<UserId>,
}

/// Why a token no longer authenticates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the API token `{id}` was revoked at {}", at.to_rfc3339())]
    Revoked { id: TokenId, at: Timestamp },
    #[error("the API token `{id}` expired at {}", at.to_rfc3339())]
    Expired { id: TokenId, at: Timestamp },
}

impl ApiToken {
    /// Whether the token authenticates at `now` (a revocation is reported
    /// before an expiry: it is the more deliberate fact).
    pub fn usable(&self, now: Timestamp) -> Result<(), Unusable> {
        if let Some(at) = self.revoked_at {
            return Err(Unusable::Revoked {
                id: self.id.clone(),
                at,
            });
        }
        if now >= self.expires_at {
            return Err(Unusable::Expired {
                id: self.id.clone(),
                at: self.expires_at,
            });
        }
        Ok(())
    }

    pub fn state(&self, now: Timestamp) -> &'static str {
        match self.usable(now) {
            Ok(()) => "active",
            Err(Unusable::Revoked { .. }) => "revoked",
            Err(Unusable::Expired { .. }) => "expired",
        }
    }
}

/// How stale a token's recorded last use may be: a use is written down only
/// when the recorded one is at least this old, so a busy token costs one
/// write a minute, not one per call.
pub const LAST_USE_PRECISION: Duration = Duration::from_secs(60);

/// Whether a use at `now` should be written, given the last one written.
pub fn record_use(last_recorded: Option<Timestamp>, now: Timestamp) -> bool {
    last_recorded.is_none_or(|last| now >= last.plus(LAST_USE_PRECISION))
}

/// What someone asks for when creating a token, parsed from the wire.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: TokenId,
    pub name: String,
    pub owner: UserId,
    pub scopes: Scopes,
    pub lifetime: Duration,
}

/// Longest a token name may be.
const MAX_NAME_CHARS: usize = 100;

/// Checks a new token against the rules and builds it with its audit event:
/// a name, a lifetime of at least a minute and at most `max_lifetime`, and
/// when created through a token, no scope that token lacks and no life
/// beyond it (a token cannot mint a stronger or longer-lived one).
/// Who may create a token for whom is `access::may_manage_tokens_of`.
pub fn create(
    new: NewToken,
    by: &User,
    creating_token: Option<&ApiToken>,
    max_lifetime: Duration,
    now: Timestamp,
) -> Result<(ApiToken, AuditEvent), Rejection> {
    let name = new.name.trim();
    if name.is_empty() {
        return Err(Rejection::Invalid {
            field: "name",
            message: "must not be empty".to_owned(),
        });
    }
    crate::text::check(name, crate::text::TextKind::Line, MAX_NAME_CHARS).map_err(|e| {
        Rejection::Invalid {
            field: "name",
            message: e.to_string(),
        }
    })?;
    if new.lifetime < Duration::from_secs(60) {
        return Err(Rejection::Invalid {
            field: "expires_in",
            message: "must be at least 1m".to_owned(),
        });
    }
    if new.lifetime > max_lifetime {
        return Err(Rejection::Invalid {
            field: "expires_in",
            message: format!(
                "must be at most {} (the server's `server.token_max_lifetime`)",
                humanize(max_lifetime)
            ),
        });
    }
    let expires_at = now.plus(new.lifetime);
    if let Some(parent) = creating_token {
        if !new.scopes.within(&parent.scopes) {
            return Err(Rejection::Forbidden(format!(
                "a token may only create tokens with its own scopes or fewer (`{}` has {})",
                parent.id, parent.scopes
            )));
        }
        if expires_at > parent.expires_at {
            return Err(Rejection::Invalid {
                field: "expires_in",
                message: format!(
                    "must end before the token creating it (`{}`) expires",
                    parent.id
                ),
            });
        }
    }
    let token = ApiToken {
        id: new.id,
        owner: new.owner,
        name: name.to_owned(),
        scopes: new.scopes,
        created_at: now,
        created_by: by.id.clone(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    };
    let mut details = BTreeMap::new();
    details.insert("token_id".to_owned(), token.id.to_string());
    details.insert("name".to_owned(), token.name.clone());
    details.insert("scopes".to_owned(), token.scopes.to_string());
    details.insert(
        "expires_at_ms".to_owned(),
        token.expires_at.unix_millis().to_string(),
    );
    let event = token_event(by, &token, AuditAction::TokenCreated, details, now);
    Ok((token, event))
}

/// Revokes `token` (already found, and `access` said `by` may): refused
/// when it is revoked already; an expired token may still be revoked, so
/// that the record says it was.
pub fn revoke(
    token: &ApiToken,
    by: &User,
    now: Timestamp,
) -> Result<(ApiToken, AuditEvent), Rejection> {
    if let Some(at) = token.revoked_at {
        return Err(Rejection::Conflict(format!(
            "the API token `{}` was already revoked at {}",
            token.id,
            at.to_rfc3339()
        )));
    }
    let revoked = ApiToken {
        revoked_at: Some(now),
        revoked_by: Some(by.id.clone()),
        ..token.clone()
    };
    let mut details = BTreeMap::new();
    details.insert("token_id".to_owned(), token.id.to_string());
    details.insert("name".to_owned(), token.name.clone());
    let event = token_event(by, &revoked, AuditAction::TokenRevoked, details, now);
    Ok((revoked, event))
}

fn token_event(
    by: &User,
    token: &ApiToken,
    action: AuditAction,
    details: BTreeMap<String, String>,
    now: Timestamp,
) -> AuditEvent {
    AuditEvent {
        at: now,
        actor: Actor::of(by),
        action,
        request: None,
        entitlement: None,
        subject: Some(token.owner.clone()),
        details,
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::catalog::User;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    fn alice() -> User {
        User::person(
            UserId::parse("alice").unwrap(),
            Default::default(),
            Default::default(),
        )
    }

    fn ask(name: &str, scopes: &str, lifetime: Duration) -> NewToken {
        NewToken {
            id: TokenId::parse("tok_new").unwrap(),
            name: name.to_owned(),
            owner: UserId::parse("alice").unwrap(),
            scopes: Scopes::parse(scopes).unwrap(),
            lifetime,
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_new_token_is_checked_and_its_creation_audited() {
        let max = 90 * DAY;
        let (token, event) = create(
            ask(" ci ", "read,request", 30 * DAY),
            &alice(),
            None,
            max,
            at(0),
        )
        .unwrap();
        assert_eq!(token.name, "ci");
        assert_eq!(token.expires_at, at(30 * 86_400));
        assert_eq!(event.action, AuditAction::TokenCreated);
        assert_eq!(
            event.details.get("token_id").map(String::as_str),
            Some("tok_new")
        );
        assert_eq!(
            event.details.get("scopes").map(String::as_str),
            Some("read,request")
        );
        assert_eq!(event.subject.as_ref().map(UserId::as_str), Some("alice"));
        let refused =
            |new, parent: Option<&ApiToken>| create(new, &alice(), parent, max, at(0)).unwrap_err();
        let too_long = refused(ask("ci", "read", 91 * DAY), None);
        assert!(
            matches!(&too_long, Rejection::Invalid { field: "expires_in", message } if message.contains("90d")),
            "{too_long}"
        );
        assert!(matches!(
            refused(ask("", "read", DAY), None),
            Rejection::Invalid { field: "name", .. }
        ));
        assert!(matches!(
            refused(ask("a\u{1b}[2J", "read", DAY), None),
            Rejection::Invalid { field: "name", .. }
        ));
        assert!(matches!(
            refused(ask("ci", "read", Duration::from_secs(59)), None),
            Rejection::Invalid {
                field: "expires_in",
                ..
            }
        ));
        // A token makes no token stronger or longer-lived than itself.
        let parent = ApiToken {
            scopes: Scopes::parse("read,tokens").unwrap(),
            expires_at: at(10 * 86_400),
            ..token
        };
        assert!(matches!(
            refused(ask("x", "read,request", DAY), Some(&parent)),
            Rejection::Forbidden(_)
        ));
        assert!(matches!(
            refused(ask("x", "read", 11 * DAY), Some(&parent)),
            Rejection::Invalid {
                field: "expires_in",
                ..
            }
        ));
        assert!(create(ask("x", "read", DAY), &alice(), Some(&parent), max, at(0)).is_ok());
    }

    #[test]
    fn scopes_parse_by_name_and_refuse_unknown_or_none() {
        assert_eq!(
            Scopes::parse("request, read,read").unwrap().to_string(),
            "read,request"
        );
        let unknown = Scopes::parse("read,root").unwrap_err().to_string();
        assert!(
            unknown.contains("scopes") && unknown.contains("`root`") && unknown.contains("approve"),
            "{unknown}"
        );
        assert!(matches!(
            Scopes::parse(" , "),
            Err(Rejection::Invalid {
                field: "scopes",
                ..
            })
        ));
    }

    #[test]
    fn a_token_stops_at_its_expiry_or_revocation_and_says_which() {
        let (token, _) = create(ask("ci", "read", DAY), &alice(), None, 90 * DAY, at(0)).unwrap();
        assert_eq!(token.usable(at(86_399)), Ok(()));
        let expired = token.usable(at(86_400)).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
        let (revoked, event) = revoke(&token, &alice(), at(10)).unwrap();
        assert_eq!(event.action, AuditAction::TokenRevoked);
        assert_eq!(
            revoked.revoked_by.as_ref().map(UserId::as_str),
            Some("alice")
        );
        // Revocation is reported even past the expiry, and only once.
        assert!(revoked
            .usable(at(100_000))
            .unwrap_err()
            .to_string()
            .contains("revoked"));
        assert!(matches!(
            revoke(&revoked, &alice(), at(11)),
            Err(Rejection::Conflict(_))
        ));
        assert_eq!(revoked.state(at(11)), "revoked");
        assert_eq!(token.state(at(100_000)), "expired");
    }

    #[test]
    fn a_use_is_written_at_most_once_per_minute() {
        assert!(record_use(None, at(0)));
        assert!(!record_use(Some(at(0)), at(59)));
        assert!(record_use(Some(at(0)), at(60)));
    }
}
