//! Access-review campaigns and their items as the store keeps them
//! (schema version 13): statements for both databases. Writes run inside
//! the writer's batches (`sql::Change::AccessReview`), so a campaign's
//! change, its audit events and its notifications commit together; each
//! write is conditional (an item is decided once, a step taken once, a
//! removal confirmed once) and appends its events only when it changed a
//! row, so two replicas racing for the same step record it once. Reads use
//! the read pool.

use std::collections::BTreeSet;

use airlock_core::access_review::{
    Campaign, Decided, Decision, EligibilityDecision, Item, Removal, Ruling, Started, Step, Subject,
};
use airlock_core::audit::AuditEvent;
use airlock_core::notify::Notification;
use airlock_core::standing::Sensitivity;
use airlock_core::{CampaignId, EntitlementId, GroupName, RequestId, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::StoreError;

/// A write to a campaign.
#[derive(Debug, Clone)]
pub enum ReviewWrite {
    /// A new campaign with its items, its events and the notifications to
    /// its reviewers (caused by the first event).
    Start(Box<Started>),
    /// An item decided, if it is still open; the campaign completes when it
    /// was the last.
    Decide {
        campaign: CampaignId,
        item: u32,
        ruling: Box<Ruling>,
    },
    /// A reminder or escalation, if not taken yet and the campaign is open.
    Step(Box<StepWrite>),
    /// An attempt to take a removed holder out of its target: done at a
    /// time, or failed with an error. `event` is recorded with it (the
    /// engine records the first failure and the success, not every retry).
    Removal {
        campaign: CampaignId,
        item: u32,
        outcome: Result<Timestamp, String>,
        event: Option<Box<AuditEvent>>,
    },
}

/// A reminder or escalation of a campaign, with its event and notifications.
#[derive(Debug, Clone)]
pub struct StepWrite {
    pub campaign: CampaignId,
    pub step: Step,
    pub at: Timestamp,
    pub event: AuditEvent,
    pub notifications: Vec<Notification>,
}

/// What a write appends besides its rows: audit events, and notifications
/// each naming its causing event's index in `events`.
pub(super) struct Appended<'a> {
    pub events: &'a mut Vec<AuditEvent>,
    pub notifications: &'a mut Vec<(usize, Notification)>,
    /// The seq the next appended event will get.
    pub next_seq: i64,
}

impl Appended<'_> {
    /// Appends `event` (and `notifications` caused by it); its seq.
    fn push(&mut self, event: AuditEvent, notifications: Vec<Notification>) -> i64 {
        let index = self.events.len();
        let seq = self
            .next_seq
            .saturating_add(i64::try_from(index).unwrap_or(i64::MAX));
        self.events.push(event);
        self.notifications
            .extend(notifications.into_iter().map(|n| (index, n)));
        seq
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("access review: {what}"))
}

/// An item's subject as stored (JSON in `subject`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SubjectRow {
    Eligibility {
        user: String,
        entitlement: String,
        route: String,
    },
    Holder {
        connector: String,
        principal: String,
        status: String,
        user: Option<String>,
        request: Option<String>,
        entitlements: Vec<String>,
        risk: i64,
    },
}

fn subject_row(s: &Subject) -> SubjectRow {
    match s {
        Subject::Eligibility {
            user,
            entitlement,
            route,
        } => SubjectRow::Eligibility {
            user: user.to_string(),
            entitlement: entitlement.to_string(),
            route: route.clone(),
        },
        Subject::Holder {
            connector,
            principal,
            status,
            user,
            request,
            entitlements,
            risk,
        } => SubjectRow::Holder {
            connector: connector.clone(),
            principal: principal.clone(),
            status: status.clone(),
            user: user.as_ref().map(ToString::to_string),
            request: request.as_ref().map(ToString::to_string),
            entitlements: entitlements.iter().map(ToString::to_string).collect(),
            risk: risk.level(),
        },
    }
}

fn subject_from_row(row: SubjectRow) -> Result<Subject, StoreError> {
    let user = |raw: &str| UserId::parse(raw).map_err(|e| corrupt(format!("user `{raw}`: {e}")));
    let entitlement = |raw: &str| {
        EntitlementId::parse(raw).map_err(|e| corrupt(format!("entitlement `{raw}`: {e}")))
    };
    Ok(match row {
        SubjectRow::Eligibility {
            user: u,
            entitlement: e,
            route,
        } => Subject::Eligibility {
            user: user(&u)?,
            entitlement: entitlement(&e)?,
            route,
        },
        SubjectRow::Holder {
            connector,
            principal,
            status,
            user: u,
            request,
            entitlements,
            risk,
        } => Subject::Holder {
            connector,
            principal,
            status,
            user: u.as_deref().map(user).transpose()?,
            request: request
                .as_deref()
                .map(|r| RequestId::parse(r).map_err(|e| corrupt(format!("request `{r}`: {e}"))))
                .transpose()?,
            entitlements: entitlements
                .iter()
                .map(|e| entitlement(e))
                .collect::<Result<_, _>>()?,
            risk: Sensitivity::from_level(risk).ok_or_else(|| corrupt(format!("risk {risk}")))?,
        },
    })
}

fn groups_text(groups: &BTreeSet<GroupName>) -> String {
    groups
        .iter()
        .map(GroupName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn groups_from(raw: &str) -> Result<BTreeSet<GroupName>, StoreError> {
    raw.split(',')
        .filter(|g| !g.is_empty())
        .map(|g| GroupName::parse(g).map_err(|e| corrupt(format!("group `{g}`: {e}"))))
        .collect()
}

fn ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::unix_millis)
}

fn count(n: u32) -> i64 {
    i64::from(n)
}

/// Runs `write` on the writer's connection; whether it changed a row.
pub(super) async fn write(
    conn: &mut AnyConnection,
    rows_per_statement: usize,
    write: &ReviewWrite,
    appended: &mut Appended<'_>,
) -> Result<bool, StoreError> {
    match write {
        ReviewWrite::Start(started) => {
            start(conn, rows_per_statement, &started.campaign, &started.items).await?;
            let mut notifications = Some(started.notifications.clone());
            for event in &started.events {
                appended.push(event.clone(), notifications.take().unwrap_or_default());
            }
            Ok(true)
        }
        ReviewWrite::Decide {
            campaign,
            item,
            ruling,
        } => decide(conn, campaign, *item, ruling, appended).await,
        ReviewWrite::Step(step) => {
            let StepWrite {
                campaign,
                step,
                at,
                event,
                notifications,
            } = step.as_ref();
            let column = match step {
                Step::Remind => "reminded_at",
                Step::Escalate => "escalated_at",
            };
            let changed = sqlx::query(&format!(
                "UPDATE access_reviews SET {column} = $1 \
                 WHERE id = $2 AND {column} IS NULL AND completed_at IS NULL AND open_items > 0"
            ))
            .bind(at.unix_millis())
            .bind(campaign.to_string())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if changed {
                appended.push(event.clone(), notifications.clone());
            }
            Ok(changed)
        }
        ReviewWrite::Removal {
            campaign,
            item,
            outcome,
            event,
        } => {
            let query = match outcome {
                Ok(at) => sqlx::query(
                    "UPDATE access_review_items SET removed_at = $1, removal_error = NULL, \
                     removal_attempts = removal_attempts + 1 \
                     WHERE campaign = $2 AND item = $3 AND removed_at IS NULL",
                )
                .bind(at.unix_millis()),
                Err(error) => sqlx::query(
                    "UPDATE access_review_items SET removal_error = $1, \
                     removal_attempts = removal_attempts + 1 \
                     WHERE campaign = $2 AND item = $3 AND removed_at IS NULL",
                )
                .bind(error.clone()),
            };
            let changed = query
                .bind(campaign.to_string())
                .bind(i64::from(*item))
                .execute(&mut *conn)
                .await
                .map_err(db_err)?
                .rows_affected()
                == 1;
            if changed {
                if let Some(e) = event {
                    appended.push(e.as_ref().clone(), Vec::new());
                }
            }
            Ok(changed)
        }
    }
}

async fn start(
    conn: &mut AnyConnection,
    rows_per_statement: usize,
    c: &Campaign,
    items: &[Item],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO access_reviews (id, template, started_by, started_at, due_at, reviewers, \
         escalate_to, remind_at, escalate_at, reminded_at, escalated_at, completed_at, items, \
         open_items) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(c.id.to_string())
    .bind(c.template.clone())
    .bind(c.started_by.clone())
    .bind(c.started_at.unix_millis())
    .bind(c.due_at.unix_millis())
    .bind(groups_text(&c.reviewers))
    .bind(groups_text(&c.escalate_to))
    .bind(ms(c.remind_at))
    .bind(ms(c.escalate_at))
    .bind(ms(c.reminded_at))
    .bind(ms(c.escalated_at))
    .bind(ms(c.completed_at))
    .bind(count(c.items))
    .bind(count(c.open_items))
    .execute(&mut *conn)
    .await
    .map_err(|e| match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::UniqueViolation,
        _ => db_err(e),
    })?;
    const PARAMS: usize = 6;
    for chunk in items.chunks(rows_per_statement.max(1)) {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let first = row * PARAMS + 1;
                let marks: Vec<String> = (first..first + PARAMS).map(|i| format!("${i}")).collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO access_review_items (campaign, item, kind, principal, entitlement, \
             subject) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for item in chunk {
            let subject = serde_json::to_string(&subject_row(&item.subject))
                .map_err(|e| corrupt(e.to_string()))?;
            let (principal, entitlement) = match &item.subject {
                Subject::Eligibility {
                    user, entitlement, ..
                } => (Some(user.to_string()), Some(entitlement.to_string())),
                Subject::Holder { user, .. } => (user.as_ref().map(ToString::to_string), None),
            };
            query = query
                .bind(c.id.to_string())
                .bind(i64::from(item.number))
                .bind(item.subject.kind())
                .bind(principal)
                .bind(entitlement)
                .bind(subject);
        }
        query.execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

async fn decide(
    conn: &mut AnyConnection,
    campaign: &CampaignId,
    item: u32,
    ruling: &Ruling,
    appended: &mut Appended<'_>,
) -> Result<bool, StoreError> {
    let d = &ruling.decided;
    // The decision's event gets the next seq; the row records it.
    let seq = appended
        .next_seq
        .saturating_add(i64::try_from(appended.events.len()).unwrap_or(i64::MAX));
    let changed = sqlx::query(
        "UPDATE access_review_items SET decision = $1, decided_by = $2, decided_at = $3, \
         comment = $4, decision_seq = $5 WHERE campaign = $6 AND item = $7 AND decision IS NULL",
    )
    .bind(d.decision.as_str())
    .bind(d.by.to_string())
    .bind(d.at.unix_millis())
    .bind(d.comment.clone())
    .bind(seq)
    .bind(campaign.to_string())
    .bind(i64::from(item))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?
    .rows_affected()
        == 1;
    if !changed {
        return Ok(false);
    }
    appended.push(ruling.event.clone(), Vec::new());
    sqlx::query("UPDATE access_reviews SET open_items = open_items - 1 WHERE id = $1")
        .bind(campaign.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    let completed = sqlx::query(
        "UPDATE access_reviews SET completed_at = $1 \
         WHERE id = $2 AND open_items = 0 AND completed_at IS NULL",
    )
    .bind(d.at.unix_millis())
    .bind(campaign.to_string())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?
    .rows_affected()
        == 1;
    if completed {
        appended.push(ruling.completes.clone(), Vec::new());
    }
    Ok(true)
}

const CAMPAIGN_COLUMNS: &str = "id, template, started_by, started_at, due_at, reviewers, \
    escalate_to, remind_at, escalate_at, reminded_at, escalated_at, completed_at, items, open_items";

fn campaign_from_row(row: &AnyRow) -> Result<Campaign, StoreError> {
    let id: String = row.try_get("id").map_err(db_err)?;
    let time = |name: &str| -> Result<Option<Timestamp>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)
            .map_err(db_err)?
            .map(Timestamp::from_unix_millis))
    };
    let required = |name: &str| -> Result<Timestamp, StoreError> {
        time(name)?.ok_or_else(|| corrupt(format!("`{id}` has no {name}")))
    };
    let number = |name: &str| -> Result<u32, StoreError> {
        let n: i64 = row.try_get(name).map_err(db_err)?;
        u32::try_from(n).map_err(|_| corrupt(format!("`{id}` has {name} {n}")))
    };
    Ok(Campaign {
        id: CampaignId::parse(&id).map_err(|e| corrupt(format!("id `{id}`: {e}")))?,
        template: row.try_get("template").map_err(db_err)?,
        started_by: row.try_get("started_by").map_err(db_err)?,
        started_at: required("started_at")?,
        due_at: required("due_at")?,
        reviewers: groups_from(&row.try_get::<String, _>("reviewers").map_err(db_err)?)?,
        escalate_to: groups_from(&row.try_get::<String, _>("escalate_to").map_err(db_err)?)?,
        remind_at: time("remind_at")?,
        escalate_at: time("escalate_at")?,
        reminded_at: time("reminded_at")?,
        escalated_at: time("escalated_at")?,
        completed_at: time("completed_at")?,
        items: number("items")?,
        open_items: number("open_items")?,
    })
}

const ITEM_COLUMNS: &str = "campaign, item, subject, decision, decided_by, decided_at, comment, \
    decision_seq, removal_attempts, removal_error, removed_at";

fn item_from_row(row: &AnyRow) -> Result<Item, StoreError> {
    let number: i64 = row.try_get("item").map_err(db_err)?;
    let attempts: i64 = row.try_get("removal_attempts").map_err(db_err)?;
    ItemRecord {
        item: u32::try_from(number).map_err(|_| corrupt(format!("item number {number}")))?,
        subject: row.try_get("subject").map_err(db_err)?,
        decision: row.try_get("decision").map_err(db_err)?,
        decided_by: row.try_get("decided_by").map_err(db_err)?,
        decided_at: row.try_get("decided_at").map_err(db_err)?,
        comment: row.try_get("comment").map_err(db_err)?,
        decision_seq: row.try_get("decision_seq").map_err(db_err)?,
        removal_attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        removal_error: row.try_get("removal_error").map_err(db_err)?,
        removed_at: row.try_get("removed_at").map_err(db_err)?,
    }
    .parse()
}

/// Campaigns newest first, at most `limit`; only open ones with `open_only`.
pub async fn campaigns(
    pool: &AnyPool,
    open_only: bool,
    limit: u32,
) -> Result<Vec<Campaign>, StoreError> {
    let filter = if open_only {
        "WHERE completed_at IS NULL"
    } else {
        ""
    };
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM access_reviews {filter} \
         ORDER BY started_at DESC, id DESC LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(campaign_from_row).collect()
}

pub async fn campaign(pool: &AnyPool, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM access_reviews WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    row.as_ref().map(campaign_from_row).transpose()
}

/// When the newest campaign of `template` started.
pub async fn last_started(pool: &AnyPool, template: &str) -> Result<Option<Timestamp>, StoreError> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT MAX(started_at) FROM access_reviews WHERE template = $1")
            .bind(template.to_owned())
            .fetch_one(pool)
            .await
            .map_err(db_err)?;
    Ok(at.map(Timestamp::from_unix_millis))
}

/// A campaign's items in order.
pub async fn items(pool: &AnyPool, id: &CampaignId) -> Result<Vec<Item>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ITEM_COLUMNS} FROM access_review_items WHERE campaign = $1 ORDER BY item"
    ))
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(item_from_row).collect()
}

/// The newest decision any campaign made about `user` asking for
/// `entitlement`.
pub async fn latest_eligibility_decision(
    pool: &AnyPool,
    user: &UserId,
    entitlement: &EntitlementId,
) -> Result<Option<EligibilityDecision>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ITEM_COLUMNS} FROM access_review_items \
         WHERE principal = $1 AND entitlement = $2 AND kind = 'eligibility' \
         AND decision IS NOT NULL ORDER BY decided_at DESC, decision_seq DESC LIMIT 1"
    ))
    .bind(user.to_string())
    .bind(entitlement.to_string())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let campaign = campaign_of(&row)?;
    let item = item_from_row(&row)?;
    let decided = item
        .decided
        .ok_or_else(|| corrupt("an eligibility decision without a decision"))?;
    Ok(Some(EligibilityDecision {
        campaign,
        item: item.number,
        decided,
    }))
}

/// The campaign an item row belongs to.
fn campaign_of(row: &AnyRow) -> Result<CampaignId, StoreError> {
    let campaign: String = row.try_get("campaign").map_err(db_err)?;
    CampaignId::parse(&campaign).map_err(|e| corrupt(e.to_string()))
}

/// How many undecided items of each open campaign are about `user` (only
/// campaigns that have some).
pub async fn open_items_about(
    pool: &AnyPool,
    user: &UserId,
) -> Result<Vec<(CampaignId, u32)>, StoreError> {
    let rows = sqlx::query(
        "SELECT i.campaign, COUNT(*) AS n FROM access_review_items i \
         JOIN access_reviews c ON c.id = i.campaign \
         WHERE i.principal = $1 AND i.decision IS NULL AND c.completed_at IS NULL \
         GROUP BY i.campaign",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|row| {
            let n: i64 = row.try_get("n").map_err(db_err)?;
            Ok((
                campaign_of(row)?,
                u32::try_from(n).map_err(|_| corrupt(format!("{n} open items")))?,
            ))
        })
        .collect()
}

/// Removed holders not yet taken out of their targets, oldest campaign
/// first, at most `limit`.
pub async fn outstanding_removals(
    pool: &AnyPool,
    limit: u32,
) -> Result<Vec<(CampaignId, Item)>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ITEM_COLUMNS} FROM access_review_items \
         WHERE kind = 'holder' AND decision = 'remove' AND removed_at IS NULL \
         ORDER BY campaign, item LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|row| Ok((campaign_of(row)?, item_from_row(row)?)))
        .collect()
}

/// The hash the audit chain holds at each of `seqs` (those it has), for
/// evidence that names each decision's place in the chain.
pub async fn chain_hashes(pool: &AnyPool, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(400) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT seq, hash FROM audit_events WHERE seq IN ({}) ORDER BY seq",
            marks.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for seq in chunk {
            query = query.bind(*seq);
        }
        for row in query.fetch_all(pool).await.map_err(db_err)? {
            out.push((
                row.try_get("seq").map_err(db_err)?,
                row.try_get("hash").map_err(db_err)?,
            ));
        }
    }
    Ok(out)
}

/// A campaign with its items as `airlock export` writes it and `airlock
/// import` reads it back: every column, so decisions (and the eligibility
/// removals new requests obey) and removals in progress move with the
/// audit chain that records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRecord {
    pub id: String,
    pub template: String,
    pub started_by: String,
    pub started_at: i64,
    pub due_at: i64,
    pub reviewers: String,
    pub escalate_to: String,
    pub remind_at: Option<i64>,
    pub escalate_at: Option<i64>,
    pub reminded_at: Option<i64>,
    pub escalated_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub items: Vec<ItemRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRecord {
    pub item: u32,
    /// The subject as stored (JSON).
    pub subject: String,
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub comment: Option<String>,
    pub decision_seq: Option<i64>,
    pub removal_attempts: u32,
    pub removal_error: Option<String>,
    pub removed_at: Option<i64>,
}

impl CampaignRecord {
    pub fn of(c: &Campaign, items: &[Item]) -> Result<CampaignRecord, StoreError> {
        Ok(CampaignRecord {
            id: c.id.to_string(),
            template: c.template.clone(),
            started_by: c.started_by.clone(),
            started_at: c.started_at.unix_millis(),
            due_at: c.due_at.unix_millis(),
            reviewers: groups_text(&c.reviewers),
            escalate_to: groups_text(&c.escalate_to),
            remind_at: ms(c.remind_at),
            escalate_at: ms(c.escalate_at),
            reminded_at: ms(c.reminded_at),
            escalated_at: ms(c.escalated_at),
            completed_at: ms(c.completed_at),
            items: items
                .iter()
                .map(|i| {
                    let removal = i.removal.clone().unwrap_or_default();
                    Ok(ItemRecord {
                        item: i.number,
                        subject: serde_json::to_string(&subject_row(&i.subject))
                            .map_err(|e| corrupt(e.to_string()))?,
                        decision: i.decided.as_ref().map(|d| d.decision.as_str().to_owned()),
                        decided_by: i.decided.as_ref().map(|d| d.by.to_string()),
                        decided_at: i.decided.as_ref().map(|d| d.at.unix_millis()),
                        comment: i.decided.as_ref().map(|d| d.comment.clone()),
                        decision_seq: i.decided.as_ref().and_then(|d| d.seq),
                        removal_attempts: removal.attempts,
                        removal_error: removal.last_error,
                        removed_at: ms(removal.done_at),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        })
    }

    /// The campaign and items it holds, checked as the store reads them.
    pub fn parse(&self) -> Result<(Campaign, Vec<Item>), StoreError> {
        let bad = |what: String| corrupt(format!("`{}`: {what}", self.id));
        let decided = self.items.iter().filter(|i| i.decision.is_none()).count();
        let items = self
            .items
            .iter()
            .map(ItemRecord::parse)
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(|e| bad(e.to_string()))?;
        let count = |n: usize| u32::try_from(n).map_err(|_| bad("too many items".to_owned()));
        let campaign = Campaign {
            id: CampaignId::parse(&self.id).map_err(|e| bad(e.to_string()))?,
            template: self.template.clone(),
            started_by: self.started_by.clone(),
            started_at: Timestamp::from_unix_millis(self.started_at),
            due_at: Timestamp::from_unix_millis(self.due_at),
            reviewers: groups_from(&self.reviewers)?,
            escalate_to: groups_from(&self.escalate_to)?,
            remind_at: self.remind_at.map(Timestamp::from_unix_millis),
            escalate_at: self.escalate_at.map(Timestamp::from_unix_millis),
            reminded_at: self.reminded_at.map(Timestamp::from_unix_millis),
            escalated_at: self.escalated_at.map(Timestamp::from_unix_millis),
            completed_at: self.completed_at.map(Timestamp::from_unix_millis),
            items: count(items.len())?,
            open_items: count(decided)?,
        };
        Ok((campaign, items))
    }
}

impl ItemRecord {
    /// The item it holds, checked as the store reads it.
    fn parse(&self) -> Result<Item, StoreError> {
        let bad = |what: String| corrupt(format!("item {}: {what}", self.item));
        let subject =
            subject_from_row(serde_json::from_str(&self.subject).map_err(|e| bad(e.to_string()))?)?;
        let decided = match (&self.decision, &self.decided_by, self.decided_at) {
            (None, _, _) => None,
            (Some(d), Some(by), Some(at)) => Some(Decided {
                decision: Decision::parse(d).ok_or_else(|| bad(format!("decision `{d}`")))?,
                by: UserId::parse(by).map_err(|e| bad(format!("decided by `{by}`: {e}")))?,
                at: Timestamp::from_unix_millis(at),
                comment: self.comment.clone().unwrap_or_default(),
                seq: self.decision_seq,
            }),
            _ => return Err(bad("a decision without who or when".to_owned())),
        };
        Ok(Item {
            number: self.item,
            subject,
            decided,
            removal: (self.removal_attempts > 0 || self.removed_at.is_some()).then(|| Removal {
                done_at: self.removed_at.map(Timestamp::from_unix_millis),
                attempts: self.removal_attempts,
                last_error: self.removal_error.clone(),
            }),
        })
    }
}

/// Writes imported campaigns whole (inside the import's transaction).
pub(super) async fn import(
    conn: &mut AnyConnection,
    rows_per_statement: usize,
    records: &[CampaignRecord],
) -> Result<(), StoreError> {
    for record in records {
        let (campaign, items) = record.parse()?;
        start(conn, rows_per_statement, &campaign, &items).await?;
        for (item, raw) in items.iter().zip(&record.items) {
            if item.decided.is_none() && item.removal.is_none() {
                continue;
            }
            sqlx::query(
                "UPDATE access_review_items SET decision = $1, decided_by = $2, decided_at = $3, \
                 comment = $4, decision_seq = $5, removal_attempts = $6, removal_error = $7, \
                 removed_at = $8 WHERE campaign = $9 AND item = $10",
            )
            .bind(raw.decision.clone())
            .bind(raw.decided_by.clone())
            .bind(raw.decided_at)
            .bind(raw.comment.clone())
            .bind(raw.decision_seq)
            .bind(i64::from(raw.removal_attempts))
            .bind(raw.removal_error.clone())
            .bind(raw.removed_at)
            .bind(record.id.clone())
            .bind(i64::from(item.number))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        }
    }
    Ok(())
}
