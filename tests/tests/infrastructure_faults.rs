//! Infrastructure is not the change's fault (issue 8, point 6), through a real gearmand into the
//! real daemon: a private MariaDB or PostgreSQL killed (`SIGKILL`) in the middle of a migration,
//! and a git server that cannot be reached, end the build without a verdict. Zuul v2 must see a
//! last WORK_DATA without `result` (with `error`) and WORK_FAIL, so that it runs the build
//! again; `jobs.jsonl` records `ERROR - infrastructure: …`; the logs say what failed.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_hipster::gearman::client::{Client, JobEvent, Priority};
use turbo_hipster_tests::db_servers::{DbKind, PrivateDb};
use turbo_hipster_tests::{
    example_repo, free_port, root, Daemon, JobServer, PluginDir, ServerKind, Setup, SmallDisk,
};

/// A daemon serving the gate job with `job` settings, behind a fresh gearmand.
struct World {
    server: JobServer,
    jobs_dir: std::path::PathBuf,
    daemon: Daemon,
    _setup: Setup,
    _plugins: PluginDir,
}

impl World {
    fn new(job: Value) -> Self {
        Self::with_config(job, json!({}))
    }

    /// With `top` merged into the daemon's config.
    fn with_config(job: Value, top: Value) -> Self {
        let plugins = PluginDir::new();
        plugins.add_shipped("gate_real_db_upgrade");
        let server = JobServer::start(ServerKind::Gearmand);
        let mut entry = json!({
            "name": "build:gate-real-db-upgrade",
            "plugin": "gate_real_db_upgrade",
            "datasets_dir": root().join("etc/example/datasets"),
            "timeout": 120,
            "git_retries": 1
        });
        entry
            .as_object_mut()
            .unwrap()
            .extend(job.as_object().unwrap().clone());
        let mut config = json!({"gearman_servers": [server.addr()], "jobs": [entry]});
        config
            .as_object_mut()
            .unwrap()
            .extend(top.as_object().unwrap().clone());
        let setup = Setup::new(plugins.path(), config);
        let jobs_dir = top["jobs_working_dir"]
            .as_str()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| setup.jobs_dir());
        let daemon = Daemon::start(&setup);
        server.wait_registered("build:gate-real-db-upgrade", Duration::from_secs(20));
        World {
            server,
            jobs_dir,
            _setup: setup,
            daemon,
            _plugins: plugins,
        }
    }

    /// Submits a build as Zuul does, on a thread; the thread returns every WORK_DATA payload
    /// and how the build ended (`complete`, `fail`, `exception` or `lost`).
    fn submit(&self, params: Value) -> std::thread::JoinHandle<(Vec<Value>, &'static str)> {
        let port = self.server.port;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let client = Client::connect("127.0.0.1", port).await.unwrap();
                let unique = params["ZUUL_UUID"].as_str().unwrap().to_string();
                let mut job = client
                    .submit(
                        "build:gate-real-db-upgrade",
                        &unique,
                        params.to_string(),
                        Priority::Normal,
                    )
                    .await
                    .unwrap();
                let mut data = Vec::new();
                let end = loop {
                    let ev = tokio::time::timeout(Duration::from_secs(300), job.next_event())
                        .await
                        .expect("the build ended within 300 s");
                    match ev {
                        None => break "lost",
                        Some(JobEvent::Data(d)) => data.push(serde_json::from_slice(&d).unwrap()),
                        Some(JobEvent::Complete(_)) => break "complete",
                        Some(JobEvent::Fail) => break "fail",
                        Some(JobEvent::Exception(_)) => break "exception",
                        Some(_) => {}
                    }
                };
                (data, end)
            })
        })
    }

    /// The history line of build `uuid` (written just after the result goes out).
    fn record(&self, uuid: &str) -> Value {
        let start = Instant::now();
        loop {
            if let Some(r) = self.history().into_iter().find(|r| r["unique"] == uuid) {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no history line for {uuid}\n{}",
                self.daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The history lines of the daemon.
    fn history(&self) -> Vec<Value> {
        std::fs::read_to_string(self.jobs_dir.join("jobs.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn params(uuid: &str, url: &str, zuul_ref: &str) -> Value {
    json!({
        "ZUUL_UUID": uuid,
        "ZUUL_PROJECT": "example/shop",
        "ZUUL_URL": url,
        "ZUUL_REF": zuul_ref,
        "ZUUL_PIPELINE": "check",
    })
}

/// Asserts the build ended the Zuul-retry way: last data without `result`, with `error`
/// containing `error_has`, then WORK_FAIL. Returns the history record.
fn assert_retried(
    w: &World,
    uuid: &str,
    (data, end): (Vec<Value>, &str),
    error_has: &str,
) -> Value {
    let last = data.last().unwrap();
    let log = w.daemon.log_text();
    assert_eq!(end, "fail", "{data:?}\n{log}");
    assert!(last.get("result").is_none(), "{last}\n{log}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains(error_has), "{last}\n{log}");
    assert!(last["url"].as_str().is_some(), "{last}");
    assert!(data.iter().all(|d| d.get("result").is_none()), "{data:?}");
    let record = w.record(uuid);
    let result = record["result"].as_str().unwrap();
    assert!(
        result.starts_with("ERROR - infrastructure: ") && result.contains(error_has),
        "{record}"
    );
    record
}

/// The results directory of a finished build, from its history record.
fn results_dir(record: &Value) -> std::path::PathBuf {
    let url = record["url"].as_str().unwrap();
    let url = url.strip_suffix("index.html").unwrap_or(url);
    Path::new(url.strip_prefix("file://").unwrap()).to_path_buf()
}

/// A migration sleeping in the server; the server killed while it sleeps.
fn server_killed_mid_migration(kind: DbKind, sleep_sql: &str, sleeping: &str) {
    let mut db = PrivateDb::start(kind);
    let (repos, zuul_ref) = example_repo(&format!("{sleep_sql};\n"));
    // The migration must run on the server that is killed: the example dataset reloaded
    // there, not given a private server of its own (MariaDB's fast path).
    let datasets = turbo_hipster_tests::example_datasets_reloading();
    let w = World::new(json!({
        "engine": db.engine(),
        "connection": db.connection(),
        "datasets_dir": datasets.path(),
    }));
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let build = w.submit(params(
        &uuid,
        &repos.path().display().to_string(),
        &zuul_ref,
    ));
    // Wait for the migration to be inside the server, then kill the server.
    let start = Instant::now();
    while db.query(sleeping).is_none_or(|n| n.trim() == "0") {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the migration never started\n{}",
            w.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    db.kill9();
    let killed = Instant::now();
    let ended = build.join().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "{:?}",
        killed.elapsed()
    );
    let lost = format!("database server lost: {}", label(kind));
    let record = assert_retried(&w, &uuid, ended, &lost);
    let endpoint = format!("127.0.0.1:{}", db.port);
    assert!(
        record["result"].as_str().unwrap().contains(&endpoint),
        "{record}"
    );
    // The dataset's log says what failed, and the job is not judged.
    let log = std::fs::read_to_string(results_dir(&record).join("example.log")).unwrap();
    assert!(
        log.contains("infrastructure failure, not the change's"),
        "{log}"
    );
    assert!(log.contains(&endpoint), "{log}");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(results_dir(&record).join("summary.json")).unwrap(),
    )
    .unwrap();
    assert!(
        !summary["result"].as_str().unwrap().contains("FAILURE"),
        "{summary}"
    );
}

fn label(kind: DbKind) -> &'static str {
    match kind {
        DbKind::MariaDb => "MariaDB",
        DbKind::PostgreSql => "PostgreSQL",
    }
}

#[test]
fn mariadb_killed_mid_migration_is_not_the_changes_fault() {
    server_killed_mid_migration(
        DbKind::MariaDb,
        "SELECT SLEEP(60)",
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(60)%'",
    );
}

#[test]
fn postgresql_killed_mid_migration_is_not_the_changes_fault() {
    server_killed_mid_migration(
        DbKind::PostgreSql,
        "SELECT pg_sleep(60)",
        "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'",
    );
}

/// The same private server, alive: a broken migration stays the change's fault.
#[test]
fn a_broken_migration_on_a_healthy_private_server_stays_a_failure() {
    let db = PrivateDb::start(DbKind::MariaDb);
    let (repos, zuul_ref) = example_repo("ALTER TABLE no_such_table ADD COLUMN x INTEGER;\n");
    let w = World::new(json!({"engine": db.engine(), "connection": db.connection()}));
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let (data, end) = w
        .submit(params(
            &uuid,
            &repos.path().display().to_string(),
            &zuul_ref,
        ))
        .join()
        .unwrap();
    assert_eq!(end, "fail");
    assert_eq!(
        data.last().unwrap()["result"],
        "FAILURE - Did not find the end of a migration after a start",
        "{data:?}"
    );
}

/// `ZUUL_URL` on a closed local port: the git server cannot be reached.
#[test]
fn an_unreachable_git_server_is_not_the_changes_fault() {
    let w = World::new(json!({"engine": "sqlite"}));
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let url = format!("http://127.0.0.1:{}/", free_port());
    let ended = w
        .submit(params(&uuid, &url, "refs/zuul/master/Zabc"))
        .join()
        .unwrap();
    let record = assert_retried(&w, &uuid, ended, "git server unreachable");
    let log = std::fs::read_to_string(results_dir(&record).join("git_prep.log")).unwrap();
    assert!(log.contains("127.0.0.1"), "{log}");
    // A bad ref on a reachable server stays the change's failure.
    let (repos, _) = example_repo("SELECT 1;\n");
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let (data, end) = w
        .submit(params(
            &uuid,
            &repos.path().display().to_string(),
            "refs/zuul/master/Znosuchref",
        ))
        .join()
        .unwrap();
    assert_eq!(end, "fail");
    let result = data.last().unwrap()["result"].as_str().unwrap().to_string();
    assert!(
        result.starts_with("FAILURE - could not prepare the git checkout"),
        "{result}"
    );
}

/// The jobs dir on a disk too small for the run's database: the seed cannot be loaded because
/// the disk is full, which is not the change's fault.
#[test]
fn a_full_disk_is_not_the_changes_fault() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let datasets = tempfile::tempdir().unwrap();
    let ds = datasets.path().join("big");
    std::fs::create_dir_all(&ds).unwrap();
    // About 30 MB of rows once loaded.
    std::fs::write(
        ds.join("seed.sql"),
        "CREATE TABLE blobs (b BLOB);\n\
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 30000)\n\
         INSERT INTO blobs SELECT randomblob(1000) FROM c;\n",
    )
    .unwrap();
    std::fs::write(
        ds.join("config.json"),
        json!({
            "project": "example/shop",
            "database": "big",
            "engine": "sqlite",
            "seed_data": "seed.sql",
            "migration": {"sql_dir": "migrations", "version_table": "th_schema_version"},
            "expected_version": "last_sql_file"
        })
        .to_string(),
    )
    .unwrap();
    let (repos, zuul_ref) = example_repo("SELECT 1;\n");
    // Only the jobs dir is on the small disk.
    let w = World::with_config(
        json!({"engine": "sqlite", "datasets_dir": datasets.path()}),
        json!({"jobs_working_dir": disk.path().join("jobs")}),
    );
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let ended = w
        .submit(params(
            &uuid,
            &repos.path().display().to_string(),
            &zuul_ref,
        ))
        .join()
        .unwrap();
    let record = assert_retried(&w, &uuid, ended, "disk full");
    let result = record["result"].as_str().unwrap();
    assert!(result.contains("database or disk is full"), "{result}");
}
