//! Per-migration limits: `maximum_migration_times` (seconds), `XInnodb_rows_changed`,
//! `Innodb_rows_read`, `maximum_lock_hold` (seconds), `maximum_rewrite_bytes`,
//! `maximum_wal_bytes`. Keys `"151->152"`, `"152"` (destination only) or a revision id;
//! `default` otherwise; keys starting with `_` are comments. A limit fails only when strictly
//! exceeded.
//!
//! Each table, when present in a dataset, must have a `default`. Values are non-negative
//! numbers (seconds may have a fraction). Comment keys (`"_138_bugs": [1263835]`) may hold any
//! value and are ignored.
//!
//! [`check`] gives the original's warnings:
//! - time: `WARNING - Migration <from>-><to> took too long` when
//!   `duration_ms / 1000.0 > limit` (millisecond precision; equal is fine);
//! - rows changed: `WARNING - Migration <from>-><to> changed too many rows (N)` where N is the
//!   delta of `Innodb_rows_updated + Innodb_rows_inserted + Innodb_rows_deleted` (for
//!   PostgreSQL counters: `tup_updated + tup_inserted + tup_deleted`);
//! - rows read: `WARNING - Migration <from>-><to> read too many rows (N)` where N is the delta
//!   of `Innodb_rows_read` (PostgreSQL: `tup_returned`);
//! - WAL written (`maximum_wal_bytes`, PostgreSQL): `WARNING - Migration <from>-><to> wrote
//!   too much WAL (N bytes)` where N is the `wal_bytes` counter
//!   ([`crate::engine::CounterReader`]; server-wide);
//! - lock hold (`maximum_lock_hold`, seconds): `WARNING - Migration <from>-><to> held <MODE>
//!   lock on <table> for N s` for each table on which the migration held a lock blocking
//!   reads or writes ([`crate::engine::Blocks`]) for strictly longer than the limit, without
//!   a break (N to a tenth of a second; the hold is measured by sampling, see
//!   [`crate::engine::LockObserver`]).
//! - rewrite size (`maximum_rewrite_bytes`, bytes): `WARNING - Migration <from>-><to> rewrote
//!   <table> (<size>)` for each table the migration rewrote that was strictly larger than the
//!   limit before the rewrite (`may have rewritten` when it could also be another migration's;
//!   size as [`messages::human_bytes`] writes it; see [`crate::engine::rewrites`]). A migration
//!   that never ended is checked too: a rewrite seen is a rewrite done.
//!
//! A migration whose observation had a gap in the part a warning is about
//! ([`MigrationRecord::observation_gaps`]) is checked on what was seen, and the warning ends
//! with `(partial: <part> not observed for N s of it, an observation fault)`
//! ([`messages::partial_observation`]).
//!
//! Migrations that never ended are skipped but for their rewrites (they give their own FAILURE), and so are the counter
//! checks of a migration whose counters were not seen.

use std::collections::BTreeMap;

use serde_json::Value;
use turbo_hipster_sdk::config::{self, Checker};

use crate::engine::Part;
use crate::logparse::MigrationRecord;
use crate::messages;

/// The dataset key of the time limits (seconds per migration).
pub const KEY_SECONDS: &str = "maximum_migration_times";
/// The dataset key of the rows-changed limits (the original's spelling, `X` included).
pub const KEY_ROWS_CHANGED: &str = "XInnodb_rows_changed";
/// The dataset key of the rows-read limits.
pub const KEY_ROWS_READ: &str = "Innodb_rows_read";
/// The dataset key of the lock-hold limits (seconds per migration).
pub const KEY_LOCK_HOLD: &str = "maximum_lock_hold";
/// The dataset key of the rewrite limits (bytes of a table a migration may rewrite).
pub const KEY_REWRITE_BYTES: &str = "maximum_rewrite_bytes";
/// The dataset key of the WAL limits (bytes per migration, PostgreSQL).
pub const KEY_WAL_BYTES: &str = "maximum_wal_bytes";

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

    /// Reads one table as written in a dataset under `key` (e.g. `maximum_migration_times`);
    /// `None` when it has a problem (not an object, an empty key, a value that is not a
    /// non-negative number, no `default`), each recorded in `c` with its key path.
    pub fn from_json(c: &mut Checker, key: &str, value: &Value) -> Option<Self> {
        let object = c.object(key, value)?;
        let mut table = LimitTable::default();
        let mut ok = true;
        for (name, limit) in object {
            if name.starts_with('_') {
                continue; // a comment, e.g. "_138_bugs": [1263835]
            }
            if name.trim().is_empty() {
                c.error(key, "a limit key is empty");
                ok = false;
                continue;
            }
            let Some(number) = c.number(&config::key(key, name), limit, 0.0) else {
                ok = false;
                continue;
            };
            if name == "default" {
                table.default = Some(number);
            } else {
                table.keyed.insert(name.clone(), number);
            }
        }
        if !object.contains_key("default") {
            c.required(&config::key(key, "default"), "");
            ok = false;
        }
        ok.then_some(table)
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
    /// Seconds a migration may hold, without a break, a lock that blocks reads or writes of
    /// a table.
    pub lock_hold: Option<LimitTable>,
    /// Bytes of a table (before the rewrite) a migration may rewrite.
    pub rewrite_bytes: Option<LimitTable>,
    /// WAL bytes written per migration (PostgreSQL).
    pub wal_bytes: Option<LimitTable>,
}

/// Rows changed by a migration from its counter deltas: `Innodb_rows_updated +
/// Innodb_rows_inserted + Innodb_rows_deleted` (those present), else the PostgreSQL
/// `tup_updated + tup_inserted + tup_deleted`, else MariaDB `userstat`'s `rows_changed`;
/// `None` when none of them was seen.
pub fn rows_changed(counters: &BTreeMap<String, i64>) -> Option<i64> {
    sum_present(
        counters,
        &[
            "Innodb_rows_updated",
            "Innodb_rows_inserted",
            "Innodb_rows_deleted",
        ],
    )
    .or_else(|| sum_present(counters, &["tup_updated", "tup_inserted", "tup_deleted"]))
    .or_else(|| counters.get("rows_changed").copied())
}

/// WAL bytes written during a migration (`wal_bytes`); `None` when not counted.
pub fn wal_bytes(counters: &BTreeMap<String, i64>) -> Option<i64> {
    counters.get(crate::engine::WAL_BYTES).copied()
}

/// Rows read by a migration from its counter deltas: `Innodb_rows_read`, else the PostgreSQL
/// `tup_returned`; `None` when neither was seen.
pub fn rows_read(counters: &BTreeMap<String, i64>) -> Option<i64> {
    counters
        .get("Innodb_rows_read")
        .or_else(|| counters.get("tup_returned"))
        .copied()
}

fn sum_present(counters: &BTreeMap<String, i64>, names: &[&str]) -> Option<i64> {
    let mut seen = false;
    let mut total = 0i64;
    for name in names {
        if let Some(v) = counters.get(*name) {
            seen = true;
            total = total.saturating_add(*v);
        }
    }
    seen.then_some(total)
}

/// The original's warnings for these migrations: `WARNING - Migration %s took too long`
/// (%s = `from->to`), and when counter limits are set, `WARNING - Migration %s changed too many
/// rows (N)` / `WARNING - Migration %s read too many rows (N)`, and this port's lock and rewrite
/// warnings. Migrations that never ended are skipped but for their rewrites (they give their own
/// FAILURE).
///
/// Warnings come in migration order; for one migration: time, rows changed, rows read.
pub fn check(limits: &Limits, migrations: &[MigrationRecord]) -> Vec<String> {
    let mut warnings = Vec::new();
    for m in migrations {
        let name = format!("{}->{}", m.from, m.to);
        let Some(duration_ms) = m.duration_ms() else {
            warnings.extend(rewrote_too_much(limits, &name, m));
            continue;
        };
        if let Some(limit) = limits.seconds.lookup(&m.from, &m.to) {
            if duration_ms as f64 / 1000.0 > limit {
                warnings.push(messages::took_too_long(&name));
            }
        }
        let counted = partial(m, Part::Counters);
        if let (Some(table), Some(n)) = (&limits.rows_changed, rows_changed(&m.counters)) {
            if table.lookup(&m.from, &m.to).is_some_and(|l| n as f64 > l) {
                warnings.push(messages::changed_too_many_rows(&name, n) + &counted);
            }
        }
        if let (Some(table), Some(n)) = (&limits.rows_read, rows_read(&m.counters)) {
            if table.lookup(&m.from, &m.to).is_some_and(|l| n as f64 > l) {
                warnings.push(messages::read_too_many_rows(&name, n) + &counted);
            }
        }
        if let (Some(table), Some(n)) = (&limits.wal_bytes, wal_bytes(&m.counters)) {
            if table.lookup(&m.from, &m.to).is_some_and(|l| n as f64 > l) {
                warnings.push(messages::wrote_too_much_wal(&name, n) + &counted);
            }
        }
        if let Some(limit) = limits
            .lock_hold
            .as_ref()
            .and_then(|t| t.lookup(&m.from, &m.to))
        {
            warnings.extend(held_too_long(&name, m, limit));
        }
        warnings.extend(rewrote_too_much(limits, &name, m));
    }
    warnings
}

/// The warnings of the tables `m` rewrote that were strictly larger than its
/// `maximum_rewrite_bytes` limit.
fn rewrote_too_much(limits: &Limits, name: &str, m: &MigrationRecord) -> Vec<String> {
    let Some(limit) = limits
        .rewrite_bytes
        .as_ref()
        .and_then(|t| t.lookup(&m.from, &m.to))
    else {
        return Vec::new();
    };
    #[allow(clippy::cast_precision_loss)]
    m.rewrites
        .iter()
        .filter(|r| r.bytes as f64 > limit)
        .map(|r| {
            messages::rewrote_table(name, &r.table, r.bytes, r.certain)
                + &partial(m, Part::Rewrites)
        })
        .collect()
}

/// The warnings' suffix when `part` of `m` was not fully observed (empty when it was).
fn partial(m: &MigrationRecord, part: Part) -> String {
    let gaps: Vec<&crate::engine::Gap> = m
        .observation_gaps
        .iter()
        .filter(|g| g.part == part)
        .collect();
    if gaps.is_empty() {
        return String::new();
    }
    messages::partial_observation(part.as_str(), gaps.iter().map(|g| g.seconds()).sum())
}

/// The warnings of the tables `m` held a blocking lock on for strictly longer than `limit`.
fn held_too_long(name: &str, m: &MigrationRecord, limit: f64) -> Vec<String> {
    let partial = partial(m, Part::Locks);
    m.locks
        .iter()
        .filter_map(|l| {
            let hold = l.longest_blocking.filter(|h| h.seconds > limit)?;
            Some(
                messages::held_lock_too_long(name, hold.mode.name, &l.table, hold.seconds)
                    + &partial,
            )
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;
    use serde_json::json;

    /// The table `value` read under `key`, or the error lines.
    fn read(key: &str, value: Value) -> Result<LimitTable, Vec<String>> {
        let mut c = Checker::bare();
        let table = LimitTable::from_json(&mut c, key, &value);
        let (errors, _) = c.into_lines();
        table.filter(|_| errors.is_empty()).ok_or(errors)
    }

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f").unwrap()
    }

    fn record(from: &str, to: &str, ms: i64, counters: &[(&str, i64)]) -> MigrationRecord {
        let start = t("2020-01-01 00:00:00.000");
        MigrationRecord {
            from: from.into(),
            to: to.into(),
            description: String::new(),
            start,
            end: Some(start + chrono::Duration::milliseconds(ms)),
            counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            locks: Vec::new(),
            rewrites: Vec::new(),
            observation_gaps: Vec::new(),
        }
    }

    #[test]
    fn key_precedence_from_to_over_to_over_default() {
        let table = read(
            "maximum_migration_times",
            json!({"151->152": 10, "152": 20, "153": 30, "default": 60}),
        )
        .unwrap();
        assert_eq!(table.lookup("151", "152"), Some(10.0));
        assert_eq!(table.lookup("150", "152"), Some(20.0));
        assert_eq!(table.lookup("152", "153"), Some(30.0));
        assert_eq!(table.lookup("153", "154"), Some(60.0));
        // A revision id (alembic) works as a destination key.
        let table = read("x", json!({"1a2b3c": 5, "default": 1})).unwrap();
        assert_eq!(table.lookup("base", "1a2b3c"), Some(5.0));
    }

    #[test]
    fn underscore_keys_are_comments() {
        let table = read(
            "maximum_migration_times",
            json!({"_138_bugs": [1263835], "_note": "x", "default": 60}),
        )
        .unwrap();
        assert!(table.keyed.is_empty());
        assert_eq!(table.default, Some(60.0));
    }

    #[test]
    fn default_required_and_values_checked() {
        let errs = read("Innodb_rows_read", json!({"1->2": -1, "3": "x", "": 1})).unwrap_err();
        assert_eq!(
            errs,
            [
                "Innodb_rows_read: a limit key is empty",
                "Innodb_rows_read.1->2: must be at least 0, got -1",
                "Innodb_rows_read.3: expected a number, got a string",
                "Innodb_rows_read.default: required",
            ]
        );
        let errs = read("k", json!({"default": "60"})).unwrap_err();
        assert_eq!(errs, ["k.default: expected a number, got a string"]);
        assert_eq!(
            read("k", json!([1])).unwrap_err(),
            ["k: expected an object, got a list"]
        );
    }

    #[test]
    fn strictly_greater_with_millisecond_precision() {
        let limits = Limits {
            seconds: read("s", json!({"1->2": 1.5, "default": 2})).unwrap(),
            ..Limits::default()
        };
        let migrations = vec![
            record("1", "2", 1500, &[]), // equal: fine
            record("1", "2", 1501, &[]), // 1.501 > 1.5
            record("2", "3", 2000, &[]), // equal to default: fine
            record("2", "3", 2001, &[]),
        ];
        assert_eq!(
            check(&limits, &migrations),
            vec![
                "WARNING - Migration 1->2 took too long".to_string(),
                "WARNING - Migration 2->3 took too long".to_string(),
            ]
        );
    }

    #[test]
    fn unfinished_migrations_are_skipped() {
        let limits = Limits {
            seconds: read("s", json!({"default": 0})).unwrap(),
            ..Limits::default()
        };
        let mut m = record("1", "2", 5000, &[]);
        m.end = None;
        assert!(check(&limits, &[m]).is_empty());
    }

    fn locks(table: &str, mode: &str, hold: Option<(&str, f64)>) -> crate::engine::TableLocks {
        use crate::engine::{Hold, LockMode};
        crate::engine::TableLocks {
            table: table.into(),
            strongest: LockMode::postgres(mode).unwrap(),
            longest_blocking: hold.map(|(mode, seconds)| Hold {
                mode: LockMode::postgres(mode).unwrap(),
                seconds,
            }),
            waited: false,
        }
    }

    #[test]
    fn lock_hold_warnings_per_table_strictly_over_the_limit() {
        let limits = Limits {
            lock_hold: Some(
                read(
                    KEY_LOCK_HOLD,
                    json!({"default": 1, "3": 10, "_why": "3 is a known rewrite"}),
                )
                .unwrap(),
            ),
            ..Limits::default()
        };
        let mut first = record("1", "2", 5000, &[]);
        first.locks = vec![
            locks(
                "orders",
                "AccessExclusiveLock",
                Some(("AccessExclusiveLock", 4.12)),
            ),
            locks("users", "ShareLock", Some(("ShareLock", 1.0))),
            locks("items", "ShareUpdateExclusiveLock", None),
        ];
        let mut second = record("2", "3", 5000, &[]);
        second.locks = vec![locks(
            "orders",
            "AccessExclusiveLock",
            Some(("AccessExclusiveLock", 9.0)),
        )];
        assert_eq!(
            check(&limits, &[first.clone(), second]),
            vec!["WARNING - Migration 1->2 held ACCESS EXCLUSIVE lock on orders for 4.1 s"]
        );
        assert!(
            check(&Limits::default(), &[first]).is_empty(),
            "no limit, no warning"
        );
    }

    /// A gap in the locks makes the hold a partial figure: still checked, the warning says so;
    /// a gap in another part changes nothing about the locks' warning.
    #[test]
    fn warnings_on_partly_observed_figures_say_so() {
        use chrono::TimeZone;
        let limits = Limits {
            lock_hold: Some(read(KEY_LOCK_HOLD, json!({"default": 1})).unwrap()),
            ..Limits::default()
        };
        let at = |ms: i64| {
            chrono::Local
                .timestamp_millis_opt(1_700_000_000_000 + ms)
                .unwrap()
        };
        let gap = |part| crate::engine::Gap {
            part,
            from: at(0),
            to: at(1_300),
            ongoing: false,
            why: "connection reset".into(),
        };
        let mut m = record("1", "2", 5000, &[]);
        m.locks = vec![locks(
            "orders",
            "AccessExclusiveLock",
            Some(("AccessExclusiveLock", 2.0)),
        )];
        m.observation_gaps = vec![gap(Part::Counters)];
        assert_eq!(
            check(&limits, std::slice::from_ref(&m)),
            ["WARNING - Migration 1->2 held ACCESS EXCLUSIVE lock on orders for 2.0 s"]
        );
        m.observation_gaps.push(gap(Part::Locks));
        let warnings = check(&limits, &[m]);
        assert_eq!(
            warnings,
            [
                "WARNING - Migration 1->2 held ACCESS EXCLUSIVE lock on orders for 2.0 s \
                 (partial: locks not observed for 1.3 s of it, an observation fault)"
            ]
        );
        assert!(messages::is_warning(&warnings[0]));
    }

    fn rewrite(table: &str, bytes: i64, certain: bool) -> crate::engine::Rewrite {
        crate::engine::Rewrite {
            table: table.into(),
            bytes,
            certain,
        }
    }

    #[test]
    fn rewrite_warnings_per_table_strictly_over_the_limit() {
        let limits = Limits {
            rewrite_bytes: Some(
                read(KEY_REWRITE_BYTES, json!({"default": 1000, "3": 1_000_000})).unwrap(),
            ),
            ..Limits::default()
        };
        let mut first = record("1", "2", 5000, &[]);
        first.rewrites = vec![
            rewrite("orders", 1001, true),
            rewrite("small", 1000, true),
            rewrite("users", 5000, false),
        ];
        let mut second = record("2", "3", 5000, &[]);
        second.rewrites = vec![rewrite("orders", 900_000, true)];
        let mut unfinished = record("3", "4", 5000, &[]);
        unfinished.end = None;
        unfinished.rewrites = vec![rewrite("items", 2000, true)];
        assert_eq!(
            check(&limits, &[first.clone(), second, unfinished]),
            vec![
                "WARNING - Migration 1->2 rewrote orders (1001 B)",
                "WARNING - Migration 1->2 may have rewritten users (4.9 kB)",
                "WARNING - Migration 3->4 rewrote items (2.0 kB)",
            ]
        );
        assert!(
            check(&Limits::default(), &[first]).is_empty(),
            "no limit, no warning"
        );
    }

    #[test]
    fn counter_warnings() {
        let limits = Limits {
            seconds: LimitTable::default(),
            rows_changed: Some(read("c", json!({"default": 10, "2": 100})).unwrap()),
            rows_read: Some(read("r", json!({"default": 10})).unwrap()),
            lock_hold: None,
            rewrite_bytes: None,
            wal_bytes: Some(read("w", json!({"default": 1000, "5": 5000})).unwrap()),
        };
        let migrations = vec![
            // 4 + 4 + 3 = 11 > 10; read 10 = 10 is fine.
            record(
                "0",
                "1",
                1,
                &[
                    ("Innodb_rows_updated", 4),
                    ("Innodb_rows_inserted", 4),
                    ("Innodb_rows_deleted", 3),
                    ("Innodb_rows_read", 10),
                ],
            ),
            // 11 changed but the "2" key allows 100; read 11 > 10.
            record(
                "1",
                "2",
                1,
                &[("Innodb_rows_inserted", 11), ("Innodb_rows_read", 11)],
            ),
            // No counters seen: no counter checks.
            record("2", "3", 1, &[]),
            // PostgreSQL names.
            record("3", "4", 1, &[("tup_inserted", 20), ("tup_returned", 30)]),
            // WAL: 5000 is within the "5" key; 1001 over the default. MariaDB userstat's
            // rows_changed stands for the split.
            record("4", "5", 1, &[("wal_bytes", 5000), ("rows_changed", 11)]),
            record("5", "6", 1, &[("wal_bytes", 1001)]),
        ];
        assert_eq!(
            check(&limits, &migrations),
            vec![
                "WARNING - Migration 0->1 changed too many rows (11)".to_string(),
                "WARNING - Migration 1->2 read too many rows (11)".to_string(),
                "WARNING - Migration 3->4 changed too many rows (20)".to_string(),
                "WARNING - Migration 3->4 read too many rows (30)".to_string(),
                "WARNING - Migration 4->5 changed too many rows (11)".to_string(),
                "WARNING - Migration 5->6 wrote too much WAL (1001 bytes)".to_string(),
            ]
        );
        // Without counter tables, no counter warnings at all.
        let no_tables = Limits::default();
        assert!(check(&no_tables, &migrations).is_empty());
    }
}
