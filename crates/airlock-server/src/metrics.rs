//! Prometheus metrics, kept as plain atomics and rendered in the text
//! exposition format at `/metrics`: enough to alert on stuck revocations and
//! failing connectors without pulling in a metrics framework.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_core::audit::AuditAction;
use airlock_core::request::JobAction;

use airlock_core::Timestamp;

use crate::store::{OutboxState, OutboxSummary, ReviewBacklog, RevocationBacklog};

/// How a notification attempt was settled, in the order they are counted.
const NOTIFICATION_OUTCOMES: [&str; 4] = ["sent", "retry", "failed", "dropped"];

/// Every audit action, in the order their counters are kept.
const ACTIONS: [AuditAction; AuditAction::ALL.len()] = AuditAction::ALL;

/// What a check answered (`GET /v1/check`), in the order they are counted.
const CHECK_ANSWERS: [&str; 2] = ["holds", "does_not_hold"];

/// Upper bounds (seconds) of the revocation lag histogram buckets.
const LAG_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Connector call outcomes, by action.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome {
    Ok,
    Retryable,
    Permanent,
}

pub struct Metrics {
    events: [AtomicU64; ACTIONS.len()],
    /// [grant, revoke] × [ok, retryable, permanent]
    calls: [[AtomicU64; 3]; 2],
    lag_buckets: [AtomicU64; LAG_BUCKETS.len()],
    lag_count: AtomicU64,
    lag_sum_ms: AtomicU64,
    notifications: [AtomicU64; NOTIFICATION_OUTCOMES.len()],
    checks: [AtomicU64; CHECK_ANSWERS.len()],
}

// By hand: arrays longer than 32 have no derived `Default`.
impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            calls: Default::default(),
            lag_buckets: Default::default(),
            lag_count: AtomicU64::new(0),
            lag_sum_ms: AtomicU64::new(0),
            notifications: Default::default(),
            checks: Default::default(),
        }
    }
}

impl Metrics {
    pub fn event(&self, action: AuditAction) {
        if let Some(i) = ACTIONS.iter().position(|a| *a == action) {
            if let Some(c) = self.events.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn call(&self, action: JobAction, outcome: CallOutcome) {
        let row = match action {
            JobAction::Grant => 0,
            JobAction::Revoke => 1,
        };
        if let Some(c) = self.calls.get(row).and_then(|r| r.get(outcome as usize)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A check answered (`holds`: the principal holds the entitlement now);
    /// checks refused or asking about an unknown entitlement are not
    /// answers.
    pub fn check(&self, holds: bool) {
        let i = usize::from(!holds);
        if let Some(c) = self.checks.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A notification attempt settled as `outcome` (`sent`, `retry`,
    /// `failed`, `dropped`).
    pub fn notification(&self, outcome: &str) {
        if let Some(c) = NOTIFICATION_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .and_then(|i| self.notifications.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The break-glass uses awaiting review (from the store, the same on
    /// every replica).
    pub fn render_reviews(&self, backlog: ReviewBacklog) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP airlock_break_glass_unreviewed Break-glass uses no reviewer has judged yet.\n",
        );
        out.push_str("# TYPE airlock_break_glass_unreviewed gauge\n");
        let _ = writeln!(out, "airlock_break_glass_unreviewed {}", backlog.open);
        out.push_str("# HELP airlock_break_glass_reviews_overdue Of those, the ones past their review time.\n");
        out.push_str("# TYPE airlock_break_glass_reviews_overdue gauge\n");
        let _ = writeln!(
            out,
            "airlock_break_glass_reviews_overdue {}",
            backlog.overdue
        );
        out
    }

    /// The outbox's gauges (from the store, the same on every replica) and
    /// this replica's attempt counters.
    /// The access-review backlog: open items across open campaigns, and
    /// campaigns past their due time.
    pub fn render_access_reviews(&self, open_items: u64, overdue_campaigns: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP airlock_access_review_items_open Access-review items no reviewer has decided yet.\n");
        out.push_str("# TYPE airlock_access_review_items_open gauge\n");
        let _ = writeln!(out, "airlock_access_review_items_open {open_items}");
        out.push_str("# HELP airlock_access_reviews_overdue Access-review campaigns with open items past their due time.\n");
        out.push_str("# TYPE airlock_access_reviews_overdue gauge\n");
        let _ = writeln!(out, "airlock_access_reviews_overdue {overdue_campaigns}");
        out
    }

    pub fn render_notifications(&self, summary: &OutboxSummary, now: Timestamp) -> String {
        let mut out = String::new();
        out.push_str("# HELP airlock_notifications_backlog Notifications due and not sent yet.\n");
        out.push_str("# TYPE airlock_notifications_backlog gauge\n");
        let _ = writeln!(out, "airlock_notifications_backlog {}", summary.backlog);
        out.push_str("# HELP airlock_notifications_oldest_age_seconds How long the oldest unsent notification has been due.\n");
        out.push_str("# TYPE airlock_notifications_oldest_age_seconds gauge\n");
        let age = summary
            .oldest_due
            .map_or(0.0, |d| d.until(now).as_secs_f64());
        let _ = writeln!(out, "airlock_notifications_oldest_age_seconds {age}");
        out.push_str("# HELP airlock_notifications Notifications in the outbox, by state.\n");
        out.push_str("# TYPE airlock_notifications gauge\n");
        for state in OutboxState::ALL {
            let _ = writeln!(
                out,
                "airlock_notifications{{state=\"{}\"}} {}",
                state.as_str(),
                summary.counts.get(&state).copied().unwrap_or(0)
            );
        }
        out.push_str("# HELP airlock_notification_attempts_total Notification attempts settled by this replica, by outcome.\n");
        out.push_str("# TYPE airlock_notification_attempts_total counter\n");
        for (outcome, count) in NOTIFICATION_OUTCOMES.iter().zip(&self.notifications) {
            let _ = writeln!(
                out,
                "airlock_notification_attempts_total{{outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out
    }

    /// Time from a grant's expiry to the target confirming its removal.
    pub fn revocation_lag(&self, lag: Duration) {
        let secs = lag.as_secs_f64();
        for (bound, bucket) in LAG_BUCKETS.iter().zip(&self.lag_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lag_count.fetch_add(1, Ordering::Relaxed);
        self.lag_sum_ms.fetch_add(
            u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The text exposition format, with the revocations the targets have
    /// not confirmed yet (read from the store for each scrape, so every
    /// replica reports the same backlog).
    pub fn render(&self, backlog: RevocationBacklog) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str("# HELP airlock_events_total Audit events recorded, by action.\n");
        out.push_str("# TYPE airlock_events_total counter\n");
        for (action, count) in ACTIONS.iter().zip(&self.events) {
            let _ = writeln!(
                out,
                "airlock_events_total{{action=\"{}\"}} {}",
                action.as_str(),
                get(count)
            );
        }
        out.push_str("# HELP airlock_checks_total Checks answered by this replica (GET /v1/check), by answer.\n");
        out.push_str("# TYPE airlock_checks_total counter\n");
        for (answer, count) in CHECK_ANSWERS.iter().zip(&self.checks) {
            let _ = writeln!(
                out,
                "airlock_checks_total{{answer=\"{answer}\"}} {}",
                get(count)
            );
        }
        out.push_str(
            "# HELP airlock_connector_calls_total Connector calls, by action and outcome.\n",
        );
        out.push_str("# TYPE airlock_connector_calls_total counter\n");
        for (action, row) in ["grant", "revoke"].iter().zip(&self.calls) {
            for (outcome, count) in ["ok", "retryable", "permanent"].iter().zip(row) {
                let _ = writeln!(
                    out,
                    "airlock_connector_calls_total{{action=\"{action}\",outcome=\"{outcome}\"}} {}",
                    get(count)
                );
            }
        }
        out.push_str(
            "# HELP airlock_revocation_lag_seconds Expiry to confirmed removal in the target.\n",
        );
        out.push_str("# TYPE airlock_revocation_lag_seconds histogram\n");
        for (bound, bucket) in LAG_BUCKETS.iter().zip(&self.lag_buckets) {
            let _ = writeln!(
                out,
                "airlock_revocation_lag_seconds_bucket{{le=\"{bound}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.lag_count);
        let _ = writeln!(
            out,
            "airlock_revocation_lag_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "airlock_revocation_lag_seconds_sum {}",
            get(&self.lag_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(out, "airlock_revocation_lag_seconds_count {count}");
        out.push_str("# HELP airlock_revocations_outstanding Grants whose removal the target has not confirmed.\n");
        out.push_str("# TYPE airlock_revocations_outstanding gauge\n");
        let _ = writeln!(
            out,
            "airlock_revocations_outstanding {}",
            backlog.outstanding
        );
        out.push_str("# HELP airlock_revocations_overdue Of those, the ones past server.revocation_overdue_after.\n");
        out.push_str("# TYPE airlock_revocations_overdue gauge\n");
        let _ = writeln!(out, "airlock_revocations_overdue {}", backlog.overdue);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.event(AuditAction::Granted);
        m.event(AuditAction::Granted);
        m.call(JobAction::Revoke, CallOutcome::Retryable);
        m.revocation_lag(Duration::from_millis(80));
        m.revocation_lag(Duration::from_secs(3));
        m.check(true);
        m.check(false);
        m.check(false);
        let text = m.render(RevocationBacklog {
            outstanding: 3,
            overdue: 1,
        });
        assert!(
            text.contains("airlock_events_total{action=\"granted\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "airlock_connector_calls_total{action=\"revoke\",outcome=\"retryable\"} 1\n"
        ));
        assert!(text.contains("airlock_revocation_lag_seconds_bucket{le=\"0.05\"} 0\n"));
        assert!(text.contains("airlock_revocation_lag_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("airlock_revocation_lag_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("airlock_revocation_lag_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("airlock_revocation_lag_seconds_sum 3.08\n"));
        assert!(text.contains("airlock_revocations_outstanding 3\n"));
        assert!(text.contains("airlock_revocations_overdue 1\n"));
        assert!(
            text.contains("airlock_checks_total{answer=\"holds\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("airlock_checks_total{answer=\"does_not_hold\"} 2\n"),
            "{text}"
        );
    }
}
