//! Running a plugin's jobs in its own tests, without the daemon.
//!
//! A [`TestJob`] plays the daemon's part for one job: it builds the job configuration and the
//! job document, creates the runner through the plugin's exported root module and calls it
//! with a host context of its own, exactly as the daemon does (so the JSON round trips, the
//! panic guard and the forwarding of `tracing` events are the real ones). The job gets a fresh
//! temporary directory with its `work` and `results` directories, removed when the `TestJob`
//! drops. The [`Report`] holds the outcome and everything the job sent: its log lines, its
//! WORK_DATA (filtered as the daemon filters it) and its progress. A [`Canceller`] stops the
//! job as a Zuul stop or a shutdown would.
//!
//! ```
//! use turbo_hipster_sdk::testing::TestJob;
//! use turbo_hipster_sdk::{Context, JobConfig, Outcome, Plugin, PluginError};
//!
//! struct Count;
//!
//! impl Plugin for Count {
//!     const NAME: &'static str = "count";
//!     const VERSION: &'static str = "0.1.0";
//!     const DEFAULT_JOB: &'static str = "build:count";
//!     const DESCRIPTION: &'static str = "counts to the job's TO parameter";
//!
//!     fn new(_config: &JobConfig) -> Result<Self, PluginError> {
//!         Ok(Count)
//!     }
//!
//!     fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError> {
//!         let to: u64 = ctx.job().param("TO").unwrap_or("1").parse().map_err(|_| PluginError::msg("TO: not a number"))?;
//!         for i in 1..=to {
//!             if ctx.wait_cancelled(std::time::Duration::from_millis(10)) {
//!                 return Ok(Outcome::aborted());
//!             }
//!             ctx.progress(i, to);
//!         }
//!         tracing::info!("counted to {to}");
//!         ctx.send_work_data(&serde_json::json!({"counted": to}));
//!         std::fs::write(ctx.results_dir().join("count.txt"), to.to_string())?;
//!         Ok(Outcome::success())
//!     }
//! }
//!
//! // A job with parameters, run as the daemon would run it.
//! let job = TestJob::new("build:count").param("TO", "3");
//! let report = job.run::<Count>().expect("the plugin accepts its configuration");
//! assert_eq!(report.result(), "SUCCESS");
//! assert_eq!(report.progress, [(1, 3), (2, 3), (3, 3)]);
//! assert_eq!(report.work_data, [serde_json::json!({"counted": 3})]);
//! assert!(report.logged("counted to 3"));
//! assert_eq!(std::fs::read_to_string(job.results_dir().join("count.txt")).unwrap(), "3");
//!
//! // A job stopped while it runs.
//! let job = TestJob::new("build:count").param("TO", "1000");
//! let canceller = job.canceller();
//! std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_millis(50));
//!     canceller.cancel();
//! });
//! assert_eq!(job.run::<Count>().unwrap().result(), "ABORTED");
//!
//! // A plugin error fails the job with its message, as in the daemon.
//! let report = TestJob::new("build:count").param("TO", "many").run::<Count>().unwrap();
//! assert_eq!(report.outcome.unwrap_err(), "TO: not a number");
//! ```
//!
//! `tracing` events reach the report through the global subscriber the SDK installs in the
//! plugin's process (here the test's); a test binary that installs its own global subscriber
//! first keeps its own, and the report then holds only what [`Context::log`] sent.
//!
//! [`Context::log`]: crate::Context::log

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString};
use serde_json::{Map, Value};

use crate::abi::{Host, Host_TO, RunnerBox, JSON_SCHEMA};
use crate::job::{HostSettings, Job, JobConfig, Outcome};
use crate::Plugin;

/// One job to run: its configuration, parameters and directories.
pub struct TestJob {
    config: JobConfig,
    job: Job,
    dir: tempfile::TempDir,
    cancel: Canceller,
}

impl TestJob {
    /// A job of Gearman function `function` (`build:<name>`), with no configuration keys, no
    /// parameters, the unique id `test-job` and the host's `jobs_working_dir` and
    /// `git_working_dir` inside its temporary directory.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn new(function: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("th-plugin-test-")
            .tempdir()
            .expect("a temporary directory for the test job");
        let host = HostSettings {
            worker_name: "th-test".into(),
            jobs_working_dir: dir.path().join("jobs"),
            git_working_dir: dir.path().join("git"),
            ..HostSettings::default()
        };
        let name = function.strip_prefix("build:").unwrap_or(function);
        TestJob {
            config: JobConfig {
                schema: JSON_SCHEMA,
                function: function.into(),
                source: "the test's job".into(),
                host,
                ..JobConfig::default()
            },
            job: Job {
                schema: JSON_SCHEMA,
                name: name.into(),
                function: function.into(),
                unique: "test-job".into(),
                ..Job::default()
            },
            dir,
            cancel: Canceller::default(),
        }
    }

    /// Sets a key of the job's configuration (as in its entry of the daemon's `config.json`).
    pub fn config(mut self, key: &str, value: Value) -> Self {
        self.config.config.insert(key.into(), value);
        self
    }

    /// The job's configuration keys, to change between runs.
    pub fn config_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.config.config
    }

    /// Sets a job parameter (what Zuul sends: `ZUUL_PROJECT`, `ZUUL_REF`, …).
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.job.parameters.insert(key.into(), value.into());
        self
    }

    /// Sets the Gearman unique id (Zuul's `ZUUL_UUID`).
    pub fn unique(mut self, unique: &str) -> Self {
        self.job.unique = unique.into();
        self
    }

    /// Changes the daemon-wide settings the plugin sees.
    pub fn host_settings(mut self, edit: impl FnOnce(&mut HostSettings)) -> Self {
        edit(&mut self.config.host);
        self
    }

    /// The job's parameters, to change after the job was built (between runs too).
    pub fn parameters_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.job.parameters
    }

    /// The job's temporary directory (removed when the `TestJob` drops), for the test's own
    /// files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The job's working directory ([`crate::Context::working_dir`]).
    pub fn working_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The job's results directory ([`crate::Context::results_dir`]).
    pub fn results_dir(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    /// A handle that cancels the job from another thread (or before it starts).
    pub fn canceller(&self) -> Canceller {
        self.cancel.clone()
    }

    /// Creates the plugin's runner for this job's configuration and runs the job once, as the
    /// daemon does: [`Plugin::new`], then [`Plugin::run`] on the calling thread.
    ///
    /// # Errors
    /// The plugin refused the configuration (or panicked creating the runner): the message
    /// the daemon would print.
    pub fn run<P: Plugin>(&self) -> Result<Report, String> {
        let runner = self.runner::<P>()?;
        Ok(self.run_with(&runner))
    }

    /// The plugin's runner for this job's configuration, to run several jobs with
    /// ([`TestJob::run_with`]), as the daemon keeps one per configured job.
    ///
    /// # Errors
    /// As [`TestJob::run`].
    pub fn runner<P: Plugin>(&self) -> Result<RunnerBox, String> {
        let mut config = self.config.clone();
        config.plugin = P::NAME.into();
        let json = serde_json::to_string(&config)
            .map_err(|e| format!("cannot encode the job config: {e}"))?;
        let host = Recorder::new(String::from("{}"), self);
        let module = crate::export::root_module::<P>();
        match (module.new_runner())(RStr::from_str(&json), Host_TO::from_ptr(&host, TD_Opaque)) {
            RResult::ROk(runner) => Ok(runner),
            RResult::RErr(e) => Err(e.message.into_string()),
        }
    }

    /// Runs this job with a runner made by [`TestJob::runner`] (of this or another `TestJob`).
    pub fn run_with(&self, runner: &RunnerBox) -> Report {
        // The job document as the daemon makes it: the job's configuration and host settings
        // travel with every job.
        let job = Job {
            config: self.config.config.clone(),
            host: self.config.host.clone(),
            ..self.job.clone()
        };
        let job_json = serde_json::to_string(&job).unwrap_or_else(|_| "{}".into());
        let host = Recorder::new(job_json, self);
        let outcome = match runner.run(Host_TO::from_ptr(&host, TD_Opaque)) {
            RResult::ROk(json) => serde_json::from_str::<Outcome>(json.as_str())
                .map_err(|e| format!("the plugin returned an unreadable outcome: {e}")),
            RResult::RErr(e) => Err(e.message.into_string()),
        };
        let sent = host.into_sent();
        Report {
            outcome,
            logs: sent.logs,
            work_data: sent.work_data,
            progress: sent.progress,
            host_warnings: sent.host_warnings,
        }
    }
}

/// Cancels a [`TestJob`]: what the job sees through [`crate::Context::is_cancelled`] and
/// [`crate::Context::wait_cancelled`]. Clones share the one flag.
#[derive(Clone, Default)]
pub struct Canceller(Arc<(Mutex<bool>, Condvar)>);

impl Canceller {
    /// Cancels the job (and every later run of the same `TestJob`).
    pub fn cancel(&self) {
        *self.flag() = true;
        self.0 .1.notify_all();
    }

    /// Whether [`Canceller::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.flag()
    }

    fn flag(&self) -> MutexGuard<'_, bool> {
        self.0 .0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut cancelled = self.flag();
        while !*cancelled {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            cancelled = match self.0 .1.wait_timeout(cancelled, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *cancelled
    }
}

/// One log line the job sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: tracing::Level,
    /// The `tracing` target (the module that logged), empty for [`crate::Context::log`].
    pub target: String,
    /// The message.
    pub message: String,
}

/// How one job ended and what it sent meanwhile, in the order sent.
#[derive(Debug)]
pub struct Report {
    /// The outcome, or the message the job fails with in the daemon (a [`crate::PluginError`]
    /// or a panic caught at the boundary).
    pub outcome: Result<Outcome, String>,
    /// Log lines, from [`crate::Context::log`] and from `tracing` on the job's threads.
    pub logs: Vec<LogLine>,
    /// WORK_DATA as the daemon sends it to Zuul: JSON objects, without a `result` key.
    pub work_data: Vec<Value>,
    /// Progress reports (WORK_STATUS numerator, denominator).
    pub progress: Vec<(u64, u64)>,
    /// What the daemon would have warned about: work data that is not a JSON object (left
    /// out of `work_data`), or that carries `result` (the key is dropped).
    pub host_warnings: Vec<String>,
}

impl Report {
    /// The job's result as the daemon records it (`SUCCESS`, a failure's lines, or the error).
    pub fn result(&self) -> String {
        match &self.outcome {
            Ok(outcome) => outcome.clone().into_parts().0,
            Err(message) => message.clone(),
        }
    }

    /// Whether a log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(text))
    }
}

#[derive(Default)]
struct Sent {
    logs: Vec<LogLine>,
    work_data: Vec<Value>,
    progress: Vec<(u64, u64)>,
    host_warnings: Vec<String>,
}

/// The host context of a test job: records what the job sends.
struct Recorder {
    job_json: String,
    working_dir: PathBuf,
    results_dir: PathBuf,
    cancel: Canceller,
    sent: Mutex<Sent>,
}

impl Recorder {
    fn new(job_json: String, job: &TestJob) -> Self {
        Recorder {
            job_json,
            working_dir: job.working_dir(),
            results_dir: job.results_dir(),
            cancel: job.canceller(),
            sent: Mutex::new(Sent::default()),
        }
    }

    fn sent(&self) -> MutexGuard<'_, Sent> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn into_sent(self) -> Sent {
        self.sent
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn dir(dir: &Path) -> RString {
        // As the daemon: made when first asked for; a failure shows when the job uses it.
        let _ = std::fs::create_dir_all(dir);
        RString::from(dir.display().to_string())
    }
}

fn level(code: u8) -> tracing::Level {
    match code {
        1 => tracing::Level::ERROR,
        2 => tracing::Level::WARN,
        3 => tracing::Level::INFO,
        4 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

impl Host for Recorder {
    fn job_json(&self) -> RString {
        RString::from(self.job_json.as_str())
    }

    fn log(&self, code: u8, target: RStr<'_>, message: RStr<'_>) {
        self.sent().logs.push(LogLine {
            level: level(code),
            target: target.as_str().into(),
            message: message.as_str().into(),
        });
    }

    fn progress(&self, numerator: u64, denominator: u64) {
        self.sent().progress.push((numerator, denominator));
    }

    fn send_work_data(&self, json: RStr<'_>) {
        let mut sent = self.sent();
        match serde_json::from_str::<Value>(json.as_str()) {
            Ok(Value::Object(mut map)) => {
                if map.remove("result").is_some() {
                    sent.host_warnings
                        .push("work data may not carry \"result\"; dropped that key".into());
                }
                sent.work_data.push(Value::Object(map));
            }
            _ => sent.host_warnings.push(format!(
                "ignored work data that is not a JSON object: {json}"
            )),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn wait_cancelled(&self, timeout_ms: u64) -> bool {
        self.cancel.wait(Duration::from_millis(timeout_ms))
    }

    fn working_dir(&self) -> RString {
        Self::dir(&self.working_dir)
    }

    fn results_dir(&self) -> RString {
        Self::dir(&self.results_dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Context, PluginError};

    /// Does what its job's `DO` parameter says; refuses a configuration with `refuse`.
    struct Odd;

    impl Plugin for Odd {
        const NAME: &'static str = "odd";
        const VERSION: &'static str = "0";
        const DEFAULT_JOB: &'static str = "build:odd";
        const DESCRIPTION: &'static str = "misbehaves on request";

        fn new(config: &JobConfig) -> Result<Self, PluginError> {
            match config.config.get("refuse") {
                Some(why) => Err(PluginError::config(format!("refuse: {why}"))),
                None => Ok(Odd),
            }
        }

        fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError> {
            match ctx.job().param("DO") {
                Some("panic") => panic!("boom"),
                Some("bad data") => {
                    ctx.send_work_data(&serde_json::json!({"result": "SUCCESS", "n": 1}));
                    ctx.send_work_data(&serde_json::json!([1, 2]));
                }
                Some("describe") => {
                    let job = ctx.job();
                    let text = format!(
                        "{} {} {} {}",
                        job.name, job.unique, job.config["key"], job.host.worker_name
                    );
                    ctx.log(tracing::Level::WARN, &text);
                }
                _ => {}
            }
            Ok(Outcome::success())
        }
    }

    #[test]
    fn panics_refusals_and_bad_work_data_are_reported_as_the_daemon_would() {
        let report = TestJob::new("build:odd").param("DO", "panic").run::<Odd>();
        assert_eq!(
            report.unwrap().outcome.unwrap_err(),
            "plugin panicked in run: boom"
        );
        let refused = TestJob::new("build:odd")
            .config("refuse", serde_json::json!("no"))
            .run::<Odd>();
        assert_eq!(refused.unwrap_err(), "refuse: \"no\"");
        let report = TestJob::new("build:odd")
            .param("DO", "bad data")
            .run::<Odd>()
            .unwrap();
        assert_eq!(report.work_data, [serde_json::json!({"n": 1})]);
        assert_eq!(report.host_warnings.len(), 2, "{:?}", report.host_warnings);
        assert_eq!(report.result(), "SUCCESS");
    }

    #[test]
    fn the_job_document_carries_the_configuration_and_settings() {
        let job = TestJob::new("build:odd")
            .param("DO", "describe")
            .unique("u-1")
            .config("key", serde_json::json!("v"))
            .host_settings(|h| h.worker_name = "w".into());
        let runner = job.runner::<Odd>().unwrap();
        for _ in 0..2 {
            let report = job.run_with(&runner);
            let line = &report.logs[0];
            assert_eq!(line.level, tracing::Level::WARN);
            assert_eq!(line.message, "odd u-1 \"v\" w");
        }
    }
}
