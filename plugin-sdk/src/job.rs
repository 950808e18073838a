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
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The verdict Zuul reads: `SUCCESS`, or lines describing each failure.
    pub result: String,
    /// Structured details kept with the build (summaries, figures).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
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

    /// Any result string.
    pub fn with_result(result: impl Into<String>) -> Self {
        Self {
            result: result.into(),
            details: Value::Null,
        }
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
