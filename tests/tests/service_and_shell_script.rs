//! The shipped init script driving the real daemon, and the shell_script plugin through the
//! daemon's `run-job` on a real git change.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::json;
use turbo_hipster_tests::{
    built, fixture, git, root, text, Fixture, JobServer, PluginDir, ServerKind, Setup,
};

#[test]
fn init_script_starts_reports_and_stops_the_daemon() {
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({
            "plugins": ["test_plugin"],
            "gearman_servers": [server.addr()],
            "debug_log": "debug.log",
        }),
    );
    let pidfile = setup.dir.path().join("run/th.pid");
    let defaults = setup.dir.path().join("defaults");
    std::fs::write(
        &defaults,
        format!(
            "DAEMON={}\nCONFIG={}\nPIDFILE={}\nSTOP_TIMEOUT=20\n",
            built().daemon.display(),
            setup.config.display(),
            pidfile.display()
        ),
    )
    .unwrap();
    let init = |action: &str| {
        Command::new("sh")
            .arg(root().join("etc/init.d/turbo-hipster"))
            .arg(action)
            .env("TURBO_HIPSTER_DEFAULTS", &defaults)
            .output()
            .unwrap()
    };
    let o = init("status");
    assert_eq!(o.status.code(), Some(3), "not running yet: {}", text(&o));
    let o = init("start");
    assert!(o.status.success(), "{}", text(&o));
    server.wait_registered("build:test-plugin", std::time::Duration::from_secs(20));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let o = init("status");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = init("stop");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.split_whitespace().nth(2) == Some("Z")
        }
    );
    assert!(!pidfile.exists());
    let o = init("status");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // The graceful stop reached the daemon: its log says so.
    let log = std::fs::read_to_string(setup.dir.path().join("debug.log")).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
}

fn shell_setup(script: &str) -> (PluginDir, Setup, tempfile::TempDir) {
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let scripts = tempfile::tempdir().unwrap();
    let path = scripts.path().join("job.sh");
    std::fs::write(&path, script).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    let setup = Setup::new(
        plugins.path(),
        json!({"jobs": [{"name": "build:shelly", "shell_script": path, "timeout": 30}]}),
    );
    (plugins, setup, scripts)
}

#[test]
fn shell_script_checks_out_the_change_and_runs_the_script() {
    // A real repository with a change published as Zuul's merger does.
    let repos = tempfile::tempdir().unwrap();
    let repo = repos.path().join("example/shop");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "base\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "base"]);
    std::fs::write(repo.join("CHANGED"), "the change\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "change"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["update-ref", "refs/zuul/master/Zabc123", &sha]);
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);

    let (_p, setup, _s) = shell_setup(
        "#!/bin/sh\necho \"git=$1\"\necho \"job=$TH_JOB_NAME project=$ZUUL_PROJECT\"\ncat \"$1/CHANGED\"\n",
    );
    let out = setup.run(&[
        "run-job",
        "shelly",
        "--param",
        "ZUUL_PROJECT=example/shop",
        "--param",
        &format!("ZUUL_URL={}", repos.path().display()),
        "--param",
        "ZUUL_REF=refs/zuul/master/Zabc123",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("result: SUCCESS"), "{t}");
    let logs = t
        .lines()
        .find_map(|l| l.strip_prefix("logs: file://"))
        .unwrap();
    let log = std::fs::read_to_string(std::path::Path::new(logs).join("shell_script.log")).unwrap();
    assert!(
        log.contains("[output] job=shelly project=example/shop"),
        "{log}"
    );
    assert!(log.contains("[output] the change"), "{log}");
    // Lines carry millisecond timestamps in the original's format.
    let first = log.lines().next().unwrap();
    assert_eq!(&first[19..20], ",", "{first}");
    let git_log = std::fs::read_to_string(std::path::Path::new(logs).join("git_prep.log")).unwrap();
    assert!(git_log.contains("refs/zuul/master/Zabc123"), "{git_log}");
}

#[test]
fn shell_script_failures_read_as_the_original() {
    let (_p, setup, _s) = shell_setup("#!/bin/sh\necho working\nexit 3\n");
    let out = setup.run(&["run-job", "build:shelly"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("result: Return code from test script was non-zero (3)"),
        "{}",
        text(&out)
    );

    let (_p, setup, _s) = shell_setup(
        "#!/bin/sh\nprintf 'FAILURE - 2 tests failed\\nmore\\n' > \"$TH_RESULT_FILE\"\n",
    );
    let out = setup.run(&["run-job", "build:shelly"]);
    assert!(
        text(&out).contains("result: FAILURE - 2 tests failed"),
        "{}",
        text(&out)
    );

    let (_p, setup, _s) = shell_setup("#!/bin/sh\necho SUCCESS > \"$TH_RESULT_FILE\"\n");
    let out = setup.run(&["run-job", "build:shelly"]);
    assert!(out.status.success(), "{}", text(&out));
}
