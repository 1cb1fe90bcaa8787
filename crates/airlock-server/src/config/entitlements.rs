//! The `[entitlements.NAME]` tables: what people may ask for, for how long,
//! with which ticket, through which connector, and the shorthand access
//! rules that compile to Cedar policies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::catalog::{
    BreakGlassRules, Entitlement, TicketPattern, TicketRule, User, WaitingTimes,
};
use airlock_core::drift::DriftPolicy;
use airlock_core::idle::{IdleLimit, IdleLimitError};
use airlock_core::standing::Sensitivity;
use airlock_core::time::human_duration;
use airlock_core::{EntitlementId, GroupName, UserId};
use airlock_policy::EntitlementFacts;
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{ConfigError, ConnectorSettings};
use crate::policy::{mfa_policy, shorthand_policies};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntitlement {
    #[serde(default)]
    description: String,
    #[serde(default)]
    requestable_by: Vec<Spanned<String>>,
    max_duration: Spanned<String>,
    default_duration: Option<Spanned<String>>,
    #[serde(default = "yes")]
    require_reason: bool,
    #[serde(default)]
    require_ticket: bool,
    ticket_pattern: Option<Spanned<String>>,
    #[serde(default)]
    auto_approve: bool,
    approvals_required: Option<Spanned<u32>>,
    #[serde(default)]
    approvers: Vec<Spanned<String>>,
    connector: Spanned<String>,
    /// 0 (harmless) to 3 (production data, admin rights); policies may look
    /// at it, and it is the base of the standing report's risk rating.
    sensitivity: Option<Spanned<i64>>,
    owner_group: Option<Spanned<String>>,
    /// `report` (default) or `revoke`: what reconciliation does with holders
    /// of the connector that no grant explains.
    drift: Option<Spanned<String>>,
    /// Acceptable waiting times, counted from the request: remind the
    /// approvers, let `escalate_to` approve too, and time out (default:
    /// `server.pending_timeout`).
    remind_after: Option<Spanned<String>>,
    escalate_after: Option<Spanned<String>>,
    #[serde(default)]
    escalate_to: Vec<Spanned<String>>,
    pending_timeout: Option<Spanned<String>>,
    /// Requests need MFA at most this long ago (`policy::mfa_policy`).
    require_mfa_within: Option<Spanned<String>>,
    /// Emergency access (`[entitlements.NAME.break_glass]`); without it,
    /// break-glass requests for the entitlement are refused.
    break_glass: Option<Spanned<RawBreakGlass>>,
    /// Whether external principals (vendors) may ask for it at all.
    #[serde(default)]
    open_to_externals: bool,
    /// A grant with no recorded use for this long is released early
    /// (`airlock_core::idle`).
    idle_limit: Option<Spanned<String>>,
    /// Its holder is warned this long before (default: a quarter of the
    /// limit, at most 10m).
    idle_warning: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreakGlass {
    max_duration: Spanned<String>,
    #[serde(default)]
    review_by: Vec<Spanned<String>>,
    review_within: Option<Spanned<String>>,
    #[serde(default)]
    escalate_to: Vec<Spanned<String>>,
}

/// A break-glass use is reviewed within a day unless the config says otherwise.
const DEFAULT_REVIEW_WITHIN: Duration = Duration::from_secs(24 * 3600);

fn yes() -> bool {
    true
}

/// What the entitlements are checked against.
pub(super) struct Known<'a> {
    /// The config's users, to check that a named group has members and
    /// that enough approvers exist.
    pub(super) users: &'a BTreeMap<UserId, User>,
    /// With an identity provider, members come from its tokens, so the
    /// config cannot know them.
    pub(super) members_from_provider: bool,
    /// A policy folder may route entitlements the shorthand does not.
    pub(super) policy_folder: bool,
    pub(super) connectors: &'a BTreeMap<String, ConnectorSettings>,
    /// `server.pending_timeout`, unless an entitlement sets its own.
    pub(super) pending_timeout: Duration,
}

/// The entitlements, the facts policies see of them, and the Cedar
/// policies their shorthand compiles to (named by where they came from).
#[derive(Default)]
pub(super) struct Entitlements {
    pub(super) catalog: BTreeMap<EntitlementId, Entitlement>,
    pub(super) facts: BTreeMap<EntitlementId, EntitlementFacts>,
    pub(super) generated: Vec<(String, String)>,
    /// The entitlements with an idle limit, and theirs.
    pub(super) idle: BTreeMap<EntitlementId, IdleLimit>,
}

pub(super) fn entitlements_table(
    src: &Source<'_>,
    raw: &BTreeMap<String, Spanned<RawEntitlement>>,
    known: &Known<'_>,
) -> Result<Entitlements, ConfigError> {
    let mut out = Entitlements::default();
    let no_groups = BTreeSet::new();
    let path = src.path;
    for (name, ent) in raw {
        let span = ent.span();
        let field = |f: &str| format!("entitlements.{name}.{f}");
        let id = EntitlementId::parse(name)
            .map_err(|e| src.error(span.clone(), format!("entitlements: `{name}` {e}")))?;
        let ent = ent.get_ref();
        let group_set =
            |f: &str, raw: &[Spanned<String>]| -> Result<BTreeSet<GroupName>, ConfigError> {
                raw.iter()
                    .map(|g| {
                        let group = src.id(&field(f), g, GroupName::parse)?;
                        // With an identity provider, members come from its
                        // tokens, so the config cannot know them.
                        if !known.members_from_provider
                            && !known.users.values().any(|u| u.groups.contains(&group))
                        {
                            return Err(src.error(
                                g.span(),
                                format!("{}: group `{group}` has no members", field(f)),
                            ));
                        }
                        Ok(group)
                    })
                    .collect()
            };
        let requestable_by = group_set("requestable_by", &ent.requestable_by)?;
        if requestable_by.is_empty() && !known.policy_folder {
            return Err(src.error(
                span,
                format!(
                    "{}: name at least one group (or write `request` policies in `policy.dir`)",
                    field("requestable_by")
                ),
            ));
        }
        let max_duration = src.duration(&field("max_duration"), &ent.max_duration)?;
        if max_duration < Duration::from_secs(1) {
            return Err(src.error(
                ent.max_duration.span(),
                format!("{}: must be at least 1s", field("max_duration")),
            ));
        }
        let default_duration = match &ent.default_duration {
            Some(d) => {
                let v = src.duration(&field("default_duration"), d)?;
                if v > max_duration || v < Duration::from_secs(1) {
                    return Err(src.error(
                        d.span(),
                        format!(
                            "{}: must be between 1s and max_duration",
                            field("default_duration")
                        ),
                    ));
                }
                v
            }
            None => max_duration.min(Duration::from_secs(3600)),
        };
        let pattern = match &ent.ticket_pattern {
            Some(p) => Some(TicketPattern::new(p.get_ref()).map_err(|e| {
                src.error(
                    p.span(),
                    format!(
                        "{}: invalid regular expression: {e}",
                        field("ticket_pattern")
                    ),
                )
            })?),
            None => None,
        };
        // The shorthand compiles to Cedar (see `policy::shorthand_policies`);
        // without it, the policy folder must route the entitlement.
        let shorthand = !requestable_by.is_empty();
        let approvals = if ent.auto_approve {
            if !ent.approvers.is_empty() || ent.approvals_required.is_some() {
                return Err(src.error(
                    span,
                    format!(
                        "{}: auto_approve = true takes no approvers",
                        field("approvers")
                    ),
                ));
            }
            None
        } else if !shorthand && ent.approvers.is_empty() && ent.approvals_required.is_none() {
            None
        } else {
            let from = group_set("approvers", &ent.approvers)?;
            if from.is_empty() {
                return Err(src.error(
                    span,
                    format!(
                        "{}: name at least one group, or set auto_approve = true",
                        field("approvers")
                    ),
                ));
            }
            let count = ent.approvals_required.as_ref().map_or(1, |c| *c.get_ref());
            let eligible = known.users.values().filter(|u| u.in_any(&from)).count();
            let too_many = !known.members_from_provider
                && usize::try_from(count).unwrap_or(usize::MAX) > eligible;
            if count == 0 || too_many {
                let at = ent
                    .approvals_required
                    .as_ref()
                    .map_or(span.clone(), Spanned::span);
                let bound = if known.members_from_provider {
                    "must be at least 1".to_owned()
                } else {
                    format!("must be between 1 and the {eligible} users in the approver groups")
                };
                return Err(src.error(at, format!("{}: {bound}", field("approvals_required"))));
            }
            Some((count, from))
        };
        let sensitivity = match &ent.sensitivity {
            Some(s) => Sensitivity::from_level(*s.get_ref()).ok_or_else(|| {
                src.error(
                    s.span(),
                    format!("{}: must be between 0 and 3", field("sensitivity")),
                )
            })?,
            None => Sensitivity::default(),
        };
        let owner_group = ent
            .owner_group
            .as_ref()
            .map(|g| src.id(&field("owner_group"), g, GroupName::parse))
            .transpose()?;
        out.facts.insert(
            id.clone(),
            EntitlementFacts {
                id: id.clone(),
                sensitivity: sensitivity.level(),
                owner_group,
            },
        );
        let waiting = WaitingTimes {
            remind_after: None,
            escalate_after: None,
            escalate_to: group_set("escalate_to", &ent.escalate_to)?,
            timeout: ent
                .pending_timeout
                .as_ref()
                .map(|t| {
                    src.duration_between(
                        &field("pending_timeout"),
                        t,
                        (Duration::from_secs(1), Duration::from_secs(365 * 24 * 3600)),
                    )
                })
                .transpose()?,
        };
        let timeout = waiting.timeout.unwrap_or(known.pending_timeout);
        // A step due at or after the time-out would never happen.
        let before_timeout = |key: &str, raw: &Option<Spanned<String>>| {
            let Some(raw) = raw else { return Ok(None) };
            let after = src.duration(&field(key), raw)?;
            if after.is_zero() || after >= timeout {
                return Err(src.error(
                    raw.span(),
                    format!(
                        "{}: must be more than 0s and less than the request's time-out ({}, pending_timeout)",
                        field(key),
                        human_duration(timeout)
                    ),
                ));
            }
            Ok(Some(after))
        };
        let waiting = WaitingTimes {
            remind_after: before_timeout("remind_after", &ent.remind_after)?,
            escalate_after: before_timeout("escalate_after", &ent.escalate_after)?,
            ..waiting
        };
        match (&waiting.escalate_after, waiting.escalate_to.is_empty()) {
            (Some(_), true) => {
                return Err(src.error(
                    span,
                    format!("{}: name the groups to escalate to", field("escalate_to")),
                ))
            }
            (None, false) => {
                return Err(src.error(
                    span,
                    format!("{}: say when to escalate", field("escalate_after")),
                ))
            }
            _ => {}
        }
        let mut text = shorthand_policies(
            &id,
            &requestable_by,
            ent.auto_approve && shorthand,
            approvals.as_ref().map(|(n, g)| (*n, g)),
            // A policy folder that routes the entitlement says itself who
            // approves once escalated.
            if shorthand {
                &waiting.escalate_to
            } else {
                &no_groups
            },
        );
        if let Some(within) = &ent.require_mfa_within {
            let age = src.duration_between(
                &field("require_mfa_within"),
                within,
                (Duration::from_secs(1), Duration::from_secs(30 * 24 * 3600)),
            )?;
            text.push_str(&mfa_policy(&id, age.as_secs()));
        }
        if !text.is_empty() {
            out.generated
                .push((format!("{path} [entitlements.{name}]"), text));
        }
        let drift = match &ent.drift {
            None => DriftPolicy::default(),
            Some(raw) => DriftPolicy::parse(raw.get_ref().trim()).ok_or_else(|| {
                src.error(
                    raw.span(),
                    format!(
                        "{}: unknown setting `{}` (known: report, revoke)",
                        field("drift"),
                        raw.get_ref()
                    ),
                )
            })?,
        };
        let break_glass = ent
            .break_glass
            .as_ref()
            .map(|raw| {
                let bg = raw.get_ref();
                let max = src.duration_between(
                    &field("break_glass.max_duration"),
                    &bg.max_duration,
                    (Duration::from_secs(1), max_duration),
                )?;
                let review_by = group_set("break_glass.review_by", &bg.review_by)?;
                if review_by.is_empty() {
                    return Err(src.error(
                        raw.span(),
                        format!(
                            "{}: name the groups that review each break-glass use",
                            field("break_glass.review_by")
                        ),
                    ));
                }
                let review_within = bg
                    .review_within
                    .as_ref()
                    .map(|w| {
                        src.duration_between(
                            &field("break_glass.review_within"),
                            w,
                            (Duration::from_secs(60), Duration::from_secs(90 * 24 * 3600)),
                        )
                    })
                    .transpose()?
                    .unwrap_or(DEFAULT_REVIEW_WITHIN);
                Ok(BreakGlassRules {
                    max_duration: max,
                    review_by,
                    review_within,
                    escalate_to: group_set("break_glass.escalate_to", &bg.escalate_to)?,
                })
            })
            .transpose()?;
        if let Some(limit) = idle_limit(src, &field, span.clone(), ent, max_duration)? {
            out.idle.insert(id.clone(), limit);
        }
        let connector = ent.connector.get_ref().clone();
        if !known.connectors.contains_key(&connector) {
            return Err(src.error(
                ent.connector.span(),
                format!(
                    "{}: no connector named `{connector}` is configured",
                    field("connector")
                ),
            ));
        }
        out.catalog.insert(
            id.clone(),
            Entitlement {
                id,
                description: ent.description.clone(),
                max_duration,
                default_duration,
                reason_required: ent.require_reason,
                ticket: TicketRule {
                    required: ent.require_ticket,
                    pattern,
                },
                connector,
                drift,
                waiting,
                break_glass,
                sensitivity,
                open_to_externals: ent.open_to_externals,
            },
        );
    }

    Ok(out)
}

/// An entitlement's `idle_limit` and `idle_warning`, if it sets a limit:
/// at least [`IdleLimit::SHORTEST`], shorter than `max_duration` (a grant
/// ends by then anyway), and the warning shorter than the limit.
fn idle_limit(
    src: &Source<'_>,
    field: &dyn Fn(&str) -> String,
    span: std::ops::Range<usize>,
    ent: &RawEntitlement,
    max_duration: Duration,
) -> Result<Option<IdleLimit>, ConfigError> {
    let warning = ent
        .idle_warning
        .as_ref()
        .map(|w| Ok::<_, ConfigError>((src.duration(&field("idle_warning"), w)?, w.span())))
        .transpose()?;
    let Some(raw) = &ent.idle_limit else {
        return match warning {
            Some((_, at)) => Err(src.error(
                at,
                format!(
                    "{}: a warning needs an idle limit; set {} too",
                    field("idle_warning"),
                    field("idle_limit")
                ),
            )),
            None => Ok(None),
        };
    };
    let limit = src.duration(&field("idle_limit"), raw)?;
    if limit >= max_duration {
        return Err(src.error(
            raw.span(),
            format!(
                "{}: must be shorter than max_duration ({}): a grant ends by then anyway",
                field("idle_limit"),
                human_duration(max_duration)
            ),
        ));
    }
    IdleLimit::new(limit, warning.as_ref().map(|(w, _)| *w))
        .map(Some)
        .map_err(|e| match e {
            IdleLimitError::TooShort => {
                src.error(raw.span(), format!("{}: {e}", field("idle_limit")))
            }
            IdleLimitError::WarningNotShorter { .. } | IdleLimitError::NoWarning => {
                let at = warning.map_or(span, |(_, at)| at);
                src.error(at, format!("{}: {e}", field("idle_warning")))
            }
        })
}
