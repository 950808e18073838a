//! The real daemon behind a real Gearman server, driven the way Zuul drives it — the same
//! scenarios against Debian's gearmand and against Zuul's own server (`gear.Server`).
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_hipster_tests::{
    admin, enqueue, fixture, test_plugin_jobs, text, Daemon, Fixture, JobServer, PluginDir,
    ServerKind, Setup,
};

struct World {
    servers: Vec<JobServer>,
    setup: Setup,
    daemon: Daemon,
    _plugins: PluginDir,
}

fn world(kind: ServerKind, servers: usize, extra: Value) -> World {
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let servers: Vec<JobServer> = (0..servers).map(|_| JobServer::start(kind)).collect();
    let mut config = json!({
        "gearman_servers": servers.iter().map(JobServer::addr).collect::<Vec<_>>(),
        "jobs": test_plugin_jobs()
    });
    if let (Some(c), Value::Object(e)) = (config.as_object_mut(), extra) {
        c.extend(e);
    }
    let setup = Setup::new(plugins.path(), config);
    let daemon = Daemon::start(&setup);
    for s in &servers {
        s.wait_registered("build:ok", Duration::from_secs(20));
    }
    World {
        servers,
        setup,
        daemon,
        _plugins: plugins,
    }
}

fn out_text(o: &Output) -> String {
    text(o)
}

fn started_data(t: &str) -> Value {
    let line = t
        .lines()
        .find_map(|l| l.strip_prefix("started: "))
        .unwrap_or_else(|| panic!("no start data in:\n{t}"));
    serde_json::from_str(line).unwrap()
}

fn success(kind: ServerKind) {
    let w = world(kind, 1, json!({}));
    let o = enqueue(
        &w.servers[0].addr(),
        "ok",
        &["--param", "ZUUL_PROJECT=example/shop"],
    );
    let t = out_text(&o);
    assert!(o.status.success(), "{t}\n{}", w.daemon.log_text());
    let start = started_data(&t);
    assert_eq!(start["name"], "ok");
    assert_eq!(start["worker_program"], "turbo-hipster");
    assert!(
        start.get("result").is_none(),
        "start data must not carry result"
    );
    assert!(start["manager"]
        .as_str()
        .unwrap()
        .starts_with("turbo-hipster-manager-"));
    assert!(
        start["url"].as_str().unwrap().contains("/check/ok/"),
        "{start}"
    );
    // WORK_STATUS 0 first, then the plugin's progress, then the result.
    let progress: Vec<&str> = t.lines().filter(|l| l.starts_with("progress: ")).collect();
    assert_eq!(
        progress,
        ["progress: 0/1", "progress: 1/2", "progress: 2/2"],
        "{t}"
    );
    assert!(t.contains("data: {\"test_plugin\":\"hello\"}"), "{t}");
    assert!(t.contains("result: SUCCESS"), "{t}");
}

fn failure(kind: ServerKind) {
    let w = world(kind, 1, json!({}));
    let o = enqueue(&w.servers[0].addr(), "build:fail", &[]);
    let t = out_text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("result: FAILURE - test plugin was asked to fail"),
        "{t}"
    );
}

fn stop_running_build(kind: ServerKind) {
    let w = world(kind, 1, json!({}));
    let started = Instant::now();
    let o = enqueue(&w.servers[0].addr(), "wait", &["--stop-after", "1"]);
    let t = out_text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("stopping the build through stop:turbo-hipster-manager-"),
        "{t}"
    );
    assert!(
        t.contains("result: ABORTED"),
        "{t}\n{}",
        w.daemon.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    assert!(w
        .daemon
        .wait_log("stop requested by Zuul", Duration::from_secs(5)));
    // The build's work dir was cleaned up; its results are kept.
    let unique = started_data(&t)["number"].as_str().unwrap().to_string();
    let jobs = w.setup.jobs_dir();
    let found: Vec<_> = walk(&jobs)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&unique[..7]))
        .collect();
    assert!(
        found.iter().any(|p| p.join("job.json").is_file()),
        "{found:?}"
    );
    assert!(!found.iter().any(|p| p.ends_with("work")), "{found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                out.extend(walk(&p));
            }
        }
    }
    out
}

/// A queued build cancelled before any worker took it (Zuul's admin `cancel job`) never runs.
fn cancel_queued_job(kind: ServerKind) {
    let w = world(kind, 1, json!({}));
    let addr = w.servers[0].addr();
    // Occupy the only slot.
    let busy = {
        let addr = addr.clone();
        std::thread::spawn(move || enqueue(&addr, "wait", &["--stop-after", "3"]))
    };
    w.servers[0].wait_running("build:wait", 1, Duration::from_secs(10));
    // Queue a second build with a raw client, then cancel it through the admin protocol.
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The submitting client stays connected (gear drops a client's jobs when it leaves).
    let (_client, queued) = rt.block_on(async {
        let client =
            turbo_hipster::gearman::client::Client::connect("127.0.0.1", w.servers[0].port)
                .await
                .unwrap();
        let job = client
            .submit(
                "build:ok",
                "queuedcancelled0000000000000000a",
                json!({"ZUUL_UUID": "queuedcancelled0000000000000000a"}).to_string(),
                turbo_hipster::gearman::client::Priority::Normal,
            )
            .await
            .unwrap();
        (client, job)
    });
    let handle = String::from_utf8_lossy(queued.handle()).to_string();
    let answer = admin(w.servers[0].port, &format!("cancel job {handle}")).unwrap();
    assert!(answer.iter().any(|l| l.starts_with("OK")), "{answer:?}");
    let o = busy.join().unwrap();
    assert!(out_text(&o).contains("result: ABORTED"), "{}", out_text(&o));
    // Give the worker a moment to grab anything left, then check nothing ran it.
    std::thread::sleep(Duration::from_millis(500));
    let ran = walk(&w.setup.jobs_dir())
        .iter()
        .any(|p| p.to_string_lossy().contains("queuedcancelled"));
    assert!(!ran, "a cancelled queued job ran");
    assert!(!w.daemon.log_text().contains("queuedcancelled"));
    // And the worker still takes the next job.
    assert!(enqueue(&addr, "ok", &[]).status.success());
}

fn not_registered(kind: ServerKind) {
    let w = world(kind, 1, json!({}));
    let o = enqueue(&w.servers[0].addr(), "nosuchjob", &[]);
    let t = out_text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("result: NOT_REGISTERED"), "{t}");
}

fn server_restart_while_idle(kind: ServerKind) {
    let mut w = world(kind, 1, json!({}));
    w.servers[0].restart();
    let restarted = Instant::now();
    w.servers[0].wait_registered("build:ok", Duration::from_secs(5));
    let o = enqueue(&w.servers[0].addr(), "ok", &[]);
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "took {:?} to take the next job",
        restarted.elapsed()
    );
}

/// The daemon's history: one JSON line per finished job in `jobs_working_dir/jobs.jsonl`,
/// waited for (it is written just after the result goes out).
fn history(w: &World, lines: usize) -> Vec<Value> {
    let path = w.setup.jobs_dir().join("jobs.jsonl");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if records.len() >= lines || start.elapsed() > Duration::from_secs(10) {
            return records;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server goes away while a build runs: nobody waits for that build any more, so it is
/// cancelled (recorded ABORTED) instead of running on; the daemon reconnects and takes the
/// next job.
fn server_lost_during_a_build(kind: ServerKind) {
    let mut w = world(kind, 1, json!({}));
    let addr = w.servers[0].addr();
    let running = std::thread::spawn(move || enqueue(&addr, "wait", &[]));
    w.servers[0].wait_running("build:wait", 1, Duration::from_secs(10));
    let lost = Instant::now();
    w.servers[0].restart();
    assert!(
        w.daemon.wait_log(
            "the Gearman connection that assigned the job was lost",
            Duration::from_secs(10)
        ),
        "{}",
        w.daemon.log_text()
    );
    let records = history(&w, 1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["function"], "build:wait");
    assert_eq!(records[0]["result"], "ABORTED", "{records:?}");
    assert!(
        lost.elapsed() < Duration::from_secs(10),
        "the build ran on for {:?}",
        lost.elapsed()
    );
    let _ = running.join().unwrap();
    w.servers[0].wait_registered("build:ok", Duration::from_secs(10));
    let o = enqueue(&w.servers[0].addr(), "ok", &[]);
    assert!(o.status.success(), "{}", out_text(&o));
    let records = history(&w, 2);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1]["function"], "build:ok");
    assert_eq!(records[1]["result"], "SUCCESS");
    assert_eq!(
        records[1]["unique"].as_str().map(str::len),
        Some(32),
        "{records:?}"
    );
}

fn two_servers(kind: ServerKind) {
    let w = world(kind, 2, json!({"max_concurrent_jobs": 2}));
    let a = w.servers[0].addr();
    let b = w.servers[1].addr();
    let ta = std::thread::spawn(move || enqueue(&a, "short", &[]));
    let tb = std::thread::spawn(move || enqueue(&b, "short", &[]));
    let started = Instant::now();
    for o in [ta.join().unwrap(), tb.join().unwrap()] {
        assert!(o.status.success(), "{}", out_text(&o));
    }
    // Both ran at once (two slots shared by both servers).
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
}

fn invalid_parameters(kind: ServerKind) {
    let w = world(kind, 1, json!({}));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (data, expected) in [
        (
            json!({"ZUUL_PROJECT": "../../etc"}).to_string(),
            "FAILURE - invalid job parameters: ZUUL_PROJECT: must be a relative path",
        ),
        (
            "[1, 2]".to_string(),
            "FAILURE - invalid job parameters: not a JSON object",
        ),
        (
            json!({"ZUUL_REF": "--upload-pack=touch /tmp/x"}).to_string(),
            "FAILURE - invalid job parameters: ZUUL_REF: is not a safe git ref name",
        ),
    ] {
        let events = rt.block_on(async {
            let client =
                turbo_hipster::gearman::client::Client::connect("127.0.0.1", w.servers[0].port)
                    .await
                    .unwrap();
            let job = client
                .submit(
                    "build:ok",
                    &turbo_hipster::zuul::random_uuid_hex(),
                    data.clone(),
                    turbo_hipster::gearman::client::Priority::Normal,
                )
                .await
                .unwrap();
            job.wait().await.unwrap()
        });
        use turbo_hipster::gearman::client::JobEvent;
        let datas: Vec<Value> = events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Data(d) => serde_json::from_slice(d).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(datas.len(), 1, "{events:?}");
        assert!(
            datas[0]["result"].as_str().unwrap().starts_with(expected),
            "{datas:?}"
        );
        assert_eq!(events.last(), Some(&JobEvent::Fail), "{events:?}");
        assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1);
    }
    // Nothing ran: no job directory was made.
    assert!(walk(&w.setup.jobs_dir()).is_empty());
}

/// SIGTERM while `job` runs, with `grace` seconds to finish: the daemon exits 0 and the build
/// still gets `expected` as its result.
fn sigterm_with_a_running_build(kind: ServerKind, grace: u64, job: &'static str, expected: &str) {
    let mut w = world(kind, 1, json!({ "shutdown_grace_seconds": grace }));
    let addr = w.servers[0].addr();
    let running = std::thread::spawn(move || enqueue(&addr, job, &[]));
    w.servers[0].wait_running(&format!("build:{job}"), 1, Duration::from_secs(10));
    let status = w
        .daemon
        .terminate(Duration::from_secs(20))
        .expect("daemon exits");
    assert!(status.success(), "{}", w.daemon.log_text());
    let o = running.join().unwrap();
    assert!(
        out_text(&o).contains(&format!("result: {expected}")),
        "{}",
        out_text(&o)
    );
    // The daemon exited only after the job's history line was written.
    let records = history(&w, 1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["result"], expected, "{records:?}");
}

/// SIGTERM: no new jobs, a running job finishes within the grace period, the daemon exits 0.
fn sigterm_drains(kind: ServerKind) {
    sigterm_with_a_running_build(kind, 30, "short", "SUCCESS");
}

/// SIGTERM with a job longer than the grace period: it is aborted, and still reported.
fn sigterm_aborts_after_grace(kind: ServerKind) {
    sigterm_with_a_running_build(kind, 1, "wait", "ABORTED");
}

/// Two daemons on one host with different worker names: both serve, and a stop reaches the
/// one running the build.
fn two_daemons_one_host(kind: ServerKind) {
    let w1 = world(kind, 1, json!({"worker_name": "th-one"}));
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let setup2 = Setup::new(
        plugins.path(),
        json!({
            "worker_name": "th-two",
            "gearman_servers": [w1.servers[0].addr()],
            "jobs": [{"name": "build:wait", "plugin": "test_plugin", "mode": "wait"}]
        }),
    );
    let d2 = Daemon::start(&setup2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = w1.servers[0].status();
        if st.iter().any(|(f, _, _, n)| f == "build:wait" && *n >= 2)
            && st
                .iter()
                .any(|(f, _, _, n)| f == "stop:turbo-hipster-manager-th-two" && *n == 1)
            && st
                .iter()
                .any(|(f, _, _, n)| f == "stop:turbo-hipster-manager-th-one" && *n == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{st:?}\n{}", d2.log_text());
        std::thread::sleep(Duration::from_millis(30));
    }
    let addr = w1.servers[0].addr();
    let a = {
        let addr = addr.clone();
        std::thread::spawn(move || enqueue(&addr, "wait", &["--stop-after", "1"]))
    };
    let b = std::thread::spawn(move || enqueue(&addr, "wait", &["--stop-after", "1"]));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let managers: Vec<String> = [&a, &b]
        .iter()
        .map(|o| {
            started_data(&out_text(o))["manager"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for o in [&a, &b] {
        assert!(out_text(o).contains("result: ABORTED"), "{}", out_text(o));
    }
    let mut sorted = managers.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "turbo-hipster-manager-th-one",
            "turbo-hipster-manager-th-two"
        ],
        "each daemon ran one build"
    );
}

macro_rules! on_both_servers_extra {
    ($($scenario:ident),* $(,)?) => {
        mod gearmand_more {
            $(#[test] fn $scenario() { super::$scenario(super::ServerKind::Gearmand) })*
        }
        mod gear_server_more {
            $(#[test] fn $scenario() { super::$scenario(super::ServerKind::Gear) })*
        }
    };
}

turbo_hipster_tests::on_both_servers!(
    success,
    failure,
    stop_running_build,
    cancel_queued_job,
    not_registered,
    server_restart_while_idle,
    server_lost_during_a_build,
    two_servers,
    invalid_parameters,
    sigterm_drains,
    sigterm_aborts_after_grace,
    two_daemons_one_host,
);

/// `stop:` for a build this worker does not run completes (with a log line);
/// `set_description:` is accepted and kept with the build.
fn stop_unknown_and_set_description(kind: ServerKind) {
    let w = world(kind, 1, json!({"worker_name": "th-desc"}));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = w.servers[0].port;
    use turbo_hipster::gearman::client::{Client, JobEvent, Priority};
    let events = rt.block_on(async {
        let client = Client::connect("127.0.0.1", port).await.unwrap();
        client
            .submit(
                "stop:turbo-hipster-manager-th-desc",
                "stop1",
                json!({"name": "wait", "number": "nosuchbuild"}).to_string(),
                Priority::High,
            )
            .await
            .unwrap()
            .wait()
            .await
            .unwrap()
    });
    assert!(
        matches!(events.last(), Some(JobEvent::Complete(_))),
        "{events:?}"
    );
    assert!(w.daemon.wait_log(
        "stop requested for a build this worker does not run",
        Duration::from_secs(5)
    ));

    // A running build gets a description.
    let addr = w.servers[0].addr();
    let unique = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0".to_string();
    let param = format!("ZUUL_UUID={unique}");
    let running = std::thread::spawn(move || {
        enqueue(&addr, "wait", &["--stop-after", "2", "--param", &param])
    });
    w.servers[0].wait_running("build:wait", 1, Duration::from_secs(10));
    // gearmand counts the build as running once it is assigned, a moment before the daemon
    // knows it (Zuul itself describes a build only after its start data): describe it until
    // the description is kept, as long as the build runs.
    let kept_description = || {
        walk(&w.setup.jobs_dir())
            .into_iter()
            .map(|d| d.join("description.html"))
            .find(|p| p.is_file())
    };
    let started = std::time::Instant::now();
    while kept_description().is_none() && started.elapsed() < Duration::from_secs(2) {
        let events = rt.block_on(async {
            let client = Client::connect("127.0.0.1", port).await.unwrap();
            client
                .submit(
                    "set_description:turbo-hipster-manager-th-desc",
                    "desc1",
                    json!({"name": "wait", "number": unique, "html_description": "<b>hello</b>"})
                        .to_string(),
                    Priority::High,
                )
                .await
                .unwrap()
                .wait()
                .await
                .unwrap()
        });
        assert!(
            matches!(events.last(), Some(JobEvent::Complete(_))),
            "{events:?}"
        );
    }
    let o = running.join().unwrap();
    assert!(out_text(&o).contains("result: ABORTED"), "{}", out_text(&o));
    let kept = kept_description().expect("description.html kept with the build");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "<b>hello</b>");
}

on_both_servers_extra!(stop_unknown_and_set_description);

/// An idle daemon (registered, waiting for work) uses no CPU: no timers, no polling.
#[test]
fn idle_daemon_uses_no_cpu() {
    let w = world(ServerKind::Gearmand, 1, json!({}));
    // Let start-up settle, then watch it for two seconds.
    std::thread::sleep(Duration::from_millis(500));
    let pid = w.daemon.child.id();
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name: utime and stime are the 12th and 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        f[10] + f[11]
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = ticks() - before;
    assert!(used <= 2, "the idle daemon used {used} clock ticks in 2 s");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 40 * 1024, "idle RSS {rss_kb} kB (debug build)");
}
