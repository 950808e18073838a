//! SQLite: database `name` is the file `<sqlite_dir>/<name>.sqlite`; seeds are SQL text run
//! through sqlx (no `sqlite3` tool is needed).
//!
//! Connections keep SQLite's own defaults (foreign keys off, the file's journal mode), as the
//! migration tools' drivers do, rather than sqlx's (which turns foreign keys on).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use super::{exists, quote_ident, quote_path, EngineError, CONNECT_TIMEOUT};
use super::{Seed, SeedFormat};

/// The file extension of database files.
pub(super) const EXTENSION: &str = "sqlite";

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn describe(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

async fn connect(path: &Path, create: bool) -> Result<SqliteConnection, EngineError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .foreign_keys(false)
        .busy_timeout(BUSY_TIMEOUT)
        .disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(EngineError::Refused(format!(
            "cannot open {}: {}",
            path.display(),
            describe(&e)
        ))),
        Err(_) => Err(EngineError::Refused(format!(
            "cannot open {}: timed out",
            path.display()
        ))),
    }
}

/// Connects to an existing database file (never creates one).
async fn connect_existing(path: &Path) -> Result<SqliteConnection, EngineError> {
    if !exists(path) {
        return Err(EngineError::Other(format!(
            "database file {} does not exist",
            path.display()
        )));
    }
    connect(path, false).await
}

async fn close(conn: SqliteConnection) {
    let _ = conn.close().await;
}

/// The seed as SQL text (gunzipped if need be).
pub(super) fn read_seed(seed: &Seed, file: File) -> Result<String, EngineError> {
    let mut bytes = Vec::new();
    let read = match seed.format {
        SeedFormat::Sql => BufReader::new(file).read_to_end(&mut bytes),
        SeedFormat::SqlGz => MultiGzDecoder::new(BufReader::new(file)).read_to_end(&mut bytes),
        SeedFormat::PgCustom => return Err(super::wrong_format(&super::Engine::Sqlite, seed)),
    };
    read.map_err(|e| {
        EngineError::SeedLoad(format!("reading {} failed: {e}", seed.path.display()))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        EngineError::SeedLoad(format!("{} is not UTF-8 text: {e}", seed.path.display()))
    })
}

/// Creates the file and runs `sql` in it; on failure the file is removed again.
pub(super) async fn create_from_sql(path: &Path, sql: &str) -> Result<(), EngineError> {
    if exists(path) {
        return Err(EngineError::Other(format!(
            "database file {} already exists",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::Refused(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    let mut conn = connect(path, true).await?;
    let result = sqlx::raw_sql(sql).execute(&mut conn).await;
    close(conn).await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            // Summarised: SQLite quotes the seed text it chokes on. SQLITE_FULL ("database or
            // disk is full") is the disk's fault, not the seed's.
            let error = super::unavailable_or(
                format!(
                    "{}: {}",
                    path.display(),
                    super::client::summarise_sqlite(&describe(&e))
                ),
                EngineError::SeedLoad,
            );
            match remove(path) {
                Ok(()) => Err(error),
                Err(remove_error) => Err(super::append(
                    error,
                    &format!("; removing the half-made database failed too: {remove_error}"),
                )),
            }
        }
    }
}

/// Removes the database file and its companions (journal, WAL, shared memory).
pub(super) fn remove(path: &Path) -> Result<(), EngineError> {
    let mut companions: Vec<PathBuf> = vec![path.to_path_buf()];
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        companions.push(PathBuf::from(name));
    }
    for file in companions {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EngineError::Other(format!(
                    "cannot remove {}: {e}",
                    file.display()
                )))
            }
        }
    }
    Ok(())
}

/// The non-NULL values of `column` in `table` as text; `None` when the table is missing.
pub(super) async fn column_values(
    path: &Path,
    table: &[&str],
    column: &str,
) -> Result<Option<Vec<String>>, EngineError> {
    let mut conn = connect_existing(path).await?;
    let sql = format!(
        "SELECT CAST({} AS TEXT) FROM {}",
        quote_ident(column, '"'),
        quote_path(table, '"')
    );
    let result: Result<Vec<Option<String>>, _> =
        sqlx::query_scalar(&sql).fetch_all(&mut conn).await;
    close(conn).await;
    match result {
        Ok(values) => Ok(Some(values.into_iter().flatten().collect())),
        Err(e) if describe(&e).starts_with("no such table") => Ok(None),
        Err(e) => Err(EngineError::Other(format!(
            "{}: {}",
            path.display(),
            describe(&e)
        ))),
    }
}

pub(super) async fn execute(path: &Path, sql: &str) -> Result<(), EngineError> {
    let mut conn = connect_existing(path).await?;
    let result = sqlx::raw_sql(sql).execute(&mut conn).await;
    close(conn).await;
    result.map(drop).map_err(|e| {
        super::unavailable_or(
            format!("{}: {}", path.display(), describe(&e)),
            EngineError::Other,
        )
    })
}

/// The names of the `*.sqlite` files in `dir` (none when it does not exist).
pub(super) fn databases(dir: &Path) -> Result<Vec<String>, EngineError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(EngineError::Other(format!(
                "cannot list {}: {e}",
                dir.display()
            )))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| EngineError::Other(format!("cannot list {}: {e}", dir.display())))?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == EXTENSION) {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    Ok(names)
}
