//! The daemon's metrics, in the Prometheus text format (version 0.0.4), served on
//! `GET /metrics` when the config sets `metrics.listen` ([`http`]).
//!
//! Every counter lives here and is updated where its event happens: the service counts a
//! build's start, its result (from the job's thread, before Zuul hears it) and a refused build;
//! the Gearman worker keeps its own per-server counters ([`WorkerStats`]), read at scrape time.
//! Updates are plain atomics: a job thread never waits for a scrape, nor a scrape for a job.
//!
//! Label values are bounded: `job` is one of the configured Gearman functions (anything else is
//! counted under [`UNREGISTERED`]), `result` and `reason` come from fixed sets, `plugin` and
//! `server` from the config. Nothing is labelled by a build parameter or a unique id.

pub mod http;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use turbo_hipster_sdk::results;

use crate::config::Config;
use crate::gearman::worker::WorkerStats;
use crate::plugins::Registry;

/// The `job` label of a build refused for a function this worker does not serve.
pub const UNREGISTERED: &str = "(unregistered)";

/// The upper bounds of the build duration histogram's buckets, in seconds (1 s to 2 h).
pub const DURATION_BUCKETS: [u64; 12] = [1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

/// How a build ended, as Zuul hears it: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultClass {
    /// `SUCCESS`.
    Success,
    /// `FAILURE - …`, and any result in a plugin's own words (`Return code from test script
    /// was non-zero (3)`): Zuul gets `WORK_FAIL` and reports a failure.
    Failure,
    /// `WARNING - …` (the gate: a migration over its limit).
    Warning,
    /// `ERROR - …` (`ERROR - infrastructure: …`): no verdict, Zuul runs the build again.
    Error,
    /// `ABORTED`: stopped by Zuul, by the shutdown, or its connection was lost.
    Aborted,
}

impl ResultClass {
    /// Every class, in the order they are rendered.
    pub const ALL: [ResultClass; 5] = [
        Self::Success,
        Self::Failure,
        Self::Warning,
        Self::Error,
        Self::Aborted,
    ];

    /// The class of a build's `result`.
    pub fn of(result: &str) -> Self {
        let first = result.split([' ', '\n']).next().unwrap_or("");
        match first {
            // Exactly: the service sends WORK_COMPLETE for nothing else.
            results::SUCCESS if result == results::SUCCESS => Self::Success,
            results::ABORTED => Self::Aborted,
            "WARNING" => Self::Warning,
            "ERROR" => Self::Error,
            _ => Self::Failure,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
            Self::Aborted => "ABORTED",
        }
    }
}

/// Why a build ended `ABORTED`: the `reason` label of `turbo_hipster_builds_aborted_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// Zuul sent `stop:<manager>` for it.
    Stop,
    /// The daemon shut down and the grace period ran out (or a second signal came).
    Shutdown,
    /// The Gearman connection that assigned it was lost.
    ConnectionLost,
    /// The plugin returned `ABORTED` without being asked to stop.
    Plugin,
}

impl AbortReason {
    /// Every reason, in the order they are rendered.
    pub const ALL: [AbortReason; 4] = [
        Self::Stop,
        Self::Shutdown,
        Self::ConnectionLost,
        Self::Plugin,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Shutdown => "shutdown",
            Self::ConnectionLost => "connection_lost",
            Self::Plugin => "plugin",
        }
    }
}

/// Why a build was refused before anything ran: the `reason` label of
/// `turbo_hipster_builds_refused_total`. Zuul gets `FAILURE - …` for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Parameters that are not a JSON object of strings, unsafe values, a unique id that is
    /// not a plain name (`FAILURE - invalid job parameters: …`).
    InvalidParameters,
    /// A function this worker has no job for.
    UnknownJob,
    /// `jobs_working_dir` could not be made.
    JobDirectory,
}

impl Refusal {
    /// Every reason, in the order they are rendered.
    pub const ALL: [Refusal; 3] = [
        Self::InvalidParameters,
        Self::UnknownJob,
        Self::JobDirectory,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidParameters => "invalid_parameters",
            Self::UnknownJob => "unknown_job",
            Self::JobDirectory => "job_directory",
        }
    }
}

/// One job's counters.
#[derive(Debug, Default)]
struct JobCounters {
    plugin: String,
    running: AtomicU64,
    results: [AtomicU64; ResultClass::ALL.len()],
    aborted: [AtomicU64; AbortReason::ALL.len()],
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Per bucket (not cumulative), the last one for anything over the largest bound.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_ms_sum: AtomicU64,
    /// Milliseconds since the epoch; 0: no build finished yet.
    last_finish_ms: AtomicU64,
}

impl JobCounters {
    fn observe(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le as f64)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.duration_ms_sum.fetch_add(ms, Ordering::Relaxed);
    }
}

/// A plugin named in the config: its version when it loaded.
#[derive(Debug)]
struct PluginState {
    name: String,
    loaded: bool,
}

/// Every metric of one serving daemon.
#[derive(Debug)]
pub struct Metrics {
    version: &'static str,
    sdk_version: &'static str,
    start_time: f64,
    max_concurrent_jobs: usize,
    plugins: Vec<PluginState>,
    job_setup_errors: usize,
    /// By Gearman function, fixed at start: the label set never grows.
    jobs: BTreeMap<String, JobCounters>,
    unregistered: JobCounters,
    gearman: OnceLock<Arc<WorkerStats>>,
}

/// Counts a build as running while it lives.
#[derive(Debug)]
pub struct RunningBuild {
    metrics: Arc<Metrics>,
    job: String,
}

impl Drop for RunningBuild {
    fn drop(&mut self) {
        let counters = self.metrics.counters(&self.job);
        // Never below 0, even if a guard were dropped twice.
        let _ = counters
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// The metrics of a daemon serving `registry`'s jobs.
    pub fn new(config: &Config, registry: &Registry) -> Self {
        let plugins = registry
            .plugins
            .iter()
            .map(|(name, p)| PluginState {
                name: name.clone(),
                loaded: p.is_ok(),
            })
            .collect();
        let jobs = registry
            .jobs
            .iter()
            .map(|(function, runner)| {
                let counters = JobCounters {
                    plugin: runner.plugin.name.clone(),
                    ..JobCounters::default()
                };
                (function.clone(), counters)
            })
            .collect();
        Metrics {
            version: env!("CARGO_PKG_VERSION"),
            sdk_version: turbo_hipster_sdk::SDK_VERSION,
            start_time: epoch_seconds(SystemTime::now()),
            max_concurrent_jobs: config.max_concurrent_jobs,
            plugins,
            job_setup_errors: registry.job_errors.len(),
            jobs,
            unregistered: JobCounters::default(),
            gearman: OnceLock::new(),
        }
    }

    /// Reads the Gearman servers' state from the worker's counters from now on.
    pub fn set_gearman(&self, stats: Arc<WorkerStats>) {
        let _ = self.gearman.set(stats);
    }

    fn counters(&self, job: &str) -> &JobCounters {
        self.jobs.get(job).unwrap_or(&self.unregistered)
    }

    /// A build of `job` started; it counts as running until the guard goes.
    pub fn build_started(self: &Arc<Self>, job: &str) -> RunningBuild {
        self.counters(job).running.fetch_add(1, Ordering::AcqRel);
        RunningBuild {
            metrics: self.clone(),
            job: job.to_string(),
        }
    }

    /// A build of `job` ended with `result` after `duration`; `cancelled` says why it was
    /// stopped, if it was.
    pub fn build_finished(
        &self,
        job: &str,
        result: &str,
        duration: Duration,
        cancelled: Option<AbortReason>,
    ) {
        let counters = self.counters(job);
        let class = ResultClass::of(result);
        if let Some(i) = ResultClass::ALL.iter().position(|c| *c == class) {
            counters.results[i].fetch_add(1, Ordering::Relaxed);
        }
        if class == ResultClass::Aborted {
            let reason = cancelled.unwrap_or(AbortReason::Plugin);
            if let Some(i) = AbortReason::ALL.iter().position(|r| *r == reason) {
                counters.aborted[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.observe(duration);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        counters.last_finish_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// A build of `job` was refused before anything ran.
    pub fn build_refused(&self, job: &str, why: Refusal) {
        let counters = self.counters(job);
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            counters.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every metric in the Prometheus text format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        self.render_daemon(&mut out);
        self.render_gearman(&mut out);
        self.render_builds(&mut out);
        out.text
    }

    fn render_daemon(&self, out: &mut Exposition) {
        out.family(
            "turbo_hipster_build_info",
            "gauge",
            "The daemon's version and the plugin SDK version it speaks; always 1.",
        );
        out.sample(
            "turbo_hipster_build_info",
            &[("version", self.version), ("sdk_version", self.sdk_version)],
            1.0,
        );
        out.family(
            "turbo_hipster_start_time_seconds",
            "gauge",
            "When the daemon started serving, in seconds since the Unix epoch.",
        );
        out.sample("turbo_hipster_start_time_seconds", &[], self.start_time);
        out.family(
            "turbo_hipster_max_concurrent_jobs",
            "gauge",
            "Builds the daemon runs at once at most (max_concurrent_jobs).",
        );
        out.sample(
            "turbo_hipster_max_concurrent_jobs",
            &[],
            self.max_concurrent_jobs as f64,
        );
        out.family(
            "turbo_hipster_plugin_loaded",
            "gauge",
            "1 for each configured plugin that loaded, 0 for one that could not be loaded.",
        );
        for p in &self.plugins {
            let v = if p.loaded { 1.0 } else { 0.0 };
            out.sample("turbo_hipster_plugin_loaded", &[("plugin", &p.name)], v);
        }
        out.family(
            "turbo_hipster_job_registered",
            "gauge",
            "1 for each job (Gearman function) the daemon registers, with its plugin.",
        );
        for (job, c) in &self.jobs {
            let labels = [("job", job.as_str()), ("plugin", c.plugin.as_str())];
            out.sample("turbo_hipster_job_registered", &labels, 1.0);
        }
        out.family(
            "turbo_hipster_job_setup_errors",
            "gauge",
            "Configured jobs that could not be set up (their plugin failed to load or refused their configuration); they are not served.",
        );
        out.sample(
            "turbo_hipster_job_setup_errors",
            &[],
            self.job_setup_errors as f64,
        );
    }

    fn render_gearman(&self, out: &mut Exposition) {
        let servers = self.gearman.get().map(|s| s.servers()).unwrap_or_default();
        out.family(
            "turbo_hipster_gearman_server_up",
            "gauge",
            "1 while every connection to the Gearman server is connected and registered, else 0.",
        );
        for s in &servers {
            let v = if s.up { 1.0 } else { 0.0 };
            out.sample(
                "turbo_hipster_gearman_server_up",
                &[("server", &s.server)],
                v,
            );
        }
        out.family(
            "turbo_hipster_gearman_reconnects_total",
            "counter",
            "Times a connection to the Gearman server registered again after it had been lost or had failed.",
        );
        for s in &servers {
            out.sample(
                "turbo_hipster_gearman_reconnects_total",
                &[("server", &s.server)],
                s.reconnects as f64,
            );
        }
        out.family(
            "turbo_hipster_gearman_oversized_jobs_total",
            "counter",
            "Jobs the Gearman server assigned whose data exceeded max_packet_bytes; each failed without running.",
        );
        for s in &servers {
            out.sample(
                "turbo_hipster_gearman_oversized_jobs_total",
                &[("server", &s.server)],
                s.oversized_jobs as f64,
            );
        }
    }

    /// The jobs to render: every registered one, and the unregistered bucket once it counted
    /// something.
    fn job_rows(&self) -> Vec<(&str, &JobCounters)> {
        let mut rows: Vec<(&str, &JobCounters)> =
            self.jobs.iter().map(|(j, c)| (j.as_str(), c)).collect();
        let u = &self.unregistered;
        let any = |a: &[AtomicU64]| a.iter().any(|n| n.load(Ordering::Relaxed) > 0);
        if any(&u.results) || any(&u.refused) || u.running.load(Ordering::Relaxed) > 0 {
            rows.push((UNREGISTERED, u));
        }
        rows
    }

    fn render_builds(&self, out: &mut Exposition) {
        let rows = self.job_rows();
        out.family(
            "turbo_hipster_builds_running",
            "gauge",
            "Builds running now (from their start until their history line is written).",
        );
        for (job, c) in &rows {
            let n = c.running.load(Ordering::Relaxed) as f64;
            out.sample("turbo_hipster_builds_running", &[("job", job)], n);
        }
        out.family(
            "turbo_hipster_builds_total",
            "counter",
            "Builds finished, by the class of the result Zuul got: SUCCESS, FAILURE, WARNING, ERROR (infrastructure: Zuul retries), ABORTED.",
        );
        for (job, c) in &rows {
            for (class, n) in ResultClass::ALL.iter().zip(&c.results) {
                let labels = [("job", *job), ("result", class.as_str())];
                out.sample("turbo_hipster_builds_total", &labels, load(n));
            }
        }
        out.family(
            "turbo_hipster_builds_aborted_total",
            "counter",
            "Builds that ended ABORTED, by why: stop (Zuul's stop), shutdown, connection_lost, plugin.",
        );
        for (job, c) in &rows {
            for (reason, n) in AbortReason::ALL.iter().zip(&c.aborted) {
                let labels = [("job", *job), ("reason", reason.as_str())];
                out.sample("turbo_hipster_builds_aborted_total", &labels, load(n));
            }
        }
        out.family(
            "turbo_hipster_builds_refused_total",
            "counter",
            "Builds refused before anything ran (Zuul got FAILURE), by why: invalid_parameters, unknown_job, job_directory.",
        );
        for (job, c) in &rows {
            for (reason, n) in Refusal::ALL.iter().zip(&c.refused) {
                let labels = [("job", *job), ("reason", reason.as_str())];
                out.sample("turbo_hipster_builds_refused_total", &labels, load(n));
            }
        }
        self.render_durations(out, &rows);
    }

    fn render_durations(&self, out: &mut Exposition, rows: &[(&str, &JobCounters)]) {
        out.family(
            "turbo_hipster_build_duration_seconds",
            "histogram",
            "How long finished builds took, from the start to the result.",
        );
        for (job, c) in rows {
            let mut cumulative = 0u64;
            for (i, n) in c.buckets.iter().enumerate() {
                cumulative += n.load(Ordering::Relaxed);
                let le = match DURATION_BUCKETS.get(i) {
                    Some(b) => b.to_string(),
                    None => "+Inf".to_string(),
                };
                let labels = [("job", *job), ("le", le.as_str())];
                out.sample(
                    "turbo_hipster_build_duration_seconds_bucket",
                    &labels,
                    cumulative as f64,
                );
            }
            let sum = c.duration_ms_sum.load(Ordering::Relaxed) as f64 / 1000.0;
            out.sample(
                "turbo_hipster_build_duration_seconds_sum",
                &[("job", job)],
                sum,
            );
            out.sample(
                "turbo_hipster_build_duration_seconds_count",
                &[("job", job)],
                cumulative as f64,
            );
        }
        out.family(
            "turbo_hipster_build_last_finish_timestamp_seconds",
            "gauge",
            "When the job's last build finished, in seconds since the Unix epoch (absent until one did).",
        );
        for (job, c) in rows {
            let ms = c.last_finish_ms.load(Ordering::Relaxed);
            if ms > 0 {
                out.sample(
                    "turbo_hipster_build_last_finish_timestamp_seconds",
                    &[("job", job)],
                    ms as f64 / 1000.0,
                );
            }
        }
    }
}

fn load(n: &AtomicU64) -> f64 {
    n.load(Ordering::Relaxed) as f64
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a metric family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        write_number(&mut self.text, value);
        self.text.push('\n');
    }
}

/// A label value as the format escapes it: backslash, double quote and line feed.
fn escape_label_value(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: whole numbers without a fraction, `+Inf`, `-Inf` and `NaN` as the format
/// spells them.
fn write_number(out: &mut String, v: f64) {
    let _ = if v.is_nan() {
        out.write_str("NaN")
    } else if v.is_infinite() {
        out.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        write!(out, "{}", v as i64)
    } else {
        write!(out, "{v}")
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn results_fall_into_a_fixed_set() {
        for (result, class) in [
            ("SUCCESS", ResultClass::Success),
            ("SUCCESS\n", ResultClass::Failure),
            ("SUCCESSFUL?", ResultClass::Failure),
            ("ABORTED", ResultClass::Aborted),
            ("FAILURE - invalid job parameters: x", ResultClass::Failure),
            (
                "WARNING - Migration 1->2 took too long",
                ResultClass::Warning,
            ),
            ("ERROR - infrastructure: disk full", ResultClass::Error),
            (
                "Return code from test script was non-zero (3)",
                ResultClass::Failure,
            ),
            ("", ResultClass::Failure),
        ] {
            assert_eq!(ResultClass::of(result), class, "{result:?}");
        }
    }

    #[test]
    fn label_values_and_numbers_are_written_as_the_format_says() {
        let mut e = Exposition::default();
        e.sample("m", &[("a", "x\"y\\z\nw"), ("b", "")], 1.5);
        e.sample("m", &[], f64::INFINITY);
        e.sample("m", &[], 3.0);
        e.sample("m", &[], f64::NAN);
        assert_eq!(
            e.text,
            "m{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 1.5\nm +Inf\nm 3\nm NaN\n"
        );
    }

    /// What a scrape costs the runtime thread: the text of 200 jobs rendered, timed (run with
    /// `--nocapture` for the figure).
    #[test]
    fn rendering_200_jobs_is_cheap() {
        let jobs = (0..200)
            .map(|i| {
                let c = JobCounters {
                    plugin: "gate_real_db_upgrade".into(),
                    ..JobCounters::default()
                };
                c.observe(Duration::from_secs(i));
                c.last_finish_ms
                    .store(1_796_000_000_000 + i, Ordering::Relaxed);
                (format!("build:gate-real-db-upgrade_{i:03}"), c)
            })
            .collect();
        let m = Metrics {
            version: "0",
            sdk_version: "0",
            start_time: 0.0,
            max_concurrent_jobs: 8,
            plugins: Vec::new(),
            job_setup_errors: 0,
            jobs,
            unregistered: JobCounters::default(),
            gearman: OnceLock::new(),
        };
        let text = m.render();
        let rounds = 50u32;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            assert_eq!(m.render().len(), text.len());
        }
        let each = started.elapsed() / rounds;
        println!(
            "rendering 200 jobs: {} µs per scrape, {} lines, {} bytes",
            each.as_micros(),
            text.lines().count(),
            text.len()
        );
        // Generous for a debug build on a shared machine; a release build is several times faster.
        assert!(each < Duration::from_millis(100), "{each:?}");
    }

    #[test]
    fn durations_land_in_their_buckets() {
        let c = JobCounters::default();
        for secs in [0.2, 1.0, 1.001, 7199.0, 7201.0] {
            c.observe(Duration::from_secs_f64(secs));
        }
        let counts: Vec<u64> = c
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(
            c.duration_ms_sum.load(Ordering::Relaxed),
            200 + 1000 + 1001 + 7_199_000 + 7_201_000
        );
    }
}
