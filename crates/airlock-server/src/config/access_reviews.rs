//! The `[access_reviews.NAME]` tables: the kinds of access-review campaign
//! this Airlock runs — who reviews, what (eligibilities, standing holders),
//! how soon, when reminders and escalation come, and how often a campaign
//! starts by itself (`every`; without it, only on demand).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use airlock_core::access_review::Template;
use airlock_core::GroupName;
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    every: Option<Spanned<String>>,
    reviewers: Spanned<Vec<Spanned<String>>>,
    due_within: Option<Spanned<String>>,
    remind_after: Option<Spanned<String>>,
    escalate_after: Option<Spanned<String>>,
    #[serde(default)]
    escalate_to: Vec<Spanned<String>>,
    /// What the campaign reviews: `eligibilities`, `standing` (default both).
    include: Option<Spanned<Vec<Spanned<String>>>>,
}

/// How long reviewers have unless `due_within` says.
pub const DEFAULT_REVIEW_DUE_WITHIN: Duration = Duration::from_secs(14 * 24 * 3600);

const DAY: Duration = Duration::from_secs(24 * 3600);
const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);

pub(super) fn access_reviews_table(
    src: &Source<'_>,
    raw: &BTreeMap<String, Spanned<RawTemplate>>,
) -> Result<BTreeMap<String, Template>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, spanned) in raw {
        let t = spanned.get_ref();
        let field = |f: &str| format!("access_reviews.{name}.{f}");
        if airlock_core::ids::check_id(name).is_err() {
            return Err(src.error(
                spanned.span(),
                format!(
                    "access_reviews.{name}: a campaign's name may only contain letters, digits, `-`, `_`, `.` and `@`"
                ),
            ));
        }
        let groups =
            |f: &str, list: &[Spanned<String>]| -> Result<BTreeSet<GroupName>, ConfigError> {
                list.iter()
                    .map(|g| src.id(&field(f), g, GroupName::parse))
                    .collect()
            };
        let reviewers = groups("reviewers", t.reviewers.get_ref())?;
        if reviewers.is_empty() {
            return Err(src.error(
                t.reviewers.span(),
                format!("{}: name at least one group", field("reviewers")),
            ));
        }
        let within = |f: &str, raw: &Option<Spanned<String>>, longest: Duration| {
            raw.as_ref()
                .map(|d| src.duration_between(&field(f), d, (Duration::from_secs(60), longest)))
                .transpose()
        };
        let every = within("every", &t.every, YEAR)?;
        let due_within =
            within("due_within", &t.due_within, YEAR)?.unwrap_or(DEFAULT_REVIEW_DUE_WITHIN);
        let remind_after = within("remind_after", &t.remind_after, YEAR)?;
        let escalate_after = within("escalate_after", &t.escalate_after, YEAR)?;
        let escalate_to = groups("escalate_to", &t.escalate_to)?;
        match (&t.escalate_after, escalate_to.is_empty()) {
            (Some(e), true) => {
                return Err(src.error(
                    e.span(),
                    format!(
                        "{}: set escalate_to too (the groups unanswered items go to)",
                        field("escalate_after")
                    ),
                ))
            }
            (None, false) => {
                return Err(src.error(
                    spanned.span(),
                    format!(
                        "{}: set escalate_after too (when unanswered items go to escalate_to)",
                        field("escalate_to")
                    ),
                ))
            }
            _ => {}
        }
        if let (Some(every), Some(raw)) = (every, &t.every) {
            if every < DAY {
                return Err(src.error(
                    raw.span(),
                    format!(
                        "{}: must be at least a day: campaigns would pile up",
                        field("every")
                    ),
                ));
            }
        }
        let (mut eligibilities, mut standing) = (true, true);
        if let Some(include) = &t.include {
            (eligibilities, standing) = (false, false);
            for what in include.get_ref() {
                match what.get_ref().as_str() {
                    "eligibilities" => eligibilities = true,
                    "standing" => standing = true,
                    other => {
                        return Err(src.error(
                            what.span(),
                            format!(
                                "{}: `{other}` is neither `eligibilities` nor `standing`",
                                field("include")
                            ),
                        ))
                    }
                }
            }
            if !eligibilities && !standing {
                return Err(src.error(
                    include.span(),
                    format!(
                        "{}: name `eligibilities`, `standing` or both",
                        field("include")
                    ),
                ));
            }
        }
        out.insert(
            name.clone(),
            Template {
                name: name.clone(),
                every,
                reviewers,
                due_within,
                remind_after,
                escalate_after,
                escalate_to,
                eligibilities,
                standing,
            },
        );
    }
    Ok(out)
}
