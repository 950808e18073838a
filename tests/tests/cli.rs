//! The command line: config path resolution, check-config, and running as a service with a
//! locked PID file, in the background, stopped by SIGTERM.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use turbo_hipster_tests::{built, fixture, text, Fixture, PluginDir, Setup};

#[test]
fn dash_c_without_value_prints_the_resolved_path() {
    let out = Command::new(&built().daemon)
        .arg("-c")
        .env_remove("TURBO_HIPSTER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/etc/turbo-hipster/config.json"
    );
    let out = Command::new(&built().daemon)
        .arg("-c")
        .env("TURBO_HIPSTER_CONFIG", "/srv/th/config.json")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/srv/th/config.json"
    );
}

#[test]
fn check_config_reports_every_error_and_fails() {
    let dir = PluginDir::new();
    let setup = Setup::new(
        dir.path(),
        json!({"max_concurrent_jobs": "two", "jobs": [{"plugin": "shell_script"}], "flavour": 1}),
    );
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("max_concurrent_jobs: expected a whole number, got a string"),
        "{t}"
    );
    assert!(t.contains("jobs[0].name: required"), "{t}");
    assert!(
        t.contains("warning: ") && t.contains("flavour: unknown key, ignored"),
        "{t}"
    );
    assert!(t.contains("2 error(s)"), "{t}");
}

#[test]
fn check_config_passes_a_good_config() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    let setup = Setup::new(
        dir.path(),
        json!({"plugins": ["test_plugin"], "gearman_servers": ["127.0.0.1:4730"]}),
    );
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("OK (1 job(s): build:test-plugin)"), "{t}");
}

/// `max_concurrent_jobs` of 2^64-1 used to pass check-config and panic at start; 10^7 spun the
/// CPU. Both are now config errors naming the key and the file, for check-config and for the
/// daemon's start, which refuses at once.
#[test]
fn huge_max_concurrent_jobs_is_a_config_error_for_check_config_and_start() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    for value in [json!(u64::MAX), json!(10_000_000)] {
        let setup = Setup::new(
            dir.path(),
            json!({"plugins": ["test_plugin"], "gearman_servers": ["127.0.0.1:9"],
                   "max_concurrent_jobs": value}),
        );
        let needle = format!(
            "{}: max_concurrent_jobs: must be between 1 and 1024, got {value}",
            setup.config.display()
        );
        let out = setup.run(&["check-config"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains(&needle), "{t}");
        let started = Instant::now();
        let out = setup.run(&[]);
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(t.contains(&needle), "{t}");
        assert!(started.elapsed() < Duration::from_secs(10), "{t}");
    }
}

#[test]
fn check_config_names_the_conf_d_snippet_that_holds_the_error() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    let setup = Setup::new(
        dir.path(),
        json!({"plugins": ["test_plugin"], "gearman_servers": ["127.0.0.1:4730"],
               "conf_d": "conf.d"}),
    );
    let confd = setup.dir.path().join("conf.d");
    std::fs::create_dir(&confd).unwrap();
    let snippet = confd.join("20-tuning.json");
    std::fs::write(
        &snippet,
        r#"{"max_packet_bytes": 1e12, "worker_name": "w1"}"#,
    )
    .unwrap();
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "{}: max_packet_bytes: must be between 1024 and 268435456, got 1000000000000.0",
            snippet.display()
        )),
        "{t}"
    );
    assert!(
        !t.contains(&format!("{}: max_packet_bytes", setup.config.display())),
        "{t}"
    );
}

/// What the daemon or a job would refuse later: no server, a jobs dir that is a file, a
/// shell script that is missing or not executable.
#[test]
fn check_config_reports_what_the_daemon_or_a_job_would_refuse() {
    let dir = PluginDir::new();
    dir.add_shipped("shell_script");
    let setup = Setup::new(dir.path(), json!({}));
    let root = setup.dir.path();
    std::fs::write(root.join("jobs"), "not a directory").unwrap();
    let plain = root.join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&setup.config).unwrap()).unwrap();
    let mut config = config.as_object().unwrap().clone();
    config.insert(
        "jobs".into(),
        json!([
            {"name": "build:missing", "shell_script": root.join("nowhere.sh")},
            {"name": "build:plain", "shell_script": plain},
            {"name": "build:dir", "shell_script": root},
        ]),
    );
    std::fs::write(&setup.config, serde_json::Value::Object(config).to_string()).unwrap();
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let main = setup.config.display();
    for needle in [
        format!("error: {main}: gearman_servers: no Gearman server"),
        format!(
            "error: {main}: jobs_working_dir: {} is not a directory",
            root.join("jobs").display()
        ),
        format!(
            "jobs[0]: plugin shell_script rejected the job \"build:missing\":\n    shell_script: {} does not exist",
            root.join("nowhere.sh").display()
        ),
        format!("shell_script: {} is not executable", plain.display()),
        format!("shell_script: {} is not a regular file", root.display()),
        "5 error(s); 0 job(s) OK".to_string(),
    ] {
        assert!(t.contains(&needle), "{needle}\n{t}");
    }
}

/// A bad ZUUL_UUID is named (not the LOG_PATH made from it), and enqueue says it once.
#[test]
fn run_job_and_enqueue_name_a_bad_zuul_uuid_once() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    let setup = Setup::new(dir.path(), json!({"plugins": ["test_plugin"]}));
    for uuid in ["../../etc", "ééééééééé", "a b"] {
        let param = format!("ZUUL_UUID={uuid}");
        let out = setup.run(&["run-job", "build:test-plugin", "--param", &param]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains("result: FAILURE - invalid job parameters: ZUUL_UUID: must be"),
            "{t}"
        );
        assert!(!t.contains("LOG_PATH"), "{t}");

        let out = turbo_hipster_tests::enqueue("127.0.0.1:9", "test-plugin", &["--param", &param]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert_eq!(
            t.matches("ZUUL_UUID: must be").count(),
            1,
            "the error is said once:\n{t}"
        );
        assert!(
            t.starts_with("turbo-hipster: invalid job parameters: ZUUL_UUID"),
            "{t}"
        );
        assert!(!t.contains("LOG_PATH"), "{t}");
    }
    // Seconds that would overflow a clock are refused, not a panic.
    let out = turbo_hipster_tests::enqueue("127.0.0.1:9", "test-plugin", &["--timeout", "1e300"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("--timeout: 1e300 is not a number of seconds from 0 to 604800"),
        "{t}"
    );
    // An unreachable server is said once too.
    let port = turbo_hipster_tests::free_port();
    let out = turbo_hipster_tests::enqueue(&format!("127.0.0.1:{port}"), "test-plugin", &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.starts_with(&format!("turbo-hipster: Gearman server 127.0.0.1:{port}: ")),
        "{t}"
    );
    let cause = t.trim_end().rsplit(": ").next().unwrap();
    assert_eq!(t.matches(cause).count(), 1, "the cause is said once:\n{t}");
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); read its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[test]
fn background_daemon_holds_its_pid_file_and_stops_on_sigterm() {
    let dir = PluginDir::new();
    dir.add("test_plugin", &fixture(Fixture::TestPlugin));
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("debug.log");
    let setup = Setup::new(
        dir.path(),
        json!({
            "plugins": ["test_plugin"],
            "debug_log": log,
            // Nothing listens there: the daemon keeps retrying, which is fine for this test.
            "gearman_servers": ["127.0.0.1:9"],
        }),
    );
    let pidfile = setup.dir.path().join("run/th.pid");
    let pidfile_s = pidfile.to_str().unwrap();
    let out = setup.run(&["-b", "-p", pidfile_s]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("started in the background (pid "), "{t}");
    let pid = read_pid(&pidfile).expect("pid file written");
    assert!(alive(pid));
    // The background process left our session.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    assert_eq!(sid.as_raw(), pid, "the daemon should lead its own session");

    // A second instance with the same PID file refuses, naming the running one.
    let out = setup.run(&["-p", pidfile_s]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "another turbo-hipster is running with PID file {pidfile_s} (pid {pid})"
        )),
        "{t}"
    );
    // The same for a second background start: the error reaches the terminal.
    let out = setup.run(&["-b", "-p", pidfile_s]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("another turbo-hipster is running"),
        "{}",
        text(&out)
    );
    assert_eq!(read_pid(&pidfile), Some(pid));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the daemon to exit", Duration::from_secs(20), || {
        !alive(pid)
    });
    assert!(!pidfile.exists(), "the PID file is removed on a clean exit");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("SIGTERM received"), "{logged}");
}

#[test]
fn foreground_daemon_refuses_a_config_with_nothing_to_serve() {
    let dir = PluginDir::new();
    let setup = Setup::new(
        dir.path(),
        json!({"plugins": ["missing"], "gearman_servers": ["127.0.0.1:9"]}),
    );
    let out = setup.run(&[]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("plugin \"missing\": no libtask.so found"), "{t}");
    assert!(t.contains("nothing to serve"), "{t}");
}
