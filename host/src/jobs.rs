//! What a job is and what it leaves: its request, where its files go, its verdict, its record
//! (`job.json`, the history line) and its published logs. How a job runs, the same for
//! Gearman jobs and `run-job`, is the service's [`crate::pipeline`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use turbo_hipster_sdk::abi::JSON_SCHEMA;
use turbo_hipster_sdk::config::secrets::{self, Secrets};
use turbo_hipster_sdk::{results, Job, Outcome};

use crate::config::{Config, PublishLogs};
use crate::history::History;
use crate::host_context::CancelToken;
pub use crate::job_dir::{HISTORY_FILE, JOB_SUMMARY, TASK_LOG, WORK_DIR};
use crate::plugins::{JobRunner, Registry};
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
    /// What Zuul gets as `url`: the report page (`<logs>/index.html`) when the job left one,
    /// else the logs' directory.
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

/// A job whose request is valid and whose runner is known: ready to run.
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
    /// `jobs_working_dir` could not be made.
    #[error("FAILURE - cannot create the job directory {}: {source}", .path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The error that stopped it.
        source: std::io::Error,
    },
}

impl PrepareError {
    /// The `result` for Zuul.
    pub fn result(&self) -> String {
        self.to_string()
    }
}

/// Validates a request and works out where its files go (nothing is made yet: the job dir
/// is made when the plugin first asks for it, so a job that writes nothing costs no
/// directory; `jobs_working_dir` is the caller's).
///
/// # Errors
/// Invalid parameters or an unknown job.
pub fn prepare(
    config: &Config,
    registry: &Registry,
    request: JobRequest,
) -> Result<PreparedJob, PrepareError> {
    zuul::validate(&request.parameters)?;
    check_unique(&request.unique)?;
    let runner = registry
        .find(&request.function)
        .cloned()
        .ok_or_else(|| PrepareError::UnknownJob(request.function.clone()))?;
    let log_path = log_path(&request);
    let job_dir = unique_dir(&config.jobs_working_dir.join(&log_path), &request.unique);
    let url = logs_url(config, &log_path, &job_dir);
    Ok(PreparedJob {
        request,
        runner,
        job_dir,
        url,
        log_path,
    })
}

/// The Gearman unique names the job's directory: a plain name only.
fn check_unique(unique: &str) -> Result<(), InvalidParameters> {
    let plain = unique
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if unique.len() > 64 || !plain || unique.starts_with('.') {
        return Err(InvalidParameters(
            "the Gearman unique id is not a plain name".into(),
        ));
    }
    Ok(())
}

/// Where the job's files go under `jobs_working_dir`: `LOG_PATH`, else the unique, else a
/// random name.
fn log_path(request: &JobRequest) -> String {
    match request.parameters.get("LOG_PATH") {
        Some(p) if !p.is_empty() => p.clone(),
        _ if request.unique.is_empty() => zuul::random_uuid_hex(),
        _ => request.unique.clone(),
    }
}

/// Where Zuul will find the job's logs.
fn logs_url(config: &Config, log_path: &str, job_dir: &Path) -> String {
    match &config.publish_logs {
        PublishLogs::Local { prepend_url, .. } if !prepend_url.is_empty() => {
            format!("{}/{}/", prepend_url.trim_end_matches('/'), log_path)
        }
        PublishLogs::Local { path, .. } => format!("file://{}/", path.join(log_path).display()),
        PublishLogs::S3(s3) => format!("{}/{}/", s3.prepend_url.trim_end_matches('/'), log_path),
        PublishLogs::None => format!("file://{}/", job_dir.display()),
    }
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

impl PreparedJob {
    /// The job as the plugin gets it, in JSON.
    pub fn plugin_job_json(&self) -> String {
        let plugin_job = Job {
            schema: JSON_SCHEMA,
            name: zuul::job_name(&self.request.function).to_string(),
            function: self.request.function.clone(),
            unique: self.request.unique.clone(),
            parameters: self.request.parameters.clone(),
            config: self.runner.config.config.clone(),
            host: self.runner.config.host.clone(),
        };
        let mut json = Vec::with_capacity(2048);
        match serde_json::to_writer(&mut json, &plugin_job) {
            Ok(()) => String::from_utf8(json).unwrap_or_else(|_| "{}".into()),
            Err(_) => "{}".into(),
        }
    }

    /// The job's scratch directory.
    pub fn work_dir(&self) -> PathBuf {
        self.job_dir.join(WORK_DIR)
    }
}

/// The outcome of a job whose thread failed or could not start, with its `result`: only a bug
/// of ours or a refused thread gets here (a plugin's panic is caught at the plugin boundary).
pub fn thread_failed(
    (url, results_dir): (String, PathBuf),
    started: Instant,
    result: String,
) -> JobOutcome {
    tracing::error!("{result}");
    JobOutcome {
        result,
        details: Value::Null,
        url,
        results_dir,
        duration: started.elapsed(),
    }
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
    #[allow(clippy::too_many_arguments)]
    fn of(
        config: &'a Config,
        job: &'a PreparedJob,
        details: &'a Value,
        duration: Duration,
        finished: &'a str,
        result: &'a str,
        url: &'a str,
    ) -> Self {
        JobRecord {
            details,
            duration_ms: duration.as_millis() as u64,
            finished,
            function: &job.request.function,
            parameters: &job.request.parameters,
            result,
            unique: &job.request.unique,
            url,
            worker: &config.worker_name,
        }
    }
}

/// What a plugin's run left: its outcome (or why there is none) and which of the job's
/// directories were made.
pub struct Ran {
    /// The plugin's outcome, or why there is none.
    pub outcome: Result<Outcome, String>,
    /// Whether the job dir (its results) exists.
    pub results_made: bool,
    /// Whether its work dir exists.
    pub work_made: bool,
}

/// After the plugin: the verdict, the job's record (history, `job.json`), publishing, removing
/// the work dir. Runs on the job's thread: none of this file work holds up the connections.
/// `report` gets the outcome as soon as the job's files are in place; the daemon's own records
/// (history line, log line) and removing the work dir follow, off the path from one job to the
/// next. The history line goes first: removing the work dir may free space a full disk lacked,
/// and the record must not depend on that.
pub fn finish(
    config: &Config,
    history: &History,
    job: &PreparedJob,
    started: Instant,
    ran: Ran,
    cancel: &CancelToken,
    report: &mut dyn FnMut(&JobOutcome),
) -> JobOutcome {
    let (result, details) = verdict(ran.outcome, cancel, &job.request.unique);
    // Nothing published carries a secret, nor does the result.
    let secrets = secret_forms(config, job);
    let mut result = secrets.mask(&result);
    let details = secrets.mask_value(details);
    let duration = started.elapsed();
    let finished = crate::timestamp_now();
    let url = report_url(job);
    if ran.results_made {
        let record = JobRecord::of(config, job, &details, duration, &finished, &result, &url);
        if let Err(e) = write_results(config, job, &record, &secrets) {
            tracing::error!(unique = %job.request.unique, "{e}");
            result = results::infrastructure(&results::cannot_write_results(e));
        }
    }
    let record = JobRecord::of(config, job, &details, duration, &finished, &result, &url);
    let history_line = history_line(&record);
    let outcome = JobOutcome {
        result,
        details,
        url,
        results_dir: job.job_dir.clone(),
        duration,
    };
    report(&outcome);
    if let Some(line) = history_line {
        history.append(&line);
    }
    history.record_migrations(&job.request.unique, &outcome.result, &outcome.details);
    if !config.keep_work_dirs && ran.work_made {
        remove_work_dir(&job.work_dir());
    }
    log_finished(job, &outcome);
    outcome
}

/// The `result` Zuul gets and the plugin's details: a cancelled job is ABORTED whatever the
/// plugin said, a plugin without an outcome or with an empty result fails.
fn verdict(
    outcome: Result<Outcome, String>,
    cancel: &CancelToken,
    unique: &str,
) -> (String, Value) {
    let (result, details) = match outcome {
        Ok(outcome) => outcome.into_parts(),
        Err(message) => (format!("FAILURE - {message}"), Value::Null),
    };
    if let Some(reason) = cancel.reason() {
        tracing::info!(unique, reason, "job was cancelled");
        return (results::ABORTED.to_string(), details);
    }
    if result.trim().is_empty() {
        return ("FAILURE - the plugin gave no result".into(), details);
    }
    (result, details)
}

/// Writes `job.json` into the results and publishes them. Results that cannot be written (disk
/// full, directory gone) fail: Zuul must not hear SUCCESS for a job whose record or logs are
/// not there, nor a verdict on the change for the worker's fault (the caller makes it an
/// infrastructure result: Zuul runs the build again).
fn write_results(
    config: &Config,
    job: &PreparedJob,
    record: &JobRecord<'_>,
    secrets: &Secrets,
) -> Result<(), String> {
    write_summary(&job.job_dir, record)?;
    mask_results(&job.job_dir, secrets)?;
    publish(config, &job.job_dir, &job.log_path)
}

/// The report page a plugin may leave in its results (the gate's `index.html`).
pub const REPORT_PAGE: &str = "index.html";

/// What Zuul gets as the build's `url` once the job ended: its report page when the plugin
/// left one (the page works from a file, so a `file://` URL opens it too), else the logs'
/// directory.
fn report_url(job: &PreparedJob) -> String {
    if job.job_dir.join(REPORT_PAGE).is_file() {
        format!("{}{REPORT_PAGE}", job.url)
    } else {
        job.url.clone()
    }
}

/// Every form a secret of this job may take in a published file: the job config's secrets
/// (its `connection.password` and the keys its `secret_keys` mark) and the publishing
/// target's own ([`PublishLogs::secrets`]).
fn secret_forms(config: &Config, job: &PreparedJob) -> Secrets {
    let mut values = secrets::values(&job.runner.config.config);
    values.extend(config.publish_logs.secrets());
    Secrets::new(values)
}

/// Masks every secret in every file of the results (the work dir left out), in place: what is
/// published is a copy of them, and the job dir itself is what a `file://` URL shows.
fn mask_results(results_dir: &Path, secrets: &Secrets) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    mask_dir(results_dir, secrets, true)
        .map_err(|e| format!("cannot mask secrets in {}: {e}", results_dir.display()))
}

fn mask_dir(dir: &Path, secrets: &Secrets, top: bool) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if top && entry.file_name() == WORK_DIR {
                continue;
            }
            mask_dir(&entry.path(), secrets, false)?;
        } else if kind.is_file() {
            // A big file is masked a block at a time (`Secrets::mask_file`).
            secrets.mask_file(&entry.path())?;
        }
    }
    Ok(())
}

/// The job's history line (ending with `\n`); `None` (logged) if it cannot be serialised.
fn history_line(record: &JobRecord<'_>) -> Option<Vec<u8>> {
    let mut line = Vec::with_capacity(1024);
    if let Err(e) = serde_json::to_writer(&mut line, record) {
        tracing::warn!("cannot record the job in the history: {e}");
        return None;
    }
    line.push(b'\n');
    Some(line)
}

fn remove_work_dir(work_dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(work_dir) {
        tracing::warn!(dir = %work_dir.display(), "cannot remove the work dir: {e}");
    }
}

fn log_finished(job: &PreparedJob, outcome: &JobOutcome) {
    tracing::info!(
        function = %job.request.function,
        unique = %job.request.unique,
        duration_ms = outcome.duration.as_millis() as u64,
        result = %outcome.result.lines().next().unwrap_or(""),
        dir = %job.job_dir.display(),
        "job finished"
    );
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

/// Publishes the results where `publish_logs` says (before Zuul hears of the job: the URL it
/// gets must open). An upload to an object store is retried (see [`crate::publish`]).
fn publish(config: &Config, results_dir: &Path, log_path: &str) -> Result<(), String> {
    match &config.publish_logs {
        PublishLogs::Local { path, .. } => {
            let dest = path.join(log_path);
            copy_dir(results_dir, &dest)
                .map_err(|e| format!("cannot publish the job's logs to {}: {e}", dest.display()))
        }
        PublishLogs::S3(target) => crate::publish::upload(target, results_dir, log_path),
        PublishLogs::None => Ok(()),
    }
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
