//! The original's real job log (`tests/fixtures/original/user_001.log`, copied from the original
//! turbo-hipster) and its dataset config (`user_001.config.json`): parsed and checked with figures worked out by hand from the
//! log (with grep), never with the code under test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use gate_real_db_upgrade::dataset::{
    load_datasets, load_datasets_with_warnings, Dataset, DatasetDefaults, MIGRATION_REQUIRED,
};
use gate_real_db_upgrade::engine::{Engine, SeedFormat};
use gate_real_db_upgrade::limits;
use gate_real_db_upgrade::logparse::{parse_original_log, ParsedRun};
use gate_real_db_upgrade::version::ExpectedVersion;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/original")
}

fn parsed() -> ParsedRun {
    let text = std::fs::read_to_string(fixtures().join("user_001.log")).unwrap();
    parse_original_log(&text)
}

fn t(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(&format!("2014-01-16 {s}"), "%Y-%m-%d %H:%M:%S,%3f").unwrap()
}

/// The fixture config, as `<tmp>/user_001/config.json` with a dummy seed, after `edit`.
fn load_user_001(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, Dataset) {
    let text = std::fs::read_to_string(fixtures().join("user_001.config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("user_001");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&value).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("nova_user_001.sql"), "-- dummy seed\n").unwrap();
    let mut datasets = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
    assert_eq!(datasets.len(), 1);
    let dataset = datasets.remove(0);
    (tmp, dataset)
}

// The `[output]` lines of the five migrations in user_001.log (grep -n -- ' -> ' and 'done$'):
//
//   307  07:03:50,708  133 -> 134...     308  07:03:50,879  done   =>    171 ms
//   415  07:03:52,241  134 -> 135...     418  07:04:52,187  done   => 59 946 ms
//        (07:04:52.187 - 07:03:52.241 = 60 s - 0.054 s = 59.946 s)
//   525  07:04:55,160  135 -> 136...     526  07:04:56,173  done   =>  1 013 ms
//   633  07:04:57,456  136 -> 137...     634  07:04:57,486  done   =>     30 ms
//   741  07:04:58,757  137 -> 138...     743  07:05:22,054  done   => 23 297 ms
//        (07:05:22.054 - 07:04:58.757 = 23.297 s; the log's last line)
//
// No "Final schema version" line, no ImportError, every start has its `done`.
#[test]
fn migrations_and_durations() {
    let run = parsed();
    assert_eq!(run.migrations.len(), 5);
    let first = &run.migrations[0];
    let last = &run.migrations[4];
    assert_eq!((first.from.as_str(), first.to.as_str()), ("133", "134"));
    assert_eq!((last.from.as_str(), last.to.as_str()), ("137", "138"));

    let steps: Vec<(&str, &str)> = run
        .migrations
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("133", "134"),
            ("134", "135"),
            ("135", "136"),
            ("136", "137"),
            ("137", "138")
        ]
    );

    assert_eq!(first.start, t("07:03:50,708"));
    assert_eq!(first.end, Some(t("07:03:50,879")));
    assert_eq!(run.migrations[1].start, t("07:03:52,241"));
    assert_eq!(run.migrations[1].end, Some(t("07:04:52,187")));
    assert_eq!(last.start, t("07:04:58,757"));
    assert_eq!(last.end, Some(t("07:05:22,054")));

    let durations: Vec<Option<i64>> = run.migrations.iter().map(|m| m.duration_ms()).collect();
    assert_eq!(
        durations,
        vec![Some(171), Some(59_946), Some(1_013), Some(30), Some(23_297)]
    );

    assert_eq!(run.final_version, None);
    assert!(!run.unfinished);
    assert!(!run.import_error);
}

// Counter blocks (contiguous `[output] Innodb_*` lines; 99 lines each, 98 numeric — the 99th is
// `Innodb_have_atomic_builtins	ON`; the same 98 names in every block):
//
//   block    lines     after        rows_deleted rows_inserted rows_read rows_updated  x_lock_spin_rounds pages_created
//   1        198-296   (before 133)       0            0            0         0              0              0
//   2        313-411   133->134           0            0            5         1             30              9
//   3        423-521   134->135           0        45463        45472         2          12240          25512
//   4        531-629   135->136           0        90926        45476         3          12240          25571
//   5        639-737   136->137           0        90929        45480         4          12240          25573
//   (none after 137->138: its `done` is the log's last line)
//
// Deltas = the block after the migration's end minus the block before its start:
//   133->134: read 5-0 = 5, updated 1-0 = 1, inserted 0, deleted 0     -> changed 1
//   134->135: read 45472-5 = 45467, inserted 45463-0 = 45463, updated 2-1 = 1, deleted 0
//             -> changed 45463+1+0 = 45464; x_lock_spin_rounds 12240-30 = 12210;
//             pages_created 25512-9 = 25503
//   135->136: read 45476-45472 = 4, inserted 90926-45463 = 45463, updated 3-2 = 1 -> changed 45464
//   136->137: read 45480-45476 = 4, inserted 90929-90926 = 3, updated 4-3 = 1     -> changed 4
//   137->138: no block after its end -> no deltas
#[test]
fn counter_deltas() {
    let run = parsed();
    let c = |i: usize, name: &str| run.migrations[i].counters.get(name).copied();

    for i in 0..4 {
        assert_eq!(run.migrations[i].counters.len(), 98, "migration {i}");
        assert!(!run.migrations[i]
            .counters
            .contains_key("Innodb_have_atomic_builtins"));
    }
    assert!(run.migrations[4].counters.is_empty());

    assert_eq!(c(0, "Innodb_rows_read"), Some(5));
    assert_eq!(c(0, "Innodb_rows_updated"), Some(1));
    assert_eq!(c(0, "Innodb_rows_inserted"), Some(0));
    assert_eq!(c(0, "Innodb_rows_deleted"), Some(0));

    assert_eq!(c(1, "Innodb_rows_read"), Some(45_467));
    assert_eq!(c(1, "Innodb_rows_inserted"), Some(45_463));
    assert_eq!(c(1, "Innodb_rows_updated"), Some(1));
    assert_eq!(c(1, "Innodb_rows_deleted"), Some(0));
    assert_eq!(c(1, "Innodb_x_lock_spin_rounds"), Some(12_210));
    assert_eq!(c(1, "Innodb_pages_created"), Some(25_503));

    assert_eq!(c(2, "Innodb_rows_read"), Some(4));
    assert_eq!(c(2, "Innodb_rows_inserted"), Some(45_463));
    assert_eq!(c(2, "Innodb_rows_updated"), Some(1));

    assert_eq!(c(3, "Innodb_rows_read"), Some(4));
    assert_eq!(c(3, "Innodb_rows_inserted"), Some(3));
    assert_eq!(c(3, "Innodb_rows_updated"), Some(1));

    let changed: Vec<Option<i64>> = run
        .migrations
        .iter()
        .map(|m| limits::rows_changed(&m.counters))
        .collect();
    assert_eq!(
        changed,
        vec![Some(1), Some(45_464), Some(45_464), Some(4), None]
    );
    let read: Vec<Option<i64>> = run
        .migrations
        .iter()
        .map(|m| limits::rows_read(&m.counters))
        .collect();
    assert_eq!(read, vec![Some(5), Some(45_467), Some(4), Some(4), None]);
}

#[test]
fn the_original_config_loads() {
    let (tmp, d) = load_user_001(|_| {});
    let dir = tmp.path().join("user_001");
    assert_eq!(d.name, "user_001");
    assert_eq!(d.dir, dir);
    assert_eq!(d.source, dir.join("config.json"));
    assert_eq!(d.project, "openstack/nova");
    assert_eq!(d.engine, Engine::MySql); // "type": "mysql"
    assert_eq!(d.connection.user.as_deref(), Some("nova")); // db_user
    assert_eq!(d.connection.password.as_deref(), Some("tester")); // db_pass
    assert_eq!(d.database, "nova_datasets_user_001");
    assert_eq!(d.seed.path, dir.join("nova_user_001.sql"));
    assert_eq!(d.seed.format, SeedFormat::Sql);
    assert_eq!(d.logging_conf, Some(dir.join("logging.conf")));
    assert_eq!(d.expected_version, ExpectedVersion::Unchecked);
    assert!(d.upgrade_path.is_empty());
    assert_eq!(d.timeout, None);
    assert_eq!(d.runnable(), Err(MIGRATION_REQUIRED.to_string()));

    // maximum_migration_times: 20 keyed limits + default 60; the three "_NNN_bugs" are comments.
    assert_eq!(d.limits.seconds.keyed.len(), 20);
    assert_eq!(d.limits.seconds.default, Some(60.0));
    assert_eq!(d.limits.seconds.keyed["134->135"], 200.0);
    assert_eq!(d.limits.seconds.keyed["230->231"], 120.0);
    assert!(!d.limits.seconds.keyed.keys().any(|k| k.starts_with('_')));
    let changed = d.limits.rows_changed.as_ref().unwrap();
    assert_eq!((changed.keyed.len(), changed.default), (9, Some(100_000.0)));
    assert_eq!(changed.keyed["151->152"], 3_200_000.0);
    let read = d.limits.rows_read.as_ref().unwrap();
    assert_eq!((read.keyed.len(), read.default), (7, Some(100_000.0)));
    assert_eq!(read.keyed["215->216"], 930_000.0);

    // Every key of the original format is known: no warnings.
    let (_, warnings) =
        load_datasets_with_warnings(tmp.path(), &DatasetDefaults::default()).unwrap();
    assert_eq!(warnings, Vec::<String>::new());
}

// The original rules on this log with this config give no warning:
//   time:    133->134 0.171 s <= default 60;  134->135 59.946 s <= "134->135" 200;
//            135->136 1.013 s <= 60;  136->137 0.030 s <= 60;  137->138 23.297 s <= "137->138" 85
//   changed: 1, 45464, 45464, 4 <= default 100000 (none of 133..138 is keyed)
//   read:    5, 45467, 4, 4     <= default 100000
#[test]
fn the_original_rules_give_no_warning() {
    let (_tmp, d) = load_user_001(|_| {});
    assert_eq!(
        limits::check(&d.limits, &parsed().migrations),
        Vec::<String>::new()
    );
}

// The same run against tightened limits, to see each rule act on the real figures:
//   maximum_migration_times "134->135": 59.946 -> 59.946 s is equal: no warning
//                           "137->138": 23.296 -> 23.297 s > 23.296: took too long
//                           (the original cut timestamps to whole seconds; we keep the ms)
//   XInnodb_rows_changed   default 45463     -> 134->135 (45464) exceeds it;
//                           "135->136": 45464 -> 135->136 (45464) is equal: no warning
//   Innodb_rows_read       "134->135": 45466 -> 45467 > 45466
//                           "137": 3 (destination-only key) -> 136->137 read 4 > 3
//                           133->134 read 5 and 135->136 read 4 stay under the default 100000
#[test]
fn tightened_limits_give_the_expected_warnings() {
    let (_tmp, d) = load_user_001(|v| {
        let times = &mut v["maximum_migration_times"];
        times["134->135"] = serde_json::json!(59.946);
        times["137->138"] = serde_json::json!(23.296);
        let changed = &mut v["XInnodb_rows_changed"];
        changed["default"] = serde_json::json!(45_463);
        changed["135->136"] = serde_json::json!(45_464);
        let read = &mut v["Innodb_rows_read"];
        read["134->135"] = serde_json::json!(45_466);
        read["137"] = serde_json::json!(3);
    });
    assert_eq!(
        limits::check(&d.limits, &parsed().migrations),
        vec![
            "WARNING - Migration 134->135 changed too many rows (45464)".to_string(),
            "WARNING - Migration 134->135 read too many rows (45467)".to_string(),
            "WARNING - Migration 136->137 read too many rows (4)".to_string(),
            "WARNING - Migration 137->138 took too long".to_string(),
        ]
    );
}

// The log cut just before 137->138's `done` (drop its last line): that migration never ended.
#[test]
fn a_truncated_log_is_unfinished() {
    let text = std::fs::read_to_string(fixtures().join("user_001.log")).unwrap();
    let cut: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("2014-01-16 07:05:22,054"))
        .collect();
    let run = parse_original_log(&cut.join("\n"));
    assert!(run.unfinished);
    assert_eq!(run.migrations.len(), 5);
    assert_eq!(run.migrations[4].end, None);
    // Skipped by the limit checks (it gives its own FAILURE).
    let (_tmp, d) =
        load_user_001(|v| v["maximum_migration_times"]["default"] = serde_json::json!(0));
    let warnings = limits::check(&d.limits, &run.migrations);
    // 133->134 0.171 s > 0, 135->136 1.013 s > 0, 136->137 0.030 s > 0; 134->135 has its own 200.
    assert_eq!(
        warnings,
        vec![
            "WARNING - Migration 133->134 took too long".to_string(),
            "WARNING - Migration 135->136 took too long".to_string(),
            "WARNING - Migration 136->137 took too long".to_string(),
        ]
    );
}
