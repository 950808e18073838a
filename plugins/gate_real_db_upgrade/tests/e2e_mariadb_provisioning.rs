//! MariaDB golden copies through the real daemon binary (`run-job`) and plugin, the real
//! MariaDB and this host's `mariadbd`: the first job builds the golden datadir and runs on a
//! private server started on a copy of it; the golden datadir is byte for byte the same after
//! a successful run, a failing one, a stopped one (SIGINT: the job is cancelled), a killed
//! one (SIGKILL) and a timed-out one; no private server (process, files, claim) outlives its
//! run, and a killed run's is removed when the next `run-job` starts. `cache: warm` reads the
//! tables before the first migration.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gate_real_db_upgrade::dataset::Engine;
use gate_real_db_upgrade::provisioning::{mariadb, STATE_DIR};
use serde_json::json;
use turbo_hipster_tests::gate::{assert_no_databases, example_world};
use turbo_hipster_tests::provisioning::mariadb_golden_fingerprint;

const LOYALTY: &str =
    "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n";
const HANG: &str = "DELETE FROM orders;\nSELECT SLEEP(600);\n";

struct Golden {
    state: PathBuf,
    name: String,
}

impl Golden {
    fn fingerprint(&self) -> BTreeMap<PathBuf, String> {
        mariadb_golden_fingerprint(&self.state, &self.name)
    }

    /// Private server instances in the state dir.
    fn instances(&self) -> usize {
        std::fs::read_dir(self.state.join(mariadb::RUNS_DIR))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// The ports of the running `mariadbd`s whose datadir is under `root`.
fn private_ports(root: &Path) -> Vec<u16> {
    let root = root.display().to_string();
    turbo_hipster_sdk::support::procfs::processes()
        .filter_map(|p| std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&root) && c.contains("--datadir="))
        .filter_map(|c| {
            c.split(' ')
                .find_map(|a| a.strip_prefix("--port="))
                .and_then(|p| p.parse().ok())
        })
        .collect()
}

/// Waits until a private server under `root` runs `SLEEP(600)`.
fn wait_for_sleep(root: &Path, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sleeping = private_ports(root).into_iter().any(|port| {
            Command::new("mariadb")
                .args(["-h127.0.0.1", "-uroot", "-N", "-B"])
                .arg(format!("-P{port}"))
                .args(["-e", "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(600)%'"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
        });
        if sleeping {
            return;
        }
        assert!(Instant::now() < deadline, "the migration never started");
        assert!(child.try_wait().unwrap().is_none(), "run-job ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn mariadb_golden_datadir_survives_failing_stopped_killed_and_timed_out_runs() {
    let world = example_world(Engine::MariaDb, json!({}), |_| {});

    // 1. The first job builds the golden datadir and runs on a private server.
    let change = world.propose("example/shop", &[("migrations/004_loyalty.sql", LOYALTY)]);
    let first = world.run("example/shop", &change);
    assert_eq!(first.result, "SUCCESS", "{}", first.describe());
    let provisioning = &first.summary["datasets"][0]["provisioning"];
    assert_eq!(provisioning["method"], "private", "{}", first.describe());
    assert_eq!(first.summary["datasets"][0]["database"], "example_shop");
    let golden = Golden {
        state: world.root.join("jobs").join(STATE_DIR),
        name: provisioning["golden"].as_str().unwrap().to_string(),
    };
    let log = first.file("example.log");
    assert!(log.contains("building the golden copy"), "{log}");
    assert!(log.contains("private server on 127.0.0.1:"), "{log}");
    assert!(log.contains("with its private server"), "{log}");
    assert_no_databases(Engine::MariaDb, "example_shop", &first.uuid);
    let before = golden.fingerprint();
    assert_eq!(golden.instances(), 0);

    // 2. A failing migration, half done before its error.
    let broken = "DELETE FROM orders;\nALTER TABLE no_such_table ADD COLUMN x INTEGER;\n";
    let change = world.propose("example/shop", &[("migrations/004_broken.sql", broken)]);
    let failed = world.run("example/shop", &change);
    assert!(
        failed.result.starts_with("FAILURE"),
        "{}",
        failed.describe()
    );
    assert!(!failed
        .file("example.log")
        .contains("building the golden copy"));
    assert_eq!(
        golden.fingerprint(),
        before,
        "a failing run changed the golden copy"
    );
    assert_eq!(golden.instances(), 0);

    // 3. Stopped (SIGINT: the job is cancelled) while its migration sleeps.
    let change = world.propose("example/shop", &[("migrations/004_hangs.sql", HANG)]);
    let mut child = world.spawn("example/shop", &change, &[]);
    wait_for_sleep(&world.root, &mut child.0);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let stopped = world.finish(child);
    assert_eq!(stopped.result, "ABORTED", "{}", stopped.describe());
    assert_eq!(
        golden.fingerprint(),
        before,
        "a stopped run changed the golden copy"
    );
    assert_eq!(golden.instances(), 0);
    assert!(
        private_ports(&world.root).is_empty(),
        "a private server still runs"
    );

    // 4. Killed (SIGKILL) while its migration sleeps: its instance stays until the next start.
    let (mut child, _, _) = world.spawn("example/shop", &change, &[]);
    wait_for_sleep(&world.root, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        golden.fingerprint(),
        before,
        "a killed run changed the golden copy"
    );
    assert_eq!(golden.instances(), 1, "the killed run's instance");

    // 5. Timed out; this run-job's start also removed the killed run's instance.
    world.run_timing_out("example", "example/shop", &change);
    assert_eq!(
        golden.fingerprint(),
        before,
        "a timed-out run changed the golden copy"
    );
    assert_eq!(golden.instances(), 0, "instances left");
    assert!(
        private_ports(&world.root).is_empty(),
        "a private server still runs"
    );
    let claims = world.root.join("jobs/.gate_real_db_upgrade-servers");
    assert_eq!(
        std::fs::read_dir(&claims).map(|d| d.count()).unwrap_or(0),
        0,
        "claims left in {}",
        claims.display()
    );
}

/// `cache: warm` reads the run database's tables and indexes on its private server before the
/// first migration, and says so.
#[test]
fn mariadb_warm_cache_reads_every_table_before_the_first_migration() {
    let world = example_world(Engine::MariaDb, json!({}), |c| c["cache"] = json!("warm"));
    let change = world.propose("example/shop", &[("migrations/004_loyalty.sql", LOYALTY)]);
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let log = run.file("example.log");
    let warmed = log.find("cache: warm: read").expect(&log);
    let migrated = log.find("004_loyalty").expect(&log);
    assert!(warmed < migrated, "{log}");
    assert!(!log.contains("cache: warm: read 0 tables"), "{log}");
}
