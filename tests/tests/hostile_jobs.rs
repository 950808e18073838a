//! Jobs no worker could run — larger than the daemon's `max_packet_bytes`, or with data that is
//! not a JSON object of strings — submitted through a real Gearman server (gearmand and Zuul's
//! `gear.Server`): each is failed once with a result saying why, is not handed out again, and
//! the next job runs.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use turbo_hipster::gearman::client::{Client, JobEvent, Priority};
use turbo_hipster_tests::{fixture, Daemon, Fixture, JobServer, PluginDir, ServerKind, Setup};

/// The daemon's packet limit in these tests; both servers accept far larger jobs.
const MAX_PACKET: usize = 64 * 1024;

struct World {
    server: JobServer,
    daemon: Daemon,
    _setup: Setup,
    _plugins: PluginDir,
}

fn world(kind: ServerKind) -> World {
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let server = JobServer::start(kind);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "max_packet_bytes": MAX_PACKET,
            "jobs": [{"name": "build:ok", "plugin": "test_plugin"}],
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:ok", Duration::from_secs(20));
    World {
        server,
        daemon,
        _setup: setup,
        _plugins: plugins,
    }
}

/// Submits `data` as `build:ok` and returns every event up to the terminal one.
async fn run(client: &Client, unique: &str, data: impl Into<Bytes>) -> Vec<JobEvent> {
    let job = client
        .submit("build:ok", unique, data, Priority::Normal)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), job.wait())
        .await
        .expect("the job never ended")
        .unwrap()
}

/// The `result` of a job's last WORK_DATA.
fn result_of(events: &[JobEvent]) -> String {
    let data = events
        .iter()
        .rev()
        .find_map(|e| match e {
            JobEvent::Data(d) => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no work data in {events:?}"));
    let v: Value = serde_json::from_slice(&data).unwrap();
    v["result"].as_str().unwrap_or_default().to_string()
}

fn queued(server: &JobServer) -> u64 {
    server
        .status()
        .iter()
        .filter(|(f, ..)| f == "build:ok")
        .map(|(_, total, ..)| *total)
        .sum()
}

fn oversized_job_is_failed_once_and_the_next_runs(kind: ServerKind) {
    let w = world(kind);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect("127.0.0.1", w.server.port).await.unwrap();
        let data = json!({"ZUUL_PROJECT": "example/shop", "BIG": "x".repeat(1 << 20)}).to_string();
        let len = data.len();
        let events = run(&client, "0000oversized0000000000000000001", data).await;
        let expected =
            format!("FAILURE - job data of {len} bytes exceeds max_packet_bytes ({MAX_PACKET})");
        assert_eq!(result_of(&events), expected, "{events:?}");
        assert_eq!(events.len(), 2, "WORK_DATA then WORK_FAIL only: {events:?}");
        assert!(matches!(events[1], JobEvent::Fail), "{events:?}");
        // The next job runs at once on the same connection.
        let events = run(&client, "0000oversized0000000000000000002", "{}").await;
        assert_eq!(result_of(&events), "SUCCESS", "{events:?}");
        assert!(matches!(events.last(), Some(JobEvent::Complete(_))));
    });
    assert_eq!(queued(&w.server), 0, "{:?}", w.server.status());
    assert!(w
        .daemon
        .wait_log("job refused: FAILURE - job data", Duration::from_secs(5)));
    let log = w.daemon.log_text();
    assert_eq!(
        log.matches("job refused: FAILURE - job data").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("Gearman connection failed"), "{log}");
}

fn poisoned_jobs_fail_cleanly(kind: ServerKind) {
    let w = world(kind);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect("127.0.0.1", w.server.port).await.unwrap();
        let cases: [(&[u8], &str); 5] = [
            (b"\xff\xfe\x00\x01garbage\x00\x9c", "not JSON"),
            (b"{\"ZUUL_PROJECT\": \"\xff\xfe\"}", "not JSON"),
            (b"[1, 2, 3]", "not a JSON object"),
            (b"\"just a string\"", "not a JSON object"),
            (b"{\"ZUUL_PROJECT\": {\"nested\": 1}}", "expected a string"),
        ];
        for (i, (data, why)) in cases.into_iter().enumerate() {
            let unique = format!("0000poisoned00000000000000000{i:03}");
            let events = run(&client, &unique, Bytes::from_static(data)).await;
            let result = result_of(&events);
            assert!(
                result.starts_with("FAILURE - invalid job parameters: ") && result.contains(why),
                "{data:?}: {result}"
            );
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(matches!(events[1], JobEvent::Fail), "{events:?}");
        }
        let events = run(&client, "0000poisoned0000000000000000ok0", "{}").await;
        assert_eq!(result_of(&events), "SUCCESS", "{events:?}");
    });
    assert_eq!(queued(&w.server), 0, "{:?}", w.server.status());
}

turbo_hipster_tests::on_both_servers!(
    oversized_job_is_failed_once_and_the_next_runs,
    poisoned_jobs_fail_cleanly
);
