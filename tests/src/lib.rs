//! The test support every crate's tests share (the host's, the plugins', and this crate's own
//! end-to-end tests): build the real daemon and plugins (and the test-only plugins under
//! `tests/fixtures`), lay them out as the daemon expects, write configs, run it; start gearmand
//! or Zuul's `gear.Server`; git repositories, scripts, the test venv. [`db_servers`] has the
//! database clients and private servers, [`gate`] the gate plugin's end-to-end world,
//! [`provisioning`] its provisioning tests' fixture.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

pub mod db_servers;
pub mod fuzz;
pub mod gate;
pub mod provisioning;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run cargo: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon binary and the shipped plugins, built once per test process.
pub struct Built {
    /// `target/debug/turbo-hipster`.
    pub daemon: PathBuf,
    /// Plugin name → its cdylib.
    pub plugins: BTreeMap<String, PathBuf>,
}

/// The cargo profile directory matching how this code was built: `release` for benchmarks,
/// `debug` for tests.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Builds (if needed) the daemon and every shipped plugin with the same profile as the tests.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = cargo();
        cmd.arg("build");
        if profile() == "release" {
            cmd.arg("--release");
        }
        cmd.args([
            "-p",
            "turbo-hipster",
            "-p",
            "shell_script",
            "-p",
            "gate_real_db_upgrade",
        ]);
        run_ok(cmd, "cargo build of the daemon and plugins");
        let dir = target_dir().join(profile());
        let mut plugins = BTreeMap::new();
        for name in ["shell_script", "gate_real_db_upgrade"] {
            plugins.insert(name.to_string(), dir.join(format!("lib{name}.so")));
        }
        Built {
            daemon: dir.join("turbo-hipster"),
            plugins,
        }
    })
}

impl Built {
    /// The cdylib of shipped plugin `name`.
    pub fn plugin(&self, name: &str) -> &Path {
        self.plugins
            .get(name)
            .unwrap_or_else(|| panic!("no shipped plugin {name}"))
    }
}

/// Test-only plugin libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fixture {
    /// `tests/fixtures/test-plugin`, behaviours picked by the job config's `mode`.
    TestPlugin,
    /// The same plugin with a root module that panics while loading.
    PanicOnLoad,
    /// The same plugin built against a deliberately incompatible interface.
    IncompatibleAbi,
    /// A shared library that is not a plugin.
    NotAPlugin,
}

/// Builds a fixture library (once per test process) and returns its path.
pub fn fixture(which: Fixture) -> PathBuf {
    static CACHE: OnceLock<Mutex<BTreeMap<Fixture, PathBuf>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.get(&which) {
        return p.clone();
    }
    let (crate_dir, lib, variant, features, rustflags) = match which {
        Fixture::TestPlugin => ("test-plugin", "th_test_plugin", "default", None, None),
        Fixture::PanicOnLoad => (
            "test-plugin",
            "th_test_plugin",
            "default",
            Some("panic-on-load"),
            None,
        ),
        Fixture::IncompatibleAbi => (
            "test-plugin",
            "th_test_plugin",
            "incompatible",
            None,
            Some("--cfg th_sdk_incompatible_abi"),
        ),
        Fixture::NotAPlugin => ("not-a-plugin", "th_not_a_plugin", "default", None, None),
    };
    let manifest_dir = root().join("tests/fixtures").join(crate_dir);
    // Same dependency versions as the workspace, without a resolve.
    let _ = std::fs::copy(root().join("Cargo.lock"), manifest_dir.join("Cargo.lock"));
    let target = target_dir().join("test-fixtures").join(variant);
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS");
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    if profile() == "release" {
        cmd.arg("--release");
    }
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    run_ok(cmd, &format!("building fixture {which:?}"));
    let built = target.join(profile()).join(format!("lib{lib}.so"));
    let kept = target_dir()
        .join("test-fixtures")
        .join(format!("{which:?}-{}.so", profile()));
    std::fs::copy(&built, &kept).unwrap();
    guard.insert(which, kept.clone());
    kept
}

/// What an operator may have in the daemon's environment: the object store's keys
/// (`publish_logs`), an administrator's database passwords; and one ordinary variable.
pub const DAEMON_ENV: [(&str, &str); 8] = [
    ("AWS_ACCESS_KEY_ID", "AKIA-DAEMON-LEAK"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-daemon-leak"),
    ("AWS_SESSION_TOKEN", "aws-token-daemon-leak"),
    ("PGPASSWORD", "pg-password-daemon-leak"),
    ("PGPASSFILE", "/root/pgpass-daemon-leak"),
    ("PGSERVICEFILE", "/root/pg_service-daemon-leak"),
    ("MYSQL_PWD", "mysql-password-daemon-leak"),
    ("TH_TEST_ORDINARY", "kept"),
];

/// The `NAME=value` entries of an environment (lines of `env`, or NUL-separated as in
/// `/proc/PID/environ`) that hold one of [`DAEMON_ENV`]'s secrets.
pub fn leaked(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| {
            e.contains("daemon-leak")
                || DAEMON_ENV[..7]
                    .iter()
                    .any(|(name, _)| e.starts_with(&format!("{name}=")))
        })
        .cloned()
        .collect()
}

/// Four jobs of the test plugin, for a daemon's `jobs`: `build:ok` (succeeds), `build:fail`,
/// `build:wait` (two minutes, for a stop or a cancel) and `build:short` (1.5 s).
pub fn test_plugin_jobs() -> Value {
    serde_json::json!([
        {"name": "build:ok", "plugin": "test_plugin"},
        {"name": "build:fail", "plugin": "test_plugin", "mode": "fail"},
        {"name": "build:wait", "plugin": "test_plugin", "mode": "wait", "wait_ms": 120000},
        {"name": "build:short", "plugin": "test_plugin", "mode": "wait", "wait_ms": 1500}
    ])
}

/// A plugin directory laid out as the daemon expects: `<dir>/<name>/libtask.so`.
pub struct PluginDir {
    pub dir: tempfile::TempDir,
}

impl PluginDir {
    /// An empty plugin dir.
    pub fn new() -> Self {
        PluginDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Installs `library` as plugin `name`.
    pub fn add(&self, name: &str, library: &Path) -> &Self {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(library, d.join("libtask.so")).unwrap();
        self
    }

    /// Installs shipped plugin `name` (built by [`built`]) under its own name.
    pub fn add_shipped(&self, name: &str) -> &Self {
        self.add(name, built().plugin(name))
    }

    /// Writes arbitrary bytes as plugin `name`'s library.
    pub fn add_bytes(&self, name: &str, bytes: &[u8]) -> &Self {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("libtask.so"), bytes).unwrap();
        self
    }

    /// The directory to name in `plugin_dirs`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for PluginDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A scratch installation: a config file, job and git dirs, in one temp dir.
pub struct Setup {
    /// The temp dir holding the config, the job and git dirs; removed on drop.
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Writes `config.json` with the given keys, plus defaults for the working dirs and
    /// `plugin_dirs` pointing at `plugins`.
    pub fn new(plugins: &Path, extra: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = serde_json::json!({
            "jobs_working_dir": dir.path().join("jobs"),
            "git_working_dir": dir.path().join("git"),
            "plugin_dirs": [plugins],
        });
        if let (Some(obj), Value::Object(extra)) = (config.as_object_mut(), extra) {
            obj.extend(extra);
        }
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        Setup { dir, config: path }
    }

    /// Runs `turbo-hipster -c CONFIG ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&built().daemon)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// The jobs working dir.
    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.path().join("jobs")
    }
}

/// stdout + stderr as one string, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs git with a fixed identity in `dir`, panicking on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=master",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes an executable script (mode 755) `dir/name` holding `body`; its path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Every file under `dir` (recursively) whose bytes contain `marker`.
pub fn files_containing(dir: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            found.extend(files_containing(&p, marker));
        } else if String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).contains(marker) {
            found.push(p);
        }
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Where scripts/setup-test-env.sh makes the test venv (gear, alembic, SQLAlchemy, drivers):
/// `$TH_TEST_VENV`, else `~/.cache/turbo-hipster/test-venv`.
pub fn test_venv_dir() -> PathBuf {
    std::env::var_os("TH_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/turbo-hipster/test-venv")
        })
}

/// The Python of the test venv.
///
/// # Panics
/// When the venv is missing: the suite needs it, run `scripts/setup-test-env.sh`.
pub fn test_python() -> PathBuf {
    let py = test_venv_dir().join("bin/python3");
    assert!(
        py.exists(),
        "{} not found: run `bash scripts/setup-test-env.sh` first",
        py.display()
    );
    py
}

/// Which Gearman server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Debian's gearmand.
    Gearmand,
    /// Zuul v2's own server, `gear.Server` from the `gear` package.
    Gear,
}

/// A Gearman job server on a free port, stopped on drop; can be restarted on the same port.
pub struct JobServer {
    /// gearmand or Zuul's `gear.Server`.
    pub kind: ServerKind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

fn gearmand_path() -> PathBuf {
    ["/usr/sbin/gearmand", "/usr/local/sbin/gearmand"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("gearmand not installed: run `bash scripts/setup-test-env.sh` first")
        })
}

impl JobServer {
    /// Starts a server of `kind` on a free port and waits until it answers.
    pub fn start(kind: ServerKind) -> Self {
        let mut s = JobServer {
            kind,
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        use std::process::Stdio;
        let child = match self.kind {
            ServerKind::Gearmand => Command::new(gearmand_path())
                .args([
                    "-L",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "--log-file",
                ])
                .arg(self.dir.path().join("gearmand.log"))
                .args(["--verbose", "WARNING"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            ServerKind::Gear => Command::new(test_python())
                .args([
                    "-c",
                    "import sys, time, gear\n\
                     s = gear.Server(port=int(sys.argv[1]), host='127.0.0.1')\n\
                     while True: time.sleep(60)\n",
                    &self.port.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        self.child = Some(child);
        let start = std::time::Instant::now();
        while admin(self.port, "status").is_none() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(15),
                "{:?} on port {} did not start",
                self.kind,
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lines of the admin `status`: (function, total, running, workers).
    pub fn status(&self) -> Vec<(String, u64, u64, u64)> {
        admin(self.port, "status")
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                if f.len() < 4 {
                    return None;
                }
                Some((
                    f[0].to_string(),
                    f[1].parse().ok()?,
                    f[2].parse().ok()?,
                    f[3].parse().ok()?,
                ))
            })
            .collect()
    }

    /// Waits until `function` has `running` jobs running.
    pub fn wait_running(&self, function: &str, running: u64, within: std::time::Duration) {
        let start = std::time::Instant::now();
        while !self
            .status()
            .iter()
            .any(|(f, _, r, _)| f == function && *r == running)
        {
            assert!(
                start.elapsed() < within,
                "{function} never had {running} running on {:?}: {:?}",
                self.kind,
                self.status()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits until `function` has a worker.
    pub fn wait_registered(&self, function: &str, within: std::time::Duration) {
        let start = std::time::Instant::now();
        loop {
            if self
                .status()
                .iter()
                .any(|(f, _, _, w)| f == function && *w > 0)
            {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{function} not registered on {:?} within {within:?}: {:?}",
                self.kind,
                self.status()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Makes a test of each named scenario (a `fn(ServerKind)` of the calling module) against both
/// servers: `gearmand::<scenario>` and `gear_server::<scenario>`.
#[macro_export]
macro_rules! on_both_servers {
    ($($scenario:ident),* $(,)?) => {
        mod gearmand {
            $(#[test] fn $scenario() { super::$scenario($crate::ServerKind::Gearmand) })*
        }
        mod gear_server {
            $(#[test] fn $scenario() { super::$scenario($crate::ServerKind::Gear) })*
        }
    };
}

impl Drop for JobServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One admin command; the answer's lines up to the `.` line (None if unreachable).
pub fn admin(port: u16, command: &str) -> Option<Vec<String>> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .ok()?;
    s.write_all(format!("{command}\n").as_bytes()).ok()?;
    let mut lines = Vec::new();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line == "." {
            return Some(lines);
        }
        if command.starts_with("cancel") || line.starts_with("OK") || line.starts_with("ERR") {
            return Some(vec![line]);
        }
        lines.push(line);
    }
}

/// The daemon running in the foreground as a child, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    pub child: std::process::Child,
    /// The file its stderr goes to (read it when a test fails).
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `turbo-hipster -c config`.
    pub fn start(setup: &Setup) -> Self {
        Self::start_with_env(setup, &[])
    }

    /// [`Daemon::start`] with `env` (name, value) added to the daemon's environment (the
    /// test's own stays untouched).
    pub fn start_with_env(setup: &Setup, env: &[(&str, &str)]) -> Self {
        let log = setup.dir.path().join(format!("daemon-{}.log", free_port()));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(&built().daemon)
            .arg("-c")
            .arg(&setup.config)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("TH_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle` (the daemon writes its log a few milliseconds
    /// late, in batches); false after `within`.
    pub fn wait_log(&self, needle: &str, within: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if start.elapsed() > within {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to `within` for the exit status.
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() > within {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate(std::time::Duration::from_secs(5));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `turbo-hipster enqueue JOB --server ADDR ARGS...`.
pub fn enqueue(server: &str, job: &str, args: &[&str]) -> Output {
    Command::new(&built().daemon)
        .args(["enqueue", job, "--server", server])
        .args(args)
        .output()
        .unwrap()
}

/// Enqueues `gate-real-db-upgrade` on the Gearman server `server` for a change of
/// `example/shop` (`ZUUL_URL` `repos`, `ZUUL_REF` `zuul_ref`, as [`example_repo`] makes them)
/// with the `extra` parameters (name, value), waiting up to `timeout` seconds.
pub fn enqueue_example_change(
    server: &str,
    repos: &Path,
    zuul_ref: &str,
    extra: &[(&str, &str)],
    timeout: u32,
) -> Output {
    let mut args: Vec<String> = Vec::new();
    for (name, value) in extra {
        args.push("--param".into());
        args.push(format!("{name}={value}"));
    }
    for param in [
        "ZUUL_PROJECT=example/shop".to_string(),
        format!("ZUUL_URL={}", repos.display()),
        format!("ZUUL_REF={zuul_ref}"),
    ] {
        args.push("--param".into());
        args.push(param);
    }
    args.push("--timeout".into());
    args.push(timeout.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    enqueue(server, "gate-real-db-upgrade", &args)
}

/// A small tmpfs of the test's own, unmounted (lazily) on drop: a disk that fills up. Writable
/// by every user (mode 1777, like /tmp), since contained scripts run as `nobody`. Mounting needs
/// root: `None` (after saying `SKIPPED`) where it is not permitted.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `1m`).
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=1777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs (the test needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SmallDisk { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A git repository of the example project (`etc/example/project`) at `<dir>/example/shop`,
/// with a proposed change adding `migrations/<file>` holding `sql`, published on a Zuul ref as
/// Zuul's merger does (the branch stays at the commit before the change). Returns the ref.
pub fn example_change_in(dir: &Path, file: &str, sql: &str) -> String {
    let repo = dir.join("example/shop");
    std::fs::create_dir_all(repo.join("migrations")).unwrap();
    for f in std::fs::read_dir(root().join("etc/example/project/migrations")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), repo.join("migrations").join(f.file_name())).unwrap();
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "the shop so far"]);
    std::fs::write(repo.join("migrations").join(file), sql).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "the proposed change"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let zuul_ref = format!("refs/zuul/master/Z{}", &sha[..12]);
    git(&repo, &["update-ref", &zuul_ref, &sha]);
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);
    zuul_ref
}

/// A copy of the example datasets (`etc/example/datasets`) with `provisioning: reload`: every
/// run's database on the configured server itself, as tests of that server's databases need
/// (leftovers, a server killed mid-migration); MariaDB's fast path would give each run a
/// private server of its own. Use it as the job's `datasets_dir`.
pub fn example_datasets_reloading() -> tempfile::TempDir {
    let datasets = tempfile::tempdir().unwrap();
    let example = datasets.path().join("example");
    std::fs::create_dir_all(&example).unwrap();
    let from = root().join("etc/example/datasets/example");
    std::fs::copy(from.join("seed.sql"), example.join("seed.sql")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    config["provisioning"] = serde_json::json!("reload");
    std::fs::write(example.join("config.json"), config.to_string()).unwrap();
    datasets
}

/// [`example_change_in`] in a new temporary directory (the git base URL for `ZUUL_URL`), with
/// the change as `migrations/004_proposed_change.sql`.
pub fn example_repo(change_sql: &str) -> (tempfile::TempDir, String) {
    let repos = tempfile::tempdir().unwrap();
    let zuul_ref = example_change_in(repos.path(), "004_proposed_change.sql", change_sql);
    (repos, zuul_ref)
}
