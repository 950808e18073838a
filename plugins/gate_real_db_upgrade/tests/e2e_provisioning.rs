//! Golden copies through the real daemon binary (`run-job`) and plugin on the real PostgreSQL:
//! the first job builds the dataset's golden copy and clones it, the next ones only clone
//! (`summary.json` says how and how long); the golden copy's contents (every table's rows, the
//! schema) are the same before and after a job whose migration fails, a job whose `run-job` is
//! killed (`SIGKILL`) in the middle of a migration, a stopped job (SIGINT: cancelled) and a
//! timed-out one. `turbo-hipster prepare-datasets` builds
//! golden copies ahead of time, `--rebuild` again, `--prune` removes those of removed datasets.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use gate_real_db_upgrade::dataset::Engine;
use gate_real_db_upgrade::dataset_run::database_prefix;
use serde_json::json;
use turbo_hipster_tests::built;
use turbo_hipster_tests::db_servers::psql;
use turbo_hipster_tests::gate::{assert_no_databases, example, require, server, World};

const LOYALTY: &str =
    "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n";

/// Every table's rows and the schema of database `db`, as one text.
const CONTENT: &str = "SELECT string_agg(t.table_name || '=' || md5(query_to_xml(format('SELECT * FROM %I.%I ORDER BY 1', t.table_schema, t.table_name), true, false, '')::text), ',' ORDER BY t.table_name) \
    || ' | ' || (SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' ORDER BY table_name, ordinal_position) FROM information_schema.columns WHERE table_schema = 'public') \
    || ' | ' || (SELECT string_agg(indexdef, ',' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public') \
    FROM information_schema.tables t WHERE t.table_schema = 'public'";

/// The golden copy's contents, read through a clone of it (nobody may connect to it).
fn golden_content(golden: &str) -> String {
    let pg = server(Engine::PostgreSql);
    let check = format!("{}_chk", &golden[..golden.len().min(50)]);
    let _ = pg.drop_database(&check);
    pg.clone_database(golden, &check).unwrap();
    let content = psql(&check, CONTENT);
    pg.drop_database(&check).unwrap();
    assert!(content.contains("customers="), "{content}");
    content
}

/// Drops the test's golden copies whatever happens.
struct DropGoldens(String);

impl Drop for DropGoldens {
    fn drop(&mut self) {
        let pg = server(Engine::PostgreSql);
        for name in pg.databases_with_prefix(&self.0).unwrap_or_default() {
            let _ = pg.drop_database(&name);
        }
    }
}

/// The example on PostgreSQL with its dataset named `<prefix><pid>` (the name returned), so
/// that its golden copies are the test's own, and the guard dropping them.
fn golden_world(prefix: &str) -> (World, String, DropGoldens) {
    require(Engine::PostgreSql);
    let mut world = World::new(json!({"engine": "postgresql"}));
    let name = format!("{prefix}{:x}", std::process::id());
    world.example_dataset(&name);
    world.project_from("example/shop", &example().join("project"));
    let cleanup = DropGoldens(format!("th_golden_{name}_"));
    (world, name, cleanup)
}

#[test]
fn postgresql_golden_copy_survives_a_failing_run_and_a_killed_run() {
    let (world, name, _cleanup) = golden_world("gold");

    // 1. The first job builds the golden copy and clones it.
    let change = world.propose("example/shop", &[("migrations/004_loyalty.sql", LOYALTY)]);
    let first = world.run("example/shop", &change);
    assert_eq!(first.result, "SUCCESS", "{}", first.describe());
    let provisioning = &first.summary["datasets"][0]["provisioning"];
    assert_eq!(provisioning["method"], "clone", "{}", first.describe());
    assert!(provisioning["seconds"].as_f64().is_some(), "{provisioning}");
    let golden = provisioning["golden"].as_str().unwrap().to_string();
    assert!(
        golden.starts_with(&format!("th_golden_{name}_")),
        "{golden}"
    );
    let log = first.file(&format!("{name}.log"));
    assert!(log.contains("building the golden copy"), "{log}");
    assert!(log.contains("created by clone of the golden copy"), "{log}");
    let before = golden_content(&golden);

    // 2. A failing migration (half of it done before the error) only touches its clone.
    let broken = "DELETE FROM orders;\nALTER TABLE no_such_table ADD COLUMN x INTEGER;\n";
    let change = world.propose("example/shop", &[("migrations/004_broken.sql", broken)]);
    let failed = world.run("example/shop", &change);
    assert!(
        failed.result.starts_with("FAILURE"),
        "{}",
        failed.describe()
    );
    assert_no_databases(Engine::PostgreSql, "example_shop", &failed.uuid);
    let log = failed.file(&format!("{name}.log"));
    assert!(
        !log.contains("building the golden copy"),
        "built again: {log}"
    );
    assert_eq!(
        failed.summary["datasets"][0]["provisioning"]["golden"],
        golden.as_str()
    );
    assert_eq!(
        golden_content(&golden),
        before,
        "a failing run changed the golden copy"
    );

    // 3. run-job killed (SIGKILL) while its migration writes and then sleeps.
    let hang = "DELETE FROM orders;\nSELECT pg_sleep(600);\n";
    let change = world.propose("example/shop", &[("migrations/004_hangs.sql", hang)]);
    let (mut child, uuid, _) = world.spawn("example/shop", &change, &[]);
    let prefix = database_prefix("example_shop", &uuid);
    let deadline = Instant::now() + Duration::from_secs(120);
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' \
         AND datname LIKE '{prefix}%'"
    );
    while psql("postgres", &sleeping) == "0" {
        assert!(Instant::now() < deadline, "the migration never started");
        assert!(child.try_wait().unwrap().is_none(), "run-job ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        golden_content(&golden),
        before,
        "a killed run changed the golden copy"
    );

    // 4. The next job still clones the same, unchanged golden copy.
    let change = world.propose("example/shop", &[("migrations/004_loyalty.sql", LOYALTY)]);
    let next = world.run("example/shop", &change);
    assert_eq!(next.result, "SUCCESS", "{}", next.describe());
    assert_eq!(
        next.summary["datasets"][0]["provisioning"]["golden"],
        golden.as_str()
    );
    assert_eq!(golden_content(&golden), before);
    // That run-job's start removed the killed run's clone (its claim's owner is gone).
    assert_eq!(
        server(Engine::PostgreSql)
            .databases_with_prefix(&prefix)
            .unwrap(),
        Vec::<String>::new(),
        "the killed run's clone was left"
    );
}

/// Waits until a run database of job `uuid` runs `pg_sleep(600)`.
fn wait_for_pg_sleep(uuid: &str, child: &mut std::process::Child) {
    let prefix = database_prefix("example_shop", uuid);
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' \
         AND datname LIKE '{prefix}%'"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while psql("postgres", &sleeping) == "0" {
        assert!(Instant::now() < deadline, "the migration never started");
        assert!(child.try_wait().unwrap().is_none(), "run-job ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgresql_golden_copy_survives_a_stopped_run_and_a_timed_out_run() {
    let (world, name, _cleanup) = golden_world("goldst");
    let change = world.propose("example/shop", &[("migrations/004_loyalty.sql", LOYALTY)]);
    let first = world.run("example/shop", &change);
    assert_eq!(first.result, "SUCCESS", "{}", first.describe());
    let golden = first.summary["datasets"][0]["provisioning"]["golden"]
        .as_str()
        .unwrap()
        .to_string();
    let before = golden_content(&golden);

    // Stopped (SIGINT: the job is cancelled) while its migration writes and then sleeps.
    let hang = "DELETE FROM orders;\nSELECT pg_sleep(600);\n";
    let change = world.propose("example/shop", &[("migrations/004_hangs.sql", hang)]);
    let mut child = world.spawn("example/shop", &change, &[]);
    wait_for_pg_sleep(&child.1, &mut child.0);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let stopped = world.finish(child);
    assert_eq!(stopped.result, "ABORTED", "{}", stopped.describe());
    assert_no_databases(Engine::PostgreSql, "example_shop", &stopped.uuid);
    assert_eq!(
        golden_content(&golden),
        before,
        "a stopped run changed the golden copy"
    );

    // Timed out in the same migration.
    let timed_out = world.run_timing_out(&name, "example/shop", &change);
    assert_no_databases(Engine::PostgreSql, "example_shop", &timed_out.uuid);
    assert_eq!(
        golden_content(&golden),
        before,
        "a timed-out run changed the golden copy"
    );
}

/// `turbo-hipster -c <world config> prepare-datasets <args>`: exit status and stdout.
fn prepare(world: &World, args: &[&str]) -> (bool, String) {
    let out = Command::new(&built().daemon)
        .arg("-c")
        .arg(&world.config)
        .arg("prepare-datasets")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{stdout}\n--- stderr\n{stderr}"),
    )
}

#[test]
fn prepare_datasets_builds_rebuilds_and_prunes_golden_copies() {
    let (world, name, _cleanup) = golden_world("prep");
    let dir = world.datasets.join(&name);
    let pg = server(Engine::PostgreSql);
    let goldens = || {
        pg.databases_with_prefix(&format!("th_golden_{name}_"))
            .unwrap()
    };

    let (ok, out) = prepare(&world, &[]);
    assert!(ok, "{out}");
    let golden = goldens();
    assert_eq!(golden.len(), 1, "{out}");
    assert!(
        out.contains(&format!("golden copy {} ready", golden[0])),
        "{out}"
    );
    assert!(out.contains("building the golden copy"), "{out}");
    // Up to date: nothing built; --rebuild builds again.
    let (ok, out) = prepare(&world, &[]);
    assert!(ok && !out.contains("building the golden copy"), "{out}");
    let (ok, out) = prepare(&world, &["--rebuild"]);
    assert!(ok && out.contains("building the golden copy"), "{out}");
    assert_eq!(goldens(), golden);

    // A job uses the prepared copy without building it.
    let change = world.propose("example/shop", &[("migrations/004_loyalty.sql", LOYALTY)]);
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    assert!(!run
        .file(&format!("{name}.log"))
        .contains("building the golden copy"));

    // The dataset removed: --prune drops its golden copy.
    std::fs::remove_dir_all(&dir).unwrap();
    let (ok, out) = prepare(&world, &["--prune"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("pruned the golden copy {}", golden[0])),
        "{out}"
    );
    assert!(goldens().is_empty(), "{:?}", goldens());
}
