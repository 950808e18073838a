//! Support for the end-to-end tests: build the real daemon and plugins (and the test-only
//! plugins under `tests/fixtures`), lay them out as the daemon expects, write configs, run it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared` beside the checkout (real files from the original project).
pub fn shared() -> PathBuf {
    root().join("../shared")
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

/// Builds (if needed) the daemon and every shipped plugin with the same profile as the tests.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = cargo();
        cmd.args([
            "build",
            "-p",
            "turbo-hipster",
            "-p",
            "shell_script",
            "-p",
            "gate_real_db_upgrade",
        ]);
        run_ok(cmd, "cargo build of the daemon and plugins");
        let dir = target_dir().join("debug");
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
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    run_ok(cmd, &format!("building fixture {which:?}"));
    let built = target.join("debug").join(format!("lib{lib}.so"));
    let kept = target_dir()
        .join("test-fixtures")
        .join(format!("{which:?}.so"));
    std::fs::copy(&built, &kept).unwrap();
    guard.insert(which, kept.clone());
    kept
}

/// A plugin directory laid out as the daemon expects: `<dir>/<name>/libtask.so`.
pub struct PluginDir {
    /// The temp dir.
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

    /// Writes arbitrary bytes as plugin `name`'s library.
    pub fn add_bytes(&self, name: &str, bytes: &[u8]) -> &Self {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("libtask.so"), bytes).unwrap();
        self
    }

    /// The directory.
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
    /// Holds everything.
    pub dir: tempfile::TempDir,
    /// The config file.
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
