//! End to end with an alembic tree laid out as OpenStack projects lay it out (neutron,
//! keystone): a base revision in `alembic/versions/`, then per-release subfolders
//! `versions/2024.1/expand/…` and `versions/2024.1/contract/…` with the branch labels `expand`
//! and `contract`, the contract revision depending on the expand one (`depends_on`), alembic
//! told to read subfolders (`recursive_version_locations = true`), the tool `alembic upgrade
//! heads`. The change adds a revision in a new nested folder. The expected version is read
//! from the scripts (`alembic_heads`) or printed by `alembic heads` (`command`), and compared
//! as a set with the rows of `alembic_version`. On PostgreSQL and MariaDB, with the test venv
//! of `scripts/setup-test-env.sh`, through `turbo-hipster run-job`.
#![allow(clippy::unwrap_used)]

use gate_real_db_upgrade::dataset::Engine;
use serde_json::{json, Value};
use turbo_hipster_tests::gate::{
    alembic_ini, assert_no_databases, require, venv, JobRun, World, ALEMBIC_ENV_PY,
};

const BASE: &str = "a0b1c2d3e4f5";
const EXPAND_1: &str = "e1e1e1e1e1e1";
const CONTRACT_1: &str = "c1c1c1c1c1c1";
const EXPAND_2: &str = "e2e2e2e2e2e2";
const CONTRACT_2: &str = "c2c2c2c2c2c2";

/// The classic form of alembic's template: `revision = '…'`, single quotes.
fn classic(rev: &str, down: &str, labels: &str, depends: &str, upgrade: &str) -> String {
    format!(
        "\"\"\"revision {rev}\n\nRevision ID: {rev}\nRevises: {down}\n\"\"\"\n\
         from alembic import op\nimport sqlalchemy as sa\n\n\
         # revision identifiers, used by Alembic.\n\
         revision = '{rev}'\ndown_revision = {down}\nbranch_labels = {labels}\ndepends_on = {depends}\n\n\n\
         def upgrade():\n{upgrade}\n\n\ndef downgrade():\n    pass\n"
    )
}

/// The typed form of newer templates, double quotes.
fn typed(rev: &str, down: &str, labels: &str, depends: &str, upgrade: &str) -> String {
    format!(
        "\"\"\"revision {rev}\n\nRevision ID: {rev}\n\"\"\"\n\
         from typing import Sequence, Union\n\nfrom alembic import op\nimport sqlalchemy as sa\n\n\
         revision: str = \"{rev}\"\n\
         down_revision: Union[str, Sequence[str], None] = {down}\n\
         branch_labels: Union[str, Sequence[str], None] = {labels}\n\
         depends_on: Union[str, Sequence[str], None] = {depends}\n\n\n\
         def upgrade() -> None:\n{upgrade}\n\n\ndef downgrade() -> None:\n    pass\n"
    )
}

/// How a dataset tells the expected version.
enum Expect {
    /// Read from the scripts.
    Files,
    /// Printed by `alembic heads`.
    Command,
}

/// Project `acme/net` with the base, expand 1 and contract 1 (depending on expand 1) on
/// master; a dataset running `alembic upgrade <target>`.
fn tree_world(engine: Engine, target: &str, expect: &Expect) -> World {
    require(engine);
    let venv = venv();
    let alembic = venv.join("bin/alembic");
    let mut world = World::new(json!({}));
    let expected_version = match expect {
        Expect::Files => json!({"alembic_heads": "alembic/versions"}),
        Expect::Command => json!({"command": [
            alembic, "-c", "{work_dir}/alembic.ini", "heads"
        ]}),
    };
    world.dataset(
        "net",
        json!({
            "project": "acme/net",
            "engine": engine.name(),
            "database": "acme_net",
            "seed_data": "seed.sql",
            "migration": {
                "tool": [alembic, "-c", "{work_dir}/alembic.ini", "upgrade", target],
                "templates": {"alembic.ini": "alembic.ini.tmpl"},
                "log_format": "alembic",
            },
            "expected_version": expected_version,
            "maximum_migration_times": {"default": 60},
        }),
        &[
            (
                "seed.sql",
                "CREATE TABLE legacy (id INTEGER NOT NULL, note VARCHAR(20));\n\
                 INSERT INTO legacy VALUES (1, 'x');\n",
            ),
            (
                "alembic.ini.tmpl",
                &alembic_ini("recursive_version_locations = true\n"),
            ),
        ],
    );
    let base = classic(
        BASE,
        "None",
        "None",
        "None",
        "    op.create_table('ports', sa.Column('id', sa.Integer, primary_key=True))",
    );
    let expand_1 = typed(
        EXPAND_1,
        &format!("\"{BASE}\""),
        "(\"expand\",)",
        "None",
        "    op.add_column('ports', sa.Column('name', sa.String(50)))",
    );
    let contract_1 = classic(
        CONTRACT_1,
        &format!("'{BASE}'"),
        "('contract',)",
        &format!("('{EXPAND_1}',)"),
        "    op.drop_column('legacy', 'note')",
    );
    world.project(
        "acme/net",
        &[
            ("alembic/env.py", ALEMBIC_ENV_PY),
            ("alembic/versions/__init__.py", ""),
            ("alembic/versions/a0b1c2d3e4f5_initial.py", &base),
            (
                "alembic/versions/2024.1/expand/e1e1e1e1e1e1_port_name.py",
                &expand_1,
            ),
            (
                "alembic/versions/2024.1/contract/c1c1c1c1c1c1_drop_note.py",
                &contract_1,
            ),
            ("alembic/versions/EXPAND_HEAD", &format!("{EXPAND_1}\n")),
        ],
    );
    world
}

/// The change: expand 2 in a new release folder; with `contract_too`, contract 2 depending on
/// it as well.
fn propose(world: &World, engine: Engine, contract_too: bool) -> JobRun {
    let expand_2 = classic(
        EXPAND_2,
        &format!("'{EXPAND_1}'"),
        "None",
        "None",
        "    op.create_index('ports_name', 'ports', ['name'])",
    );
    let contract_2 = typed(
        CONTRACT_2,
        &format!("\"{CONTRACT_1}\""),
        "None",
        &format!("(\"{EXPAND_2}\",)"),
        "    op.drop_table('legacy')",
    );
    let mut files = vec![(
        "alembic/versions/2024.2/expand/e2e2e2e2e2e2_index_port_name.py",
        expand_2.as_str(),
    )];
    if contract_too {
        files.push((
            "alembic/versions/2024.2/contract/c2c2c2c2c2c2_drop_legacy.py",
            contract_2.as_str(),
        ));
    }
    let change = world.propose("acme/net", &files);
    let run = world.run("acme/net", &change);
    assert_no_databases(engine, "acme_net", &run.uuid);
    run
}

fn heads(a: &str, b: &str) -> String {
    let mut v = [a, b];
    v.sort_unstable();
    v.join(",")
}

/// Two heads at the end: contract 1 and expand 2 (expand 1 is merged away by contract 1's
/// `depends_on`, then expand 2 comes on top of it).
fn two_heads_pass(engine: Engine, expect: &Expect) {
    let world = tree_world(engine, "heads", expect);
    let run = propose(&world, engine, false);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let ds = &run.summary["datasets"][0];
    let both = heads(CONTRACT_1, EXPAND_2);
    assert_eq!(
        ds["final_version"],
        Value::from(both.clone()),
        "{}",
        run.describe()
    );
    assert_eq!(
        ds["expected_version"],
        Value::from(both),
        "{}",
        run.describe()
    );
    // Alembic's order between the branches is its own: compared as a set.
    let mut steps: Vec<String> = run
        .migrations(0)
        .iter()
        .map(|m| {
            format!(
                "{}->{}",
                m["from"].as_str().unwrap(),
                m["to"].as_str().unwrap()
            )
        })
        .collect();
    steps.sort();
    let mut want = [
        format!("base->{BASE}"),
        format!("{BASE}->{EXPAND_1}"),
        format!("{BASE}->{CONTRACT_1}"),
        format!("{EXPAND_1}->{EXPAND_2}"),
    ];
    want.sort();
    assert_eq!(steps, want, "{}", run.describe());
    let log = run.file("net.log");
    match expect {
        Expect::Files => {
            assert!(
                log.contains(&format!(
                    "alembic scripts: 4 revisions in alembic/versions and subfolders; heads: \
                     {CONTRACT_1}, {EXPAND_2}"
                )),
                "{log}"
            );
            // `__init__.py`, `EXPAND_HEAD` and the `__pycache__` alembic left are no scripts.
            assert!(!log.contains("skipped"), "{log}");
        }
        Expect::Command => {
            assert!(
                log.contains(&format!("[heads] {CONTRACT_1} (contract) (head)"))
                    && log.contains(&format!("[heads] {EXPAND_2} (expand) (head)")),
                "{log}"
            );
            assert!(
                log.contains(&format!("heads command: heads {CONTRACT_1}, {EXPAND_2}")),
                "{log}"
            );
        }
    }
}

#[test]
fn postgresql_two_heads_in_nested_folders_read_from_the_scripts() {
    two_heads_pass(Engine::PostgreSql, &Expect::Files);
}

#[test]
fn mariadb_two_heads_in_nested_folders_read_from_the_scripts() {
    two_heads_pass(Engine::MariaDb, &Expect::Files);
}

#[test]
fn postgresql_two_heads_in_nested_folders_printed_by_alembic_heads() {
    two_heads_pass(Engine::PostgreSql, &Expect::Command);
}

#[test]
fn mariadb_two_heads_in_nested_folders_printed_by_alembic_heads() {
    two_heads_pass(Engine::MariaDb, &Expect::Command);
}

/// Contract 2 depends on expand 2: `alembic heads` calls expand 2 an "(effective head)", but
/// applying contract 2 merges it away; `alembic_version` holds contract 2 only, and so does
/// the expectation, either way.
fn a_dependency_merges_a_head(engine: Engine, expect: &Expect) {
    let world = tree_world(engine, "heads", expect);
    let run = propose(&world, engine, true);
    assert_eq!(run.result, "SUCCESS", "{}", run.describe());
    let ds = &run.summary["datasets"][0];
    assert_eq!(ds["final_version"], CONTRACT_2, "{}", run.describe());
    assert_eq!(ds["expected_version"], CONTRACT_2, "{}", run.describe());
    if let Expect::Command = expect {
        let log = run.file("net.log");
        assert!(
            log.contains(&format!("[heads] {EXPAND_2} (expand) (effective head)"))
                && log.contains(&format!(
                    "heads command: {EXPAND_2} is an effective head (another revision \
                     depends on it): not in alembic_version after `upgrade heads`, left out"
                )),
            "{log}"
        );
    }
}

#[test]
fn postgresql_a_dependency_merges_a_head_printed_by_alembic_heads() {
    a_dependency_merges_a_head(Engine::PostgreSql, &Expect::Command);
}

#[test]
fn mariadb_a_dependency_merges_a_head_read_from_the_scripts() {
    a_dependency_merges_a_head(Engine::MariaDb, &Expect::Files);
}

/// The tool upgrades only the contract branch: expand 2 is not applied, the database has one
/// head of the two expected, and the log names both sets.
fn a_missing_head_fails(engine: Engine, expect: &Expect) {
    let world = tree_world(engine, "contract@head", expect);
    let run = propose(&world, engine, false);
    assert_eq!(
        run.result,
        "FAILURE - Final schema version does not match expectation",
        "{}",
        run.describe()
    );
    let log = run.file("net.log");
    assert!(
        log.contains(&format!(
            "schema version mismatch: the database has {{{CONTRACT_1}}}, expected \
             {{{CONTRACT_1}, {EXPAND_2}}}; expected but not in the database: {{{EXPAND_2}}}; \
             in the database but not expected: {{}}"
        )),
        "{log}"
    );
}

#[test]
fn mariadb_a_missing_head_fails_naming_both_sets() {
    a_missing_head_fails(Engine::MariaDb, &Expect::Files);
}

#[test]
fn postgresql_a_missing_head_fails_naming_both_sets() {
    a_missing_head_fails(Engine::PostgreSql, &Expect::Command);
}
