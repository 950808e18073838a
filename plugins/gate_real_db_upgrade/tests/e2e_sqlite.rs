//! End to end on SQLite, through the real daemon binary (`turbo-hipster run-job`) and the
//! real plugin: the shipped example, a project with its own migration tool (a small
//! sqlalchemy-migrate look-alike in Python), the SQL-files mode, every result line, several
//! datasets, the upgrade path, timeouts and cancellation. After every job: the seeds are
//! unchanged and no database file is left.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::gate::{example, example_world, JobRun, World, SQLITE_MIGRATE_PY};
use turbo_hipster_tests::DAEMON_ENV;

const V1_ITEMS: &str =
    "def upgrade(conn):\n    conn.execute('CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)')\n";
const V2_SLOW: &str = "import time\n\ndef upgrade(conn):\n    time.sleep(1.5)\n    conn.execute('ALTER TABLE items ADD COLUMN price INTEGER')\n";
const V2_FAST: &str =
    "def upgrade(conn):\n    conn.execute('ALTER TABLE items ADD COLUMN price INTEGER')\n";
const V3_BROKEN: &str =
    "def upgrade(conn):\n    conn.execute('ALTER TABLE no_such_table ADD COLUMN x INTEGER')\n";
const V3_HANGS: &str = "import time\n\ndef upgrade(conn):\n    time.sleep(1000)\n";

const TOOL_SEED: &str =
    "CREATE TABLE placeholder (id INTEGER);\nINSERT INTO placeholder VALUES (1);\n";

/// A tool-mode dataset for `project` with `extra` keys merged in.
fn tool_dataset(project: &str, extra: Value) -> Value {
    let mut config = json!({
        "project": project,
        "engine": "sqlite",
        "seed_data": "seed.sql",
        "migration": {
            "tool": ["python3", "tools/migrate.py", "{db_url}"],
            "log_format": "sqlalchemy-migrate",
        },
        "expected_version": {"highest_numbered": "versions"},
        "maximum_migration_times": {"default": 1},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// A world with project `shop/tool` (the tool and migration 001) and a tool dataset.
fn tool_world(extra: Value) -> World {
    tool_world_with(json!({}), extra)
}

/// [`tool_world`] with `job` merged into the job config.
fn tool_world_with(job: Value, extra: Value) -> World {
    let mut world = World::new(job);
    world.project(
        "shop/tool",
        &[
            ("tools/migrate.py", SQLITE_MIGRATE_PY),
            ("versions/001_items.py", V1_ITEMS),
        ],
    );
    world.dataset(
        "shop_tool",
        tool_dataset("shop/tool", extra),
        &[("seed.sql", TOOL_SEED)],
    );
    world
}

/// The job of a [`tool_world`] with `extra` on the change adding `migration` (path,
/// content); its result must be `result`. The world holds the results.
fn tool_run(extra: Value, migration: (&str, &str), result: &str) -> (World, JobRun) {
    let world = tool_world(extra);
    let change = world.propose("shop/tool", &[migration]);
    let run = world.run("shop/tool", &change);
    assert_eq!(run.result, result, "{}", run.describe());
    (world, run)
}

/// A world with only the tool on `shop/tool`'s master and its tool dataset `name` (`extra`
/// keys, `files`); the change adds migration 001, and the job's result must be `result`.
fn first_migration_run(name: &str, extra: Value, files: &[(&str, &str)], result: &str) {
    let mut world = World::new(json!({}));
    world.project("shop/tool", &[("tools/migrate.py", SQLITE_MIGRATE_PY)]);
    world.dataset(name, tool_dataset("shop/tool", extra), files);
    let change = world.propose("shop/tool", &[("versions/001_items.py", V1_ITEMS)]);
    let run = world.run("shop/tool", &change);
    assert_eq!(run.result, result, "{}", run.describe());
}

fn assert_log_line_format(log: &str) {
    let re = regex::Regex::new(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[[^\]]+\]( .*)?$").unwrap();
    for line in log.lines() {
        assert!(re.is_match(line), "not in the log format: {line:?}");
    }
}

#[test]
fn the_shipped_example_passes_on_sqlite() {
    // The shipped files as they are (example_world would write the config again).
    let mut world = World::new(json!({"engine": "sqlite"}));
    world.example_dataset("example");
    world.project_from("example/shop", &example().join("project"));
    let change = world.propose(
        "example/shop",
        &[(
            "migrations/004_add_loyalty_points.sql",
            "ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n\
             UPDATE customers SET loyalty_points = \
             (SELECT COUNT(*) FROM orders WHERE orders.customer_id = customers.id);\n",
        )],
    );
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    // The seed is at version 2: 001 and 002 are skipped, 003 and the change's 004 run.
    let migrations = run.migrations(0);
    let steps: Vec<(&str, &str, &str)> = migrations
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap(),
                m["to"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [("2", "3", "ok"), ("3", "4", "ok")]);
    assert_eq!(migrations[1]["description"], "add_loyalty_points");
    assert_eq!(migrations[0]["limit_seconds"], 10.0);
    let ds = &run.summary["datasets"][0];
    assert_eq!(ds["engine"], "sqlite");
    assert_eq!(ds["final_version"], "4");
    assert_eq!(ds["expected_version"], "4");
    assert_eq!(run.summary["schema"], 1);
    assert_eq!(run.summary["result"], "SUCCESS");
    assert_eq!(run.summary["project"], "example/shop");
    assert_eq!(run.summary["change"]["ZUUL_REF"], change.as_str());
    assert_eq!(run.summary["change"]["commit"].as_str().unwrap().len(), 40);
    let log = run.file("example.log");
    assert_log_line_format(&log);
    assert!(
        log.contains("[sql] 3 -> 4... 004_add_loyalty_points.sql"),
        "{log}"
    );
    let table = run.file("summary.txt");
    assert!(table.contains("3->4"), "{table}");
    assert!(table.contains("add_loyalty_points"), "{table}");
    assert!(table.trim_end().ends_with("SUCCESS"), "{table}");
    for file in ["git_prep.log", "task_output.log"] {
        assert!(!run.file(file).is_empty(), "{file} is empty");
    }
    assert!(run.file("task_output.log").contains("dataset example"));
    // The outcome's details carry the summary and its table.
    let job: Value = serde_json::from_str(&run.file("job.json")).unwrap();
    assert_eq!(job["details"]["schema"], 1);
    assert!(job["details"]["table"].as_str().unwrap().contains("3->4"));
}

#[test]
fn a_migration_slower_than_its_limit_warns() {
    let (_world, run) = tool_run(
        json!({}),
        ("versions/002_slow.py", V2_SLOW),
        "WARNING - Migration 1->2 took too long",
    );
    let m = run.migrations(0);
    assert_eq!(m.len(), 2, "{}", run.describe());
    assert_eq!(m[0]["status"], "ok");
    assert_eq!(m[1]["status"], "too_long");
    assert!(m[1]["duration_ms"].as_i64().unwrap() >= 1500, "{m:?}");
    assert_eq!(m[1]["limit_seconds"], 1.0);
    assert_eq!(
        m[1]["messages"],
        json!(["WARNING - Migration 1->2 took too long"])
    );
    assert_eq!(run.summary["datasets"][0]["final_version"], "2");
    assert_eq!(run.summary["datasets"][0]["expected_version"], "2");
    // Every line of the tool, stamped with the worker's own clock.
    let log = run.file("shop_tool.log");
    assert_log_line_format(&log);
    assert!(log.contains("[output] 1 -> 2... "), "{log}");
    assert!(log.contains("[output] Final schema version is 2"), "{log}");
    let table = run.file("summary.txt");
    assert!(table.contains("too_long"), "{table}");
}

#[test]
fn a_clean_tool_run_passes_and_a_fast_migration_does_not_warn() {
    let (_world, run) = tool_run(json!({}), ("versions/002_fast.py", V2_FAST), "SUCCESS");
    assert_eq!(run.migrations(0).len(), 2);
}

#[test]
fn a_migration_that_crashes_did_not_end() {
    let (_world, run) = tool_run(
        json!({}),
        ("versions/002_broken.py", V3_BROKEN),
        "FAILURE - Did not find the end of a migration after a start",
    );
    let m = run.migrations(0);
    assert_eq!(m.last().unwrap()["status"], "unfinished");
    assert_eq!(m.last().unwrap()["end"], Value::Null);
    assert!(run.file("shop_tool.log").contains("no_such_table"));
}

#[test]
fn a_hanging_migration_is_ended_by_the_timeout_and_cleaned_up() {
    let (_world, run) = tool_run(
        json!({"timeout": 2}),
        ("versions/002_hangs.py", V3_HANGS),
        "FAILURE - Did not find the end of a migration after a start",
    );
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);
    let log = run.file("shop_tool.log");
    assert!(log.contains("[timeout]"), "{log}");
    assert!(log.contains("dropped database"), "{log}");
    // World::finish checked that no database file is left.
}

#[test]
fn a_tool_that_cannot_import_fails_with_the_import_line() {
    tool_run(
        json!({
            "migration": {"tool": ["python3", "-c", "import nonexistent_module_xyz"]},
        }),
        ("versions/002_fast.py", V2_FAST),
        "FAILURE - Could not import required module.",
    );

    tool_run(
        json!({
            "migration": {"tool": ["/nonexistent/bin/nova-manage", "db", "sync"]},
        }),
        ("versions/002_fast.py", V2_FAST),
        "FAILURE - Could not import required module.",
    );
}

#[test]
fn a_failing_tool_reports_its_return_code() {
    tool_run(
        json!({
            "migration": {"tool": ["sh", "-c", "echo checking; exit 3"]},
        }),
        ("versions/002_fast.py", V2_FAST),
        "Return code from test script was non-zero (3)",
    );
}

#[test]
fn a_wrong_final_version_fails() {
    let (_world, run) = tool_run(
        json!({"expected_version": {"fixed": "7"}}),
        ("versions/002_fast.py", V2_FAST),
        "FAILURE - Final schema version does not match expectation",
    );
    assert_eq!(run.summary["datasets"][0]["final_version"], "2");
    assert_eq!(run.summary["datasets"][0]["expected_version"], "7");
}

#[test]
fn a_missing_seed_fails_with_the_original_line() {
    first_migration_run(
        "no_seed",
        json!({"seed_data": "missing.sql"}),
        &[],
        "FAILURE - Could not find seed database.",
    );
}

#[test]
fn a_seed_that_does_not_load_fails_with_the_original_line() {
    first_migration_run(
        "bad_seed",
        json!({}),
        &[("seed.sql", "CREATE TABLE broken (;\n")],
        "FAILURE - Could not setup seed database.",
    );
}

#[test]
fn a_broken_sql_file_did_not_end() {
    let world = example_world(Engine::Sqlite, json!({}), |_| {});
    let change = world.propose(
        "example/shop",
        &[(
            "migrations/004_broken.sql",
            "ALTER TABLE no_such_table ADD COLUMN x INTEGER;\n",
        )],
    );
    let run = world.run("example/shop", &change);
    assert_eq!(
        run.result,
        "FAILURE - Did not find the end of a migration after a start",
        "{}",
        run.describe()
    );
    let m = run.migrations(0);
    assert_eq!(m.len(), 2);
    assert_eq!(m[1]["to"], "4");
    assert_eq!(m[1]["status"], "unfinished");
    let log = run.file("example.log");
    assert!(log.contains("ERROR in 004_broken.sql"), "{log}");
}

#[test]
fn every_dataset_of_the_project_runs_and_lines_name_their_dataset() {
    let mut world = World::new(json!({"engine": "sqlite", "max_parallel_datasets": 2}));
    world.example_dataset("alpha");
    world.example_dataset("beta");
    // gamma: its seed is missing; other: another project's dataset, which must not run.
    let gamma = world.example_dataset("gamma");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(gamma.join("config.json")).unwrap()).unwrap();
    config["seed_data"] = json!("missing.sql");
    std::fs::write(gamma.join("config.json"), config.to_string()).unwrap();
    let other = world.example_dataset("other");
    config["project"] = json!("example/other");
    config["seed_data"] = json!("seed.sql");
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    world.project_from("example/shop", &example().join("project"));
    let change = world.propose(
        "example/shop",
        &[(
            "migrations/004_audit.sql",
            "CREATE TABLE audit (id INTEGER NOT NULL, note VARCHAR(20));\n",
        )],
    );
    let run = world.run("example/shop", &change);
    assert_eq!(
        run.result,
        "gamma: FAILURE - Could not find seed database.",
        "{}",
        run.describe()
    );
    let names: Vec<&str> = run.summary["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    for i in 0..2 {
        assert_eq!(run.migrations(i).len(), 2, "{}", run.describe());
        assert_eq!(run.summary["datasets"][i]["result_lines"], json!([]));
    }
    // Each run had a database of its own.
    let a = run.summary["datasets"][0]["database"].as_str().unwrap();
    let b = run.summary["datasets"][1]["database"].as_str().unwrap();
    assert_ne!(a, b);
    assert!(
        a.starts_with(&format!("example_shop_{}", &run.uuid[..8])),
        "{a}"
    );
    for log in ["alpha.log", "beta.log", "gamma.log"] {
        assert!(!run.file(log).is_empty());
    }
    assert!(!run.results.join("other.log").exists());
}

#[test]
fn a_project_without_a_dataset_fails_clearly() {
    let mut world = World::new(json!({"engine": "sqlite"}));
    world.example_dataset("example");
    world.project("nobody/here", &[("README", "x\n")]);
    let change = world.propose("nobody/here", &[("README", "y\n")]);
    let run = world.run("nobody/here", &change);
    assert_eq!(
        run.result,
        "FAILURE - No dataset found for project nobody/here",
        "{}",
        run.describe()
    );
}

#[test]
fn a_job_without_zuul_project_says_so() {
    let mut world = World::new(json!({"engine": "sqlite"}));
    world.example_dataset("example");
    let run = world.run("", "refs/zuul/master/Zx");
    assert_eq!(
        run.result,
        "FAILURE - No dataset found: the job has no ZUUL_PROJECT parameter (the project to test)",
        "{}",
        run.describe()
    );
}

#[test]
fn a_missing_ref_fails_the_checkout() {
    let world = example_world(Engine::Sqlite, json!({}), |_| {});
    let run = world.run("example/shop", "refs/zuul/master/Zmissing");
    assert!(
        run.result.starts_with(
            "FAILURE - could not prepare the git checkout: git fetch of refs/zuul/master/Zmissing"
        ),
        "{}",
        run.describe()
    );
    assert!(
        run.result.contains("couldn't find remote ref"),
        "{}",
        run.result
    );
    assert!(run.file("git_prep.log").contains("Zmissing"));
}

#[test]
fn an_old_dataset_is_upgraded_along_its_upgrade_path_first() {
    let mut world = World::new(json!({"engine": "sqlite"}));
    // The seed has no schema at all; the stable branch brings it to version 2, the change to 4.
    world.dataset(
        "old",
        json!({
            "project": "example/shop",
            "seed_data": "seed.sql",
            "migration": {"sql_dir": "migrations"},
            "upgrade_path": ["stable/old"],
            "maximum_migration_times": {"default": 30},
        }),
        &[("seed.sql", "CREATE TABLE legacy (id INTEGER);\n")],
    );
    let project = example().join("project/migrations");
    let read = |f: &str| std::fs::read_to_string(project.join(f)).unwrap();
    let (m1, m2, m3) = (
        read("001_create_customers.sql"),
        read("002_add_orders.sql"),
        read("003_index_orders.sql"),
    );
    let repo = world.project(
        "example/shop",
        &[
            ("migrations/001_create_customers.sql", &m1),
            ("migrations/002_add_orders.sql", &m2),
        ],
    );
    turbo_hipster_tests::git(&repo, &["branch", "stable/old"]);
    turbo_hipster_tests::gate::write_files(&repo, &[("migrations/003_index_orders.sql", &m3)]);
    turbo_hipster_tests::git(&repo, &["add", "-A"]);
    turbo_hipster_tests::git(&repo, &["commit", "-q", "-m", "003"]);
    let change = world.propose(
        "example/shop",
        &[("migrations/004_drop_legacy.sql", "DROP TABLE legacy;\n")],
    );
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let steps: Vec<(String, String, String)> = run
        .migrations(0)
        .iter()
        .map(|m| {
            (
                m["phase"].as_str().unwrap().to_string(),
                m["from"].as_str().unwrap().to_string(),
                m["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        steps,
        [
            s("stable/old", "base", "1"),
            s("stable/old", "1", "2"),
            s("change", "2", "3"),
            s("change", "3", "4"),
        ]
    );
    assert!(run.file("git_prep.log").contains("stable/old"));
}

#[test]
fn a_stopped_job_is_aborted_and_cleans_up() {
    let world = tool_world(json!({}));
    let change = world.propose("shop/tool", &[("versions/002_hangs.py", V3_HANGS)]);
    let child = world.spawn("shop/tool", &change, &[]);
    // Wait until the hanging migration has started, then interrupt run-job (as a Zuul stop
    // would cancel the job).
    let jobs = world.root.join("jobs");
    let started = std::time::Instant::now();
    loop {
        let found = find_file(&jobs, "shop_tool.log")
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .is_some_and(|log| log.contains("1 -> 2... "));
        if found {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the migration never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let run = world.finish(child);
    assert_eq!(run.result, "ABORTED", "{}", run.describe());
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);
    assert_eq!(run.summary["result"], "ABORTED");
    assert!(run.file("shop_tool.log").contains("dropped database"));
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if e.file_name() == name {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(found) = find_file(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn the_tool_gets_its_placeholders_templates_and_environment() {
    let mut world = World::new(json!({}));
    world.project("shop/tool", &[("README", "x\n")]);
    let ds_dir = world.dataset(
        "shop_tool",
        tool_dataset(
            "shop/tool",
            json!({
                "migration": {
                    "tool": [
                        "sh", "-c",
                        "echo \"name={db_name} host=[{db_host}] port=[{db_port}] user=[{db_user}] \
                         checkout={checkout} work={work_dir} ds={dataset_dir} pip=[{pip_cache}] \
                         url={db_url}\"; echo \"pwd=$(pwd)\"; cat {work_dir}/tool.conf; \
                         echo \"env=$TH_URL\"",
                    ],
                    "env": {"TH_URL": "{db_url}"},
                    "templates": {"tool.conf": "tool.conf.tmpl"},
                },
                "expected_version": "unchecked",
            }),
        ),
        &[
            ("seed.sql", TOOL_SEED),
            ("tool.conf.tmpl", "conf: db = {db_name}, keep {braces}\n"),
        ],
    );
    let change = world.propose("shop/tool", &[("README", "y\n")]);
    let run = world.run("shop/tool", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let db = run.summary["datasets"][0]["database"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        db.starts_with(&format!("shop_tool_{}_0", &run.uuid[..8])),
        "{db}"
    );
    let output: Vec<String> = run
        .file("shop_tool.log")
        .lines()
        .filter_map(|l| l.split_once(" [output] ").map(|(_, t)| t.to_string()))
        .collect();
    let first = &output[0];
    assert!(
        first.starts_with(&format!("name={db} host=[] port=[] user=[] checkout=/")),
        "{first}"
    );
    assert!(first.contains("/work/git/shop/tool work=/"), "{first}");
    assert!(
        first.contains(&format!("ds={} pip=[]", ds_dir.display())),
        "{first}"
    );
    assert!(first.contains("url=sqlite:////"), "{first}");
    assert!(first.ends_with(&format!("/{db}.sqlite")), "{first}");
    assert!(output[1].starts_with("pwd=/") && output[1].ends_with("/work/git/shop/tool"));
    assert_eq!(output[2], format!("conf: db = {db}, keep {{braces}}"));
    assert!(output[3].starts_with("env=sqlite:////"), "{}", output[3]);
}

#[test]
fn the_daemon_s_secrets_never_reach_the_tool_but_the_dataset_s_env_does() {
    for isolation in ["in-process", "process"] {
        let mut world = World::new(json!({"job_isolation": isolation}));
        world.project("shop/tool", &[("README", "x\n")]);
        world.dataset(
            "shop_tool",
            tool_dataset(
                "shop/tool",
                json!({
                    "migration": {
                        "tool": ["sh", "-c", "env | sort"],
                        // Configuration may set one on purpose.
                        "env": {"PGPASSWORD": "the-dataset-s-{db_name}"},
                    },
                    "expected_version": "unchecked",
                }),
            ),
            &[("seed.sql", TOOL_SEED)],
        );
        let change = world.propose("shop/tool", &[("README", "y\n")]);
        let run = world.run_with_env("shop/tool", &change, &[], &DAEMON_ENV);
        assert_eq!(run.result, "SUCCESS", "{isolation}: {}", run.describe());
        let db = run.summary["datasets"][0]["database"].as_str().unwrap();
        let env: Vec<String> = run
            .file("shop_tool.log")
            .lines()
            .filter_map(|l| l.split_once(" [output] ").map(|(_, t)| t.to_string()))
            .collect();
        assert!(
            env.contains(&"TH_TEST_ORDINARY=kept".to_string()),
            "{isolation}: the tool did not print its environment: {env:?}"
        );
        for (name, _) in &DAEMON_ENV[..7] {
            let set: Vec<&String> = env
                .iter()
                .filter(|l| l.starts_with(&format!("{name}=")))
                .collect();
            if *name == "PGPASSWORD" {
                assert_eq!(
                    set,
                    [&format!("PGPASSWORD=the-dataset-s-{db}")],
                    "{isolation}"
                );
            } else {
                assert!(
                    set.is_empty(),
                    "{isolation}: {name} reached the tool: {set:?}"
                );
            }
        }
        let leaked: Vec<&String> = env.iter().filter(|l| l.contains("daemon-leak")).collect();
        assert!(leaked.is_empty(), "{isolation}: {leaked:?}");
    }
}

/// `turbo-hipster check-config` on the world's config, with a Gearman server named (a config
/// without one is an error of its own): (success, stdout + stderr).
fn check_config(world: &World) -> (bool, String) {
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&world.config).unwrap()).unwrap();
    config["gearman_servers"] = json!(["127.0.0.1:4730"]);
    std::fs::write(&world.config, config.to_string()).unwrap();
    let out = std::process::Command::new(&turbo_hipster_tests::built().daemon)
        .arg("-c")
        .arg(&world.config)
        .arg("check-config")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The example dataset copied in as `name` with its `seed_data` set to `seed`; returns its
/// config file.
fn example_with_seed(world: &mut World, name: &str, seed: &str) -> std::path::PathBuf {
    let dir = world.example_dataset(name);
    world.edit_dataset(name, |c| c["seed_data"] = json!(seed));
    dir.join("config.json")
}

/// `seed_data` of `/etc/shadow`, directly or through `..`, is refused by check-config and by a
/// job, naming the dataset file and the key; a symlink placed in the dataset dir is the way
/// to use a seed kept elsewhere.
#[test]
fn a_seed_outside_the_dataset_dir_is_refused() {
    let mut world = World::new(json!({"engine": "sqlite"}));
    let absolute = example_with_seed(&mut world, "absolute", "/etc/shadow");
    let dotdot = example_with_seed(&mut world, "dotdot", "../../../../../../../../etc/shadow");
    let linked = world.example_dataset("linked");
    let elsewhere = world.root.join("elsewhere.sql");
    std::fs::rename(linked.join("seed.sql"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("seed.sql")).unwrap();
    let (ok, text) = check_config(&world);
    assert!(!ok, "{text}");
    for file in [&absolute, &dotdot] {
        let needle = format!(
            "{}: seed_data: must name a file in the dataset's directory",
            file.display()
        );
        assert!(text.contains(&needle), "{needle}\n{text}");
    }
    assert!(!text.contains("linked/config.json"), "{text}");

    world.project_from("example/shop", &example().join("project"));
    let change = world.propose(
        "example/shop",
        &[("migrations/004_x.sql", "CREATE TABLE x (id INTEGER);\n")],
    );
    // run-job refuses the job with the same errors (through Gearman, a daemon that already
    // serves the job fails the build: tests/tests/gate_through_gearman.rs).
    let (child, _, _) = world.spawn("example/shop", &change, &[]);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let needle = format!("{}: seed_data: must name a file", dotdot.display());
    assert!(text.contains(&needle), "{text}");

    // With the bad ones mended, every dataset runs, the linked seed too.
    for (file, name) in [(&absolute, "absolute"), (&dotdot, "dotdot")] {
        let text = std::fs::read_to_string(file).unwrap();
        let mut config: Value = serde_json::from_str(&text).unwrap();
        config["seed_data"] = json!("seed.sql");
        std::fs::write(file, config.to_string()).unwrap();
        assert!(file.ends_with(format!("{name}/config.json")));
    }
    let (ok, text) = check_config(&world);
    assert!(ok, "{text}");
    let run = world.run("example/shop", &change);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
}

/// check-config reports a seed a job would not find or not read; the job itself keeps the
/// original's line.
#[test]
fn check_config_reports_seeds_a_job_would_not_find() {
    let mut world = World::new(json!({"engine": "sqlite"}));
    let missing = example_with_seed(&mut world, "missing", "nowhere.sql");
    let directory = example_with_seed(&mut world, "directory", "adir");
    std::fs::create_dir(directory.parent().unwrap().join("adir")).unwrap();
    let dangling = example_with_seed(&mut world, "dangling", "link.sql");
    std::os::unix::fs::symlink(
        "/nonexistent/seed.sql",
        dangling.parent().unwrap().join("link.sql"),
    )
    .unwrap();
    let (ok, text) = check_config(&world);
    assert!(!ok, "{text}");
    let dir_of = |p: &std::path::Path| p.parent().unwrap().to_path_buf();
    for needle in [
        format!(
            "{}: seed_data: {} does not exist",
            missing.display(),
            dir_of(&missing).join("nowhere.sql").display()
        ),
        format!(
            "{}: seed_data: {} is not a regular file",
            directory.display(),
            dir_of(&directory).join("adir").display()
        ),
        format!(
            "{}: seed_data: {} does not exist",
            dangling.display(),
            dir_of(&dangling).join("link.sql").display()
        ),
    ] {
        assert!(text.contains(&needle), "{needle}\n{text}");
    }
}

#[test]
fn check_config_validates_every_dataset() {
    let mut world = World::new(json!({"engine": "sqlite"}));
    world.example_dataset("example");
    let (ok, text) = check_config(&world);
    assert!(ok, "{text}");
    world.dataset(
        "broken",
        json!({"seed_data": "seed.sql", "maximum_migration_times": {"no_default": 1}}),
        &[],
    );
    let (ok, text) = check_config(&world);
    assert!(!ok, "{text}");
    assert!(text.contains("broken/config.json"), "{text}");
    assert!(text.contains("project"), "{text}");
    assert!(text.contains("default"), "{text}");
}

#[test]
fn the_tool_gets_only_allowed_parameters_and_runs_contained() {
    let world = tool_world_with(
        json!({"pass_parameters": ["MY_VAR"]}),
        json!({"migration": {
            "tool": [
                "sh", "-c",
                "echo \"env: project=$ZUUL_PROJECT bash_env=${BASH_ENV-unset} \
                 ld=${LD_PRELOAD-unset} mine=${MY_VAR-unset} other=${OTHER-unset} \
                 uid=$(id -u)\"; exec python3 tools/migrate.py \"$0\"",
                "{db_url}"
            ],
            "log_format": "sqlalchemy-migrate",
        }}),
    );
    let change = world.propose("shop/tool", &[("versions/002_price.py", V2_FAST)]);
    let run = world.run_with(
        "shop/tool",
        &change,
        &[
            ("BASH_ENV", "/nonexistent/evil.sh"),
            ("LD_PRELOAD", "/nonexistent/evil.so"),
            ("MY_VAR", "mine"),
            ("OTHER", "x"),
        ],
    );
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let uid = if nix::unistd::Uid::effective().is_root() {
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .unwrap()
            .uid
            .to_string()
    } else {
        nix::unistd::Uid::effective().to_string()
    };
    let log = run.file("shop_tool.log");
    assert!(
        log.contains(&format!(
            "env: project=shop/tool bash_env=unset ld=unset mine=mine other=unset uid={uid}"
        )),
        "{log}"
    );
}

/// A tool the contained user cannot run (a venv whose python lies behind a directory only
/// root may enter: pyenv under /root) is the worker's set-up, not the change's fault: said
/// before the seed is loaded, as an infrastructure result naming the directory.
#[test]
fn a_tool_the_contained_user_cannot_run_is_an_infrastructure_error_before_the_seed() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: containment switches users only under root");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mut world = World::new(json!({}));
    world.project(
        "shop/venv",
        &[
            ("tools/migrate.py", SQLITE_MIGRATE_PY),
            ("versions/001_items.py", V1_ITEMS),
        ],
    );
    // venv/bin/python3 → private/python3, private being root's alone.
    let private = world.root.join("private");
    let bin = world.root.join("venv/bin");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/sh", private.join("python3")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(private.join("python3"), bin.join("python3")).unwrap();
    let tool = bin.join("migrate");
    std::fs::write(
        &tool,
        format!("#!{}\necho never\n", bin.join("python3").display()),
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    world.dataset(
        "shop_venv",
        tool_dataset(
            "shop/venv",
            json!({"migration": {"tool": [tool.to_str().unwrap(), "{db_url}"]}}),
        ),
        &[("seed.sql", TOOL_SEED)],
    );
    let change = world.propose("shop/venv", &[("versions/002_price.py", V2_FAST)]);
    let run = world.run("shop/venv", &change);
    assert!(
        run.result
            .starts_with("ERROR - infrastructure: containment: nobody cannot reach"),
        "{}",
        run.describe()
    );
    assert!(
        run.result.contains("its interpreter") && run.result.contains("private has mode 700"),
        "{}",
        run.describe()
    );
    let log = run.file("shop_venv.log");
    assert!(
        !log.contains("created by"),
        "the seed was loaded first:\n{log}"
    );
    assert!(!log.contains("never"), "{log}");
}

/// Samples of `migration` of dataset `shop_tool`, as earlier runs would have left them.
fn seeded(migration: &str, ms: i64, i: usize) -> th_history::Sample {
    th_history::Sample {
        dataset: "shop_tool".into(),
        engine: "sqlite".into(),
        migration: migration.into(),
        phase: "change".into(),
        started: format!("2026-01-0{} 00:00:00,000", i + 1),
        duration_ms: Some(ms),
        status: "ok".into(),
        limit_seconds: Some(60.0),
        commit: format!("seed{i}"),
        job: format!("seed-{i}"),
        counters: Default::default(),
        locks: json!([]),
        dataset_config: String::new(),
    }
}

/// The regression warning in a real job: the history (the daemon's default SQLite file) is
/// seeded with three earlier runs of `1->2` at about 100 ms; the change's 1->2 sleeps 1.5 s,
/// far over 3 × the median, within its time limit. The job's own migrations are recorded by
/// the daemon afterwards; a next run at the usual speed does not warn.
#[test]
fn a_migration_much_slower_than_its_history_warns() {
    let world = tool_world_with(
        json!({"regression_min_samples": 3}),
        json!({"maximum_migration_times": {"default": 60}}),
    );
    let config = world.datasets.join("shop_tool");
    let history = th_history::HistoryDb::new(th_history::Location::Sqlite(
        world.root.join("jobs").join(th_history::DEFAULT_FILE),
    ));
    let earlier: Vec<_> = [100, 120, 90]
        .iter()
        .enumerate()
        .map(|(i, ms)| seeded("1->2", *ms, i))
        .collect();
    history.record(&earlier).unwrap();

    let slow = world.propose("shop/tool", &[("versions/002_slow.py", V2_SLOW)]);
    let run = world.run("shop/tool", &slow);
    let m = run.migrations(0);
    let ms = m[1]["duration_ms"].as_i64().unwrap();
    assert!(ms >= 1500, "{}", run.describe());
    // 1->2 against the median of 90, 100, 120.
    let line = format!(
        "WARNING - Migration 1->2 took {:.1}× longer than usual ({ms} ms vs median 100 ms)",
        ms as f64 / 100.0
    );
    assert_eq!(run.result, line, "{}", run.describe());
    assert_eq!(m[1]["status"], "ok");
    assert_eq!(m[1]["messages"], json!([line]));
    // 0->1 has no history: no judgement.
    assert_eq!(m[0]["messages"], json!([]));

    // The daemon recorded the run: both migrations, with the commit, engine and config.
    let samples = history.samples("shop_tool").unwrap();
    let recorded: Vec<_> = samples.iter().filter(|s| s.job == run.uuid).collect();
    assert_eq!(recorded.len(), 2, "{samples:?}");
    assert_eq!(recorded[1].migration, "1->2");
    assert_eq!(recorded[1].duration_ms, Some(ms));
    assert_eq!(recorded[1].engine, "sqlite");
    assert_eq!(
        recorded[1].commit,
        run.summary["change"]["commit"].as_str().unwrap()
    );
    assert_eq!(
        recorded[1].dataset_config,
        config.join("config.json").display().to_string()
    );
    assert_eq!(recorded[1].limit_seconds, Some(60.0));

    // The dataset's trends page, published with the logs: the three earlier runs and this
    // one of 1->2 (four points), this run of 0->1, each limit a dashed line.
    let page = run.file("trends-shop_tool.html");
    assert_eq!(page.matches("<svg").count(), 2, "{page}");
    assert_eq!(page.matches("class=\"run\"").count(), 5, "{page}");
    assert_eq!(page.matches("class=\"limit\"").count(), 2, "{page}");
    assert!(page.contains(&format!("{ms} ms (")), "{page}");
    let job: Value = serde_json::from_str(&run.file("job.json")).unwrap();
    assert!(
        job["details"]["logs"]
            .as_array()
            .unwrap()
            .contains(&json!("trends-shop_tool.html")),
        "{job}"
    );
    // The job's report page links it.
    let report = run.file("index.html");
    assert!(
        report.contains("href=\"trends-shop_tool.html\""),
        "{report}"
    );

    // At the usual speed (the median is now 110 ms): no warning.
    let fast = world.propose("shop/tool", &[("versions/002_fast.py", V2_FAST)]);
    let run = world.run("shop/tool", &fast);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    assert_eq!(history.stats("shop_tool").unwrap()[0].1.count, 5);
}
