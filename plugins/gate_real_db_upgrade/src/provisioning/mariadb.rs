//! MariaDB golden copies: a stopped data directory per dataset and seed checksum, and for
//! each run a private `mariadbd` on a copy of it ([`crate::engine::PrivateServer`]).
//!
//! Layout under the state directory: `mariadb/<golden>/data/` (the datadir, shut down
//! cleanly) and `mariadb/<golden>/th_golden.json` (the server version that made it and the
//! database holding the seed). The golden copy is built as `mariadb/<golden>_b<digits>/`
//! (claimed: a killed build is removed at the next start) by a private server that loads
//! the seed and shuts down; the marker is written, then the directory renamed: a directory
//! with the golden name is complete. No server is ever started on it; runs start theirs on
//! a copy in `mariadb-runs/<run>_<digits>/` (a reflink where the filesystem can, else a plain
//! copy), removed when the run ends. A golden copy made by another server version is stale:
//! it is built again.
//!
//! Measured choice (see `docs/performance.md`): the alternative, transportable tablespaces
//! into the configured server, was as fast but needs the server's datadir local and
//! writable by the worker, one `FLUSH TABLES … FOR EXPORT` session per copy and
//! `DISCARD`/`IMPORT TABLESPACE` per table (views, triggers and routines by hand); a private
//! server needs only the programs and gives each run a cold buffer pool and counters of its
//! own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turbo_hipster_sdk::support::process::Cancellation;

use super::copy::{copy_tree, CopyKind};
use crate::dataset::Dataset;
use crate::engine::{Binaries, Endpoint, EngineError, Instance, PrivateServer, Profile, Server};

/// Golden copies' directory under the state directory.
pub const GOLDEN_DIR: &str = "mariadb";
/// Runs' instances' directory under the state directory.
pub const RUNS_DIR: &str = "mariadb-runs";
/// The marker in a golden copy's directory.
const MARKER: &str = "th_golden.json";
/// The longest MariaDB database name.
const DATABASE_MAX: usize = 64;

/// What a golden copy's marker says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// The server version (`x.y.z`) that made the datadir.
    pub version: String,
    /// The database holding the seed.
    pub database: String,
}

/// The local programs and the configured server's profile: what a private server needs.
#[derive(Debug, Clone)]
pub struct Host {
    binaries: &'static Binaries,
    profile: Profile,
}

/// Why no private server can stand in for `server`, or what one needs: MariaDB's programs
/// on this host, the configured server on this host too (a remote one may differ in ways a
/// local copy would not show) and of the very same version.
///
/// # Errors
/// The reason, for the dataset's log.
pub fn probe(server: &Server) -> Result<Host, String> {
    let binaries = Binaries::find()?;
    let ep = server
        .endpoint()
        .ok_or_else(|| "not a MariaDB server".to_string())?;
    if ep.socket.is_none() && !is_local(&ep.host) {
        return Err(format!(
            "the server {} is not on this host (a private server would not be the same server)",
            ep.host
        ));
    }
    let profile = server
        .profile()
        .map_err(|e| format!("cannot read the server's version: {e}"))?;
    if !profile.mariadb || profile.version != binaries.version {
        return Err(format!(
            "the server is {} {} and this host's {} is MariaDB {}",
            if profile.mariadb { "MariaDB" } else { "MySQL" },
            profile.version,
            binaries.server.display(),
            binaries.version
        ));
    }
    Ok(Host { binaries, profile })
}

impl Host {
    /// The local server's version (`x.y.z`).
    pub fn version(&self) -> &str {
        &self.binaries.version
    }
}

fn is_local(host: &str) -> bool {
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// The golden copy's directory.
pub fn golden_dir(state: &Path, golden: &str) -> PathBuf {
    state.join(GOLDEN_DIR).join(golden)
}

/// The golden copy's marker when it is complete and made by `version`.
pub fn ready(state: &Path, golden: &str, version: &str) -> Option<Marker> {
    let text = std::fs::read(golden_dir(state, golden).join(MARKER)).ok()?;
    serde_json::from_slice::<Marker>(&text)
        .ok()
        .filter(|m| m.version == version)
}

/// The names in the golden copies' directory.
pub fn golden_names(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join(GOLDEN_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Removes a golden copy's directory (missing is fine).
///
/// # Errors
/// It cannot be removed.
pub fn remove(state: &Path, golden: &str) -> Result<(), EngineError> {
    let dir = golden_dir(state, golden);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Other(format!(
            "cannot remove {}: {e}",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The database a golden copy holds the seed in: the dataset's `database` (or name),
/// characters other than `a-z0-9` as `_`.
fn seed_database(dataset: &Dataset) -> String {
    let source = if dataset.database.is_empty() {
        &dataset.name
    } else {
        &dataset.database
    };
    crate::engine::name_part(source)
        .chars()
        .take(DATABASE_MAX)
        .collect()
}

/// A directory being filled, removed with its claim unless [`Scratch::keep`].
struct Scratch {
    dir: PathBuf,
    claim: Option<PathBuf>,
    armed: bool,
}

impl Scratch {
    fn new(dir: PathBuf, claims: Option<&Path>) -> Self {
        let socket = dir.join("mariadbd.sock");
        let claim = claims.and_then(|c| crate::leftovers::claim_instance(c, &dir, &socket, None));
        Scratch {
            dir,
            claim,
            armed: true,
        }
    }

    /// From now on the private server started on it cleans up.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(claim) = &self.claim {
            turbo_hipster_sdk::support::owner::release(claim);
        }
    }
}

/// What a private server of `dataset` on `dir` is.
fn instance<'a>(host: &'a Host, dataset: &Dataset, dir: PathBuf) -> Instance<'a> {
    let ep = Endpoint::resolve(dataset.engine, &dataset.connection);
    let (user, password) = ep.map(|e| (e.user, e.password)).unwrap_or_default();
    Instance {
        binaries: host.binaries,
        dir,
        engine: dataset.engine,
        profile: &host.profile,
        user,
        password,
        via_socket: dataset.connection.socket.is_some(),
    }
}

/// Builds golden copy `golden` of `dataset` (under the caller's exclusive lock) through the
/// temporary directory `temporary`.
///
/// # Errors
/// Installing, starting, loading the seed (as a reload would fail), shutting down, renaming.
pub fn build(
    host: &Host,
    state: &Path,
    golden: &str,
    temporary: &str,
    dataset: &Dataset,
    claims: Option<&Path>,
    cancel: &dyn Cancellation,
) -> Result<(), EngineError> {
    let io = |what: &str, e: std::io::Error| EngineError::Other(format!("{what}: {e}"));
    let parent = state.join(GOLDEN_DIR);
    std::fs::create_dir_all(&parent).map_err(|e| io(&parent.display().to_string(), e))?;
    let dir = parent.join(temporary);
    let scratch = Scratch::new(dir.clone(), claims);
    let instance = instance(host, dataset, dir.clone());
    instance.install()?;
    let mut private = instance.start(claims, cancel)?;
    scratch.keep();
    let database = seed_database(dataset);
    private
        .server()
        .create_from_seed_cancellable(&database, &dataset.seed, cancel)?;
    private.shut_down()?;
    for runtime in ["init.sql", "error.log", "mariadbd.pid", "mariadbd.sock"] {
        let _ = std::fs::remove_file(dir.join(runtime));
    }
    let marker = Marker {
        version: host.binaries.version.clone(),
        database,
    };
    let text = serde_json::to_vec(&marker).map_err(|e| EngineError::Other(e.to_string()))?;
    std::fs::write(dir.join(MARKER), text).map_err(|e| io("writing the marker", e))?;
    remove(state, golden)?;
    std::fs::rename(&dir, golden_dir(state, golden))
        .map_err(|e| io(&format!("renaming {} to {golden}", dir.display()), e))
    // `private` goes now: its directory has moved, its claim is released.
}

/// A run's private server, on a copy of the golden copy.
#[derive(Debug)]
pub struct PrivateRun {
    /// The server (dropping it ends it and removes its files).
    pub server: PrivateServer,
    /// The database holding the seed.
    pub database: String,
    /// How the datadir was copied.
    pub copy: CopyKind,
}

/// Copies golden copy `golden` for run `run` and starts a private server on the copy.
///
/// # Errors
/// The copy (a full disk is [`EngineError::Unavailable`]) or the start failed.
pub fn start_run(
    host: &Host,
    state: &Path,
    golden: &str,
    run: &str,
    dataset: &Dataset,
    claims: Option<&Path>,
    cancel: &dyn Cancellation,
) -> Result<PrivateRun, EngineError> {
    let marker = ready(state, golden, &host.binaries.version).ok_or_else(|| {
        EngineError::Other(format!("the golden copy {golden} is gone or incomplete"))
    })?;
    let parent = state.join(RUNS_DIR);
    let dir = parent.join(format!("{run}_{}", crate::engine::random_digits()));
    let scratch = Scratch::new(dir.clone(), claims);
    let from = golden_dir(state, golden).join("data");
    let copy = std::fs::create_dir_all(&parent)
        .and_then(|()| std::fs::create_dir(&dir))
        .and_then(|()| copy_tree(&from, &dir.join("data")))
        .map_err(|e| {
            let message = format!("copying {} to {}: {e}", from.display(), dir.display());
            if e.raw_os_error() == Some(libc::ENOSPC) {
                EngineError::Unavailable(format!("disk full: {message}"))
            } else {
                EngineError::Other(message)
            }
        })?;
    let server = instance(host, dataset, dir).start(claims, cancel)?;
    scratch.keep();
    Ok(PrivateRun {
        server,
        database: marker.database,
        copy,
    })
}
