//! The database side, through sqlx: create a run's database from the seed, read its schema
//! version and work counters, drop it. Blocking API over a small tokio runtime of the plugin's
//! own (a plugin must never use the host's runtime).
//!
//! OWNER: helper B. Fill in the bodies; keep the public signatures (other modules use them).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::dataset::{Connection, Engine, Seed};

/// What went wrong on the database side; each maps to one of the original's messages.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The seed file is missing → `FAILURE - Could not find seed database.`
    #[error("seed {} not found", .0.display())]
    SeedMissing(PathBuf),
    /// The seed could not be loaded → `FAILURE - Could not setup seed database.`
    #[error("loading the seed failed: {0}")]
    SeedLoad(String),
    /// The server refused us (credentials, unreachable) → `FAILURE - Could not setup seed database.`
    #[error("the database server refused the connection: {0}")]
    Refused(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(String),
}

/// Where the schema version is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// sqlalchemy-migrate's `migrate_version.version`.
    MigrateVersion,
    /// alembic's `alembic_version.version_num` (several rows: sorted, joined by `,`).
    AlembicVersion,
    /// Our SQL-files mode table, column `version`.
    Table(String),
}

/// A database server (or, for SQLite, a directory of database files).
pub struct Server {
    engine: Engine,
    connection: Connection,
    /// For SQLite: where the database files live (the job's work dir).
    sqlite_dir: PathBuf,
}

impl Server {
    /// A server for `engine` reached through `connection`; SQLite files go in `sqlite_dir`.
    pub fn new(engine: Engine, connection: Connection, sqlite_dir: PathBuf) -> Self {
        Self {
            engine,
            connection,
            sqlite_dir,
        }
    }

    /// Creates database `name` (which must not exist) and loads `seed` into it.
    ///
    /// # Errors
    /// [`EngineError::SeedMissing`], [`EngineError::Refused`], [`EngineError::SeedLoad`].
    pub fn create_from_seed(&self, name: &str, seed: &Seed) -> Result<(), EngineError> {
        let _ = (name, seed, &self.engine, &self.connection, &self.sqlite_dir);
        Err(EngineError::Other("not implemented yet".into()))
    }

    /// Drops database `name` if it exists (for SQLite: deletes the file).
    ///
    /// # Errors
    /// The server refused.
    pub fn drop_database(&self, name: &str) -> Result<(), EngineError> {
        let _ = name;
        Err(EngineError::Other("not implemented yet".into()))
    }

    /// The schema version recorded in database `name`, if any.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn schema_version(&self, name: &str, source: &VersionSource) -> Result<Option<String>, EngineError> {
        let _ = (name, source);
        Err(EngineError::Other("not implemented yet".into()))
    }

    /// Work counters now (MySQL/MariaDB: `Innodb_rows_*` from SHOW GLOBAL STATUS; PostgreSQL:
    /// `tup_*` of `pg_stat_database` for `name`; SQLite: empty).
    ///
    /// # Errors
    /// The server cannot be read.
    pub fn counters(&self, name: &str) -> Result<BTreeMap<String, i64>, EngineError> {
        let _ = name;
        Ok(BTreeMap::new())
    }

    /// Executes SQL (several statements) in database `name`; used by the SQL-files mode.
    ///
    /// # Errors
    /// The SQL failed; the message is the server's.
    pub fn execute(&self, name: &str, sql: &str) -> Result<(), EngineError> {
        let _ = (name, sql);
        Err(EngineError::Other("not implemented yet".into()))
    }

    /// The database URL in SQLAlchemy form (`mysql+pymysql://u:p@h:3306/name`,
    /// `postgresql+psycopg2://…`, `sqlite:////abs/path.db`).
    pub fn sqlalchemy_url(&self, name: &str) -> String {
        let _ = name;
        String::new()
    }

    /// Names of existing databases starting with `prefix` (tests check nothing is left).
    ///
    /// # Errors
    /// The server cannot be read.
    pub fn databases_with_prefix(&self, prefix: &str) -> Result<Vec<String>, EngineError> {
        let _ = prefix;
        Ok(Vec::new())
    }
}
