//! Work counters per migration end to end on the real servers, through the daemon binary and
//! plugin, with a million rows: the counters of each migration equal the rows the test knows
//! it read, inserted, updated and deleted, in SQL-files mode and in alembic tool mode (the
//! tool prints no counters: they are read at each migration boundary as its output is
//! parsed), on PostgreSQL and MariaDB (run-private server: its own status counters; shared
//! server: userstat); two jobs run at once on one server each see only their own rows; the limits
//! give the original's warnings and WAL its own.
#![allow(clippy::unwrap_used)]

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::gate::{
    alembic_revision, alembic_world, assert_no_databases, example, require, JobRun, World,
    ALEMBIC_ENV_PY,
};

const MILLION: i64 = 1_000_000;

/// The counter `name` of migration `i` of the first dataset.
fn counter(run: &JobRun, i: usize, name: &str) -> i64 {
    let m = &run.migrations(0)[i];
    m["counters"][name]
        .as_i64()
        .unwrap_or_else(|| panic!("no {name} in migration {i}: {m}\n{}", run.describe()))
}

/// Read, inserted, updated, deleted of migration `i`.
fn split(run: &JobRun, i: usize) -> [i64; 4] {
    [
        counter(run, i, "Innodb_rows_read"),
        counter(run, i, "Innodb_rows_inserted"),
        counter(run, i, "Innodb_rows_updated"),
        counter(run, i, "Innodb_rows_deleted"),
    ]
}

/// The example dataset on `engine` (its job config's `extra` merged in, the dataset's
/// `limits` too) changed by `files`.
fn example_world(engine: Engine, job: Value, limits: Value) -> World {
    require(engine);
    let mut config = job;
    config["engine"] = json!(engine.name());
    let mut world = World::new(config);
    let dir = world.example_dataset("example");
    let path = dir.join("config.json");
    let mut dataset: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in limits.as_object().unwrap() {
        dataset[k] = v.clone();
    }
    std::fs::write(&path, dataset.to_string()).unwrap();
    world.project_from("example/shop", &example().join("project"));
    world
}

/// SQL files making `big` with `rows` rows (`insert_from`: the rows' source), then deleting
/// every tenth and updating another tenth (full scans: no index on `v`).
fn big_files(rows: i64, insert_from: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "migrations/004_big.sql",
            format!(
                "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER);\n\
                 INSERT INTO big (id, v) {};\n",
                insert_from.replace("{rows}", &rows.to_string())
            ),
        ),
        (
            "migrations/005_delete.sql",
            "DELETE FROM big WHERE v % 10 = 0;\n".to_string(),
        ),
        (
            "migrations/006_update.sql",
            "UPDATE big SET v = v + 1 WHERE v % 10 = 1;\n".to_string(),
        ),
    ]
}

/// `files` as [`World::propose`] takes them.
fn refs<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(p, s)| (*p, s.as_str())).collect()
}

const PG_ROWS: &str = "SELECT g, g FROM generate_series(1, {rows}) g";
const MARIADB_ROWS: &str = "SELECT seq, seq FROM seq_1_to_{rows}";

/// The counts SQL-files mode gives for [`big_files`] of `rows` rows: read, inserted,
/// updated, deleted per file. `insert_reads`: the rows a MariaDB sequence table gives are
/// read in the run's schema too; `scan_end`: MariaDB's performance_schema counts the fetch
/// that finds the end of a full scan as one more read (its status counters do not).
fn assert_big_counts(run: &JobRun, rows: i64, insert_reads: i64, scan_end: i64) {
    let m = run.migrations(0);
    assert_eq!(m.len(), 4, "{}", run.describe());
    assert_eq!(split(run, 1), [insert_reads, rows, 0, 0], "{}", m[1]);
    assert_eq!(
        split(run, 2),
        [rows + scan_end, 0, 0, rows / 10],
        "{}",
        m[2]
    );
    assert_eq!(
        split(run, 3),
        [rows - rows / 10 + scan_end, 0, rows / 10, 0],
        "{}",
        m[3]
    );
}

#[test]
fn postgresql_sql_files_counts_equal_the_rows_and_wal_is_counted() {
    let engine = Engine::PostgreSql;
    let world = example_world(
        engine,
        json!({}),
        json!({
            "XInnodb_rows_changed": {"default": 2000000, "5": 50000},
            "Innodb_rows_read": {"default": 2000000, "6": 10},
            "maximum_wal_bytes": {"default": 1000000000, "4": 1000000},
        }),
    );
    let change = world.propose("example/shop", &refs(&big_files(MILLION, PG_ROWS)));
    let run = world.run("example/shop", &change);
    assert_no_databases(engine, "example_shop", &run.uuid);
    assert_big_counts(&run, MILLION, 0, 0);
    // A million rows and their index write tens of megabytes of WAL (server-wide: at least).
    let wal = counter(&run, 1, "wal_bytes");
    assert!(wal > 30_000_000, "{wal}");
    assert_eq!(
        run.lines(),
        [
            format!("WARNING - Migration 3->4 wrote too much WAL ({wal} bytes)"),
            "WARNING - Migration 4->5 changed too many rows (100000)".to_string(),
            "WARNING - Migration 5->6 read too many rows (900000)".to_string(),
        ],
        "{}",
        run.describe()
    );
    let summary = &run.summary;
    let ds = &summary["datasets"][0];
    assert_eq!(
        ds["counters_source"],
        "pg_stat_user_tables, pg_current_wal_insert_lsn()"
    );
    assert_eq!(ds["counters_scope"], "database (WAL: server)");
    let log = run.file("example.log");
    assert!(
        log.contains("work: migration 4->5: Innodb_rows_deleted=100000 "),
        "{log}"
    );
}

#[test]
fn mariadb_private_server_sql_files_counts_equal_the_rows() {
    let engine = Engine::MariaDb;
    let world = example_world(engine, json!({}), json!({}));
    let change = world.propose("example/shop", &refs(&big_files(MILLION, MARIADB_ROWS)));
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    assert_big_counts(&run, MILLION, MILLION, 0);
    let summary = &run.summary;
    let ds = &summary["datasets"][0];
    assert_eq!(ds["provisioning"]["method"], "private", "{ds}");
    assert_eq!(
        ds["counters_source"],
        "SHOW GLOBAL STATUS (run-private server)"
    );
    assert_eq!(ds["counters_scope"], "run-private server");
}

/// Two jobs at once on one server, one with 300 000 rows, the other with 700 000: each
/// migration's counts are its own job's rows only. The jobs are started together, but one may
/// finish its migrations before the other begins them (their seeds and servers take unequal
/// times; seen with run-private MariaDB servers): each job's first migration begins with a
/// pause, and should they still not overlap the pair runs again, up to three times, so that
/// what is checked is always two jobs' migrations running at once.
fn two_jobs_at_once(engine: Engine, dataset: Value, insert_from: &str) -> (JobRun, JobRun) {
    let mut spans = Vec::new();
    for _ in 0..3 {
        let small = example_world(engine, json!({}), dataset.clone());
        let large = example_world(engine, json!({}), dataset.clone());
        // Each job's first migration waits 5 s before its insert (touching no table), so
        // that unequal start-ups (seeds, golden copies, private servers) still leave the two
        // jobs' migrations running at the same time.
        let pause = match engine {
            Engine::PostgreSql => "SELECT pg_sleep(5);\n",
            _ => "SELECT SLEEP(5);\n",
        };
        let paused = |rows| {
            let mut files = big_files(rows, insert_from);
            files[0].1.insert_str(0, pause);
            files
        };
        let (f_small, f_large) = (paused(300_000), paused(700_000));
        let c_small = small.propose("example/shop", &refs(&f_small));
        let c_large = large.propose("example/shop", &refs(&f_large));
        let a = small.spawn("example/shop", &c_small, &[]);
        let b = large.spawn("example/shop", &c_large, &[]);
        let (a, b) = (small.finish(a), large.finish(b));
        assert_eq!(a.result, "SUCCESS", "{}", a.describe());
        assert_eq!(b.result, "SUCCESS", "{}", b.describe());
        // From the first migration's start to the last one's end.
        let span = |run: &JobRun| {
            let m = run.migrations(0);
            let at = |i: usize, key: &str| m[i][key].as_str().unwrap_or_default().to_string();
            (at(0, "start"), at(m.len() - 1, "end"))
        };
        let ((s1, e1), (s2, e2)) = (span(&a), span(&b));
        if s1 < e2 && s2 < e1 {
            return (a, b);
        }
        spans.push(format!("{s1}..{e1} and {s2}..{e2}"));
    }
    panic!("the two jobs' migrations never ran at once: {spans:?}");
}

#[test]
fn postgresql_two_jobs_at_once_each_count_their_own_rows() {
    let (a, b) = two_jobs_at_once(Engine::PostgreSql, json!({}), PG_ROWS);
    assert_big_counts(&a, 300_000, 0, 0);
    assert_big_counts(&b, 700_000, 0, 0);
}

/// The shared server (`provisioning: reload`, no performance_schema): MariaDB's per-table
/// statistics (`userstat`) give rows read and rows changed of the run's schema.
#[test]
fn mariadb_shared_server_two_jobs_at_once_each_count_their_own_rows() {
    let (a, b) = two_jobs_at_once(
        Engine::MariaDb,
        json!({"provisioning": "reload"}),
        MARIADB_ROWS,
    );
    for (run, rows) in [(&a, 300_000), (&b, 700_000)] {
        let summary = &run.summary;
        let ds = &summary["datasets"][0];
        assert_eq!(ds["counters_scope"], "database", "{ds}");
        if ds["counters_source"] == "performance_schema.table_io_waits_summary_by_table" {
            assert_big_counts(run, rows, rows, 1);
            continue;
        }
        assert_eq!(
            ds["counters_source"], "information_schema.TABLE_STATISTICS (userstat)",
            "{ds}"
        );
        let pair = |i| {
            (
                counter(run, i, "Innodb_rows_read"),
                counter(run, i, "rows_changed"),
            )
        };
        assert_eq!(pair(1), (rows, rows), "{}", run.describe());
        assert_eq!(pair(2), (rows, rows / 10), "{}", run.describe());
        assert_eq!(pair(3), (rows - rows / 10, rows / 10), "{}", run.describe());
    }
}

const REV_A: &str = "a1a1a1a1a1a1";
const REV_B: &str = "b2b2b2b2b2b2";
const REV_C: &str = "c3c3c3c3c3c3";

/// An alembic revision whose `upgrade()` runs each of the `;`-separated statements of `sql`.
fn revision(rev: &str, down: &str, sql: &str) -> String {
    let ops: Vec<String> = sql
        .split(';')
        .map(|s| format!("op.execute(\"\"\"{}\"\"\")", s.trim()))
        .collect();
    alembic_revision(rev, down, &ops.join("\n    "))
}

/// alembic (one transaction per migration, which prints no counters) on `engine`: each
/// migration gets its own counts, read at the boundaries as the output is parsed. On
/// PostgreSQL a migration's counts are published when it commits, before the tool prints the
/// next start. On MariaDB they move as rows are touched and a boundary is read some
/// milliseconds after the tool printed it (tens of them on a loaded machine: the next
/// migration's first rows would be counted in the one before), so there (`pause: true`)
/// each migration begins with a second of `SELECT SLEEP(1)`, which touches no table: the
/// boundary is read inside it and every figure must be exact. alembic's own work is in them
/// too: the version row inserted by the first migration, read and updated by each later one.
fn alembic_counts(
    engine: Engine,
    insert_from: &str,
    insert_reads: i64,
    scan_end: i64,
    pause: bool,
) {
    let pause = if pause { "SELECT SLEEP(1); " } else { "" };
    let insert = format!(
        "{pause}CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER); \
         INSERT INTO big (id, v) {}",
        insert_from.replace("{rows}", &MILLION.to_string())
    );
    let world = alembic_world(
        engine,
        "acme/counters",
        "CREATE TABLE other (id INTEGER PRIMARY KEY);\n",
        json!({}),
        &[
            ("alembic/env.py", ALEMBIC_ENV_PY),
            (
                "alembic/versions/a_big.py",
                &revision(REV_A, "None", &insert),
            ),
        ],
    );
    let change = world.propose(
        "acme/counters",
        &[
            (
                "alembic/versions/b_update.py",
                &revision(
                    REV_B,
                    &format!("'{REV_A}'"),
                    &format!("{pause}UPDATE big SET v = v + 1"),
                ),
            ),
            (
                "alembic/versions/c_delete.py",
                &revision(
                    REV_C,
                    &format!("'{REV_B}'"),
                    &format!("{pause}DELETE FROM big WHERE v % 10 = 0"),
                ),
            ),
        ],
    );
    let run = world.run("acme/counters", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    assert_no_databases(engine, "acme_counters", &run.uuid);
    let m = run.migrations(0);
    assert_eq!(m.len(), 3, "{}", run.describe());
    let expected = [
        [insert_reads, MILLION + 1, 0, 0],
        [MILLION + 1 + scan_end, 0, MILLION + 1, 0],
        [MILLION + 1 + scan_end, 0, 1, MILLION / 10],
    ];
    let seen: Vec<[i64; 4]> = (0..3).map(|i| split(&run, i)).collect();
    assert_eq!(seen, expected, "{}", run.describe());
    let log = run.file("api.log");
    assert!(log.contains("counting work per migration from "), "{log}");
}

#[test]
fn postgresql_alembic_runs_get_counters_per_migration() {
    alembic_counts(Engine::PostgreSql, PG_ROWS, 0, 0, false);
}

#[test]
fn mariadb_alembic_runs_get_counters_per_migration() {
    alembic_counts(Engine::MariaDb, MARIADB_ROWS, MILLION, 0, true);
}

/// Run-private servers (the MariaDB default): two jobs at once, each on its own server, each
/// counting its own rows from its own status counters.
#[test]
fn mariadb_private_servers_two_jobs_at_once_each_count_their_own_rows() {
    let (a, b) = two_jobs_at_once(Engine::MariaDb, json!({}), MARIADB_ROWS);
    for (run, rows) in [(&a, 300_000), (&b, 700_000)] {
        let ds = &run.summary["datasets"][0];
        assert_eq!(ds["provisioning"]["method"], "private", "{ds}");
        assert_eq!(ds["counters_scope"], "run-private server", "{ds}");
        assert_big_counts(run, rows, rows, 0);
    }
}

/// `count_work: false`: nothing is counted (no counters in the summary, no source) and the
/// log says so.
#[test]
fn mariadb_count_work_off_counts_nothing() {
    let world = example_world(Engine::MariaDb, json!({}), json!({"count_work": false}));
    let change = world.propose(
        "example/shop",
        &[(
            "migrations/004_small.sql",
            "CREATE TABLE small (id INTEGER);\n",
        )],
    );
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let ds = &run.summary["datasets"][0];
    assert_eq!(ds["counters_source"], Value::Null, "{ds}");
    for m in run.migrations(0) {
        assert_eq!(m["counters"], json!({}), "{m}");
    }
    let log = run.file("example.log");
    assert!(
        log.contains("work counters off (count_work: false)"),
        "{log}"
    );
}
