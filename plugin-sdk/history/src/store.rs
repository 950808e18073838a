//! The history database: one row per migration per run, in SQLite (a file; the default, beside
//! `jobs.jsonl`) or PostgreSQL (a `postgres://` URL), through sqlx.
//!
//! The API is blocking: each call connects, does its work in one transaction where it writes,
//! and disconnects, on a private current-thread runtime (on a thread of its own when the caller
//! is inside a runtime already). A job records once and reads once, so a connection per call
//! costs nothing that matters, and neither the daemon nor a plugin shares a runtime or a pool
//! with it. SQLite runs in WAL mode with sqlx's 5 s busy timeout, so the daemon's job threads
//! and the plugins' child processes read and write at once.
//!
//! Tables (created when missing):
//!
//! ```sql
//! th_migration_samples (dataset, engine, migration, phase, started, duration_ms, status,
//!                       limit_seconds, commit_sha, job, counters, locks, dataset_config)
//! th_imported_logs (sha256 PRIMARY KEY, path, imported, samples)
//! ```
//!
//! `migration` is `from->to`; `started` is the migration's start as the logs write it
//! (`YYYY-MM-DD HH:MM:SS,mmm`, so it sorts as text); `duration_ms` is NULL for a migration
//! that never ended; `status` is `ok`, `too_long` or `unfinished`; `counters` and `locks` are
//! JSON; `dataset_config` is the dataset's config file, when known (`limits --write`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use sqlx::AnyConnection;
use sqlx::{Connection as _, Row as _};

use crate::stats::Stats;
use crate::HistoryError;

/// One migration of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The dataset's name.
    pub dataset: String,
    /// Its engine (`mysql`, `mariadb`, `postgresql`, `sqlite`).
    pub engine: String,
    /// `from->to`.
    pub migration: String,
    /// `change`, or the git ref of an upgrade-path step; `import` for imported logs.
    pub phase: String,
    /// When it started, `YYYY-MM-DD HH:MM:SS,mmm`.
    pub started: String,
    /// How long it took; `None` if it never ended.
    pub duration_ms: Option<i64>,
    /// `ok`, `too_long`, `unfinished`.
    pub status: String,
    /// Its time limit then, if any.
    pub limit_seconds: Option<f64>,
    /// The commit tested.
    pub commit: String,
    /// The job (the Gearman unique), or `import:<file>`.
    pub job: String,
    /// Counter deltas.
    pub counters: BTreeMap<String, i64>,
    /// What it did to locks, as the job's summary says it (JSON).
    pub locks: serde_json::Value,
    /// The dataset's config file, if known.
    pub dataset_config: String,
}

/// Where the history is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

impl Location {
    /// Reads the config's `history_database`: a `postgres://` (or `postgresql://`) URL, a
    /// `sqlite:` URL or a file path (relative to `base`).
    ///
    /// # Errors
    /// Another URL scheme, or an empty value.
    pub fn parse(value: &str, base: &Path) -> Result<Self, String> {
        let value = value.trim();
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Location::Postgres(value.to_string()));
        }
        let path = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
            .unwrap_or(value);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err("is empty: give a SQLite file or a postgres:// URL".into());
        }
        if let Some((scheme, _)) = value.split_once("://") {
            if scheme != "sqlite" {
                return Err(format!(
                    "{scheme}:// is not supported: give a SQLite file or a postgres:// URL"
                ));
            }
        }
        Ok(Location::Sqlite(base.join(path)))
    }

    /// As written in `HostSettings` and parsed back by [`Location::parse`].
    pub fn to_setting(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => url.clone(),
        }
    }

    /// For messages: a PostgreSQL password is masked.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => mask_password(url),
        }
    }

    fn url(&self) -> String {
        match self {
            Location::Sqlite(p) => format!("sqlite://{}?mode=rwc", p.display()),
            Location::Postgres(url) => url.clone(),
        }
    }
}

fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((auth, host)) if auth.contains(':') => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// The history database.
#[derive(Debug, Clone)]
pub struct HistoryDb {
    location: Location,
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS th_migration_samples (
        dataset TEXT NOT NULL,
        engine TEXT NOT NULL,
        migration TEXT NOT NULL,
        phase TEXT NOT NULL,
        started TEXT NOT NULL,
        duration_ms BIGINT,
        status TEXT NOT NULL,
        limit_seconds DOUBLE PRECISION,
        commit_sha TEXT NOT NULL,
        job TEXT NOT NULL,
        counters TEXT NOT NULL,
        locks TEXT NOT NULL,
        dataset_config TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS th_migration_samples_dataset
        ON th_migration_samples (dataset, migration)",
    "CREATE TABLE IF NOT EXISTS th_imported_logs (
        sha256 TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        imported TEXT NOT NULL,
        samples BIGINT NOT NULL
    )",
    "SELECT 1 FROM th_migration_samples WHERE 1 = 0",
];

const INSERT: &str = "INSERT INTO th_migration_samples (dataset, engine, migration, phase, \
    started, duration_ms, status, limit_seconds, commit_sha, job, counters, locks, \
    dataset_config) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

const SELECT: &str = "SELECT dataset, engine, migration, phase, started, duration_ms, status, \
    limit_seconds, commit_sha, job, counters, locks, dataset_config FROM th_migration_samples \
    WHERE dataset = $1 ORDER BY started, job";

/// What an import of one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Its samples were recorded.
    Recorded(usize),
    /// The same content was imported before: nothing recorded.
    AlreadyImported,
}

impl HistoryDb {
    /// The history at `location` (nothing is opened yet).
    pub fn new(location: Location) -> Self {
        HistoryDb { location }
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Records one run's samples, all or none.
    ///
    /// # Errors
    /// The database cannot be opened or written.
    pub fn record(&self, samples: &[Sample]) -> Result<usize, HistoryError> {
        if samples.is_empty() {
            return Ok(0);
        }
        block(async {
            let mut conn = self.connect(true).await?;
            let mut tx = conn.begin().await.map_err(|e| self.error(e))?;
            for s in samples {
                insert(&mut tx, s).await.map_err(|e| self.error(e))?;
            }
            tx.commit().await.map_err(|e| self.error(e))?;
            let _ = conn.close().await;
            Ok(samples.len())
        })
    }

    /// Records the samples of an imported file whose content has the SHA-256 `sha256`, unless
    /// that content was imported before (under any name).
    ///
    /// # Errors
    /// The database cannot be opened or written.
    pub fn import(
        &self,
        sha256: &str,
        path: &Path,
        imported: &str,
        samples: &[Sample],
    ) -> Result<Imported, HistoryError> {
        block(async {
            let mut conn = self.connect(true).await?;
            let mut tx = conn.begin().await.map_err(|e| self.error(e))?;
            let seen = sqlx::query("SELECT samples FROM th_imported_logs WHERE sha256 = $1")
                .bind(sha256.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.error(e))?;
            if seen.is_some() {
                return Ok(Imported::AlreadyImported);
            }
            sqlx::query(
                "INSERT INTO th_imported_logs (sha256, path, imported, samples) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(sha256.to_string())
            .bind(path.display().to_string())
            .bind(imported.to_string())
            .bind(i64::try_from(samples.len()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
            for s in samples {
                insert(&mut tx, s).await.map_err(|e| self.error(e))?;
            }
            tx.commit().await.map_err(|e| self.error(e))?;
            let _ = conn.close().await;
            Ok(Imported::Recorded(samples.len()))
        })
    }

    /// Every sample of `dataset`, oldest first. A SQLite history that does not exist yet has
    /// none (and is not made).
    ///
    /// # Errors
    /// The database cannot be opened or read, or holds a row it cannot read.
    pub fn samples(&self, dataset: &str) -> Result<Vec<Sample>, HistoryError> {
        if let Location::Sqlite(path) = &self.location {
            if !path.exists() {
                return Ok(Vec::new());
            }
        }
        block(async {
            let mut conn = self.connect(false).await?;
            let rows = sqlx::query(SELECT)
                .bind(dataset.to_string())
                .fetch_all(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            let _ = conn.close().await;
            rows.iter()
                .map(|row| read_sample(row).map_err(|e| self.error(e)))
                .collect()
        })
    }

    /// The figures of every migration of `dataset` that ended at least once, in the order
    /// they were first seen.
    ///
    /// # Errors
    /// As [`HistoryDb::samples`].
    pub fn stats(&self, dataset: &str) -> Result<Vec<(String, Stats)>, HistoryError> {
        Ok(stats_of(&self.samples(dataset)?))
    }

    async fn connect(&self, create: bool) -> Result<AnyConnection, HistoryError> {
        sqlx::any::install_default_drivers();
        if let (true, Location::Sqlite(path)) = (create, &self.location) {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| HistoryError::Open {
                    location: self.location.display(),
                    why: format!("cannot create {}: {e}", dir.display()),
                })?;
            }
        }
        let mut conn = AnyConnection::connect(&self.location.url())
            .await
            .map_err(|e| HistoryError::Open {
                location: self.location.display(),
                why: e.to_string(),
            })?;
        if let Location::Sqlite(_) = self.location {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
        }
        for statement in SCHEMA {
            if let Err(e) = sqlx::query(statement).execute(&mut conn).await {
                // Two first writers at once on PostgreSQL: one CREATE loses the race, and
                // the table is there all the same (the last statement checks it).
                if statement.starts_with("SELECT") {
                    return Err(self.error(e));
                }
                tracing::debug!("history schema: {e}");
            }
        }
        Ok(conn)
    }

    fn error(&self, e: sqlx::Error) -> HistoryError {
        HistoryError::Database {
            location: self.location.display(),
            source: e,
        }
    }
}

/// The figures of every migration among `samples` that ended at least once, in the order
/// they were first seen.
pub fn stats_of(samples: &[Sample]) -> Vec<(String, Stats)> {
    let mut order: Vec<String> = Vec::new();
    let mut durations: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for s in samples {
        if let Some(ms) = s.duration_ms {
            let entry = durations.entry(&s.migration).or_default();
            if entry.is_empty() {
                order.push(s.migration.clone());
            }
            entry.push(ms);
        }
    }
    order
        .into_iter()
        .filter_map(|m| {
            let stats = Stats::of(durations.get(m.as_str())?)?;
            Some((m, stats))
        })
        .collect()
}

async fn insert(conn: &mut AnyConnection, s: &Sample) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT)
        .bind(s.dataset.clone())
        .bind(s.engine.clone())
        .bind(s.migration.clone())
        .bind(s.phase.clone())
        .bind(s.started.clone())
        .bind(s.duration_ms)
        .bind(s.status.clone())
        .bind(s.limit_seconds)
        .bind(s.commit.clone())
        .bind(s.job.clone())
        .bind(serde_json::to_string(&s.counters).unwrap_or_else(|_| "{}".into()))
        .bind(s.locks.to_string())
        .bind(s.dataset_config.clone())
        .execute(conn)
        .await
        .map(|_| ())
}

fn read_sample(row: &sqlx::any::AnyRow) -> Result<Sample, sqlx::Error> {
    let counters: String = row.try_get("counters")?;
    let locks: String = row.try_get("locks")?;
    Ok(Sample {
        dataset: row.try_get("dataset")?,
        engine: row.try_get("engine")?,
        migration: row.try_get("migration")?,
        phase: row.try_get("phase")?,
        started: row.try_get("started")?,
        duration_ms: row.try_get("duration_ms")?,
        status: row.try_get("status")?,
        limit_seconds: row.try_get("limit_seconds")?,
        commit: row.try_get("commit_sha")?,
        job: row.try_get("job")?,
        counters: serde_json::from_str(&counters).map_err(|e| sqlx::Error::ColumnDecode {
            index: "counters".into(),
            source: Box::new(e),
        })?,
        locks: serde_json::from_str(&locks).map_err(|e| sqlx::Error::ColumnDecode {
            index: "locks".into(),
            source: Box::new(e),
        })?,
        dataset_config: row.try_get("dataset_config")?,
    })
}

/// Runs `work` to its end on a private current-thread runtime; on a thread of its own when
/// the caller is inside a runtime already (a runtime cannot block inside another).
fn block<T, F>(work: F) -> Result<T, HistoryError>
where
    F: Future<Output = Result<T, HistoryError>> + Send,
    T: Send,
{
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HistoryError::Runtime(e.to_string()))?
            .block_on(work)
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| {
        s.spawn(run)
            .join()
            .unwrap_or_else(|_| Err(HistoryError::Runtime("the history thread panicked".into())))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_read_from_the_setting() {
        let base = Path::new("/etc/th");
        assert_eq!(
            Location::parse("history.sqlite", base).unwrap(),
            Location::Sqlite("/etc/th/history.sqlite".into())
        );
        assert_eq!(
            Location::parse("sqlite:///var/h.db?mode=rwc", base).unwrap(),
            Location::Sqlite("/var/h.db".into())
        );
        assert_eq!(
            Location::parse("postgres://th:secret@db/history", base).unwrap(),
            Location::Postgres("postgres://th:secret@db/history".into())
        );
        assert_eq!(
            Location::parse("postgres://th:secret@db/history", base)
                .unwrap()
                .display(),
            "postgres://th:***@db/history"
        );
        assert!(Location::parse("mysql://x/y", base)
            .unwrap_err()
            .contains("mysql:// is not supported"));
        assert!(Location::parse(" ", base).is_err());
    }
}
