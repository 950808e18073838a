//! A soak through the real gearmand: 1,000 builds (`TH_SOAK_JOBS=N` for more) submitted as Zuul
//! does, mixing successes (test plugin writing results, no-op, shell scripts), failures (plugin
//! failure, script exiting non-zero), builds stopped while running (`stop:<manager>`) and
//! builds with invalid parameters. After a warm-up (which starts every job thread and lazy
//! resource once) the daemon's open fds, threads and RSS are sampled, the builds run, and after
//! a settle they are sampled again: they must come back flat, every build must have got exactly
//! one terminal packet carrying the result its kind expects, every started build exactly one
//! `jobs.jsonl` line, and no job's scratch `work/` directory may be left. The figures are
//! printed (`cargo test -p turbo-hipster-tests --test soak -- --nocapture`) for
//! `docs/bad-inputs.md`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_hipster::gearman::client::{Client, JobEvent, Priority};
use turbo_hipster::jobs::WORK_DIR;
use turbo_hipster_tests::{
    fixture, root, script, Daemon, Fixture, JobServer, PluginDir, ServerKind, Setup,
};

/// Jobs the daemon runs at once, and builds kept in flight by the client.
const SLOTS: usize = 4;
const IN_FLIGHT: usize = 16;
/// Allowed drift after the soak, over the warm-up's baseline.
const MAX_EXTRA_FDS: i64 = 3;
const MAX_EXTRA_THREADS: i64 = 2;
const MAX_RSS_GROWTH_KB: i64 = 10 * 1024;

/// The kinds of build, in the order they cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ok,
    Noop,
    Fail,
    Invalid,
    ShellOk,
    ShellFail,
    Stopped,
    /// gate_real_db_upgrade on SQLite with the example project and dataset.
    Gate,
}

/// A gate build every this many builds (in place of an `Ok`).
const GATE_EVERY: usize = 100;

fn kind_of(i: usize) -> Kind {
    if i % GATE_EVERY == GATE_EVERY / 2 {
        Kind::Gate
    } else {
        CYCLE[i % CYCLE.len()]
    }
}

const CYCLE: [Kind; 10] = [
    Kind::Ok,
    Kind::ShellOk,
    Kind::Fail,
    Kind::Noop,
    Kind::Invalid,
    Kind::Ok,
    Kind::ShellFail,
    Kind::Stopped,
    Kind::ShellOk,
    Kind::Ok,
];

impl Kind {
    fn function(self) -> &'static str {
        match self {
            Kind::Ok | Kind::Invalid => "build:soak-ok",
            Kind::Noop => "build:soak-noop",
            Kind::Fail => "build:soak-fail",
            Kind::ShellOk => "build:soak-shell",
            Kind::ShellFail => "build:soak-shell-fail",
            Kind::Stopped => "build:soak-wait",
            Kind::Gate => "build:soak-gate",
        }
    }

    fn result_ok(self, result: &str) -> bool {
        match self {
            Kind::Ok | Kind::Noop | Kind::ShellOk | Kind::Gate => result == "SUCCESS",
            Kind::Fail => result == "FAILURE - test plugin was asked to fail",
            Kind::Invalid => result.starts_with("FAILURE - invalid job parameters: ZUUL_PROJECT"),
            Kind::ShellFail => result.contains("non-zero (3)"),
            Kind::Stopped => result == "ABORTED",
        }
    }
}

/// What one build got back.
#[derive(Debug, Default)]
struct Outcome {
    results: Vec<String>,
    terminals: usize,
}

/// The change gate builds test: the example project's repository and the proposed change's
/// Zuul ref.
#[derive(Debug, Clone)]
struct Change {
    url: String,
    zuul_ref: String,
}

async fn run_build(client: &Client, kind: Kind, uuid: &str, change: &Change) -> Outcome {
    let project = match kind {
        Kind::Invalid => "../etc",
        Kind::Gate => "example/shop",
        _ => "example/soak",
    };
    let mut params = json!({
        "ZUUL_UUID": uuid,
        "ZUUL_PROJECT": project,
        "ZUUL_PIPELINE": "check",
        "LOG_PATH": format!("soak/{}", uuid),
    });
    if kind == Kind::Gate {
        params["ZUUL_URL"] = json!(change.url);
        params["ZUUL_REF"] = json!(change.zuul_ref);
    }
    let mut job = client
        .submit(kind.function(), uuid, params.to_string(), Priority::Normal)
        .await
        .unwrap();
    let mut out = Outcome::default();
    let mut stopped = false;
    // A job ends with its terminal packet; after it the stream ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, job.next_event()).await {
        if ev.is_terminal() {
            out.terminals += 1;
        }
        let (JobEvent::Data(d) | JobEvent::Complete(d)) = &ev else {
            if ev.is_terminal() {
                break;
            }
            continue;
        };
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(d) else {
            continue;
        };
        if let Some(r) = map.get("result").and_then(Value::as_str) {
            out.results.push(r.to_string());
        }
        if let (Kind::Stopped, false, Some(m)) = (kind, stopped, map.get("manager")) {
            // Started: stop it as Zuul does.
            stopped = true;
            let body = json!({"name": "soak-wait", "number": uuid}).to_string();
            let stop = client
                .submit(
                    &format!("stop:{}", m.as_str().unwrap()),
                    &format!("stop-{uuid}"),
                    body,
                    Priority::High,
                )
                .await
                .unwrap();
            tokio::spawn(stop.wait());
        }
        if ev.is_terminal() {
            break;
        }
    }
    out
}

/// Runs `n` builds starting at `first`, `IN_FLIGHT` at a time; returns them by kind.
fn run_builds(port: u16, change: &Change, first: usize, n: usize) -> Vec<(Kind, String, Outcome)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect("127.0.0.1", port).await.unwrap();
        let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::new();
        for i in first..first + n {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let client = client.clone();
            let change = change.clone();
            let kind = kind_of(i);
            // Distinct in its first 7 characters, as Zuul's.
            let uuid = format!("{i:07x}{:025x}", i * 7919);
            tasks.push(tokio::spawn(async move {
                let out = run_build(&client, kind, &uuid, &change).await;
                drop(permit);
                (kind, uuid, out)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    })
}

/// The daemon's resources at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: i64,
    threads: i64,
    rss_kb: i64,
    work_dirs: i64,
}

fn count_dir(path: &str) -> i64 {
    std::fs::read_dir(path).map(Iterator::count).unwrap_or(0) as i64
}

fn sample(pid: u32, jobs_dir: &Path) -> Sample {
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    Sample {
        fds: count_dir(&format!("/proc/{pid}/fd")),
        threads: count_dir(&format!("/proc/{pid}/task")),
        rss_kb,
        work_dirs: work_dirs(jobs_dir),
    }
}

/// Scratch `work` directories left anywhere under the jobs dir.
fn work_dirs(dir: &Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += i64::from(e.file_name() == WORK_DIR) + work_dirs(&e.path());
        }
    }
    n
}

/// Waits until gearmand has nothing queued or running for the soak's functions, then `settle`.
fn settle(server: &JobServer, settle: Duration) {
    let start = Instant::now();
    while server
        .status()
        .iter()
        .any(|(f, total, running, _)| f.starts_with("build:soak") && (*total > 0 || *running > 0))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            server.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(settle);
}

/// The example project with a proposed change on a Zuul ref, as Zuul's merger publishes it.
fn example_change(repos: &Path) -> Change {
    let sql = "ALTER TABLE customers ADD COLUMN soak INTEGER NOT NULL DEFAULT 0;\n";
    Change {
        url: repos.display().to_string(),
        zuul_ref: turbo_hipster_tests::example_change_in(repos, "004_soak.sql", sql),
    }
}

fn soak_jobs() -> usize {
    std::env::var("TH_SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Checks every build's outcome; returns the count of builds per kind.
fn check_outcomes(outcomes: &[(Kind, String, Outcome)]) -> BTreeMap<Kind, usize> {
    let mut per_kind = BTreeMap::new();
    for (kind, uuid, out) in outcomes {
        *per_kind.entry(*kind).or_insert(0) += 1;
        assert_eq!(out.terminals, 1, "{kind:?} {uuid}: {out:?}");
        assert!(!out.results.is_empty(), "{kind:?} {uuid}: no result");
        // The result WORK_DATA and the WORK_COMPLETE carry the same one result.
        assert!(
            out.results.iter().all(|r| r == &out.results[0]) && kind.result_ok(&out.results[0]),
            "{kind:?} {uuid}: {out:?}"
        );
    }
    per_kind
}

fn history_lines(jobs_dir: &Path) -> usize {
    std::fs::read_to_string(jobs_dir.join("jobs.jsonl"))
        .unwrap_or_default()
        .lines()
        .inspect(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
        })
        .count()
}

#[test]
fn soak_through_gearmand_stays_flat() {
    let n = soak_jobs();
    let scripts = tempfile::tempdir().unwrap();
    let ok = script(scripts.path(), "ok.sh", "#!/bin/sh\necho \"soak $3\"\n");
    let fail = script(
        scripts.path(),
        "fail.sh",
        "#!/bin/sh\necho failing >&2\nexit 3\n",
    );
    let repos = tempfile::tempdir().unwrap();
    let change = example_change(repos.path());
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    plugins.add_shipped("shell_script");
    plugins.add_shipped("gate_real_db_upgrade");
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "max_concurrent_jobs": SLOTS,
            "jobs": [
                {"name": "build:soak-ok", "plugin": "test_plugin"},
                {"name": "build:soak-noop", "plugin": "test_plugin", "mode": "noop"},
                {"name": "build:soak-fail", "plugin": "test_plugin", "mode": "fail"},
                {"name": "build:soak-wait", "plugin": "test_plugin", "mode": "wait", "wait_ms": 60000},
                {"name": "build:soak-shell", "plugin": "shell_script", "shell_script": ok, "timeout": 60},
                {"name": "build:soak-shell-fail", "plugin": "shell_script", "shell_script": fail, "timeout": 60},
                {"name": "build:soak-gate", "plugin": "gate_real_db_upgrade", "engine": "sqlite",
                 "datasets_dir": root().join("etc/example/datasets"), "timeout": 60}
            ]
        }),
    );
    let daemon = Daemon::start(&setup);
    for f in [
        "build:soak-ok",
        "build:soak-wait",
        "build:soak-shell-fail",
        "build:soak-gate",
    ] {
        server.wait_registered(f, Duration::from_secs(20));
    }
    let pid = daemon.child.id();
    let jobs_dir = setup.jobs_dir();

    // Warm-up: every kind, with every slot busy, so the job threads and lazy state exist.
    let warm = 4 * IN_FLIGHT;
    check_outcomes(&run_builds(server.port, &change, 0, warm));
    settle(&server, Duration::from_secs(1));
    let before = sample(pid, &jobs_dir);

    let started = Instant::now();
    let outcomes = run_builds(server.port, &change, warm, n);
    let elapsed = started.elapsed();
    settle(&server, Duration::from_secs(2));
    let after = sample(pid, &jobs_dir);

    let per_kind = check_outcomes(&outcomes);
    assert_eq!(outcomes.len(), n);
    let invalid = |count: usize| (0..count).filter(|&i| kind_of(i) == Kind::Invalid).count();
    let recorded = history_lines(&jobs_dir);
    let expected_records = warm + n - invalid(warm + n);

    eprintln!(
        "\nsoak: {n} builds through gearmand in {:.1} s ({:.0} builds/s), {SLOTS} slots, {IN_FLIGHT} in flight",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    eprintln!("  builds per kind: {per_kind:?}");
    eprintln!(
        "  {:<22}{:>12}{:>12}{:>10}",
        "daemon", "before", "after", "change"
    );
    for (what, b, a) in [
        ("open fds", before.fds, after.fds),
        ("threads", before.threads, after.threads),
        ("RSS (kB)", before.rss_kb, after.rss_kb),
        ("work dirs left", before.work_dirs, after.work_dirs),
    ] {
        eprintln!("  {what:<22}{b:>12}{a:>12}{:>+10}", a - b);
    }
    eprintln!(
        "  jobs.jsonl lines: {recorded} (expected {expected_records}: every started build once)"
    );

    assert!(
        after.fds <= before.fds + MAX_EXTRA_FDS,
        "fds {before:?} → {after:?}"
    );
    assert!(
        after.threads <= before.threads + MAX_EXTRA_THREADS,
        "threads {before:?} → {after:?}"
    );
    assert!(
        after.rss_kb - before.rss_kb < MAX_RSS_GROWTH_KB,
        "RSS {before:?} → {after:?}"
    );
    assert_eq!(
        after.work_dirs,
        0,
        "work dirs left under {}",
        jobs_dir.display()
    );
    assert_eq!(recorded, expected_records);
    assert!(
        elapsed < Duration::from_millis(90 * n as u64),
        "the soak took {elapsed:?}"
    );
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
