//! The loader against real libraries: the shipped plugins, and negative fixtures built here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use turbo_hipster::config;
use turbo_hipster::host_context::CancelToken;
use turbo_hipster::jobs::JobRequest;
use turbo_hipster::pipeline::Pipeline;
use turbo_hipster::plugins::{self, PluginLoadError};
use turbo_hipster_tests::{built, fixture, text, Fixture, PluginDir, Setup};

#[test]
fn plugins_command_lists_the_shipped_plugins() {
    let b = built();
    let dir = PluginDir::new();
    dir.add("shell_script", &b.plugins["shell_script"]);
    dir.add("gate_real_db_upgrade", &b.plugins["gate_real_db_upgrade"]);
    let setup = Setup::new(
        dir.path(),
        json!({
            "plugins": ["gate_real_db_upgrade"],
            "jobs": [{"name": "build:hello", "shell_script": "/bin/true"}]
        }),
    );
    let out = setup.run(&["plugins"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("gate_real_db_upgrade\n"), "{t}");
    assert!(t.contains("jobs:        build:gate-real-db-upgrade"), "{t}");
    assert!(t.contains("jobs:        build:hello"), "{t}");
    assert!(
        t.contains(&format!("sdk version: {}", turbo_hipster_sdk_version())),
        "{t}"
    );
    assert_eq!(t.matches("status:      OK").count(), 2, "{t}");
}

fn turbo_hipster_sdk_version() -> String {
    plugins::sdk_series()
}

fn one_line_error(setup: &Setup, needle: &str) {
    let out = setup.run(&["plugins"]);
    let t = text(&out);
    assert!(!out.status.success(), "plugins should fail:\n{t}");
    let line = t
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{t}"));
    assert!(
        line.contains("libtask.so") || line.contains("plugin \""),
        "{line}"
    );
    // `check-config` reports the same and fails too.
    let out = setup.run(&["check-config"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(needle), "{}", text(&out));
}

#[test]
fn missing_plugin_names_where_it_looked() {
    let dir = PluginDir::new();
    let setup = Setup::new(dir.path(), json!({"plugins": ["nosuch"]}));
    one_line_error(
        &setup,
        "plugin \"nosuch\": no libtask.so found (looked for ",
    );
}

#[test]
fn a_library_that_is_no_plugin_is_refused() {
    let dir = PluginDir::new();
    dir.add("notaplugin", &fixture(Fixture::NotAPlugin));
    dir.add_bytes("garbage", b"\x7fELF but not really");
    let setup = Setup::new(dir.path(), json!({"plugins": ["notaplugin", "garbage"]}));
    one_line_error(
        &setup,
        "is not a turbo-hipster plugin (it exports no plugin root module)",
    );
    one_line_error(&setup, "cannot be loaded as a shared library");
}

#[test]
fn incompatible_interface_says_what_and_how_to_fix() {
    let dir = PluginDir::new();
    dir.add("old", &fixture(Fixture::IncompatibleAbi));
    let setup = Setup::new(dir.path(), json!({"plugins": ["old"]}));
    let needle = format!(
        "rebuild the plugin against turbo-hipster-sdk {}",
        plugins::sdk_series()
    );
    one_line_error(&setup, &needle);
    let out = setup.run(&["plugins"]);
    let t = text(&out);
    let line = t.lines().find(|l| l.contains(&needle)).unwrap();
    assert!(
        line.contains("its plugin interface does not match"),
        "{line}"
    );
    assert!(line.contains("(AbiPluginInfo: "), "{line}");
    // What mismatched is named, briefly: one line, not abi_stable's full report.
    assert!(line.len() < 700, "{line}");
}

#[test]
fn a_panic_while_loading_is_reported_not_fatal() {
    let dir = PluginDir::new();
    dir.add("boom", &fixture(Fixture::PanicOnLoad));
    let setup = Setup::new(dir.path(), json!({"plugins": ["boom"]}));
    one_line_error(&setup, "panicked while initialising");
}

#[test]
fn a_panic_while_creating_a_runner_is_reported() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    let setup = Setup::new(
        dir.path(),
        json!({"jobs": [
            {"name": "build:p", "plugin": "test_plugin", "mode": "panic_in_new"},
            {"name": "build:c", "plugin": "test_plugin", "mode": "bad_config"},
            {"name": "build:fine", "plugin": "test_plugin"}
        ]}),
    );
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(
            "plugin panicked in initialisation: test plugin panics while creating its runner"
        ),
        "{t}"
    );
    // Every problem of a plugin's config is listed, with the job's place in the file.
    assert!(
        t.contains("jobs[1]: plugin test_plugin rejected the job \"build:c\""),
        "{t}"
    );
    assert!(
        t.contains("mode: \"bad_config\" asks for this error"),
        "{t}"
    );
    assert!(t.contains("second: another problem"), "{t}");
    assert!(t.contains("1 job(s) OK"), "{t}");
}

/// A panic in `run` fails that job with the panic's message; the same daemon then runs the
/// next job normally.
#[test]
fn a_panic_in_run_fails_the_job_and_the_next_job_runs() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    let setup = Setup::new(
        dir.path(),
        json!({"jobs": [
            {"name": "build:panics", "plugin": "test_plugin", "mode": "panic"},
            {"name": "build:works", "plugin": "test_plugin"}
        ]}),
    );
    let config = Arc::new(config::load(&setup.config).unwrap());
    let registry = Arc::new(plugins::build_registry(&config));
    assert!(registry.is_complete(), "{:?}", registry.job_errors);
    let pipeline = Arc::new(Pipeline::new(config.clone(), registry.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |function: &str, unique: &str| {
        let req = JobRequest {
            function: function.into(),
            unique: unique.into(),
            parameters: BTreeMap::new(),
        };
        let prepared = pipeline.prepare(req).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let outcome = rt.block_on(pipeline.run(
            prepared,
            turbo_hipster::host_context::channel_sink(tx),
            CancelToken::new(),
        ));
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (outcome, events)
    };
    let (first, _) = run("build:panics", "u1");
    assert_eq!(
        first.result,
        "FAILURE - plugin test_plugin: plugin panicked in run: test plugin panics in run for job u1"
    );
    let (second, events) = run("build:works", "u2");
    assert_eq!(second.result, "SUCCESS");
    assert!(
        events.contains(&turbo_hipster::host_context::JobEvent::Progress(2, 2)),
        "{events:?}"
    );
    // The plugin saw its job, and its results are kept; the work dir is cleaned up.
    let seen = std::fs::read_to_string(second.results_dir.join("job_seen.json")).unwrap();
    assert!(seen.contains("\"unique\": \"u2\""), "{seen}");
    assert!(second.results_dir.join("task_output.log").exists());
    let task_log = std::fs::read_to_string(second.results_dir.join("task_output.log")).unwrap();
    assert!(task_log.contains("test plugin ran"), "{task_log}");
    assert!(!second.results_dir.join("work").exists());
}

#[test]
fn loader_errors_are_typed() {
    let dir = PluginDir::new();
    dir.add("notaplugin", &fixture(Fixture::NotAPlugin));
    let path = plugins::find_plugin(&[dir.path().to_path_buf()], "notaplugin").unwrap();
    assert!(matches!(
        plugins::load_library("notaplugin", &path),
        Err(PluginLoadError::NotAPlugin { .. })
    ));
}
