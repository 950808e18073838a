//! What `check-config` looks at beyond the config's own text: the places the daemon will
//! write to and the servers it will serve. [`crate::config::load`] checks what the files say;
//! this checks that the machine agrees, so that a mistake shows before the daemon starts
//! rather than as the first job's failure.
//!
//! The checks are made as the user running `check-config`: run it as the daemon's user. With
//! `publish_logs` of type `s3`, one small object is written to the store and removed. With
//! `metrics`, its address is listened on for a moment: one that is not this machine's, or a
//! privileged port, is an error; one in use is a warning (it may be the running daemon's).

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
    if let Some(Err(e)) = try_metrics_listen(config) {
        if e.kind() != ErrorKind::AddrInUse {
            problem("metrics.listen", metrics_listen_problem(config, &e));
        }
    }
    issues
}

/// What `check-config` warns about: the metrics address in use (by the running daemon, or by
/// something else the daemon would then not start beside).
pub fn environment_warnings(config: &Config) -> Vec<ConfigIssue> {
    match try_metrics_listen(config) {
        Some(Err(e)) if e.kind() == ErrorKind::AddrInUse => vec![ConfigIssue {
            file: source_of(config, "metrics"),
            path: "metrics.listen".into(),
            message: format!(
                "{}: the daemon cannot start while it is (unless it is this daemon's, running)",
                metrics_listen_problem(config, &e)
            ),
        }],
        _ => Vec::new(),
    }
}

/// Listens on the metrics address for a moment, when there is one.
fn try_metrics_listen(config: &Config) -> Option<std::io::Result<()>> {
    let m = config.metrics.as_ref()?;
    Some(std::net::TcpListener::bind(m.listen).map(drop))
}

fn metrics_listen_problem(config: &Config, e: &std::io::Error) -> String {
    let listen = config.metrics.as_ref().map(|m| m.listen.to_string());
    format!("cannot listen on {}: {e}", listen.unwrap_or_default())
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
    fn a_metrics_address_that_cannot_be_listened_on_is_named() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("config.json").display().to_string();
        // Not an address of this machine (TEST-NET-1): an error.
        let c = config(
            d.path(),
            serde_json::json!({"metrics": {"listen": "192.0.2.1:9730"}}),
        );
        let text: Vec<String> = check_environment(&c)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text.len(), 1, "{text:#?}");
        assert!(
            text[0].starts_with(&format!(
                "{main}: metrics.listen: cannot listen on 192.0.2.1:9730: "
            )),
            "{text:#?}"
        );
        assert!(environment_warnings(&c).is_empty());
        // In use: a warning (the running daemon may hold it), not an error.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = held.local_addr().unwrap().to_string();
        let c = config(d.path(), serde_json::json!({"metrics": {"listen": listen}}));
        assert_eq!(check_environment(&c), Vec::new());
        let warnings: Vec<String> = environment_warnings(&c)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].starts_with(&format!(
                "{main}: metrics.listen: cannot listen on {listen}: "
            )),
            "{warnings:#?}"
        );
        drop(held);
        assert!(environment_warnings(&c).is_empty());
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
