//! Run databases a killed daemon (or `run-job`) left on a server, and their removal when the
//! next one starts serving.
//!
//! Before a run database is created, a claim file naming it, its server and the process that
//! makes it ([`turbo_hipster_sdk::support::owner`]) is written to
//! `<jobs_working_dir>/.gate_real_db_upgrade/<database>.json`; it is removed once the database
//! is dropped (or kept on purpose, `keep_databases`). A claim still there whose process is gone
//! is a leftover: when the host starts serving (`HostSettings::clean_leftovers`: the daemon
//! and `run-job`, never `check-config`), the runner drops each such database and removes its
//! claim; a server that does not answer keeps the claim for the next start.
//!
//! Only claims decide: databases are never dropped by their name alone, so other workers'
//! runs on a shared server (their claims live in their own jobs dir), runs of another live
//! daemon or `run-job` sharing this jobs dir (their owner lives), and databases this plugin did
//! not make are never touched. The run database's name still says whose it is: it ends with
//! the worker's name ([`crate::dataset_run::run_database_name`]).
//!
//! Private MariaDB servers ([`crate::engine::PrivateServer`]: a golden copy's build, a run's
//! server) are claimed the same way, in the sibling directory `<claims dir>-servers`: the
//! instance directory and, while it runs, the server's process (pid and start time, so a
//! reused pid is never taken for it). A leftover's process, should it still live, is killed
//! and its directory removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turbo_hipster_sdk::support::owner;
use turbo_hipster_sdk::HostSettings;

use crate::engine::Server;
use crate::engine::{Connection, Engine};

pub use crate::engine::instance_claims::{
    claim_instance, instances_dir, remove_orphaned_instances, ServerInstance, CLAIMS_DIR,
};

/// A run database, as its claim records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDatabase {
    /// The engine's name (`mariadb`, `postgresql`, …).
    pub engine: String,
    /// The run database's name.
    pub database: String,
    /// The server's host; with `port`, `socket` and `user`, the connection the run used
    /// (unset: the engine's default).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    /// Password (the claim file is private).
    pub password: Option<String>,
}

impl RunDatabase {
    /// The claim of database `database` of `engine` reached through `connection`.
    pub fn new(engine: Engine, connection: &Connection, database: &str) -> Self {
        RunDatabase {
            engine: engine.name().to_string(),
            database: database.to_string(),
            host: connection.host.clone(),
            port: connection.port,
            socket: connection.socket.clone(),
            user: connection.user.clone(),
            password: connection.password.clone(),
        }
    }

    /// The server this database lives on; `None` for an unknown engine.
    pub fn server(&self) -> Option<Server> {
        let engine = Engine::from_name(&self.engine)?;
        let connection = Connection {
            host: self.host.clone(),
            port: self.port,
            socket: self.socket.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        };
        Some(Server::new(engine, connection, PathBuf::new()))
    }
}

/// Where the claims of this host's runs live; `None` without a jobs dir.
pub fn claims_dir(host: &HostSettings) -> Option<PathBuf> {
    (!host.jobs_working_dir.as_os_str().is_empty()).then(|| host.jobs_working_dir.join(CLAIMS_DIR))
}

/// Claims database `db` for the current process; the claim's path, or `None` (logged) when it
/// cannot be written.
pub fn claim(dir: &Path, db: &RunDatabase) -> Option<PathBuf> {
    owner::claim(dir, &format!("{}.json", db.database), db)
        .map_err(|e| {
            tracing::warn!(
                "cannot record the run database {} in {}: {e}",
                db.database,
                dir.display()
            )
        })
        .ok()
}

/// Drops every database whose claim in `dir` names a process that is gone; returns the
/// databases dropped.
pub fn drop_orphaned(dir: &Path) -> Vec<String> {
    let mut dropped = Vec::new();
    for (path, db) in owner::orphaned::<RunDatabase>(dir) {
        let Some(server) = db.server() else {
            tracing::warn!("{}: unknown engine {:?}", path.display(), db.engine);
            continue;
        };
        match server.drop_database(&db.database) {
            Ok(()) => {
                tracing::info!(
                    "dropped database {} ({}) left by a killed run",
                    db.database,
                    db.engine
                );
                owner::release(&path);
                dropped.push(db.database);
            }
            Err(e) => tracing::warn!(
                "cannot drop database {} left by a killed run (kept for the next start): {e}",
                db.database
            ),
        }
    }
    dropped
}
