//! Lock observation end to end on the real servers, through the daemon binary and plugin, with
//! a table of a million rows made server-side by the change's first migration: a migration
//! that holds a lock blocking reads or writes for longer than `maximum_lock_hold` is flagged
//! with the mode, the table and the hold; one that takes only a lock letting writes through,
//! or a blocking one for an instant, is not. SQL-files mode on PostgreSQL and MariaDB, and
//! alembic (tool mode, output parsed live) on PostgreSQL.
#![allow(clippy::unwrap_used)]

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::gate::{
    big_table_alembic_run, example_world, run_example_change, JobRun, World, ALEMBIC_ENV_PY, REV_A,
    REV_B, REV_C,
};

/// The limit of the tests: a rewrite of a million rows holds its lock for about half a second
/// on a quiet machine (seconds on a loaded one); an instant change for a few milliseconds.
const LIMIT: f64 = 0.2;

/// The example dataset on `engine` with `maximum_lock_hold`; the change adds `files`. The
/// world holds the results.
fn run_sql_change(engine: Engine, files: &[(&str, &str)]) -> (World, JobRun) {
    let world = example_world(engine, json!({}), |c| {
        c["maximum_lock_hold"] = json!({"default": LIMIT, "_why": "what a deploy can bear"});
    });
    let run = run_example_change(&world, engine, files);
    (world, run)
}

/// The `locks` entry of `table` in a migration of the summary.
fn table_locks<'a>(migration: &'a Value, table: &str) -> Option<&'a Value> {
    migration["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["table"] == table)
}

/// The longest blocking hold of `table` in `migration`: mode and seconds.
fn hold(migration: &Value, table: &str) -> Option<(String, f64)> {
    let h = &table_locks(migration, table)?["longest_blocking"];
    (!h.is_null()).then(|| {
        (
            h["mode"].as_str().unwrap().to_string(),
            h["seconds"].as_f64().unwrap(),
        )
    })
}

/// The one warning of the run, on migration `name`, for `mode` on `big`, with its hold.
fn assert_flagged(run: &JobRun, name: &str, mode: &str) -> f64 {
    let lines = run.lines();
    let prefix = format!("WARNING - Migration {name} held {mode} lock on big for ");
    assert_eq!(lines.len(), 1, "{}", run.describe());
    let seconds: f64 = lines[0]
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("{}", run.describe()))
        .parse()
        .unwrap();
    // The message rounds the hold to a tenth of a second.
    assert!(seconds + 0.05 > LIMIT, "{}", run.describe());
    seconds
}

#[test]
fn postgresql_rewrite_is_flagged_and_a_concurrent_index_is_not() {
    let (_world, run) = run_sql_change(
        Engine::PostgreSql,
        &[
            (
                "migrations/004_big.sql",
                "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER);\n\
                 INSERT INTO big SELECT g, g FROM generate_series(1, 1000000) g;\n",
            ),
            (
                "migrations/005_rewrite.sql",
                "ALTER TABLE big ADD COLUMN c FLOAT DEFAULT random();\n",
            ),
            // One statement per file: the file is not wrapped in a transaction then.
            (
                "migrations/006_index.sql",
                "CREATE INDEX CONCURRENTLY big_v ON big (v)",
            ),
        ],
    );
    let seconds = assert_flagged(&run, "4->5", "ACCESS EXCLUSIVE");
    let m = run.migrations(0);
    assert_eq!(m.len(), 4, "{}", run.describe());
    let rewrite = &m[2];
    assert_eq!(
        table_locks(rewrite, "big").unwrap()["strongest"],
        "ACCESS EXCLUSIVE"
    );
    let (mode, held) = hold(rewrite, "big").unwrap();
    assert_eq!(mode, "ACCESS EXCLUSIVE");
    assert!((held - seconds).abs() < 0.051, "{held} vs {seconds}");
    // The hold is within the migration's time.
    assert!(held * 1000.0 <= rewrite["duration_ms"].as_f64().unwrap() + 1.0);
    let index = &m[3];
    assert_eq!(
        table_locks(index, "big").unwrap()["strongest"],
        "SHARE UPDATE EXCLUSIVE",
        "{index}"
    );
    assert_eq!(hold(index, "big"), None, "{index}");
    let text = run.file("summary.txt");
    assert!(text.contains("ACCESS EXCLUSIVE big "), "{text}");
    let log = run.file("example.log");
    assert!(
        log.contains("locks: migration 4->5 held ACCESS EXCLUSIVE on big for "),
        "{log}"
    );
    assert!(
        log.contains("observing locks every 100 ms (pg_locks)"),
        "{log}"
    );
}

#[test]
fn mariadb_copy_alter_is_flagged_and_an_instant_one_is_not() {
    let (_world, run) = run_sql_change(
        Engine::MariaDb,
        &[
            (
                "migrations/004_big.sql",
                "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER) ENGINE=InnoDB;\n\
                 INSERT INTO big SELECT seq, seq FROM seq_1_to_1000000;\n",
            ),
            (
                "migrations/005_copy.sql",
                "ALTER TABLE big ADD COLUMN c INTEGER DEFAULT 5, ALGORITHM=COPY;\n",
            ),
            (
                "migrations/006_instant.sql",
                "ALTER TABLE big ADD COLUMN d INTEGER DEFAULT 5, ALGORITHM=INSTANT;\n",
            ),
        ],
    );
    // The copy lets reads through and blocks writes (SHARED_NO_WRITE) for the whole copy.
    assert_flagged(&run, "4->5", "SHARED_NO_WRITE");
    let m = run.migrations(0);
    assert_eq!(m.len(), 4, "{}", run.describe());
    assert!(hold(&m[2], "big").is_some_and(|(_, s)| s > LIMIT));
    assert!(
        hold(&m[3], "big").is_none_or(|(_, s)| s <= LIMIT),
        "{}",
        m[3]
    );
    let log = run.file("example.log");
    assert!(
        log.contains("observing locks every 100 ms (information_schema.METADATA_LOCK_INFO)"),
        "{log}"
    );
}

/// alembic (one transaction per migration) with the output parsed as it arrives: each
/// migration gets the locks taken while it ran, and only the rewrite is flagged.
#[test]
fn alembic_runs_get_locks_per_migration() {
    let (_world, run) = big_table_alembic_run(
        "acme/locks",
        json!({"maximum_lock_hold": {"default": LIMIT}, "lock_sample_interval": 50}),
        ALEMBIC_ENV_PY,
        "",
    );

    assert_flagged(&run, &format!("{REV_A}->{REV_B}"), "ACCESS EXCLUSIVE");
    let m = run.migrations(0);
    let names: Vec<String> = m
        .iter()
        .map(|m| {
            format!(
                "{}->{}",
                m["from"].as_str().unwrap(),
                m["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            format!("base->{REV_A}"),
            format!("{REV_A}->{REV_B}"),
            format!("{REV_B}->{REV_C}")
        ],
        "{}",
        run.describe()
    );
    // The rewrite's hold belongs to it alone: the migrations before and after took no lock
    // on `big`, or a catalog-only ADD COLUMN's for an instant.
    assert!(hold(&m[1], "big").is_some_and(|(mode, s)| mode == "ACCESS EXCLUSIVE" && s > LIMIT));
    assert_eq!(table_locks(&m[0], "big"), None, "{}", m[0]);
    assert!(
        hold(&m[2], "big").is_none_or(|(_, s)| s <= LIMIT),
        "{}",
        m[2]
    );
    // The rewrite is the second migration's alone, and certain (one transaction each), even
    // when the first one is so short that the second had begun before its end was handled.
    let rewrites = |i: usize| m[i]["rewrites"].as_array().cloned().unwrap_or_default();
    assert!(rewrites(0).is_empty(), "{}", m[0]);
    assert!(rewrites(2).is_empty(), "{}", m[2]);
    assert_eq!(rewrites(1).len(), 1, "{}", m[1]);
    assert_eq!(rewrites(1)[0]["table"], "big", "{}", m[1]);
    assert_eq!(rewrites(1)[0]["certain"], true, "{}", m[1]);
    let log = run.file("api.log");
    assert!(
        log.contains("observing locks every 50 ms (pg_locks)"),
        "{log}"
    );
}
