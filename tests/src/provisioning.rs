//! The gate plugin's provisioning tests' fixture (`plugins/gate_real_db_upgrade/tests`,
//! `provisioning.rs` and `mariadb_provisioning.rs`): a dataset of its own in a temp dir,
//! loaded as the plugin loads it, the job state dirs a [`Provider`] keeps its golden copies
//! and claims in, the notes a provider writes; a MariaDB golden datadir's fingerprint (also
//! for `e2e_mariadb_provisioning.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gate_real_db_upgrade::dataset::{load_datasets, Connection, Dataset, DatasetDefaults, Engine};
use gate_real_db_upgrade::engine::Server;
use gate_real_db_upgrade::provisioning::{hash_file, mariadb, Provider};
use serde_json::{json, Value};
use turbo_hipster_sdk::support::process::NeverCancelled;

/// A dataset of its own (a fresh name) in a temp dir, and the server it runs on; on
/// PostgreSQL its databases are dropped at the end.
pub struct ProviderFixture {
    /// Keeps everything alive: `datasets/<name>/` (config and seed), `jobs/` (the state dirs)
    /// and `databases/` (SQLite files).
    pub tmp: tempfile::TempDir,
    /// The provider's state dir (golden copies), `jobs/.gate_real_db_upgrade-golden`.
    pub state: PathBuf,
    /// The provider's claims dir, `jobs/.gate_real_db_upgrade`.
    pub claims: PathBuf,
    /// The dataset's `seed.sql`.
    pub seed: PathBuf,
    /// The dataset as loaded.
    pub dataset: Dataset,
    /// The dataset's server (reached through its `connection`).
    pub server: Server,
}

impl ProviderFixture {
    /// Dataset `<prefix><random hex>` of project `acme/app` on `engine`, its seed `seed.sql`
    /// holding `seed`, with `settings` merged into its config.
    pub fn new(engine: Engine, prefix: &str, seed: &str, settings: Value) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let name = format!("{prefix}{:x}", rand_u64());
        let ds_dir = dir.join("datasets").join(&name);
        std::fs::create_dir_all(&ds_dir).unwrap();
        let seed_path = ds_dir.join("seed.sql");
        std::fs::write(&seed_path, seed).unwrap();
        let mut config = json!({
            "project": "acme/app",
            "engine": engine.name(),
            "seed_data": "seed.sql",
        });
        for (k, v) in settings.as_object().unwrap() {
            config[k] = v.clone();
        }
        std::fs::write(ds_dir.join("config.json"), config.to_string()).unwrap();
        let dataset = load_datasets(&dir.join("datasets"), &DatasetDefaults::default())
            .unwrap()
            .remove(0);
        std::fs::create_dir_all(dir.join("databases")).unwrap();
        let server = Server::new(engine, dataset.connection.clone(), dir.join("databases"));
        ProviderFixture {
            state: dir.join("jobs/.gate_real_db_upgrade-golden"),
            claims: dir.join("jobs/.gate_real_db_upgrade"),
            seed: seed_path,
            tmp,
            dataset,
            server,
        }
    }

    /// A provider of the dataset on its server with the state and claims dirs, never
    /// cancelled, writing its notes to `note`.
    pub fn provider<'a>(&'a self, note: &'a (dyn Fn(&str) + Sync)) -> Provider<'a> {
        Provider {
            server: &self.server,
            dataset: &self.dataset,
            state: Some(&self.state),
            claims: Some(&self.claims),
            cancel: &NeverCancelled,
            note,
        }
    }

    /// The name of run database `n`.
    pub fn db(&self, n: u32) -> String {
        format!("{}_run{n}", self.dataset.name)
    }

    /// Every golden copy of the dataset, sorted for MariaDB: its golden datadirs in the state
    /// dir; PostgreSQL: its databases on the server; SQLite: its files in the state dir.
    pub fn goldens(&self) -> Vec<String> {
        let prefix = format!("th_golden_{}_", self.dataset.name);
        match self.dataset.engine {
            Engine::MariaDb => {
                let mut names = mariadb::golden_names(&self.state);
                names.sort();
                names
            }
            Engine::Sqlite => Server::new(
                Engine::Sqlite,
                Connection::default(),
                self.state.join("sqlite"),
            )
            .databases_with_prefix(&prefix)
            .unwrap(),
            _ => self.server.databases_with_prefix(&prefix).unwrap(),
        }
    }
}

/// On PostgreSQL the dataset's golden copies and run databases are dropped (elsewhere they are
/// files in the temp dir).
impl Drop for ProviderFixture {
    fn drop(&mut self) {
        if self.dataset.engine == Engine::PostgreSql {
            for name in self
                .server
                .databases_with_prefix(&format!("th_golden_{}_", self.dataset.name))
                .unwrap_or_default()
            {
                let _ = self.server.drop_database(&name);
            }
            for name in self
                .server
                .databases_with_prefix(&self.dataset.name)
                .unwrap_or_default()
            {
                let _ = self.server.drop_database(&name);
            }
        }
    }
}

/// A random number, different in every call.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// The notes a provider wrote.
#[derive(Default)]
pub struct Notes(Mutex<Vec<String>>);

impl Notes {
    /// Records a note.
    pub fn push(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }

    /// How many notes contain `what`.
    pub fn count(&self, what: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.contains(what))
            .count()
    }

    /// Every note so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Every file of MariaDB golden datadir `golden` in state dir `state` with its sha256 (more
/// than ten of them, or it panics: a datadir has more).
pub fn mariadb_golden_fingerprint(state: &Path, golden: &str) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, files: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.insert(path.clone(), hash_file(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(&mariadb::golden_dir(state, golden), &mut files);
    assert!(files.len() > 10, "{files:?}");
    files
}
