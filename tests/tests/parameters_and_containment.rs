//! Hostile build parameters and the containment of the change's code, through gearmand and
//! the real daemon with the real shell_script plugin: only Zuul's parameters and those a job
//! allows reach the script, never one that changes how programs start; `ZUUL_URL` with a
//! transport that is not allowed is refused at once; the script runs as `nobody` with
//! limits, and with a network namespace reaches no TCP port of the host.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use turbo_hipster_tests::{
    enqueue, leaked, script, text, Daemon, JobServer, PluginDir, ServerKind, Setup, DAEMON_ENV,
};

struct World {
    server: JobServer,
    setup: Setup,
    _daemon: Daemon,
    _plugins: PluginDir,
    scripts: tempfile::TempDir,
}

/// A directory everyone may write (the script's user is `nobody` under a root daemon).
fn open_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// gearmand, the daemon, and shell jobs made by `jobs(scripts_dir)`.
fn world(jobs: impl FnOnce(&Path) -> Vec<Value>) -> World {
    world_with_env(&[], jobs)
}

/// [`world`] with `env` added to the daemon's environment.
fn world_with_env(env: &[(&str, &str)], jobs: impl FnOnce(&Path) -> Vec<Value>) -> World {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scripts.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let jobs = jobs(scripts.path());
    let first = jobs[0]["name"].as_str().unwrap().to_string();
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let server = JobServer::start(ServerKind::Gearmand);
    let setup = Setup::new(
        plugins.path(),
        json!({"gearman_servers": [server.addr()], "jobs": jobs}),
    );
    let daemon = Daemon::start_with_env(&setup, env);
    server.wait_registered(&first, Duration::from_secs(20));
    World {
        server,
        setup,
        _daemon: daemon,
        _plugins: plugins,
        scripts,
    }
}

fn result_of(out: &std::process::Output) -> String {
    let t = text(out);
    t.lines()
        .find_map(|l| l.strip_prefix("result: "))
        .unwrap_or_else(|| panic!("no result in:\n{t}"))
        .to_string()
}

const REPORT_ENV: &str = "#!/bin/bash\n\
    if [ \"$PATH\" = /evil ]; then path=evil; else path=ours; fi\n\
    echo \"FAILURE - report: bash_env=${BASH_ENV-unset} env=${ENV-unset} \
    ld=${LD_PRELOAD-unset} path=$path my=${MY_VAR-unset} other=${OTHER-unset} \
    project=$ZUUL_PROJECT\" > \"$TH_RESULT_FILE\"\n";

#[test]
fn build_parameters_cannot_take_over_the_script() {
    let w = world(|dir| {
        let s = script(dir, "report.sh", REPORT_ENV);
        vec![json!({
            "name": "build:envcheck", "plugin": "shell_script", "shell_script": s,
            "timeout": 30, "pass_parameters": ["MY_VAR"]
        })]
    });
    let open = open_dir(w.scripts.path(), "open");
    let marker = open.join("evil-ran");
    let evil = script(
        w.scripts.path(),
        "evil.sh",
        &format!("touch '{}'\n", marker.display()),
    );
    let bash_env = format!("BASH_ENV={}", evil.display());
    let env = format!("ENV={}", evil.display());
    let out = enqueue(
        &w.server.addr(),
        "envcheck",
        &[
            "--param",
            &bash_env,
            "--param",
            &env,
            "--param",
            "LD_PRELOAD=/nonexistent/evil.so",
            "--param",
            "PATH=/evil",
            "--param",
            "MY_VAR=mine",
            "--param",
            "OTHER=x",
            "--param",
            "ZUUL_PROJECT=example/shop",
        ],
    );
    assert_eq!(
        result_of(&out),
        "FAILURE - report: bash_env=unset env=unset ld=unset path=ours my=mine other=unset \
         project=example/shop",
        "{}",
        text(&out)
    );
    assert!(!marker.exists(), "BASH_ENV or ENV ran the build's file");
    // The job's log names what was left out, once.
    let log = find(&w.setup.jobs_dir(), "shell_script.log");
    let log = std::fs::read_to_string(log).unwrap();
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("build parameters not passed"))
        .collect();
    assert_eq!(dropped.len(), 1, "{log}");
    assert!(
        dropped[0].ends_with(r#""BASH_ENV", "ENV", "LD_PRELOAD", "OTHER", "PATH""#),
        "{log}"
    );
}

fn find(dir: &Path, name: &str) -> PathBuf {
    find_in(dir, name).unwrap_or_else(|| panic!("no {name} under {}", dir.display()))
}

fn find_in(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if entry.file_type().unwrap().is_dir() {
            if let Some(found) = find_in(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn a_denied_name_in_pass_parameters_is_a_config_error() {
    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let setup = Setup::new(
        plugins.path(),
        json!({"jobs": [{
            "name": "build:envcheck", "plugin": "shell_script", "shell_script": "/bin/true",
            "pass_parameters": ["MY_VAR", "LD_PRELOAD", "PYTHON*"]
        }]}),
    );
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("pass_parameters[1]: LD_PRELOAD is never passed from a build"),
        "{t}"
    );
    assert!(
        t.contains("pass_parameters[2]: PYTHON* is never passed"),
        "{t}"
    );
}

#[test]
fn a_zuul_url_with_a_transport_not_allowed_is_refused_at_once() {
    let w = world(|dir| {
        let s = script(dir, "ok.sh", "#!/bin/sh\nexit 0\n");
        vec![json!({
            "name": "build:fetch", "plugin": "shell_script", "shell_script": s, "timeout": 30
        })]
    });
    for url in ["fd::7", "ext::sh"] {
        let start = Instant::now();
        let out = enqueue(
            &w.server.addr(),
            "fetch",
            &[
                "--param",
                &format!("ZUUL_URL={url}"),
                "--param",
                "ZUUL_PROJECT=example/shop",
                "--param",
                "ZUUL_REF=refs/zuul/master/Zabc",
            ],
        );
        let result = result_of(&out);
        assert!(
            result.starts_with(&format!(
                "FAILURE - could not prepare the git checkout: invalid Zuul change: ZUUL_URL \
                 {url:?} uses the git transport"
            )),
            "{result}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
}

#[test]
fn the_daemon_s_secrets_reach_neither_the_script_nor_the_job_s_process() {
    let mut open = PathBuf::new();
    let w = world_with_env(&DAEMON_ENV, |dir| {
        open = open_dir(dir, "open");
        let o = open.display();
        // The script writes its environment; in a job's child process it also hands over its
        // parent's pid (that child) and waits until the test has read that process's.
        let body = |label: &str| {
            format!(
                "#!/bin/sh\nenv | sort > '{o}/env-{label}.txt'\n\
                 if [ {label} = process ]; then\n\
                 echo $PPID > '{o}/ppid.tmp' && mv '{o}/ppid.tmp' '{o}/ppid'\n\
                 i=0; while [ ! -e '{o}/go' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
                 fi\n"
            )
        };
        ["in-process", "process"]
            .into_iter()
            .map(|isolation| {
                let s = script(dir, &format!("{isolation}.sh"), &body(isolation));
                json!({
                    "name": format!("build:secrets-{isolation}"), "plugin": "shell_script",
                    "shell_script": s, "timeout": 60, "job_isolation": isolation
                })
            })
            .collect()
    });
    let read_env = |label: &str| -> Vec<String> {
        let path = open.join(format!("env-{label}.txt"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .map(str::to_string)
            .collect()
    };

    let out = enqueue(&w.server.addr(), "secrets-in-process", &[]);
    assert_eq!(result_of(&out), "SUCCESS", "{}", text(&out));
    let env = read_env("in-process");
    assert!(
        env.contains(&"TH_TEST_ORDINARY=kept".to_string()),
        "{env:?}"
    );
    assert_eq!(leaked(&env), Vec::<String>::new(), "in-process");

    let addr = w.server.addr();
    let job = std::thread::spawn(move || enqueue(&addr, "secrets-process", &[]));
    let ppid = open.join("ppid");
    let until = Instant::now() + Duration::from_secs(30);
    while !ppid.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&ppid).unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap();
    let environ = std::fs::read(proc_dir.join("environ")).unwrap();
    std::fs::write(open.join("go"), "").unwrap();
    let out = job.join().unwrap();
    assert_eq!(result_of(&out), "SUCCESS", "{}", text(&out));
    // The script's parent is the job's child process, which holds no secret either.
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("__run-job-child"), "{cmdline:?}");
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    assert!(
        environ.contains(&"TH_TEST_ORDINARY=kept".to_string()),
        "{environ:?}"
    );
    assert_eq!(leaked(&environ), Vec::<String>::new(), "the job's process");
    let env = read_env("process");
    assert!(
        env.contains(&"TH_TEST_ORDINARY=kept".to_string()),
        "{env:?}"
    );
    assert_eq!(leaked(&env), Vec::<String>::new(), "process");
}

const REPORT_CONTAINMENT: &str = "#!/bin/bash\n\
    if (exec 3<>/dev/tcp/127.0.0.1/$TCP_PORT) 2>/dev/null; then net=yes; else net=no; fi\n\
    echo \"FAILURE - report: uid=$(id -u) data=$(ulimit -d) procs=$(ulimit -u) \
    files=$(ulimit -n) net=$net\" > \"$TH_RESULT_FILE\"\n";

#[test]
fn the_script_runs_contained_with_and_without_a_network_namespace() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: containment switches users only under a root daemon");
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let w = world(|dir| {
        let s = script(dir, "contained.sh", REPORT_CONTAINMENT);
        let limits = json!({"memory_mib": 1024, "processes": 100, "open_files": 256});
        let mut isolated = limits.clone();
        isolated["network_namespace"] = json!(true);
        vec![
            json!({
                "name": "build:contained", "plugin": "shell_script", "shell_script": s,
                "timeout": 30, "pass_parameters": ["TCP_PORT"], "containment": limits
            }),
            json!({
                "name": "build:isolated", "plugin": "shell_script", "shell_script": s,
                "timeout": 30, "pass_parameters": ["TCP_PORT"], "containment": isolated
            }),
        ]
    });
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    let param = format!("TCP_PORT={port}");
    let accepted = || {
        let mut n = 0;
        while listener.accept().is_ok() {
            n += 1;
        }
        n
    };

    let out = enqueue(&w.server.addr(), "contained", &["--param", &param]);
    assert_eq!(
        result_of(&out),
        format!("FAILURE - report: uid={nobody} data=1048576 procs=100 files=256 net=yes"),
        "{}",
        text(&out)
    );
    assert_eq!(
        accepted(),
        1,
        "the contained script reached the host's port"
    );

    let out = enqueue(&w.server.addr(), "isolated", &["--param", &param]);
    assert_eq!(
        result_of(&out),
        format!("FAILURE - report: uid={nobody} data=1048576 procs=100 files=256 net=no"),
        "{}",
        text(&out)
    );
    assert_eq!(
        accepted(),
        0,
        "the script in its own namespace reached the host"
    );
}

#[test]
fn a_stalled_git_server_fails_its_job_and_frees_the_mirror_for_the_next() {
    // A "git server" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                held.lock().unwrap().push(conn);
            }
        });
    }
    // A real upstream with the change, for the second job.
    let upstream = tempfile::tempdir().unwrap();
    let repo = upstream.path().join("example/shop");
    std::fs::create_dir_all(&repo).unwrap();
    turbo_hipster_tests::git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "base\n").unwrap();
    turbo_hipster_tests::git(&repo, &["add", "."]);
    turbo_hipster_tests::git(&repo, &["commit", "-qm", "base"]);
    let sha = turbo_hipster_tests::git(&repo, &["rev-parse", "HEAD"]);
    turbo_hipster_tests::git(&repo, &["update-ref", "refs/zuul/master/Zabc", &sha]);

    let plugins = PluginDir::new();
    plugins.add_shipped("shell_script");
    let server = JobServer::start(ServerKind::Gearmand);
    let scripts = tempfile::tempdir().unwrap();
    let s = script(scripts.path(), "ok.sh", "#!/bin/sh\nexit 0\n");
    let setup = Setup::new(
        plugins.path(),
        json!({
            "gearman_servers": [server.addr()],
            "max_concurrent_jobs": 2,
            "jobs": [{
                "name": "build:fetch", "plugin": "shell_script", "shell_script": s,
                "timeout": 60, "git_retries": 1, "git_stall_timeout": 2
            }]
        }),
    );
    let _daemon = Daemon::start(&setup);
    server.wait_registered("build:fetch", Duration::from_secs(20));

    let start = Instant::now();
    let addr = server.addr();
    let stalled = std::thread::spawn(move || {
        let out = enqueue(
            &addr,
            "fetch",
            &[
                "--param",
                &format!("ZUUL_URL=git://127.0.0.1:{port}/"),
                "--param",
                "ZUUL_PROJECT=example/shop",
                "--param",
                "ZUUL_REF=refs/zuul/master/Zabc",
            ],
        );
        (result_of(&out), start.elapsed())
    });
    // The second job for the project starts while the first holds the mirror.
    let until = Instant::now() + Duration::from_secs(10);
    while held.lock().unwrap().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!held.lock().unwrap().is_empty(), "git never connected");
    let out = enqueue(
        &server.addr(),
        "fetch",
        &[
            "--param",
            &format!("ZUUL_URL={}", upstream.path().display()),
            "--param",
            "ZUUL_PROJECT=example/shop",
            "--param",
            "ZUUL_REF=refs/zuul/master/Zabc",
        ],
    );
    let second = (result_of(&out), start.elapsed());
    let first = stalled.join().unwrap();
    assert!(
        first
            .0
            .starts_with("FAILURE - could not prepare the git checkout: git fetch of")
            && first.0.ends_with("failed: stalled: no progress for 2 s"),
        "{}",
        first.0
    );
    assert!(first.1 < Duration::from_secs(20), "{:?}", first.1);
    assert_eq!(second.0, "SUCCESS", "{}", text(&out));
    assert!(second.1 >= Duration::from_secs(2), "{:?}", second.1);
}
