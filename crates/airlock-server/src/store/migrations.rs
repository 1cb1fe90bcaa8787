//! Schema migrations, embedded so the single binary carries its schema.
//! Applied in order at start; each runs once, recorded in `schema_migrations`.
//! Both databases get the same versions: a shared part, plus the few
//! statements whose syntax differs (triggers).

/// One schema version.
pub struct Migration {
    pub version: i64,
    pub common: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Ascending. Never edit a released migration: add one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        common: include_str!("migrations/0001_init.sql"),
        sqlite: include_str!("migrations/0001_init.sqlite.sql"),
        postgres: include_str!("migrations/0001_init.postgres.sql"),
    },
    Migration {
        version: 2,
        common: include_str!("migrations/0002_policy_decisions.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 3,
        common: include_str!("migrations/0003_due_claims.sql"),
        sqlite: "",
        postgres: include_str!("migrations/0003_due_claims.postgres.sql"),
    },
    Migration {
        version: 4,
        common: "",
        sqlite: include_str!("migrations/0004_audit_no_replace.sqlite.sql"),
        postgres: include_str!("migrations/0004_audit_no_replace.postgres.sql"),
    },
    Migration {
        version: 5,
        common: include_str!("migrations/0005_request_lists.sql"),
        sqlite: include_str!("migrations/0005_request_lists.sqlite.sql"),
        postgres: include_str!("migrations/0005_request_lists.postgres.sql"),
    },
    Migration {
        version: 6,
        common: include_str!("migrations/0006_directory.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 7,
        common: include_str!("migrations/0007_api_tokens.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 8,
        common: include_str!("migrations/0008_notification_outbox.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 9,
        common: include_str!("migrations/0009_waiting.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 10,
        common: include_str!("migrations/0010_break_glass_review.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 11,
        common: include_str!("migrations/0011_extension.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 12,
        common: include_str!("migrations/0012_grant_checks.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 13,
        common: include_str!("migrations/0013_access_reviews.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 14,
        common: include_str!("migrations/0014_access_review_open_items.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 15,
        common: "",
        sqlite: include_str!("migrations/0015_grant_checks_table.sqlite.sql"),
        postgres: include_str!("migrations/0015_grant_checks_table.postgres.sql"),
    },
    Migration {
        version: 16,
        common: include_str!("migrations/0016_tickets.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 17,
        common: include_str!("migrations/0017_external_principals.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 18,
        common: include_str!("migrations/0018_bundles.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 19,
        common: include_str!("migrations/0019_ssh_sessions.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 20,
        common: include_str!("migrations/0020_list_indexes.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 21,
        common: include_str!("migrations/0021_startup_indexes.sql"),
        sqlite: include_str!("migrations/0021_startup_indexes.sqlite.sql"),
        postgres: include_str!("migrations/0021_startup_indexes.postgres.sql"),
    },
    Migration {
        version: 22,
        common: include_str!("migrations/0022_pending_by_group.sql"),
        sqlite: include_str!("migrations/0022_pending_by_group.sqlite.sql"),
        postgres: include_str!("migrations/0022_pending_by_group.postgres.sql"),
    },
];

pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The migrations a database that recorded `applied` still needs, in order:
/// every version it lacks, not only those above its newest (migrations
/// written side by side may land with a lower number after a higher one).
pub fn pending(
    applied: &std::collections::BTreeSet<i64>,
) -> impl Iterator<Item = &'static Migration> + '_ {
    MIGRATIONS.iter().filter(|m| !applied.contains(&m.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_missing_below_the_newest_still_runs() {
        let versions = |applied: &[i64]| -> Vec<i64> {
            pending(&applied.iter().copied().collect())
                .map(|m| m.version)
                .collect()
        };
        let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions(&[]), all);
        assert!(versions(&all).is_empty());
        let without_tokens: Vec<i64> = all.iter().copied().filter(|v| *v != 7).collect();
        assert_eq!(versions(&without_tokens), [7]);
    }
}
