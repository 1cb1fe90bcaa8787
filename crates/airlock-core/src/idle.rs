//! Idle grants: access nobody uses should not stay open until its expiry.
//! An entitlement may set an idle limit; a grant with no recorded use for
//! that long is released early, and its holder is warned shortly before.
//!
//! Use is what Airlock records of a grant: its checks (`GET /v1/check`,
//! counted on the request, [`crate::request::CheckActivity`]), the SSH
//! logins and logouts a log shipper posted (`ssh_login`, `ssh_logout`) and
//! the sessions a connector saw start and end (`session_seen`,
//! `session_gone`). The idle clock starts when the grant was granted and
//! every use sets it back. A session Airlock saw start and not yet end
//! counts as use going on: the grant is not idle while one is open.
//!
//! The holder is always warned before the release, at least the limit's
//! `warning` ahead: a grant whose warning came late (the server was down)
//! is released that long after the warning, not at once. A warning counts
//! only for the idle stretch it was given in: use after it starts a new one.
//!
//! Activity may reach the record late (checks are added in batches, about
//! once a second per replica), so the shell passes how late (`lag`), and a
//! grant is released only once it has been idle for the limit plus that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::audit::AuditAction;
use crate::request::AccessRequest;
use crate::ssh_activity::Recorded;
use crate::time::{human_duration, Timestamp};

/// An entitlement's idle limit, validated: how long a grant may go unused,
/// and how long before its release its holder is warned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleLimit {
    limit: Duration,
    warning: Duration,
}

/// Why an idle limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdleLimitError {
    #[error("must be at least {}", human_duration(IdleLimit::SHORTEST))]
    TooShort,
    #[error(
        "the warning ({}) must come after the grant went idle: shorter than the limit ({})",
        human_duration(*warning),
        human_duration(*limit)
    )]
    WarningNotShorter { warning: Duration, limit: Duration },
    #[error("the warning must be at least 1s")]
    NoWarning,
}

impl IdleLimit {
    /// The shortest idle limit: shorter would release grants between two
    /// uses of an ordinary session.
    pub const SHORTEST: Duration = Duration::from_secs(60);
    /// The longest default warning.
    pub const LONGEST_DEFAULT_WARNING: Duration = Duration::from_secs(10 * 60);

    /// `limit` with a warning `warning` ahead of the release (by default
    /// [`IdleLimit::default_warning`]).
    pub fn new(limit: Duration, warning: Option<Duration>) -> Result<IdleLimit, IdleLimitError> {
        if limit < Self::SHORTEST {
            return Err(IdleLimitError::TooShort);
        }
        let warning = warning.unwrap_or_else(|| Self::default_warning(limit));
        if warning < Duration::from_secs(1) {
            return Err(IdleLimitError::NoWarning);
        }
        if warning >= limit {
            return Err(IdleLimitError::WarningNotShorter { warning, limit });
        }
        Ok(IdleLimit { limit, warning })
    }

    /// A quarter of the limit, at most ten minutes.
    pub fn default_warning(limit: Duration) -> Duration {
        (limit / 4).min(Self::LONGEST_DEFAULT_WARNING)
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub fn warning(&self) -> Duration {
        self.warning
    }
}

/// What the record holds of a grant's use besides its checks (which the
/// request itself carries), read from the grant's audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// The latest login, logout, session seen or gone.
    pub last_at: Option<Timestamp>,
    /// Sessions seen to start and not (yet) to end.
    pub open_sessions: usize,
    /// The latest idle warning.
    pub warned_at: Option<Timestamp>,
}

impl Reported {
    /// Read from the grant's `ssh_login`, `ssh_logout`, `session_seen`,
    /// `session_gone` and `idle_warned` events (action, time, details; any
    /// other event is passed over). A logout ends the login of the same
    /// endpoint ([`Recorded`]); a sampled session is gone once an event
    /// says so for the same connector and session id.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = (&'a str, Timestamp, &'a BTreeMap<String, String>)>,
    ) -> Reported {
        let mut reported = Reported::default();
        let mut ssh = Vec::new();
        let mut seen = BTreeSet::new();
        let mut gone = BTreeSet::new();
        let session = |details: &BTreeMap<String, String>| {
            let get = |k: &str| details.get(k).cloned().unwrap_or_default();
            (get("connector"), get("session"))
        };
        for (action, at, details) in events {
            if action == AuditAction::IdleWarned.as_str() {
                reported.warned_at = reported.warned_at.max(Some(at));
                continue;
            }
            if action == AuditAction::SshLogin.as_str() || action == AuditAction::SshLogout.as_str()
            {
                ssh.push((action, details));
            } else if action == AuditAction::SessionSeen.as_str() {
                seen.insert(session(details));
            } else if action == AuditAction::SessionGone.as_str() {
                gone.insert(session(details));
            } else {
                continue;
            }
            reported.last_at = reported.last_at.max(Some(at));
        }
        reported.open_sessions =
            Recorded::from_events(ssh).open_sessions() + seen.difference(&gone).count();
        reported
    }
}

/// What to do about a grant's idleness now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: in use, not idle long enough, not active, or its expiry
    /// comes first.
    Nothing,
    /// Warn the holder: unused since `idle_since`, it is released at
    /// `release_at` unless used before.
    Warn {
        idle_since: Timestamp,
        release_at: Timestamp,
    },
    /// Release it: unused since `idle_since`, and its holder was warned.
    Release { idle_since: Timestamp },
}

/// When `request` was last used: its grant, its latest check, or the
/// latest use `reported`, whichever is latest.
pub fn idle_since(request: &AccessRequest, reported: &Reported) -> Option<Timestamp> {
    let granted = request.granted_at.or(request.activates_at)?;
    Some(
        granted
            .max(request.checks.last_at.unwrap_or(granted))
            .max(reported.last_at.unwrap_or(granted)),
    )
}

/// What `limit` asks for `request` at `now`, given the use `reported` and
/// how late use may reach the record (`lag`).
pub fn step(
    limit: &IdleLimit,
    request: &AccessRequest,
    reported: &Reported,
    lag: Duration,
    now: Timestamp,
) -> Step {
    if !request.holds_access(now) || reported.open_sessions > 0 {
        return Step::Nothing;
    }
    let (Some(since), Some(expires_at)) = (idle_since(request, reported), request.expires_at)
    else {
        return Step::Nothing;
    };
    let due = since.plus(limit.limit).plus(lag);
    // A warning counts for the idle stretch it was given in only.
    match reported.warned_at.filter(|w| *w >= since) {
        None => {
            let release_at = due.max(now.plus(limit.warning));
            if now < due.minus(limit.warning) || release_at >= expires_at {
                return Step::Nothing;
            }
            Step::Warn {
                idle_since: since,
                release_at,
            }
        }
        Some(warned) => {
            if now < due.max(warned.plus(limit.warning)) {
                return Step::Nothing;
            }
            Step::Release { idle_since: since }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{CheckActivity, State};
    use crate::{EntitlementId, RequestId, UserId};

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);
    const MIN: Duration = Duration::from_secs(60);
    const LAG: Duration = Duration::from_secs(5);

    fn at(minutes: u32) -> Timestamp {
        T0.plus(MIN * minutes)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// alice's grant of 4h, asked for, approved and granted at T0.
    fn grant() -> AccessRequest {
        use crate::approval::{Route, Verdict};
        use crate::catalog::{Entitlement, TicketRule, User};
        use crate::request::{apply, submit, Command, JobAction, LifecycleSettings, NewRequest};
        let entitlement = Entitlement {
            id: EntitlementId::parse("db").unwrap(),
            description: String::new(),
            max_duration: secs(4 * 3600),
            default_duration: secs(4 * 3600),
            reason_required: false,
            ticket: TicketRule {
                required: false,
                pattern: None,
            },
            connector: "db".to_owned(),
            drift: crate::drift::DriftPolicy::Report,
            sensitivity: crate::standing::Sensitivity::default(),
            waiting: Default::default(),
            break_glass: None,
            open_to_externals: false,
        };
        let verdict = Verdict {
            route: Route::AutoApproved,
            policy_version: "v".to_owned(),
            policies: vec!["p".to_owned()],
            errors: Vec::new(),
            waiting: Default::default(),
        };
        let new = NewRequest {
            id: RequestId::parse("r1").unwrap(),
            duration: None,
            reason: String::new(),
            ticket: None,
            start_at: None,
            break_glass: false,
            public_key: None,
        };
        let alice = User::person(UserId::parse("alice").unwrap(), [].into(), [].into());
        let settings = LifecycleSettings::default();
        let approved = submit(new, &alice, &entitlement, None, verdict, &settings, T0)
            .unwrap()
            .request;
        let token = approved.claim_token;
        let r = apply(
            approved,
            Command::JobSucceeded {
                action: JobAction::Grant,
                token,
                certificate: None,
            },
            &settings,
            T0,
        )
        .unwrap()
        .request;
        assert_eq!((r.state, r.granted_at), (State::Active, Some(T0)));
        r
    }

    /// One case: the grant after `change`, what is reported, at `now`.
    fn check(
        name: &str,
        change: impl Fn(&mut AccessRequest),
        reported: Reported,
        now: Timestamp,
        expect: Step,
    ) {
        let limit = IdleLimit::new(30 * MIN, None).unwrap();
        let mut r = grant();
        change(&mut r);
        assert_eq!(step(&limit, &r, &reported, LAG, now), expect, "{name}");
    }

    fn none() -> Reported {
        Reported::default()
    }

    #[test]
    fn the_limit_and_its_warning_are_checked() {
        assert_eq!(
            IdleLimit::new(secs(59), None),
            Err(IdleLimitError::TooShort)
        );
        let l = IdleLimit::new(30 * MIN, None).unwrap();
        assert_eq!((l.limit(), l.warning()), (30 * MIN, secs(450)));
        let l = IdleLimit::new(4 * 60 * MIN, None).unwrap();
        assert_eq!(l.warning(), 10 * MIN, "at most ten minutes by default");
        let l = IdleLimit::new(MIN, None).unwrap();
        assert_eq!(l.warning(), secs(15));
        assert_eq!(
            IdleLimit::new(30 * MIN, Some(30 * MIN)),
            Err(IdleLimitError::WarningNotShorter {
                warning: 30 * MIN,
                limit: 30 * MIN
            })
        );
        assert_eq!(
            IdleLimit::new(30 * MIN, Some(Duration::ZERO)),
            Err(IdleLimitError::NoWarning)
        );
        assert!(IdleLimit::new(30 * MIN, Some(29 * MIN)).is_ok());
    }

    #[test]
    fn an_unused_grant_is_warned_then_released() {
        // Limit 30m, warning 7m30s, lag 5s: due at 30m05s, warned from 22m35s.
        let due = at(30).plus(LAG);
        let warn_from = due.minus(secs(450));
        check("fresh", |_| {}, none(), at(1), Step::Nothing);
        check(
            "just before the warning",
            |_| {},
            none(),
            warn_from.minus(secs(1)),
            Step::Nothing,
        );
        check(
            "the warning",
            |_| {},
            none(),
            warn_from,
            Step::Warn {
                idle_since: T0,
                release_at: due,
            },
        );
        let warned = Reported {
            warned_at: Some(warn_from),
            ..none()
        };
        check(
            "warned, not yet due",
            |_| {},
            warned.clone(),
            due.minus(secs(1)),
            Step::Nothing,
        );
        check(
            "warned and due",
            |_| {},
            warned,
            due,
            Step::Release { idle_since: T0 },
        );
        check(
            "due but never warned: warned first",
            |_| {},
            none(),
            at(40),
            Step::Warn {
                idle_since: T0,
                release_at: at(40).plus(secs(450)),
            },
        );
        let late = Reported {
            warned_at: Some(at(40)),
            ..none()
        };
        check(
            "a late warning still gives its lead",
            |_| {},
            late.clone(),
            at(40).plus(secs(449)),
            Step::Nothing,
        );
        check(
            "a late warning, then its lead",
            |_| {},
            late,
            at(40).plus(secs(450)),
            Step::Release { idle_since: T0 },
        );
    }

    #[test]
    fn any_use_sets_the_idle_clock_back() {
        let checked = |r: &mut AccessRequest| {
            r.checks = CheckActivity {
                count: 3,
                last_at: Some(at(20)),
            };
        };
        check("checked at 20m", checked, none(), at(31), Step::Nothing);
        check(
            "checked at 20m, warned from 42m35s",
            checked,
            none(),
            at(50).plus(LAG).minus(secs(450)),
            Step::Warn {
                idle_since: at(20),
                release_at: at(50).plus(LAG),
            },
        );
        let logged_in = Reported {
            last_at: Some(at(25)),
            ..none()
        };
        check("a login at 25m", |_| {}, logged_in, at(45), Step::Nothing);
        // A warning before the latest use is for an earlier idle stretch.
        let used_after_warning = Reported {
            last_at: Some(at(28)),
            warned_at: Some(at(23)),
            ..none()
        };
        check(
            "used after the warning",
            |_| {},
            used_after_warning,
            at(31),
            Step::Nothing,
        );
        let open = Reported {
            last_at: Some(at(1)),
            open_sessions: 1,
            warned_at: None,
        };
        check("a session still open", |_| {}, open, at(200), Step::Nothing);
    }

    #[test]
    fn only_active_grants_before_their_expiry_are_released() {
        check(
            "released already",
            |r| r.state = State::Released,
            none(),
            at(40),
            Step::Nothing,
        );
        check(
            "expiry first: nothing to warn about",
            |r| r.expires_at = Some(at(30)),
            none(),
            at(25),
            Step::Nothing,
        );
        check(
            "expiry after the release",
            |r| r.expires_at = Some(at(40)),
            none(),
            at(30).plus(LAG).minus(secs(450)),
            Step::Warn {
                idle_since: T0,
                release_at: at(30).plus(LAG),
            },
        );
    }

    #[test]
    fn reported_use_is_read_from_the_grants_events() {
        let d = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let login = d(&[
            ("source", "web-1"),
            ("user", "web"),
            ("client", "10.0.0.5"),
            ("port", "50022"),
        ]);
        let seen = d(&[("connector", "pg"), ("session", "42")]);
        let other = d(&[("connector", "pg"), ("session", "43")]);
        let granted = d(&[]);
        let events = [
            ("granted", at(0), &granted),
            ("ssh_login", at(2), &login),
            ("session_seen", at(3), &seen),
            ("idle_warned", at(4), &granted),
            ("session_seen", at(5), &other),
            ("session_gone", at(6), &seen),
        ];
        let r = Reported::from_events(events.iter().map(|(a, t, d)| (*a, *t, *d)));
        assert_eq!(
            r,
            Reported {
                last_at: Some(at(6)),
                open_sessions: 2,
                warned_at: Some(at(4)),
            }
        );
        let closed = [
            ("ssh_login", at(2), &login),
            ("ssh_logout", at(7), &login),
            ("session_seen", at(3), &seen),
            ("session_gone", at(6), &seen),
        ];
        let r = Reported::from_events(closed.iter().map(|(a, t, d)| (*a, *t, *d)));
        assert_eq!((r.last_at, r.open_sessions), (Some(at(7)), 0));
    }
}
