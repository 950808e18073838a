//! The plugin's view of the host during one job.

use std::path::PathBuf;
use std::time::Duration;

use crate::job::Job;
use crate::tracing_forward::HostApi;
use crate::tracing_forward::{self, ForwardGuard};

/// What a running job can ask of the daemon. Cheap to use from any thread: it is `Sync`, so
/// threads started with [`std::thread::scope`] may share it.
pub struct Context<'a> {
    host: &'a (dyn HostApi + 'a),
    job: Job,
}

impl<'a> Context<'a> {
    pub(crate) fn new(host: &'a (dyn HostApi + 'a), job: Job) -> Self {
        Self { host, job }
    }

    /// The job: name, Gearman unique, parameters, the job's configuration.
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn project(ctx: &Context<'_>) -> String {
    ///     let job = ctx.job();
    ///     format!("{} runs for {}", job.name, job.param("ZUUL_PROJECT").unwrap_or("no project"))
    /// }
    /// ```
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Reports progress (Gearman WORK_STATUS).
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn run_steps(ctx: &Context<'_>, steps: &[&str]) {
    ///     for (i, _step) in steps.iter().enumerate() {
    ///         // … do the step …
    ///         ctx.progress(i as u64 + 1, steps.len() as u64);
    ///     }
    /// }
    /// ```
    pub fn progress(&self, numerator: u64, denominator: u64) {
        self.host.progress(numerator, denominator);
    }

    /// Sends extra data to Zuul (a WORK_DATA packet). `data` should be a JSON object; it must
    /// not contain `result`, which the daemon sends itself at the end.
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn announce(ctx: &Context<'_>) {
    ///     ctx.send_work_data(&serde_json::json!({"datasets": 3}));
    /// }
    /// ```
    pub fn send_work_data(&self, data: &serde_json::Value) {
        self.host.send_work_data(&data.to_string());
    }

    /// Writes a log line to the daemon's log, tagged with the plugin's name. `tracing` macros
    /// do the same on the job's thread (and in threads that call [`Context::forward_tracing`]).
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn note(ctx: &Context<'_>) {
    ///     ctx.log(tracing::Level::INFO, "seed loaded");
    ///     tracing::info!("the same, through tracing");
    /// }
    /// ```
    pub fn log(&self, level: tracing::Level, message: &str) {
        self.host
            .log(tracing_forward::level_code(&level), "", message);
    }

    /// Whether the job has been cancelled (a Zuul stop, a timeout set by the host, shutdown).
    ///
    /// ```
    /// # use turbo_hipster_sdk::{Context, Outcome};
    /// fn apply_all(ctx: &Context<'_>, files: &[&str]) -> Outcome {
    ///     for _file in files {
    ///         if ctx.is_cancelled() {
    ///             return Outcome::aborted();
    ///         }
    ///         // … apply it …
    ///     }
    ///     Outcome::success()
    /// }
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.host.is_cancelled()
    }

    /// Blocks until the job is cancelled or `timeout` passed; returns whether it was cancelled.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use turbo_hipster_sdk::Context;
    /// // A watcher thread: wakes at once on a cancel, otherwise every second.
    /// fn watch(ctx: &Context<'_>, done: &std::sync::atomic::AtomicBool) {
    ///     while !done.load(std::sync::atomic::Ordering::Relaxed) {
    ///         if ctx.wait_cancelled(Duration::from_secs(1)) {
    ///             // kill what the job started
    ///             break;
    ///         }
    ///     }
    /// }
    /// ```
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.host.wait_cancelled(ms)
    }

    /// The job's private working directory.
    ///
    /// The directory is created when first asked for and removed after the job.
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn scratch(ctx: &Context<'_>) -> std::io::Result<()> {
    ///     std::fs::write(ctx.working_dir().join("tmp.sql"), "SELECT 1;")
    /// }
    /// ```
    pub fn working_dir(&self) -> PathBuf {
        PathBuf::from(self.host.working_dir())
    }

    /// The directory whose files are published as the job's logs.
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn keep_report(ctx: &Context<'_>, text: &str) -> std::io::Result<()> {
    ///     std::fs::write(ctx.results_dir().join("report.txt"), text)
    /// }
    /// ```
    pub fn results_dir(&self) -> PathBuf {
        PathBuf::from(self.host.results_dir())
    }

    /// Forwards `tracing` events of the current thread to the daemon until the guard drops.
    /// The job's own thread already does; call this first thing in threads you start.
    ///
    /// ```
    /// # use turbo_hipster_sdk::Context;
    /// fn in_parallel(ctx: &Context<'_>) {
    ///     std::thread::scope(|s| {
    ///         s.spawn(|| {
    ///             let _forward = ctx.forward_tracing();
    ///             tracing::info!("from a worker thread");
    ///         });
    ///     });
    /// }
    /// ```
    pub fn forward_tracing(&self) -> ForwardGuard<'_> {
        ForwardGuard::enter(self.host)
    }
}
