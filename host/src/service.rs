//! The daemon's main loop: the Gearman worker speaking the Zuul v2 contract, serving the
//! configured jobs until SIGTERM/SIGINT, then draining.
//!
//! A build: parameters validated → start WORK_DATA (`name`, `number`, `manager`, `url`,
//! `worker_*`; never `result`) → WORK_STATUS 0 → the plugin runs (its progress and work data are
//! forwarded) → WORK_DATA with `result` → exactly one WORK_COMPLETE (SUCCESS) or WORK_FAIL
//! (an infrastructure failure: WORK_DATA with `error` and no `result`, then WORK_FAIL: Zuul retries).
//! `stop:<manager>` cancels the named build; `set_description:<manager>` is kept with it.
//!
//! [`serve`] owns the service's [`Pipeline`] (its jobs' threads, history and journal) and takes
//! its [`Shutdown`] as a parameter: the daemon's comes from SIGTERM/SIGINT
//! ([`Shutdown::on_signals`]), a test's from a [`ShutdownHandle`], so the drain runs the same
//! in both. It is [`start`] (the metrics endpoint bound, the worker connecting) then
//! [`Service::run`]; the daemon calls the two apart so that a port in use stops it before it
//! reports that it serves. The service counts its builds in its [`Metrics`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::gearman::worker::{AssignedJob, JobReporter, Worker, WorkerConfig};
use crate::host_context::{CancelToken, EventSink, JobEvent};
use crate::jobs::{JobOutcome, JobRequest, PrepareError, PreparedJob};
use crate::metrics::{http::MetricsServer, AbortReason, Metrics, Refusal, RunningBuild};
use crate::pipeline::{JobHooks, Pipeline};
use crate::plugins::Registry;
use crate::zuul::{self, WorkerFacts};

/// How long a stop request waits for the build to end before completing anyway.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Why a build is cancelled, as its log and [`AbortReason`] say.
const STOPPED_BY_ZUUL: &str = "stopped by Zuul";
const CONNECTION_LOST: &str = "the Gearman connection that assigned the job was lost";
const SHUTTING_DOWN: &str = "the daemon is shutting down";

/// The metrics' reason for a cancelled build.
fn abort_reason(cancel: &CancelToken) -> Option<AbortReason> {
    cancel.reason().map(|why| match why.as_str() {
        STOPPED_BY_ZUUL => AbortReason::Stop,
        CONNECTION_LOST => AbortReason::ConnectionLost,
        SHUTTING_DOWN => AbortReason::Shutdown,
        _ => AbortReason::Plugin,
    })
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The Gearman worker could not start.
    #[error("cannot start the Gearman worker: {0}")]
    Worker(#[from] crate::gearman::Error),
    /// Nothing to connect to.
    #[error("no Gearman server configured: set zuul_server.gearman_host or gearman_servers")]
    NoServers,
    /// The metrics endpoint cannot listen.
    #[error("metrics.listen: cannot serve metrics on {listen}: {source}")]
    Metrics {
        /// The address configured.
        listen: std::net::SocketAddr,
        /// Why not (in use, not an address of this machine, a privileged port).
        source: std::io::Error,
    },
}

/// The requests to stop a service, in order: the first drains it, a second cuts the grace
/// period short. Once every [`ShutdownHandle`] is gone without a request, none comes.
pub struct Shutdown {
    requests: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Asks a service to stop; cloneable.
#[derive(Clone)]
pub struct ShutdownHandle {
    requests: tokio::sync::mpsc::UnboundedSender<String>,
}

impl ShutdownHandle {
    /// Asks the service to stop (again: to stop waiting for its jobs); `why` is logged.
    pub fn request(&self, why: &str) {
        // A service that is gone needs no request.
        let _ = self.requests.send(why.to_string());
    }
}

impl Shutdown {
    /// A shutdown requested through the handle.
    pub fn channel() -> (ShutdownHandle, Shutdown) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (ShutdownHandle { requests: tx }, Shutdown { requests: rx })
    }

    /// A shutdown requested by SIGTERM or SIGINT; call it in the runtime that serves.
    ///
    /// # Errors
    /// The signal handlers could not be installed.
    pub fn on_signals() -> Result<Shutdown, ServeError> {
        let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
        let (handle, shutdown) = Self::channel();
        tokio::spawn(async move {
            loop {
                let which = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                handle.request(which);
            }
        });
        Ok(shutdown)
    }

    /// The next request (what asked for it).
    async fn requested(&mut self) -> String {
        match self.requests.recv().await {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }
}

/// A build in progress, as `stop:` and `set_description:` find it (by its number, the unique).
struct Build {
    function: String,
    cancel: CancelToken,
    results_dir: std::path::PathBuf,
    finished: Arc<tokio::sync::Notify>,
}

/// Removes a build from the running ones when its job is over, and tells a stop waiting for it.
struct BuildGuard {
    handler: Arc<ZuulHandler>,
    unique: String,
    build: Arc<Build>,
    _running: RunningBuild,
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        let mut builds = self.handler.lock();
        if builds
            .get(&self.unique)
            .is_some_and(|b| Arc::ptr_eq(b, &self.build))
        {
            builds.remove(&self.unique);
        }
        drop(builds);
        self.build.finished.notify_waiters();
    }
}

/// The Zuul side of the worker: turns Gearman jobs into job runs.
pub struct ZuulHandler {
    config: Arc<Config>,
    registry: Arc<Registry>,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    builds: Mutex<HashMap<String, Arc<Build>>>,
    facts: WorkerFacts,
    stop_function: String,
    describe_function: String,
}

impl ZuulHandler {
    /// A handler for the jobs of `pipeline`, counting them in `metrics`.
    pub fn new(pipeline: Arc<Pipeline>, metrics: Arc<Metrics>) -> Arc<Self> {
        let config = pipeline.config().clone();
        let registry = pipeline.registry().clone();
        let hostname = crate::config::hostname();
        let fqdn = fqdn(&hostname);
        Arc::new(Self {
            stop_function: format!("stop:{}", config.manager_name),
            describe_function: format!("set_description:{}", config.manager_name),
            facts: WorkerFacts {
                worker_name: config.worker_name.clone(),
                hostname,
                fqdn,
            },
            config,
            registry,
            pipeline,
            metrics,
            builds: Mutex::new(HashMap::new()),
        })
    }

    /// The Gearman worker configuration for this handler.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            servers: self
                .config
                .gearman_servers
                .iter()
                .map(|s| (s.host.clone(), s.port))
                .collect(),
            client_id: self.config.worker_name.clone(),
            functions: self.registry.functions(),
            priority_functions: vec![self.stop_function.clone(), self.describe_function.clone()],
            max_concurrent_jobs: self.config.max_concurrent_jobs,
            max_packet_body: self.config.max_packet_bytes,
            ..WorkerConfig::default()
        }
    }

    /// Cancels every running build (shutdown after the grace period).
    pub fn abort_all(&self, reason: &str) -> usize {
        let builds: Vec<Arc<Build>> = self.lock().values().cloned().collect();
        for b in &builds {
            b.cancel.cancel(reason);
        }
        builds.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Build>>> {
        self.builds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one assigned job to its end.
    pub async fn handle(self: Arc<Self>, job: AssignedJob, reporter: JobReporter) {
        if job.function == self.stop_function {
            self.handle_stop(&job, &reporter).await;
        } else if job.function == self.describe_function {
            self.handle_description(&job, &reporter);
        } else {
            self.handle_build(job, reporter).await;
        }
    }

    async fn handle_build(self: Arc<Self>, job: AssignedJob, reporter: JobReporter) {
        let prepared = match self.prepare(&job) {
            Ok(p) => p,
            Err((why, result)) => {
                let label = self.registry.find(&job.function).map(|r| &r.function);
                let label = label.map_or(crate::metrics::UNREGISTERED, String::as_str);
                self.metrics.build_refused(label, why);
                return send_result(&reporter, &result, None);
            }
        };
        // The registered function: the metrics' label.
        let function = prepared.runner.function.clone();
        let unique = prepared.request.unique.clone();
        let cancel = CancelToken::new();
        // Forgets the build (and wakes a stop waiting for it) when the job is over, however it
        // ends.
        let guard = self.register(&function, &unique, &cancel, &prepared);
        let start = zuul::start_work_data(
            &function,
            &unique,
            &self.config.manager_name,
            &prepared.url,
            &self.facts,
        );
        reporter.work_data(start.to_string());
        reporter.work_status(0, 1);
        // A lost connection means nobody waits for this build any more: cancel it.
        reporter.on_connection_lost({
            let cancel = cancel.clone();
            move || cancel.cancel(CONNECTION_LOST)
        });
        let hooks = self.gearman_hooks(&reporter, guard, &function, &cancel);
        let launched = self
            .pipeline
            .launch(prepared, event_sink(&reporter), cancel, hooks);
        if let Err(e) = launched {
            tracing::error!(%function, %unique, "cannot start a thread for the job: {e}");
            let result = format!("FAILURE - cannot start a thread for the job: {e}");
            self.metrics
                .build_finished(&function, &result, Duration::ZERO, None);
            send_result(&reporter, &result, None);
        }
    }

    /// The result goes out from the job's thread as soon as its logs are in place, counted
    /// first (whoever heard it finds it counted); the async side does not wait for the job at
    /// all. The job counts as running (a drain waits for it, a stop finds it, the metrics show
    /// it) until its history line is written: the reporter and the build's guard are held
    /// until then.
    fn gearman_hooks(
        &self,
        reporter: &JobReporter,
        guard: BuildGuard,
        function: &str,
        cancel: &CancelToken,
    ) -> JobHooks {
        let keep = (reporter.clone(), guard);
        let reporter = reporter.clone();
        let (metrics, function, cancel) =
            (self.metrics.clone(), function.to_string(), cancel.clone());
        JobHooks {
            on_result: Box::new(move |o: &JobOutcome| {
                metrics.build_finished(&function, &o.result, o.duration, abort_reason(&cancel));
                send_result(&reporter, &o.result, Some(&o.url));
            }),
            on_done: Box::new(move |_| drop(keep)),
        }
    }

    /// The assigned job as a prepared one, or why it is refused and the result that says so.
    fn prepare(&self, job: &AssignedJob) -> Result<PreparedJob, (Refusal, String)> {
        let function = &job.function;
        let unique = job.unique_str().map_err(|_| {
            let result = "FAILURE - invalid job parameters: the Gearman unique id is not UTF-8";
            (Refusal::InvalidParameters, result.to_string())
        })?;
        let parameters = zuul::parse_parameters(&job.data).map_err(|e| {
            tracing::warn!(%function, %unique, "refused: {e}");
            (Refusal::InvalidParameters, e.result())
        })?;
        let request = JobRequest {
            function: function.clone(),
            unique: unique.to_string(),
            parameters,
        };
        self.pipeline.prepare(request).map_err(|e| {
            tracing::warn!(%function, %unique, "cannot start: {e}");
            let why = match e {
                PrepareError::InvalidParameters(_) => Refusal::InvalidParameters,
                PrepareError::UnknownJob(_) => Refusal::UnknownJob,
                PrepareError::Directory { .. } => Refusal::JobDirectory,
            };
            (why, e.result())
        })
    }

    /// Lists the build for `stop:` and `set_description:` until the returned guard goes.
    fn register(
        self: &Arc<Self>,
        function: &str,
        unique: &str,
        cancel: &CancelToken,
        prepared: &PreparedJob,
    ) -> BuildGuard {
        let build = Arc::new(Build {
            function: function.to_string(),
            cancel: cancel.clone(),
            results_dir: prepared.job_dir.clone(),
            finished: Arc::new(tokio::sync::Notify::new()),
        });
        self.lock().insert(unique.to_string(), build.clone());
        BuildGuard {
            handler: self.clone(),
            unique: unique.to_string(),
            build,
            _running: self.metrics.build_started(function),
        }
    }

    async fn handle_stop(&self, job: &AssignedJob, reporter: &JobReporter) {
        let (name, number) = match serde_json::from_slice::<Value>(&job.data) {
            Ok(v) => (
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                v.get("number")
                    .map(|n| match n {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default(),
            ),
            Err(e) => {
                tracing::warn!("stop request with unreadable data: {e}");
                reporter.complete("");
                return;
            }
        };
        let build = self.lock().get(&number).cloned();
        match build {
            Some(build) => {
                tracing::info!(build = %number, name = %name, function = %build.function, "stop requested by Zuul");
                let finished = build.finished.notified();
                build.cancel.cancel(STOPPED_BY_ZUUL);
                let ended = tokio::time::timeout(STOP_WAIT, finished).await.is_ok();
                if !ended {
                    tracing::warn!(build = %number, "build still running {} s after the stop", STOP_WAIT.as_secs());
                }
            }
            None => {
                tracing::info!(build = %number, name = %name, "stop requested for a build this worker does not run")
            }
        }
        reporter.complete("");
    }

    fn handle_description(&self, job: &AssignedJob, reporter: &JobReporter) {
        if let Ok(v) = serde_json::from_slice::<Value>(&job.data) {
            let number = v
                .get("number")
                .map(|n| {
                    n.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| n.to_string())
                })
                .unwrap_or_default();
            let html = v
                .get("html_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            match self.lock().get(&number).cloned() {
                Some(build) => {
                    // The job dir is made when the plugin first asks for it: maybe not yet.
                    let path = build.results_dir.join("description.html");
                    let written = std::fs::create_dir_all(&build.results_dir)
                        .and_then(|()| std::fs::write(&path, html));
                    if let Err(e) = written {
                        tracing::warn!(build = %number, "cannot keep the description: {e}");
                    }
                }
                None => {
                    tracing::info!(build = %number, "description for a build this worker does not run")
                }
            }
        }
        reporter.complete("");
    }
}

/// Progress and work data go straight from the plugin's thread to the connection.
fn event_sink(reporter: &JobReporter) -> EventSink {
    let reporter = reporter.clone();
    Arc::new(move |ev| match ev {
        JobEvent::Progress(n, d) => {
            reporter.work_status(n, d);
        }
        JobEvent::WorkData(data) => {
            reporter.work_data(data);
        }
    })
}

/// The end of a build for Zuul: WORK_DATA with `result` (and `url`), then exactly one terminal
/// packet: WORK_COMPLETE (carrying the same data) on SUCCESS, WORK_FAIL otherwise.
///
/// An infrastructure failure (`ERROR - infrastructure: …`) is not a verdict on the change: its
/// last WORK_DATA carries `error` (what failed) and no `result`, then WORK_FAIL. Zuul v2
/// (`zuul/launcher/gearman.py`, `onBuildCompleted`) reads `result` from a build's last data
/// packet; without one it sets `build.retry`, and the pipeline launches the build again (up to
/// the job's `attempts`, then `RETRY_LIMIT`, from Zuul 2.5.2 on).
fn send_result(reporter: &JobReporter, result: &str, url: Option<&str>) {
    if let Some(what) = turbo_hipster_sdk::results::infrastructure_failure(result) {
        let mut data = json!({ "error": what });
        if let Some(url) = url {
            data["url"] = Value::from(url);
        }
        reporter.data_and_fail(data.to_string());
        return;
    }
    let mut data = json!({ "result": result });
    if let Some(url) = url {
        data["url"] = Value::from(url);
    }
    let payload = data.to_string();
    if result == turbo_hipster_sdk::results::SUCCESS {
        reporter.data_and_complete(payload);
    } else {
        reporter.data_and_fail(payload);
    }
}

fn fqdn(hostname: &str) -> String {
    if hostname.contains('.') {
        return hostname.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/domainname")
        .ok()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty() && d != "(none)")
        .map(|d| format!("{hostname}.{d}"))
        .unwrap_or_else(|| hostname.to_string())
}

/// Serves every job of `registry` until `shutdown` asks it to stop, then drains: no new jobs,
/// running ones get `shutdown_grace_seconds` to finish (a second request cuts that short), the
/// rest are aborted (ABORTED). Returns once every job is over, its history line written.
/// [`start`], then [`Service::run`].
///
/// # Errors
/// Only when the daemon cannot run at all.
pub async fn serve(
    config: Arc<Config>,
    registry: Arc<Registry>,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    start(config, registry).await?.run(shutdown).await
}

/// A service that serves: its worker connected (or connecting), its metrics endpoint up.
pub struct Service {
    config: Arc<Config>,
    handler: Arc<ZuulHandler>,
    worker: Worker,
    metrics_server: Option<MetricsServer>,
}

/// Starts serving: the metrics endpoint listens (when `metrics` is set), the worker connects
/// to every server and registers the jobs.
///
/// # Errors
/// No server is configured, the metrics endpoint cannot listen, or the worker cannot start.
pub async fn start(config: Arc<Config>, registry: Arc<Registry>) -> Result<Service, ServeError> {
    if config.gearman_servers.is_empty() {
        return Err(ServeError::NoServers);
    }
    let metrics_error = |listen, source| ServeError::Metrics { listen, source };
    let listener = match &config.metrics {
        Some(m) => Some(
            crate::metrics::http::bind(m.listen)
                .await
                .map_err(|e| metrics_error(m.listen, e))?,
        ),
        None => None,
    };
    let metrics = Arc::new(Metrics::new(&config, &registry));
    let pipeline = Arc::new(Pipeline::new(config.clone(), registry.clone()).with_journal());
    let handler = ZuulHandler::new(pipeline, metrics.clone());
    let worker = spawn_worker(&handler)?;
    metrics.set_gearman(worker.stats());
    let metrics_server = match (listener, &config.metrics) {
        (Some(l), Some(m)) => {
            Some(crate::metrics::http::spawn(l, metrics).map_err(|e| metrics_error(m.listen, e))?)
        }
        _ => None,
    };
    let endpoint = metrics_server
        .as_ref()
        .map(|m| format!("http://{}/metrics", m.local_addr()));
    tracing::info!(
        worker = %config.worker_name,
        manager = %config.manager_name,
        functions = %registry.functions().join(", "),
        servers = %config.gearman_servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        slots = config.max_concurrent_jobs,
        metrics = %endpoint.as_deref().unwrap_or("off"),
        "turbo-hipster serving"
    );
    Ok(Service {
        config,
        handler,
        worker,
        metrics_server,
    })
}

impl Service {
    /// Where the metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// Serves until `shutdown` asks it to stop, then drains (see [`serve`]); the metrics are
    /// served until the drain is over.
    ///
    /// # Errors
    /// None so far: the service has started.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), ServeError> {
        let Service {
            config,
            handler,
            worker,
            metrics_server,
        } = self;
        let which = shutdown.requested().await;
        drain(&config, &handler, &worker, &mut shutdown, &which).await;
        worker.shutdown().await;
        drop(metrics_server);
        Ok(())
    }
}

fn spawn_worker(handler: &Arc<ZuulHandler>) -> Result<Worker, ServeError> {
    let h = handler.clone();
    let worker = Worker::spawn(
        handler.worker_config(),
        move |job: AssignedJob, reporter: JobReporter| {
            let h = h.clone();
            async move { h.handle(job, reporter).await }
        },
    )?;
    Ok(worker)
}

/// Takes no new jobs and waits for the running ones, up to the grace period or a second
/// shutdown request; then aborts what still runs and waits for it to end.
async fn drain(
    config: &Config,
    handler: &ZuulHandler,
    worker: &Worker,
    shutdown: &mut Shutdown,
    which: &str,
) {
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    tracing::info!(
        running = worker.running_jobs(),
        "{which} received: taking no new jobs, waiting up to {} s for running ones",
        grace.as_secs()
    );
    worker.stop_grabbing();
    let drained = tokio::select! {
        _ = worker.wait_idle() => true,
        _ = tokio::time::sleep(grace) => false,
        _ = shutdown.requested() => false,
    };
    if !drained {
        let n = handler.abort_all(SHUTTING_DOWN);
        tracing::warn!("aborting {n} running job(s)");
        worker.wait_idle().await;
    }
}
