//! `serve` run in the test's own process against a real gearmand and the real test plugin: its
//! shutdown is a parameter, so the drain is driven without signals and what `serve` leaves is
//! checked the moment it returns.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::time::timeout;
use turbo_hipster::config::{self, Config};
use turbo_hipster::gearman::client::{Client, JobEvent, Priority, SubmittedJob};
use turbo_hipster::jobs::HISTORY_FILE;
use turbo_hipster::plugins::{self, Registry};
use turbo_hipster::service::{serve, Shutdown};
use turbo_hipster_tests::{fixture, Fixture, JobServer, PluginDir, ServerKind, Setup};

const T: Duration = Duration::from_secs(30);

/// A gearmand, the test plugin and a config serving `build:slow` (which waits `wait_ms`, or
/// until cancelled) in-process.
struct World {
    server: JobServer,
    setup: Setup,
    config: Arc<Config>,
    registry: Arc<Registry>,
    _plugins: PluginDir,
}

fn world(grace_seconds: u64, wait_ms: u64) -> World {
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "shutdown_grace_seconds": grace_seconds,
            "job_isolation": "in-process",
            "jobs": [
                {"name": "build:slow", "plugin": "test_plugin", "mode": "wait", "wait_ms": wait_ms}
            ]
        }),
    );
    let config = Arc::new(config::load(&setup.config).unwrap());
    let registry = Arc::new(plugins::build_serving_registry(&config));
    assert!(registry.is_complete(), "{:?}", registry.job_errors);
    World {
        server,
        setup,
        config,
        registry,
        _plugins: plugins,
    }
}

/// Submits `build:slow` and waits until the plugin runs (its first progress).
async fn start_slow_job(port: u16, unique: &str) -> SubmittedJob {
    let client = Client::connect("127.0.0.1", port).await.unwrap();
    let params = json!({"ZUUL_UUID": unique, "ZUUL_PROJECT": "openstack/nova"}).to_string();
    let mut job = client
        .submit("build:slow", unique, params, Priority::Normal)
        .await
        .unwrap();
    loop {
        match timeout(T, job.next_event()).await.unwrap() {
            Some(JobEvent::Status { numerator: 1, .. }) => return job,
            Some(e) if e.is_terminal() => panic!("the job ended before it ran: {e:?}"),
            Some(_) => {}
            None => panic!("connection lost"),
        }
    }
}

/// The `result` of the job's last WORK_DATA, and whether it ended with WORK_COMPLETE.
async fn end_of(job: SubmittedJob) -> (String, bool) {
    let events = timeout(T, job.wait()).await.unwrap().unwrap();
    let result = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Data(d) => serde_json::from_slice::<Value>(d).ok(),
            _ => None,
        })
        .filter_map(|v| v.get("result").and_then(Value::as_str).map(str::to_string))
        .next_back()
        .unwrap_or_default();
    (result, matches!(events.last(), Some(JobEvent::Complete(_))))
}

/// The history's records.
fn history(jobs_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(jobs_dir.join(HISTORY_FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A shutdown while a job runs: `serve` takes no new job, lets the running one finish within
/// the grace period (SUCCESS, not ABORTED), and returns only once its history line is written.
#[test]
fn a_shutdown_lets_the_running_job_finish_and_serve_returns_after_its_history_line() {
    let w = world(60, 1500);
    let jobs_dir = w.setup.jobs_dir();
    runtime().block_on(async {
        let (handle, shutdown) = Shutdown::channel();
        let serving = tokio::spawn(serve(w.config.clone(), w.registry.clone(), shutdown));
        let job = start_slow_job(w.server.port, "drain1").await;
        let asked = Instant::now();
        handle.request("the test");
        let returned = timeout(T, serving).await.unwrap().unwrap();
        returned.unwrap();
        // Read at once: what serve left when it returned.
        let records = history(&jobs_dir);
        assert!(
            asked.elapsed() > Duration::from_millis(500),
            "serve returned before the job could end: {:?}",
            asked.elapsed()
        );
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["unique"], "drain1");
        assert_eq!(records[0]["result"], "SUCCESS");
        let (result, completed) = end_of(job).await;
        assert_eq!(result, "SUCCESS");
        assert!(completed, "a SUCCESS ends with WORK_COMPLETE");
    });
}

/// A second request cuts the grace period short: the running job is aborted, still reported
/// to Zuul, and recorded before `serve` returns.
#[test]
fn a_second_shutdown_request_aborts_the_running_job_and_still_records_it() {
    let w = world(300, 120_000);
    let jobs_dir = w.setup.jobs_dir();
    runtime().block_on(async {
        let (handle, shutdown) = Shutdown::channel();
        let serving = tokio::spawn(serve(w.config.clone(), w.registry.clone(), shutdown));
        let job = start_slow_job(w.server.port, "abort1").await;
        handle.request("the test");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!serving.is_finished(), "serve did not wait for its job");
        handle.request("the test again");
        timeout(T, serving).await.unwrap().unwrap().unwrap();
        let records = history(&jobs_dir);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["unique"], "abort1");
        assert_eq!(records[0]["result"], "ABORTED");
        let (result, completed) = end_of(job).await;
        assert_eq!(result, "ABORTED");
        assert!(!completed, "an ABORTED build ends with WORK_FAIL");
    });
}
