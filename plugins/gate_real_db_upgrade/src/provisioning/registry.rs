//! The golden copies this jobs directory made, one private record each under
//! `<state>/registry/<golden>.json` (the server and how to reach it, the dataset's name and
//! config file), so `prepare-datasets --prune` removes exactly ours: golden copies of
//! datasets that no longer exist, never another worker's on a shared server.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turbo_hipster_sdk::support::owner;

use crate::dataset::{Dataset, Engine};
use crate::engine::{EngineError, Server};
use crate::leftovers::RunDatabase;

/// One golden copy, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoldenRecord {
    /// The dataset's name.
    pub dataset: String,
    /// Its config file.
    pub source: PathBuf,
    /// The golden copy and its server.
    pub golden: RunDatabase,
}

fn dir(state: &Path) -> PathBuf {
    state.join("registry")
}

fn path(state: &Path, golden: &str) -> PathBuf {
    dir(state).join(format!("{golden}.json"))
}

/// Records golden copy `golden` of `dataset` (logged when it cannot be written: only
/// `--prune` misses it).
pub fn record(state: &Path, dataset: &Dataset, golden: &str) {
    let record = GoldenRecord {
        dataset: dataset.name.clone(),
        source: dataset.source.clone(),
        golden: RunDatabase::new(dataset.engine, &dataset.connection, golden),
    };
    if let Err(e) = owner::claim(&dir(state), &format!("{golden}.json"), &record) {
        tracing::warn!("cannot record the golden copy {golden}: {e}");
    }
}

/// Forgets golden copy `golden`.
pub fn forget(state: &Path, golden: &str) {
    owner::release(&path(state, golden));
}

/// Every recorded golden copy.
pub fn all(state: &Path) -> Vec<GoldenRecord> {
    let Ok(entries) = std::fs::read_dir(dir(state)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| owner::load::<GoldenRecord>(&e.path()).ok())
        .map(|claim| claim.what)
        .collect()
}

/// Removes a recorded golden copy (the database, the SQLite file or the MariaDB datadir)
/// and its record.
///
/// # Errors
/// The server refused.
pub fn remove(state: &Path, record: &GoldenRecord) -> Result<(), EngineError> {
    let name = &record.golden.database;
    match Engine::from_name(&record.golden.engine) {
        Some(Engine::Sqlite) => Server::new(
            Engine::Sqlite,
            crate::engine::Connection::default(),
            state.join("sqlite"),
        )
        .drop_database(name)?,
        Some(Engine::MariaDb | Engine::MySql) => super::mariadb::remove(state, name)?,
        Some(_) => match record.golden.server() {
            Some(server) => server.drop_database(name)?,
            None => return Err(EngineError::Other(format!("{name}: unknown engine"))),
        },
        None => {
            return Err(EngineError::Other(format!(
                "{name}: unknown engine {:?}",
                record.golden.engine
            )))
        }
    }
    forget(state, name);
    Ok(())
}
