//! gate_real_db_upgrade end to end the way production runs it: Zuul-shaped builds through a real
//! gearmand into the real daemon, on SQLite, real MariaDB and real PostgreSQL, with the example
//! project and dataset shipped in `etc/example`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use turbo_hipster_tests::db_servers::{self, DbKind};
use turbo_hipster_tests::{
    enqueue_example_change, example_repo, files_containing, root, text, Daemon, JobServer,
    PluginDir, ServerKind, Setup,
};

/// The databases whose names start with `prefix` on the shared server of `engine` (none for
/// SQLite).
fn databases(engine: &str, prefix: &str) -> Vec<String> {
    let kind = match engine {
        "mariadb" => DbKind::MariaDb,
        "postgresql" => DbKind::PostgreSql,
        _ => return Vec::new(),
    };
    db_servers::databases(kind, kind.shared_port(), prefix)
}

fn results_dir(t: &str) -> PathBuf {
    let url = t
        .lines()
        .find_map(|l| l.strip_prefix("url: file://"))
        .unwrap_or_else(|| panic!("no url in:\n{t}"));
    // The URL Zuul gets is the job's report page, in its results directory.
    PathBuf::from(url.strip_suffix("index.html").unwrap_or(url))
}

/// Runs one build; the returned `Setup` keeps the job directories alive.
fn run(engine: &str, change_sql: &str) -> (String, Value, PathBuf, Setup) {
    run_with(engine, change_sql, None, 120)
}

/// A copy of the example dataset with other limits and no time limit of its own.
fn example_datasets_with(limits: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("example");
    std::fs::create_dir_all(&ds).unwrap();
    let src = root().join("etc/example/datasets/example");
    std::fs::copy(src.join("seed.sql"), ds.join("seed.sql")).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["maximum_migration_times"] = limits;
    // The job's `timeout` applies.
    config.as_object_mut().unwrap().remove("timeout");
    std::fs::write(ds.join("config.json"), config.to_string()).unwrap();
    dir
}

fn run_with(
    engine: &str,
    change_sql: &str,
    datasets: Option<&Path>,
    timeout: u64,
) -> (String, Value, PathBuf, Setup) {
    let datasets_dir = datasets
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("etc/example/datasets"));
    let seed = datasets_dir.join("example/seed.sql");
    let seed_before = std::fs::read(&seed).unwrap();
    let (repos, zuul_ref) = example_repo(change_sql);
    let plugins = PluginDir::new();
    plugins.add_shipped("gate_real_db_upgrade");
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "jobs": [{
                "name": "build:gate-real-db-upgrade",
                "plugin": "gate_real_db_upgrade",
                "datasets_dir": datasets_dir,
                "engine": engine,
                "timeout": timeout
            }]
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:gate-real-db-upgrade", Duration::from_secs(20));
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let out = enqueue_example_change(
        &server.addr(),
        repos.path(),
        &zuul_ref,
        &[("ZUUL_UUID", &uuid)],
        300,
    );
    let t = text(&out);
    let dir = results_dir(&t);
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summary.json")).unwrap_or_else(|e| {
            panic!(
                "no summary.json in {}: {e}\n{t}\n{}",
                dir.display(),
                daemon.log_text()
            )
        }),
    )
    .unwrap();
    // The seed is untouched and no job database is left behind.
    assert_eq!(
        std::fs::read(&seed).unwrap(),
        seed_before,
        "the seed changed"
    );
    let prefix = format!("example_shop_{}", &uuid[..8]);
    assert_eq!(
        databases(engine, &prefix),
        Vec::<String>::new(),
        "left behind"
    );
    drop(daemon);
    (t, summary, dir, setup)
}

fn passes(engine: &str) {
    let (t, summary, dir, _setup) = run(
        engine,
        "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n",
    );
    assert!(t.contains("result: SUCCESS"), "{t}");
    assert!(t.contains("started: "), "{t}");
    let ds = &summary["datasets"][0];
    assert_eq!(ds["final_version"], "4", "{summary}");
    let steps: Vec<String> = ds["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}->{}",
                m["from"].as_str().unwrap(),
                m["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(steps, ["2->3", "3->4"], "{summary}");
    for m in ds["migrations"].as_array().unwrap() {
        assert_eq!(m["status"], "ok");
        assert!(m["duration_ms"].as_i64().unwrap() >= 0);
    }
    for f in [
        "example.log",
        "git_prep.log",
        "summary.txt",
        "job.json",
        "task_output.log",
    ] {
        let listing: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            Path::new(&dir).join(f).is_file(),
            "{f} missing in {}: {listing:?}",
            dir.display()
        );
    }
}

fn broken_change_fails(engine: &str) {
    let (t, summary, _, _setup) = run(engine, "ALTER TABLE no_such_table ADD COLUMN x INTEGER;\n");
    assert!(
        t.contains("result: FAILURE - Did not find the end of a migration after a start"),
        "{t}"
    );
    assert_eq!(
        summary["datasets"][0]["migrations"][1]["status"], "unfinished",
        "{summary}"
    );
}

/// A migration slower than its limit gives the original's WARNING (and the job still
/// completes); a migration that hangs is ended by the job's timeout and cleaned up.
fn slow_and_hanging_migrations(engine: &str, sleep: &str) {
    let datasets = example_datasets_with(json!({"default": 30, "3->4": 1}));
    let (t, summary, _, _setup) = run_with(
        engine,
        &format!(
            "ALTER TABLE customers ADD COLUMN points INTEGER;\n{sleep};\n",
            sleep = sleep.replace("N", "2")
        ),
        Some(datasets.path()),
        120,
    );
    assert!(
        t.contains("result: WARNING - Migration 3->4 took too long"),
        "{t}"
    );
    let m = &summary["datasets"][0]["migrations"][1];
    assert_eq!(m["status"], "too_long", "{summary}");
    assert!(m["duration_ms"].as_i64().unwrap() >= 2000, "{summary}");

    let started = std::time::Instant::now();
    let (t, summary, _, _setup) = run_with(
        engine,
        &format!("{};\n", sleep.replace("N", "300")),
        Some(datasets.path()),
        4,
    );
    assert!(
        t.contains("result: FAILURE - Did not find the end of a migration after a start"),
        "{t}"
    );
    assert_eq!(
        summary["datasets"][0]["migrations"][1]["status"], "unfinished",
        "{summary}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn mariadb_slow_and_hanging_migrations_through_gearman() {
    slow_and_hanging_migrations("mariadb", "SELECT SLEEP(N)");
}

#[test]
fn postgresql_slow_and_hanging_migrations_through_gearman() {
    slow_and_hanging_migrations("postgresql", "SELECT pg_sleep(N)");
}

#[test]
fn sqlite_through_gearman() {
    passes("sqlite");
    broken_change_fails("sqlite");
}

#[test]
fn mariadb_through_gearman() {
    passes("mariadb");
    broken_change_fails("mariadb");
}

#[test]
fn postgresql_through_gearman() {
    passes("postgresql");
    broken_change_fails("postgresql");
}

/// A dataset whose `seed_data` reaches outside the datasets dir, added while the daemon
/// serves the job, fails the build with an error naming the dataset file and the key; the
/// file is never read.
#[test]
fn a_seed_outside_the_datasets_dir_fails_the_build_through_gearman() {
    let datasets = example_datasets_with(json!({"default": 60}));
    let (repos, zuul_ref) = example_repo("CREATE TABLE x (id INTEGER);\n");
    let plugins = PluginDir::new();
    plugins.add_shipped("gate_real_db_upgrade");
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "jobs": [{
                "name": "build:gate-real-db-upgrade",
                "plugin": "gate_real_db_upgrade",
                "datasets_dir": datasets.path(),
                "engine": "sqlite"
            }]
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:gate-real-db-upgrade", Duration::from_secs(20));
    let shadow = datasets.path().join("shadow");
    std::fs::create_dir(&shadow).unwrap();
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(datasets.path().join("example/config.json")).unwrap(),
    )
    .unwrap();
    config["seed_data"] = json!("../../../../../../../../../etc/shadow");
    std::fs::write(shadow.join("config.json"), config.to_string()).unwrap();
    let out = enqueue_example_change(&server.addr(), repos.path(), &zuul_ref, &[], 120);
    let t = text(&out);
    // In a job's child process the plugin validates its datasets when it makes the job's
    // runner ("rejected the job"); in the daemon's process when the run loads them ("invalid
    // datasets"): either way a FAILURE naming the file and the key.
    assert!(t.contains("result: FAILURE - "), "{t}");
    assert!(
        t.contains(&format!(
            "{}: seed_data: must name a file in the dataset's directory",
            shadow.join("config.json").display()
        )),
        "{t}\n{}",
        daemon.log_text()
    );
    drop(daemon);
}

/// A seed with a secret and a syntax error, through gearmand into the daemon, with logs
/// published: the build fails with the original's line and the secret is in no file of the
/// jobs dir or the published dir, nor in what the daemon logged.
fn a_seed_error_never_reaches_the_published_logs(engine: &str) {
    let marker = format!(
        "TH_SECRET_MARKER_{}",
        turbo_hipster::zuul::random_uuid_hex()
    );
    let datasets = example_datasets_with(json!({"default": 60}));
    std::fs::write(
        datasets.path().join("example/seed.sql"),
        format!("CREATE TABLE kept (id INTEGER);\n\n{marker} is not sql 'at all {marker}';\n"),
    )
    .unwrap();
    let (repos, zuul_ref) = example_repo("CREATE TABLE x (id INTEGER);\n");
    let plugins = PluginDir::new();
    plugins.add_shipped("gate_real_db_upgrade");
    let server = JobServer::start(ServerKind::Gearmand);
    let published = tempfile::tempdir().unwrap();
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "publish_logs": {"type": "local", "path": published.path(),
                             "prepend_url": "http://logs.example/"},
            "jobs": [{
                "name": "build:gate-real-db-upgrade",
                "plugin": "gate_real_db_upgrade",
                "datasets_dir": datasets.path(),
                "engine": engine
            }]
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:gate-real-db-upgrade", Duration::from_secs(20));
    let out = enqueue_example_change(&server.addr(), repos.path(), &zuul_ref, &[], 120);
    let t = text(&out);
    assert!(
        t.contains("result: FAILURE - Could not setup seed database."),
        "{t}\n{}",
        daemon.log_text()
    );
    let logs = files_containing(published.path(), "at line 3: ");
    assert!(
        !logs.is_empty(),
        "no summary with the line number published"
    );
    for dir in [published.path(), setup.jobs_dir().as_path()] {
        let leaked = files_containing(dir, &marker);
        assert!(leaked.is_empty(), "the seed leaked into {leaked:?}");
    }
    drop(daemon);
    let leaked = files_containing(setup.dir.path(), &marker);
    assert!(leaked.is_empty(), "the seed leaked into {leaked:?}");
    assert!(!t.contains(&marker), "{t}");
}

#[test]
fn mariadb_a_seed_error_never_reaches_the_published_logs() {
    a_seed_error_never_reaches_the_published_logs("mariadb");
}

#[test]
fn postgresql_a_seed_error_never_reaches_the_published_logs() {
    a_seed_error_never_reaches_the_published_logs("postgresql");
}
