//! Loading datasets from a datasets dir: layouts, defaults, validation (every error at once).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gate_real_db_upgrade::dataset::{
    load_datasets, load_datasets_with_warnings, DatasetDefaults, Migration,
};
use gate_real_db_upgrade::engine::{Connection, Engine, SeedFormat};
use gate_real_db_upgrade::logparse::LogFormat;
use gate_real_db_upgrade::version::ExpectedVersion;
use serde_json::json;

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn write_json(dir: &Path, rel: &str, value: serde_json::Value) -> PathBuf {
    write(dir, rel, &serde_json::to_string_pretty(&value).unwrap())
}

fn minimal(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"project": "acme/app", "seed_data": "seed.sql"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn single_file_dataset_with_relative_seed() {
    let tmp = tempfile::tempdir().unwrap();
    // `cp /my/dataset.json /my/dataset.sql.gz /var/lib/turbo-hipster/datasets/`
    let source = write_json(
        tmp.path(),
        "mysite.json",
        json!({
            "project": "acme/site",
            "type": "percona",
            "seed_data": "mysite.sql.gz",
            "migration": {"tool": ["./manage.py", "migrate"], "log_format": "sqlalchemy-migrate"}
        }),
    );
    write(tmp.path(), "mysite.sql.gz", "not really gzip");
    let datasets = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
    assert_eq!(datasets.len(), 1);
    let d = &datasets[0];
    assert_eq!(d.name, "mysite");
    assert_eq!(d.dir, tmp.path());
    assert_eq!(d.source, source);
    assert_eq!(d.engine, Engine::MySql);
    assert_eq!(d.seed.path, tmp.path().join("mysite.sql.gz"));
    assert_eq!(d.seed.format, SeedFormat::SqlGz);
    assert_eq!(d.database, "mysite");
    assert!(d.runnable().is_ok());
}

#[test]
fn layout_hidden_entries_sorting_and_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_json(root, "zeta/config.json", minimal(json!({})));
    write_json(root, "alpha.json", minimal(json!({})));
    write_json(root, "mid.dot-ted_1/config.json", minimal(json!({})));
    // Skipped: hidden entries, other files, a directory without config.json.
    write_json(root, ".hidden/config.json", json!({"broken": true}));
    write(root, ".swap.json", "{ not json");
    write(root, "seed.sql", "-- a seed of a single-file dataset");
    write(root, "README.txt", "hello");
    write(root, "seeds/big.sql", "--");
    let (datasets, warnings) =
        load_datasets_with_warnings(root, &DatasetDefaults::default()).unwrap();
    let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "mid.dot-ted_1", "zeta"]);
    assert_eq!(datasets[1].database, "mid_dot_ted_1");
    assert_eq!(datasets[2].dir, root.join("zeta"));
    assert_eq!(datasets[2].seed.path, root.join("zeta/seed.sql"));
    assert_eq!(
        warnings,
        vec![format!(
            "{}: no config.json, skipped",
            root.join("seeds").display()
        )]
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let source = write_json(
        tmp.path(),
        "d/config.json",
        minimal(json!({
            "nova_db": "nova",
            "_comment": "ignored silently",
            "connection": {"host": "db", "sslmode": "require"},
            "migration": {"sql_dir": "sql", "extra": 1}
        })),
    );
    let (datasets, mut warnings) =
        load_datasets_with_warnings(tmp.path(), &DatasetDefaults::default()).unwrap();
    assert_eq!(datasets.len(), 1);
    warnings.sort();
    let f = source.display();
    assert_eq!(
        warnings,
        vec![
            format!("{f}: connection.sslmode: unknown key, ignored"),
            format!("{f}: migration.extra: unknown key, ignored"),
            format!("{f}: nova_db: unknown key, ignored"),
        ]
    );
    // load_datasets gives the same datasets, without the warnings.
    assert_eq!(
        load_datasets(tmp.path(), &DatasetDefaults::default())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn missing_seed_is_not_a_load_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_json(
        tmp.path(),
        "d/config.json",
        minimal(json!({"seed_data": "nowhere/seed.sql"})),
    );
    let datasets = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
    assert_eq!(datasets[0].seed.path, tmp.path().join("d/nowhere/seed.sql"));
    assert!(!datasets[0].seed.path.exists());
}

#[test]
fn a_seed_must_stay_inside_its_dataset_dir() {
    for seed in [
        "/etc/shadow",
        "../../../../etc/shadow",
        "sub/../../x.sql",
        "..",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let f = write_json(
            tmp.path(),
            "d/config.json",
            minimal(json!({"seed_data": seed})),
        );
        let errors = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap_err();
        assert_eq!(
            errors,
            vec![format!(
                "{}: seed_data: must name a file in the dataset's directory (a relative path \
                 without `..`; to use a seed kept elsewhere, place a symlink to it there), got \
                 {seed:?}",
                f.display()
            )]
        );
    }
    // A symlink placed in the dataset's directory is how a seed kept elsewhere is used.
    let tmp = tempfile::tempdir().unwrap();
    write_json(
        tmp.path(),
        "d/config.json",
        minimal(json!({"seed_data": "seed.sql"})),
    );
    let elsewhere = write(tmp.path(), "elsewhere/seed.sql", "SELECT 1;\n");
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("d/seed.sql")).unwrap();
    let datasets = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
    assert_eq!(datasets[0].seed.check_file(), Ok(()));
}

#[test]
fn seed_file_checks_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    write_json(
        tmp.path(),
        "a/config.json",
        minimal(json!({"seed_data": "missing.sql"})),
    );
    write_json(
        tmp.path(),
        "b/config.json",
        minimal(json!({"seed_data": "dir"})),
    );
    std::fs::create_dir(tmp.path().join("b/dir")).unwrap();
    let datasets = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
    let problems: Vec<String> = datasets
        .iter()
        .map(|d| d.seed.check_file().unwrap_err())
        .collect();
    assert_eq!(
        problems,
        [
            format!(
                "seed_data: {} does not exist",
                tmp.path().join("a/missing.sql").display()
            ),
            format!(
                "seed_data: {} is not a regular file",
                tmp.path().join("b/dir").display()
            ),
        ]
    );
}

#[test]
fn check_files_checks_what_can_be_known_before_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let script = write(tmp.path(), "bin/migrate", "#!/bin/sh\n");
    for (name, tool, templates) in [
        (
            "missing",
            json!(["/nonexistent/th-migrate", "up"]),
            json!({}),
        ),
        ("plain", json!([script, "up"]), json!({"a.ini": "a.ini.in"})),
        (
            "placeholder",
            json!(["{checkout}/tools/migrate"]),
            json!({}),
        ),
        ("relative", json!(["tools/migrate"]), json!({})),
    ] {
        write_json(
            tmp.path(),
            &format!("{name}/config.json"),
            minimal(json!({"migration": {"tool": tool, "templates": templates}})),
        );
        write(tmp.path(), &format!("{name}/seed.sql"), "SELECT 1;\n");
    }
    let datasets = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
    let problems: Vec<(String, Vec<String>)> = datasets
        .iter()
        .map(|d| (d.name.clone(), d.check_files()))
        .collect();
    assert_eq!(
        problems,
        [
            (
                "missing".to_string(),
                vec!["migration.tool[0]: /nonexistent/th-migrate does not exist".to_string()]
            ),
            (
                "placeholder".to_string(),
                vec![]
            ),
            (
                "plain".to_string(),
                vec![
                    format!("migration.tool[0]: {} is not executable: EACCES: Permission denied", script.display()),
                    format!(
                        "migration.templates.a.ini: cannot read {}: No such file or directory (os error 2)",
                        tmp.path().join("plain/a.ini.in").display()
                    ),
                ]
            ),
            ("relative".to_string(), vec![]),
        ]
    );
}

#[test]
fn type_and_engine_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_json(root, "a_mysql.json", minimal(json!({"type": "mysql"})));
    write_json(root, "b_percona.json", minimal(json!({"type": "percona"})));
    write_json(
        root,
        "c_postgres.json",
        minimal(json!({"type": "postgres"})),
    );
    write_json(
        root,
        "d_postgresql.json",
        minimal(json!({"engine": "postgresql", "seed_data": "x.pgdump"})),
    );
    write_json(
        root,
        "e_mariadb.json",
        minimal(json!({"engine": "mariadb"})),
    );
    write_json(root, "f_sqlite.json", minimal(json!({"engine": "sqlite"})));
    write_json(root, "g_default.json", minimal(json!({})));
    write_json(
        root,
        "h_same.json",
        minimal(json!({"engine": "mysql", "type": "percona"})),
    );
    let engines = |defaults: &DatasetDefaults| -> Vec<Engine> {
        load_datasets(root, defaults)
            .unwrap()
            .iter()
            .map(|d| d.engine)
            .collect()
    };
    assert_eq!(
        engines(&DatasetDefaults::default()),
        vec![
            Engine::MySql,
            Engine::MySql,
            Engine::PostgreSql,
            Engine::PostgreSql,
            Engine::MariaDb,
            Engine::Sqlite,
            Engine::MySql, // nothing given: MySQL, the original's engine
            Engine::MySql,
        ]
    );
    // The job config's engine applies only where the dataset names none.
    let defaults = DatasetDefaults {
        engine: Some(Engine::Sqlite),
        ..DatasetDefaults::default()
    };
    assert_eq!(engines(&defaults)[6], Engine::Sqlite);
    assert_eq!(engines(&defaults)[0], Engine::MySql);
    let pg = &load_datasets(root, &DatasetDefaults::default()).unwrap()[3];
    assert_eq!(pg.seed.format, SeedFormat::PgCustom);
}

#[test]
fn connection_falls_back_field_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_json(
        root,
        "a.json",
        minimal(json!({"db_user": "nova", "db_pass": "tester"})),
    );
    write_json(
        root,
        "b.json",
        minimal(
            json!({"connection": {"host": "db2", "port": 3307, "socket": "/run/mysqld/m.sock"}}),
        ),
    );
    write_json(root, "c.json", minimal(json!({})));
    let defaults = DatasetDefaults {
        connection: Connection {
            host: Some("db.example".into()),
            port: Some(3306),
            socket: None,
            user: Some("th".into()),
            password: Some("th-pass".into()),
        },
        engine: None,
        ..DatasetDefaults::default()
    };
    let datasets = load_datasets(root, &defaults).unwrap();
    assert_eq!(
        datasets[0].connection,
        Connection {
            host: Some("db.example".into()),
            port: Some(3306),
            socket: None,
            user: Some("nova".into()),
            password: Some("tester".into()),
        }
    );
    assert_eq!(
        datasets[1].connection,
        Connection {
            host: Some("db2".into()),
            port: Some(3307),
            socket: Some("/run/mysqld/m.sock".into()),
            user: Some("th".into()),
            password: Some("th-pass".into()),
        }
    );
    assert_eq!(datasets[2].connection, defaults.connection);
}

#[test]
fn tool_regex_format_and_expected_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_json(
        root,
        "r/config.json",
        minimal(json!({
            "migration": {
                "tool": ["migrate-tool", "--url", "{db_url}"],
                "log_format": {"start": "^apply (?P<from>\\d*)->(?P<to>\\d+)", "end": "ok$", "final": "now at (?P<version>\\d+)"}
            },
            "expected_version": {"fixed": 42},
            "upgrade_path": ["stable/kilo", "origin/stable/liberty", "1a2b3c"],
            "timeout": 600
        })),
    );
    write_json(
        root,
        "s/config.json",
        minimal(json!({
            "migration": {"tool": ["nova-manage", "db", "sync"]},
            "expected_version": {"highest_numbered": "nova/db/sqlalchemy/migrate_repo/versions"}
        })),
    );
    write_json(
        root,
        "t/config.json",
        minimal(json!({
            "migration": {"sql_dir": "./db/sql", "version_table": "schema_v"},
            "expected_version": "unchecked"
        })),
    );
    let d = load_datasets(root, &DatasetDefaults::default()).unwrap();
    match &d[0].migration {
        Migration::Tool {
            argv,
            log_format:
                LogFormat::Regex {
                    start,
                    end,
                    final_version,
                },
            ..
        } => {
            assert_eq!(argv, &vec!["migrate-tool", "--url", "{db_url}"]);
            assert!(start.is_match("apply 1->2"));
            assert!(end.as_ref().unwrap().is_match("ok"));
            assert!(final_version.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d[0].expected_version, ExpectedVersion::Fixed("42".into()));
    assert_eq!(
        d[0].upgrade_path,
        vec!["stable/kilo", "origin/stable/liberty", "1a2b3c"]
    );
    assert_eq!(d[0].timeout, Some(std::time::Duration::from_secs(600)));
    match &d[1].migration {
        Migration::Tool {
            log_format,
            env,
            templates,
            ..
        } => {
            assert!(matches!(log_format, LogFormat::SqlalchemyMigrate)); // the default
            assert!(env.is_empty() && templates.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d[1].expected_version,
        ExpectedVersion::HighestNumbered("nova/db/sqlalchemy/migrate_repo/versions".into())
    );
    match &d[2].migration {
        Migration::SqlFiles { dir, version_table } => {
            assert_eq!(dir, Path::new("./db/sql"));
            assert_eq!(version_table, "schema_v");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d[2].expected_version, ExpectedVersion::Unchecked);
}

#[test]
fn every_error_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bad = write_json(
        root,
        "bad/config.json",
        json!({
            "project": "../etc",
            "engine": "oracle",
            "seed_data": "",
            "database": "has-dash",
            "connection": {"port": "3306"},
            "migration": {
                "tool": ["alembic", 7],
                "env": {"1BAD": "x"},
                "templates": {"../out.ini": "../../etc/passwd", "ok.ini": "/abs/tpl"},
                "log_format": {"start": "(\\d+) -> (\\d+)", "end": "("}
            },
            "expected_version": "last_sql_file",
            "upgrade_path": ["-delete", "a..b", "has space", 3],
            "maximum_migration_times": {"1->2": 5},
            "Innodb_rows_read": {"default": -1},
            "timeout": 0
        }),
    );
    // A second broken dataset: its errors come in the same answer.
    let other = write_json(root, "other.json", json!({"seed_data": "s.sql"}));
    write(root, "broken.json", "{ \"project\": ");
    // A name that is not safe.
    let unsafe_name = write_json(root, "sp ace.json", minimal(json!({})));

    let mut errors = load_datasets(root, &DatasetDefaults::default()).unwrap_err();
    errors.sort();
    let b = bad.display();
    let mut expected = vec![
        format!("{b}: project: must be a relative path of safe names like \"openstack/nova\", got \"../etc\""),
        format!("{b}: engine: must be one of mysql, percona, mariadb, postgresql, postgres, sqlite, got \"oracle\""),
        format!("{b}: seed_data: must not be empty"),
        format!("{b}: database: must be [A-Za-z0-9_], at most 48 characters, got \"has-dash\""),
        format!("{b}: connection.port: expected a whole number, got a string"),
        format!("{b}: migration.tool[1]: expected a string, got a number"),
        format!("{b}: migration.env.1BAD: not a valid environment variable name"),
        format!("{b}: migration.templates.../out.ini: the output must be a plain file name ([A-Za-z0-9._-]) in the work dir"),
        format!("{b}: migration.templates.../out.ini: the template must be a relative path without `..`, got \"../../etc/passwd\""),
        format!("{b}: migration.templates.ok.ini: the template must be a relative path without `..`, got \"/abs/tpl\""),
        format!("{b}: migration.log_format.start: needs named groups (?P<from>...) and (?P<to>...)"),
        format!("{b}: expected_version: last_sql_file needs migration.sql_dir"),
        format!("{b}: upgrade_path[0]: must not start with `-`, got \"-delete\""),
        format!("{b}: upgrade_path[1]: must not contain `..`, got \"a..b\""),
        format!("{b}: upgrade_path[2]: must not contain whitespace, got \"has space\""),
        format!("{b}: upgrade_path[3]: expected a string, got a number"),
        format!("{b}: maximum_migration_times.default: required"),
        format!("{b}: Innodb_rows_read.default: must be at least 0, got -1"),
        format!("{b}: timeout: must be more than 0 and at most 604800 seconds, got 0"),
        format!("{}: project: required: e.g. \"openstack/nova\"", other.display()),
        format!("{}: (name): dataset name \"sp ace\" is not a safe name ([A-Za-z0-9._-])", unsafe_name.display()),
    ];
    // The regex crate's own words for `(`: just check the line's start.
    let end_error = errors
        .iter()
        .position(|e| {
            e.starts_with(&format!(
                "{b}: migration.log_format.end: not a valid regex: "
            ))
        })
        .expect("the bad end regex is reported");
    errors.remove(end_error);
    let json_error = errors
        .iter()
        .position(|e| {
            e.starts_with(&format!(
                "{}: line 1 column 13: invalid JSON: ",
                root.join("broken.json").display()
            ))
        })
        .expect("the broken file is reported");
    errors.remove(json_error);
    expected.sort();
    assert_eq!(errors, expected);
    assert!(errors.iter().all(|e| !e.contains('\n')));
}

#[test]
fn more_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = write_json(
        root,
        "a.json",
        minimal(json!({
            "engine": "mysql",
            "type": "postgres",
            "seed_format": "pg_custom",
            "db_user": "x",
            "connection": {"user": "y"},
            "migration": {"tool": ["t"], "sql_dir": "sql"}
        })),
    );
    let b = write_json(
        root,
        "b.json",
        minimal(json!({
            "migration": {"sql_dir": "../outside", "log_format": "alembic"},
            "expected_version": {"alembic_heads": "/abs", "fixed": "1"}
        })),
    );
    let c = write_json(
        root,
        "c.json",
        minimal(json!({
            "migration": {"tool": "alembic upgrade head", "log_format": "flyway"},
            "expected_version": {"highest_numbered": "a/../../b"}
        })),
    );
    let mut errors = load_datasets(root, &DatasetDefaults::default()).unwrap_err();
    errors.sort();
    let (a, b, c) = (a.display(), b.display(), c.display());
    let mut expected = vec![
        format!("{a}: engine: mysql conflicts with type postgresql"),
        format!("{a}: seed_format: a PostgreSQL custom-format dump needs engine postgresql, not mysql"),
        format!("{a}: db_user: conflicts with connection.user (give one of them)"),
        format!("{a}: migration: give either `tool` or `sql_dir`, not both"),
        format!("{b}: migration.log_format: only used with `tool`, not with `sql_dir`"),
        format!("{b}: migration.sql_dir: the SQL directory in the checkout must be a relative path without `..`, got \"../outside\""),
        format!("{b}: expected_version: must be one of {{\"highest_numbered\": dir}}, {{\"alembic_heads\": dir or [dirs]}}, {{\"command\": argv}}, {{\"fixed\": \"V\"}}, \"last_sql_file\", \"unchecked\", got {{\"alembic_heads\":\"/abs\",\"fixed\":\"1\"}}"),
        format!("{c}: migration.tool: expected an argv list of strings (e.g. [\"alembic\", \"upgrade\", \"head\"]), got a string"),
        format!("{c}: migration.log_format: must be one of sqlalchemy-migrate, alembic, {{\"start\": regex, ...}}, got \"flyway\""),
        format!("{c}: expected_version.highest_numbered: the directory in the checkout must be a relative path without `..`, got \"a/../../b\""),
    ];
    expected.sort();
    assert_eq!(errors, expected);
}

#[test]
fn duplicate_names_and_missing_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir_cfg = write_json(root, "same/config.json", minimal(json!({})));
    let file_cfg = write_json(root, "same.json", minimal(json!({})));
    let errors = load_datasets(root, &DatasetDefaults::default()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("dataset name same is also used by"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains(&dir_cfg.display().to_string())
            && errors[0].contains(&file_cfg.display().to_string())
    );

    let missing = root.join("nope");
    let errors = load_datasets(&missing, &DatasetDefaults::default()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with(&format!(
        "{}: cannot read the datasets dir: ",
        missing.display()
    )));

    let empty = tempfile::tempdir().unwrap();
    assert!(load_datasets(empty.path(), &DatasetDefaults::default())
        .unwrap()
        .is_empty());
}

/// `lock_sample_interval` (milliseconds; 0 or false: off; 100 when absent) and
/// `maximum_lock_hold` (a limit table like the others).
#[test]
fn lock_observation_keys() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cases = [
        ("absent", json!({}), Some(Duration::from_millis(100))),
        (
            "every50",
            json!({"lock_sample_interval": 50}),
            Some(Duration::from_millis(50)),
        ),
        ("zero", json!({"lock_sample_interval": 0}), None),
        ("off", json!({"lock_sample_interval": false}), None),
    ];
    for (name, extra, _) in &cases {
        write_json(root, &format!("{name}.json"), minimal(extra.clone()));
    }
    write_json(
        root,
        "limited.json",
        minimal(json!({
            "maximum_lock_hold": {"default": 5, "151->152": 60, "_151": "why"},
            "maximum_rewrite_bytes": {"default": 1_048_576, "152": 0},
        })),
    );
    let datasets = load_datasets(root, &DatasetDefaults::default()).unwrap();
    let find = |n: &str| datasets.iter().find(|d| d.name == n).unwrap();
    for (name, _, expected) in &cases {
        assert_eq!(find(name).lock_sample, *expected, "{name}");
    }
    let hold = find("limited").limits.lock_hold.clone().unwrap();
    assert_eq!(hold.lookup("151", "152"), Some(60.0));
    assert_eq!(hold.lookup("152", "153"), Some(5.0));
    assert_eq!(find("absent").limits.lock_hold, None);
    let rewrite = find("limited").limits.rewrite_bytes.clone().unwrap();
    assert_eq!(rewrite.lookup("151", "152"), Some(0.0));
    assert_eq!(rewrite.lookup("152", "153"), Some(1_048_576.0));
    assert_eq!(find("absent").limits.rewrite_bytes, None);

    let bad = tempfile::tempdir().unwrap();
    let path = write_json(
        bad.path(),
        "bad.json",
        minimal(json!({
            "lock_sample_interval": 0.5,
            "maximum_lock_hold": {"default": -1},
            "maximum_rewrite_bytes": {"1": 10},
        })),
    );
    let mut errors = load_datasets(bad.path(), &DatasetDefaults::default()).unwrap_err();
    errors.sort();
    let p = path.display();
    assert_eq!(
        errors,
        vec![
            format!("{p}: lock_sample_interval: must be whole milliseconds from 0 (off) to 60000, or false (off), got 0.5"),
            format!("{p}: maximum_lock_hold.default: must be at least 0, got -1"),
            format!("{p}: maximum_rewrite_bytes.default: required"),
        ]
    );
}

/// `count_work` (true when absent) and `maximum_wal_bytes` (a limit table like the others);
/// a `count_work` that is not a boolean and a WAL limit without `default` are named.
#[test]
fn work_counter_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_json(root, "absent.json", minimal(json!({})));
    write_json(root, "off.json", minimal(json!({"count_work": false})));
    write_json(
        root,
        "wal.json",
        minimal(json!({"maximum_wal_bytes": {"default": 1e9, "152": 5e9}})),
    );
    let datasets = load_datasets(root, &DatasetDefaults::default()).unwrap();
    let find = |n: &str| datasets.iter().find(|d| d.name == n).unwrap();
    assert!(find("absent").count_work);
    assert!(!find("off").count_work);
    let wal = find("wal").limits.wal_bytes.clone().unwrap();
    assert_eq!(wal.lookup("151", "152"), Some(5e9));
    assert_eq!(wal.lookup("152", "153"), Some(1e9));
    assert_eq!(find("absent").limits.wal_bytes, None);

    let bad = tempfile::tempdir().unwrap();
    let path = write_json(
        bad.path(),
        "bad.json",
        minimal(json!({"count_work": "yes", "maximum_wal_bytes": {"151": 1}})),
    );
    let mut errors = load_datasets(bad.path(), &DatasetDefaults::default()).unwrap_err();
    errors.sort();
    let p = path.display();
    assert_eq!(
        errors,
        vec![
            format!("{p}: count_work: expected true or false, got a string"),
            format!("{p}: maximum_wal_bytes.default: required"),
        ]
    );
}
