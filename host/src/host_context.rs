//! The daemon's side of the plugin interface: what a plugin's `Host` calls do.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use abi_stable::std_types::{RStr, RString};
use tokio::sync::mpsc::UnboundedSender;
use turbo_hipster_sdk::abi::Host;

/// Something a running job reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// WORK_STATUS.
    Progress(u64, u64),
    /// A JSON object for WORK_DATA.
    WorkData(String),
}

/// Where a running job's events go; called on the job's thread.
pub type EventSink = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// A sink that queues events on a channel (for callers that consume them elsewhere).
pub fn channel_sink(tx: UnboundedSender<JobEvent>) -> EventSink {
    Arc::new(move |ev| {
        let _ = tx.send(ev);
    })
}

#[derive(Default)]
struct CancelState {
    reason: Option<String>,
}

/// A cancellation flag shared by the daemon and a running job; cheap to clone.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<(Mutex<CancelState>, Condvar, tokio::sync::Notify)>,
}

impl CancelToken {
    /// A fresh, not cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the job; the first reason wins.
    pub fn cancel(&self, reason: &str) {
        let (state, cv, notify) = &*self.inner;
        if let Ok(mut s) = state.lock() {
            if s.reason.is_none() {
                s.reason = Some(reason.to_string());
            }
        }
        cv.notify_all();
        notify.notify_waiters();
    }

    /// Why it was cancelled, if it was.
    pub fn reason(&self) -> Option<String> {
        self.inner.0.lock().ok().and_then(|s| s.reason.clone())
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// Blocks (a blocking thread) until cancelled or `timeout` passed.
    pub fn wait_blocking(&self, timeout: Duration) -> bool {
        let (state, cv, _) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let Ok(mut guard) = state.lock() else {
            return false;
        };
        while guard.reason.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match cv.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => guard = g,
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits (async) until cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.2.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Logs a plugin's log line in the daemon's log at its level.
pub fn forward_log(plugin: &str, level: u8, target: &str, message: &str) {
    let target = if target.is_empty() { plugin } else { target };
    match level {
        1 => tracing::error!(plugin, target_ = target, "{message}"),
        2 => tracing::warn!(plugin, target_ = target, "{message}"),
        3 => tracing::info!(plugin, target_ = target, "{message}"),
        4 => tracing::debug!(plugin, target_ = target, "{message}"),
        _ => tracing::trace!(plugin, target_ = target, "{message}"),
    }
}

/// The host context while a plugin creates a runner: logging only.
pub struct InitHost {
    plugin: String,
}

impl InitHost {
    /// For the plugin named `plugin`.
    pub fn new(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_string(),
        }
    }
}

impl Host for InitHost {
    fn job_json(&self) -> RString {
        RString::from("{}")
    }
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>) {
        forward_log(&self.plugin, level, target.as_str(), message.as_str());
    }
    fn progress(&self, _numerator: u64, _denominator: u64) {}
    fn send_work_data(&self, _json: RStr<'_>) {}
    fn is_cancelled(&self) -> bool {
        false
    }
    fn wait_cancelled(&self, timeout_ms: u64) -> bool {
        std::thread::sleep(Duration::from_millis(timeout_ms.min(1000)));
        false
    }
    fn working_dir(&self) -> RString {
        RString::new()
    }
    fn results_dir(&self) -> RString {
        RString::new()
    }
}

/// The host context of one running job.
pub struct JobHost {
    plugin: String,
    job_json: String,
    events: EventSink,
    cancel: CancelToken,
    working_dir: PathBuf,
    results_dir: PathBuf,
    work_dir_made: std::sync::OnceLock<()>,
    results_dir_made: std::sync::OnceLock<()>,
    task_log: Mutex<Option<File>>,
}

impl JobHost {
    /// A context for one job; plugin log lines also go to `task_output.log` in the results
    /// dir (created with the first line). The working dir is created when first asked for.
    pub fn new(
        plugin: &str,
        job_json: String,
        events: EventSink,
        cancel: CancelToken,
        working_dir: PathBuf,
        results_dir: PathBuf,
    ) -> Self {
        Self {
            plugin: plugin.to_string(),
            job_json,
            events,
            cancel,
            working_dir,
            results_dir,
            work_dir_made: std::sync::OnceLock::new(),
            results_dir_made: std::sync::OnceLock::new(),
            task_log: Mutex::new(None),
        }
    }
}

impl Host for JobHost {
    fn job_json(&self) -> RString {
        RString::from(self.job_json.as_str())
    }

    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>) {
        forward_log(&self.plugin, level, target.as_str(), message.as_str());
        self.write_task_log(level, message.as_str());
    }

    fn progress(&self, numerator: u64, denominator: u64) {
        (self.events)(JobEvent::Progress(numerator, denominator));
    }

    fn send_work_data(&self, json: RStr<'_>) {
        // Only JSON objects without `result`: the verdict is the daemon's to send.
        match serde_json::from_str::<serde_json::Value>(json.as_str()) {
            Ok(serde_json::Value::Object(mut map)) => {
                if map.remove("result").is_some() {
                    tracing::warn!(plugin = %self.plugin, "work data may not carry \"result\"; dropped that key");
                }
                (self.events)(JobEvent::WorkData(
                    serde_json::Value::Object(map).to_string(),
                ));
            }
            _ => {
                tracing::warn!(plugin = %self.plugin, "ignored work data that is not a JSON object")
            }
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn wait_cancelled(&self, timeout_ms: u64) -> bool {
        self.cancel.wait_blocking(Duration::from_millis(timeout_ms))
    }

    fn working_dir(&self) -> RString {
        self.ensure_results_dir();
        self.work_dir_made.get_or_init(|| {
            match std::fs::create_dir_all(&self.working_dir) {
                // Whoever starts next removes it if this process dies with the job.
                Ok(()) => crate::leftovers::claim_work_dir(&self.working_dir),
                Err(e) => {
                    tracing::error!(dir = %self.working_dir.display(), "cannot create the work dir: {e}")
                }
            }
        });
        RString::from(self.working_dir.display().to_string())
    }

    fn results_dir(&self) -> RString {
        self.ensure_results_dir();
        RString::from(self.results_dir.display().to_string())
    }
}

impl JobHost {
    /// Whether the job made its results dir and its work dir (the plugin asked for them or
    /// logged).
    pub fn dirs_made(&self) -> (bool, bool) {
        (
            self.results_dir_made.get().is_some(),
            self.work_dir_made.get().is_some(),
        )
    }

    /// Appends a plugin log line to the job's `task_output.log` (made with the first line).
    pub fn write_task_log(&self, level: u8, message: &str) {
        if let Ok(mut guard) = self.task_log.lock() {
            if guard.is_none() {
                self.ensure_results_dir();
                *guard = File::create(self.results_dir.join(crate::job_dir::TASK_LOG)).ok();
            }
            if let Some(f) = guard.as_mut() {
                let level = match level {
                    1 => "ERROR",
                    2 => "WARNING",
                    3 => "INFO",
                    4 => "DEBUG",
                    _ => "TRACE",
                };
                let _ = writeln!(f, "{} {level} {}", crate::timestamp_now(), message);
            }
        }
    }

    fn ensure_results_dir(&self) {
        self.results_dir_made.get_or_init(|| {
            if let Err(e) = std::fs::create_dir_all(&self.results_dir) {
                tracing::error!(dir = %self.results_dir.display(), "cannot create the results dir: {e}");
            }
        });
    }
}
