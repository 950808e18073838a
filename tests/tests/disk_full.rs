//! The jobs directory on a real, tiny filesystem (a tmpfs the test mounts; the tests run as
//! root, and skip with a message where mounting is not permitted), filled by a job's own
//! script, driven through gearmand: the job is not reported as SUCCESS, the daemon says once
//! (with a count) that the log cannot be written, keeps serving, and once there is room again
//! the history (`jobs.jsonl`) is whole: every line parses, none is lost or glued to another.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use turbo_hipster_tests::{
    enqueue, script, text, Daemon, JobServer, PluginDir, ServerKind, Setup, SmallDisk,
};

#[test]
fn a_full_jobs_directory_fails_the_job_and_keeps_the_history_whole() {
    let Some(fs) = SmallDisk::mount("1m") else {
        return;
    };
    let filler = fs.path().join("filler");
    let scripts = tempfile::tempdir().unwrap();
    // Fills the filesystem, then writes 3000 lines that cannot be logged, and exits 0.
    let fill = script(
        scripts.path(),
        "fill.sh",
        &format!(
            "#!/bin/sh\necho before\nhead -c 4000000 /dev/zero > '{}' 2>/dev/null\n\
             i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done\nexit 0\n",
            filler.display()
        ),
    );
    let ok = script(scripts.path(), "ok.sh", "#!/bin/sh\necho fine\n");
    let fill_and_free = script(
        scripts.path(),
        "fill-and-free.sh",
        &format!(
            "#!/bin/sh\nhead -c 4000000 /dev/zero > '{0}' 2>/dev/null\n\
             i=0; while [ $i -lt 100 ]; do echo \"line $i\"; i=$((i+1)); done\n\
             sleep 1\nrm '{0}'\n",
            filler.display()
        ),
    );
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let server = JobServer::start(ServerKind::Gearmand);
    let jobs_dir = fs.path().join("jobs");
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "jobs_working_dir": jobs_dir,
            "jobs": [
                {"name": "build:fill", "shell_script": fill, "timeout": 60},
                {"name": "build:ok", "shell_script": ok, "timeout": 60},
                {"name": "build:fill-and-free", "shell_script": fill_and_free, "timeout": 60},
            ],
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:fill", Duration::from_secs(20));

    let o = enqueue(&server.addr(), "fill", &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}\n{}", daemon.log_text());
    assert!(
        t.contains("\"error\":\"cannot write the job's results: "),
        "{t}\n{}",
        daemon.log_text()
    );
    assert!(daemon.wait_log("repeated", Duration::from_secs(5)));
    let log = daemon.log_text();
    let about_the_log: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot write to") && l.contains("shell_script.log"))
        .collect();
    assert_eq!(about_the_log.len(), 2, "{about_the_log:#?}\n{t}\n{log}");
    assert!(
        about_the_log[0].contains("No space left on device"),
        "{log}"
    );
    assert!(about_the_log[1].contains("(repeated "), "{log}");
    // The history line follows the result: wait for its warning.
    assert!(
        daemon.wait_log(
            "cannot record the job in the history (kept for the next record)",
            Duration::from_secs(5)
        ),
        "{}",
        daemon.log_text()
    );

    // Room again: the daemon still serves, and the history holds both records, whole.
    std::fs::remove_file(&filler).unwrap();
    let o = enqueue(&server.addr(), "ok", &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}\n{}", daemon.log_text());
    assert!(t.contains("result: SUCCESS"), "{t}");
    // The history line follows the result: wait for it.
    let read_history = || std::fs::read_to_string(jobs_dir.join("jobs.jsonl")).unwrap_or_default();
    let started = std::time::Instant::now();
    while read_history().lines().count() < 2 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let history = read_history();
    let records: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(records.len(), 2, "{history}");
    assert!(records[0]["result"]
        .as_str()
        .unwrap()
        .starts_with("ERROR - infrastructure: cannot write the job's results: "));
    assert_eq!(records[1]["result"], "SUCCESS");
    assert!(!jobs_dir.join("jobs.jsonl.torn").exists());

    // A script that fills the disk and frees it before it ends (after a pause, so that its
    // output reached the log while the disk was full): the job's record is written, but its log
    // lost lines, so it is still not a SUCCESS.
    let o = enqueue(&server.addr(), "fill-and-free", &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}\n{}", daemon.log_text());
    assert!(
        t.contains("\"error\":\"cannot write the job's results: ")
            && t.contains("shell_script.log: No space left on device")
            && t.contains("writes failed)"),
        "{t}"
    );
    drop(daemon);
}

/// Logs that cannot be published (the publish directory was replaced by a file after the
/// daemon started) fail the job with the same result line; the daemon keeps serving.
#[test]
fn logs_that_cannot_be_published_fail_the_job() {
    let scripts = tempfile::tempdir().unwrap();
    let ok = script(scripts.path(), "ok.sh", "#!/bin/sh\necho fine\n");
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let server = JobServer::start(ServerKind::Gearmand);
    let publish = scripts.path().join("published");
    std::fs::create_dir(&publish).unwrap();
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "publish_logs": {"type": "local", "path": publish, "prepend_url": "http://logs/"},
            "jobs": [{"name": "build:ok", "shell_script": ok, "timeout": 60}],
        }),
    );
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:ok", Duration::from_secs(20));
    let o = enqueue(&server.addr(), "ok", &[]);
    assert!(o.status.success(), "{}", text(&o));
    // The publish directory becomes a file: nothing can be copied below it.
    std::fs::remove_dir_all(&publish).unwrap();
    std::fs::write(&publish, "not a directory").unwrap();
    let o = enqueue(&server.addr(), "ok", &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}\n{}", daemon.log_text());
    assert!(
        t.contains("\"error\":\"cannot write the job's results: cannot publish the job's logs to "),
        "{t}"
    );
    // Back to a directory: the next job publishes and passes.
    std::fs::remove_file(&publish).unwrap();
    std::fs::create_dir(&publish).unwrap();
    let o = enqueue(&server.addr(), "ok", &[]);
    assert!(o.status.success(), "{}\n{}", text(&o), daemon.log_text());
}

/// A history left ending in a torn line (a predecessor killed mid-write) is repaired when the
/// daemon starts, before any job: the torn piece moves to `jobs.jsonl.torn`, and the next
/// record starts on a line of its own.
#[test]
fn a_torn_history_is_repaired_when_the_daemon_starts() {
    let scripts = tempfile::tempdir().unwrap();
    let ok = script(scripts.path(), "ok.sh", "#!/bin/sh\necho fine\n");
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "jobs": [{"name": "build:ok", "shell_script": ok, "timeout": 60}],
        }),
    );
    let jobs_dir = setup.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let history = jobs_dir.join("jobs.jsonl");
    std::fs::write(&history, "{\"result\":\"SUCCESS\"}\n{\"result\":\"FAIL").unwrap();
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:ok", Duration::from_secs(20));
    // Repaired at start, before any job ran.
    assert_eq!(
        std::fs::read_to_string(&history).unwrap(),
        "{\"result\":\"SUCCESS\"}\n",
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        std::fs::read_to_string(jobs_dir.join("jobs.jsonl.torn")).unwrap(),
        "{\"result\":\"FAIL\n"
    );
    // The daemon writes its log in batches, a few milliseconds late.
    assert!(
        daemon.wait_log(
            "the job history ended in a torn line",
            Duration::from_secs(5)
        ),
        "{}",
        daemon.log_text()
    );
    let o = enqueue(&server.addr(), "ok", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let started = std::time::Instant::now();
    let read = || std::fs::read_to_string(&history).unwrap_or_default();
    while read().lines().count() < 2 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines: Vec<Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["result"], "SUCCESS");
}
