//! How the CLI prints results: aligned tables for people, `--json` for scripts.

use crate::terminal::{one_line, say};
use airlock_server::api::{
    ApprovalWaitsReport, AuditEventView, EntitlementView, ExplainView, ExtensionView, HistoryEntry,
    PolicyReloadView, ReconcileView, RequestView, ReviewView, StandingReportView, UsageReportView,
};
use serde::Serialize;

pub fn json_or<T: Serialize>(value: &T, json: bool, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            crate::terminal::json_safe(&serde_json::to_string_pretty(value)?)
        );
    } else {
        human(value);
    }
    Ok(())
}

/// Prints rows with columns padded to the widest cell.
/// Each cell is one line: a value that holds a line break shows it escaped.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| one_line(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        say!("{}", padded.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn state_label(r: &RequestView) -> String {
    if r.scheduled {
        "approved (scheduled)".to_owned()
    } else if r.revocation_overdue {
        format!("{} (revocation overdue)", r.state)
    } else if let Some(e) = r.extension.as_ref().filter(|e| e.state == "pending") {
        // What `airlock pending` lists an active grant for.
        format!(
            "{} (extension by {} awaits approval)",
            r.state,
            human_duration(e.by_seconds)
        )
    } else {
        r.state.clone()
    }
}

pub fn request(r: &RequestView, json: bool) -> anyhow::Result<()> {
    json_or(r, json, |r| {
        let mut lines = vec![
            ("id", r.id.clone()),
            ("state", state_label(r)),
            ("requester", r.requester.clone()),
            ("entitlement", r.entitlement.clone()),
            ("duration", human_duration(r.duration_seconds)),
            ("reason", r.reason.clone()),
        ];
        let mut opt = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                lines.push((k, v.clone()));
            }
        };
        opt("ticket", &r.ticket);
        opt("start at", &r.start_at);
        if let Some(sponsor) = &r.sponsor {
            let ends = r.account_expires.as_deref().unwrap_or("?");
            lines.push((
                "sponsor",
                format!("{sponsor} (an external principal; the account ends {ends})"),
            ));
        }
        lines.push(("created", r.created_at.clone()));
        if r.break_glass {
            lines.push(("break-glass", "yes".to_owned()));
        }
        if let Some(review) = &r.review {
            lines.push(("review", review_label(review)));
        }
        if r.required_approvals > 0 {
            let tiers: Vec<String> = r
                .approval_tiers
                .iter()
                .map(|t| format!("{} of [{}] ({})", t.count, t.groups.join(","), t.policy))
                .chain(r.sponsor.iter().map(|s| format!("the sponsor {s}")))
                .collect();
            let who: Vec<&str> = r.approvals.iter().map(|a| a.approver.as_str()).collect();
            lines.push((
                "approvals",
                format!(
                    "{} given, needs {}{}",
                    r.approvals.len(),
                    tiers.join(" and "),
                    if who.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", who.join(", "))
                    }
                ),
            ));
        } else if r.review.is_some() {
            lines.push(("approvals", "none (break-glass)".to_owned()));
        } else if r.activates_at.is_some() {
            lines.push(("approvals", "auto-approved".to_owned()));
        }
        if !r.policy_version.is_empty() {
            lines.push(("policy set", r.policy_version.clone()));
        }
        let mut opt = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                lines.push((k, v.clone()));
            }
        };
        opt("times out", &r.pending_deadline);
        opt("decided", &r.decided_at);
        opt("granted", &r.granted_at);
        opt("expires", &r.expires_at);
        opt("ended", &r.ended_at);
        opt("ended by", &r.ended_by);
        opt("end reason", &r.end_reason);
        opt("deprovisioned", &r.deprovisioned_at);
        if let Some(left) = r.time_left_seconds {
            lines.push(("time left", human_duration(left)));
        }
        if r.check_count > 0 {
            let last = r
                .last_checked_at
                .as_deref()
                .map(|at| format!(", last at {at}"))
                .unwrap_or_default();
            lines.push(("checks", format!("{}{last}", r.check_count)));
        }
        if let Some(e) = &r.extension {
            lines.push(("extension", extension_summary(e)));
        }
        if let Some(job) = &r.job {
            lines.push((
                "connector",
                format!(
                    "{} pending (attempts: {}{}){}",
                    job.action,
                    job.attempts,
                    if job.in_flight { ", in flight" } else { "" },
                    job.last_error
                        .as_ref()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default()
                ),
            ));
        }
        for (k, v) in lines {
            say!("{:<14} {}", format!("{k}:"), one_line(&v));
        }
        if let Some(b) = &r.bundle {
            let name = b.name.as_deref().unwrap_or("ad hoc");
            say!("bundle:        {} ({})", one_line(name), one_line(&b.id));
            for p in &b.parts {
                let why = p
                    .end_reason
                    .as_deref()
                    .map(|w| format!(": {w}"))
                    .unwrap_or_default();
                say!(
                    "  {}  {}  {}{}",
                    one_line(&p.id),
                    one_line(&p.entitlement),
                    p.state,
                    one_line(&why)
                );
            }
        }
        say!("history:");
        for (at, what) in history(r) {
            say!("  {at}  {}", one_line(&what));
        }
    })
}

/// What happened to a request, oldest first, as far as the request itself
/// records it (the audit log has every event, for auditors).
fn history(r: &RequestView) -> Vec<(String, String)> {
    let mut events = vec![(
        r.created_at.clone(),
        format!(
            "requested by {} for {}{}{}: {}",
            r.requester,
            human_duration(r.duration_seconds),
            r.ticket
                .as_ref()
                .map(|t| format!(", ticket {t}"))
                .unwrap_or_default(),
            if r.break_glass { ", break-glass" } else { "" },
            r.reason
        ),
    )];
    for a in &r.approvals {
        let comment = a
            .comment
            .as_ref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        events.push((
            a.at.clone(),
            format!("approval from {}{comment}", a.approver),
        ));
    }
    if let Some(at) = &r.waiting.reminded_at {
        events.push((
            at.clone(),
            format!("approvers reminded ({})", r.approver_groups.join(", ")),
        ));
    }
    if let Some(at) = &r.waiting.escalated_at {
        events.push((
            at.clone(),
            format!(
                "escalated: {} may approve too",
                r.waiting.escalate_to.join(", ")
            ),
        ));
    }
    if let Some(at) = &r
        .waiting
        .escalate_at
        .as_ref()
        .filter(|_| r.state == "pending" && r.waiting.escalated_at.is_none())
    {
        events.push((
            (*at).clone(),
            format!("(due) escalation to {}", r.waiting.escalate_to.join(", ")),
        ));
    }
    if let (Some(at), Some(starts)) = (&r.decided_at, &r.activates_at) {
        let how = if r.review.is_some() {
            "granted at once (break-glass)"
        } else if r.required_approvals == 0 {
            "auto-approved"
        } else {
            "approved"
        };
        events.push((at.clone(), format!("{how}; access from {starts}")));
    }
    if let Some(at) = &r.granted_at {
        events.push((at.clone(), "granted in the target".to_owned()));
    }
    if let Some(at) = &r.ended_at {
        let by = r
            .ended_by
            .as_ref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        let why = r
            .end_reason
            .as_ref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        events.push((at.clone(), format!("{}{by}{why}", r.state)));
    }
    if let Some(at) = &r.deprovisioned_at {
        events.push((at.clone(), "removal confirmed by the target".to_owned()));
    }
    if let Some(review) = &r.review {
        if let Some(at) = &review.escalated_at {
            events.push((
                at.clone(),
                format!(
                    "review overdue: {} may review too",
                    review.escalate_to.join(", ")
                ),
            ));
        }
        if let Some(v) = &review.verdict {
            events.push((
                v.at.clone(),
                format!(
                    "reviewed by {}: {}: {}",
                    v.reviewer,
                    if v.acceptable {
                        "acceptable"
                    } else {
                        "unacceptable"
                    },
                    v.comment
                ),
            ));
        }
    }
    if let Some(e) = &r.extension {
        events.push((
            e.requested_at.clone(),
            format!(
                "extension by {} asked for (to {}): {}",
                human_duration(e.by_seconds),
                e.expires_at,
                e.reason
            ),
        ));
        for a in &e.approvals {
            events.push((
                a.at.clone(),
                format!("extension approval from {}", a.approver),
            ));
        }
        if let Some(at) = &e.decided_at {
            let what = if e.state == "denied" {
                "extension denied"
            } else {
                "extension granted; the target is told the new expiry"
            };
            events.push((at.clone(), what.to_owned()));
        }
        if let (Some(at), false) = (&e.ended_at, e.state == "denied") {
            let note = e
                .note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default();
            events.push((at.clone(), format!("extension {}{note}", e.state)));
        }
    }
    // RFC 3339 in one format: text order is time order.
    events.sort_by(|a, b| a.0.cmp(&b.0));
    events
}

/// One line about an extension: how much, to when, and where it stands.
fn extension_summary(e: &ExtensionView) -> String {
    let approvals = if e.state == "pending" {
        let tiers: Vec<String> = e
            .approval_tiers
            .iter()
            .map(|t| format!("{} of [{}]", t.count, t.groups.join(",")))
            .collect();
        format!(
            ", {} of {} approvals, needs {}",
            e.approvals.len(),
            e.required_approvals,
            tiers.join(" and ")
        )
    } else {
        String::new()
    };
    format!(
        "by {} to {} ({}{approvals}){}",
        human_duration(e.by_seconds),
        e.expires_at,
        e.state,
        e.note
            .as_ref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default()
    )
}

/// What `airlock extend` did: extended to when, waiting for whom, or why not.
pub fn extension_outcome(r: &RequestView, json: bool) -> anyhow::Result<()> {
    json_or(r, json, |r| {
        let Some(e) = &r.extension else {
            say!("{}: no extension", r.id);
            return;
        };
        let line = match e.state.as_str() {
            "extended" => format!(
                "extended to {} (by {})",
                clock_time(&e.expires_at),
                human_duration(e.by_seconds)
            ),
            "pending" => {
                let groups: Vec<String> = e
                    .approval_tiers
                    .iter()
                    .map(|t| format!("{} of [{}]", t.count, t.groups.join(",")))
                    .collect();
                format!("waiting for approval from {}", groups.join(" and "))
            }
            "provisioning" => format!(
                "granted; the target has not confirmed the new expiry {} yet (see `airlock show {}`)",
                clock_time(&e.expires_at),
                r.id
            ),
            state => format!(
                "{state}: {}",
                e.note.as_deref().unwrap_or("the old expiry stands")
            ),
        };
        say!("{}: {}", r.id, one_line(&line));
    })
}

/// `HH:MM` (UTC) of an RFC 3339 time, or the time as it is when it has
/// none.
fn clock_time(rfc3339: &str) -> String {
    rfc3339
        .split_once('T')
        .and_then(|(date, rest)| rest.get(..5).map(|hm| format!("{hm} UTC on {date}")))
        .unwrap_or_else(|| rfc3339.to_owned())
}

pub fn requests(rs: &[RequestView], json: bool) -> anyhow::Result<()> {
    json_or(&rs, json, |rs| {
        let rows: Vec<Vec<String>> = rs
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    state_label(r),
                    r.requester.clone(),
                    r.entitlement.clone(),
                    human_duration(r.duration_seconds),
                    r.created_at.clone(),
                    r.reason.chars().take(40).collect(),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "STATE",
                "REQUESTER",
                "ENTITLEMENT",
                "DURATION",
                "CREATED",
                "REASON",
            ],
            &rows,
        );
    })
}

pub fn grants(rs: &[RequestView], json: bool) -> anyhow::Result<()> {
    json_or(&rs, json, |rs| {
        let rows: Vec<Vec<String>> = rs
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.requester.clone(),
                    r.entitlement.clone(),
                    state_label(r),
                    r.expires_at.clone().unwrap_or_default(),
                    r.time_left_seconds
                        .map(human_duration)
                        .unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        table(
            &["ID", "USER", "ENTITLEMENT", "STATE", "EXPIRES", "LEFT"],
            &rows,
        );
    })
}

/// Where a break-glass use's review stands, in a few words.
fn review_label(review: &ReviewView) -> String {
    match &review.verdict {
        Some(v) => format!(
            "{} (by {} at {})",
            if v.acceptable {
                "acceptable"
            } else {
                "UNACCEPTABLE"
            },
            v.reviewer,
            v.at
        ),
        None => format!(
            "{} by [{}], due {}",
            if review.overdue { "OVERDUE" } else { "awaited" },
            review.review_by.join(","),
            review.due_at
        ),
    }
}

/// Break-glass uses and where each one's review stands.
pub fn reviews(rs: &[RequestView], json: bool) -> anyhow::Result<()> {
    json_or(&rs, json, |rs| {
        let rows: Vec<Vec<String>> = rs
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.requester.clone(),
                    r.entitlement.clone(),
                    state_label(r),
                    r.created_at.clone(),
                    r.review.as_ref().map(review_label).unwrap_or_default(),
                    r.reason.chars().take(40).collect(),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "USER",
                "ENTITLEMENT",
                "STATE",
                "USED",
                "REVIEW",
                "REASON",
            ],
            &rows,
        );
    })
}

pub fn entitlements(es: &[EntitlementView], json: bool) -> anyhow::Result<()> {
    json_or(&es, json, |es| {
        let rows: Vec<Vec<String>> = es
            .iter()
            .map(|e| {
                vec![
                    e.id.clone(),
                    human_duration(e.max_duration_seconds),
                    e.approval.clone(),
                    if e.needs.is_empty() {
                        "-".to_owned()
                    } else {
                        e.needs.join(", ")
                    },
                    e.break_glass.as_ref().map_or_else(
                        || "-".to_owned(),
                        |b| {
                            format!(
                                "{}, reviewed by {}",
                                human_duration(b.max_duration_seconds),
                                b.review_by.join(",")
                            )
                        },
                    ),
                    e.description.clone(),
                ]
            })
            .collect();
        table(
            &[
                "ENTITLEMENT",
                "MAX",
                "APPROVAL",
                "NEEDS",
                "BREAK-GLASS",
                "DESCRIPTION",
            ],
            &rows,
        );
    })
}

pub fn audit(events: &[AuditEventView], json: bool) -> anyhow::Result<()> {
    json_or(&events, json, |events| {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let details: Vec<String> =
                    e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
                vec![
                    e.seq.to_string(),
                    e.at.clone(),
                    actor(&e.actor, e.actor_kind.as_deref()),
                    e.token.clone().unwrap_or_default(),
                    e.action.clone(),
                    e.request.clone().unwrap_or_default(),
                    e.subject.clone().unwrap_or_default(),
                    e.entitlement.clone().unwrap_or_default(),
                    details.join(" "),
                ]
            })
            .collect();
        table(
            &[
                "SEQ",
                "AT",
                "ACTOR",
                "TOKEN",
                "ACTION",
                "REQUEST",
                "USER",
                "ENTITLEMENT",
                "DETAILS",
            ],
            &rows,
        );
    })
}

/// An actor as printed: a service principal is marked as one.
fn actor(id: &str, kind: Option<&str>) -> String {
    match kind {
        Some(kind) => format!("{id} ({kind})"),
        None => id.to_owned(),
    }
}

/// `airlock ticket-closed`: what closing the ticket ended.
pub fn ticket_closed(c: &airlock_server::api::TicketClosedView) {
    if c.revoked.is_empty() && c.cancelled.is_empty() {
        say!("ticket {}: nothing left to end", c.ticket);
        return;
    }
    for (verb, ids) in [("revoked", &c.revoked), ("cancelled", &c.cancelled)] {
        for id in ids {
            say!("ticket {}: {verb} {id}", c.ticket);
        }
    }
}

/// `airlock activity`: what a post of log lines recorded.
pub fn activity_reported(a: &airlock_server::api::ActivityView) {
    say!(
        "{}: {} recorded, {} already recorded, {} ignored",
        a.request_id,
        a.recorded,
        a.duplicates,
        a.ignored
    );
    if a.over_limit > 0 {
        say!(
            "{} not recorded: the grant has its {} activity events",
            a.over_limit,
            a.limit
        );
    }
}

/// `airlock show`: the grant's timeline of activity (sessions, SSH logins
/// and logouts, elevation claims, warnings that it was unused;
/// `HistoryEntry::activity` words each).
pub fn activity(history: &[HistoryEntry]) {
    let lines: Vec<(&str, String)> = history
        .iter()
        .filter_map(|h| Some((h.at.as_str(), h.activity()?)))
        .collect();
    if lines.is_empty() {
        return;
    }
    say!("activity:");
    for (at, what) in lines {
        say!("  {at}  {}", one_line(&what));
    }
}

/// `airlock show`: the steps of a request taken with an API token, and by
/// whom (a service principal is marked as one).
pub fn acted_with_tokens(history: &[HistoryEntry]) {
    let with_token: Vec<&HistoryEntry> = history.iter().filter(|h| h.token.is_some()).collect();
    if with_token.is_empty() {
        return;
    }
    say!("with API tokens:");
    for h in with_token {
        say!(
            "  {}  {} by {} with token {}",
            one_line(&h.at),
            one_line(&h.action),
            one_line(&actor(&h.actor, h.actor_kind.as_deref())),
            one_line(h.token.as_deref().unwrap_or_default())
        );
    }
}

/// `airlock policy explain`: the decision, the approvals, and the re-decision.
pub fn explain(e: &ExplainView) {
    say!("request      {} ({})", e.request, e.state);
    say!("decided by   policy set {}", e.policy_version);
    say!("decision     {}", e.decision);
    say!("policies     {}", e.policies.join(", "));
    for error in &e.policy_errors {
        say!("error        {error}");
    }
    if let Some(why) = &e.denied_because {
        say!("denied       {why}");
    }
    for a in &e.approvals {
        let verb = if a.action == "denied" {
            "denied"
        } else {
            "approved"
        };
        say!(
            "{verb:<12} {} at {} under {} (set {})",
            a.approver,
            a.at,
            a.policies.join(", "),
            a.policy_version
        );
    }
    let same = if e.now.same_version {
        "same set"
    } else {
        "set in force now"
    };
    say!(
        "now          {} [{}] ({same} {})",
        e.now.decision,
        e.now.policies.join(", "),
        e.now.policy_version
    );
}

/// `airlock policy reload|approve`: what is in force now, or what waits.
pub fn policy_change(r: &PolicyReloadView) {
    match r.proposal.as_deref() {
        Some(id) if r.outcome == "approval_recorded" => say!(
            "approval of {id} recorded: policy set {} waits for another admin; {} stays in force",
            r.version,
            r.previous_version
        ),
        Some(id) => {
            say!(
                "proposed {id}: policy set {} ({} policies) waits for a second admin; {} stays in force",
                r.version, r.policies, r.previous_version
            );
            if r.changes.is_empty() {
                say!("    no user gains or loses anything in the circumstances compared");
            }
            for c in &r.changes {
                say!("    {c}");
            }
        }
        None => say!(
            "policy set {} in force ({} policies; was {})",
            r.version,
            r.policies,
            r.previous_version
        ),
    }
}

/// `airlock reconcile`: one line per connector, then every finding.
pub fn reconcile(r: &ReconcileView) {
    for c in &r.connectors {
        match (c.status.as_str(), &c.error, c.holders) {
            ("error", Some(e), _) => say!("{}: not checked: {e}", c.connector),
            ("skipped", _, _) => say!("{}: skipped (cannot list holders)", c.connector),
            (_, _, holders) => say!(
                "{}: {} holder(s), {} finding(s)",
                c.connector,
                holders.unwrap_or(0),
                c.findings.len()
            ),
        }
    }
    let rows: Vec<Vec<String>> = r
        .connectors
        .iter()
        .flat_map(|c| c.findings.iter().map(move |f| (c, f)))
        .map(|(c, f)| {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            vec![
                c.connector.clone(),
                f.kind.clone(),
                dash(&f.principal),
                dash(&f.request),
                dash(&f.user),
                f.fix.clone(),
                f.outcome.clone(),
                f.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        say!();
        table(
            &[
                "CONNECTOR",
                "KIND",
                "PRINCIPAL",
                "REQUEST",
                "USER",
                "FIX",
                "OUTCOME",
                "DETAIL",
            ],
            &rows,
        );
    }
    let checked = r.connectors.iter().any(|c| c.status == "checked");
    if !checked {
        say!("no connector can list its holders: nothing to compare");
    } else if r.clean() {
        say!(
            "{}",
            if rows.is_empty() {
                "no drift"
            } else {
                "all drift fixed"
            }
        );
    }
}

pub fn approval_waits(report: &ApprovalWaitsReport) {
    if report.entitlements.is_empty() {
        say!("no request since {} needed an approver", report.since);
        return;
    }
    let time = |secs: Option<u64>| secs.map_or("-".to_owned(), human_duration);
    let rows: Vec<Vec<String>> = report
        .entitlements
        .iter()
        .map(|w| {
            vec![
                w.entitlement.clone(),
                w.needing_approval.to_string(),
                w.decided.to_string(),
                time(w.p50_seconds),
                time(w.p95_seconds),
                time(w.longest_seconds),
                w.waiting.to_string(),
                time(w.oldest_waiting_seconds),
                w.timed_out.to_string(),
                w.withdrawn.to_string(),
            ]
        })
        .collect();
    say!(
        "requests created since {} that needed an approver:",
        report.since
    );
    table(
        &[
            "ENTITLEMENT",
            "NEEDED",
            "DECIDED",
            "P50",
            "P95",
            "LONGEST",
            "WAITING",
            "OLDEST",
            "TIMED-OUT",
            "WITHDRAWN",
        ],
        &rows,
    );
}

/// The usage report for people: entitlements, approvers, unused eligibilities.
pub fn usage(report: &UsageReportView) {
    say!("requests created since {}:", report.since);
    let time = |secs: Option<u64>| secs.map_or("-".to_owned(), human_duration);
    let rows: Vec<Vec<String>> = report
        .entitlements
        .iter()
        .map(|e| {
            vec![
                e.entitlement.clone(),
                e.requests.to_string(),
                e.auto_approved.to_string(),
                e.auto_approval_rate
                    .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
                e.needing_approval.to_string(),
                time(e.wait_p50_seconds),
                time(e.wait_p95_seconds),
                e.break_glass.to_string(),
                e.denied_by_policy.to_string(),
                e.denied_by_approver.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ENTITLEMENT",
            "REQUESTS",
            "AUTO",
            "AUTO-RATE",
            "TO-APPROVERS",
            "WAIT-P50",
            "WAIT-P95",
            "BREAK-GLASS",
            "POLICY-DENIED",
            "APPROVER-DENIED",
        ],
        &rows,
    );
    if !report.approvers.is_empty() {
        say!("approvers:");
        let rows: Vec<Vec<String>> = report
            .approvers
            .iter()
            .map(|a| {
                vec![
                    a.approver.clone(),
                    a.approvals.to_string(),
                    a.denials.to_string(),
                    a.quick_approvals.to_string(),
                    if a.signals.is_empty() {
                        "-".to_owned()
                    } else {
                        a.signals.join("; ")
                    },
                ]
            })
            .collect();
        table(
            &["APPROVER", "APPROVED", "DENIED", "WITHIN-30S", "SIGNALS"],
            &rows,
        );
    }
    if report.unused.is_empty() {
        say!("every eligibility was used");
    } else {
        say!("eligible but unused (candidates for removal):");
        for u in &report.unused {
            say!("  {}  {}", u.user, u.entitlement);
        }
    }
}

/// The standing-privilege report for people: each connector's outcome, then
/// every holder, highest risk first, then the totals.
pub fn standing(report: &StandingReportView) {
    say!(
        "holders of each target's access, as listed at {}:",
        report.at
    );
    for c in &report.connectors {
        match c.outcome.as_str() {
            "listed" => say!("  {}: {} holder(s)", c.connector, c.holders),
            "skipped" => say!(
                "  {}: skipped (this connector cannot list holders)",
                c.connector
            ),
            _ => say!(
                "  {}: NOT LISTED: {}",
                c.connector,
                c.error.as_deref().unwrap_or("failed")
            ),
        }
    }
    if report.holders.is_empty() {
        say!("no holders found");
        return;
    }
    let rows: Vec<Vec<String>> = report.holders.iter().map(|h| h.cells("-")).collect();
    table(airlock_server::api::STANDING_COLUMNS, &rows);
    let counts = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    say!(
        "{} holder(s): {}; risk: {}",
        report.holders.len(),
        counts(&report.by_status),
        counts(&report.by_risk)
    );
}

/// The standing-privilege report as CSV (RFC 4180), one holder per line
/// under a header, for a spreadsheet or an auditor (the server's rules,
/// which the web UI's download uses too).
pub fn standing_csv(report: &StandingReportView) {
    print!("{}", airlock_server::api::standing_csv(&report.holders));
}

/// Access-review campaigns and the kinds the config defines.
pub fn access_reviews(list: &airlock_server::api::AccessReviewList) {
    if list.campaigns.is_empty() {
        say!("no access-review campaigns you may see");
    } else {
        let rows: Vec<Vec<String>> = list
            .campaigns
            .iter()
            .map(|c| {
                vec![
                    c.id.clone(),
                    c.template.clone(),
                    c.started_at.clone(),
                    c.due_at.clone(),
                    format!("{} of {}", c.open_items, c.items),
                    match (&c.completed_at, c.overdue) {
                        (Some(_), _) => "complete".to_owned(),
                        (None, true) => "OVERDUE".to_owned(),
                        (None, false) => "open".to_owned(),
                    },
                    c.reviewers.join(" "),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "TEMPLATE",
                "STARTED",
                "DUE",
                "OPEN",
                "STATE",
                "REVIEWERS",
            ],
            &rows,
        );
    }
    for t in &list.templates {
        say!(
            "template {}: {}, by {}, due within {}, reviews {}",
            t.name,
            t.every
                .as_deref()
                .map_or_else(|| "on demand".to_owned(), |e| format!("every {e}")),
            t.reviewers.join(", "),
            t.due_within,
            t.include.join(" and ")
        );
    }
}

const ACCESS_REVIEW_COLUMNS: &[&str] = &[
    "ITEM", "KIND", "USER", "ACCESS", "DETAIL", "DECISION", "BY", "AT", "COMMENT", "SEQ", "HASH",
    "REMOVAL",
];

fn access_review_cells(i: &airlock_server::api::AccessReviewItemView, none: &str) -> Vec<String> {
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| none.to_owned());
    let (access, detail) = match i.kind.as_str() {
        "eligibility" => (or(&i.entitlement), or(&i.route)),
        _ => (
            format!("{}:{}", or(&i.connector), or(&i.principal)),
            format!(
                "{} {} risk, gives {}",
                or(&i.status),
                or(&i.risk),
                i.entitlements.join(" ")
            ),
        ),
    };
    vec![
        i.item.to_string(),
        i.kind.clone(),
        or(&i.user),
        access,
        detail,
        or(&i.decision),
        or(&i.decided_by),
        or(&i.decided_at),
        or(&i.comment),
        i.seq.map_or_else(|| none.to_owned(), |s| s.to_string()),
        or(&i.hash),
        match (&i.removal, &i.removal_error) {
            (Some(state), Some(e)) => format!("{state}: {e}"),
            (Some(state), None) => state.clone(),
            (None, _) => none.to_owned(),
        },
    ]
}

/// A campaign and its items.
pub fn access_review(detail: &airlock_server::api::AccessReviewDetail) {
    let c = &detail.campaign;
    say!(
        "{} ({}), started {} by {}, due {}{}: {} of {} item(s) open; reviewers {}",
        c.id,
        c.template,
        c.started_at,
        c.started_by,
        c.due_at,
        if c.overdue { " (OVERDUE)" } else { "" },
        c.open_items,
        c.items,
        c.reviewers.join(", ")
    );
    if let Some(done) = &c.completed_at {
        say!("complete at {done}");
    }
    let rows: Vec<Vec<String>> = detail
        .items
        .iter()
        .map(|i| {
            let mut cells = access_review_cells(i, "-");
            // The hash is for evidence; the table shows where to find it.
            cells.remove(10);
            cells
        })
        .collect();
    let header: Vec<&str> = ACCESS_REVIEW_COLUMNS
        .iter()
        .copied()
        .filter(|h| *h != "HASH")
        .collect();
    table(&header, &rows);
}

/// A campaign's evidence as CSV (RFC 4180), one item per line under a
/// header, each decision with its audit event's seq and hash.
pub fn access_review_csv(detail: &airlock_server::api::AccessReviewDetail) {
    let mut header: Vec<String> = vec!["campaign".to_owned(), "template".to_owned()];
    header.extend(ACCESS_REVIEW_COLUMNS.iter().map(|c| c.to_lowercase()));
    println!("{}", airlock_server::api::csv_line(header));
    for i in &detail.items {
        let mut cells = vec![detail.campaign.id.clone(), detail.campaign.template.clone()];
        cells.extend(access_review_cells(i, ""));
        println!("{}", airlock_server::api::csv_line(cells));
    }
}
