//! The host config (`config.json`): a complete valid config with any value anywhere replaced,
//! keys removed or added, and any bytes as the file. Loading never panics; every error names
//! its file, and the key path it names is where the config was changed (a change to `jobs[1]`
//! is not blamed on `zuul_server`).
//!
//! Corpus (`tests/corpus/config/`): config files, loaded from a scratch directory (relative
//! paths resolve there); `ok-*` must load, `err-<key>-*` must be refused with an error whose
//! key path starts with `<key>` (`-` in the file name stands for nothing else, so keys are
//! written with `_` as in the config).

use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Value};
use turbo_hipster::config::{self, ConfigError};
use turbo_hipster_tests::fuzz;

/// Every key of the host config with a valid value.
fn valid_config(dir: &Path) -> Value {
    json!({
        "zuul_server": {"git_url": "http://zuul.example.org/p", "gearman_host": "127.0.0.1", "gearman_port": 4730},
        "gearman_servers": ["127.0.0.1:4731", "[::1]:4732"],
        "debug_log": dir.join("debug.log"),
        "jobs_working_dir": dir.join("jobs"),
        "git_working_dir": dir.join("git"),
        "pip_download_cache": dir.join("pip"),
        "plugin_dirs": [dir.join("plugins")],
        "worker_name": "fuzz-worker",
        "manager_name": "turbo-hipster-manager-fuzz",
        "max_concurrent_jobs": 2,
        "shutdown_grace_seconds": 30,
        "max_packet_bytes": 1048576,
        "keep_work_dirs": false,
        "metrics": {"listen": "127.0.0.1:9730"},
        "publish_logs": {"type": "local", "path": dir.join("logs"), "prepend_url": "http://logs.example.org/"},
        "plugins": [
            "gate_real_db_upgrade",
            {"name": "gate_real_db_upgrade", "function": "build:gate-real-db-upgrade_nova_mysql", "datasets_dir": dir.join("datasets")},
            {"name": "gate_real_db_upgrade", "job": "gate-real-db-upgrade_nova_pg", "engine": "postgresql"}
        ],
        "jobs": [
            {"name": "build:do-something", "plugin": "shell_script", "shell_script": "/bin/true", "timeout": 60},
            {"name": "build:other", "shell_script": "/bin/true"}
        ]
    })
}

/// The first segment of a key path: `jobs[1].plugin` → `jobs`.
fn top_key(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// Loads `text` as `<dir>/config.json`; checks that every error names the file.
fn load_text(dir: &Path, text: &[u8]) -> Result<config::Config, ConfigError> {
    let path = dir.join("config.json");
    std::fs::write(&path, text).unwrap();
    let got = config::load(&path);
    if let Err(e) = &got {
        assert!(!e.issues.is_empty(), "an error without issues");
        for issue in &e.issues {
            assert!(!issue.message.is_empty(), "{issue}");
            assert!(
                !issue.to_string().contains('\n'),
                "a multi-line error: {issue:?}"
            );
            assert!(
                issue.file.starts_with(dir),
                "{issue}: names a file outside the config"
            );
            assert!(e.to_string().contains(&issue.to_string()));
        }
    }
    got
}

proptest! {
    #![proptest_config(fuzz::config(256))]

    /// Mutations of a valid config: no panic; errors are blamed where the config changed.
    #[test]
    fn mutated_config(mutations in fuzz::mutations()) {
        let tmp = tempfile::tempdir().unwrap();
        let mut doc = valid_config(tmp.path());
        let changed = fuzz::mutate(&mut doc, &mutations);
        let text = serde_json::to_vec_pretty(&doc).unwrap();
        let Err(e) = load_text(tmp.path(), &text) else {
            return Ok(());
        };
        // A changed root, or conf_d (which reads other files), may be blamed anywhere.
        let anywhere = changed.iter().any(|p| p.is_empty() || top_key(p) == "conf_d");
        if !anywhere {
            for issue in &e.issues {
                prop_assert!(!issue.path.is_empty(), "{} (changed: {:?})", issue, changed);
                prop_assert!(
                    changed.iter().any(|p| top_key(p) == top_key(&issue.path)),
                    "{} blamed on {:?}, changed: {:?}", issue, top_key(&issue.path), changed
                );
            }
        }
    }

    /// Any bytes as the config file.
    #[test]
    fn any_bytes(text in prop::collection::vec(any::<u8>(), 0..256)) {
        let tmp = tempfile::tempdir().unwrap();
        let _ = load_text(tmp.path(), &text);
    }
}

#[test]
fn the_valid_config_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let text = serde_json::to_vec(&valid_config(tmp.path())).unwrap();
    let c = load_text(tmp.path(), &text).unwrap();
    assert_eq!(c.jobs.len(), 5);
    assert_eq!(c.warnings, vec![]);
}

#[test]
fn corpus_replays() {
    for (name, bytes) in fuzz::corpus("config") {
        let tmp = tempfile::tempdir().unwrap();
        let got = load_text(tmp.path(), &bytes);
        let mut words = name.split('-');
        match (words.next(), words.next()) {
            (Some("ok"), _) => assert!(got.is_ok(), "{name}: {:?}", got.err()),
            (Some("err"), Some(key)) => {
                let e = got.err().unwrap_or_else(|| panic!("{name} was accepted"));
                assert!(
                    key == "file" || e.issues.iter().any(|i| top_key(&i.path) == key),
                    "{name}: {e}"
                );
            }
            _ => panic!("{name}: corpus files are named ok-* or err-<key>-*"),
        }
    }
}
