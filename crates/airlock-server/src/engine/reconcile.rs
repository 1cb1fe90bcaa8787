//! Reconciliation: who holds each connector's access in the target, against
//! the grants Airlock has open. The core ([`airlock_core::drift`]) decides
//! what is drift and what fixes it; this module gathers the facts (holders
//! first, then the requests that could explain them), records every finding,
//! and, when asked to fix, makes the connector calls and records each
//! result. It runs on demand (`POST /v1/reconcile`, `airlock reconcile`) and
//! on a schedule (`server.reconcile_every`), always with fixes on the
//! schedule: what a fix does is the entitlement's `drift` setting's business
//! (see the rule in the core module).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use airlock_connectors::{Connector, ConnectorError, Granted, Holding};
use airlock_core::catalog::User;
use airlock_core::drift::{self, Drift, Finding, Fix, Holder, Known, Observation};
use airlock_core::request::{AccessRequest, State};
use airlock_core::{EntitlementId, RequestId, Timestamp};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{grant_spec, Engine, EngineError};
use crate::store::{Exclusive, RequestFilter};

/// Most grants of one entitlement read for one reconciliation. A connector
/// with more is not reconciled at all: with a grant left unread, its holder
/// would look unmanaged, and `drift = "revoke"` would remove it.
const MAX_GRANTS: u32 = 50_000;

/// The first scheduled run comes this soon after start (or after one
/// period, if that is shorter): soon enough to report drift that built up
/// while Airlock was down, late enough for the scheduler's first pass.
const FIRST_RUN_AFTER: Duration = Duration::from_secs(30);

/// What one reconciliation found and did.
#[derive(Debug, Clone)]
pub struct ReconcileReport {
    pub at: Timestamp,
    /// Whether fixes were applied.
    pub fix: bool,
    /// One per connector, by name.
    pub connectors: Vec<ConnectorReport>,
}

impl ReconcileReport {
    /// Findings this run left in place (reported only, not attempted,
    /// failed or skipped).
    pub fn unfixed(&self) -> usize {
        self.findings().filter(|f| !f.is_fixed()).count()
    }

    /// Connectors whose holders could not be checked.
    pub fn errors(&self) -> usize {
        self.connectors
            .iter()
            .filter(|c| matches!(c.outcome, ConnectorOutcome::Failed(_)))
            .count()
    }

    pub fn findings(&self) -> impl Iterator<Item = &FindingReport> {
        self.connectors.iter().flat_map(|c| match &c.outcome {
            ConnectorOutcome::Checked { findings, .. } => findings.as_slice(),
            ConnectorOutcome::Skipped | ConnectorOutcome::Failed(_) => &[],
        })
    }
}

#[derive(Debug, Clone)]
pub struct ConnectorReport {
    pub connector: String,
    pub outcome: ConnectorOutcome,
}

#[derive(Debug, Clone)]
pub enum ConnectorOutcome {
    /// The connector cannot list holders (`holders()` is `None`).
    Skipped,
    /// Listing the holders failed (the target is down, say), or there were
    /// too many grants to read safely.
    Failed(String),
    Checked {
        holders: usize,
        findings: Vec<FindingReport>,
    },
}

#[derive(Debug, Clone)]
pub struct FindingReport {
    pub drift: Drift,
    pub outcome: FixOutcome,
}

impl FindingReport {
    pub fn is_fixed(&self) -> bool {
        matches!(self.outcome, FixOutcome::Fixed { .. })
    }
}

/// What became of a finding's fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixOutcome {
    /// The run did not apply fixes.
    NotAttempted,
    /// The rule is to leave it (`drift = "report"`, or an expired grant).
    Left,
    Fixed {
        note: Option<String>,
    },
    Failed {
        error: String,
        retryable: bool,
    },
    /// Not attempted: the request changed between the assessment and the fix.
    Skipped {
        why: String,
    },
}

impl FixOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            FixOutcome::NotAttempted => "not_attempted",
            FixOutcome::Left => "none",
            FixOutcome::Fixed { .. } => "fixed",
            FixOutcome::Failed { .. } => "failed",
            FixOutcome::Skipped { .. } => "skipped",
        }
    }
}

/// A connector call bounded by the connector's own timeout.
pub(super) async fn bounded<T>(
    connector: &dyn Connector,
    what: &str,
    call: impl std::future::Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    let limit = connector.call_timeout();
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ConnectorError::Retryable(format!(
            "{what} timed out after {}",
            humantime::format_duration(limit)
        )))
    })
}

/// The holders a connector listed, as the core sees them.
pub(super) fn as_held(holders: &[Holding]) -> Vec<Holder> {
    holders
        .iter()
        .map(|h| Holder {
            principal: h.principal.clone(),
            request_id: h.request_id.clone(),
        })
        .collect()
}

impl Engine {
    /// Compares every connector's holders with Airlock's grants, records
    /// each finding (`drift_found`) and, with `fix`, applies the fixes the
    /// rule decides, recording each result (`drift_fixed` /
    /// `drift_fix_failed`). Connectors are checked concurrently; one that
    /// cannot be reached is reported and the others go on. Fails only when
    /// the store does, since nothing is fixed unless its finding is recorded.
    pub async fn reconcile(
        self: &Arc<Self>,
        fix: bool,
        by: Option<&User>,
    ) -> Result<ReconcileReport, EngineError> {
        // Its fixes can grant again, and it judges by the stored grants.
        self.check_trusted()?;
        let _one_at_a_time = self.reconciling.lock().await;
        let at = self.clock.now();
        let mut runs = tokio::task::JoinSet::new();
        for (name, connector) in &self.connectors {
            let engine = Arc::clone(self);
            let (name, connector, by) = (name.clone(), Arc::clone(connector), by.cloned());
            let span = tracing::info_span!("reconcile", connector = %name, fix);
            runs.spawn(tracing::Instrument::instrument(
                async move {
                    let outcome = engine
                        .reconcile_connector(&name, connector.as_ref(), fix, by.as_ref())
                        .await;
                    (name, outcome)
                },
                span,
            ));
        }
        let mut connectors = Vec::new();
        let mut failure = None;
        while let Some(joined) = runs.join_next().await {
            match joined {
                Ok((connector, Ok(outcome))) => {
                    connectors.push(ConnectorReport { connector, outcome })
                }
                Ok((_, Err(e))) => failure = Some(e),
                Err(e) => error!(error = %e, "a reconciliation task failed"),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // A task that died (it cannot panic by design, but) is reported too.
        for name in self.connectors.keys() {
            if !connectors.iter().any(|c| &c.connector == name) {
                connectors.push(ConnectorReport {
                    connector: name.clone(),
                    outcome: ConnectorOutcome::Failed(
                        "reconciliation of this connector stopped unexpectedly; see the server log"
                            .to_owned(),
                    ),
                });
            }
        }
        connectors.sort_by(|a, b| a.connector.cmp(&b.connector));
        Ok(ReconcileReport {
            at,
            fix,
            connectors,
        })
    }

    async fn reconcile_connector(
        &self,
        name: &str,
        connector: &dyn Connector,
        fix: bool,
        by: Option<&User>,
    ) -> Result<ConnectorOutcome, EngineError> {
        // Holders first, requests after: every grant a listed holder could
        // come from is then visible (see `airlock_core::drift`).
        let listed_at = self.clock.now();
        let holders = match bounded(connector, "listing holders", connector.holders()).await {
            Ok(Some(holders)) => holders,
            Ok(None) => return Ok(ConnectorOutcome::Skipped),
            Err(e) => {
                warn!(error = %e, "cannot list holders; this connector is not reconciled");
                return Ok(ConnectorOutcome::Failed(e.to_string()));
            }
        };
        let requests = match self.explaining_requests(name, connector, &holders).await? {
            Ok(requests) => requests,
            Err(why) => {
                warn!(error = %why, "this connector is not reconciled");
                return Ok(ConnectorOutcome::Failed(why));
            }
        };
        let held = as_held(&holders);
        let observation = Observation {
            connector: name,
            listed_at,
            holders: &held,
            requests: &requests,
            unmanaged: drift::unmanaged_policy(&self.catalog, name),
        };
        let drifts = drift::assess(&observation, self.clock.now());
        // Recorded before anything is fixed: no fix without its finding.
        if !drifts.is_empty() {
            let now = self.clock.now();
            self.record(
                drifts
                    .iter()
                    .map(|d| drift::found(d, fix, by, now))
                    .collect(),
            )
            .await?;
        }
        let mut findings = Vec::with_capacity(drifts.len());
        for d in drifts {
            let outcome = match (fix, d.fix) {
                (false, _) => FixOutcome::NotAttempted,
                (true, Fix::None { .. }) => FixOutcome::Left,
                (true, _) => {
                    let outcome = self.apply_fix(connector, &d).await;
                    let now = self.clock.now();
                    let event = match &outcome {
                        FixOutcome::Fixed { note } => drift::fixed(&d, note.as_deref(), by, now),
                        FixOutcome::Failed { error, retryable } => {
                            drift::fix_failed(&d, error, *retryable, by, now)
                        }
                        FixOutcome::Skipped { why } => {
                            drift::fix_failed(&d, &format!("skipped: {why}"), true, by, now)
                        }
                        FixOutcome::NotAttempted | FixOutcome::Left => {
                            drift::fix_failed(&d, "not attempted", true, by, now)
                        }
                    };
                    self.record(vec![event]).await?;
                    outcome
                }
            };
            match &outcome {
                FixOutcome::Fixed { .. } => info!(
                    kind = d.finding.kind(),
                    principal = d.finding.principal(),
                    fix = d.fix.as_str(),
                    "drift fixed"
                ),
                FixOutcome::Failed { error, .. } => warn!(kind = d.finding.kind(),
                    principal = d.finding.principal(), fix = d.fix.as_str(), %error, "drift fix failed"),
                _ => info!(
                    kind = d.finding.kind(),
                    principal = d.finding.principal(),
                    fix = d.fix.as_str(),
                    outcome = outcome.as_str(),
                    "drift found"
                ),
            }
            findings.push(FindingReport { drift: d, outcome });
        }
        Ok(ConnectorOutcome::Checked {
            holders: holders.len(),
            findings,
        })
    }

    /// The requests that may explain `holders` (see [`Observation::requests`]),
    /// each with the principal the connector lists its grant under. The
    /// inner error says why the connector cannot be reconciled safely.
    pub(super) async fn explaining_requests(
        &self,
        name: &str,
        connector: &dyn Connector,
        holders: &[Holding],
    ) -> Result<Result<Vec<Known>, String>, EngineError> {
        let entitlements: Vec<EntitlementId> = self
            .catalog
            .entitlements
            .values()
            .filter(|e| e.connector == name)
            .map(|e| e.id.clone())
            .collect();
        let mut found: BTreeMap<RequestId, AccessRequest> = BTreeMap::new();
        for entitlement in &entitlements {
            // Active or being revoked; and approved (being granted, or not yet).
            for filter in [
                RequestFilter {
                    holding_access: true,
                    ..RequestFilter::default()
                },
                RequestFilter {
                    states: vec![State::Approved],
                    ..RequestFilter::default()
                },
            ] {
                let filter = RequestFilter {
                    entitlement: Some(entitlement.clone()),
                    limit: MAX_GRANTS,
                    ..filter
                };
                let page = self.store.list_requests(&filter).await?;
                if page.len() >= usize::try_from(MAX_GRANTS).unwrap_or(usize::MAX) {
                    return Ok(Err(format!(
                        "`{entitlement}` has {MAX_GRANTS} or more open grants, more than reconciliation reads at once"
                    )));
                }
                found.extend(page.into_iter().map(|r| (r.id.clone(), r)));
            }
        }
        // Requests a holder names, whatever their entitlement or state.
        for id in holders.iter().filter_map(|h| h.request_id.as_ref()) {
            if !found.contains_key(id) {
                if let Some(r) = self.store.get_request(id).await? {
                    found.insert(r.id.clone(), r);
                }
            }
        }
        // Holders that name no request and match no open grant: the newest
        // ended request of the user whose login they are, if any, may show
        // they held access through Airlock before (lingering).
        let principal = |r: &AccessRequest| connector.principal_for(&r.requester, Some(&r.id));
        let explained: BTreeSet<String> = found.values().filter_map(principal).collect();
        let unexplained: BTreeSet<&str> = holders
            .iter()
            .filter(|h| h.request_id.is_none() && !explained.contains(&h.principal))
            .map(|h| h.principal.as_str())
            .collect();
        if !unexplained.is_empty() {
            let users = self.catalog.users.keys().filter(|u| {
                connector
                    .principal_for(u, None)
                    .is_some_and(|p| unexplained.contains(p.as_str()))
            });
            for user in users {
                for entitlement in &entitlements {
                    let filter = RequestFilter {
                        states: vec![
                            State::Expired,
                            State::Released,
                            State::Revoked,
                            State::Failed,
                        ],
                        requester: Some(user.clone()),
                        entitlement: Some(entitlement.clone()),
                        limit: 1,
                        ..RequestFilter::default()
                    };
                    for r in self.store.list_requests(&filter).await? {
                        found.entry(r.id.clone()).or_insert(r);
                    }
                }
            }
        }
        Ok(Ok(found
            .into_values()
            .map(|request| Known {
                principal: principal(&request),
                request,
            })
            .collect()))
    }

    /// Carries out one fix, re-reading the request first: the assessment is
    /// a moment old, and a request that moved on meanwhile is the
    /// lifecycle's again.
    async fn apply_fix(&self, connector: &dyn Connector, d: &Drift) -> FixOutcome {
        let failed = |e: ConnectorError| FixOutcome::Failed {
            retryable: e.is_retryable(),
            error: e.message().to_owned(),
        };
        match (&d.finding, d.fix) {
            (
                Finding::Unmanaged { principal } | Finding::UnknownRequest { principal, .. },
                Fix::RemoveHolder,
            ) => {
                let holding = Holding {
                    principal: principal.clone(),
                    request_id: d.finding.request_id().cloned(),
                };
                match bounded(
                    connector,
                    "removing the holder",
                    connector.remove_holder(&holding),
                )
                .await
                {
                    Ok(()) => FixOutcome::Fixed { note: None },
                    Err(e) => failed(e),
                }
            }
            (Finding::Lingering { request, .. }, Fix::Revoke) => {
                let current = match self.store.get_request(&request.id).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return skipped("the request is gone from the store"),
                    Err(e) => return store_failed(&e),
                };
                if !current.state.is_terminal() || current.job.is_some() {
                    return skipped("the request has connector work under way again");
                }
                let spec = grant_spec(&current, current.claim_token);
                match bounded(connector, "revoking", connector.revoke(&spec)).await {
                    Ok(()) => FixOutcome::Fixed { note: None },
                    Err(e) => failed(e),
                }
            }
            (Finding::Missing { request, .. }, Fix::Grant) => {
                self.regrant(connector, &request.id).await
            }
            (_, Fix::None { .. }) => FixOutcome::Left,
            (finding, fix) => FixOutcome::Failed {
                error: format!(
                    "no way to apply `{}` to a `{}` finding",
                    fix.as_str(),
                    finding.kind()
                ),
                retryable: false,
            },
        }
    }

    /// Grants an active request again with its current claim (rule 1 makes
    /// that restore access removed out of band). If the request ended while
    /// the grant was in flight, revokes again at once, so a re-grant can
    /// never outlive its request.
    async fn regrant(&self, connector: &dyn Connector, id: &RequestId) -> FixOutcome {
        let current = match self.store.get_request(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return skipped("the request is gone from the store"),
            Err(e) => return store_failed(&e),
        };
        if current.state != State::Active || current.job.is_some() {
            return skipped("the request is no longer active");
        }
        if current.expires_at.is_none_or(|e| e <= self.clock.now()) {
            return skipped("the grant expired meanwhile");
        }
        let spec = grant_spec(&current, current.claim_token);
        let granted = match bounded(connector, "granting", connector.grant(&spec)).await {
            Ok(granted) => granted,
            Err(e) => {
                return FixOutcome::Failed {
                    retryable: e.is_retryable(),
                    error: e.message().to_owned(),
                }
            }
        };
        let after = match self.store.get_request(id).await {
            Ok(r) => r,
            Err(e) => return store_failed(&e),
        };
        match after {
            Some(after) if after.state == State::Active => {
                let mut note = None;
                if let Granted {
                    credential: Some(credential),
                    ..
                } = granted
                {
                    self.hold_credential(&after, credential);
                    note = Some(
                        "the target issued a new credential; the requester collects it with `airlock credential`"
                            .to_owned(),
                    );
                }
                FixOutcome::Fixed { note }
            }
            ended => {
                let spec = ended
                    .as_ref()
                    .map_or(spec.clone(), |r| grant_spec(r, r.claim_token));
                match bounded(connector, "revoking", connector.revoke(&spec)).await {
                    Ok(()) => skipped("the request ended during the re-grant, which was revoked again"),
                    Err(e) => FixOutcome::Failed {
                        retryable: e.is_retryable(),
                        error: format!(
                            "the request ended during the re-grant, and revoking it again failed: {}",
                            e.message()
                        ),
                    },
                }
            }
        }
    }

    /// Runs [`Engine::reconcile`] with fixes every `every` (the first run
    /// after [`FIRST_RUN_AFTER`] or `every`, whichever is shorter) until
    /// `shutdown` turns true. A failed run is logged; the next one comes on
    /// time.
    pub async fn run_reconciler(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pause = every.min(FIRST_RUN_AFTER);
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = shutdown.changed() => if changed.is_err() { return },
            }
            if *shutdown.borrow() {
                return;
            }
            pause = every;
            // With several replicas on one PostgreSQL, one of them runs each
            // round; the others skip it rather than audit every finding again.
            let guard = match self
                .store
                .try_exclusive(Exclusive::ScheduledReconciliation)
                .await
            {
                Ok(Some(guard)) => guard,
                Ok(None) => {
                    info!("another replica is reconciling; this round is theirs");
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "cannot tell whether another replica is reconciling; skipping this round");
                    continue;
                }
            };
            let result = self.reconcile(true, None).await;
            guard.release().await;
            match result {
                Ok(report) => {
                    let (unfixed, errors) = (report.unfixed(), report.errors());
                    let found = report.findings().count();
                    if unfixed > 0 || errors > 0 {
                        warn!(findings = found, unfixed, connectors_failed = errors,
                            "scheduled reconciliation left drift in place; see the audit log (drift_*)");
                    } else {
                        info!(findings = found, "scheduled reconciliation done");
                    }
                }
                Err(e) => error!(error = %e, "scheduled reconciliation failed"),
            }
        }
    }
}

fn skipped(why: &str) -> FixOutcome {
    FixOutcome::Skipped {
        why: why.to_owned(),
    }
}

fn store_failed(e: &crate::store::StoreError) -> FixOutcome {
    error!(error = %e, "cannot re-read the request before fixing it");
    FixOutcome::Failed {
        error: "the store could not be read".to_owned(),
        retryable: true,
    }
}
