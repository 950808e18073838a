//! Nothing leaks (issue 8, point 7): a daemon killed (`kill -9`) in the middle of a gate run
//! leaves its run database and its job's work dir; the next start of that daemon removes both,
//! while another worker's run on the same database server, still going, is left alone.
//! Through a real gearmand, on a private MariaDB and a private PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;
use turbo_hipster_tests::db_servers::{DbKind, PrivateDb};
use turbo_hipster_tests::{built, example_repo, Daemon, JobServer, PluginDir, ServerKind, Setup};

/// One worker: its own gearmand, config (worker name, jobs dir) and daemon.
struct Worker {
    server: JobServer,
    setup: Setup,
    daemon: Option<Daemon>,
    _plugins: PluginDir,
    _datasets: tempfile::TempDir,
}

impl Worker {
    fn start(name: &str, db: &PrivateDb) -> Self {
        let plugins = PluginDir::new();
        plugins.add_shipped("gate_real_db_upgrade");
        let server = JobServer::start(ServerKind::Gearmand);
        // Run databases on the shared server itself (not on private MariaDB servers).
        let datasets = turbo_hipster_tests::example_datasets_reloading();
        let setup = Setup::new(
            plugins.path(),
            json!({
                "worker_name": name,
                "gearman_servers": [server.addr()],
                "jobs": [{
                    "name": "build:gate-real-db-upgrade",
                    "plugin": "gate_real_db_upgrade",
                    "datasets_dir": datasets.path(),
                    "engine": db.engine(),
                    "connection": db.connection(),
                    "timeout": 300
                }]
            }),
        );
        let mut w = Worker {
            server,
            setup,
            daemon: None,
            _plugins: plugins,
            _datasets: datasets,
        };
        w.restart();
        w
    }

    fn restart(&mut self) {
        self.daemon = Some(Daemon::start(&self.setup));
        self.server
            .wait_registered("build:gate-real-db-upgrade", Duration::from_secs(20));
    }

    fn kill9(&mut self) {
        let mut daemon = self.daemon.take().unwrap();
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
    }

    /// Submits a build with `enqueue` (a process of its own, killed by the caller).
    fn submit(&self, uuid: &str, repos: &Path, zuul_ref: &str) -> Child {
        Command::new(&built().daemon)
            .args([
                "enqueue",
                "gate-real-db-upgrade",
                "--server",
                &self.server.addr(),
            ])
            .args(["--param", &format!("ZUUL_UUID={uuid}")])
            .args(["--param", "ZUUL_PROJECT=example/shop"])
            .args(["--param", &format!("ZUUL_URL={}", repos.display())])
            .args(["--param", &format!("ZUUL_REF={zuul_ref}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The work dirs under the jobs dir.
    fn work_dirs(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = e.path();
                if e.file_type().unwrap().is_dir() {
                    if e.file_name() == "work" {
                        found.push(path);
                    } else {
                        walk(&path, found);
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.setup.jobs_dir(), &mut found);
        found
    }

    fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default()
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() >= within {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn killed_daemon_leftovers_are_removed_at_its_next_start(kind: DbKind, sleep_sql: &str) {
    let db = PrivateDb::start(kind);
    let (repos, zuul_ref) = example_repo(&format!("{sleep_sql};\n"));
    let mut a = Worker::start("worker-a", &db);
    let b = Worker::start("worker-b", &db);
    let uuid_a = turbo_hipster::zuul::random_uuid_hex();
    let uuid_b = turbo_hipster::zuul::random_uuid_hex();
    let mut client_a = a.submit(&uuid_a, repos.path(), &zuul_ref);
    let mut client_b = b.submit(&uuid_b, repos.path(), &zuul_ref);
    let db_a = format!("example_shop_{}_0_workera", &uuid_a[..8]);
    let db_b = format!("example_shop_{}_0_workerb", &uuid_b[..8]);
    // Both runs are migrating (their databases exist and the sleep is in the server).
    let mut both = vec![db_a.clone(), db_b.clone()];
    both.sort();
    let start = Instant::now();
    while !(db.databases("example_shop_") == both
        && a.log().contains("migrating to the change")
        && b.log().contains("migrating to the change"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the runs did not start: {:?}\nA:\n{}\nB:\n{}",
            db.databases(""),
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.work_dirs().len(), 1, "{}", a.log());

    // Nobody waits for A's build any more (so gearmand does not hand it out again), and A dies.
    client_a.kill().unwrap();
    client_a.wait().unwrap();
    a.kill9();
    assert!(
        db.databases("example_shop_").contains(&db_a),
        "no leftover to clean"
    );
    let work_a = a.work_dirs();
    assert_eq!(work_a.len(), 1, "no leftover work dir");

    // A starts again: its leftovers go; B's live run is untouched.
    let started = Instant::now();
    a.restart();
    wait_for(
        "A's leftovers to be dropped",
        Duration::from_secs(30),
        || !db.databases("example_shop_").contains(&db_a),
    )
    .unwrap_or_else(|e| panic!("{e}\nA after its restart:\n{}", a.log()));
    let took = started.elapsed();
    assert!(
        a.log().contains(&format!(
            "dropped database {db_a} ({}) left by a killed run",
            db.engine()
        )),
        "{}",
        a.log()
    );
    assert!(
        !work_a[0].exists(),
        "{} is still there",
        work_a[0].display()
    );
    assert!(
        work_a[0].parent().unwrap().exists(),
        "the job's results are kept"
    );
    assert_eq!(db.databases("example_shop_"), vec![db_b], "{}", a.log());
    // The build was not handed to A again (its client is gone): nothing re-made the database.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!a.log().contains("fetching"), "{}", a.log());
    assert_eq!(b.work_dirs().len(), 1, "B's work dir was touched");
    assert!(!b.log().contains("dropped database"), "{}", b.log());
    // B is still running its migration.
    assert!(client_b.try_wait().unwrap().is_none(), "B's build ended");
    eprintln!("{kind:?}: leftovers removed {took:?} after the restart");
    client_b.kill().unwrap();
    client_b.wait().unwrap();
}

#[test]
fn mariadb_killed_daemon_leftovers_are_removed_at_its_next_start() {
    killed_daemon_leftovers_are_removed_at_its_next_start(DbKind::MariaDb, "SELECT SLEEP(120)");
}

#[test]
fn postgresql_killed_daemon_leftovers_are_removed_at_its_next_start() {
    killed_daemon_leftovers_are_removed_at_its_next_start(
        DbKind::PostgreSql,
        "SELECT pg_sleep(120)",
    );
}

/// `run-job` killed mid-run leaves its database and work dir; the next `run-job` (here one for
/// a project without datasets, which ends at once) removes them before running.
#[test]
fn a_killed_run_job_leaves_nothing_after_the_next_run_job() {
    let db = PrivateDb::start(DbKind::MariaDb);
    let (repos, zuul_ref) = example_repo("SELECT SLEEP(120);\n");
    let w = Worker::start("runjob-w", &db);
    let uuid = turbo_hipster::zuul::random_uuid_hex();
    let mut run = Command::new(&built().daemon)
        .arg("-c")
        .arg(&w.setup.config)
        .args(["run-job", "build:gate-real-db-upgrade"])
        .args(["--param", &format!("ZUUL_UUID={uuid}")])
        .args(["--param", "ZUUL_PROJECT=example/shop"])
        .args(["--param", &format!("ZUUL_URL={}", repos.path().display())])
        .args(["--param", &format!("ZUUL_REF={zuul_ref}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let name = format!("example_shop_{}_0_runjobw", &uuid[..8]);
    wait_for("the run's migration", Duration::from_secs(90), || {
        db.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(120)%'")
            .is_some_and(|n| n.trim() != "0")
    })
    .unwrap();
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(db.databases("example_shop_"), vec![name.clone()]);
    let work = w.work_dirs();
    assert_eq!(work.len(), 1, "no leftover work dir");
    let out = w.setup.run(&[
        "run-job",
        "build:gate-real-db-upgrade",
        "--param",
        "ZUUL_PROJECT=no/datasets",
    ]);
    let text = turbo_hipster_tests::text(&out);
    assert!(
        text.contains("No dataset found for project no/datasets"),
        "{text}"
    );
    assert_eq!(
        db.databases("example_shop_"),
        Vec::<String>::new(),
        "{text}"
    );
    assert!(!work[0].exists(), "{text}");
}
