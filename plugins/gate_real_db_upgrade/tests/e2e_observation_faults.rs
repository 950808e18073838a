//! Observation faults end to end on the real servers, through the daemon binary and plugin:
//! while a migration runs (it sleeps five seconds), the test kills the run's side connections
//! (PostgreSQL: `pg_terminate_backend` of the sessions named `turbo-hipster locks`, `… counters`,
//! `… rewrites`; MariaDB: `KILL CONNECTION` of every session of the run-private server's run
//! database but the migration's). The job still passes; the lock sampler's gap is in that
//! migration's `observation_gaps` (summary.json), marked in summary.txt and said in the log
//! (stopped, resumed); the counter reader and the table probe reconnect at the next boundary
//! (no gap: the migration has its counters); the next migration's lock is observed again.
//! SQL-files mode on both engines; alembic (tool mode: the observation cut as the output
//! arrives) on PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gate_real_db_upgrade::dataset::Engine;
use gate_real_db_upgrade::dataset_run::database_prefix;
use serde_json::{json, Value};
use turbo_hipster_tests::db_servers::{query, DbKind};
use turbo_hipster_tests::gate::{
    alembic_revision, alembic_world, assert_no_databases, example, require, JobRun, World,
    ALEMBIC_ENV_PY, REV_A, REV_B,
};

/// How long the migration during which the connections are killed runs.
const SLEEP_SECONDS: u32 = 5;

/// The example dataset on `engine`, lock observation every 100 ms (the default).
fn world(engine: Engine) -> World {
    require(engine);
    let mut world = World::new(json!({"engine": engine.name()}));
    world.example_dataset("example");
    world.project_from("example/shop", &example().join("project"));
    world
}

/// Polls `find` every 50 ms until it gives something (panics after `within`).
fn wait_for<T>(what: &str, within: Duration, mut find: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = find() {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dataset logs (`*.log`) under `dir`, not looking into the provisioning's data
/// directories.
fn logs_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name() != gate_real_db_upgrade::provisioning::STATE_DIR {
                logs_under(&path, found);
            }
        } else if path.extension().is_some_and(|x| x == "log") {
            found.push(path);
        }
    }
}

/// The migration `from->to` of the run's summary.
fn migration<'a>(run: &'a JobRun, from: &str, to: &str) -> &'a Value {
    run.migrations(0)
        .iter()
        .find(|m| m["from"] == from && m["to"] == to)
        .unwrap_or_else(|| panic!("no migration {from}->{to}\n{}", run.describe()))
}

/// What the test checks once the job has ended: it passed; migration 3->4 (killed
/// connections) has a locks gap that ended, its counters, nothing else missing; 4->5 was
/// observed whole and its lock on `customers` seen; the summaries and the log say it.
fn assert_gap_reported(run: &JobRun, lock_modes: &[&str]) {
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let killed = migration(run, "3", "4");
    let gaps = killed["observation_gaps"].as_array().unwrap();
    let locks: Vec<&Value> = gaps.iter().filter(|g| g["part"] == "locks").collect();
    assert_eq!(locks.len(), 1, "{killed}\n{}", run.describe());
    let gap = locks[0];
    assert_eq!(gap["ongoing"], false, "the sampler came back: {gap}");
    let seconds = gap["seconds"].as_f64().unwrap();
    assert!((0.0..3.0).contains(&seconds), "{gap}");
    assert!(!gap["why"].as_str().unwrap().is_empty(), "{gap}");
    assert!(!gap["why"].as_str().unwrap().contains('\n'), "{gap}");
    assert!(
        gap["from"].as_str().unwrap() >= killed["start"].as_str().unwrap(),
        "{gap} within {killed}"
    );
    // The counter reader and the table probe reconnected at the boundary: nothing missed.
    assert!(
        gaps.iter().all(|g| g["part"] == "locks"),
        "{killed}\n{}",
        run.describe()
    );
    assert!(
        killed["counters"]
            .as_object()
            .is_some_and(|c| !c.is_empty()),
        "{killed}"
    );
    let after = migration(run, "4", "5");
    assert_eq!(after["observation_gaps"], json!([]), "{after}");
    let customers = after["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["table"] == "customers")
        .unwrap_or_else(|| panic!("the lock after the gap is seen: {after}"));
    let mode = customers["longest_blocking"]["mode"]
        .as_str()
        .unwrap_or_default();
    assert!(lock_modes.contains(&mode), "{after}");
    assert!(
        customers["longest_blocking"]["seconds"].as_f64().unwrap() >= 0.3,
        "{after}"
    );
    assert_eq!(
        run.summary["datasets"][0]["observation_gaps"], 1,
        "{}",
        run.summary
    );

    let text = run.file("summary.txt");
    let row = text
        .lines()
        .find(|l| l.contains(" 3->4 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("- (partial)"), "{text}");
    assert!(
        text.contains("observation gaps (an observation fault, not the change's")
            && text.contains("  example change 3->4: locks not observed "),
        "{text}"
    );
    assert!(
        text.contains("example: observation incomplete (locks: 1 of 3 migration(s))"),
        "{text}"
    );
    let log = run.file("example.log");
    for said in [
        "observation: locks not observed from now: ",
        "observation: locks observed again after a gap of ",
        "observation: migration 3->4 partly unobserved: locks not observed ",
        "observation: reading the work counters failed (",
        "observation: reading the tables failed (",
        "observation incomplete (locks: 1 of 3 migration(s))",
    ] {
        assert!(log.contains(said), "{said}\n{log}");
    }
    // Logged as the file ran, not after it.
    let stop = log
        .find("observation: locks not observed from now")
        .unwrap();
    let start = log.find("3 -> 4... 004_sleep.sql").unwrap();
    let done = start + log[start..].find("[sql] done (").unwrap();
    assert!(start < stop, "{log}");
    assert!(stop < done, "{log}");
}

/// The change: 004 sleeps (the test kills the connections then), 005 holds `lock` on
/// `customers` for 0.6 s.
fn files(sleep: &str, lock: &str) -> Vec<(&'static str, String)> {
    vec![
        ("migrations/004_sleep.sql", sleep.to_string()),
        ("migrations/005_lock.sql", lock.to_string()),
    ]
}

/// Runs `change` of `project` on PostgreSQL, killing the job's three side connections (by
/// their names) while its first migration sleeps; the finished run, its database gone.
fn run_killing_postgresql_observers(world: &World, project: &str, change: &str) -> JobRun {
    let database = project.replace('/', "_");
    let job = world.spawn(project, change, &[]);
    let killed = kill_postgresql_observers(&job.1, &database);
    assert_eq!(
        killed,
        [
            "turbo-hipster counters",
            "turbo-hipster locks",
            "turbo-hipster rewrites"
        ]
    );
    let run = world.finish(job);
    assert_no_databases(Engine::PostgreSql, &database, &run.uuid);
    run
}

#[test]
fn postgresql_killed_side_connections_leave_a_gap_and_the_job_passes() {
    let engine = Engine::PostgreSql;
    let world = world(engine);
    let files = files(
        &format!("SELECT pg_sleep({SLEEP_SECONDS});\n"),
        "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(0.6);\n",
    );
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let change = world.propose("example/shop", &refs);
    let run = run_killing_postgresql_observers(&world, "example/shop", &change);
    assert_gap_reported(&run, &["ACCESS EXCLUSIVE"]);
}

#[test]
fn mariadb_killed_side_connections_leave_a_gap_and_the_job_passes() {
    let engine = Engine::MariaDb;
    let world = world(engine);
    let files = files(
        &format!("SELECT SLEEP({SLEEP_SECONDS});\n"),
        "LOCK TABLES customers WRITE;\nSELECT SLEEP(0.6);\nUNLOCK TABLES;\n",
    );
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let change = world.propose("example/shop", &refs);
    let job = world.spawn("example/shop", &change, &[]);
    // The run's private server: its port is in the dataset's log.
    let marker = "provisioning: private server on 127.0.0.1:";
    let port: u16 = wait_for("the private server", Duration::from_secs(120), || {
        let mut logs = Vec::new();
        logs_under(&world.root.join("jobs"), &mut logs);
        logs.iter().find_map(|log| {
            let text = std::fs::read_to_string(log).ok()?;
            let rest = &text[text.find(marker)? + marker.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    });
    let my = |sql: &str| query(DbKind::MariaDb, port, None, sql);
    let sleeping = format!("SLEEP({SLEEP_SECONDS})");
    wait_for("the sleeping migration", Duration::from_secs(120), || {
        my(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{sleeping}%' \
             AND ID <> CONNECTION_ID()"
        ))
        .ok()
        .filter(|out| !out.trim().is_empty())
    });
    // Every session on the run database but the migration's (and ours): the lock sampler,
    // the counter reader, the table probe.
    let others = my(&format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB IS NOT NULL \
         AND ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' \
         AND COALESCE(INFO, '') NOT LIKE '%{sleeping}%'"
    ))
    .unwrap();
    let ids: Vec<&str> = others.lines().collect();
    assert_eq!(ids.len(), 3, "the three side connections: {ids:?}");
    for id in &ids {
        my(&format!("KILL CONNECTION {id}")).unwrap();
    }
    let run = world.finish(job);
    assert_no_databases(engine, "example_shop", &run.uuid);
    assert_eq!(
        run.summary["datasets"][0]["provisioning"]["method"],
        "private"
    );
    assert_gap_reported(&run, &["SHARED_NO_READ_WRITE", "EXCLUSIVE"]);
}

/// `kill` the three PostgreSQL side connections of the job's run database once a session of
/// it runs `pg_sleep(<SLEEP_SECONDS>)`; their names.
fn kill_postgresql_observers(uuid: &str, database: &str) -> Vec<String> {
    let prefix = database_prefix(database, uuid);
    let pg = |sql: &str| query(DbKind::PostgreSql, 5432, None, sql);
    let db = wait_for("the sleeping migration", Duration::from_secs(120), || {
        pg(&format!(
            "SELECT datname FROM pg_stat_activity WHERE datname LIKE '{prefix}%' \
             AND state = 'active' AND query LIKE '%pg_sleep({SLEEP_SECONDS})%'"
        ))
        .ok()
        .and_then(|out| out.lines().next().map(str::to_string))
    });
    // The sessions chosen first (MATERIALIZED): a filter beside pg_terminate_backend may be
    // evaluated after it, killing other runs' sessions.
    pg(&format!(
        "WITH ours AS MATERIALIZED (SELECT pid, application_name FROM pg_stat_activity \
                                    WHERE datname = '{db}' \
                                      AND application_name LIKE 'turbo-hipster %') \
         SELECT application_name FROM ours WHERE pg_terminate_backend(pid) ORDER BY 1"
    ))
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

/// alembic, one transaction per migration, the output parsed as it arrives: the first
/// migration sleeps (the observers are killed then), the second holds ACCESS EXCLUSIVE on
/// `big` for 0.6 s. The gap is the first migration's, the second's lock is seen.
#[test]
fn postgresql_alembic_killed_side_connections_leave_a_gap_and_the_job_passes() {
    let engine = Engine::PostgreSql;
    let world = alembic_world(
        engine,
        "acme/gaps",
        "CREATE TABLE big (id INTEGER PRIMARY KEY);\n",
        json!({"maximum_lock_hold": {"default": 30}}),
        &[("alembic/env.py", ALEMBIC_ENV_PY)],
    );
    let rev_a = alembic_revision(
        REV_A,
        "None",
        &format!("op.execute('SELECT pg_sleep({SLEEP_SECONDS})')"),
    );
    let rev_b = alembic_revision(
        REV_B,
        &format!("'{REV_A}'"),
        "op.execute('LOCK TABLE big IN ACCESS EXCLUSIVE MODE')\n    \
         op.execute('SELECT pg_sleep(0.6)')",
    );
    let change = world.propose(
        "acme/gaps",
        &[
            ("alembic/versions/a_sleep.py", &rev_a),
            ("alembic/versions/b_lock.py", &rev_b),
        ],
    );
    let run = run_killing_postgresql_observers(&world, "acme/gaps", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());

    let first = migration(&run, "base", REV_A);
    let gaps = first["observation_gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{first}\n{}", run.describe());
    assert_eq!(gaps[0]["part"], "locks", "{first}");
    assert_eq!(gaps[0]["ongoing"], false, "{first}");
    assert!(gaps[0]["seconds"].as_f64().unwrap() < 3.0, "{first}");
    assert!(
        first["counters"].as_object().is_some_and(|c| !c.is_empty()),
        "read again after reconnecting: {first}"
    );
    let second = migration(&run, REV_A, REV_B);
    assert_eq!(second["observation_gaps"], json!([]), "{second}");
    let big = second["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["table"] == "big")
        .unwrap_or_else(|| panic!("the lock after the gap is seen: {second}"));
    assert_eq!(
        big["longest_blocking"]["mode"], "ACCESS EXCLUSIVE",
        "{second}"
    );
    assert!(
        big["longest_blocking"]["seconds"].as_f64().unwrap() >= 0.3,
        "{second}"
    );
    let text = run.file("summary.txt");
    assert!(
        text.contains(&format!("  api change base->{REV_A}: locks not observed ")),
        "{text}"
    );
    let log = run.file("api.log");
    for said in [
        "observation: locks not observed from now: sampling pg_locks: ",
        "observation: locks observed again after a gap of ",
        &format!("observation: migration base->{REV_A} partly unobserved: locks not observed "),
        "observation incomplete (locks: 1 of 2 migration(s))",
    ] {
        assert!(log.contains(said), "{said}\n{log}");
    }
    // The stop and the resumption are logged among the tool's output, as they happened.
    let stop = log.find("locks not observed from now").unwrap();
    let next_start = log
        .find(&format!("Running upgrade {REV_A} -> {REV_B}"))
        .unwrap();
    assert!(stop < next_start, "{log}");
}
