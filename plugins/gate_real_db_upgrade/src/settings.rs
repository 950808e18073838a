//! The job configuration of the plugin (its entry in the daemon's `config.json`), validated.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `datasets_dir` | directory of datasets | `/var/lib/turbo-hipster/datasets` |
//! | `max_parallel_datasets` | how many datasets of one job run at once (1 to 64) | 1 |
//! | `timeout` | seconds one dataset's run may take, unless the dataset sets its own (over 0, at most 604800: a week) | 3600 |
//! | `connection` | `{host, port, socket, user, password}`: how to reach the database server, read like a dataset's (the SDK's [`Checker::connection`]: unknown fields are logged warnings, `_` keys comments); a dataset's own keys win | engine defaults |
//! | `engine` | `mysql`, `mariadb`, `postgresql` or `sqlite`: the engine of datasets that do not name one | none |
//! | `git_retries` | how many times to try fetching the change (1 to 100) | 3 |
//! | `keep_databases` | debugging: keep each run's database instead of dropping it | false |
//! | `lock_sample_interval` | milliseconds between two samples of a run database's locks (whole, at most 60000; `0` or `false`: off), unless the dataset sets its own | 100 |
//! | `git_timeout` | seconds one git command may run | 1800 |
//! | `git_stall_timeout` | seconds a git command may go without progress | 300 |
//! | `git_protocols` | transports `ZUUL_URL` may use | `["http", "https", "git", "ssh", "file"]` |
//! | `pass_parameters` | build parameters (`NAME` or `PREFIX*`) passed to the migration tool besides Zuul's; never one that changes how programs start | none |
//! | `regression_factor` | K: a migration slower than K times its median in the history of the dataset gets `WARNING - Migration … took N× longer than usual …` ([`crate::regression`]); a number from 1, or `false`: off | 3 |
//! | `regression_min_samples` | how many earlier runs of the migration the history needs before it judges (whole, 1 to 1000000) | 10 |
//! | `regression_min_ms` | a run shorter than this many milliseconds is not judged (whole, 0 to 86400000) | 1000 |
//! | `containment` | `{run_as, memory_mib, processes, open_files, network_namespace}`: how the migration tool runs ([`turbo_hipster_sdk::support::contain`]) | `nobody` when root, 4096, 512, 4096, false |
//!
//! With `containment.network_namespace`, the tool has only loopback: every tool-mode dataset
//! on MySQL/MariaDB or PostgreSQL must reach its server through `connection.socket` (TCP,
//! even to 127.0.0.1, reaches the namespace's own loopback, not the host's server), else the
//! configuration is refused ([`Settings::dataset_problems`]).
//!
//! Other keys (the original's `shutdown-th`, `function`, …) are ignored.
//!
//! The keys are read with the SDK's checker ([`turbo_hipster_sdk::config`]): every problem at
//! once, worded as in the daemon's config and the datasets; `connection` is read as a
//! dataset's (host without whitespace, port 1 to 65535, absolute socket, non-empty user; an
//! unknown field is a logged warning).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use turbo_hipster_sdk::config::{present, Checker, PathNeed, Unknown};
use turbo_hipster_sdk::support::contain::Containment;
use turbo_hipster_sdk::support::env::ParameterFilter;
use turbo_hipster_sdk::support::git::{self, GitOptions};
use turbo_hipster_sdk::PluginError;

use crate::dataset::{
    lock_sample_interval, Dataset, DatasetDefaults, Migration, KEY_LOCK_SAMPLE, TIMEOUT_RANGE,
};
use crate::engine::Engine;

/// Where datasets live unless the job says otherwise.
pub const DEFAULT_DATASETS_DIR: &str = "/var/lib/turbo-hipster/datasets";
/// The default limit on one dataset's run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most datasets a job may run at once.
pub const MAX_PARALLEL: usize = 64;

/// A validated job configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The datasets directory.
    pub datasets_dir: PathBuf,
    /// How many datasets run at once.
    pub max_parallel: usize,
    /// The default limit on one dataset's run.
    pub timeout: Duration,
    /// Defaults for the datasets: `connection` and `engine`.
    pub defaults: DatasetDefaults,
    /// How many times to try fetching the change.
    pub git_attempts: u32,
    /// Keep each run's database (debugging).
    pub keep_databases: bool,
    /// The git limits and transports (`git_timeout`, `git_stall_timeout`, `git_protocols`).
    pub git: GitOptions,
    /// Which build parameters reach the migration tool (`pass_parameters`).
    pub parameters: ParameterFilter,
    /// How the migration tool is contained (`containment`).
    pub containment: Containment,
    /// The regression warning (`regression_factor`, `regression_min_samples`); `None`: off.
    pub regression: Option<th_history::RegressionRule>,
}

/// The default `regression_factor`.
pub const DEFAULT_REGRESSION_FACTOR: f64 = 3.0;
/// The default `regression_min_samples`.
pub const DEFAULT_REGRESSION_MIN_SAMPLES: usize = 10;
/// The default `regression_min_ms`: a migration of under a second is not judged.
pub const DEFAULT_REGRESSION_MIN_MS: i64 = 1000;

impl Default for Settings {
    fn default() -> Self {
        Self {
            datasets_dir: PathBuf::from(DEFAULT_DATASETS_DIR),
            max_parallel: 1,
            timeout: DEFAULT_TIMEOUT,
            defaults: DatasetDefaults::default(),
            git_attempts: git::DEFAULT_ATTEMPTS,
            keep_databases: false,
            git: GitOptions::default(),
            parameters: ParameterFilter::zuul_only(),
            containment: Containment::default(),
            regression: Some(th_history::RegressionRule {
                factor: DEFAULT_REGRESSION_FACTOR,
                min_samples: DEFAULT_REGRESSION_MIN_SAMPLES,
                min_ms: DEFAULT_REGRESSION_MIN_MS,
            }),
        }
    }
}

impl Settings {
    /// Validates a job's configuration keys.
    ///
    /// # Errors
    /// [`PluginError::Config`] listing every problem, each starting with its key.
    pub fn from_config(config: &Map<String, Value>) -> Result<Self, PluginError> {
        let mut c = Checker::bare();
        let mut s = Settings::default();
        let get = |key: &'static str| present(config, key).map(|v| (key, v));
        if let Some(d) =
            get("datasets_dir").and_then(|(k, v)| c.path(k, v, Path::new(""), PathNeed::Any))
        {
            s.datasets_dir = d;
        }
        if let Some(n) =
            get("max_parallel_datasets").and_then(|(k, v)| c.integer(k, v, 1..=MAX_PARALLEL as u64))
        {
            s.max_parallel = usize::try_from(n).unwrap_or(1);
        }
        if let Some(t) = get("timeout").and_then(|(k, v)| c.seconds(k, v, TIMEOUT_RANGE)) {
            s.timeout = t;
        }
        if let Some((k, v)) = get("engine") {
            s.defaults.engine = Engine::check(&mut c, k, v);
        }
        // The datasets read their `connection` the same way: the same rules and words.
        if let Some(conn) =
            get("connection").and_then(|(k, v)| c.connection(k, v, Unknown::WarnUnlessComment))
        {
            s.defaults.connection = conn;
        }
        if let Some(n) = get("git_retries").and_then(|(k, v)| c.integer(k, v, 1..=MAX_GIT_RETRIES))
        {
            s.git_attempts = u32::try_from(n).unwrap_or(git::DEFAULT_ATTEMPTS);
        }
        if let Some(b) = get("keep_databases").and_then(|(k, v)| c.boolean(k, v)) {
            s.keep_databases = b;
        }
        if let Some((k, v)) = get(KEY_LOCK_SAMPLE) {
            match lock_sample_interval(v) {
                Ok(every) => s.defaults.lock_sample = every,
                Err(what) => c.error(k, what),
            }
        }
        if let Some((k, v)) = get("regression_factor") {
            match v {
                Value::Bool(false) => s.regression = None,
                v => {
                    if let (Some(rule), Some(factor)) = (&mut s.regression, c.number(k, v, 1.0)) {
                        rule.factor = factor;
                    }
                }
            }
        }
        if let Some(n) =
            get("regression_min_samples").and_then(|(k, v)| c.integer(k, v, 1..=1_000_000))
        {
            if let Some(rule) = &mut s.regression {
                rule.min_samples = usize::try_from(n).unwrap_or(DEFAULT_REGRESSION_MIN_SAMPLES);
            }
        }
        if let Some(n) = get("regression_min_ms").and_then(|(k, v)| c.integer(k, v, 0..=86_400_000))
        {
            if let Some(rule) = &mut s.regression {
                rule.min_ms = i64::try_from(n).unwrap_or(DEFAULT_REGRESSION_MIN_MS);
            }
        }
        s.git.read_config(&mut c, config);
        s.parameters = ParameterFilter::check(&mut c, config);
        s.containment = Containment::check(&mut c, config);
        c.finish_plugin(s)
    }

    /// The git options of a fetch: the configured ones with the job's `git_retries`.
    pub fn git_options(&self) -> GitOptions {
        GitOptions {
            attempts: self.git_attempts,
            ..self.git.clone()
        }
    }

    /// What this configuration refuses in `datasets`, one line each (`<file>: <key>: <what>`):
    /// with a network namespace, a tool-mode dataset on a database server must use its
    /// unix socket.
    pub fn dataset_problems(&self, datasets: &[Dataset]) -> Vec<String> {
        if !self.containment.network_namespace {
            return Vec::new();
        }
        datasets
            .iter()
            .filter(|d| {
                d.engine.default_port().is_some()
                    && d.connection.socket.is_none()
                    && matches!(d.migration, Migration::Tool { .. })
            })
            .map(|d| {
                format!(
                    "{}: connection.socket: required with containment.network_namespace: the \
                     migration tool reaches the {} server only through its unix socket (TCP, \
                     even to 127.0.0.1, stays inside the tool's own network namespace)",
                    d.source.display(),
                    d.engine.name()
                )
            })
            .collect()
    }
}

/// The most `git_retries` accepted.
const MAX_GIT_RETRIES: u64 = 100;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_and_ignored_keys() {
        let s = Settings::from_config(&config(json!({
            "shutdown-th": true,
            "function": "build:x",
        })))
        .unwrap();
        assert_eq!(s.datasets_dir, PathBuf::from(DEFAULT_DATASETS_DIR));
        assert_eq!(s.max_parallel, 1);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.git_attempts, 3);
        assert!(!s.keep_databases);
        assert_eq!(s.defaults.engine, None);
    }

    #[test]
    fn reads_every_key() {
        let s = Settings::from_config(&config(json!({
            "datasets_dir": "/d",
            "max_parallel_datasets": 4,
            "timeout": 1.5,
            "engine": "PostgreSQL",
            "connection": {"host": "db", "port": 5433, "user": "u", "password": "p", "socket": "/run/pg"},
            "git_retries": 5,
            "keep_databases": true,
        })))
        .unwrap();
        assert_eq!(s.datasets_dir, PathBuf::from("/d"));
        assert_eq!(s.max_parallel, 4);
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(s.defaults.engine, Some(Engine::PostgreSql));
        assert_eq!(s.defaults.connection.host.as_deref(), Some("db"));
        assert_eq!(s.defaults.connection.port, Some(5433));
        assert_eq!(s.defaults.connection.user.as_deref(), Some("u"));
        assert_eq!(s.defaults.connection.password.as_deref(), Some("p"));
        assert_eq!(
            s.defaults.connection.socket.as_deref(),
            Some(std::path::Path::new("/run/pg"))
        );
        assert_eq!(s.git_attempts, 5);
        assert!(s.keep_databases);
    }

    #[test]
    fn reports_every_problem() {
        let PluginError::Config(problems) = Settings::from_config(&config(json!({
            "datasets_dir": 3,
            "max_parallel_datasets": 0,
            "timeout": 1e9,
            "engine": "oracle",
            "connection": {"port": 70000, "user": 1, "flavour": "x"},
            "git_retries": 0,
            "keep_databases": "yes",
        })))
        .unwrap_err() else {
            panic!("not a config error")
        };
        assert_eq!(
            problem_keys(&problems),
            [
                "datasets_dir",
                "max_parallel_datasets",
                "timeout",
                "engine",
                "connection.port",
                "connection.user",
                "git_retries",
                "keep_databases"
            ],
            "{problems:?}"
        );
    }

    /// The key each problem names (the text before its first `:`).
    fn problem_keys(problems: &[String]) -> Vec<&str> {
        problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect()
    }

    /// The regression warning's keys: defaults, each read, `false` turns it off, bad values
    /// named.
    #[test]
    fn regression_keys() {
        let rule = |v: Value| Settings::from_config(&config(v)).map(|s| s.regression);
        let default = rule(json!({})).unwrap().unwrap();
        assert_eq!(default.factor, DEFAULT_REGRESSION_FACTOR);
        assert_eq!(default.min_samples, DEFAULT_REGRESSION_MIN_SAMPLES);
        assert_eq!(default.min_ms, DEFAULT_REGRESSION_MIN_MS);
        let set = rule(json!({
            "regression_factor": 2.5,
            "regression_min_samples": 4,
            "regression_min_ms": 0,
        }))
        .unwrap()
        .unwrap();
        assert_eq!((set.factor, set.min_samples, set.min_ms), (2.5, 4, 0));
        assert!(rule(json!({"regression_factor": false})).unwrap().is_none());
        let Err(PluginError::Config(problems)) = rule(json!({
            "regression_min_ms": -1,
            "regression_min_samples": 0,
        })) else {
            panic!("not a config error")
        };
        assert_eq!(
            problem_keys(&problems),
            ["regression_min_samples", "regression_min_ms"],
            "{problems:?}"
        );
    }

    /// The job's `lock_sample_interval` is the datasets' default, read by their rule.
    #[test]
    fn lock_sample_interval_is_the_datasets_default() {
        let every = |v: Value| {
            Settings::from_config(&config(json!({"lock_sample_interval": v})))
                .map(|s| s.defaults.lock_sample)
        };
        assert_eq!(every(json!(250)).unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(every(json!(false)).unwrap(), None);
        assert_eq!(every(json!(0)).unwrap(), None);
        assert_eq!(
            Settings::default().defaults.lock_sample,
            Some(Duration::from_millis(100))
        );
        let Err(PluginError::Config(problems)) = every(json!("fast")) else {
            panic!("not a config error")
        };
        assert!(
            problems[0].starts_with("lock_sample_interval: must be whole milliseconds"),
            "{problems:?}"
        );
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("d.json");
        std::fs::write(
            &file,
            json!({"project": "a/b", "seed_data": "s.sql"}).to_string(),
        )
        .unwrap();
        let defaults = Settings::from_config(&config(json!({"lock_sample_interval": 0})))
            .unwrap()
            .defaults;
        let (d, _) = crate::dataset::load_dataset(&file, "d", tmp.path(), &defaults).unwrap();
        assert_eq!(d.lock_sample, None, "the job turned it off");
    }

    /// The job config's `connection` and a dataset's are read by one parser: the same value
    /// gives the same connection, or the same problems (the dataset's prefixed by its file).
    #[test]
    fn job_and_dataset_connections_follow_the_same_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = |connection: &Value| {
            let file = tmp.path().join("d.json");
            let text = json!({"project": "a/b", "seed_data": "s.sql", "connection": connection});
            std::fs::write(&file, text.to_string()).unwrap();
            let defaults = DatasetDefaults::default();
            crate::dataset::load_dataset(&file, "d", tmp.path(), &defaults)
                .map(|(d, _)| d.connection)
                .map_err(|errors| {
                    let prefix = format!("{}: ", file.display());
                    errors
                        .iter()
                        .map(|e| e.strip_prefix(&prefix).unwrap().to_string())
                        .collect::<Vec<_>>()
                })
        };
        let job = |connection: &Value| {
            Settings::from_config(&config(json!({ "connection": connection })))
                .map(|s| s.defaults.connection)
                .map_err(|e| match e {
                    PluginError::Config(problems) => problems,
                    other => panic!("{other:?}"),
                })
        };
        for connection in [
            json!({"host": "db", "port": 5433, "user": "u", "password": "", "socket": "/run/pg"}),
            json!({"host": "", "port": 0, "socket": "run/pg", "user": null, "password": 1}),
            json!({"host": "a b", "flavour": "x"}),
            json!("db:3306"),
        ] {
            let from_job = job(&connection);
            assert_eq!(from_job, dataset(&connection), "{connection}");
            assert!(
                from_job
                    .as_ref()
                    .map_or_else(|e| !e.is_empty(), |c| c.host.is_some()),
                "{connection}: {from_job:?}"
            );
        }
    }
}
