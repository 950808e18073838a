//! The job pipeline: how a job runs, the same for Gearman jobs and `run-job`.
//!
//! A job is prepared ([`Pipeline::prepare`]: validated, its runner found, its directories
//! named), then launched on a job thread ([`Pipeline::launch`]): the plugin runs with a host
//! context (in a child process of its own by default, [`crate::isolation`]; in the daemon's
//! process under the [`Journal`] otherwise), then [`jobs::finish`] writes its record and
//! publishes its logs. The result goes to the caller from the job's thread as soon as the job's
//! files are in place ([`JobHooks::on_result`]: the daemon's fast path, no detour through the
//! async runtime); the history line and the log line follow, then [`JobHooks::on_done`].
//! `run-job` uses the same path and waits for `on_done` ([`Pipeline::run`]).
//!
//! Everything jobs share lives here, owned by the service that runs them (`serve`, `run-job`)
//! and handed to each job as an `Arc`, never in a process-wide static: the configuration and the
//! registry, whether `jobs_working_dir` was made, the [`History`], the [`Journal`] (the
//! daemon's only) and the [`JobThreads`] pool. Two services in one process (as in the tests)
//! share nothing. When the last `Arc` goes (the service returned and its jobs are over), the
//! pool closes and its idle threads end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use abi_stable::sabi_trait::TD_Opaque;
use turbo_hipster_sdk::abi::Host_TO;

use crate::config::Config;
use crate::history::History;
use crate::host_context::{CancelToken, EventSink, JobHost};
use crate::isolation::{self, Isolation};
use crate::job_threads::{JobThreads, Release};
use crate::jobs::{self, JobOutcome, JobRequest, PrepareError, PreparedJob, Ran, HISTORY_FILE};
use crate::journal::Journal;
use crate::plugins::Registry;

/// What a launched job calls back, both on its thread.
pub struct JobHooks {
    /// The outcome, once the job's files are written and published (so that the logs are in
    /// place when Zuul hears the result).
    pub on_result: Box<dyn FnOnce(&JobOutcome) + Send>,
    /// The outcome again once the job is completely over: its history line and log line are
    /// written. What must outlive the job (the daemon's hold on its Gearman slot) goes here.
    pub on_done: Box<dyn FnOnce(JobOutcome) + Send>,
}

/// The service's job pipeline.
pub struct Pipeline {
    config: Arc<Config>,
    registry: Arc<Registry>,
    jobs_dir_made: AtomicBool,
    history: History,
    journal: Option<Journal>,
    threads: JobThreads,
}

impl Pipeline {
    /// A pipeline for these jobs; the history is opened (and a torn last line repaired) now.
    /// In-process jobs are not journaled: see [`Pipeline::with_journal`].
    pub fn new(config: Arc<Config>, registry: Arc<Registry>) -> Self {
        Pipeline {
            history: History::open(&config.jobs_working_dir.join(HISTORY_FILE))
                .with_migrations(th_history::HistoryDb::new(config.history_database.clone())),
            config,
            registry,
            jobs_dir_made: AtomicBool::new(false),
            journal: None,
            threads: JobThreads::new(),
        }
    }

    /// Journals in-process jobs ([`crate::journal`]): for the daemon, to which gearmand hands
    /// a job that crashed it again.
    pub fn with_journal(mut self) -> Self {
        let config = &self.config;
        self.journal = Some(Journal::new(&config.jobs_working_dir, &config.worker_name));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The jobs served.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Validates a request and names its directories, making `jobs_working_dir` if needed.
    ///
    /// # Errors
    /// Invalid parameters, an unknown job, or a `jobs_working_dir` that cannot be made.
    pub fn prepare(&self, request: JobRequest) -> Result<PreparedJob, PrepareError> {
        let job = jobs::prepare(&self.config, &self.registry, request)?;
        self.ensure_jobs_dir()?;
        Ok(job)
    }

    /// Creates `jobs_working_dir` once per pipeline.
    fn ensure_jobs_dir(&self) -> Result<(), PrepareError> {
        if self.jobs_dir_made.load(Ordering::Relaxed) {
            return Ok(());
        }
        let dir = &self.config.jobs_working_dir;
        std::fs::create_dir_all(dir).map_err(|source| PrepareError::Directory {
            path: dir.clone(),
            source,
        })?;
        self.jobs_dir_made.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a prepared job on a job thread and returns at once; `hooks` are called on that
    /// thread. Progress and work data go to `events`; `cancel` stops the job.
    ///
    /// # Errors
    /// No thread could be started for the job (the hooks are then not called).
    pub fn launch(
        self: &Arc<Self>,
        job: PreparedJob,
        events: EventSink,
        cancel: CancelToken,
        hooks: JobHooks,
    ) -> std::io::Result<()> {
        let pipeline = self.clone();
        self.threads.spawn(Box::new(move |release: &Release<'_>| {
            pipeline.run_on_thread(&job, events, cancel, hooks, release);
        }))
    }

    /// Runs a prepared job through [`Pipeline::launch`] and waits until it is completely over.
    pub async fn run(
        self: &Arc<Self>,
        job: PreparedJob,
        events: EventSink,
        cancel: CancelToken,
    ) -> JobOutcome {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let hooks = JobHooks {
            on_result: Box::new(|_| {}),
            on_done: Box::new(move |outcome| drop(tx.send(outcome))),
        };
        let started = Instant::now();
        let fallback = (job.url.clone(), job.job_dir.clone());
        let result = match self.launch(job, events, cancel, hooks) {
            Ok(()) => match rx.await {
                Ok(outcome) => return outcome,
                Err(_) => "FAILURE - the job's thread failed: it ended without an outcome".into(),
            },
            Err(e) => format!("FAILURE - cannot start a thread for the job: {e}"),
        };
        jobs::thread_failed(fallback, started, result)
    }

    /// The job thread's work: the job to its end, the hooks called, the thread released to the
    /// next job as soon as only bookkeeping is left.
    fn run_on_thread(
        &self,
        job: &PreparedJob,
        events: EventSink,
        cancel: CancelToken,
        hooks: JobHooks,
        release: &Release<'_>,
    ) {
        let started = Instant::now();
        let mut on_result = Some(hooks.on_result);
        let mut report = |o: &JobOutcome| {
            if let Some(f) = on_result.take() {
                f(o);
                // What is left is the history and log lines: the next job may have this
                // thread already.
                release.now();
            }
        };
        let run =
            std::panic::AssertUnwindSafe(|| self.run_to_end(job, events, cancel, &mut report));
        let outcome = std::panic::catch_unwind(run).unwrap_or_else(|_| {
            let fallback = (job.url.clone(), job.job_dir.clone());
            let why = "FAILURE - the job's thread failed: it panicked";
            let failed = jobs::thread_failed(fallback, started, why.into());
            report(&failed);
            failed
        });
        (hooks.on_done)(outcome);
    }

    /// Runs the plugin, then [`jobs::finish`] (which calls `report` once the job's files are in
    /// place). Blocks the calling thread for the whole job.
    fn run_to_end(
        &self,
        job: &PreparedJob,
        events: EventSink,
        cancel: CancelToken,
        report: &mut dyn FnMut(&JobOutcome),
    ) -> JobOutcome {
        let started = Instant::now();
        tracing::debug!(
            function = %job.request.function,
            unique = %job.request.unique,
            plugin = %job.runner.plugin.name,
            dir = %job.job_dir.display(),
            "job started"
        );
        let ran = match Isolation::of(&job.runner, self.config.job_isolation) {
            Isolation::Process => run_in_child(job, &events, &cancel),
            Isolation::InProcess => self.run_in_process(job, events, &cancel),
        };
        jobs::finish(
            &self.config,
            &self.history,
            job,
            started,
            ran,
            &cancel,
            report,
        )
    }

    /// Runs the job on this thread, in the journal if there is one (which refuses a job that
    /// crashed the daemon twice).
    fn run_in_process(&self, job: &PreparedJob, events: EventSink, cancel: &CancelToken) -> Ran {
        let request = &job.request;
        let entry = match self
            .journal
            .as_ref()
            .map(|j| j.start(&request.function, &request.unique))
        {
            Some(Err(refused)) => {
                tracing::error!(function = %request.function, unique = %request.unique, "{refused}");
                return Ran {
                    outcome: Err(refused),
                    results_made: false,
                    work_made: false,
                };
            }
            Some(Ok(entry)) => Some(entry),
            None => None,
        };
        let host = JobHost::new(
            &job.runner.plugin.name,
            job.plugin_job_json(),
            events,
            cancel.clone(),
            job.work_dir(),
            job.job_dir.clone(),
        );
        let outcome = crate::plugins::run_plugin(&job.runner, Host_TO::from_ptr(&host, TD_Opaque));
        drop(entry);
        let (results_made, work_made) = host.dirs_made();
        Ran {
            outcome,
            results_made,
            work_made,
        }
    }
}

/// Runs the job in a child process of its own.
fn run_in_child(job: &PreparedJob, events: &EventSink, cancel: &CancelToken) -> Ran {
    let work_dir = job.work_dir();
    let outcome = isolation::run_in_child(
        &job.runner,
        job.plugin_job_json(),
        events,
        cancel,
        &work_dir,
        &job.job_dir,
    );
    Ran {
        outcome,
        results_made: job.job_dir.exists(),
        work_made: work_dir.exists(),
    }
}
