//! Rewrite detection end to end on the real servers, through the daemon binary and plugin,
//! with a table of a million rows: a migration that rewrites it is reported with the table's
//! size (summary.json, summary.txt, the dataset's log) and, over `maximum_rewrite_bytes`,
//! warned about; one that only adds an index concurrently (PostgreSQL) or a column instantly
//! (MariaDB) is not. SQL-files mode on PostgreSQL and MariaDB; alembic on PostgreSQL with one
//! transaction per migration (the rewrite is seen at its own boundary) and with alembic's
//! default, one transaction for all (seen only at the commit, given to the migration that
//! took the table's ACCESS EXCLUSIVE lock, marked uncertain since the next one held it too).
#![allow(clippy::unwrap_used)]

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::gate::{
    big_table_alembic_run, example_world, run_example_change, JobRun, World, ALEMBIC_ENV_PY, REV_A,
    REV_B,
};

/// The limit of the tests, in bytes: a million rows take tens of MB.
const LIMIT: u64 = 1 << 20;

/// The example dataset on `engine` with `maximum_rewrite_bytes`; the change adds `files`.
fn run_sql_change(engine: Engine, files: &[(&str, &str)]) -> (World, JobRun) {
    let world = example_world(engine, json!({}), |c| {
        c["maximum_rewrite_bytes"] = json!({"default": LIMIT, "_why": "a few seconds of copy"});
    });
    let run = run_example_change(&world, engine, files);
    (world, run)
}

/// The `rewrites` of a migration of the summary: (table, bytes, certain).
fn rewrites(migration: &Value) -> Vec<(String, u64, bool)> {
    migration["rewrites"]
        .as_array()
        .unwrap_or_else(|| panic!("no rewrites in {migration}"))
        .iter()
        .map(|r| {
            (
                r["table"].as_str().unwrap().to_string(),
                r["bytes"].as_u64().unwrap(),
                r["certain"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The run's one warning: migration `name` `verb` `big`, with a size in MB; the size in the
/// summary of `migration`, which is the only one with a rewrite.
fn assert_rewrite_of_big(run: &JobRun, name: &str, verb: &str, index: usize, certain: bool) {
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "{}", run.describe());
    let prefix = format!("WARNING - Migration {name} {verb} big (");
    let size = lines[0]
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" MB)"))
        .unwrap_or_else(|| panic!("{}", run.describe()));
    let mb: f64 = size.parse().unwrap();
    // A million rows of two integers, and the primary key: 20-80 MB on either engine.
    assert!((20.0..80.0).contains(&mb), "{}", run.describe());
    for (i, m) in run.migrations(0).iter().enumerate() {
        let seen = rewrites(m);
        if i == index {
            assert_eq!(seen.len(), 1, "{m}");
            let (table, bytes, sure) = &seen[0];
            assert_eq!((table.as_str(), *sure), ("big", certain), "{m}");
            assert!((*bytes as f64 / 1048576.0 - mb).abs() < 0.06, "{m}");
        } else {
            assert!(seen.is_empty(), "migration {i}: {m}");
        }
    }
    let text = run.file("summary.txt");
    let cell = format!("big {mb:.1} MB{}", if certain { "" } else { "?" });
    assert!(text.contains(&cell), "{cell}\n{text}");
}

#[test]
fn postgresql_rewrite_is_reported_and_a_concurrent_index_is_not() {
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
    assert_rewrite_of_big(&run, "4->5", "rewrote", 2, true);
    let log = run.file("example.log");
    assert!(
        log.contains("rewrites: migration 4->5 rewrote big ("),
        "{log}"
    );
    assert!(
        log.contains("watching for table rewrites at each migration boundary"),
        "{log}"
    );
}

#[test]
fn mariadb_copy_alter_is_a_rewrite_and_an_instant_one_is_not() {
    let (_world, run) = run_sql_change(
        Engine::MariaDb,
        &[
            (
                "migrations/004_big.sql",
                "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER) ENGINE=InnoDB;\n\
                 INSERT INTO big SELECT seq, seq FROM seq_1_to_1000000;\n\
                 ANALYZE TABLE big;\n",
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
    assert_rewrite_of_big(&run, "4->5", "rewrote", 2, true);
    let log = run.file("example.log");
    assert!(
        log.contains("rewrites: migration 4->5 rewrote big ("),
        "{log}"
    );
}

/// An alembic run on PostgreSQL whose `env.py` is `env_py`: a table, the rewrite of `big`,
/// a catalog-only column on `big` that then takes a few samples' time. The world holds the
/// results.
fn alembic_run(env_py: &str) -> (World, JobRun) {
    let (world, run) = big_table_alembic_run(
        "acme/rewrites",
        json!({"maximum_rewrite_bytes": {"default": LIMIT}, "lock_sample_interval": 50}),
        env_py,
        "; op.execute('SELECT pg_sleep(0.4)')",
    );
    assert_eq!(run.migrations(0).len(), 3, "{}", run.describe());
    (world, run)
}

/// One transaction per migration: the rewrite is seen at its own boundary, certain.
#[test]
fn alembic_transaction_per_migration_gets_its_rewrite() {
    assert!(ALEMBIC_ENV_PY.contains("transaction_per_migration=True"));
    let (_world, run) = alembic_run(ALEMBIC_ENV_PY);
    assert_rewrite_of_big(&run, &format!("{REV_A}->{REV_B}"), "rewrote", 1, true);
    let log = run.file("api.log");
    assert!(
        log.contains(&format!(
            "rewrites: migration {REV_A}->{REV_B} rewrote big ("
        )),
        "{log}"
    );
}

/// alembic's default, one transaction for all: the rewrite is seen at the commit and given to
/// the migration that took ACCESS EXCLUSIVE on `big`, uncertain (the next one, long enough to
/// be sampled, held it too: the lock is kept until the commit).
#[test]
fn alembic_single_transaction_gets_its_rewrite_uncertain() {
    let env_py = ALEMBIC_ENV_PY.replace(", transaction_per_migration=True", "");
    let (_world, run) = alembic_run(&env_py);
    assert_rewrite_of_big(
        &run,
        &format!("{REV_A}->{REV_B}"),
        "may have rewritten",
        1,
        false,
    );
}
