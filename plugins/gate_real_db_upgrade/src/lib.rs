//! gate_real_db_upgrade: tests a proposed change's database migrations against real,
//! production-sized datasets, times every migration, and votes.
//!
//! ## A job
//!
//! 1. **The datasets.** Every dataset of the job's `datasets_dir` whose `project` equals the
//!    job's `ZUUL_PROJECT` runs (the datasets are re-read for every job, so new ones need no
//!    restart). None → the result is `FAILURE - No dataset found for project <project>`.
//! 2. **The change.** `ZUUL_URL`/`ZUUL_PROJECT` at `ZUUL_REF` (or `ZUUL_NEWREV`) is fetched
//!    into the project's cached mirror under the daemon's `git_working_dir` (retried
//!    `git_retries` times) and checked out into the job's working directory; every git
//!    command is logged to `git_prep.log`. A failure gives
//!    `FAILURE - could not prepare the git checkout: <why>`.
//! 3. **Each dataset** (up to `max_parallel_datasets` at once) gets a database of its own,
//!    created from the dataset's seed and named `<database>_<unique[:8]>_<index>_<worker>`; it
//!    is dropped when the run ends, however it ends (unless `keep_databases`); one left by a
//!    killed daemon is dropped when the next one starts ([`leftovers`]). SQLite files live
//!    in the job's working directory. The seed itself is never changed.
//! 4. **The migrations** run either through the project's own tool, started in the checkout
//!    with the placeholders of [`template`] in its argv, environment and config templates, its
//!    output stamped line by line into `<dataset>.log` and read as it arrives
//!    ([`logparse`]); or, in the SQL-files mode ([`sqlfiles`]), by the plugin itself. A
//!    dataset's `upgrade_path` refs are checked out and migrated through first. A run that
//!    takes longer than its `timeout` is killed (the tool's whole process group).
//! 5. **The result** has one line per problem, each prefixed by `<dataset>: ` when the job
//!    ran several datasets, or `SUCCESS`. The lines are the original turbo-hipster's
//!    ([`messages`]):
//!
//!    | line | when |
//!    |---|---|
//!    | `FAILURE - Did not find the end of a migration after a start` | a migration started and never ended (the tool exited, crashed or timed out inside it; an SQL file failed) |
//!    | `WARNING - Migration <from->to> took too long` | strictly over its `maximum_migration_times` limit ([`limits`]) |
//!    | `WARNING - Migration <from->to> took N× longer than usual (M ms vs median T ms)` | strictly slower than `regression_factor` × its median in the history of the dataset, once the history has `regression_min_samples` runs of it ([`regression`]) |
//!    | `FAILURE - Final schema version does not match expectation` | after a clean run, the database's version (or the tool's `Final schema version is N`) differs from what the change expects ([`version`]) |
//!    | `FAILURE - Could not setup seed database.` | the seed did not load, or the server refused us |
//!    | `FAILURE - Could not find seed database.` | the seed file is missing |
//!    | `FAILURE - Could not import required module.` | the tool printed an import error, or the tool does not exist |
//!    | `Return code from test script was non-zero (N)` | the tool failed and nothing above explains it |
//!    | `FAILURE - No dataset found for project <p>` | no dataset tests the project |
//!    | `FAILURE - No dataset found: the job has no ZUUL_PROJECT parameter (the project to test)` | the job named no project |
//!    | `FAILURE - Migrations timed out after N s` | the time limit passed between migrations |
//!    | `ERROR - infrastructure: <what>` | not the change's fault: the database server was lost (unreachable, or no longer answering after a migration failed), a disk is full, or the git server cannot be reached. The daemon reports it to Zuul without a `result`, so Zuul runs the build again. |
//!
//!    A cancelled job (Zuul stop, shutdown) ends `ABORTED`.
//! 6. **The results directory** holds `git_prep.log`, one `<dataset>.log` per dataset,
//!    `task_output.log` (written by the daemon from the plugin's log lines),
//!    `summary.json` ([`report`] documents its schema), `summary.txt` (a table of every
//!    migration with its duration, limit and status) and `index.html`, the report page the
//!    daemon sends Zuul as the build's URL ([`report::html`]). The outcome's details carry the same
//!    summary, plus the table as `table`.
//!
//! ## Job configuration
//!
//! See [`settings`]: `datasets_dir`, `max_parallel_datasets`, `timeout`, `connection`,
//! `engine`, `git_retries`, `keep_databases`, `git_timeout`, `git_stall_timeout`,
//! `git_protocols`, `pass_parameters`, `containment` (the migration tool runs as `nobody`
//! under a root daemon, with limits, optionally in a network namespace: see the plugin's
//! README). The original's other keys (`shutdown-th`, …) are ignored. `turbo-hipster
//! check-config` loads and validates every dataset too, and checks the files a dataset names
//! ([`dataset::Dataset::check_files`]: seed, templates, a tool given by absolute path).

pub mod alembic;
pub mod dataset;
pub mod dataset_run;
pub mod engine;
pub mod import;
pub mod leftovers;
pub mod limits;
pub mod logparse;
pub mod messages;
pub mod provisioning;
pub mod regression;
pub mod report;
pub mod run;
pub mod settings;
pub mod sqlfiles;
pub mod template;
pub mod version;

use turbo_hipster_sdk::{export_plugin, Context, JobConfig, Outcome, Plugin, PluginError};

use crate::run::{JobDirs, JobEnv};
use crate::settings::Settings;

/// The plugin: one per configured job, holding its validated settings.
#[derive(Debug)]
pub struct GateRealDbUpgrade {
    settings: Settings,
}

impl GateRealDbUpgrade {
    /// The validated job configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

impl Plugin for GateRealDbUpgrade {
    const NAME: &'static str = "gate_real_db_upgrade";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DEFAULT_JOB: &'static str = "build:gate-real-db-upgrade";
    const DESCRIPTION: &'static str =
        "tests a change's database migrations against real datasets, timing each one";

    fn new(config: &JobConfig) -> Result<Self, PluginError> {
        let settings = Settings::from_config(&config.config)?;
        // Validate the datasets now, so that check-config reports their mistakes; they are
        // read again for every job. A missing directory may be filled later.
        if settings.datasets_dir.is_dir() {
            let datasets = run::load_datasets(&settings).map_err(PluginError::Config)?;
            // check-config also reports files a job would not find (the daemon starts anyway:
            // such a dataset fails its runs, e.g. with `Could not find seed database.`).
            if config.host.check_only {
                let problems: Vec<String> = datasets
                    .iter()
                    .flat_map(|d| {
                        let file = d.source.display().to_string();
                        d.check_files()
                            .into_iter()
                            .map(move |why| format!("{file}: {why}"))
                    })
                    .collect();
                if !problems.is_empty() {
                    return Err(PluginError::Config(problems));
                }
            }
        } else {
            tracing::warn!(
                "{}: the datasets directory {} does not exist (yet): jobs will find no dataset",
                config.function,
                settings.datasets_dir.display()
            );
        }
        // The daemon (or run-job) is starting: drop the run databases killed runs left.
        if config.host.clean_leftovers {
            if let Some(dir) = leftovers::claims_dir(&config.host) {
                leftovers::drop_orphaned(&dir);
                leftovers::remove_orphaned_instances(&dir);
            }
        }
        if let Some(options) = config.host.prepare_datasets {
            prepare(&settings, config, options)?;
        }
        if let Some(request) = &config.host.import_logs {
            import_logs(config, request)?;
        }
        Ok(Self { settings })
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError> {
        let dirs = JobDirs {
            working_dir: ctx.working_dir(),
            results_dir: ctx.results_dir(),
        };
        let progress = |n, d| ctx.progress(n, d);
        let env = JobEnv {
            cancel: ctx,
            progress: &progress,
            ctx: Some(ctx),
        };
        run::run_job(&self.settings, ctx.job(), &dirs, &env)
    }
}

/// `turbo-hipster prepare-datasets` ([`provisioning::prepare_datasets`]): each dataset's line
/// printed; failures are the job's configuration errors.
fn prepare(
    settings: &Settings,
    config: &JobConfig,
    options: turbo_hipster_sdk::PrepareDatasets,
) -> Result<(), PluginError> {
    let Some(state) = provisioning::state_dir(&config.host) else {
        return Err(PluginError::Config(vec![
            "prepare-datasets: no jobs_working_dir to keep golden copies in".into(),
        ]));
    };
    let datasets = run::load_datasets(settings).map_err(PluginError::Config)?;
    let claims = leftovers::claims_dir(&config.host);
    let (done, failed) = provisioning::prepare_datasets(
        &datasets,
        &settings.datasets_dir,
        &state,
        claims.as_deref(),
        options,
    );
    for line in &done {
        println!("{}: {line}", config.function);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(PluginError::Config(failed))
    }
}

/// `turbo-hipster import-logs` ([`import::import_logs`]): each file's line printed; the files
/// it could not read are the job's configuration errors.
fn import_logs(
    config: &JobConfig,
    request: &turbo_hipster_sdk::ImportLogs,
) -> Result<(), PluginError> {
    let Some(location) = config.host.history_database.as_deref() else {
        return Err(PluginError::Config(vec![
            "import-logs: the daemon names no history database".into(),
        ]));
    };
    let location = th_history::Location::parse(location, std::path::Path::new("/"))
        .map_err(|why| PluginError::Config(vec![format!("history_database {why}")]))?;
    let report = import::import_logs(request, &th_history::HistoryDb::new(location));
    for line in &report.done {
        println!("{line}");
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(PluginError::Config(report.failed))
    }
}

export_plugin!(GateRealDbUpgrade);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_validates_the_config_and_tolerates_a_missing_datasets_dir() {
        let mut config = JobConfig::default();
        config
            .config
            .insert("datasets_dir".into(), json!("/nonexistent/th-datasets"));
        config.config.insert("shutdown-th".into(), json!(true));
        let plugin = GateRealDbUpgrade::new(&config).unwrap();
        assert_eq!(plugin.settings().max_parallel, 1);

        config.config.insert("timeout".into(), json!(0));
        config.config.insert("engine".into(), json!("db2"));
        let PluginError::Config(problems) = GateRealDbUpgrade::new(&config).unwrap_err() else {
            panic!("not a config error")
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
