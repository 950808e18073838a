//! A job's life, the same for Gearman jobs and `run-job`: validate, make its directories, run
//! the plugin on a thread of its own with a host context (in a child process of its own by
//! default, [`crate::isolation`]), publish its logs, report the outcome.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use serde::Serialize;
use serde_json::Value;
use turbo_hipster_sdk::abi::{Host_TO, JSON_SCHEMA};
use turbo_hipster_sdk::{Job, Outcome};

use crate::config::{Config, PublishLogs};
use crate::host_context::{CancelToken, EventSink, JobHost};
use crate::isolation::{self, Isolation};
pub use crate::job_dir::{HISTORY_FILE, JOB_SUMMARY, TASK_LOG, WORK_DIR};
use crate::journal;
use crate::plugins::{run_plugin, JobRunner, Registry};
use crate::zuul::{self, InvalidParameters};

/// A job to run.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The Gearman function.
    pub function: String,
    /// The Gearman unique (ZUUL_UUID).
    pub unique: String,
    /// Validated parameters.
    pub parameters: BTreeMap<String, String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    /// What Zuul gets as `result`.
    pub result: String,
    /// Plugin details.
    pub details: Value,
    /// Where the logs are.
    pub url: String,
    /// The job's results directory (before publishing).
    pub results_dir: PathBuf,
    /// Wall time.
    pub duration: Duration,
}

impl JobOutcome {
    /// Whether the job passed.
    pub fn is_success(&self) -> bool {
        self.result == turbo_hipster_sdk::results::SUCCESS
    }
}

/// A job whose directories exist and whose runner is known; ready to execute.
pub struct PreparedJob {
    /// The request.
    pub request: JobRequest,
    /// Its runner.
    pub runner: Arc<JobRunner>,
    /// `jobs_working_dir/<LOG_PATH or unique>`: the results; the work dir is inside.
    pub job_dir: PathBuf,
    /// Where the logs will be.
    pub url: String,
    log_path: String,
}

/// Why a job could not start. The job still gets a result line.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Parameters refused.
    #[error("{}", .0.result())]
    InvalidParameters(#[from] InvalidParameters),
    /// No such job here.
    #[error("FAILURE - this worker has no job \"{0}\"")]
    UnknownJob(String),
    /// The working directory could not be made.
    #[error("FAILURE - cannot create the job directory {}: {source}", .path.display())]
    Directory {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl PrepareError {
    /// The `result` for Zuul.
    pub fn result(&self) -> String {
        self.to_string()
    }
}

/// Validates a request and makes the job's directories.
///
/// # Errors
/// Invalid parameters, an unknown job, or a directory that cannot be made.
pub fn prepare(
    config: &Config,
    registry: &Registry,
    request: JobRequest,
) -> Result<PreparedJob, PrepareError> {
    zuul::validate(&request.parameters)?;
    if request.unique.len() > 64
        || !request
            .unique
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || request.unique.starts_with('.')
    {
        return Err(InvalidParameters("the Gearman unique id is not a plain name".into()).into());
    }
    let runner = registry
        .find(&request.function)
        .cloned()
        .ok_or_else(|| PrepareError::UnknownJob(request.function.clone()))?;
    let log_path = request
        .parameters
        .get("LOG_PATH")
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            if request.unique.is_empty() {
                zuul::random_uuid_hex()
            } else {
                request.unique.clone()
            }
        });
    ensure_jobs_dir(&config.jobs_working_dir)?;
    // The job dir holds the results; it (and the work dir inside it) is made when the plugin
    // first asks for it, so a job that writes nothing costs no directory.
    let job_dir = unique_dir(&config.jobs_working_dir.join(&log_path), &request.unique);
    let url = match &config.publish_logs {
        PublishLogs::Local { prepend_url, .. } if !prepend_url.is_empty() => {
            format!("{}/{}/", prepend_url.trim_end_matches('/'), log_path)
        }
        PublishLogs::Local { path, .. } => format!("file://{}/", path.join(&log_path).display()),
        PublishLogs::None => format!("file://{}/", job_dir.display()),
    };
    Ok(PreparedJob {
        request,
        runner,
        job_dir,
        url,
        log_path,
    })
}

/// Creates `jobs_working_dir` once per daemon (again only if it was removed meanwhile).
fn ensure_jobs_dir(dir: &Path) -> Result<(), PrepareError> {
    static MADE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if made.as_deref() == Some(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| PrepareError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    *made = Some(dir.to_path_buf());
    Ok(())
}

/// `dir`, or `dir.<unique>` if it exists already (a retried build keeps the old logs), then
/// `dir.<unique>.2`, … as a last resort.
fn unique_dir(dir: &Path, unique: &str) -> PathBuf {
    if !dir.exists() {
        return dir.to_path_buf();
    }
    let base = PathBuf::from(format!("{}.{unique}", dir.display()));
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .find(|p| !p.exists())
        .unwrap_or(base)
}

/// Called on the job's thread once the job is finished and its logs are in place: how the
/// daemon tells Zuul the result without a detour through the async runtime.
pub type OnFinish = Box<dyn FnOnce(&JobOutcome) + Send>;

/// Runs a prepared job to its end on a blocking thread of the async runtime. Progress and work
/// data go to `events`; `cancel` stops it.
pub async fn execute(
    config: Arc<Config>,
    job: PreparedJob,
    events: EventSink,
    cancel: CancelToken,
) -> JobOutcome {
    let fallback = (job.url.clone(), job.job_dir.clone());
    let started = Instant::now();
    let run = move || run_to_end(&config, &job, events, cancel, false, &mut |_| {});
    match tokio::task::spawn_blocking(run).await {
        Ok(outcome) => outcome,
        Err(join) => thread_failed(fallback, started, &join.to_string()),
    }
}

/// Starts a prepared job on a job thread ([`crate::job_threads`]) and returns at once;
/// `on_finish` gets the outcome on that thread, after the job's files are written and published
/// (so that the logs are in place when Zuul hears the result), without a detour through the
/// async runtime. `keep` is dropped once the job is completely over (its history line and log
/// line written after `on_finish`): hold in it what must outlive the job.
///
/// # Errors
/// No thread could be started for the job (`on_finish` is then not called).
pub fn launch(
    config: Arc<Config>,
    job: PreparedJob,
    events: EventSink,
    cancel: CancelToken,
    on_finish: OnFinish,
    keep: Box<dyn Send>,
) -> std::io::Result<()> {
    crate::job_threads::spawn(Box::new(move || {
        // Dropped last, once the job's history line and log line are written.
        let _keep = keep;
        let started = Instant::now();
        let mut on_finish = Some(on_finish);
        let mut report = |o: &JobOutcome| {
            if let Some(f) = on_finish.take() {
                f(o);
                // What is left is the history and log lines: the next job may have this
                // thread already.
                crate::job_threads::release_early();
            }
        };
        let run = std::panic::AssertUnwindSafe(|| {
            run_to_end(&config, &job, events, cancel, true, &mut report)
        });
        if std::panic::catch_unwind(run).is_err() {
            let fallback = (job.url.clone(), job.job_dir.clone());
            report(&thread_failed(fallback, started, "it panicked"));
        }
    }))
}

/// The outcome of a job whose thread failed: only a bug of ours gets here (a plugin's panic is
/// caught at the plugin boundary).
fn thread_failed((url, results_dir): (String, PathBuf), started: Instant, why: &str) -> JobOutcome {
    let outcome = JobOutcome {
        result: format!("FAILURE - the job's thread failed: {why}"),
        details: Value::Null,
        url,
        results_dir,
        duration: started.elapsed(),
    };
    tracing::error!("{}", outcome.result);
    outcome
}

/// Runs the plugin, then [`finish`] (which calls `report` once the job's files are in place).
/// Blocks the calling thread for the whole job.
fn run_to_end(
    config: &Config,
    job: &PreparedJob,
    events: EventSink,
    cancel: CancelToken,
    journal: bool,
    report: &mut dyn FnMut(&JobOutcome),
) -> JobOutcome {
    let started = Instant::now();
    let runner = job.runner.clone();
    let plugin_job = Job {
        schema: JSON_SCHEMA,
        name: zuul::job_name(&job.request.function).to_string(),
        function: job.request.function.clone(),
        unique: job.request.unique.clone(),
        parameters: job.request.parameters.clone(),
        config: runner.config.config.clone(),
        host: runner.config.host.clone(),
    };
    tracing::debug!(
        function = %job.request.function,
        unique = %job.request.unique,
        plugin = %runner.plugin.name,
        dir = %job.job_dir.display(),
        "job started"
    );
    let mut job_json = Vec::with_capacity(2048);
    let job_json = match serde_json::to_writer(&mut job_json, &plugin_job) {
        Ok(()) => String::from_utf8(job_json).unwrap_or_else(|_| "{}".into()),
        Err(_) => "{}".into(),
    };
    let work_dir = job.job_dir.join(WORK_DIR);
    let (outcome, dirs_made) = match Isolation::of(&runner, config.job_isolation) {
        Isolation::Process => {
            let outcome = isolation::run_in_child(
                &runner,
                job_json,
                &events,
                &cancel,
                &work_dir,
                &job.job_dir,
            );
            (outcome, (job.job_dir.exists(), work_dir.exists()))
        }
        Isolation::InProcess => {
            let host = JobHost::new(
                &runner.plugin.name,
                job_json,
                events,
                cancel.clone(),
                work_dir,
                job.job_dir.clone(),
            );
            run_in_process(config, &job.request, &runner, &host, journal)
        }
    };
    finish(config, job, started, outcome, &cancel, dirs_made, report)
}

/// Runs the job on this thread, in the [`journal`] if `journal` (the daemon's jobs), which
/// refuses a job that crashed the daemon twice; the outcome and which dirs were made.
fn run_in_process(
    config: &Config,
    request: &JobRequest,
    runner: &JobRunner,
    host: &JobHost,
    journal: bool,
) -> (Result<Outcome, String>, (bool, bool)) {
    let entry = match journal
        .then(|| journal::Entry::start(config, &request.function, &request.unique))
    {
        Some(Err(refused)) => {
            tracing::error!(function = %request.function, unique = %request.unique, "{refused}");
            return (Err(refused), (false, false));
        }
        entry => entry,
    };
    let outcome = run_plugin(runner, Host_TO::from_ptr(host, TD_Opaque));
    drop(entry);
    (outcome, host.dirs_made())
}

/// A job's record: one line of the history, and `job.json` in its results (fields in
/// alphabetical order).
#[derive(Serialize)]
struct JobRecord<'a> {
    details: &'a Value,
    duration_ms: u64,
    finished: &'a str,
    function: &'a str,
    parameters: &'a BTreeMap<String, String>,
    result: &'a str,
    unique: &'a str,
    url: &'a str,
    worker: &'a str,
}

impl<'a> JobRecord<'a> {
    fn of(
        config: &'a Config,
        job: &'a PreparedJob,
        details: &'a Value,
        duration: Duration,
        finished: &'a str,
        result: &'a str,
    ) -> Self {
        JobRecord {
            details,
            duration_ms: duration.as_millis() as u64,
            finished,
            function: &job.request.function,
            parameters: &job.request.parameters,
            result,
            unique: &job.request.unique,
            url: &job.url,
            worker: &config.worker_name,
        }
    }
}

/// After the plugin: the verdict, the job's record (history, `job.json`), publishing, removing
/// the work dir. Runs on the job's thread: none of this file work holds up the connections.
fn finish(
    config: &Config,
    job: &PreparedJob,
    started: Instant,
    outcome: Result<Outcome, String>,
    cancel: &CancelToken,
    (results_made, work_made): (bool, bool),
    report: &mut dyn FnMut(&JobOutcome),
) -> JobOutcome {
    let results_dir = job.job_dir.clone();
    let work_dir = job.job_dir.join(WORK_DIR);
    let (mut result, details) = match outcome {
        Ok(outcome) => outcome.into_parts(),
        Err(message) => (format!("FAILURE - {message}"), Value::Null),
    };
    if let Some(reason) = cancel.reason() {
        tracing::info!(unique = %job.request.unique, reason, "job was cancelled");
        result = turbo_hipster_sdk::results::ABORTED.to_string();
    }
    if result.trim().is_empty() {
        result = "FAILURE - the plugin gave no result".into();
    }
    let duration = started.elapsed();
    let finished = crate::timestamp_now();
    if results_made {
        // Results that cannot be written (disk full, directory gone): Zuul must not hear
        // SUCCESS for a job whose record or logs are not there, nor a verdict on the change
        // for the worker's fault (an infrastructure result: Zuul runs the build again).
        let written = write_summary(
            &results_dir,
            &JobRecord::of(config, job, &details, duration, &finished, &result),
        )
        .and_then(|()| publish(config, &results_dir, &job.log_path));
        if let Err(e) = written {
            tracing::error!(unique = %job.request.unique, "{e}");
            result = turbo_hipster_sdk::results::infrastructure(
                &turbo_hipster_sdk::results::cannot_write_results(e),
            );
        }
    }
    let summary = JobRecord::of(config, job, &details, duration, &finished, &result);
    let mut history_line = Vec::with_capacity(1024);
    if let Err(e) = serde_json::to_writer(&mut history_line, &summary) {
        tracing::warn!("cannot record the job in the history: {e}");
        history_line.clear();
    }
    let outcome = JobOutcome {
        result,
        details,
        url: job.url.clone(),
        results_dir,
        duration,
    };
    // Zuul hears the result once the job's files are in place; the daemon's own records
    // (history line, log line) and removing the work dir follow, off the path from one job to
    // the next. The history line goes first: removing the work dir may free space a full disk
    // lacked, and the record must not depend on that.
    report(&outcome);
    if !history_line.is_empty() {
        history_line.push(b'\n');
        record_history(config, &history_line);
    }
    if !config.keep_work_dirs && work_made {
        if let Err(e) = std::fs::remove_dir_all(&work_dir) {
            tracing::warn!(dir = %work_dir.display(), "cannot remove the work dir: {e}");
        }
    }
    tracing::info!(
        function = %job.request.function,
        unique = %job.request.unique,
        duration_ms = duration.as_millis() as u64,
        result = %outcome.result.lines().next().unwrap_or(""),
        dir = %job.job_dir.display(),
        "job finished"
    );
    outcome
}

/// Writes `job.json` into the results; a file that could not be written whole is removed (an
/// empty or cut record is worse than none).
fn write_summary(results_dir: &Path, summary: &JobRecord<'_>) -> Result<(), String> {
    let path = results_dir.join(JOB_SUMMARY);
    let text = serde_json::to_string_pretty(summary)
        .map_err(|e| format!("cannot serialise {}: {e}", path.display()))?;
    std::fs::write(&path, text).map_err(|e| {
        let _ = std::fs::remove_file(&path);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Appends the job's summary as one JSON line to `jobs_working_dir/jobs.jsonl`: the daemon's
/// history of every job, whether or not it left files. See [`crate::history`] for how a line
/// is never left torn.
fn record_history(config: &Config, line: &[u8]) {
    crate::history::append(&config.jobs_working_dir.join(HISTORY_FILE), line);
}

fn publish(config: &Config, results_dir: &Path, log_path: &str) -> Result<(), String> {
    if let PublishLogs::Local { path, .. } = &config.publish_logs {
        let dest = path.join(log_path);
        copy_dir(results_dir, &dest)
            .map_err(|e| format!("cannot publish the job's logs to {}: {e}", dest.display()))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            if entry.file_name() == WORK_DIR && from.join(JOB_SUMMARY).exists() {
                continue;
            }
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
