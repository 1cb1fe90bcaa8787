//! Access-review campaigns as the engine runs them: starting one (on demand
//! or when its schedule says) over the eligibilities the policies in force
//! give and the standing holders the targets list, deciding items, and the
//! rounds that remind, escalate, start scheduled campaigns and take removed
//! holders out of their targets. What each step means is the core's
//! (`airlock_core::access_review`); this module gathers facts and carries
//! out the results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use airlock_connectors::Holding;
use airlock_core::access::{self, Capability};
use airlock_core::access_review::{self, Campaign, Decision, Item, Subject, Template};
use airlock_core::audit::{Actor, AuditAction, AuditEvent};
use airlock_core::catalog::User;
use airlock_core::request::Rejection;
use airlock_core::{CampaignId, EntitlementId, GroupName, UserId};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::reconcile::bounded;
use super::standing::ListingOutcome;
use super::{Engine, EngineError};
use crate::store::access_reviews::{ReviewWrite, StepWrite};
use crate::store::Exclusive;

/// How often the runner looks for due steps, scheduled campaigns and
/// removals to carry out (on the engine's clock).
pub const ACCESS_REVIEW_ROUND: Duration = Duration::from_secs(60);

/// Most removals tried per round.
const REMOVALS_PER_ROUND: u32 = 100;

/// Most campaigns a list returns.
pub const MAX_LISTED_CAMPAIGNS: u32 = 200;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub started: Vec<CampaignId>,
    pub steps: usize,
    pub removed: usize,
    pub removals_failed: usize,
}

impl Engine {
    /// The kinds of campaign the config defines.
    pub fn access_review_templates(&self) -> &BTreeMap<String, Template> {
        &self.review_templates
    }

    /// Starts a campaign of `template` now, for `by` (admins).
    pub async fn start_access_review(
        self: &Arc<Self>,
        template: &str,
        by: &User,
    ) -> Result<Campaign, EngineError> {
        access::may(by, Capability::StartAccessReviews)?;
        let Some(t) = self.review_templates.get(template) else {
            return Err(EngineError::Rejected(Rejection::Invalid {
                field: "template",
                message: match self.review_templates.keys().next() {
                    None => format!(
                        "no access review `{template}`: the config defines none ([access_reviews.NAME])"
                    ),
                    Some(_) => format!(
                        "no access review `{template}`; the config defines {}",
                        self.review_templates
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            }));
        };
        let t = t.clone();
        self.open_campaign(&t, Actor::of(by)).await
    }

    async fn open_campaign(
        self: &Arc<Self>,
        template: &Template,
        by: Actor,
    ) -> Result<Campaign, EngineError> {
        let mut subjects = Vec::new();
        if template.eligibilities {
            subjects.extend(
                self.eligibilities()
                    .into_iter()
                    .map(|(user, entitlement, route)| Subject::Eligibility {
                        user,
                        entitlement,
                        route,
                    }),
            );
        }
        let mut unlisted = Vec::new();
        if template.standing {
            let report = self.standing_report().await?;
            for listing in report.connectors {
                match listing.outcome {
                    ListingOutcome::Skipped => {}
                    ListingOutcome::Failed(why) => unlisted.push((listing.connector, why)),
                    ListingOutcome::Listed(rows) => {
                        subjects.extend(rows.into_iter().filter(|r| r.status != "granted").map(
                            |r| Subject::Holder {
                                connector: listing.connector.clone(),
                                principal: r.principal,
                                status: r.status.to_owned(),
                                user: r.user,
                                request: r.request,
                                entitlements: r.entitlements,
                                risk: r.risk,
                            },
                        ));
                    }
                }
            }
        }
        let started = access_review::start(
            CampaignId::from_entropy(rand::random()),
            template,
            subjects,
            &unlisted,
            by,
            &self.routing,
            self.clock.now(),
        );
        let campaign = started.campaign.clone();
        self.store
            .write_access_review(ReviewWrite::Start(Box::new(started)))
            .await?;
        info!(campaign = %campaign.id, template = %campaign.template, items = campaign.items,
              "access review started");
        self.outbox_wake.notify_one();
        Ok(campaign)
    }

    /// Each config user's eligibility under the policies in force: the
    /// entitlements an ordinary request of theirs would not be refused,
    /// with how they would get each.
    pub(super) fn eligibilities(&self) -> Vec<(UserId, EntitlementId, String)> {
        let set = self.policies.current();
        self.catalog
            .users
            .values()
            .flat_map(|user| {
                let set = &set;
                self.catalog.entitlements.values().filter_map(move |e| {
                    self.policies
                        .typical_ask(set, user, e)
                        .map(|ask| (user.id.clone(), e.id.clone(), ask.approval()))
                })
            })
            .collect()
    }

    /// The campaigns `viewer` may see, newest first.
    pub async fn access_reviews(
        &self,
        viewer: &User,
        open_only: bool,
    ) -> Result<Vec<Campaign>, EngineError> {
        let all = self
            .store
            .access_reviews(open_only, MAX_LISTED_CAMPAIGNS)
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| access::may_see_campaign(viewer, &c.reviewer_groups()).is_ok())
            .collect())
    }

    /// One campaign and its items, if `viewer` may see it.
    pub async fn access_review(
        &self,
        viewer: &User,
        id: &CampaignId,
    ) -> Result<(Campaign, Vec<Item>), EngineError> {
        let campaign = self.visible_campaign(viewer, id).await?;
        let items = self.store.access_review_items(id).await?;
        Ok((campaign, items))
    }

    /// What the web UI's menu says about access reviews to `user`: `None`
    /// when there is nothing for them to look at, else how many open items
    /// they may decide now. They have something when they may see a
    /// campaign of a configured template or an open campaign (admins,
    /// auditors, reviewers; escalation groups once a campaign escalated).
    /// The count is cheap: the open campaigns, then (for a reviewer) one
    /// indexed count of the open items about themselves, which they may
    /// never decide ([`access::may_review_item`]).
    pub async fn access_review_workload(&self, user: &User) -> Result<Option<u64>, EngineError> {
        let open = self
            .store
            .access_reviews(true, MAX_LISTED_CAMPAIGNS)
            .await?;
        let theirs: Vec<&Campaign> = open
            .iter()
            .filter(|c| {
                let groups = c.reviewer_groups();
                let standing = access::ReviewerStanding {
                    groups: &groups,
                    about: None,
                };
                access::may_review_item(user, &standing).is_ok()
            })
            .collect();
        let mut to_decide = 0;
        if !theirs.is_empty() {
            let own: BTreeMap<CampaignId, u32> = self
                .store
                .access_review_open_items_about(&user.id)
                .await?
                .into_iter()
                .collect();
            to_decide = theirs
                .iter()
                .map(|c| {
                    let about_them = own.get(&c.id).copied().unwrap_or(0);
                    u64::from(c.open_items.saturating_sub(about_them))
                })
                .sum();
        }
        let configured: BTreeSet<GroupName> = self
            .review_templates
            .values()
            .flat_map(|t| t.reviewers.iter().cloned())
            .collect();
        let sees = to_decide > 0
            || access::may_see_campaign(user, &configured).is_ok()
            || open
                .iter()
                .any(|c| access::may_see_campaign(user, &c.reviewer_groups()).is_ok());
        Ok(sees.then_some(to_decide))
    }

    async fn visible_campaign(
        &self,
        viewer: &User,
        id: &CampaignId,
    ) -> Result<Campaign, EngineError> {
        let campaign = self
            .store
            .access_review(id)
            .await?
            .ok_or_else(|| EngineError::UnknownAccessReview(id.to_string()))?;
        access::may_see_campaign(viewer, &campaign.reviewer_groups())
            .map_err(|_| EngineError::UnknownAccessReview(id.to_string()))?;
        Ok(campaign)
    }

    /// `by` confirms or removes item `number` of campaign `id`.
    pub async fn decide_access_review_item(
        &self,
        by: &User,
        id: &CampaignId,
        number: u32,
        decision: Decision,
        comment: &str,
    ) -> Result<Item, EngineError> {
        let campaign = self.visible_campaign(by, id).await?;
        let find = |items: Vec<Item>| {
            items
                .into_iter()
                .find(|i| i.number == number)
                .ok_or_else(|| {
                    EngineError::Rejected(Rejection::Invalid {
                        field: "item",
                        message: format!(
                            "`{id}` has no item {number} (its items are 1 to {})",
                            campaign.items
                        ),
                    })
                })
        };
        let item = find(self.store.access_review_items(id).await?)?;
        let ruling =
            access_review::decide(&campaign, &item, by, decision, comment, self.clock.now())?;
        let changed = self
            .store
            .write_access_review(ReviewWrite::Decide {
                campaign: id.clone(),
                item: number,
                ruling: Box::new(ruling),
            })
            .await?;
        let item = find(self.store.access_review_items(id).await?)?;
        if !changed {
            // Another reviewer's decision committed first: say whose.
            let again =
                access_review::decide(&campaign, &item, by, decision, comment, self.clock.now());
            return Err(match again {
                Err(rejection) => EngineError::Rejected(rejection),
                Ok(_) => EngineError::Rejected(Rejection::Conflict(format!(
                    "item {number} of `{id}` could not be decided; try again"
                ))),
            });
        }
        info!(campaign = %id, item = number, decision = decision.as_str(), by = %by.id,
              "access review item decided");
        if item.removal_outstanding() {
            self.access_review_wake.notify_one();
        }
        Ok(item)
    }

    /// Rounds until shutdown: every [`ACCESS_REVIEW_ROUND`] on the engine's
    /// clock, and at once when a decision leaves a removal to carry out.
    pub async fn run_access_reviews(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.store.try_exclusive(Exclusive::AccessReviews).await {
                Ok(Some(guard)) => {
                    let result = self.access_review_round().await;
                    guard.release().await;
                    if let Err(e) = result {
                        error!(error = %e, "an access-review round failed; the next one tries again");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, "cannot tell whether another replica runs access reviews; skipping this round");
                }
            }
            let next = self.clock.now().plus(ACCESS_REVIEW_ROUND);
            tokio::select! {
                () = self.clock.sleep_until(next) => {}
                () = self.access_review_wake.notified() => {}
                changed = shutdown.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One round: scheduled campaigns that are due start, due reminders and
    /// escalations are taken, and removed holders are taken out of their
    /// targets (a failure is tried again next round, and recorded once).
    pub async fn access_review_round(self: &Arc<Self>) -> Result<RoundReport, EngineError> {
        let mut report = RoundReport::default();
        let templates: Vec<Template> = self.review_templates.values().cloned().collect();
        for t in templates.iter().filter(|t| t.every.is_some()) {
            let last = self.store.access_review_last_started(&t.name).await?;
            if t.scheduled_start_due(last, self.clock.now()) {
                let campaign = self.open_campaign(t, Actor::System).await?;
                report.started.push(campaign.id);
            }
        }
        for campaign in self.store.access_reviews(true, u32::MAX).await? {
            let now = self.clock.now();
            if let Some(step) = access_review::due_step(&campaign, now) {
                let (_, event, notifications) =
                    access_review::take_step(&campaign, step, &self.routing, now);
                let taken = self
                    .store
                    .write_access_review(ReviewWrite::Step(Box::new(StepWrite {
                        campaign: campaign.id.clone(),
                        step,
                        at: now,
                        event,
                        notifications,
                    })))
                    .await?;
                if taken {
                    report.steps += 1;
                    info!(campaign = %campaign.id, step = step.as_str(), "access review step taken");
                    self.outbox_wake.notify_one();
                }
            }
        }
        for (campaign, item) in self
            .store
            .access_review_removals(REMOVALS_PER_ROUND)
            .await?
        {
            match self.remove_reviewed_holder(&campaign, &item).await? {
                true => report.removed += 1,
                false => report.removals_failed += 1,
            }
        }
        Ok(report)
    }

    /// Takes a holder a reviewer removed out of its target; whether it
    /// succeeded.
    async fn remove_reviewed_holder(
        &self,
        campaign: &CampaignId,
        item: &Item,
    ) -> Result<bool, EngineError> {
        let Subject::Holder {
            connector: name,
            principal,
            request,
            user,
            ..
        } = &item.subject
        else {
            return Ok(true);
        };
        let outcome = match self.connectors.get(name) {
            None => Err(format!(
                "no connector `{name}` is configured any more; remove `{principal}` by hand"
            )),
            Some(connector) => {
                let holding = Holding {
                    principal: principal.clone(),
                    request_id: request.clone(),
                };
                bounded(
                    connector.as_ref(),
                    "removing a reviewed holder",
                    connector.remove_holder(&holding),
                )
                .await
                .map_err(|e| e.to_string())
            }
        };
        let now = self.clock.now();
        let first_failure = item.removal.as_ref().is_none_or(|r| r.attempts == 0);
        let details = |extra: Option<(&str, String)>| {
            let mut d = BTreeMap::from([
                ("campaign".to_owned(), campaign.to_string()),
                ("item".to_owned(), item.number.to_string()),
                ("connector".to_owned(), name.clone()),
                ("principal".to_owned(), principal.clone()),
            ]);
            if let Some((k, v)) = extra {
                d.insert(k.to_owned(), v);
            }
            d
        };
        let event = |action: AuditAction, d: BTreeMap<String, String>| AuditEvent {
            at: now,
            actor: Actor::System,
            action,
            request: None,
            entitlement: None,
            subject: user.clone(),
            details: d,
        };
        let (outcome, event, ok) = match outcome {
            Ok(()) => (
                Ok(now),
                Some(Box::new(event(
                    AuditAction::AccessReviewRemoved,
                    details(None),
                ))),
                true,
            ),
            Err(why) => {
                warn!(%campaign, item = item.number, connector = %name, %principal, error = %why,
                      "removing a reviewed holder failed; the next round tries again");
                (
                    Err(why.clone()),
                    first_failure.then(|| {
                        Box::new(event(
                            AuditAction::AccessReviewRemovalFailed,
                            details(Some(("error", why))),
                        ))
                    }),
                    false,
                )
            }
        };
        self.store
            .write_access_review(ReviewWrite::Removal {
                campaign: campaign.clone(),
                item: item.number,
                outcome,
                event,
            })
            .await?;
        Ok(ok)
    }

    /// Open items across open campaigns, and how many campaigns are past
    /// their due time, for `/metrics`.
    pub async fn access_review_backlog(&self) -> Result<(u64, u64), EngineError> {
        let now = self.clock.now();
        let open = self.store.access_reviews(true, u32::MAX).await?;
        let items = open.iter().map(|c| u64::from(c.open_items)).sum();
        let overdue = open.iter().filter(|c| c.is_overdue(now)).count();
        Ok((items, u64::try_from(overdue).unwrap_or(u64::MAX)))
    }

    /// The audit chain's hash at each decided item's event: the evidence
    /// of where each decision sits in the chain.
    pub async fn decision_hashes(
        &self,
        items: &[Item],
    ) -> Result<BTreeMap<i64, String>, EngineError> {
        let seqs: Vec<i64> = items
            .iter()
            .filter_map(|i| i.decided.as_ref().and_then(|d| d.seq))
            .collect();
        Ok(self.store.chain_hashes(&seqs).await?.into_iter().collect())
    }

    /// When the latest decision about `user`'s eligibility for
    /// `entitlement` removed it, that decision (a new request obeys it).
    pub(super) async fn eligibility_decision(
        &self,
        user: &UserId,
        entitlement: &EntitlementId,
    ) -> Result<Option<access_review::EligibilityDecision>, EngineError> {
        Ok(self.store.eligibility_decision(user, entitlement).await?)
    }
}
