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
        t.contains("max_concurrent_jobs: expected a whole number >= 1"),
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
    let setup = Setup::new(dir.path(), json!({"plugins": ["test_plugin"]}));
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("OK (1 job(s): build:test-plugin)"), "{t}");
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
