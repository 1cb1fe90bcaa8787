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
        version: 7,
        common: include_str!("migrations/0007_api_tokens.sql"),
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 9,
        common: include_str!("migrations/0009_waiting.sql"),
        sqlite: "",
        postgres: "",
    },
];

pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
