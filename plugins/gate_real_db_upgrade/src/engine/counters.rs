//! Work counters of one run: the rows its migrations read, inserted, updated and deleted in
//! the run's database only (and, on PostgreSQL, the WAL written), read from a side
//! connection at each migration boundary ([`super::Observation::cut`]).
//!
//! Where each engine's figures come from, best first (the first the server offers wins; the
//! [`CounterReader::source`] and [`CounterReader::scope`] say which was used):
//!
//! | engine | source | scope | counters |
//! |---|---|---|---|
//! | MariaDB (run-private `mariadbd`, the default) | `SHOW GLOBAL STATUS` of a server that holds the run's database only: `Rows_read`, `Handler_write`, `Handler_update`, `Handler_delete` (MariaDB; MySQL's `Innodb_rows_*` when there) | `run-private server` | `Innodb_rows_read` (rows read, every engine: a sequence table's rows too), `Innodb_rows_inserted`, `Innodb_rows_updated`, `Innodb_rows_deleted` |
//! | MariaDB/MySQL | `performance_schema.table_io_waits_summary_by_table` of the run's schema (MySQL: on by default) | `database` | `Innodb_rows_read` (row fetches), `Innodb_rows_inserted`, `Innodb_rows_updated`, `Innodb_rows_deleted` |
//! | MariaDB | `information_schema.TABLE_STATISTICS` of the run's schema (`userstat`, switched on here when off and the account may) | `database` | `Innodb_rows_read`, `rows_changed` (inserted + updated + deleted: no split) |
//! | MariaDB/MySQL | `SHOW GLOBAL STATUS` (`Innodb_rows_*`, else `Rows_read`/`Handler_*`) | `server`: other sessions' work is counted too | as the first row |
//! | PostgreSQL | `pg_stat_user_tables` of the run's database | `database` | `Innodb_rows_read` (`seq_tup_read + idx_tup_fetch`), `Innodb_rows_inserted` (`n_tup_ins`), `Innodb_rows_updated` (`n_tup_upd`), `Innodb_rows_deleted` (`n_tup_del`) |
//! | PostgreSQL | `pg_current_wal_insert_lsn()` | `server` (WAL has no per-database figure without `pg_stat_statements`) | `wal_bytes` |
//!
//! The InnoDB names are the ones the dataset limits (`XInnodb_rows_changed`,
//! `Innodb_rows_read`) have always used, so the same limits apply to every engine.
//!
//! Per-table figures are summed over the run database's tables: the observer's own queries
//! (system views only) are not counted, nor other databases' work. On a run-private server the
//! server's own counters cost nothing to keep (MariaDB keeps them always) and the observer's
//! queries add nothing to them: `information_schema` and `SHOW STATUS` read through internal
//! temporary tables (`Rows_tmp_read`, `Handler_tmp_write`), which are not counted; the server
//! holds no other database to work on. A table dropped during a
//! migration takes its figures with it (its work is not counted); a table created counts from
//! zero.
//!
//! PostgreSQL publishes a session's table counts when it is idle outside a transaction block,
//! at most once a second (PostgreSQL 15's shared-memory statistics), and when it exits: a
//! migration committed on its own (alembic's `transaction_per_migration`, sqlalchemy-migrate)
//! that ran for over a second is published before the tool prints its next line, so its
//! figures are exact; work still in an open transaction at a boundary (alembic's default: one
//! transaction for the whole run) is counted in the migration during which it is published
//! (at the latest the last one). The WAL figure is immediate.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::Connection as _;

use super::{Backend, Endpoint, EngineError, Server};

/// The counter names of a four-way split (rows read, inserted, updated, deleted).
pub const SPLIT: [&str; 4] = [
    "Innodb_rows_read",
    "Innodb_rows_inserted",
    "Innodb_rows_updated",
    "Innodb_rows_deleted",
];
/// MariaDB's `TABLE_STATISTICS` (`userstat`): rows read, rows changed.
const USERSTAT: [&str; 2] = ["Innodb_rows_read", "rows_changed"];
/// The WAL bytes counter (PostgreSQL).
pub const WAL_BYTES: &str = "wal_bytes";

/// MariaDB/MySQL per-table I/O of the run's schema (`COUNT_FETCH`: rows read).
const PERF_SCHEMA: &str = "\
    SELECT CAST(OBJECT_NAME AS CHAR), CAST(COUNT_FETCH AS SIGNED), \
           CAST(COUNT_INSERT AS SIGNED), CAST(COUNT_UPDATE AS SIGNED), \
           CAST(COUNT_DELETE AS SIGNED) \
    FROM performance_schema.table_io_waits_summary_by_table \
    WHERE OBJECT_TYPE = 'TABLE' AND OBJECT_SCHEMA = ?";

/// MariaDB's per-table statistics of the run's schema (`userstat`).
const TABLE_STATISTICS: &str = "\
    SELECT CAST(TABLE_NAME AS CHAR), CAST(ROWS_READ AS SIGNED), CAST(ROWS_CHANGED AS SIGNED) \
    FROM information_schema.TABLE_STATISTICS WHERE TABLE_SCHEMA = ?";

/// PostgreSQL's per-table counts of the database connected to (its user tables only).
const PG_TABLES: &str = "\
    SELECT relid::oid::bigint, \
           COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0), \
           n_tup_ins, n_tup_upd, n_tup_del \
    FROM pg_stat_user_tables";

/// The server's WAL insert position in bytes.
const PG_WAL: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint";

/// The other sessions on the database connected to, but those given (the worker's own) and
/// the run's side connections (`turbo-hipster locks`, …: one reconnected has a new pid).
const PG_OTHERS: &str = "\
    SELECT count(*) FROM pg_stat_activity \
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> ALL($1) \
      AND application_name NOT LIKE 'turbo-hipster %'";

/// The `application_name` of the reader's PostgreSQL connection.
const APPLICATION_NAME: &str = "turbo-hipster counters";

/// The sessions on the database connected to now: when the reader starts, the worker's own
/// (the lock sampler's).
const PG_SESSIONS: &str = "\
    SELECT pid FROM pg_stat_activity WHERE datname = current_database()";

/// How long [`CounterReader::settle`] waits for the tool's sessions to publish their counts.
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// One reading of the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Per table: one value per counter name.
    tables: BTreeMap<String, Vec<i64>>,
    /// Server-wide counters (`wal_bytes`, or the `SHOW GLOBAL STATUS` ones).
    totals: BTreeMap<String, i64>,
}

impl Reading {
    /// What happened between `self` (before) and `after`, under the counter `names` of the
    /// per-table values. A table missing before counts from zero; one whose figures went down
    /// (dropped and created again) counts from zero too.
    pub fn delta(&self, after: &Reading, names: &[&str]) -> BTreeMap<String, i64> {
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        if !after.tables.is_empty() || !names.is_empty() {
            let mut sums = vec![0i64; names.len()];
            for (table, values) in &after.tables {
                let before = self.tables.get(table);
                let went_down = before.is_some_and(|b| b.iter().zip(values).any(|(b, a)| a < b));
                for (i, sum) in sums.iter_mut().enumerate() {
                    let a = values.get(i).copied().unwrap_or(0);
                    let b = if went_down {
                        0
                    } else {
                        before.and_then(|b| b.get(i)).copied().unwrap_or(0)
                    };
                    *sum = sum.saturating_add(a - b);
                }
            }
            for (name, sum) in names.iter().zip(sums) {
                out.insert((*name).to_string(), sum);
            }
        }
        for (name, a) in &after.totals {
            if let Some(b) = self.totals.get(name) {
                out.insert(name.clone(), a.saturating_sub(*b));
            }
        }
        out
    }
}

/// Where the counters are read.
enum Source {
    PerfSchema(MySqlConnection, String),
    UserStat(MySqlConnection, String),
    /// `SHOW GLOBAL STATUS` of a run-private server: the run's own work.
    RunPrivate(MySqlConnection),
    /// `SHOW GLOBAL STATUS`, read through a connection of its own each time.
    Global,
    /// With the sessions that were there when it started (the worker's own).
    Postgres(PgConnection, Vec<i32>),
}

/// A side connection reading one run's counters.
pub struct CounterReader {
    runtime: tokio::runtime::Runtime,
    ep: Endpoint,
    /// The run database.
    db: String,
    source: Mutex<Option<Source>>,
    name: &'static str,
    scope: &'static str,
    names: &'static [&'static str],
}

impl CounterReader {
    /// What the counters are read from (`performance_schema.table_io_waits_summary_by_table`,
    /// `pg_stat_user_tables + pg_current_wal_insert_lsn()`, …).
    pub fn source(&self) -> &'static str {
        self.name
    }

    /// `database` when the row counts are the run database's only, `run-private server` when
    /// they are a server's that holds the run's database only, `server` when they are
    /// server-wide (other sessions' work included).
    pub fn scope(&self) -> &'static str {
        self.scope
    }

    /// The per-table counter names.
    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    /// The counters now; when the reading fails, the side connection is made again and read
    /// once more: then the first failure comes along (for the log).
    ///
    /// # Errors
    /// The reading failed, and so did the reconnection or the second reading (both said).
    pub fn read_retrying(&self) -> Result<(Reading, Option<String>), EngineError> {
        let mut guard = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(source) = guard.as_mut() else {
            return Err(EngineError::Other("the counter reader is closed".into()));
        };
        let (ep, db) = (&self.ep, self.db.as_str());
        on_runtime(&self.runtime, || async {
            let first = match read(ep, source).await {
                Ok(reading) => return Ok((reading, None)),
                Err(e) => e.to_string(),
            };
            let again = match reconnect(ep, db, source).await {
                Ok(()) => read(ep, source).await,
                Err(e) => Err(e),
            };
            again
                .map(|reading| (reading, Some(first.clone())))
                .map_err(|e| EngineError::Other(format!("{first}; after reconnecting: {e}")))
        })
    }

    /// PostgreSQL: waits (at most 3 s) until the database's sessions that were not there when
    /// the reader started (the tool's) have gone, then a moment for their exit to publish their counts; others: nothing.
    pub fn settle(&self) {
        let mut guard = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(Source::Postgres(conn, ours)) = guard.as_mut() else {
            return;
        };
        let deadline = Instant::now() + SETTLE_LIMIT;
        let _ = on_runtime(&self.runtime, || async {
            while Instant::now() < deadline {
                let others: i64 = sqlx::query_scalar(PG_OTHERS)
                    .bind(&*ours)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap_or(0);
                if others == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A backend leaves pg_stat_activity just before it publishes its counts.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<(), EngineError>(())
        });
    }
}

impl Drop for CounterReader {
    fn drop(&mut self) {
        let source = self
            .source
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(source) = source {
            let _ = on_runtime(&self.runtime, || async {
                match source {
                    Source::PerfSchema(c, _) | Source::UserStat(c, _) | Source::RunPrivate(c) => {
                        let _ = c.close().await;
                    }
                    Source::Global => {}
                    Source::Postgres(c, _) => {
                        let _ = c.close().await;
                    }
                }
                Ok::<(), EngineError>(())
            });
        }
    }
}

/// Runs the future `make` gives on `runtime`, from a thread of its own when the caller is
/// inside a runtime (the future is made on the thread that runs it).
fn on_runtime<T, M, F>(runtime: &tokio::runtime::Runtime, make: M) -> Result<T, EngineError>
where
    M: FnOnce() -> F + Send,
    F: std::future::Future<Output = Result<T, EngineError>>,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(make());
    }
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("th-counters".into())
            .spawn_scoped(scope, || runtime.block_on(make()))
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(e) => Err(EngineError::Other(format!("cannot start a thread: {e}"))),
        }
    })
}

/// Makes `source`'s connection again (the old one is dropped: it failed).
async fn reconnect(ep: &Endpoint, db: &str, source: &mut Source) -> Result<(), EngineError> {
    match source {
        Source::PerfSchema(conn, _) | Source::UserStat(conn, _) | Source::RunPrivate(conn) => {
            *conn = super::mysql::connect(ep, Some(db)).await?;
        }
        // A connection of its own each time already.
        Source::Global => {}
        Source::Postgres(conn, _) => {
            *conn = super::postgres::connect_as(ep, db, APPLICATION_NAME).await?;
        }
    }
    Ok(())
}

async fn read(ep: &Endpoint, source: &mut Source) -> Result<Reading, EngineError> {
    let my = |e: sqlx::Error| super::mysql::classify(ep, &e);
    let pg = |e: sqlx::Error| super::postgres::classify_error(ep, &e);
    let mut reading = Reading::default();
    match source {
        Source::PerfSchema(conn, db) => {
            let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(PERF_SCHEMA)
                .bind(db.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(my)?;
            for (t, r, i, u, d) in rows {
                reading.tables.insert(t, vec![r, i, u, d]);
            }
        }
        Source::UserStat(conn, db) => {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(TABLE_STATISTICS)
                .bind(db.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(my)?;
            for (t, r, c) in rows {
                reading.tables.insert(t, vec![r, c]);
            }
        }
        Source::RunPrivate(conn) => {
            let status = super::mysql::counters_on(ep, conn).await?;
            reading.totals = SPLIT
                .iter()
                .filter_map(|name| Some(((*name).to_string(), *status.get(*name)?)))
                .collect();
        }
        Source::Global => {
            reading.totals = super::mysql::counters(ep).await?;
        }
        Source::Postgres(conn, _) => {
            sqlx::raw_sql("SELECT pg_stat_clear_snapshot()")
                .execute(&mut *conn)
                .await
                .map_err(pg)?;
            let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(PG_TABLES)
                .fetch_all(&mut *conn)
                .await
                .map_err(pg)?;
            for (relid, r, i, u, d) in rows {
                reading.tables.insert(relid.to_string(), vec![r, i, u, d]);
            }
            let wal: i64 = sqlx::query_scalar(PG_WAL)
                .fetch_one(&mut *conn)
                .await
                .map_err(pg)?;
            reading.totals.insert(WAL_BYTES.to_string(), wal);
        }
    }
    Ok(reading)
}

/// A MariaDB/MySQL source for `db`: on a run-private server its own status counters; else
/// `performance_schema` when on, else MariaDB's `userstat` (switched on when off and the
/// account may), else the server-wide status counters.
async fn mysql_source(
    ep: &Endpoint,
    db: &str,
    run_private: bool,
) -> Result<(Source, &'static str, &'static str, &'static [&'static str]), EngineError> {
    let mut conn = super::mysql::connect(ep, Some(db)).await?;
    if run_private {
        // Every counter of the split must be there (MariaDB's stand-ins or MySQL's own).
        let status = super::mysql::counters_on(ep, &mut conn).await;
        if status.is_ok_and(|s| SPLIT.iter().all(|n| s.contains_key(*n))) {
            return Ok((
                Source::RunPrivate(conn),
                "SHOW GLOBAL STATUS (run-private server)",
                "run-private server",
                &[],
            ));
        }
    }
    let probe = sqlx::query_as::<_, (String, i64, i64, i64, i64)>(PERF_SCHEMA)
        .bind(db)
        .fetch_all(&mut conn)
        .await;
    let perf_on: bool = sqlx::query_scalar::<_, i64>("SELECT CAST(@@performance_schema AS SIGNED)")
        .fetch_one(&mut conn)
        .await
        .is_ok_and(|on| on != 0);
    if perf_on && probe.is_ok() {
        return Ok((
            Source::PerfSchema(conn, db.to_string()),
            "performance_schema.table_io_waits_summary_by_table",
            "database",
            &SPLIT,
        ));
    }
    let userstat = |v: Result<i64, sqlx::Error>| v.is_ok_and(|v| v != 0);
    let mut on = userstat(
        sqlx::query_scalar("SELECT CAST(@@global.userstat AS SIGNED)")
            .fetch_one(&mut conn)
            .await,
    );
    if !on
        && sqlx::raw_sql("SET GLOBAL userstat = 1")
            .execute(&mut conn)
            .await
            .is_ok()
    {
        on = userstat(
            sqlx::query_scalar("SELECT CAST(@@global.userstat AS SIGNED)")
                .fetch_one(&mut conn)
                .await,
        );
        if on {
            tracing::info!("{ep}: switched userstat on for per-table work counters");
        }
    }
    if on
        && sqlx::query_as::<_, (String, i64, i64)>(TABLE_STATISTICS)
            .bind(db)
            .fetch_all(&mut conn)
            .await
            .is_ok()
    {
        return Ok((
            Source::UserStat(conn, db.to_string()),
            "information_schema.TABLE_STATISTICS (userstat)",
            "database",
            &USERSTAT,
        ));
    }
    let _ = conn.close().await;
    Ok((Source::Global, "SHOW GLOBAL STATUS", "server", &[]))
}

impl Server {
    /// A side connection reading the work counters of database `db` (see the module).
    ///
    /// # Errors
    /// SQLite (no counters), or the side connection cannot be made.
    pub fn count_work(&self, db: &str) -> Result<CounterReader, EngineError> {
        super::check_database_name(db)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Other(format!("counter reader: {e}")))?;
        let (ep, source, name, scope, names) = match self.backend() {
            Backend::MySql(ep) => {
                let private = self.is_run_private();
                let (source, name, scope, names) =
                    on_runtime(&runtime, || mysql_source(&ep, db, private))?;
                (ep, source, name, scope, names)
            }
            Backend::Postgres(ep) => {
                let (conn, ours) = on_runtime(&runtime, || async {
                    let mut conn = super::postgres::connect_as(&ep, db, APPLICATION_NAME).await?;
                    match sqlx::query_scalar::<_, i32>(PG_SESSIONS)
                        .fetch_all(&mut conn)
                        .await
                    {
                        Ok(ours) => Ok((conn, ours)),
                        Err(e) => {
                            let _ = conn.close().await;
                            Err(super::postgres::classify_error(&ep, &e))
                        }
                    }
                })?;
                (
                    ep,
                    Source::Postgres(conn, ours),
                    "pg_stat_user_tables, pg_current_wal_insert_lsn()",
                    "database (WAL: server)",
                    &SPLIT[..],
                )
            }
            Backend::Sqlite => {
                return Err(EngineError::Other(format!(
                    "work counters are not available for {}",
                    self.engine.label()
                )))
            }
        };
        Ok(CounterReader {
            runtime,
            ep,
            db: db.to_string(),
            source: Mutex::new(Some(source)),
            name,
            scope,
            names,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reading(tables: &[(&str, &[i64])], totals: &[(&str, i64)]) -> Reading {
        Reading {
            tables: tables
                .iter()
                .map(|(t, v)| (t.to_string(), v.to_vec()))
                .collect(),
            totals: totals.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn deltas_sum_tables_new_ones_from_zero_recreated_ones_from_zero() {
        let before = reading(
            &[
                ("a", &[10, 5, 0, 0]),
                ("gone", &[7, 7, 7, 7]),
                ("re", &[9, 9, 0, 0]),
            ],
            &[("wal_bytes", 1000)],
        );
        let after = reading(
            &[
                ("a", &[15, 6, 2, 0]),
                ("new", &[0, 100, 0, 1]),
                ("re", &[1, 3, 0, 0]),
            ],
            &[("wal_bytes", 5000)],
        );
        let d = before.delta(&after, &SPLIT);
        assert_eq!(d["Innodb_rows_read"], 5 + 1);
        assert_eq!(d["Innodb_rows_inserted"], 1 + 100 + 3);
        assert_eq!(d["Innodb_rows_updated"], 2);
        assert_eq!(d["Innodb_rows_deleted"], 1);
        assert_eq!(d["wal_bytes"], 4000);
        // Server-wide counters without a "before" give nothing.
        let d = Reading::default().delta(&reading(&[], &[("Rows_read", 3)]), &[]);
        assert!(d.is_empty(), "{d:?}");
    }
}
