//! The facts a decision is made from, as typed values. The shell gathers them
//! (directory, catalog, the request, `now`) and this crate turns them into
//! Cedar entities and context, so policies never see a missing or mistyped
//! value and this crate never needs a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::catalog::{PrincipalKind, User, VENDOR};
use airlock_core::{EntitlementId, GroupName, Timestamp, UserId};

/// A person as policies see them (`Airlock::User`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    pub id: UserId,
    pub groups: BTreeSet<GroupName>,
    pub team: String,
    /// `employee`, `contractor`, `vendor`, ... as the directory says.
    pub employment: String,
    pub on_call: bool,
    /// A person or a service principal (`principal.kind`: "person" or
    /// "service").
    pub kind: PrincipalKind,
    /// An external principal's sponsor (`principal.sponsor`, a user; absent
    /// for anyone else).
    pub sponsor: Option<UserId>,
}

impl UserFacts {
    /// The policy view of a directory user, with the attributes the core's
    /// `User` does not carry. An external principal is a `vendor` with
    /// their sponsor, whatever else `employment` says.
    pub fn from_user(user: &User, team: &str, employment: &str, on_call: bool) -> UserFacts {
        let (employment, sponsor) = match &user.external {
            Some(terms) => (VENDOR, Some(terms.sponsor.clone())),
            None => (employment, None),
        };
        UserFacts {
            id: user.id.clone(),
            groups: user.groups.clone(),
            team: team.to_owned(),
            employment: employment.to_owned(),
            on_call,
            kind: user.kind,
            sponsor,
        }
    }
}

/// An entitlement as policies see it (`Airlock::Entitlement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementFacts {
    pub id: EntitlementId,
    /// 0 (harmless) to 3 (production data or admin rights), by convention.
    pub sensitivity: i64,
    pub owner_group: Option<GroupName>,
}

/// Days of the week, Monday first (`start_weekday` 0 is Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// 0 for Monday .. 6 for Sunday, as in the schema.
    pub fn index(self) -> i64 {
        match self {
            Weekday::Monday => 0,
            Weekday::Tuesday => 1,
            Weekday::Wednesday => 2,
            Weekday::Thursday => 3,
            Weekday::Friday => 4,
            Weekday::Saturday => 5,
            Weekday::Sunday => 6,
        }
    }

    /// Three-letter English abbreviation, lowercase (`mon`).
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Monday => "mon",
            Weekday::Tuesday => "tue",
            Weekday::Wednesday => "wed",
            Weekday::Thursday => "thu",
            Weekday::Friday => "fri",
            Weekday::Saturday => "sat",
            Weekday::Sunday => "sun",
        }
    }

    /// The full English name, lowercase (`monday`).
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        }
    }

    /// Accepts `mon`, `monday`, `Mon`, ... .
    pub fn parse(raw: &str) -> Option<Weekday> {
        let raw = raw.to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .find(|d| raw == d.as_str() || raw == d.name())
    }
}

/// When access would start, reduced to what policies may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StartTime {
    weekday: Weekday,
    hour_utc: u8,
}

impl StartTime {
    /// `None` unless `hour_utc` is 0..=23.
    pub fn new(weekday: Weekday, hour_utc: u8) -> Option<StartTime> {
        (hour_utc < 24).then_some(StartTime { weekday, hour_utc })
    }

    /// The UTC weekday and hour of an instant (the request's start, or `now`
    /// as passed in by the shell).
    pub fn at(instant: Timestamp) -> StartTime {
        let secs = instant.unix_millis().div_euclid(1000);
        let days = secs.div_euclid(86_400);
        // 1970-01-01 was a Thursday (index 3).
        let weekday_index = (days + 3).rem_euclid(7);
        let weekday = Weekday::ALL
            .into_iter()
            .find(|d| d.index() == weekday_index)
            .unwrap_or(Weekday::Monday);
        let hour = secs.rem_euclid(86_400) / 3600;
        StartTime {
            weekday,
            hour_utc: u8::try_from(hour).unwrap_or(0),
        }
    }

    pub fn weekday(self) -> Weekday {
        self.weekday
    }

    pub fn hour_utc(self) -> u8 {
        self.hour_utc
    }
}

/// Everything about one request that is not the requester or the
/// entitlement: the Cedar `context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub duration: Duration,
    pub start: StartTime,
    /// `None` (or empty) when the requester cited no ticket.
    pub ticket: Option<String>,
    /// Length of the stated reason, in characters.
    pub reason_length: u32,
    /// How long ago the requester last completed MFA, computed by the shell
    /// from its clock; `None` if not recently.
    pub mfa_age: Option<Duration>,
    pub break_glass: bool,
    /// The request waited past its entitlement's `escalate_after`, so its
    /// escalation groups were asked too (always false for a new request).
    pub escalated: bool,
    /// Entitlements the requester holds now (or has approved and pending
    /// start), for separation-of-duties rules.
    pub other_active_entitlements: BTreeSet<EntitlementId>,
}

impl RequestContext {
    /// The context assumed when no request is at hand (`who_can`, and the
    /// defaults of a test case): an ordinary, well-formed request. One hour,
    /// starting Tuesday 10:00 UTC (business hours), citing ticket
    /// `TICKET-1`, a 40-character reason, MFA five minutes ago, not
    /// break-glass, holding nothing else.
    pub fn typical() -> RequestContext {
        RequestContext {
            duration: Duration::from_secs(3600),
            start: StartTime {
                weekday: Weekday::Tuesday,
                hour_utc: 10,
            },
            ticket: Some("TICKET-1".to_owned()),
            reason_length: 40,
            mfa_age: Some(Duration::from_secs(300)),
            break_glass: false,
            escalated: false,
            other_active_entitlements: BTreeSet::new(),
        }
    }

    /// The ticket, if one was given and is not blank.
    pub fn ticket(&self) -> Option<&str> {
        self.ticket.as_deref().filter(|t| !t.trim().is_empty())
    }
}

/// An extension of an active grant, as policies see it (`extend`'s
/// context adds these to the request's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionFacts {
    /// How much longer (`context.extension_seconds`).
    pub extension: Duration,
    /// How long the grant lasts in all once extended (`context.total_seconds`).
    pub total: Duration,
}

/// One request to decide: who asks, for what, and under which circumstances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub requester: UserFacts,
    pub entitlement: EntitlementFacts,
    pub context: RequestContext,
}

/// Users and entitlements known by name, e.g. for policy tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    pub users: BTreeMap<UserId, UserFacts>,
    pub entitlements: BTreeMap<EntitlementId, EntitlementFacts>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_follows_the_calendar() {
        // 2026-11-23 was a Monday; 15:26 UTC.
        let t = StartTime::at(Timestamp::from_unix_millis(1_795_447_600_689));
        assert_eq!((t.weekday(), t.hour_utc()), (Weekday::Monday, 15));
        assert_eq!(
            StartTime::at(Timestamp::from_unix_millis(0)).weekday(),
            Weekday::Thursday
        );
        // One millisecond before the epoch is Wednesday 23:00.
        let t = StartTime::at(Timestamp::from_unix_millis(-1));
        assert_eq!((t.weekday(), t.hour_utc()), (Weekday::Wednesday, 23));
        assert_eq!(StartTime::new(Weekday::Friday, 24), None);
    }

    #[test]
    fn weekdays_parse_short_and_long_names() {
        assert_eq!(Weekday::parse("mon"), Some(Weekday::Monday));
        assert_eq!(Weekday::parse("Sunday"), Some(Weekday::Sunday));
        assert_eq!(Weekday::parse("mo"), None);
    }
}
