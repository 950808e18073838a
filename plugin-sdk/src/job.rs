//! The JSON documents that cross the boundary, as typed Rust values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::results;

/// Daemon-wide settings a plugin may need (from the host's `config.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostSettings {
    /// The name this worker registers with Gearman.
    pub worker_name: String,
    /// Where per-job working directories live.
    pub jobs_working_dir: PathBuf,
    /// Where cached git mirrors live.
    pub git_working_dir: PathBuf,
    /// A pip download cache to hand to tools, if configured.
    pub pip_download_cache: Option<PathBuf>,
    /// The default git origin (`zuul_server.git_origin`), if configured.
    pub git_origin: Option<String>,
    /// Set by `turbo-hipster check-config`: the plugin is asked to also report what a job
    /// would refuse later but the daemon's start tolerates (files that may appear later, such
    /// as a dataset's seed), as configuration errors.
    pub check_only: bool,
    /// Set when the host is about to serve jobs (the daemon, `run-job`; not `check-config` or
    /// `plugins`): a plugin's runner may then remove what runs of killed predecessors left
    /// (see [`crate::support::owner`]).
    pub clean_leftovers: bool,
    /// Set by `turbo-hipster prepare-datasets`: a plugin that keeps prepared copies of its data
    /// (the gate plugin's golden copies) makes them now, in [`crate::Plugin::new`], and
    /// reports a failure as a configuration error.
    pub prepare_datasets: Option<PrepareDatasets>,
    /// The per-migration history database (config `history_database`): a SQLite file's path
    /// or a `postgres://` URL; `None` from a host without one. A plugin may read it (the gate
    /// plugin's regression warning) and write it (`import-logs`); the daemon records every
    /// job's migrations there itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_database: Option<String>,
    /// Set by `turbo-hipster import-logs`: a plugin that can read job logs of the original
    /// turbo-hipster imports them into the history now, in [`crate::Plugin::new`], prints what
    /// it imported and skipped, and reports the files it could not read as configuration
    /// errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_logs: Option<ImportLogs>,
}

/// What `turbo-hipster import-logs` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ImportLogs {
    /// The files and directories given (directories are searched for `*.log`).
    pub paths: Vec<PathBuf>,
    /// The dataset the logs belong to (`--dataset`); `None`: each file's name without `.log`.
    pub dataset: Option<String>,
}

/// What `turbo-hipster prepare-datasets` asks for.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PrepareDatasets {
    /// Build again even what is up to date (`--rebuild`).
    pub rebuild: bool,
    /// Remove what belongs to data that no longer exists (`--prune`).
    pub prune: bool,
}

/// One configured job, as handed to [`crate::Plugin::new`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct JobConfig {
    /// JSON schema version ([`crate::abi::JSON_SCHEMA`]).
    pub schema: u32,
    /// The plugin's name.
    pub plugin: String,
    /// The Gearman function, as registered (`build:` included).
    pub function: String,
    /// The plugin keys of this job's entry in `config.json` (everything but `name`, `function`,
    /// `job` and `plugin`).
    pub config: Map<String, Value>,
    /// Where in the config file this job was defined, for error messages.
    pub source: String,
    /// Daemon-wide settings.
    pub host: HostSettings,
}

/// One Gearman job, as seen by [`crate::Plugin::run`] through [`crate::Context::job`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Job {
    /// JSON schema version ([`crate::abi::JSON_SCHEMA`]).
    pub schema: u32,
    /// The job name, without `build:` (`gate-real-db-upgrade`).
    pub name: String,
    /// The Gearman function as registered (`build:gate-real-db-upgrade`).
    pub function: String,
    /// The Gearman unique id (Zuul's `ZUUL_UUID`).
    pub unique: String,
    /// The job's parameters (validated by the host: strings only).
    pub parameters: BTreeMap<String, String>,
    /// The job's configuration, as in [`JobConfig::config`].
    pub config: Map<String, Value>,
    /// Daemon-wide settings.
    pub host: HostSettings,
}

impl Job {
    /// A parameter, if present and not empty.
    ///
    /// ```
    /// let mut job = turbo_hipster_sdk::Job::default();
    /// job.parameters.insert("ZUUL_PROJECT".into(), "openstack/nova".into());
    /// job.parameters.insert("ZUUL_BRANCH".into(), "".into());
    /// assert_eq!(job.param("ZUUL_PROJECT"), Some("openstack/nova"));
    /// assert_eq!(job.param("ZUUL_BRANCH"), None);
    /// ```
    pub fn param(&self, key: &str) -> Option<&str> {
        self.parameters
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// How a job ended, as returned by [`crate::Plugin::run`].
///
/// ```
/// use turbo_hipster_sdk::Outcome;
///
/// let passed = Outcome::success();
/// assert!(passed.is_success());
/// let failed = Outcome::failure("FAILURE - 2 tests failed")
///     .with_details(serde_json::json!({"failed": ["a", "b"]}));
/// assert!(!failed.is_success());
/// assert_eq!(failed.result, "FAILURE - 2 tests failed");
///
/// // Not the change's fault: the host has Zuul run the build again instead of voting.
/// let lost = Outcome::infrastructure("database server lost: MariaDB at 127.0.0.1:3306");
/// assert_eq!(lost.result, "ERROR - infrastructure: database server lost: MariaDB at 127.0.0.1:3306");
/// assert_eq!(lost.infrastructure.as_deref(), Some("database server lost: MariaDB at 127.0.0.1:3306"));
/// ```
///
/// The JSON form only grows: `infrastructure` is left out when unset and defaults to unset, so
/// hosts and plugins of either side of the change read each other's outcomes (an older host
/// reports an infrastructure outcome as an ordinary failure, under its `ERROR - …` result).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The verdict Zuul reads: `SUCCESS`, or lines describing each failure.
    pub result: String,
    /// Structured details kept with the build (summaries, figures).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// Set when the build could not be judged because something outside the change failed
    /// (database server lost, disk full, git server unreachable): what failed. The daemon then
    /// reports no verdict, and Zuul runs the build again (see `docs/troubleshooting.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<String>,
}

impl Outcome {
    /// The job passed.
    pub fn success() -> Self {
        Self::with_result(results::SUCCESS)
    }

    /// The job was stopped before it finished.
    pub fn aborted() -> Self {
        Self::with_result(results::ABORTED)
    }

    /// The job failed; `message` is what Zuul reports.
    pub fn failure(message: impl Into<String>) -> Self {
        Self::with_result(message)
    }

    /// The build could not be judged because something outside the change failed; `what`
    /// says what (one line). The result is `ERROR - infrastructure: <what>`.
    pub fn infrastructure(what: impl Into<String>) -> Self {
        let what = what.into().replace('\n', " ");
        Self {
            infrastructure: Some(what.clone()),
            ..Self::with_result(results::infrastructure(&what))
        }
    }

    /// Any result string.
    pub fn with_result(result: impl Into<String>) -> Self {
        Self {
            result: result.into(),
            details: Value::Null,
            infrastructure: None,
        }
    }

    /// The result as the host records and reports it, with the details: an infrastructure
    /// outcome's result always carries the `ERROR - infrastructure: ` prefix, whatever the
    /// plugin put in `result`.
    pub fn into_parts(self) -> (String, Value) {
        let result = match &self.infrastructure {
            Some(what) if results::infrastructure_failure(&self.result).is_none() => {
                results::infrastructure(what)
            }
            _ => self.result,
        };
        (result, self.details)
    }

    /// Attaches structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Whether the result is `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.result == results::SUCCESS
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn infrastructure_outcomes_round_trip_and_old_json_still_reads() {
        let lost = Outcome::infrastructure("disk full\nwriting x");
        let json = serde_json::to_string(&lost).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), lost);
        assert_eq!(lost.result, "ERROR - infrastructure: disk full writing x");
        // An outcome from a plugin built before the field existed.
        let old: Outcome = serde_json::from_str(r#"{"result":"FAILURE - x"}"#).unwrap();
        assert_eq!(old.infrastructure, None);
        // An ordinary outcome serialises as before.
        let json = serde_json::to_string(&Outcome::success()).unwrap();
        assert_eq!(json, r#"{"result":"SUCCESS"}"#);
        // The host's result always carries the prefix.
        let odd: Outcome =
            serde_json::from_str(r#"{"result":"FAILURE - x","infrastructure":"git down"}"#)
                .unwrap();
        assert_eq!(odd.into_parts().0, "ERROR - infrastructure: git down");
        assert_eq!(
            Outcome::failure("FAILURE - y").into_parts().0,
            "FAILURE - y"
        );
    }
}
