//! One wording for each kind of configuration mistake: the daemon's `config.json`, a dataset's
//! `config.json` and the gate plugin's job config are read by the SDK's checker, so the same
//! mistake gets the same `<what>` in each (only the file and the key path differ).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use gate_real_db_upgrade::dataset::{load_dataset, DatasetDefaults};
use gate_real_db_upgrade::settings::Settings;
use serde_json::{json, Value};
use turbo_hipster_sdk::PluginError;

/// What is said at `path`: the `<what>` of each line `<path>: <what>` of `lines`.
fn said_at(lines: &[String], path: &str) -> Vec<String> {
    let prefix = format!("{path}: ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// The error and warning lines of `lines` without their file.
fn without_file(lines: Vec<String>, file: &Path) -> Vec<String> {
    let prefix = format!("{}: ", file.display());
    lines
        .into_iter()
        .map(|l| l.strip_prefix(&prefix).unwrap().to_string())
        .collect()
}

/// The daemon's config `value`: its errors and warnings, `<key path>: <what>` each.
fn host(value: &Value) -> (Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.json");
    std::fs::write(&file, value.to_string()).unwrap();
    let lines = |issues: Vec<turbo_hipster::config::ConfigIssue>| {
        without_file(issues.iter().map(ToString::to_string).collect(), &file)
    };
    match turbo_hipster::config::load(&file) {
        Ok(config) => (Vec::new(), lines(config.warnings)),
        Err(e) => (lines(e.issues), lines(e.warnings)),
    }
}

/// A dataset's config `value`: its errors and warnings, `<key path>: <what>` each.
fn dataset(value: &Value) -> (Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.json");
    std::fs::write(&file, value.to_string()).unwrap();
    match load_dataset(&file, "d", tmp.path(), &DatasetDefaults::default()) {
        Ok((_, warnings)) => (Vec::new(), without_file(warnings, &file)),
        Err(errors) => (without_file(errors, &file), Vec::new()),
    }
}

/// The gate plugin's job config `value`: its errors, `<key path>: <what>` each.
fn job(value: &Value) -> Vec<String> {
    match Settings::from_config(value.as_object().unwrap()) {
        Ok(_) => Vec::new(),
        Err(PluginError::Config(lines)) => lines,
        Err(other) => panic!("{other:?}"),
    }
}

/// A valid dataset with `extra` keys.
fn a_dataset(extra: Value) -> Value {
    let mut v = json!({"project": "acme/app", "seed_data": "seed.sql"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Checks that the three say `what` for the same mistake (each at its own key path).
fn same_words(
    what: &str,
    host_said: Vec<String>,
    dataset_said: Vec<String>,
    job_said: Vec<String>,
) {
    assert_eq!(host_said, [what], "the daemon's config");
    assert_eq!(dataset_said, [what], "a dataset");
    assert_eq!(job_said, [what], "the job config");
}

#[test]
fn a_port_0() {
    let host_said = host(&json!({"zuul_server": {"gearman_port": 0}})).0;
    let dataset_said = dataset(&a_dataset(json!({"connection": {"port": 0}}))).0;
    let job_said = job(&json!({"connection": {"port": 0}}));
    same_words(
        "must be between 1 and 65535, got 0",
        said_at(&host_said, "zuul_server.gearman_port"),
        said_at(&dataset_said, "connection.port"),
        said_at(&job_said, "connection.port"),
    );
}

#[test]
fn a_string_where_a_number_belongs() {
    let host_said = host(&json!({"max_concurrent_jobs": "4"})).0;
    let dataset_said = dataset(&a_dataset(json!({"connection": {"port": "3306"}}))).0;
    let job_said = job(&json!({"max_parallel_datasets": "4"}));
    same_words(
        "expected a whole number, got a string",
        said_at(&host_said, "max_concurrent_jobs"),
        said_at(&dataset_said, "connection.port"),
        said_at(&job_said, "max_parallel_datasets"),
    );
}

#[test]
fn a_number_where_a_string_belongs() {
    let host_said = host(&json!({"manager_name": 7})).0;
    let dataset_said = dataset(&a_dataset(json!({"project": 7}))).0;
    let job_said = job(&json!({"datasets_dir": 7}));
    same_words(
        "expected a string, got a number",
        said_at(&host_said, "manager_name"),
        said_at(&dataset_said, "project"),
        said_at(&job_said, "datasets_dir"),
    );
}

#[test]
fn a_name_not_among_the_names() {
    // Each key has its own names; the words around them are the same.
    let host_said = host(&json!({"job_isolation": "thread"})).0;
    assert_eq!(
        said_at(&host_said, "job_isolation"),
        ["must be one of process, in-process, got \"thread\""]
    );
    let what =
        "must be one of mysql, percona, mariadb, postgresql, postgres, sqlite, got \"oracle\"";
    same_words(
        what,
        vec![what.to_string()],
        said_at(
            &dataset(&a_dataset(json!({"engine": "oracle"}))).0,
            "engine",
        ),
        said_at(&job(&json!({"engine": "oracle"})), "engine"),
    );
}

#[test]
fn an_unknown_key() {
    let host_warned = host(&json!({"flavour": 1})).1;
    let dataset_warned = dataset(&a_dataset(json!({"flavour": 1}))).1;
    assert_eq!(said_at(&host_warned, "flavour"), ["unknown key, ignored"]);
    assert_eq!(
        said_at(&dataset_warned, "flavour"),
        ["unknown key, ignored"]
    );
    // In a connection too (the job's connection warnings go to the log, read the same way).
    let dataset_warned = dataset(&a_dataset(json!({"connection": {"flavour": 1}}))).1;
    assert_eq!(
        said_at(&dataset_warned, "connection.flavour"),
        ["unknown key, ignored"]
    );
}

#[test]
fn a_file_that_is_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.json");
    std::fs::write(&file, "[1]").unwrap();
    let host_said = match turbo_hipster::config::load(&file) {
        Err(e) => e.issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Ok(_) => panic!("a list was taken for a config"),
    };
    let dataset_said = load_dataset(&file, "d", tmp.path(), &DatasetDefaults::default())
        .map(|_| ())
        .unwrap_err();
    let what = format!(
        "{}: expected a JSON object at the top, got a list",
        file.display()
    );
    assert_eq!(host_said, dataset_said);
    assert_eq!(dataset_said, [what]);
}
