//! The gate plugin's end-to-end world: the real daemon binary (`turbo-hipster -c <config>
//! run-job …`) with the real plugin, real git repositories made here, and real database
//! servers (SQLite files, MariaDB on 127.0.0.1:3306 as root with an empty password, PostgreSQL
//! on 127.0.0.1:5432 as postgres with trust authentication, as `scripts/setup-test-env.sh`
//! prepares them). Used by the plugin's own tests (`plugins/gate_real_db_upgrade/tests`).
//!
//! After every job a [`World`] checks that the seeds are byte-identical to what they were and
//! that no SQLite run database is left behind; [`assert_no_databases`] does the same for a
//! server's databases.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gate_real_db_upgrade::dataset::{Connection, Engine};
use gate_real_db_upgrade::dataset_run::database_prefix;
use gate_real_db_upgrade::engine::Server;
use serde_json::{json, Value};

use crate::{built, git, root, test_venv_dir};

/// The shipped example (`etc/example`).
pub fn example() -> PathBuf {
    root().join("etc/example")
}

/// A fresh 32-hex-digit id (a Zuul UUID), different for every call.
pub fn uuid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ n.rotate_left(48);
    // Vary the first 8 digits (the part in database names) with every call.
    format!(
        "{:08x}{:08x}{:016x}",
        (mixed ^ (n.wrapping_mul(0x9E37_79B9))) as u32,
        std::process::id(),
        nanos as u64
    )
}

/// Writes `files` (path relative to `dir`, content) into `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One finished job.
#[derive(Debug)]
pub struct JobRun {
    /// The job's result, whole (all lines).
    pub result: String,
    /// `run-job`'s stdout.
    pub stdout: String,
    /// `run-job`'s stderr.
    pub stderr: String,
    /// The results directory.
    pub results: PathBuf,
    /// `summary.json`.
    pub summary: Value,
    /// The job's ZUUL_UUID.
    pub uuid: String,
    /// How long `run-job` took.
    pub took: Duration,
}

impl JobRun {
    /// A file of the results directory.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.results.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.describe()))
    }

    /// The result's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.result.lines().collect()
    }

    /// The summary's migrations of dataset `i`.
    pub fn migrations(&self, i: usize) -> &Vec<Value> {
        self.summary["datasets"][i]["migrations"]
            .as_array()
            .unwrap_or_else(|| panic!("no migrations in the summary\n{}", self.describe()))
    }

    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        let logs: String = std::fs::read_dir(&self.results)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .map(|e| {
                        format!(
                            "--- {}\n{}",
                            e.file_name().to_string_lossy(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "result: {}\n--- stdout\n{}\n--- stderr\n{}\n{logs}",
            self.result, self.stdout, self.stderr
        )
    }
}

/// A test's world: a temp dir with a plugin dir, a daemon config, an upstream of git
/// repositories (`ZUUL_URL`), a datasets dir, and the seeds to check.
pub struct World {
    /// Keeps everything alive.
    pub tmp: tempfile::TempDir,
    /// `tmp`'s path.
    pub root: PathBuf,
    /// The datasets dir.
    pub datasets: PathBuf,
    /// The upstream (ZUUL_URL).
    pub upstream: PathBuf,
    /// The daemon's config.
    pub config: PathBuf,
    /// Seeds and their bytes when the world was made.
    seeds: Vec<(PathBuf, Vec<u8>)>,
    changes: AtomicU64,
}

impl World {
    /// A world whose job config is `build:gate-real-db-upgrade` with `job` merged in.
    pub fn new(job: Value) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("th-e2e-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        let plugin_dir = root.join("plugins/gate_real_db_upgrade");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        std::fs::copy(
            built().plugin("gate_real_db_upgrade"),
            plugin_dir.join("libtask.so"),
        )
        .unwrap();
        let datasets = root.join("datasets");
        let upstream = root.join("upstream");
        std::fs::create_dir_all(&datasets).unwrap();
        std::fs::create_dir_all(&upstream).unwrap();
        let mut job_config = json!({
            "name": "build:gate-real-db-upgrade",
            "plugin": "gate_real_db_upgrade",
            "datasets_dir": datasets,
            "git_retries": 1,
        });
        for (k, v) in job.as_object().unwrap() {
            job_config[k] = v.clone();
        }
        let config = json!({
            "jobs_working_dir": root.join("jobs"),
            "git_working_dir": root.join("git"),
            "plugin_dirs": [root.join("plugins")],
            "jobs": [job_config],
        });
        let config_path = root.join("config.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        World {
            tmp,
            root,
            datasets,
            upstream,
            config: config_path,
            seeds: Vec::new(),
            changes: AtomicU64::new(0),
        }
    }

    /// Makes the upstream repository of `project` with `files` in its first commit on master.
    pub fn project(&self, project: &str, files: &[(&str, &str)]) -> PathBuf {
        let repo = self.upstream.join(project);
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        write_files(&repo, files);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        repo
    }

    /// Makes the upstream repository of `project` from a directory.
    pub fn project_from(&self, project: &str, dir: &Path) -> PathBuf {
        let repo = self.upstream.join(project);
        copy_tree(dir, &repo);
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        repo
    }

    /// Proposes a change to `project` adding `files` on top of master, as Zuul's merger
    /// would: a commit published as `refs/zuul/master/Z<hex>` (master is left as it was).
    /// Returns the ref.
    pub fn propose(&self, project: &str, files: &[(&str, &str)]) -> String {
        let repo = self.upstream.join(project);
        let n = self.changes.fetch_add(1, Ordering::SeqCst);
        let branch = format!("change{n}");
        git(&repo, &["checkout", "-q", "-b", &branch, "master"]);
        write_files(&repo, files);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("change {n}")]);
        let sha = git(&repo, &["rev-parse", "HEAD"]);
        let reference = format!("refs/zuul/master/Z{}", &uuid()[..16]);
        git(&repo, &["update-ref", &reference, &sha]);
        git(&repo, &["checkout", "-q", "master"]);
        reference
    }

    /// Adds dataset `name` (`<datasets>/<name>/config.json` + `files`); remembers every file
    /// named like a seed (`*.sql`, `*.sql.gz`, `*.dump`) to check it is never changed.
    pub fn dataset(&mut self, name: &str, config: Value, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.datasets.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        write_files(&dir, files);
        for (file, _) in files {
            if file.ends_with(".sql") || file.ends_with(".gz") || file.ends_with(".dump") {
                self.watch_seed(&dir.join(file));
            }
        }
        dir
    }

    /// Changes dataset `name`'s `config.json` with `edit`.
    pub fn edit_dataset(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.datasets.join(name).join("config.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut config: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
    }

    /// Runs the job on `project` at `reference` again with dataset `dataset`'s `timeout` set
    /// to 3 s, for a migration that takes longer: checks that the timeout ended it (the
    /// result, and the dataset's log saying so).
    pub fn run_timing_out(&self, dataset: &str, project: &str, reference: &str) -> JobRun {
        self.edit_dataset(dataset, |c| c["timeout"] = json!(3));
        let run = self.run(project, reference);
        assert_eq!(
            run.result,
            "FAILURE - Did not find the end of a migration after a start",
            "{}",
            run.describe()
        );
        let log = run.file(&format!("{dataset}.log"));
        assert!(log.contains("timed out after 3 s"), "{log}");
        run
    }

    /// Copies the shipped example dataset in as `name`.
    pub fn example_dataset(&mut self, name: &str) -> PathBuf {
        let dir = self.datasets.join(name);
        copy_tree(&example().join("datasets/example"), &dir);
        self.watch_seed(&dir.join("seed.sql"));
        dir
    }

    /// Remembers `seed`'s bytes now, to check after each job.
    pub fn watch_seed(&mut self, seed: &Path) {
        let bytes = std::fs::read(seed).unwrap();
        self.seeds.push((seed.to_path_buf(), bytes));
    }

    /// Runs the job on `project` at `reference` through `turbo-hipster run-job`, then checks
    /// the seeds are untouched.
    pub fn run(&self, project: &str, reference: &str) -> JobRun {
        self.run_with(project, reference, &[])
    }

    /// [`World::run`] with extra job parameters.
    pub fn run_with(&self, project: &str, reference: &str, extra: &[(&str, &str)]) -> JobRun {
        self.run_with_env(project, reference, extra, &[])
    }

    /// [`World::run_with`] with `env` (name, value) added to the environment of `run-job`
    /// (the daemon).
    pub fn run_with_env(
        &self,
        project: &str,
        reference: &str,
        extra: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> JobRun {
        let child = self.spawn_with_env(project, reference, extra, env);
        self.finish(child)
    }

    /// Starts `run-job` without waiting.
    pub fn spawn(
        &self,
        project: &str,
        reference: &str,
        extra: &[(&str, &str)],
    ) -> (std::process::Child, String, Instant) {
        self.spawn_with_env(project, reference, extra, &[])
    }

    /// [`World::spawn`] with `env` added to the daemon's environment.
    pub fn spawn_with_env(
        &self,
        project: &str,
        reference: &str,
        extra: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> (std::process::Child, String, Instant) {
        let uuid = uuid();
        let mut cmd = Command::new(&built().daemon);
        cmd.envs(env.iter().copied());
        cmd.arg("-c")
            .arg(&self.config)
            .args(["run-job", "build:gate-real-db-upgrade"])
            .arg("--param")
            .arg(format!("ZUUL_PROJECT={project}"))
            .arg("--param")
            .arg(format!("ZUUL_URL={}", self.upstream.display()))
            .arg("--param")
            .arg(format!("ZUUL_REF={reference}"))
            .arg("--param")
            .arg("ZUUL_BRANCH=master")
            .arg("--param")
            .arg(format!("ZUUL_UUID={uuid}"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in extra {
            cmd.arg("--param").arg(format!("{k}={v}"));
        }
        (cmd.spawn().unwrap(), uuid, Instant::now())
    }

    /// Waits for a job started by [`World::spawn`] and reads what it left.
    pub fn finish(&self, (child, uuid, started): (std::process::Child, String, Instant)) -> JobRun {
        let out: Output = child.wait_with_output().unwrap();
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let results = stdout
            .lines()
            .find_map(|l| l.strip_prefix("logs: file://"))
            .map(|p| PathBuf::from(p.trim_end_matches('/')))
            .unwrap_or_else(|| panic!("no logs line\n--- stdout\n{stdout}\n--- stderr\n{stderr}"));
        let job: Value = std::fs::read_to_string(results.join("job.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let result = job["result"].as_str().unwrap_or_default().to_string();
        let summary = std::fs::read_to_string(results.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let run = JobRun {
            result,
            stdout,
            stderr,
            results,
            summary,
            uuid,
            took,
        };
        assert_eq!(
            out.status.success(),
            run.result == "SUCCESS",
            "run-job's exit status disagrees with the result\n{}",
            run.describe()
        );
        self.assert_seeds_untouched();
        self.assert_no_sqlite_files();
        run
    }

    /// Every watched seed still has the bytes it had.
    pub fn assert_seeds_untouched(&self) {
        for (path, bytes) in &self.seeds {
            let now = std::fs::read(path).unwrap();
            assert!(now == *bytes, "seed {} was modified", path.display());
        }
    }

    /// No SQLite run database file is left anywhere under the world (golden copies, kept on
    /// purpose in the provisioning state dir, do not count).
    pub fn assert_no_sqlite_files(&self) {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if e.file_name() != gate_real_db_upgrade::provisioning::STATE_DIR {
                        walk(&p, found);
                    }
                } else if p.extension().is_some_and(|x| x == "sqlite") {
                    found.push(p);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.root.join("jobs"), &mut found);
        assert!(found.is_empty(), "SQLite databases left behind: {found:?}");
    }
}

/// The shipped example on `engine`'s server (panics when it is not reachable): the job config
/// with `engine` and then `job` merged in, dataset `example` with `edit` applied to its config,
/// and project `example/shop` upstream.
pub fn example_world(engine: Engine, job: Value, edit: impl FnOnce(&mut Value)) -> World {
    require(engine);
    let mut job_config = json!({"engine": engine.name()});
    for (k, v) in job.as_object().unwrap() {
        job_config[k] = v.clone();
    }
    let mut world = World::new(job_config);
    world.example_dataset("example");
    world.edit_dataset("example", edit);
    world.project_from("example/shop", &example().join("project"));
    world
}

/// Runs the change adding `files` to `example/shop` in a world of [`example_world`], then
/// checks that no database of the job is left on `engine`'s server.
pub fn run_example_change(world: &World, engine: Engine, files: &[(&str, &str)]) -> JobRun {
    let change = world.propose("example/shop", files);
    let run = world.run("example/shop", &change);
    assert_no_databases(engine, "example_shop", &run.uuid);
    run
}

/// An alembic project on `engine`'s server, migrated by the test venv's alembic (panics when
/// the server or the venv is missing): project `project` upstream with `files` on master (its
/// `alembic/env.py`, such as [`ALEMBIC_ENV_PY`], and first revisions), and its dataset `api`:
/// database `project` with `/` made `_` (`acme/locks`: `acme_locks`), seeded from `seed`,
/// migrated by `alembic upgrade head` (`alembic.ini` from [`alembic_ini`] with no options,
/// output parsed as alembic's), version checked against the heads of `alembic/versions`,
/// `settings` merged into its config.
pub fn alembic_world(
    engine: Engine,
    project: &str,
    seed: &str,
    settings: Value,
    files: &[(&str, &str)],
) -> World {
    require(engine);
    let venv = venv();
    let mut config = json!({
        "project": project,
        "engine": engine.name(),
        "database": project.replace('/', "_"),
        "seed_data": "seed.sql",
        "migration": {
            "tool": [venv.join("bin/alembic"), "-c", "{work_dir}/alembic.ini", "upgrade", "head"],
            "templates": {"alembic.ini": "alembic.ini.tmpl"},
            "log_format": "alembic",
        },
        "expected_version": {"alembic_heads": "alembic/versions"},
    });
    for (k, v) in settings.as_object().unwrap() {
        config[k] = v.clone();
    }
    let mut world = World::new(json!({}));
    world.dataset(
        "api",
        config,
        &[("seed.sql", seed), ("alembic.ini.tmpl", &alembic_ini(""))],
    );
    world.project(project, files);
    world
}

/// An alembic revision script: revision `rev` after `down` (a Python expression: `None` or a
/// quoted revision) whose `upgrade()` body is `upgrade` (`op` and `sa` imported).
pub fn alembic_revision(rev: &str, down: &str, upgrade: &str) -> String {
    format!(
        "\"\"\"{rev}\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\n\
         revision = '{rev}'\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\n\
         def upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    pass\n"
    )
}

/// The first revision of [`big_table_alembic_run`] (makes table `small`).
pub const REV_A: &str = "a1a1a1a1a1a1";
/// The second revision of [`big_table_alembic_run`] (rewrites `big`).
pub const REV_B: &str = "b2b2b2b2b2b2";
/// The third revision of [`big_table_alembic_run`] (adds a column to `big`).
pub const REV_C: &str = "c3c3c3c3c3c3";

/// The observation tests' alembic run on PostgreSQL: an [`alembic_world`] of `project` with
/// `settings` and `env_py`, seeded with table `big` of a million rows; master has revision
/// [`REV_A`] (makes table `small`), the change adds [`REV_B`] (rewrites `big`: a column with
/// a volatile default) and [`REV_C`] (adds a column to `big`, catalog-only, then runs
/// `c_then`: more Python statements of its `upgrade()`, each after a `;`, or nothing). The
/// world holds the results; no database of the job is left.
pub fn big_table_alembic_run(
    project: &str,
    settings: Value,
    env_py: &str,
    c_then: &str,
) -> (World, JobRun) {
    let engine = Engine::PostgreSql;
    let rev_a = alembic_revision(
        REV_A,
        "None",
        "op.create_table('small', sa.Column('id', sa.Integer, primary_key=True))",
    );
    let world = alembic_world(
        engine,
        project,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER);\n\
         INSERT INTO big SELECT g, g FROM generate_series(1, 1000000) g;\n",
        settings,
        &[
            ("alembic/env.py", env_py),
            ("alembic/versions/a_small.py", &rev_a),
        ],
    );
    let rev_b = alembic_revision(
        REV_B,
        &format!("'{REV_A}'"),
        "op.execute('ALTER TABLE big ADD COLUMN c FLOAT DEFAULT random()')",
    );
    let rev_c = alembic_revision(
        REV_C,
        &format!("'{REV_B}'"),
        &format!("op.add_column('big', sa.Column('d', sa.Integer)){c_then}"),
    );
    let change = world.propose(
        project,
        &[
            ("alembic/versions/b_rewrite.py", &rev_b),
            ("alembic/versions/c_add_column.py", &rev_c),
        ],
    );
    let run = world.run(project, &change);
    assert_no_databases(engine, &project.replace('/', "_"), &run.uuid);
    (world, run)
}

/// A sqlalchemy-migrate look-alike for SQLite (`python3 tools/migrate.py {db_url}` in a
/// checkout): applies `versions/NNN_*.py` (each defines `upgrade(conn)`) above the version in
/// `migrate_version`, printing `N -> M... ` before and `done` after each, then `Final schema
/// version is N`.
pub const SQLITE_MIGRATE_PY: &str = r#"import glob, importlib.util, os, sqlite3, sys
url = sys.argv[1]
assert url.startswith("sqlite:///"), url
conn = sqlite3.connect(url[len("sqlite:///"):])
conn.execute("CREATE TABLE IF NOT EXISTS migrate_version "
             "(repository_id VARCHAR(250) PRIMARY KEY, repository_path TEXT, version INTEGER)")
row = conn.execute("SELECT version FROM migrate_version").fetchone()
if row is None:
    conn.execute("INSERT INTO migrate_version VALUES ('shop', 'versions', 0)")
    conn.commit()
version = row[0] if row else 0
files = sorted(glob.glob("versions/[0-9]*_*.py"), key=lambda p: int(os.path.basename(p).split("_")[0]))
for path in files:
    n = int(os.path.basename(path).split("_")[0])
    if n <= version:
        continue
    print("%d -> %d... " % (version, n), flush=True)
    spec = importlib.util.spec_from_file_location("m%d" % n, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.upgrade(conn)
    conn.execute("UPDATE migrate_version SET version = ?", (n,))
    conn.commit()
    print("done", flush=True)
    version = n
print("Final schema version is %d" % version, flush=True)
"#;

/// An alembic `env.py` as OpenStack projects have it: online migrations only, one transaction
/// per migration.
pub const ALEMBIC_ENV_PY: &str = r#"from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline mode is not used here")
run_migrations_online()
"#;

/// A dataset's `alembic.ini.tmpl` (scripts in `{checkout}/alembic`, `sqlalchemy.url =
/// {db_url}`, alembic's own log lines at INFO on stderr), with `options` (lines) added to its
/// `[alembic]` section.
pub fn alembic_ini(options: &str) -> String {
    format!("[alembic]\nscript_location = {{checkout}}/alembic\n{options}{ALEMBIC_INI_REST}")
}

const ALEMBIC_INI_REST: &str = r"sqlalchemy.url = {db_url}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
";

/// The server of `engine` the tests use (defaults: root@127.0.0.1:3306, postgres@127.0.0.1:5432).
pub fn server(engine: Engine) -> Server {
    Server::new(engine, Connection::default(), std::env::temp_dir())
}

/// Panics with a pointer to the set-up script when `engine`'s server is not reachable.
pub fn require(engine: Engine) {
    if let Err(e) = server(engine).ping() {
        panic!(
            "{engine:?} is not reachable as the tests expect ({e}); run scripts/setup-test-env.sh \
             (as root) to install and start it"
        );
    }
}

/// No database of job `uuid` for a dataset whose `database` is `database` is left on
/// `engine`'s server.
pub fn assert_no_databases(engine: Engine, database: &str, uuid: &str) {
    let prefix = database_prefix(database, uuid);
    let left = server(engine).databases_with_prefix(&prefix).unwrap();
    assert!(
        left.is_empty(),
        "databases left behind on {engine:?}: {left:?}"
    );
}

/// The test venv with alembic, SQLAlchemy, PyMySQL and psycopg2 (made by
/// `scripts/setup-test-env.sh`); panics with instructions when it is missing.
pub fn venv() -> PathBuf {
    let venv = test_venv_dir();
    let alembic = venv.join("bin/alembic");
    assert!(
        alembic.is_file(),
        "the test venv {} has no bin/alembic: run scripts/setup-test-env.sh to make it \
         (or point TH_TEST_VENV at a venv with alembic, sqlalchemy, pymysql and psycopg2-binary)",
        venv.display()
    );
    let ok = Command::new(venv.join("bin/python"))
        .args(["-c", "import alembic, sqlalchemy, pymysql, psycopg2"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the test venv {} cannot import alembic, sqlalchemy, pymysql and psycopg2: run \
         scripts/setup-test-env.sh",
        venv.display()
    );
    reachable_by_all(&venv)
}

/// The venv itself when everyone can reach it; else (a venv under a root's 0700 home, and a
/// root daemon running the tool as `nobody`) a copy in /tmp readable by all, made once and
/// shared by the test processes, with its scripts' `#!` lines pointing at the copy.
fn reachable_by_all(venv: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let reachable = venv
        .ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0));
    if reachable {
        return venv.to_path_buf();
    }
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let stamp = std::fs::metadata(venv.join("pyvenv.cfg"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let copy = PathBuf::from(format!("/tmp/th-test-venv-{stamp}"));
        if copy.join(".complete").exists() {
            return copy;
        }
        let staging = PathBuf::from(format!("/tmp/th-test-venv-{stamp}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let ok = Command::new("cp")
            .arg("-a")
            .arg(venv)
            .arg(&staging)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot copy the test venv to {}", staging.display());
        let old = format!("#!{}/", venv.display());
        let new = format!("#!{}/", copy.display());
        for entry in std::fs::read_dir(staging.join("bin")).unwrap().flatten() {
            let path = entry.path();
            if !entry.file_type().unwrap().is_file() {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if text.starts_with(&old) {
                std::fs::write(&path, text.replacen(&old, &new, 1)).unwrap();
            }
        }
        assert!(Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&staging)
            .status()
            .unwrap()
            .success());
        std::fs::write(staging.join(".complete"), "").unwrap();
        // Another test process may have finished first: keep whichever is there.
        if std::fs::rename(&staging, &copy).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        copy
    })
    .clone()
}
