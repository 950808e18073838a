//! The dataset keys for alembic trees: `expected_version.alembic_heads` as a folder, a list
//! of folders or `{"version_locations", "recursive"}`, and `expected_version.command`; and
//! every mistake in them reported at once, one line each.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gate_real_db_upgrade::alembic::AlembicTree;
use gate_real_db_upgrade::dataset::{load_datasets, load_datasets_with_warnings, DatasetDefaults};
use gate_real_db_upgrade::version::ExpectedVersion;
use serde_json::{json, Value};

fn write_dataset(dir: &Path, name: &str, extra: Value) -> PathBuf {
    let mut v = json!({
        "project": "acme/app",
        "seed_data": "seed.sql",
        "migration": {"tool": ["alembic", "upgrade", "heads"], "log_format": "alembic"},
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    path
}

#[test]
fn alembic_heads_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let forms = [
        json!("db/versions"),
        json!(["db/versions", "plugins/db/versions"]),
        json!({"version_locations": "db/versions", "recursive": false}),
        json!({"version_locations": ["db/versions", "x"], "_comment": "both"}),
    ];
    for (i, form) in forms.iter().enumerate() {
        write_dataset(
            root,
            &format!("d{i}"),
            json!({"expected_version": {"alembic_heads": form}}),
        );
    }
    write_dataset(
        root,
        "d4",
        json!({"expected_version": {"command": ["{checkout}/.venv/bin/alembic", "-c", "{work_dir}/alembic.ini", "heads"]}}),
    );
    let (d, warnings) = load_datasets_with_warnings(root, &DatasetDefaults::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let tree = |locations: &[&str], recursive| {
        ExpectedVersion::AlembicHeads(AlembicTree {
            locations: locations.iter().map(PathBuf::from).collect(),
            recursive,
        })
    };
    assert_eq!(d[0].expected_version, tree(&["db/versions"], true));
    assert_eq!(
        d[1].expected_version,
        tree(&["db/versions", "plugins/db/versions"], true)
    );
    assert_eq!(d[2].expected_version, tree(&["db/versions"], false));
    assert_eq!(d[3].expected_version, tree(&["db/versions", "x"], true));
    assert_eq!(
        d[4].expected_version,
        ExpectedVersion::Command(vec![
            "{checkout}/.venv/bin/alembic".into(),
            "-c".into(),
            "{work_dir}/alembic.ini".into(),
            "heads".into()
        ])
    );
}

#[test]
fn alembic_keys_mistakes_all_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = write_dataset(
        root,
        "a",
        json!({"expected_version": {"alembic_heads": ["ok", "../out", 3]}}),
    );
    let b = write_dataset(
        root,
        "b",
        json!({"expected_version": {"alembic_heads": {"recursive": "yes"}}}),
    );
    let c = write_dataset(
        root,
        "c",
        json!({"expected_version": {"alembic_heads": []}}),
    );
    let d = write_dataset(
        root,
        "d",
        json!({"expected_version": {"command": "alembic heads"}}),
    );
    let e = write_dataset(
        root,
        "e",
        json!({
            "migration": {"sql_dir": "sql"},
            "expected_version": {"command": ["alembic", "heads"]}
        }),
    );
    let f = write_dataset(
        root,
        "f",
        json!({"expected_version": {"command": ["", "heads"]}}),
    );
    let mut errors = load_datasets(root, &DatasetDefaults::default()).unwrap_err();
    errors.sort();
    let (a, b, c, d, e, f) = (
        a.display(),
        b.display(),
        c.display(),
        d.display(),
        e.display(),
        f.display(),
    );
    let mut expected = vec![
        format!("{a}: expected_version.alembic_heads[1]: a folder of the checkout must be a relative path without `..`, got \"../out\""),
        format!("{a}: expected_version.alembic_heads[2]: expected a string, got a number"),
        format!("{b}: expected_version.alembic_heads.recursive: expected true or false, got a string"),
        format!("{b}: expected_version.alembic_heads.version_locations: required"),
        format!("{c}: expected_version.alembic_heads: must not be empty"),
        format!("{d}: expected_version.command: expected an argv list of strings (e.g. [\"alembic\", \"upgrade\", \"head\"]), got a string"),
        format!("{e}: expected_version.command: only used with `migration.tool`, not with `sql_dir`"),
        format!("{f}: expected_version.command[0]: the program must not be empty"),
    ];
    expected.sort();
    assert_eq!(errors, expected);
}

#[test]
fn unknown_keys_and_placeholders_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = write_dataset(
        root,
        "a",
        json!({"expected_version": {
            "alembic_heads": {"version_locations": "v", "recursiv": false}
        }}),
    );
    let b = write_dataset(
        root,
        "b",
        json!({"expected_version": {"command": ["alembic", "-c", "{config}", "heads"]}}),
    );
    let (_, mut warnings) = load_datasets_with_warnings(root, &DatasetDefaults::default()).unwrap();
    warnings.sort();
    assert_eq!(
        warnings,
        [
            format!(
                "{}: expected_version.alembic_heads.recursiv: unknown key, ignored",
                a.display()
            ),
            format!(
                "{}: expected_version.command[2]: unknown placeholder {{config}}, left as is",
                b.display()
            ),
        ]
    );
}

#[test]
fn check_files_checks_the_heads_command() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("seed.sql"), "").unwrap();
    write_dataset(
        root,
        "missing",
        json!({"expected_version": {"command": ["/nonexistent/th-alembic", "heads"]}}),
    );
    write_dataset(
        root,
        "placeholder",
        json!({"expected_version": {"command": ["{checkout}/bin/alembic", "heads"]}}),
    );
    let d = load_datasets(root, &DatasetDefaults::default()).unwrap();
    assert_eq!(
        d[0].check_files(),
        ["expected_version.command[0]: /nonexistent/th-alembic does not exist"]
    );
    // Resolved in the checkout at run time: not checked here.
    assert!(d[1].check_files().is_empty(), "{:?}", d[1].check_files());
}
