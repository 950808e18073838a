//! How a run gets its database: by reloading the seed (slow: the dump is replayed) or by a
//! fast copy of a golden copy loaded once per dataset and seed checksum.
//!
//! A golden copy is named `th_golden_<dataset>_<first 12 hex of the seed's sha256>` (the
//! dataset's name lowercased, other characters than `a-z0-9` as `_`, at most 30 of them):
//! - PostgreSQL: a database of that name on the dataset's server, sealed with
//!   `datallowconn = false` (nobody can connect, so no run can write it and `CREATE DATABASE
//!   … TEMPLATE` never finds a session on it). It is loaded under a temporary name claimed like
//!   a run database ([`crate::leftovers`], so a killed build is dropped at the next start),
//!   then sealed and renamed: a database with the golden name is always complete. Each run
//!   gets `CREATE DATABASE <run> TEMPLATE <golden> STRATEGY FILE_COPY` (`WAL_LOG` below
//!   256 MB, which skips FILE_COPY's checkpoint: see [`Server::clone_database`] for the
//!   figures).
//! - SQLite: the file `<state>/sqlite/<golden>.sqlite`, read-only, renamed into place once
//!   loaded; each run gets a reflink or plain copy of it.
//! - MariaDB: a stopped data directory `<state>/mariadb/<golden>/`, built by a private
//!   `mariadbd` that loads the seed and shuts down; each run gets its own private server on a
//!   copy of it, and the run's tool and queries go to that server ([`mariadb`]). It needs
//!   MariaDB's programs on this host and the configured server local and of the same version;
//!   otherwise `auto` reloads.
//!
//! The state directory is `<jobs_working_dir>/.gate_real_db_upgrade-golden` (hidden: the
//! host's scan of the jobs dir skips it): the seed checksum cache (`sums/`), one lock file per
//! dataset (shared while cloning, exclusive while building: two jobs needing the same golden
//! copy build it once, the second waits and says so in its log) and the SQLite golden files.
//! Building a golden copy drops the dataset's golden copies of other checksums (stale).
//!
//! `provisioning` (dataset key): `auto` (default) uses the fast path where there is one and
//! falls back to reloading when it fails for a reason other than the seed (say, no right to
//! create databases from a template); `clone` insists on the fast path; `reload` always
//! reloads.

mod checksum;
mod copy;
mod lock;
pub mod mariadb;
mod registry;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use turbo_hipster_sdk::support::process::Cancellation;
use turbo_hipster_sdk::HostSettings;

use crate::dataset::{Dataset, Engine};
use crate::engine::{EngineError, GoldenState, Server};

pub use checksum::{hash_file, seed_checksum};
pub use copy::{copy_tree, reflink_or_copy, CopyKind};
pub use mariadb::PrivateRun;

/// The state directory's name under `jobs_working_dir`.
pub const STATE_DIR: &str = ".gate_real_db_upgrade-golden";
/// Every golden copy's name starts with this.
pub const GOLDEN_PREFIX: &str = "th_golden_";
/// How many characters of the dataset's name a golden copy's name keeps.
const NAME_PART_MAX: usize = 30;
/// How many hex digits of the checksum a golden copy's name keeps.
const SUM_LEN: usize = 12;

pub use crate::dataset::{Cache, Provisioning};

/// How a run's database was made, for the log and `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provisioned {
    /// `reload`, `clone` (PostgreSQL template), `reflink` or `copy` (SQLite file).
    pub method: String,
    /// How long it took, golden copy building (if any) and waits included.
    pub seconds: f64,
    /// The golden copy used, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden: Option<String>,
    /// Of `seconds`, the time spent waiting for or building the golden copy: a cost shared
    /// by every run of the dataset, not counted against this run's time limit.
    #[serde(skip)]
    pub shared_seconds: f64,
}

/// The state directory for `host`; `None` without a jobs dir.
pub fn state_dir(host: &HostSettings) -> Option<PathBuf> {
    (!host.jobs_working_dir.as_os_str().is_empty()).then(|| host.jobs_working_dir.join(STATE_DIR))
}

/// What [`Provider::provide`] made: how, and for MariaDB the run's private server, which
/// holds the run's database (the run connects there, not to the configured server).
#[derive(Debug)]
pub struct Provided {
    /// How the database was made.
    pub done: Provisioned,
    /// The private server, when the run has one.
    pub private: Option<PrivateRun>,
}

impl std::ops::Deref for Provided {
    type Target = Provisioned;

    fn deref(&self) -> &Provisioned {
        &self.done
    }
}

/// What one way of making a database gave: the method, the golden copy used, the private
/// server started, the time spent waiting for or building the shared golden copy.
type Made = (&'static str, Option<String>, Option<PrivateRun>, Duration);

/// The golden copy's name for dataset `dataset` and seed checksum `sum` (hex).
pub fn golden_name(dataset: &str, sum: &str) -> String {
    format!(
        "{}{}",
        golden_prefix(dataset),
        &sum[..SUM_LEN.min(sum.len())]
    )
}

/// `th_golden_<dataset part>_`.
fn golden_prefix(dataset: &str) -> String {
    let part: String = crate::engine::name_part(dataset)
        .chars()
        .take(NAME_PART_MAX)
        .collect();
    format!("{GOLDEN_PREFIX}{part}_")
}

/// What a database named like the dataset's golden copies is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoldenName {
    /// `<prefix><12 hex>`: a golden copy (of some checksum).
    Sealed,
    /// `<prefix><12 hex>_b<digits>`: a golden copy being built, or a killed build's leftover.
    Build,
}

/// What `name` is among the golden copies of the dataset with `prefix`, of any checksum;
/// `None`: not one of them.
fn golden_kind(prefix: &str, name: &str) -> Option<GoldenName> {
    let rest = name.strip_prefix(prefix)?;
    let (sum, tail) = rest.split_at(SUM_LEN.min(rest.len()));
    if sum.len() != SUM_LEN || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if tail.is_empty() {
        return Some(GoldenName::Sealed);
    }
    tail.strip_prefix("_b")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .then_some(GoldenName::Build)
}

/// What a run's database is made with.
pub struct Provider<'a> {
    /// The run's server.
    pub server: &'a Server,
    /// The dataset.
    pub dataset: &'a Dataset,
    /// The state directory ([`state_dir`]); `None`: no golden copies, reload.
    pub state: Option<&'a Path>,
    /// Where a golden copy being built is claimed ([`crate::leftovers`]).
    pub claims: Option<&'a Path>,
    /// The job's cancellation.
    pub cancel: &'a dyn Cancellation,
    /// Writes a note to the dataset's log.
    pub note: &'a (dyn Fn(&str) + Sync),
}

impl Provider<'_> {
    /// Creates database `db` (which must not exist) with the seed's contents, by the method
    /// the dataset's `provisioning` asks for. On MariaDB's fast path the database is the
    /// private server's ([`Provided::private`]) and `db` names only the instance.
    ///
    /// # Errors
    /// As [`Server::create_from_seed_cancellable`]; with `clone`, also the fast path's own.
    pub fn provide(&self, db: &str) -> Result<Provided, EngineError> {
        let started = Instant::now();
        let wanted = self.dataset.provisioning;
        let (method, golden, private, shared) = match (wanted, self.fast_state()) {
            (Provisioning::Reload, _) => self.reload(db)?,
            (Provisioning::Clone, Err(why)) => return Err(EngineError::Other(why)),
            (Provisioning::Auto, Err(why)) => {
                (self.note)(&format!("provisioning: reloading the seed ({why})"));
                self.reload(db)?
            }
            (_, Ok(state)) => match self.fast(state, db) {
                Ok(done) => done,
                Err(e) if wanted == Provisioning::Auto && may_fall_back(&e, self.cancel) => {
                    (self.note)(&format!(
                        "provisioning: the fast path failed ({e}); reloading the seed instead"
                    ));
                    self.reload(db)?
                }
                Err(e) => return Err(e),
            },
        };
        Ok(Provided {
            done: Provisioned {
                method: method.to_string(),
                seconds: started.elapsed().as_secs_f64(),
                golden,
                shared_seconds: shared.as_secs_f64(),
            },
            private,
        })
    }

    /// Builds the dataset's golden copy if it is missing (or always, with `rebuild`) and drops
    /// its stale ones; the golden copy's name.
    ///
    /// # Errors
    /// The dataset has no fast path, or building failed.
    pub fn prepare(&self, rebuild: bool) -> Result<String, EngineError> {
        let state = self.fast_state().map_err(EngineError::Other)?;
        let (golden, lock_path) = self.golden_and_lock(state)?;
        let _held = self.lock(&lock_path, lock::Mode::Exclusive, &golden)?;
        if rebuild {
            self.remove_golden(state, &golden)?;
        }
        self.ensure_golden(state, &golden)?;
        Ok(golden)
    }

    /// The state directory when the fast path applies, else why not.
    fn fast_state(&self) -> Result<&Path, String> {
        let engine = self.dataset.engine;
        if !Provisioning::fast_path_for(engine) {
            return Err(format!("{} has no fast path", engine.label()));
        }
        let state = self
            .state
            .ok_or_else(|| "no jobs_working_dir to keep golden copies in".to_string())?;
        if self.is_mariadb() {
            mariadb::probe(self.server)?;
        }
        Ok(state)
    }

    fn is_mariadb(&self) -> bool {
        matches!(self.dataset.engine, Engine::MariaDb | Engine::MySql)
    }

    /// The local programs and server profile for a private server.
    fn host(&self) -> Result<mariadb::Host, EngineError> {
        mariadb::probe(self.server).map_err(EngineError::Other)
    }

    fn reload(&self, db: &str) -> Result<Made, EngineError> {
        self.server
            .create_from_seed_cancellable(db, &self.dataset.seed, self.cancel)?;
        Ok(("reload", None, None, Duration::ZERO))
    }

    /// The golden copy (built first if need be), then a copy of it as `db`.
    fn fast(&self, state: &Path, db: &str) -> Result<Made, EngineError> {
        let (golden, lock_path) = self.golden_and_lock(state)?;
        let waiting = Instant::now();
        {
            let _held = self.lock(&lock_path, lock::Mode::Shared, &golden)?;
            if self.golden_ready(state, &golden)? {
                let shared = waiting.elapsed();
                let (method, private) = self.copy_golden(state, &golden, db)?;
                return Ok((method, Some(golden), private, shared));
            }
        }
        let _held = self.lock(&lock_path, lock::Mode::Exclusive, &golden)?;
        self.ensure_golden(state, &golden)?;
        let shared = waiting.elapsed();
        let (method, private) = self.copy_golden(state, &golden, db)?;
        Ok((method, Some(golden), private, shared))
    }

    /// The golden copy's name and its lock file, from the seed's (cached) checksum.
    fn golden_and_lock(&self, state: &Path) -> Result<(String, PathBuf), EngineError> {
        let seed = &self.dataset.seed;
        let hashing = Instant::now();
        let sum = seed_checksum(&seed.path, &state.join("sums")).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::SeedMissing(seed.path.clone())
            } else {
                EngineError::SeedLoad(format!("cannot read seed {}: {e}", seed.path.display()))
            }
        })?;
        if hashing.elapsed() > Duration::from_secs(1) {
            (self.note)(&format!(
                "provisioning: seed checksum computed in {:.1} s (cached from now on)",
                hashing.elapsed().as_secs_f64()
            ));
        }
        let prefix = golden_prefix(&self.dataset.name);
        let lock_path = state.join(format!("{}{}.lock", prefix, self.dataset.engine.name()));
        Ok((golden_name(&self.dataset.name, &sum), lock_path))
    }

    fn lock(&self, path: &Path, mode: lock::Mode, golden: &str) -> Result<lock::Held, EngineError> {
        let progress = |waited: Duration| {
            (self.note)(&format!(
                "provisioning: waiting for the golden copy {golden} \
                 (another job is building or using it): {} s",
                waited.as_secs()
            ))
        };
        lock::acquire(path, mode, self.cancel, &progress).map_err(|e| match e {
            lock::LockError::Cancelled(_) => EngineError::Other(e.to_string()),
            lock::LockError::Io { .. } => EngineError::Other(format!("provisioning: {e}")),
        })
    }

    fn sqlite_golden_dir(state: &Path) -> PathBuf {
        state.join("sqlite")
    }

    fn golden_server(&self, state: &Path) -> Server {
        match self.dataset.engine {
            Engine::Sqlite => Server::new(
                Engine::Sqlite,
                self.dataset.connection.clone(),
                Self::sqlite_golden_dir(state),
            ),
            engine => Server::new(engine, self.dataset.connection.clone(), PathBuf::new()),
        }
    }

    fn golden_ready(&self, state: &Path, golden: &str) -> Result<bool, EngineError> {
        match self.dataset.engine {
            Engine::Sqlite => Ok(self.golden_server(state).sqlite_path(golden).is_file()),
            Engine::MariaDb | Engine::MySql => {
                let version = &self.host()?;
                Ok(mariadb::ready(state, golden, version.version()).is_some())
            }
            _ => match self.server.golden_state(golden)? {
                GoldenState::Ready => Ok(true),
                GoldenState::Missing => Ok(false),
                GoldenState::Open => Err(EngineError::Other(format!(
                    "database {golden} exists but is not a sealed golden copy (it accepts \
                     connections); drop it, turbo-hipster builds it again"
                ))),
            },
        }
    }

    /// Under the exclusive lock: builds the golden copy unless it is ready, then drops the
    /// dataset's other golden copies.
    fn ensure_golden(&self, state: &Path, golden: &str) -> Result<(), EngineError> {
        if !self.golden_ready(state, golden)? {
            let building = Instant::now();
            (self.note)(&format!(
                "provisioning: building the golden copy {golden} from the seed"
            ));
            self.build_golden(state, golden)?;
            (self.note)(&format!(
                "provisioning: golden copy {golden} built in {:.1} s",
                building.elapsed().as_secs_f64()
            ));
        }
        self.drop_stale(state, golden)
    }

    fn build_golden(&self, state: &Path, golden: &str) -> Result<(), EngineError> {
        let temporary = format!("{golden}_b{:07}", crate::engine::build_number());
        let server = self.golden_server(state);
        match self.dataset.engine {
            Engine::Sqlite => {
                std::fs::create_dir_all(Self::sqlite_golden_dir(state)).map_err(|e| {
                    EngineError::Other(format!("cannot create {}: {e}", state.display()))
                })?;
                sqlite_remove(&server, &temporary)?;
                server.create_from_seed_cancellable(&temporary, &self.dataset.seed, self.cancel)?;
                let sealed =
                    seal_file(&server.sqlite_path(&temporary), &server.sqlite_path(golden));
                if sealed.is_err() {
                    let _ = server.drop_database(&temporary);
                }
                sealed
            }
            Engine::MariaDb | Engine::MySql => mariadb::build(
                &self.host()?,
                state,
                golden,
                &temporary,
                self.dataset,
                self.claims,
                self.cancel,
            ),
            engine => {
                let claim = self.claims.and_then(|dir| {
                    crate::leftovers::claim(
                        dir,
                        &crate::leftovers::RunDatabase::new(
                            engine,
                            &self.dataset.connection,
                            &temporary,
                        ),
                    )
                });
                let built = self
                    .server
                    .create_from_seed_cancellable(&temporary, &self.dataset.seed, self.cancel)
                    .and_then(|()| {
                        self.server.seal_golden(&temporary, golden).or_else(|e| {
                            let _ = self.server.drop_database(&temporary);
                            // Another worker sharing the server (with its own jobs dir, so
                            // its own lock) sealed the same golden copy first: use theirs.
                            match self.server.golden_state(golden) {
                                Ok(GoldenState::Ready) => {
                                    (self.note)(&format!(
                                        "provisioning: another worker built {golden} first; \
                                         using it"
                                    ));
                                    Ok(())
                                }
                                _ => Err(e),
                            }
                        })
                    });
                if let Some(claim) = claim {
                    turbo_hipster_sdk::support::owner::release(&claim);
                }
                built
            }
        }
        .inspect(|()| registry::record(state, self.dataset, golden))
    }

    /// Drops the dataset's golden copies other than `keep` (other checksums). Builds
    /// (`…_b<digits>`) are left alone: one may be another worker's, in progress, on a server
    /// it shares with this one; a killed build's leftover is dropped by the worker that
    /// claimed it ([`crate::leftovers`]) at its next start.
    fn drop_stale(&self, state: &Path, keep: &str) -> Result<(), EngineError> {
        let prefix = golden_prefix(&self.dataset.name);
        let server = self.golden_server(state);
        let names = match self.dataset.engine {
            Engine::Sqlite => server.databases_with_prefix(&prefix)?,
            Engine::MariaDb | Engine::MySql => mariadb::golden_names(state),
            _ => self.server.databases_with_prefix(&prefix)?,
        };
        for name in names {
            if name != keep && golden_kind(&prefix, &name) == Some(GoldenName::Sealed) {
                self.remove_golden(state, &name)?;
                (self.note)(&format!(
                    "provisioning: dropped the stale golden copy {name}"
                ));
            }
        }
        Ok(())
    }

    fn remove_golden(&self, state: &Path, name: &str) -> Result<(), EngineError> {
        match self.dataset.engine {
            Engine::Sqlite => sqlite_remove(&self.golden_server(state), name),
            Engine::MariaDb | Engine::MySql => mariadb::remove(state, name),
            _ => self.server.drop_database(name),
        }?;
        registry::forget(state, name);
        Ok(())
    }

    /// Copies the golden copy as `db`; the method's name and, for MariaDB, the private server.
    fn copy_golden(
        &self,
        state: &Path,
        golden: &str,
        db: &str,
    ) -> Result<(&'static str, Option<PrivateRun>), EngineError> {
        match self.dataset.engine {
            Engine::Sqlite => {
                let from = self.golden_server(state).sqlite_path(golden);
                let to = self.server.sqlite_path(db);
                let kind = reflink_or_copy(&from, &to).map_err(|e| {
                    let message = format!("copying {} to {}: {e}", from.display(), to.display());
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        EngineError::Unavailable(format!("disk full: {message}"))
                    } else {
                        EngineError::Other(message)
                    }
                })?;
                Ok((kind.name(), None))
            }
            Engine::MariaDb | Engine::MySql => {
                let host = self.host()?;
                let run = mariadb::start_run(
                    &host,
                    state,
                    golden,
                    db,
                    self.dataset,
                    self.claims,
                    self.cancel,
                )?;
                (self.note)(&format!(
                    "provisioning: private server on 127.0.0.1:{} ({} of the golden datadir, \
                     socket {})",
                    run.server.port(),
                    run.copy.name(),
                    run.server.socket().display()
                ));
                Ok(("private", Some(run)))
            }
            _ => {
                self.server.clone_database(golden, db)?;
                Ok(("clone", None))
            }
        }
    }
}

/// What `turbo-hipster prepare-datasets` asks of a job's datasets
/// ([`turbo_hipster_sdk::PrepareDatasets`]): build the golden copy of every dataset that has a
/// fast path (again, with `rebuild`), then with `prune` remove this jobs dir's golden copies
/// of datasets that no longer exist (their config file is gone, or it is in `datasets_dir`
/// and no longer defines them). Returns what was done, one line each, and the failures.
pub fn prepare_datasets(
    datasets: &[Dataset],
    datasets_dir: &Path,
    state: &Path,
    claims: Option<&Path>,
    options: turbo_hipster_sdk::PrepareDatasets,
) -> (Vec<String>, Vec<String>) {
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for dataset in datasets {
        let server = Server::new(dataset.engine, dataset.connection.clone(), PathBuf::new());
        let note = |text: &str| tracing::info!("dataset {}: {text}", dataset.name);
        let provider = Provider {
            server: &server,
            dataset,
            state: Some(state),
            claims,
            cancel: &turbo_hipster_sdk::support::process::NeverCancelled,
            note: &note,
        };
        let why_not = match (dataset.provisioning, provider.fast_state()) {
            (Provisioning::Reload, _) => Some("provisioning: reload".to_string()),
            (Provisioning::Auto, Err(why)) => Some(why),
            _ => None,
        };
        if let Some(why) = why_not {
            done.push(format!(
                "dataset {}: reloads its seed ({why}), nothing to prepare",
                dataset.name
            ));
            continue;
        }
        match provider.prepare(options.rebuild) {
            Ok(golden) => done.push(format!(
                "dataset {}: golden copy {golden} ready",
                dataset.name
            )),
            Err(e) => failed.push(format!(
                "dataset {} ({}): {e}",
                dataset.name,
                dataset.source.display()
            )),
        }
    }
    if options.prune {
        for record in registry::all(state) {
            let exists = record.source.is_file()
                && (!record.source.starts_with(datasets_dir)
                    || datasets
                        .iter()
                        .any(|d| d.name == record.dataset && d.source == record.source));
            if exists {
                continue;
            }
            let name = record.golden.database.clone();
            match registry::remove(state, &record) {
                Ok(()) => done.push(format!(
                    "pruned the golden copy {name} of the removed dataset {}",
                    record.dataset
                )),
                Err(e) => failed.push(format!("cannot prune the golden copy {name}: {e}")),
            }
        }
    }
    (done, failed)
}

/// A read-only golden file from the loaded `from`, renamed into place at `to`.
fn seal_file(from: &Path, to: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |e: std::io::Error| {
        EngineError::Other(format!(
            "sealing {} as {}: {e}",
            from.display(),
            to.display()
        ))
    };
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(0o444)).map_err(io)?;
    std::fs::rename(from, to).map_err(io)
}

/// Removes an SQLite golden file (made writable first: it is read-only).
fn sqlite_remove(server: &Server, name: &str) -> Result<(), EngineError> {
    server.drop_database(name)
}

/// Whether `auto` may reload after the fast path failed with `e`: not when the seed itself is
/// at fault (a reload would fail the same), the server is gone, or the job was cancelled.
fn may_fall_back(e: &EngineError, cancel: &dyn Cancellation) -> bool {
    !cancel.is_cancelled() && matches!(e, EngineError::Refused(_) | EngineError::Other(_))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn golden_names_fit_and_are_recognised() {
        let sum = "0123456789abcdef0123";
        assert_eq!(golden_name("nova", sum), "th_golden_nova_0123456789ab");
        let long = golden_name(&"Very-Long.Name".repeat(10), sum);
        assert!(long.len() <= 63, "{long}");
        crate::engine::check_database_name(&format!(
            "{long}_b{:07}",
            crate::engine::build_number()
        ))
        .unwrap();
        let prefix = golden_prefix("nova");
        let kind = |name| golden_kind(&prefix, name);
        assert_eq!(
            kind("th_golden_nova_0123456789ab"),
            Some(GoldenName::Sealed)
        );
        assert_eq!(
            kind("th_golden_nova_0123456789ab_b123"),
            Some(GoldenName::Build)
        );
        // Another dataset whose name starts the same is not ours.
        assert_eq!(kind("th_golden_nova_cells_0123456789ab"), None);
        assert_eq!(kind("th_golden_nova_0123456789ab_x"), None);
        assert_eq!(kind("th_golden_nova_0123456789ab_b"), None);
        assert_eq!(kind("th_golden_nova_0123"), None);
    }

    #[test]
    fn provisioning_values() {
        for name in Provisioning::NAMES {
            assert!(Provisioning::parse(name).is_some());
        }
        assert_eq!(Provisioning::parse("Clone"), None);
        assert_eq!(Provisioning::default(), Provisioning::Auto);
    }
}
