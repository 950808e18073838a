//! End to end on real database servers, MariaDB (127.0.0.1:3306, root, empty password) and
//! PostgreSQL (127.0.0.1:5432, postgres, trust), as `scripts/setup-test-env.sh` prepares them,
//! through the real daemon binary and plugin, in the SQL-files mode with the shipped example:
//! a good change, a slow migration, a broken one, a hanging one (the timeout ends it), bad
//! credentials, and a missing seed. After every job the seed is unchanged and no database of
//! the job is left on the server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::files_containing;
use turbo_hipster_tests::gate::{
    assert_no_databases, example, example_world, require, run_example_change, JobRun, World,
};

const LOYALTY: &str =
    "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n\
    UPDATE customers SET loyalty_points = \
    (SELECT COUNT(*) FROM orders WHERE orders.customer_id = customers.id);\n";

/// The change adding the loyalty points, run in a world of [`example_world`]; its result must
/// be `result`.
fn run_loyalty(world: &World, engine: Engine, result: &str) -> JobRun {
    let run = run_example_change(
        world,
        engine,
        &[("migrations/004_add_loyalty_points.sql", LOYALTY)],
    );
    assert_eq!(run.result, result, "{}", run.describe());
    run
}

fn sleep_sql(engine: Engine, seconds: u32) -> String {
    match engine {
        Engine::PostgreSql => format!("SELECT pg_sleep({seconds});\n"),
        _ => format!("SELECT SLEEP({seconds});\n"),
    }
}

fn good_change_passes(engine: Engine) {
    let world = example_world(engine, json!({}), |_| {});
    let run = run_loyalty(&world, engine, "SUCCESS");
    let ds = &run.summary["datasets"][0];
    assert_eq!(ds["engine"], engine.name());
    assert_eq!(ds["final_version"], "4");
    assert_eq!(ds["expected_version"], "4");
    let m = run.migrations(0);
    assert_eq!(m.len(), 2);
    assert_eq!(m[1]["from"], "3");
    assert_eq!(m[1]["to"], "4");
    // The engine's work counters, as deltas over the migration: the UPDATE read the orders.
    let counters = m[1]["counters"].as_object().unwrap();
    assert!(
        counters
            .get("Innodb_rows_read")
            .and_then(Value::as_i64)
            .is_some_and(|n| n > 0),
        "{counters:?}"
    );
}

fn slow_migration_warns(engine: Engine) {
    let world = example_world(engine, json!({}), |c| {
        c["maximum_migration_times"] = json!({"default": 30, "3->4": 1});
    });
    let run = run_example_change(
        &world,
        engine,
        &[("migrations/004_slow.sql", &sleep_sql(engine, 2))],
    );
    assert_eq!(
        run.result,
        "WARNING - Migration 3->4 took too long",
        "{}",
        run.describe()
    );
    let m = run.migrations(0);
    assert_eq!(m[1]["status"], "too_long");
    assert!(m[1]["duration_ms"].as_i64().unwrap() >= 2000, "{m:?}");
    assert_eq!(m[0]["status"], "ok");
}

fn broken_migration_fails(engine: Engine) {
    let world = example_world(engine, json!({}), |_| {});
    let run = run_example_change(
        &world,
        engine,
        &[(
            "migrations/004_broken.sql",
            "ALTER TABLE no_such_table ADD COLUMN x INTEGER;\n",
        )],
    );
    assert_eq!(
        run.result,
        "FAILURE - Did not find the end of a migration after a start",
        "{}",
        run.describe()
    );
    assert_eq!(run.migrations(0)[1]["status"], "unfinished");
    assert!(run.file("example.log").contains("no_such_table"));
}

/// The dataset's `timeout` (or, with `job_timeout`, the job config's) ends a migration that
/// hangs.
fn hanging_migration_times_out(engine: Engine, job_timeout: bool) {
    let world = if job_timeout {
        example_world(engine, json!({"timeout": 3}), |c| {
            c.as_object_mut().unwrap().remove("timeout");
        })
    } else {
        example_world(engine, json!({}), |c| c["timeout"] = json!(3))
    };
    let run = run_example_change(
        &world,
        engine,
        &[("migrations/004_hangs.sql", &sleep_sql(engine, 600))],
    );
    assert_eq!(
        run.result,
        "FAILURE - Did not find the end of a migration after a start",
        "{}",
        run.describe()
    );
    assert!(run.took < Duration::from_secs(45), "took {:?}", run.took);
    let log = run.file("example.log");
    assert!(log.contains("timed out after 3 s"), "{log}");
    assert!(log.contains("dropped database"), "{log}");
}

fn bad_credentials_fail_the_seed(engine: Engine) {
    let world = example_world(engine, json!({}), |c| {
        c["connection"] = match engine {
            // root has an empty password: any other is wrong (ERROR 1045).
            Engine::PostgreSql => json!({"user": "th_no_such_role", "password": "wrong"}),
            _ => json!({"user": "root", "password": "definitely-wrong"}),
        };
    });
    let run = run_loyalty(&world, engine, "FAILURE - Could not setup seed database.");
    assert!(
        !run.file("example.log").contains("wrong"),
        "the password leaked"
    );
}

fn missing_seed_fails(engine: Engine) {
    let world = example_world(engine, json!({}), |c| c["seed_data"] = json!("nowhere.sql"));
    run_loyalty(&world, engine, "FAILURE - Could not find seed database.");
}

/// A seed holding a secret and a syntax error: the job fails with the original's line, the
/// log says where the load failed (code and line number), and the secret reaches no file of
/// the job and no output of run-job, although the clients quote the failing statement.
fn a_seed_error_never_echoes_the_seed(engine: Engine, summary: &str) {
    let marker = format!("TH_SECRET_MARKER_{}", std::process::id());
    let seed = format!(
        "-- {marker} in a comment\nCREATE TABLE kept (id INTEGER);\n\
         {marker} is not sql at all 'quoted {marker}';\n"
    );
    let mut world = example_world(engine, json!({}), |c| c["seed_data"] = json!("secret.sql"));
    let seed_path = world.datasets.join("example/secret.sql");
    std::fs::write(&seed_path, &seed).unwrap();
    world.watch_seed(&seed_path);
    let run = run_loyalty(&world, engine, "FAILURE - Could not setup seed database.");
    let log = run.file("example.log");
    assert!(log.contains(summary), "{log}");
    let leaked = files_containing(&world.root.join("jobs"), &marker);
    assert!(leaked.is_empty(), "the seed leaked into {leaked:?}\n{log}");
    assert!(!run.stdout.contains(&marker) && !run.stderr.contains(&marker));
}

fn parallel_datasets_get_their_own_databases(engine: Engine) {
    require(engine);
    let mut world = World::new(json!({
        "engine": engine.name(),
        "max_parallel_datasets": 2,
    }));
    // Reloaded, so both datasets' migrations start together whatever their golden copies'
    // build times (a MariaDB one takes seconds: a private server installs, loads, stops).
    for name in ["one", "two"] {
        world.example_dataset(name);
        world.edit_dataset(name, |c| c["provisioning"] = json!("reload"));
    }
    world.project_from("example/shop", &example().join("project"));
    let run = run_example_change(
        &world,
        engine,
        &[("migrations/004_slow.sql", &sleep_sql(engine, 2))],
    );
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    // They ran at the same time: the two slow migrations overlap.
    let window = |i: usize| {
        let m = &run.migrations(i)[1];
        (
            m["start"].as_str().unwrap().to_string(),
            m["end"].as_str().unwrap().to_string(),
        )
    };
    let (a, b) = (window(0), window(1));
    assert!(a.0 < b.1 && b.0 < a.1, "not in parallel: {a:?} {b:?}");
    let dbs: Vec<&str> = run.summary["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    assert_eq!(dbs.len(), 2);
    assert_ne!(dbs[0], dbs[1]);
}

#[test]
fn mariadb_good_change_passes() {
    good_change_passes(Engine::MariaDb);
}

#[test]
fn postgresql_good_change_passes() {
    good_change_passes(Engine::PostgreSql);
}

#[test]
fn mariadb_slow_migration_warns() {
    slow_migration_warns(Engine::MariaDb);
}

#[test]
fn postgresql_slow_migration_warns() {
    slow_migration_warns(Engine::PostgreSql);
}

#[test]
fn mariadb_broken_migration_fails() {
    broken_migration_fails(Engine::MariaDb);
}

#[test]
fn postgresql_broken_migration_fails() {
    broken_migration_fails(Engine::PostgreSql);
}

#[test]
fn mariadb_hanging_migration_times_out() {
    hanging_migration_times_out(Engine::MariaDb, false);
}

#[test]
fn postgresql_hanging_migration_times_out() {
    hanging_migration_times_out(Engine::PostgreSql, true);
}

#[test]
fn mariadb_bad_credentials_fail_the_seed() {
    bad_credentials_fail_the_seed(Engine::MariaDb);
}

#[test]
fn postgresql_bad_credentials_fail_the_seed() {
    bad_credentials_fail_the_seed(Engine::PostgreSql);
}

#[test]
fn mariadb_missing_seed_fails() {
    missing_seed_fails(Engine::MariaDb);
}

#[test]
fn postgresql_missing_seed_fails() {
    missing_seed_fails(Engine::PostgreSql);
}

#[test]
fn mariadb_a_seed_error_never_echoes_the_seed() {
    a_seed_error_never_echoes_the_seed(
        Engine::MariaDb,
        "ERROR 1064 (42000) at line 3: syntax error",
    );
}

#[test]
fn postgresql_a_seed_error_never_echoes_the_seed() {
    a_seed_error_never_echoes_the_seed(
        Engine::PostgreSql,
        "ERROR at line 3: syntax error; (2 other line(s) of error output not shown",
    );
}

#[test]
fn mariadb_parallel_datasets_get_their_own_databases() {
    parallel_datasets_get_their_own_databases(Engine::MariaDb);
}

#[test]
fn postgresql_parallel_datasets_get_their_own_databases() {
    parallel_datasets_get_their_own_databases(Engine::PostgreSql);
}

#[test]
fn postgresql_the_password_never_reaches_the_logs() {
    let engine = Engine::PostgreSql;
    // Trust authentication takes any password: the run works and the password is set.
    let world = example_world(engine, json!({}), |c| {
        c["connection"] = json!({"user": "postgres", "password": "s3cret-Pa55"});
        c["migration"] = json!({
            "tool": ["sh", "-c", "echo \"url={db_url} pass={db_pass} host={db_host}:{db_port}\""],
        });
        c["expected_version"] = json!("unchecked");
    });
    let run = run_loyalty(&world, engine, "SUCCESS");
    let log = run.file("example.log");
    assert!(!log.contains("s3cret"), "{log}");
    assert!(
        log.contains(
            "[output] url=postgresql+psycopg2://postgres:***@127.0.0.1:5432/example_shop_"
        ),
        "{log}"
    );
    assert!(log.contains("pass=*** host=127.0.0.1:5432"), "{log}");
    for file in ["summary.json", "summary.txt", "task_output.log", "job.json"] {
        assert!(!run.file(file).contains("s3cret"), "{file}");
    }
}

#[test]
fn mariadb_keep_databases_keeps_the_run_database() {
    let engine = Engine::MariaDb;
    require(engine);
    let mut world = World::new(json!({"engine": "mariadb", "keep_databases": true}));
    world.example_dataset("example");
    world.project_from("example/shop", &example().join("project"));
    let change = world.propose(
        "example/shop",
        &[("migrations/004_add_loyalty_points.sql", LOYALTY)],
    );
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let db = run.summary["datasets"][0]["database"].as_str().unwrap();
    let server = turbo_hipster_tests::gate::server(engine);
    let kept = server.databases_with_prefix(db).unwrap();
    let _ = server.drop_database(db);
    assert_eq!(kept, [db.to_string()]);
    assert!(run.file("example.log").contains("keeping database"));
    assert_no_databases(engine, "example_shop", &run.uuid);
}
