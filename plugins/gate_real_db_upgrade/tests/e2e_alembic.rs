//! End to end with real alembic, the way OpenStack projects run it: the project has
//! `alembic/env.py` and `alembic/versions/*.py`; the dataset has an `alembic.ini.tmpl` with
//! `sqlalchemy.url = {db_url}` that the plugin renders into the run's work dir; the tool is
//! `<venv>/bin/alembic -c {work_dir}/alembic.ini upgrade head`, its output read in alembic's
//! format, and the final version checked against the head revision of the checkout. On
//! PostgreSQL and MariaDB, with the test venv of `scripts/setup-test-env.sh`.
#![allow(clippy::unwrap_used)]

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::gate::{
    alembic_ini, assert_no_databases, require, venv, JobRun, World, ALEMBIC_ENV_PY,
};

const REV_A: &str = "1a2b3c4d5e6f";
const REV_B: &str = "2b3c4d5e6f70";
const REV_C: &str = "3c4d5e6f7081";

fn revision(rev: &str, down: Option<&str>, message: &str, upgrade: &str) -> String {
    format!(
        "\"\"\"{message}\n\nRevision ID: {rev}\nRevises: {}\n\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\n\
         revision = '{rev}'\ndown_revision = {}\nbranch_labels = None\ndepends_on = None\n\n\n\
         def upgrade():\n{upgrade}\n\n\ndef downgrade():\n    pass\n",
        down.unwrap_or(""),
        down.map_or_else(|| "None".to_string(), |d| format!("'{d}'")),
    )
}

/// Project `acme/api` with revisions A and B on master and a dataset running alembic.
fn alembic_world(engine: Engine, limits: Value) -> World {
    alembic_world_in(engine, limits, json!({}), Value::Null)
}

/// [`alembic_world`] with extra job configuration and the dataset's `connection`.
fn alembic_world_in(engine: Engine, limits: Value, job: Value, connection: Value) -> World {
    require(engine);
    let venv = venv();
    let mut world = World::new(job);
    let mut dataset = json!({
        "project": "acme/api",
        "engine": engine.name(),
        "database": "acme_api",
        "seed_data": "seed.sql",
        "migration": {
            "tool": [
                venv.join("bin/alembic"),
                "-c", "{work_dir}/alembic.ini", "upgrade", "head"
            ],
            "templates": {"alembic.ini": "alembic.ini.tmpl"},
            "log_format": "alembic",
        },
        "expected_version": {"alembic_heads": "alembic/versions"},
        "maximum_migration_times": limits,
    });
    if !connection.is_null() {
        dataset["connection"] = connection;
    }
    world.dataset(
        "api",
        dataset,
        &[
            (
                "seed.sql",
                "CREATE TABLE legacy (id INTEGER NOT NULL);\nINSERT INTO legacy VALUES (1);\n",
            ),
            ("alembic.ini.tmpl", &alembic_ini("")),
        ],
    );
    let rev_a = revision(
        REV_A,
        None,
        "create users",
        "    op.create_table('users', sa.Column('id', sa.Integer, primary_key=True), \
         sa.Column('name', sa.String(50), nullable=False))",
    );
    let rev_b = revision(
        REV_B,
        Some(REV_A),
        "add email",
        "    op.add_column('users', sa.Column('email', sa.String(100)))",
    );
    world.project(
        "acme/api",
        &[
            ("alembic/env.py", ALEMBIC_ENV_PY),
            ("alembic/versions/1a2b3c4d5e6f_create_users.py", &rev_a),
            ("alembic/versions/2b3c4d5e6f70_add_email.py", &rev_b),
        ],
    );
    world
}

fn propose_c(world: &World, engine: Engine, upgrade: &str) -> JobRun {
    let rev_c = revision(REV_C, Some(REV_B), "index email", upgrade);
    let change = world.propose(
        "acme/api",
        &[("alembic/versions/3c4d5e6f7081_index_email.py", &rev_c)],
    );
    let run = world.run("acme/api", &change);
    assert_no_databases(engine, "acme_api", &run.uuid);
    run
}

fn a_good_alembic_change_passes(engine: Engine) {
    let world = alembic_world(engine, json!({"default": 60}));
    let run = propose_c(
        &world,
        engine,
        "    op.create_index('users_email', 'users', ['email'])",
    );
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let steps: Vec<(&str, &str, &str)> = run
        .migrations(0)
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap(),
                m["to"].as_str().unwrap(),
                m["description"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("base", REV_A, "create users"),
            (REV_A, REV_B, "add email"),
            (REV_B, REV_C, "index email"),
        ],
        "{}",
        run.describe()
    );
    let ds = &run.summary["datasets"][0];
    assert_eq!(ds["final_version"], REV_C);
    assert_eq!(ds["expected_version"], REV_C);
    let log = run.file("api.log");
    assert!(
        log.contains("Running upgrade 2b3c4d5e6f70 -> 3c4d5e6f7081, index email"),
        "{log}"
    );
    // The rendered config went to the work dir, not to the log or the dataset.
    assert!(log.contains("rendered"), "{log}");
}

#[test]
fn postgresql_alembic_change_passes() {
    a_good_alembic_change_passes(Engine::PostgreSql);
}

#[test]
fn mariadb_alembic_change_passes() {
    a_good_alembic_change_passes(Engine::MariaDb);
}

#[test]
fn postgresql_slow_alembic_revision_warns() {
    let engine = Engine::PostgreSql;
    let world = alembic_world(
        engine,
        json!({"default": 60, "2b3c4d5e6f70->3c4d5e6f7081": 1}),
    );
    let run = propose_c(
        &world,
        engine,
        "    op.execute('SELECT pg_sleep(2)')\n    op.create_index('users_email', 'users', ['email'])",
    );
    assert_eq!(
        run.result,
        "WARNING - Migration 2b3c4d5e6f70->3c4d5e6f7081 took too long",
        "{}",
        run.describe()
    );
    let m = run.migrations(0);
    assert_eq!(m[2]["status"], "too_long");
    assert_eq!(m[2]["limit_seconds"], 1.0);
}

#[test]
fn mariadb_broken_alembic_revision_did_not_end() {
    let engine = Engine::MariaDb;
    let world = alembic_world(engine, json!({"default": 60}));
    let run = propose_c(
        &world,
        engine,
        "    op.create_index('users_email', 'no_such_table', ['email'])",
    );
    assert_eq!(
        run.result,
        "FAILURE - Did not find the end of a migration after a start",
        "{}",
        run.describe()
    );
    assert!(run.file("api.log").contains("no_such_table"));
}

/// The tool runs as nobody in a network namespace of its own (only loopback) and reaches the
/// server through its unix socket, as the original did.
fn through_the_socket_in_a_network_namespace(engine: Engine, socket: &str) {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: a network namespace needs root");
        return;
    }
    let world = alembic_world_in(
        engine,
        json!({"default": 60}),
        json!({"containment": {"network_namespace": true}}),
        json!({"socket": socket}),
    );
    let run = propose_c(
        &world,
        engine,
        "    op.create_index('users_email', 'users', ['email'])",
    );
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let log = run.file("api.log");
    assert!(
        log.contains(
            "the migration tool runs as nobody (uid 65534), memory 4096 MiB, processes 512"
        ) && log.contains("own network namespace (loopback only)"),
        "{log}"
    );
    assert!(
        log.contains("Running upgrade 2b3c4d5e6f70 -> 3c4d5e6f7081, index email"),
        "{log}"
    );
}

#[test]
fn mariadb_alembic_through_the_socket_in_a_network_namespace() {
    through_the_socket_in_a_network_namespace(Engine::MariaDb, "/run/mysqld/mysqld.sock");
}

#[test]
fn postgresql_alembic_through_the_socket_in_a_network_namespace() {
    through_the_socket_in_a_network_namespace(Engine::PostgreSql, "/var/run/postgresql");
}

#[test]
fn a_tcp_connection_with_a_network_namespace_is_a_config_error() {
    let world = alembic_world_in(
        Engine::MariaDb,
        json!({"default": 60}),
        json!({"containment": {"network_namespace": true}}),
        json!({"host": "127.0.0.1", "port": 3306}),
    );
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
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("connection.socket: required with containment.network_namespace"),
        "{text}"
    );
}
