//! One job from start to end: find the project's datasets, check the change out, run every
//! dataset (up to `max_parallel_datasets` at once), write the summaries, and give the result.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;
use turbo_hipster_sdk::support::env::describe_dropped;
use turbo_hipster_sdk::support::git::{self, GitError, ZuulChange};
use turbo_hipster_sdk::support::process::Cancellation;
use turbo_hipster_sdk::support::LogFile;
use turbo_hipster_sdk::{Context, Job, Outcome, PluginError};

use crate::dataset::{self, Dataset};
use crate::dataset_run::{self, DatasetJob, DatasetOutcome};
use crate::messages;
use crate::regression::Baseline;
use crate::report::{html, DatasetSummary, JobSummary, SCHEMA, SUMMARY_JSON, SUMMARY_TXT};
use crate::settings::Settings;

/// The log of the checkout, in the results directory.
pub const GIT_LOG: &str = "git_prep.log";

/// The Zuul parameters recorded in the summary's `change`.
const CHANGE_KEYS: [&str; 13] = [
    "ZUUL_PROJECT",
    "ZUUL_URL",
    "ZUUL_REF",
    "ZUUL_NEWREV",
    "ZUUL_OLDREV",
    "ZUUL_BRANCH",
    "ZUUL_CHANGE",
    "ZUUL_PATCHSET",
    "ZUUL_COMMIT",
    "ZUUL_PIPELINE",
    "ZUUL_UUID",
    "ZUUL_CHANGE_IDS",
    "LOG_PATH",
];

/// The directories of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDirs {
    /// The job's private working directory (checkouts, SQLite files, rendered configs).
    pub working_dir: PathBuf,
    /// The directory published as the job's logs.
    pub results_dir: PathBuf,
}

/// What the job may ask of its runner: cancellation, progress, and (under the daemon) the
/// context, so that threads the job starts forward their log lines.
pub struct JobEnv<'a> {
    /// Says when the job is cancelled.
    pub cancel: &'a dyn Cancellation,
    /// Reports progress (numerator, denominator).
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    /// The daemon's context, if any.
    pub ctx: Option<&'a Context<'a>>,
}

/// Loads the datasets of `settings.datasets_dir` (a missing directory holds none), logging
/// the loader's warnings and those datasets that cannot run.
///
/// # Errors
/// Every problem of every dataset, one line each.
pub fn load_datasets(settings: &Settings) -> Result<Vec<Dataset>, Vec<String>> {
    if !settings.datasets_dir.is_dir() {
        tracing::warn!(
            "the datasets directory {} does not exist",
            settings.datasets_dir.display()
        );
        return Ok(Vec::new());
    }
    let (datasets, warnings) =
        dataset::load_datasets_with_warnings(&settings.datasets_dir, &settings.defaults)?;
    let refused = settings.dataset_problems(&datasets);
    if !refused.is_empty() {
        return Err(refused);
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    for d in &datasets {
        if let Err(why) = d.runnable() {
            tracing::warn!("{}: {why}", d.source.display());
        }
    }
    Ok(datasets)
}

/// Why a job ended before its datasets ran.
enum Stop {
    /// The worker's problem rather than the change's: the job fails with it.
    Worker(PluginError),
    /// The job's result, and whether it was cancelled.
    Ended { result: String, cancelled: bool },
}

impl From<PluginError> for Stop {
    fn from(e: PluginError) -> Self {
        Stop::Worker(e)
    }
}

impl Stop {
    /// The job ends with `result` (not cancelled).
    fn with(result: String) -> Self {
        Stop::Ended {
            result,
            cancelled: false,
        }
    }
}

/// Runs one job. The daemon's [`turbo_hipster_sdk::Plugin::run`] calls this with its
/// context; tests may call it directly.
///
/// # Errors
/// Problems of the worker rather than of the change: the working or results directory
/// cannot be made.
pub fn run_job(
    settings: &Settings,
    job: &Job,
    dirs: &JobDirs,
    env: &JobEnv<'_>,
) -> Result<Outcome, PluginError> {
    for dir in [&dirs.working_dir, &dirs.results_dir] {
        fs::create_dir_all(dir)
            .map_err(|e| PluginError::io(format!("cannot create {}", dir.display()), e))?;
    }
    let project = job.param("ZUUL_PROJECT").unwrap_or_default().to_string();
    let mut summary = JobSummary {
        schema: SCHEMA,
        project,
        change: change_parameters(job),
        result: String::new(),
        datasets: Vec::new(),
    };
    let cancelled = match run_steps(settings, job, dirs, env, &mut summary) {
        Ok(cancelled) => cancelled,
        Err(Stop::Worker(e)) => return Err(e),
        Err(Stop::Ended { result, cancelled }) => {
            summary.result = result;
            cancelled
        }
    };
    Ok(finish(summary, dirs, cancelled))
}

/// The job's steps: the project's datasets, the change, every dataset, the result (into
/// `summary`). `Ok(cancelled)` once the datasets ran.
fn run_steps(
    settings: &Settings,
    job: &Job,
    dirs: &JobDirs,
    env: &JobEnv<'_>,
    summary: &mut JobSummary,
) -> Result<bool, Stop> {
    // 1. The datasets of the project (before fetching anything).
    let datasets = project_datasets(settings, &summary.project)?;
    let total = 1 + dataset_run::STEPS * datasets.len() as u64;
    let done = AtomicU64::new(0);
    let step = || {
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        (env.progress)(n.min(total), total);
    };
    (env.progress)(0, total);

    // 2. The change.
    let git_log_path = dirs.results_dir.join(GIT_LOG);
    let git_log = LogFile::create(&git_log_path)
        .map_err(|e| PluginError::io(format!("cannot create {}", git_log_path.display()), e))?;
    let git_cache = if job.host.git_working_dir.as_os_str().is_empty() {
        tracing::warn!("no git_working_dir configured: the mirror is made in the job's directory");
        dirs.working_dir.join("git_cache")
    } else {
        job.host.git_working_dir.clone()
    };
    let change = zuul_change(job, &git_log)?;
    let dest = dirs.working_dir.join("git").join(change.project());
    let checkout = check_out(settings, &change, &git_cache, &dest, &git_log, env)?;
    summary
        .change
        .insert("commit".into(), checkout.commit.clone());
    tracing::info!("testing {} ({})", checkout.commit, checkout.path.display());
    step();

    // 3. Every dataset, up to max_parallel at once.
    let unique = job
        .param("ZUUL_UUID")
        .filter(|u| !u.is_empty())
        .unwrap_or(job.unique.as_str())
        .to_string();
    let claims = crate::leftovers::claims_dir(&job.host);
    let golden = crate::provisioning::state_dir(&job.host);
    let parameters = passed_parameters(settings, job);
    let names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
    let baseline = Baseline::load(
        settings.regression,
        job.host.history_database.as_deref(),
        &names,
    );
    let outcomes = run_datasets(
        settings,
        &datasets,
        &DatasetJobBase {
            unique: &unique,
            worker: &job.host.worker_name,
            claims: claims.as_deref(),
            golden: golden.as_deref(),
            change: &change,
            checkout: &checkout.path,
            git_cache: &git_cache,
            git_log: &git_log,
            dirs,
            pip_cache: job.host.pip_download_cache.as_deref(),
            parameters: &parameters,
            baseline: &baseline,
        },
        env,
        &step,
    );

    // 4. The result.
    let cancelled = outcomes.iter().any(|o| o.cancelled) || env.cancel.is_cancelled();
    summary.result = job_result(&outcomes, cancelled);
    summary.datasets = outcomes.into_iter().map(|o| o.summary).collect();
    write_trends(&baseline, summary, &unique, &dirs.results_dir);
    if done.load(Ordering::SeqCst) < total {
        (env.progress)(total, total);
    }
    Ok(cancelled)
}

/// Each dataset's trends page (`trends-<dataset>.html`) from the history and this job's
/// migrations ([`Baseline::trends_page`]); none without a history.
fn write_trends(baseline: &Baseline, summary: &JobSummary, unique: &str, results: &Path) {
    let current = th_history::samples_from_details(&summary.to_json(), unique);
    for d in &summary.datasets {
        if let Some(page) = baseline.trends_page(&d.name, &current) {
            write_file(&results.join(trends_name(&d.name)), &page);
        }
    }
}

/// The name of a dataset's trends page in the results directory.
pub fn trends_name(dataset: &str) -> String {
    format!("trends-{dataset}.html")
}

/// The datasets testing `project`.
fn project_datasets(settings: &Settings, project: &str) -> Result<Vec<Dataset>, Stop> {
    let datasets: Vec<Dataset> = load_datasets(settings)
        .map_err(|problems| {
            for p in &problems {
                tracing::error!("{p}");
            }
            Stop::with(messages::invalid_datasets(&problems))
        })?
        .into_iter()
        .filter(|d| d.project == project)
        .collect();
    if datasets.is_empty() {
        tracing::warn!(
            "no dataset in {} tests project {project:?}",
            settings.datasets_dir.display()
        );
        return Err(Stop::with(messages::no_dataset(project)));
    }
    tracing::info!(
        "{} dataset(s) for {project}: {}",
        datasets.len(),
        datasets
            .iter()
            .map(|d| format!("{} ({})", d.name, d.engine.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(datasets)
}

/// The change the job names.
fn zuul_change(job: &Job, git_log: &LogFile) -> Result<ZuulChange, Stop> {
    match ZuulChange::from_job(job) {
        Some(Ok(change)) => Ok(change),
        Some(Err(e)) => {
            let _ = git_log.line("git", &e.to_string());
            Err(Stop::with(messages::git_failure(&e.to_string())))
        }
        None => {
            let why = "the job names no change (ZUUL_URL, ZUUL_PROJECT and ZUUL_REF or \
                       ZUUL_NEWREV are needed)";
            let _ = git_log.line("git", why);
            Err(Stop::with(messages::git_failure(why)))
        }
    }
}

/// Fetches the change into the mirror under `git_cache` and checks it out into `dest`.
fn check_out(
    settings: &Settings,
    change: &ZuulChange,
    git_cache: &Path,
    dest: &Path,
    git_log: &LogFile,
    env: &JobEnv<'_>,
) -> Result<git::Checkout, Stop> {
    let options = settings.git_options();
    tracing::info!("fetching {} from {}", change.reference(), change.remote());
    git::prepare_checkout(change, git_cache, dest, git_log, &options, env.cancel).map_err(|e| {
        if let GitError::Cancelled = e {
            return Stop::Ended {
                result: messages::aborted(),
                cancelled: true,
            };
        }
        tracing::warn!("could not prepare the git checkout: {e}");
        Stop::with(match messages::git_infrastructure(&e.to_string()) {
            Some(what) => {
                let _ = git_log.line("git", &format!("{what}: not the change's fault"));
                messages::infrastructure(&format!("{what}: {e}"))
            }
            None => messages::git_failure(&e.to_string()),
        })
    })
}

/// The build parameters passed to the migration tool (`pass_parameters`).
fn passed_parameters(settings: &Settings, job: &Job) -> Vec<(String, String)> {
    let split = settings.parameters.split(&job.parameters);
    if !split.dropped.is_empty() {
        tracing::info!("{}", describe_dropped(&split.dropped));
    }
    split
        .passed
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The job's result from its datasets' outcomes: each line prefixed by `<dataset>: ` when
/// there are several; the first dataset failed by the infrastructure decides (the change is
/// not judged).
fn job_result(outcomes: &[DatasetOutcome], cancelled: bool) -> String {
    let several = outcomes.len() > 1;
    let mut lines = Vec::new();
    let mut infrastructure = None;
    for o in outcomes {
        for line in &o.summary.result_lines {
            if let Some(what) = messages::infrastructure_of(line) {
                infrastructure.get_or_insert_with(|| {
                    if several {
                        format!("dataset {}: {what}", o.summary.name)
                    } else {
                        what.to_string()
                    }
                });
            }
            lines.push(if several {
                messages::of_dataset(&o.summary.name, line)
            } else {
                line.clone()
            });
        }
    }
    if cancelled {
        messages::aborted()
    } else if let Some(what) = infrastructure {
        messages::infrastructure(&what)
    } else if lines.is_empty() {
        messages::SUCCESS.to_string()
    } else {
        lines.join("\n")
    }
}

/// What every dataset's run shares.
struct DatasetJobBase<'a> {
    unique: &'a str,
    worker: &'a str,
    claims: Option<&'a Path>,
    golden: Option<&'a Path>,
    change: &'a ZuulChange,
    checkout: &'a Path,
    git_cache: &'a Path,
    git_log: &'a LogFile,
    dirs: &'a JobDirs,
    pip_cache: Option<&'a Path>,
    parameters: &'a [(String, String)],
    baseline: &'a Baseline,
}

/// Runs the datasets on up to `settings.max_parallel` threads; outcomes in dataset order.
fn run_datasets(
    settings: &Settings,
    datasets: &[Dataset],
    base: &DatasetJobBase<'_>,
    env: &JobEnv<'_>,
    step: &(dyn Fn() + Sync),
) -> Vec<DatasetOutcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<DatasetOutcome>>> =
        Mutex::new((0..datasets.len()).map(|_| None).collect());
    let workers = settings.max_parallel.clamp(1, datasets.len().max(1));
    let worker = || {
        let _forward = env.ctx.map(Context::forward_tracing);
        loop {
            let index = next.fetch_add(1, Ordering::SeqCst);
            let Some(dataset) = datasets.get(index) else {
                break;
            };
            let ticks = AtomicU64::new(0);
            let tick = || {
                ticks.fetch_add(1, Ordering::SeqCst);
                step();
            };
            let job = DatasetJob {
                dataset,
                index,
                unique: base.unique,
                worker: base.worker,
                claims: base.claims,
                golden: base.golden,
                settings,
                change: base.change,
                checkout: base.checkout,
                git_cache: base.git_cache,
                git_log: base.git_log,
                work_root: &base.dirs.working_dir,
                results_dir: &base.dirs.results_dir,
                pip_cache: base.pip_cache,
                parameters: base.parameters,
                baseline: base.baseline,
                cancel: env.cancel,
                tick: &tick,
            };
            let outcome = run_one(&job, env.cancel);
            // The dataset's remaining progress steps, whatever path it took.
            for _ in ticks.load(Ordering::SeqCst)..dataset_run::STEPS {
                step();
            }
            if let Ok(mut r) = results.lock() {
                r[index] = Some(outcome);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(worker);
        }
        worker();
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results
        .into_iter()
        .zip(datasets)
        .map(|(o, d)| {
            o.unwrap_or_else(|| DatasetOutcome {
                summary: not_run(d, &messages::internal_error("the dataset was not run")),
                cancelled: false,
            })
        })
        .collect()
}

/// Runs one dataset unless the job is cancelled; a panic is an internal error of its own.
fn run_one(job: &DatasetJob<'_>, cancel: &dyn Cancellation) -> DatasetOutcome {
    let dataset = job.dataset;
    if cancel.is_cancelled() {
        return DatasetOutcome {
            summary: not_run(dataset, "cancelled before it started"),
            cancelled: true,
        };
    }
    tracing::info!("dataset {}: starting", dataset.name);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| dataset_run::run_dataset(job)))
        .unwrap_or_else(|payload| {
            let why = panic_message(payload.as_ref());
            tracing::error!("dataset {}: internal error: {why}", dataset.name);
            DatasetOutcome {
                summary: not_run(dataset, &messages::internal_error(&why)),
                cancelled: false,
            }
        });
    tracing::info!(
        "dataset {}: {}",
        dataset.name,
        if outcome.cancelled {
            "cancelled".to_string()
        } else if outcome.summary.result_lines.is_empty() {
            messages::SUCCESS.to_string()
        } else {
            outcome.summary.result_lines.join(" | ")
        }
    );
    outcome
}

fn not_run(dataset: &Dataset, line: &str) -> DatasetSummary {
    DatasetSummary {
        name: dataset.name.clone(),
        engine: dataset.engine.name().to_string(),
        database: String::new(),
        seed: dataset.seed.path.display().to_string(),
        config: dataset.source.display().to_string(),
        result_lines: if messages::is_failure(line) {
            vec![line.to_string()]
        } else {
            Vec::new()
        },
        duration_ms: 0,
        final_version: None,
        expected_version: None,
        migrations: Vec::new(),
        provisioning: None,
        counters_source: None,
        counters_scope: None,
        observation_gaps: 0,
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".to_string()
    }
}

/// Writes `summary.json` and `summary.txt` and turns the summary into the outcome.
fn finish(summary: JobSummary, dirs: &JobDirs, cancelled: bool) -> Outcome {
    let json = summary.to_json();
    let text = summary.to_text();
    // From the struct, not the `Value`, to keep the documented field order.
    match serde_json::to_string_pretty(&summary) {
        Ok(pretty) => write_file(&dirs.results_dir.join(SUMMARY_JSON), &(pretty + "\n")),
        Err(e) => tracing::warn!("cannot serialise the summary: {e}"),
    }
    write_file(&dirs.results_dir.join(SUMMARY_TXT), &text);
    // The daemon adds task_output.log and job.json to the published results.
    // Each dataset's trends page, when the history gave one.
    let trends: Vec<String> = summary
        .datasets
        .iter()
        .map(|d| trends_name(&d.name))
        .filter(|name| dirs.results_dir.join(name).is_file())
        .collect();
    let files: Vec<&str> = [
        GIT_LOG,
        SUMMARY_JSON,
        SUMMARY_TXT,
        "task_output.log",
        "job.json",
    ]
    .into_iter()
    .chain(trends.iter().map(String::as_str))
    .collect();
    if let Err(e) = html::write_index(&summary, &dirs.results_dir, &dataset_run::log_name, &files) {
        tracing::warn!("cannot write the report page {}: {e}", html::INDEX_HTML);
    }
    tracing::info!("result: {}", summary.result.replace('\n', " | "));
    let mut details = match json {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    details.insert("table".into(), Value::String(text));
    let logs: Vec<String> = [GIT_LOG.to_string()]
        .into_iter()
        .chain(
            summary
                .datasets
                .iter()
                .flat_map(|d| [dataset_run::log_name(&d.name), trends_name(&d.name)]),
        )
        .chain([
            SUMMARY_JSON.to_string(),
            SUMMARY_TXT.to_string(),
            html::INDEX_HTML.to_string(),
        ])
        .filter(|name| dirs.results_dir.join(name).is_file())
        .collect();
    details.insert("logs".into(), serde_json::json!(logs));
    let outcome = if cancelled {
        Outcome::aborted()
    } else if let Some(what) = messages::infrastructure_of(&summary.result) {
        Outcome::infrastructure(what)
    } else {
        Outcome::with_result(summary.result)
    };
    outcome.with_details(Value::Object(details))
}

fn write_file(path: &Path, text: &str) {
    if let Err(e) = fs::write(path, text) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// The Zuul parameters of a job that the summary records as its `change`.
pub fn change_parameters(job: &Job) -> BTreeMap<String, String> {
    CHANGE_KEYS
        .iter()
        .filter_map(|k| job.param(k).map(|v| (k.to_string(), v.to_string())))
        .collect()
}
