//! What `check-config` looks at beyond the config's own text: the places the daemon will
//! write to and the servers it will serve. [`crate::config::load`] checks what the files say;
//! this checks that the machine agrees, so that a mistake shows before the daemon starts
//! rather than as the first job's failure.
//!
//! The checks are made as the user running `check-config`: run it as the daemon's user. With
//! `publish_logs` of type `s3`, one small object is written to the store and removed.

use std::io::ErrorKind;
use std::path::Path;

use nix::unistd::{access, AccessFlags};
use turbo_hipster_sdk::config::says;

use crate::config::{Config, ConfigIssue, PublishLogs};

/// Every problem found, each naming the file and key it comes from.
pub fn check_environment(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut problem = |key: &str, message: String| {
        issues.push(ConfigIssue {
            file: source_of(config, key),
            path: key.to_string(),
            message,
        });
    };
    if config.gearman_servers.is_empty() {
        problem(
            "gearman_servers",
            "no Gearman server: set zuul_server.gearman_host or gearman_servers".into(),
        );
    }
    let mut dirs = vec![
        ("jobs_working_dir", config.jobs_working_dir.as_path()),
        ("git_working_dir", config.git_working_dir.as_path()),
    ];
    if let Some(p) = &config.pip_download_cache {
        dirs.push(("pip_download_cache", p));
    }
    match &config.publish_logs {
        PublishLogs::Local { path, .. } => dirs.push(("publish_logs.path", path)),
        PublishLogs::S3(target) => {
            if let Err(why) = crate::publish::check_access(target) {
                problem("publish_logs", why);
            }
        }
        PublishLogs::None => {}
    }
    for (key, dir) in dirs {
        if let Err(why) = writable_dir(dir) {
            problem(key, why);
        }
    }
    if let Some(log) = &config.debug_log {
        if let Err(why) = writable_file(log) {
            problem("debug_log", why);
        }
    }
    issues
}

/// The file that set `key` (a `conf_d` snippet, else the main file).
fn source_of(config: &Config, key: &str) -> std::path::PathBuf {
    let top = crate::config::top_key(key);
    config.origins.get(top).unwrap_or(&config.source).clone()
}

/// A directory we can create files in, or one we can create.
fn writable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(says::not_a(dir, "a directory")),
        Ok(_) => access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
            .map_err(|e| format!("{} is not writable: {e}", dir.display())),
        Err(e) if missing(&e) => creatable(dir),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// A file we can append to, or create.
fn writable_file(file: &Path) -> Result<(), String> {
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => Err(format!("{} is a directory", file.display())),
        Ok(_) => access(file, AccessFlags::W_OK)
            .map_err(|e| format!("{} is not writable: {e}", file.display())),
        Err(e) if missing(&e) => creatable(file),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// The path does not exist (or a parent of it is a file: [`creatable`] says so).
fn missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// `path` does not exist: its nearest existing ancestor must be a writable directory.
fn creatable(path: &Path) -> Result<(), String> {
    let Some(ancestor) = path.ancestors().skip(1).find(|a| a.exists()) else {
        return Err(format!("{} cannot be created", path.display()));
    };
    if !ancestor.is_dir() {
        return Err(format!(
            "{} cannot be created: {} is not a directory",
            path.display(),
            ancestor.display()
        ));
    }
    access(ancestor, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        format!(
            "{} does not exist and cannot be created: {} is not writable ({e})",
            path.display(),
            ancestor.display()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: serde_json::Value) -> Config {
        let mut c = serde_json::json!({
            "jobs_working_dir": dir.join("jobs"),
            "git_working_dir": dir.join("git"),
            "gearman_servers": ["127.0.0.1:4730"],
        });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let path = dir.join("config.json");
        std::fs::write(&path, c.to_string()).unwrap();
        crate::config::load(&path).unwrap()
    }

    #[test]
    fn a_fresh_install_passes() {
        let d = tempfile::tempdir().unwrap();
        let c = config(
            d.path(),
            serde_json::json!({"debug_log": d.path().join("log/d.log")}),
        );
        assert_eq!(check_environment(&c), Vec::new());
    }

    #[test]
    fn files_where_directories_belong_and_no_server_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("jobs"), "a file").unwrap();
        std::fs::write(d.path().join("flat"), "a file").unwrap();
        std::fs::create_dir(d.path().join("logdir")).unwrap();
        let c = config(
            d.path(),
            serde_json::json!({
                "gearman_servers": [],
                "git_working_dir": d.path().join("flat/git"),
                "debug_log": d.path().join("logdir"),
                "publish_logs": {"type": "local", "path": d.path().join("jobs/pub")},
            }),
        );
        let text: Vec<String> = check_environment(&c)
            .iter()
            .map(ToString::to_string)
            .collect();
        let main = d.path().join("config.json").display().to_string();
        for needle in [
            format!("{main}: gearman_servers: no Gearman server"),
            format!(
                "{main}: jobs_working_dir: {}/jobs is not a directory",
                d.path().display()
            ),
            format!(
                "{main}: git_working_dir: {}/flat/git cannot be created",
                d.path().display()
            ),
            format!("{main}: publish_logs.path: "),
            format!(
                "{main}: debug_log: {}/logdir is a directory",
                d.path().display()
            ),
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(&needle)),
                "{needle}\n{text:#?}"
            );
        }
        assert_eq!(text.len(), 5, "{text:#?}");
    }
}
