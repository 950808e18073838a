//! The history commands as processes (`turbo-hipster import-logs`, `history`, `limits`,
//! `limits --write`, `trends`) on the original turbo-hipster's real job log
//! (`tests/fixtures/original/user_001.log`) and a copy of its real dataset config. Expected
//! figures are worked out by hand from the log (see
//! `plugins/gate_real_db_upgrade/tests/parse_fixture.rs`: 171, 59 946, 1 013, 30 and 23 297 ms).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use turbo_hipster_tests::{root, text, PluginDir, Setup};

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/original")
}

/// A config with the gate plugin (it reads the original's logs) and the default history.
fn setup(plugins: &PluginDir) -> Setup {
    plugins.add_shipped("gate_real_db_upgrade");
    Setup::new(
        plugins.path(),
        json!({"jobs": [{
            "name": "build:gate-real-db-upgrade",
            "plugin": "gate_real_db_upgrade",
            "datasets_dir": "/nonexistent/th-history-cli-datasets",
        }]}),
    )
}

fn run(setup: &Setup, args: &[&str]) -> (Option<i32>, String) {
    let out = setup.run(args);
    (out.status.code(), text(&out))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn original_logs_are_imported_once_and_unreadable_files_reported() {
    let plugins = PluginDir::new();
    let setup = setup(&plugins);
    let logs = setup.dir.path().join("logs");
    std::fs::create_dir_all(logs.join("2014")).unwrap();
    std::fs::copy(
        fixtures().join("user_001.log"),
        logs.join("2014/user_001.log"),
    )
    .unwrap();
    std::fs::write(logs.join("notes.log"), "this is not a job log\n").unwrap();
    let missing = setup.dir.path().join("missing-dir");

    let (code, out) = run(&setup, &["import-logs", s(&logs), s(&missing)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("2014/user_001.log: imported 5 migration(s) of dataset user_001 (commit 3e451f1bac57d24e47171cffb3ad59bb1610d836)"),
        "{out}"
    );
    assert!(
        out.contains("notes.log: not a log of the original turbo-hipster"),
        "{out}"
    );
    assert!(
        out.contains("missing-dir: cannot read: No such file"),
        "{out}"
    );
    assert!(setup.jobs_dir().join("history.db").is_file());

    // Again, and a renamed copy: nothing twice.
    std::fs::copy(fixtures().join("user_001.log"), logs.join("copy.log")).unwrap();
    std::fs::remove_file(logs.join("notes.log")).unwrap();
    let (code, out) = run(&setup, &["import-logs", s(&logs)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("user_001.log: already imported, skipped"),
        "{out}"
    );
    assert!(out.contains("copy.log: already imported, skipped"), "{out}");
    assert!(!out.contains("imported 5"), "{out}");

    // One sample each: every figure is the sample.
    let (code, out) = run(&setup, &["history", "--dataset", "user_001"]);
    assert_eq!(code, Some(0), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| {
            r.first()
                .is_some_and(|c| c.contains("->") || *c == "migration")
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                "migration",
                "samples",
                "median",
                "ms",
                "p95",
                "ms",
                "max",
                "ms"
            ],
            vec!["133->134", "1", "171", "171", "171"],
            vec!["134->135", "1", "59946", "59946", "59946"],
            vec!["135->136", "1", "1013", "1013", "1013"],
            vec!["136->137", "1", "30", "30", "30"],
            vec!["137->138", "1", "23297", "23297", "23297"],
        ],
        "{out}"
    );
    let (code, out) = run(&setup, &["history", "--dataset", "user_999"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no run of dataset user_999 in the history"),
        "{out}"
    );
}

#[test]
fn limits_are_suggested_and_written_keeping_the_config_s_order() {
    let plugins = PluginDir::new();
    let setup = setup(&plugins);
    let (code, out) = run(
        &setup,
        &["import-logs", s(&fixtures().join("user_001.log"))],
    );
    assert_eq!(code, Some(0), "{out}");

    // p99 × 1.5 + 5 s, rounded up: 0.171 → 6, 59.946 → 95 (94.919), 1.013 → 7 (6.5195),
    // 0.030 → 6, 23.297 → 40 (39.9455).
    let (code, out) = run(&setup, &["limits", "--dataset", "user_001"]);
    assert_eq!(code, Some(0), "{out}");
    let suggested: Vec<(String, String)> = out
        .lines()
        .filter(|l| l.contains("->"))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells[0].to_string(), cells.last().unwrap().to_string())
        })
        .collect();
    let expected = [
        ("133->134", "6"),
        ("134->135", "95"),
        ("135->136", "7"),
        ("136->137", "6"),
        ("137->138", "40"),
    ];
    assert_eq!(
        suggested,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>(),
        "{out}"
    );
    // Another rule.
    let (_, out) = run(
        &setup,
        &[
            "limits",
            "--dataset",
            "user_001",
            "--factor",
            "2",
            "--floor",
            "0",
        ],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("134->135") && l.ends_with(" 120")),
        "{out}"
    );

    // Imported runs do not say where the config is.
    let (code, out) = run(&setup, &["limits", "--dataset", "user_001", "--write"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("give it with --file"), "{out}");

    // A copy of the real config: the keys keep their order, replaced values stay in place,
    // new ones are appended to the table, everything else is as it was.
    let config = setup.dir.path().join("user_001.config.json");
    std::fs::copy(fixtures().join("user_001.config.json"), &config).unwrap();
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let (code, out) = run(
        &setup,
        &[
            "limits",
            "--dataset",
            "user_001",
            "--write",
            "--file",
            s(&config),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 replaced, 3 added"), "{out}");
    let written = std::fs::read_to_string(&config).unwrap();
    let keys = |text: &str, indent: usize| -> Vec<String> {
        let prefix = format!("{}\"", " ".repeat(indent));
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split('"').next())
            .map(str::to_string)
            .collect()
    };
    let original = std::fs::read_to_string(fixtures().join("user_001.config.json")).unwrap();
    assert_eq!(keys(&written, 4), keys(&original, 4), "{written}");
    let table = |text: &str| -> Vec<String> {
        let start = text.find("\"maximum_migration_times\"").unwrap();
        let end = start + text[start..].find('}').unwrap();
        keys(&text[start..end], 8)
    };
    let mut expected_keys = table(&original);
    expected_keys.extend(["133->134", "135->136", "136->137"].map(String::from));
    assert_eq!(table(&written), expected_keys, "{written}");
    let after: serde_json::Value = serde_json::from_str(&written).unwrap();
    let limits = &after["maximum_migration_times"];
    assert_eq!(limits["134->135"], 95.0);
    assert_eq!(limits["137->138"], 40.0);
    assert_eq!(limits["133->134"], 6.0);
    assert_eq!(limits["default"], 60);
    assert_eq!(limits["_138_bugs"], json!([1263835]));
    assert_eq!(limits["135->134"], 97.0);
    for key in [
        "Innodb_rows_read",
        "XInnodb_rows_changed",
        "database",
        "project",
        "type",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
}

#[test]
fn a_trends_page_is_written_for_a_dataset() {
    let plugins = PluginDir::new();
    let setup = setup(&plugins);
    let (code, out) = run(
        &setup,
        &[
            "import-logs",
            "--dataset",
            "nova_user_001",
            s(&fixtures().join("user_001.log")),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let page = setup.dir.path().join("trends.html");
    let (code, out) = run(
        &setup,
        &["trends", "--dataset", "nova_user_001", "-o", s(&page)],
    );
    assert_eq!(code, Some(0), "{out}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 5, "{html}");
    assert!(
        html.contains("<h2 id=\"m-134-135\">134-&gt;135</h2>"),
        "{html}"
    );
    assert!(
        html.contains("2014-01-16 07:03:52,241 59946 ms (3e451f1bac57, ok)"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains(" src="),
        "self-contained"
    );
}

/// The history database may be PostgreSQL: `history_database` as a URL.
#[test]
fn a_postgresql_history_by_url() {
    let name = format!(
        "th_history_cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    psql(&format!("CREATE DATABASE {name}"));
    let plugins = PluginDir::new();
    plugins.add_shipped("gate_real_db_upgrade");
    let setup = Setup::new(
        plugins.path(),
        json!({
            "history_database": format!("postgres://postgres@127.0.0.1:5432/{name}"),
            "jobs": [{
                "name": "build:gate-real-db-upgrade",
                "plugin": "gate_real_db_upgrade",
                "datasets_dir": "/nonexistent/th-history-cli-datasets",
            }],
        }),
    );
    let import = run(
        &setup,
        &["import-logs", s(&fixtures().join("user_001.log"))],
    );
    let history = run(&setup, &["history", "--dataset", "user_001"]);
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
    assert_eq!(import.0, Some(0), "{}", import.1);
    assert_eq!(history.0, Some(0), "{}", history.1);
    assert!(history.1.contains("134->135"), "{}", history.1);
    assert!(!setup.jobs_dir().join("history.db").exists());
}

#[test]
fn a_bad_history_database_is_a_config_error() {
    let plugins = PluginDir::new();
    let setup = Setup::new(plugins.path(), json!({"history_database": "mysql://h/db"}));
    let (code, out) = run(&setup, &["check-config"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("history_database: mysql:// is not supported"),
        "{out}"
    );
}
