//! Schema migrations, embedded so the single binary carries its schema.
//! Applied in order at start; each runs once, recorded in `schema_migrations`.

/// `(version, sql)`, ascending. Never edit a released migration: add one.
pub const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/0001_init.sql"))];

pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}
