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
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Reports progress (Gearman WORK_STATUS).
    pub fn progress(&self, numerator: u64, denominator: u64) {
        self.host.progress(numerator, denominator);
    }

    /// Sends extra data to Zuul (a WORK_DATA packet). `data` should be a JSON object; it must
    /// not contain `result`, which the daemon sends itself at the end.
    pub fn send_work_data(&self, data: &serde_json::Value) {
        self.host.send_work_data(&data.to_string());
    }

    /// Writes a log line to the daemon's log, tagged with the plugin's name. `tracing` macros
    /// do the same on the job's thread (and in threads that call [`Context::forward_tracing`]).
    pub fn log(&self, level: tracing::Level, message: &str) {
        self.host
            .log(tracing_forward::level_code(&level), "", message);
    }

    /// Whether the job has been cancelled (a Zuul stop, a timeout set by the host, shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.host.is_cancelled()
    }

    /// Blocks until the job is cancelled or `timeout` passed; returns whether it was cancelled.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.host.wait_cancelled(ms)
    }

    /// The job's private working directory.
    pub fn working_dir(&self) -> PathBuf {
        PathBuf::from(self.host.working_dir())
    }

    /// The directory whose files are published as the job's logs.
    pub fn results_dir(&self) -> PathBuf {
        PathBuf::from(self.host.results_dir())
    }

    /// Forwards `tracing` events of the current thread to the daemon until the guard drops.
    /// The job's own thread already does; call this first thing in threads you start.
    pub fn forward_tracing(&self) -> ForwardGuard<'_> {
        ForwardGuard::enter(self.host)
    }
}
