//! The SQL-files mode: a directory of numbered `.sql` files in the checkout
//! (`001_create_customers.sql`, `002_add_orders.sql`, …) that the plugin applies itself, in
//! numeric order, timing each one exactly.
//!
//! The applied version is kept in a one-column table (`version VARCHAR(64) NOT NULL`, created
//! when missing) holding the number of the last applied file, without leading zeros. Files
//! numbered at or below the recorded version are skipped, so a seed may already be at some
//! version. Each file runs as one [`Server::execute`] call, on a thread of its own so that a
//! cancelled or timed-out job does not wait for a statement that hangs (the plugin then asks
//! the server to stop the statement, where the engine allows it). Every step is written to the
//! dataset's log (tag `sql`) and becomes a [`MigrationRecord`]: from the previous file's
//! number (or `base`) to this one, described by the rest of the file name, with the deltas of
//! the run database's work counters ([`crate::engine::CounterReader`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Local;
use turbo_hipster_sdk::support::process::{seconds, Cancellation};
use turbo_hipster_sdk::support::LogFile;

use crate::engine::{rewrites, EngineError, Gap, Observation, Part, Server, VersionSource};
use crate::engine::{Connection, Engine};
use crate::logparse::MigrationRecord;
use crate::version::{cmp_numbers, normalize};

/// The log tag of SQL-files steps.
pub const TAG: &str = "sql";
/// How often a running file's caller looks at the cancellation source and the deadline.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for a stopped statement to return before leaving it behind.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFile {
    /// Its number, without leading zeros.
    pub number: String,
    /// The rest of its name (`create_customers`).
    pub name: String,
    /// Its path.
    pub path: PathBuf,
}

/// Why the files could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum SqlFilesError {
    /// The directory cannot be read.
    #[error("cannot read the SQL migrations directory {}: {source}", path.display())]
    Read {
        /// The SQL directory in the checkout.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Two files have the same number.
    #[error("two SQL migrations are numbered {number}: {first} and {second}")]
    Duplicate {
        /// The number both files start with.
        number: String,
        /// The file names, in directory order.
        first: String,
        second: String,
    },
    /// The version table's name is not a plain SQL identifier.
    #[error("the version table name {0:?} must be a plain SQL identifier")]
    TableName(String),
}

/// The numbered `.sql` files (`NNN_name.sql`) of `dir`, in numeric order; other files are
/// ignored.
///
/// # Errors
/// The directory cannot be read, or two files share a number.
pub fn list(dir: &Path) -> Result<Vec<SqlFile>, SqlFilesError> {
    let entries = fs::read_dir(dir).map_err(|source| SqlFilesError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file_name.strip_suffix(".sql") else {
            continue;
        };
        let Some((number, name)) = stem.split_once('_') else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        files.push(SqlFile {
            number: normalize(number),
            name: name.to_string(),
            path: entry.path(),
        });
    }
    files.sort_by(|a, b| cmp_numbers(&a.number, &b.number).then_with(|| a.path.cmp(&b.path)));
    for pair in files.windows(2) {
        if pair[0].number == pair[1].number {
            return Err(SqlFilesError::Duplicate {
                number: pair[0].number.clone(),
                first: file_name(&pair[0].path),
                second: file_name(&pair[1].path),
            });
        }
    }
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `name` is a plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes).
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 63
}

/// How to make a connection of one's own to the run's server (the thread running a file
/// uses its own [`Server`]).
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub engine: Engine,
    /// How to reach it.
    pub connection: Connection,
    /// Where SQLite files are.
    pub sqlite_dir: PathBuf,
}

impl ServerSpec {
    /// A new [`Server`] handle.
    pub fn server(&self) -> Server {
        Server::new(
            self.engine,
            self.connection.clone(),
            self.sqlite_dir.clone(),
        )
    }
}

/// How the files' run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlEnd {
    /// Every file applied (or skipped).
    Completed,
    /// A file failed; the server's message.
    Failed {
        /// The file's name.
        file: String,
        /// The server's message.
        message: String,
    },
    /// The job was cancelled.
    Cancelled,
    /// The run's deadline passed; the time it had.
    TimedOut(Duration),
    /// Something around the files failed (the version table); the message.
    Error(String),
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRun {
    /// Every file that started, in order (a failed or stopped one has no end).
    pub migrations: Vec<MigrationRecord>,
    /// How it ended.
    pub end: SqlEnd,
    /// The number of the last file in the directory (the version the change expects).
    pub last_file: Option<String>,
}

/// What [`apply`] works on.
pub struct SqlTarget<'a> {
    /// The run's server.
    pub spec: &'a ServerSpec,
    /// The run's database.
    pub database: &'a str,
    /// The table recording the last applied file's number (made when missing).
    pub version_table: &'a str,
    /// The dataset's log.
    pub log: &'a LogFile,
    /// The job's cancellation.
    pub cancel: &'a dyn Cancellation,
    /// When the run must end.
    pub deadline: Instant,
    /// The time the run had in all (for messages).
    pub timeout: Duration,
    /// The run's observation (locks, work counters), cut before and after each file.
    pub observation: &'a Observation,
}

/// The tables' states now, when rewrites are watched, as the point where migration `owner`
/// (of the points' own numbering) ended; a failure to read them (even after reconnecting) is
/// noted and is a gap of the file's observation, into `gaps`.
fn tables_at(
    observer: &Observation,
    owner: Option<usize>,
    note: &dyn Fn(&str),
    gaps: &mut Vec<Gap>,
) -> Option<rewrites::StatePoint> {
    let snapshot = observer
        .tables()?
        .map_err(|e| {
            note(&format!("rewrites: could not read the tables: {e}"));
            gaps.push(Gap::point(Part::Rewrites, Local::now(), &e.to_string()));
        })
        .ok();
    Some(rewrites::StatePoint {
        owner,
        snapshot,
        begun: Vec::new(),
    })
}

/// Applies `files` in order to the target database.
pub fn apply(target: &SqlTarget<'_>, files: &[SqlFile]) -> SqlRun {
    let mut run = SqlRun {
        migrations: Vec::new(),
        end: SqlEnd::Completed,
        last_file: files.last().map(|f| f.number.clone()),
    };
    let note = |text: &str| {
        let _ = target.log.line(TAG, text);
    };
    let table = target.version_table;
    if !is_identifier(table) {
        run.end = SqlEnd::Error(SqlFilesError::TableName(table.to_string()).to_string());
        return run;
    }
    let server = target.spec.server();
    let db = target.database;
    let create = format!("CREATE TABLE IF NOT EXISTS {table} (version VARCHAR(64) NOT NULL)");
    if let Err(e) = server.execute(db, &create) {
        note(&format!("cannot create the version table {table}: {e}"));
        run.end = SqlEnd::Error(format!("cannot create the version table {table}: {e}"));
        return run;
    }
    let current = match server.schema_version(db, &VersionSource::Table(table.to_string())) {
        Ok(v) => v.map(|v| normalize(&v)),
        Err(e) => {
            note(&format!("cannot read the version table {table}: {e}"));
            run.end = SqlEnd::Error(format!("cannot read the version table {table}: {e}"));
            return run;
        }
    };
    note(&format!(
        "{} SQL migration(s); the database is at version {}",
        files.len(),
        current.as_deref().unwrap_or("base (none recorded)")
    ));

    let mut previous = "base".to_string();
    // The tables read after a file are those before the next one (only the version table
    // changes in between): one read per file.
    let mut tables_before: Option<rewrites::StatePoint> = None;
    for file in files {
        let name = file_name(&file.path);
        let from = std::mem::replace(&mut previous, file.number.clone());
        if let Some(cur) = &current {
            if !cmp_numbers(&file.number, cur).is_gt() {
                note(&format!("skipping {name}: already at version {cur}"));
                continue;
            }
        }
        if target.cancel.is_cancelled() {
            note("cancelled: not applying the remaining files");
            run.end = SqlEnd::Cancelled;
            return run;
        }
        if Instant::now() >= target.deadline {
            note(&format!(
                "timed out after {}: not applying the remaining files",
                seconds(target.timeout)
            ));
            run.end = SqlEnd::TimedOut(target.timeout);
            return run;
        }
        let sql = match fs::read_to_string(&file.path) {
            Ok(sql) => sql,
            Err(e) => {
                let message = format!("cannot read {}: {e}", file.path.display());
                note(&message);
                run.end = SqlEnd::Failed {
                    file: name,
                    message,
                };
                return run;
            }
        };
        // What came before this file belongs to no migration.
        target.observation.cut();
        let mut points = Vec::new();
        let mut gaps = Vec::new();
        points.extend(
            tables_before
                .take()
                .or_else(|| tables_at(target.observation, None, &note, &mut gaps)),
        );
        target
            .observation
            .log_events(target.log, crate::engine::NOTE_TAG, &str::to_string);
        let start = Local::now();
        let _ = target
            .log
            .line_at(&start, TAG, &format!("{from} -> {}... {name}", file.number));
        let mut record = MigrationRecord {
            from,
            to: file.number.clone(),
            description: file.name.clone(),
            start: start.naive_local(),
            end: None,
            counters: BTreeMap::new(),
            locks: Vec::new(),
            rewrites: Vec::new(),
            observation_gaps: Vec::new(),
        };
        let outcome = execute_watched(target, &server, sql);
        let end = Local::now();
        let cut = target.observation.cut();
        record.locks = cut.locks;
        record.observation_gaps = cut.gaps;
        points.extend(tables_at(target.observation, Some(0), &note, &mut gaps));
        record.observation_gaps.append(&mut gaps);
        if !points.is_empty() {
            let locks = [record.locks.clone()];
            record.rewrites = rewrites::attribute(&points, &locks)
                .remove(&0)
                .unwrap_or_default();
            tables_before = points
                .pop()
                .map(|p| rewrites::StatePoint { owner: None, ..p });
        }
        match outcome {
            Watched::Done(Ok(())) => {
                record.end = Some(end.naive_local());
                record.counters = cut.counters.unwrap_or_default();
                let ms = (end - start).num_milliseconds();
                let _ = target.log.line_at(&end, TAG, &format!("done ({ms} ms)"));
                target
                    .observation
                    .log_events(target.log, crate::engine::NOTE_TAG, &str::to_string);
                run.migrations.push(record);
                let record_version = format!(
                    "DELETE FROM {table}; INSERT INTO {table} (version) VALUES ('{}')",
                    file.number
                );
                if let Err(e) = server.execute(db, &record_version) {
                    note(&format!("cannot record version {}: {e}", file.number));
                    run.end = SqlEnd::Error(format!("cannot record version {}: {e}", file.number));
                    return run;
                }
            }
            Watched::Done(Err(e)) => {
                let message = e.to_string();
                let _ = target
                    .log
                    .line_at(&end, TAG, &format!("ERROR in {name}: {message}"));
                target
                    .observation
                    .log_events(target.log, crate::engine::NOTE_TAG, &str::to_string);
                run.migrations.push(record);
                run.end = SqlEnd::Failed {
                    file: name,
                    message,
                };
                return run;
            }
            Watched::Stopped(why) => {
                target
                    .observation
                    .log_events(target.log, crate::engine::NOTE_TAG, &str::to_string);
                run.migrations.push(record);
                run.end = why;
                return run;
            }
        }
    }
    note("all SQL migrations applied");
    run
}

enum Watched {
    Done(Result<(), EngineError>),
    Stopped(SqlEnd),
}

/// Runs `sql` on a thread of its own and waits for it, the cancellation or the deadline.
fn execute_watched(target: &SqlTarget<'_>, server: &Server, sql: String) -> Watched {
    let (tx, rx) = mpsc::channel();
    let spec = target.spec.clone();
    let db = target.database.to_string();
    let spawned = thread::Builder::new()
        .name("th-sql-file".into())
        .spawn(move || {
            let result = spec.server().execute(&db, &sql);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Watched::Done(Err(EngineError::Other(format!(
            "cannot start a thread: {e}"
        ))));
    }
    loop {
        let stop = if target.cancel.is_cancelled() {
            Some(SqlEnd::Cancelled)
        } else if Instant::now() >= target.deadline {
            Some(SqlEnd::TimedOut(target.timeout))
        } else {
            None
        };
        if let Some(why) = stop {
            let _ = target.log.line(
                TAG,
                &match &why {
                    SqlEnd::Cancelled => "cancelled: stopping the running statement".to_string(),
                    _ => format!(
                        "timed out after {}: stopping the running statement",
                        seconds(target.timeout)
                    ),
                },
            );
            stop_statements(target, server);
            if rx.recv_timeout(STOP_WAIT).is_err() {
                let _ = target.log.line(
                    TAG,
                    "the statement did not stop; leaving it to the database drop",
                );
            }
            return Watched::Stopped(why);
        }
        // The observation's news (the lock sampler stopped, resumed) as the file runs.
        target
            .observation
            .log_events(target.log, crate::engine::NOTE_TAG, &str::to_string);
        let wait = POLL.min(target.deadline.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(result) => return Watched::Done(result),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Watched::Done(Err(EngineError::Other(
                    "the statement's thread ended without a result".into(),
                )))
            }
        }
    }
}

/// Asks the server to stop other sessions' statements in the run's database.
fn stop_statements(target: &SqlTarget<'_>, server: &Server) {
    let db = target.database;
    // The name is ours (letters, digits, '_'), so quoting it inline is safe.
    let sql = match target.spec.engine {
        Engine::PostgreSql => format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
        Engine::MySql | Engine::MariaDb => format!(
            "BEGIN NOT ATOMIC \
               FOR s IN (SELECT id FROM information_schema.processlist \
                         WHERE db = '{db}' AND id <> CONNECTION_ID()) DO \
                 KILL QUERY s.id; \
               END FOR; \
             END"
        ),
        Engine::Sqlite => return,
    };
    if let Err(e) = server.execute(db, &sql) {
        let _ = target
            .log
            .line(TAG, &format!("could not stop the statement: {e}"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lists_numbered_files_in_numeric_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "010_ten.sql",
            "002_two.sql",
            "1_one.sql",
            "notes.sql",
            "003_three.txt",
            "x_4.sql",
        ] {
            fs::write(dir.path().join(f), "").unwrap();
        }
        fs::create_dir(dir.path().join("005_dir.sql")).unwrap();
        let files = list(dir.path()).unwrap();
        let got: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.number.as_str(), f.name.as_str()))
            .collect();
        assert_eq!(got, [("1", "one"), ("2", "two"), ("10", "ten")]);
        fs::write(dir.path().join("0010_again.sql"), "").unwrap();
        assert!(matches!(
            list(dir.path()),
            Err(SqlFilesError::Duplicate { .. })
        ));
        assert!(matches!(
            list(&dir.path().join("missing")),
            Err(SqlFilesError::Read { .. })
        ));
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("th_schema_version"));
        assert!(is_identifier("_v1"));
        assert!(!is_identifier("1v"));
        assert!(!is_identifier("a;drop"));
        assert!(!is_identifier(""));
        assert!(!is_identifier(&"a".repeat(64)));
    }
}
