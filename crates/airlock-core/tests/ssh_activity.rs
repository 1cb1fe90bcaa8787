//! sshd's log lines on a grant's timeline (`airlock_core::ssh_activity`):
//! what each line shape reads as (lines as OpenSSH 9.2 wrote them at
//! `LogLevel VERBOSE`, bare and behind syslog and journal headers), forged
//! lines a client can make sshd write, and what a post of lines records —
//! through one `check` helper. At the end, the other thing an SSH host
//! reports about a grant: a session the companion (`airlock-session`)
//! recorded (`airlock_core::ssh_session::accept`).

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::BTreeMap;

use airlock_core::approval::Route;
use airlock_core::audit::AuditEvent;
use airlock_core::catalog::{Role, User};
use airlock_core::request::{self, AccessRequest, LifecycleSettings, State};
use airlock_core::ssh_activity::{
    parse_line, report, takes_lines, Recorded, SshdLine, LATE_LINES_WITHIN, MAX_EVENTS_PER_GRANT,
};
use airlock_core::{RequestId, Timestamp, UserId};
use fixtures::{entitlement, new_request, person, verdict};

mod fixtures;

const ID: &str = "req_01JABCDEF";
const ACCEPTED: &str = "Accepted publickey for root from 127.0.0.1 port 45468 ssh2: ED25519-CERT SHA256:Fr0t38rBxraldJoI60PyB3uHyCfWAKhoWJzJ39AVFd0 ID req_01JABCDEF (serial 42) CA ED25519 SHA256:W3BEapHdTBr2G+ZaBSajgel+DqANKZBWGX4mONb+jd0";
const DISCONNECTED: &str = "Disconnected from user root 127.0.0.1 port 45468";

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(secs * 1000)
}

/// An active grant `req_01JABCDEF` of alice's.
fn grant() -> AccessRequest {
    let entitlement = entitlement("web-ssh", "ssh");
    let verdict = verdict(Route::AutoApproved, &["p"]);
    let new = new_request(ID);
    let alice = person("alice", &[]);
    let mut r = request::submit(
        new,
        &alice,
        &entitlement,
        None,
        verdict,
        &LifecycleSettings::default(),
        at(0),
    )
    .unwrap()
    .request;
    r.state = State::Active;
    r
}

fn shipper() -> User {
    User::person(
        UserId::parse("shipper").unwrap(),
        [].into(),
        [Role::Reporter].into(),
    )
}

/// A line as the test reads it: `login USER CLIENT PORT SERIAL`, `logout
/// USER CLIENT PORT HOW`, `other`.
fn read(line: &str) -> String {
    match parse_line(line) {
        SshdLine::Login { login, header } => format!(
            "login {} {} {} {}{}",
            login.session.user,
            login.session.client,
            login.session.port,
            login
                .certificate
                .map_or("no-certificate".to_owned(), |(id, serial)| format!(
                    "{id}#{serial}"
                )),
            header.map(|h| format!(" [{h}]")).unwrap_or_default()
        ),
        SshdLine::Logout {
            session,
            ending,
            header,
        } => format!(
            "logout {} {} {} {}{}",
            session.user,
            session.client,
            session.port,
            ending.as_str(),
            header.map(|h| format!(" [{h}]")).unwrap_or_default()
        ),
        SshdLine::Other => "other".to_owned(),
    }
}

#[test]
fn each_line_shape_reads_as_sshd_means_it() {
    let cases = [
        (
            ACCEPTED.to_owned(),
            "login root 127.0.0.1 45468 req_01JABCDEF#42",
        ),
        (
            format!("Dec  6 16:25:34 web1 sshd[1234]: {ACCEPTED}"),
            "login root 127.0.0.1 45468 req_01JABCDEF#42 [Dec  6 16:25:34 web1 sshd[1234]]",
        ),
        (
            format!("2026-12-06T16:25:34.123+00:00 web1 sshd-session[99]: {DISCONNECTED}"),
            "logout root 127.0.0.1 45468 disconnected [2026-12-06T16:25:34.123+00:00 web1 sshd-session[99]]",
        ),
        (DISCONNECTED.to_owned(), "logout root 127.0.0.1 45468 disconnected"),
        (
            "Connection closed by user deploy ::1 port 2222".to_owned(),
            "logout deploy ::1 2222 connection closed",
        ),
        (
            "Connection reset by user root 10.0.0.7 port 50000".to_owned(),
            "logout root 10.0.0.7 50000 connection reset",
        ),
        (
            "Timeout, client not responding from user root 10.0.0.7 port 50000".to_owned(),
            "logout root 10.0.0.7 50000 timed out",
        ),
        (
            "Connection from user root 10.0.0.7 port 50000 timed out".to_owned(),
            "logout root 10.0.0.7 50000 timed out",
        ),
        (
            "Accepted publickey for root from 10.0.0.7 port 50000 ssh2: ED25519 SHA256:abc".to_owned(),
            "login root 10.0.0.7 50000 no-certificate",
        ),
        // The rest of a login's lines, and sshd's other messages.
        (
            "Accepted certificate ID \"req_01JABCDEF\" (serial 42) signed by ED25519 CA SHA256:W3 via /etc/ssh/ca.pub".to_owned(),
            "other",
        ),
        (
            "Received disconnect from 127.0.0.1 port 45468:11: disconnected by user".to_owned(),
            "other",
        ),
        (
            "Starting session: command for root from 127.0.0.1 port 45484 id 0".to_owned(),
            "other",
        ),
        (
            "pam_unix(sshd:session): session closed for user root".to_owned(),
            "other",
        ),
        (
            "Connection closed by authenticating user root 10.0.0.7 port 50000 [preauth]".to_owned(),
            "other",
        ),
        (
            "Dec  6 16:25:34 web1 cron[77]: Disconnected from user root 10.0.0.7 port 1".to_owned(),
            "other",
        ),
        ("Accepted publickey for root from 10.0.0.7 port x ssh2: ED25519 SHA256:abc".to_owned(), "other"),
        (String::new(), "other"),
        // A client chooses the user name it offers: sshd writes an unknown
        // one inside its own line, where a phrase is never read.
        (format!("Invalid user x {ACCEPTED} from 10.0.0.9 port 4"), "other"),
        (
            format!("Dec  6 16:25:34 web1 sshd[1234]: Invalid user x {ACCEPTED}"),
            "other",
        ),
        // A user name that looks like a syslog header, in a bare log: the
        // forged phrase is followed by what sshd adds after a user name.
        (
            format!("Invalid user sshd[1]: {ACCEPTED} from 10.0.0.9 port 4"),
            "other",
        ),
        (
            format!("Invalid user sshd[1]: {DISCONNECTED} from 10.0.0.9 port 4"),
            "other",
        ),
        (
            format!("Connection closed by invalid user sshd[1]: {ACCEPTED} 10.0.0.9 port 4 [preauth]"),
            "other",
        ),
        (
            "Dec  6 16:25:34 web1 sshd[x]: Disconnected from user root 10.0.0.7 port 1".to_owned(),
            "other",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(read(&line), expected, "{line}");
    }
}

/// What `check` expects of a post: the events (`action user client port`
/// and, for a logout, how), then ignored, duplicates, over the limit; or
/// the refusal (`field: message` contains).
enum Expect {
    Recorded(&'static [&'static str], usize, usize, usize),
    Refused(&'static str, &'static str),
}

fn shown(e: &AuditEvent) -> String {
    let d = |k: &str| e.details.get(k).cloned().unwrap_or_default();
    let how = e
        .details
        .get("how")
        .map(|h| format!(" {h}"))
        .unwrap_or_default();
    format!(
        "{} {} {} {}{how}",
        e.action.as_str(),
        d("user"),
        d("client"),
        d("port")
    )
}

fn check(before: &[AuditEvent], lines: &[&str], expect: Expect) {
    let stored: Vec<(String, BTreeMap<String, String>)> = before
        .iter()
        .map(|e| (e.action.as_str().to_owned(), e.details.clone()))
        .collect();
    let recorded = Recorded::from_events(stored.iter().map(|(a, d)| (a.as_str(), d)));
    let lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let got = report(&grant(), &shipper(), "web1", &lines, &recorded, at(60));
    match (got, expect) {
        (Ok(r), Expect::Recorded(events, ignored, duplicates, over)) => {
            let shown: Vec<String> = r.events.iter().map(shown).collect();
            assert_eq!(shown, events, "{lines:?}");
            assert_eq!(
                (r.ignored, r.duplicates, r.over_limit),
                (ignored, duplicates, over),
                "ignored, duplicates, over the limit of {lines:?}"
            );
            for e in &r.events {
                assert_eq!(e.actor.as_str(), "shipper");
                assert_eq!(e.request.as_ref().unwrap().as_str(), ID);
                assert_eq!(e.details.get("source").unwrap(), "web1");
            }
        }
        (Err(e), Expect::Refused(field, message)) => {
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        (got, _) => panic!("unexpected outcome for {lines:?}: {got:?}"),
    }
}

fn recorded(lines: &[&str]) -> Vec<AuditEvent> {
    let lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    report(
        &grant(),
        &shipper(),
        "web1",
        &lines,
        &Recorded::default(),
        at(1),
    )
    .unwrap()
    .events
}

#[test]
fn a_post_records_this_grants_logins_and_their_logouts_once() {
    let other_session = "Disconnected from user root 127.0.0.1 port 1";
    check(
        &[],
        &[
            "Connection from 127.0.0.1 port 45468 on 127.0.0.1 port 2299 rdomain \"\"",
            ACCEPTED,
            "Received disconnect from 127.0.0.1 port 45468:11: disconnected by user",
            DISCONNECTED,
            other_session,
        ],
        Expect::Recorded(
            &[
                "ssh_login root 127.0.0.1 45468",
                "ssh_logout root 127.0.0.1 45468 disconnected",
            ],
            3,
            0,
            0,
        ),
    );
    // A shipper's retry records nothing twice.
    check(
        &recorded(&[ACCEPTED, DISCONNECTED]),
        &[ACCEPTED, DISCONNECTED],
        Expect::Recorded(&[], 0, 2, 0),
    );
    // Out of order within a post (found by the fuzzer): the logout still
    // belongs to the login after it, and a resend records nothing.
    check(
        &[],
        &[DISCONNECTED, ACCEPTED],
        Expect::Recorded(
            &[
                "ssh_logout root 127.0.0.1 45468 disconnected",
                "ssh_login root 127.0.0.1 45468",
            ],
            0,
            0,
            0,
        ),
    );
    check(
        &recorded(&[DISCONNECTED, ACCEPTED]),
        &[DISCONNECTED, ACCEPTED],
        Expect::Recorded(&[], 0, 2, 0),
    );
    // A logout whose login came in an earlier post.
    check(
        &recorded(&[ACCEPTED]),
        &[DISCONNECTED],
        Expect::Recorded(&["ssh_logout root 127.0.0.1 45468 disconnected"], 0, 0, 0),
    );
    // The same endpoint from another source is another session.
    let events = report(
        &grant(),
        &shipper(),
        "web2",
        &[DISCONNECTED.to_owned()],
        &Recorded::from_events(
            recorded(&[ACCEPTED])
                .iter()
                .map(|e| (e.action.as_str(), &e.details))
                .collect::<Vec<_>>(),
        ),
        at(2),
    )
    .unwrap();
    assert_eq!((events.events.len(), events.ignored), (0, 1));
}

#[test]
fn a_login_with_another_requests_certificate_refuses_the_post_naming_the_line() {
    let other = ACCEPTED.replace(ID, "req_other");
    let other: &'static str = Box::leak(other.into_boxed_str());
    check(
        &[],
        &[ACCEPTED, "noise", other],
        Expect::Refused("lines[2]", "`req_other`, not `req_01JABCDEF`"),
    );
    check(
        &[],
        &[ACCEPTED, "bell \u{7}"],
        Expect::Refused("lines[1]", "U+0007"),
    );
    check(&[], &[], Expect::Refused("lines", "between 1 and 500"));
    let too_many = vec![DISCONNECTED; 501];
    check(
        &[],
        &too_many,
        Expect::Refused("lines", "between 1 and 500"),
    );
    let long: &'static str = Box::leak("x".repeat(2_001).into_boxed_str());
    check(&[], &[long], Expect::Refused("lines[0]", "at most 2000"));
    let lines = [ACCEPTED.to_owned()];
    for source in ["", " ", "web\u{1b}[2J"] {
        let e = report(
            &grant(),
            &shipper(),
            source,
            &lines,
            &Recorded::default(),
            at(1),
        )
        .unwrap_err();
        assert_eq!(e.field, "source", "{e}");
    }
}

#[test]
fn a_grant_gets_at_most_its_bound_of_events_and_the_rest_is_counted() {
    let logins: Vec<String> = (1..=MAX_EVENTS_PER_GRANT as u16 + 3)
        .map(|port| ACCEPTED.replace("port 45468", &format!("port {port}")))
        .collect();
    let (first, rest) = logins.split_at(MAX_EVENTS_PER_GRANT - 1);
    let r = report(
        &grant(),
        &shipper(),
        "web1",
        first,
        &Recorded::default(),
        at(1),
    )
    .unwrap();
    assert_eq!(r.events.len(), MAX_EVENTS_PER_GRANT - 1);
    let before = Recorded::from_events(
        r.events
            .iter()
            .map(|e| (e.action.as_str(), &e.details))
            .collect::<Vec<_>>(),
    );
    assert_eq!(before.events(), MAX_EVENTS_PER_GRANT - 1);
    // Room for one more; the logout of a login over the bound is over it
    // too, not a stranger's.
    let mut lines = rest.to_vec();
    lines.push("Disconnected from user root 127.0.0.1 port 503".to_owned());
    let r = report(&grant(), &shipper(), "web1", &lines, &before, at(2)).unwrap();
    assert_eq!(
        (r.events.len(), r.ignored, r.duplicates, r.over_limit),
        (1, 0, 0, 4)
    );
}

#[test]
fn lines_are_taken_while_active_and_for_a_day_after_the_grant_ended() {
    let mut r = grant();
    assert!(takes_lines(&r, at(10)).is_ok());
    r.state = State::Released;
    r.ended_at = Some(at(100));
    assert!(takes_lines(&r, at(100).plus(LATE_LINES_WITHIN)).is_ok());
    let late = takes_lines(&r, at(101).plus(LATE_LINES_WITHIN))
        .unwrap_err()
        .to_string();
    assert!(late.contains("ended more than 1d ago"), "{late}");
    for state in [
        State::Pending,
        State::Approved,
        State::Denied,
        State::Failed,
    ] {
        r.state = state;
        let refused = takes_lines(&r, at(10)).unwrap_err().to_string();
        assert!(refused.contains(state.as_str()), "{refused}");
    }
}

mod companion_sessions {
    use airlock_core::audit::AuditAction;
    use airlock_core::request::Rejection;
    use airlock_core::ssh_session::{
        accept, takes_sessions, Ending, SessionReport, MAX_RECORDING_BYTES,
    };

    use super::*;

    const HEADER: &str = "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":0}\n";

    fn granted() -> AccessRequest {
        let mut r = grant();
        r.granted_at = Some(at(0));
        r
    }

    fn web1() -> User {
        User::person(
            UserId::parse("web1").unwrap(),
            [].into(),
            [Role::Reporter].into(),
        )
    }

    fn report() -> SessionReport {
        SessionReport {
            id: "0f3a-77".to_owned(),
            host: "web1".to_owned(),
            user: "deploy".to_owned(),
            client: "10.0.4.17 port 51334".to_owned(),
            command: Some("uptime".to_owned()),
            started_at: at(10),
            ended_at: at(70),
            ending: Ending::Revoked,
            recording: format!("{HEADER}[0.5, \"o\", \"up 3 days\\r\\n\"]\n"),
            cut: None,
        }
    }

    #[test]
    fn a_report_goes_on_the_history_with_what_it_says() {
        let accepted = accept(&granted(), &web1(), report(), at(80)).unwrap();
        assert_eq!(accepted.report, report());
        let e = &accepted.event;
        assert_eq!(e.action, AuditAction::SshSessionRecorded);
        assert_eq!(e.request.as_ref().map(RequestId::as_str), Some(ID));
        assert_eq!(e.actor.as_str(), "web1");
        let want: BTreeMap<String, String> = [
            ("session", "0f3a-77"),
            ("host", "web1"),
            ("user", "deploy"),
            ("client", "10.0.4.17 port 51334"),
            ("command", "uptime"),
            ("started_at", &*at(10).to_rfc3339()),
            ("ended_at", &*at(70).to_rfc3339()),
            ("ending", "revoked"),
            ("lasted", "1m"),
            ("recording_bytes", &*report().recording.len().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(e.details, want);
    }

    #[test]
    fn a_recording_past_the_bound_is_cut_at_a_line_and_the_cut_said_after_the_hosts() {
        let line = format!("[0.5, \"o\", \"{}\"]\n", "x".repeat(1000));
        let lines = MAX_RECORDING_BYTES / line.len() + 5;
        let big = format!("{HEADER}{}", line.repeat(lines));
        let sent = big.len();
        let r = SessionReport {
            recording: big,
            cut: Some("output from 3.0s on not kept: 9 bytes".to_owned()),
            ..report()
        };
        let accepted = accept(&granted(), &web1(), r, at(80)).unwrap();
        let kept = &accepted.report.recording;
        assert!(kept.len() <= MAX_RECORDING_BYTES, "{}", kept.len());
        assert!(kept.ends_with('\n') && kept.starts_with(HEADER));
        assert_eq!((kept.len() - HEADER.len()) % line.len(), 0);
        assert_eq!(accepted.sent_bytes, sent);
        let cut = accepted.report.cut.clone().unwrap();
        assert_eq!(
            cut,
            format!(
                "output from 3.0s on not kept: 9 bytes; the server kept {} of {sent} bytes of the recording (at most {MAX_RECORDING_BYTES})",
                kept.len()
            )
        );
        assert_eq!(accepted.event.details["cut"], cut);
    }

    #[test]
    fn a_bad_report_is_refused_naming_the_field() {
        let refused = |r: SessionReport| accept(&granted(), &web1(), r, at(80)).unwrap_err().field;
        assert_eq!(
            refused(SessionReport {
                id: "a b".into(),
                ..report()
            }),
            "id"
        );
        assert_eq!(
            refused(SessionReport {
                id: String::new(),
                ..report()
            }),
            "id"
        );
        assert_eq!(
            refused(SessionReport {
                id: "a".repeat(65),
                ..report()
            }),
            "id"
        );
        assert_eq!(
            refused(SessionReport {
                host: " ".into(),
                ..report()
            }),
            "host"
        );
        assert_eq!(
            refused(SessionReport {
                command: Some("ls\u{1b}[2J".into()),
                ..report()
            }),
            "command"
        );
        assert_eq!(
            refused(SessionReport {
                user: "\u{202e}toor".into(),
                ..report()
            }),
            "user"
        );
        assert_eq!(
            refused(SessionReport {
                ended_at: at(5),
                ..report()
            }),
            "ended_at"
        );
        assert_eq!(
            refused(SessionReport {
                recording: "[0.1, \"o\", \"x\"]\n".into(),
                ..report()
            }),
            "recording"
        );
    }

    #[test]
    fn only_a_request_that_was_granted_had_sessions() {
        assert_eq!(takes_sessions(&granted()), Ok(()));
        // Ended since: its sessions still arrive (a spool delivers late).
        let mut ended = granted();
        ended.state = State::Revoked;
        ended.ended_at = Some(at(60));
        assert_eq!(takes_sessions(&ended), Ok(()));
        let mut pending = grant();
        pending.state = State::Pending;
        assert!(matches!(
            takes_sessions(&pending),
            Err(Rejection::Conflict(m)) if m.contains("never granted")
        ));
    }
}
