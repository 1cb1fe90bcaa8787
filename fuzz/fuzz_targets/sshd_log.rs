//! Fuzzes the reading of sshd's log lines posted to a grant
//! (`airlock_core::ssh_activity`): any text, one line per `\n`, must read
//! without a panic; a login read with a certificate names a key id the line
//! holds; and a post that is taken accounts for every line exactly once
//! (recorded, ignored, duplicate or over the bound), records no more events
//! than the bound, and records nothing twice when posted again.

#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_core::approval::{Route, Verdict};
use airlock_core::catalog::{Entitlement, Role, TicketRule, User};
use airlock_core::drift::DriftPolicy;
use airlock_core::request::{self, AccessRequest, LifecycleSettings, NewRequest, State};
use airlock_core::ssh_activity::{
    parse_line, report, Login, Recorded, SshdLine, MAX_EVENTS_PER_GRANT,
};
use airlock_core::{EntitlementId, RequestId, Timestamp, UserId};
use libfuzzer_sys::fuzz_target;

/// The grant the lines are posted to: `req_fuzz`, active.
fn grant() -> Option<AccessRequest> {
    let entitlement = Entitlement {
        id: EntitlementId::parse("web-ssh").ok()?,
        description: String::new(),
        max_duration: Duration::from_secs(3600),
        default_duration: Duration::from_secs(600),
        reason_required: false,
        ticket: TicketRule {
            required: false,
            pattern: None,
        },
        connector: "ssh".to_owned(),
        drift: DriftPolicy::Report,
        sensitivity: Default::default(),
        waiting: Default::default(),
        break_glass: None,
        open_to_externals: false,
    };
    let verdict = Verdict {
        route: Route::AutoApproved,
        policy_version: "v".to_owned(),
        policies: Vec::new(),
        errors: Vec::new(),
        waiting: Default::default(),
    };
    let new = NewRequest {
        id: RequestId::parse("req_fuzz").ok()?,
        duration: None,
        reason: String::new(),
        ticket: None,
        start_at: None,
        break_glass: false,
        public_key: None,
    };
    let alice = User::person(UserId::parse("alice").ok()?, [].into(), [].into());
    let now = Timestamp::from_unix_millis(0);
    let mut r = request::submit(new, &alice, &entitlement, None, verdict, &LifecycleSettings::default(), now)
        .ok()?
        .request;
    r.state = State::Active;
    Some(r)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    for line in &lines {
        if let SshdLine::Login {
            login:
                Login {
                    certificate: Some((key_id, _)),
                    ..
                },
            ..
        } = parse_line(line)
        {
            assert!(line.contains(&key_id), "key id `{key_id}` not in {line:?}");
        }
    }
    let Some(grant) = grant() else {
        panic!("the fuzz grant does not build");
    };
    let shipper = User::person(
        UserId::parse("shipper").unwrap_or_else(|e| panic!("{e}")),
        [].into(),
        [Role::Reporter].into(),
    );
    let at = Timestamp::from_unix_millis(1_000);
    let Ok(first) = report(&grant, &shipper, "host", &lines, &Recorded::default(), at) else {
        return;
    };
    let accounted = first.events.len() + first.ignored + first.duplicates + first.over_limit;
    assert_eq!(accounted, lines.len(), "{first:?}");
    assert!(first.events.len() <= MAX_EVENTS_PER_GRANT);
    let stored: Vec<(String, BTreeMap<String, String>)> = first
        .events
        .iter()
        .map(|e| (e.action.as_str().to_owned(), e.details.clone()))
        .collect();
    let before = Recorded::from_events(stored.iter().map(|(a, d)| (a.as_str(), d)));
    assert_eq!(before.events(), first.events.len());
    let Ok(again) = report(&grant, &shipper, "host", &lines, &before, at) else {
        panic!("a post taken once is refused the second time");
    };
    assert!(again.events.is_empty() || first.over_limit > 0, "recorded twice: {again:?}");
});
