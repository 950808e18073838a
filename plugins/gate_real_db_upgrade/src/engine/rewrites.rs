//! Rewrite detection: which migrations rewrote a table (copied all its rows into new storage),
//! and how big the table was.
//!
//! A [`TableProbe`] (a side connection to the run database, kept by the
//! [`super::LockObserver`] so that it is read at the same migration boundaries as the locks)
//! reads the [`TableStates`]: per table, the identity of its storage and its size.
//!
//! - PostgreSQL: `pg_class.relfilenode` (a rewrite — `ALTER TABLE … ADD COLUMN … DEFAULT
//!   random()`, `ALTER COLUMN … TYPE`, `VACUUM FULL`, `CLUSTER` — writes a new file) and
//!   `pg_total_relation_size` (heap, TOAST and indexes).
//! - MariaDB/MySQL: the InnoDB table id (`information_schema.INNODB_SYS_TABLES`; MySQL 8:
//!   `INNODB_TABLES`), which a copying `ALTER` (and an in-place rebuild such as `FORCE` or a new
//!   primary key) changes and an `ALGORITHM=INSTANT` or `NOCOPY` one does not; size
//!   `DATA_LENGTH + INDEX_LENGTH` of `information_schema.TABLES` (InnoDB's estimate). Tables of
//!   other engines have no id: their rewrites are not seen.
//!
//! A side connection sees another session's catalog change only once it is committed. MariaDB
//! commits each DDL statement, so the state read at a migration's end shows its rewrites; on
//! PostgreSQL a tool that runs all migrations in one transaction (alembic's default) shows them
//! all at the end. [`attribute`] gives each change to the migrations that could have made it:
//! those between the last state that did not show it and the first that did, narrowed to the
//! ones seen holding a lock that rewrites need (PostgreSQL `ACCESS EXCLUSIVE`; MariaDB a
//! metadata lock that blocks writes) on that table; when more than one remains, each of them
//! gets it marked uncertain.
//!
//! A table whose storage changed and that is empty afterwards was truncated, not rewritten
//! (`TRUNCATE` also makes new storage): it is left out.

use std::collections::BTreeMap;

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::Connection as _;

use super::{Backend, Blocks, EngineError, Server, TableLocks};

/// One table's storage at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableState {
    /// What identifies its storage (PostgreSQL relfilenode, InnoDB table id); `None`: unknown.
    pub storage: Option<i64>,
    /// Its size in bytes, indexes included; `None` when it could not be read without waiting
    /// (PostgreSQL: another session held ACCESS EXCLUSIVE on it; reading the size would wait
    /// for that lock).
    pub bytes: Option<i64>,
    /// Whether it holds no row, when known (PostgreSQL: its main fork is empty; MariaDB: InnoDB's row
    /// estimate is 0).
    pub empty: Option<bool>,
}

/// Every table of the run database, by name.
pub type TableStates = BTreeMap<String, TableState>;

/// What one read of the run database saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Every table.
    pub tables: TableStates,
    /// When it was read, seconds on the server's clock.
    pub at: f64,
    /// When the oldest transaction of another session that had written and not yet committed
    /// began, on the same clock (PostgreSQL; `None` when there was none, and always on
    /// MariaDB/MySQL, whose DDL commits at once).
    pub open_since: Option<f64>,
}

/// A rewrite of one table by one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The table.
    pub table: String,
    /// Its size before the rewrite, in bytes.
    pub bytes: i64,
    /// Whether it is certain that this migration did it (`false`: several could have, as
    /// when their work was committed together or the tables were read after the next one had
    /// begun, and this one is the likeliest: see [`attribute`]).
    pub certain: bool,
}

/// What both PostgreSQL table reads end with: the read's time and the start of the oldest
/// open writing transaction of another session (both in epoch seconds), from the run
/// database's own tables (catalogs left out; a partitioned table has no storage of its own,
/// its partitions are tables).
macro_rules! postgres_tables_tail {
    () => {
        "extract(epoch FROM clock_timestamp())::float8, \
           (SELECT extract(epoch FROM min(a.xact_start))::float8 FROM pg_stat_activity a \
            WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
              AND a.backend_xid IS NOT NULL) \
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'm') \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
    };
}

/// PostgreSQL: every table's storage identity and size. Reading a table's size takes ACCESS
/// SHARE on it: the size of a table another session holds ACCESS EXCLUSIVE on is not read (the
/// probe would wait for the migration), and the probe's `lock_timeout` ends a read that races
/// with a lock taken meanwhile.
const POSTGRES_TABLES: &str = concat!(
    "WITH locked AS (SELECT relation FROM pg_locks \
                    WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' \
                      AND database = (SELECT oid FROM pg_database \
                                      WHERE datname = current_database()) \
                      AND pid <> pg_backend_pid()) \
    SELECT c.relname::text, c.relfilenode::bigint, \
           CASE WHEN c.oid NOT IN (SELECT relation FROM locked) \
                THEN pg_total_relation_size(c.oid) END, \
           CASE WHEN c.oid NOT IN (SELECT relation FROM locked) \
                THEN pg_relation_size(c.oid) = 0 END, ",
    postgres_tables_tail!()
);

/// [`POSTGRES_TABLES`] without the sizes, which take no lock: read when the sizes' read ran
/// into a lock taken between its look at `pg_locks` and the size (the migration's next
/// statement, begun just after its boundary was printed). The storage identities are what
/// attribution needs; the last sizes read stand.
const POSTGRES_TABLES_NO_SIZES: &str = concat!(
    "SELECT c.relname::text, c.relfilenode::bigint, NULL::bigint, NULL::bool, ",
    postgres_tables_tail!()
);

/// PostgreSQL's `lock_not_available`: a `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The probe never waits for a migration's lock for long: a read that would is abandoned (that
/// point is then skipped).
const POSTGRES_SESSION: &str = "SET lock_timeout = '100ms'";
/// MariaDB/MySQL: `information_schema.TABLES` opens each table under a metadata lock; one it
/// cannot get within a second is reported without its figures.
const MYSQL_SESSION: &str = "SET SESSION lock_wait_timeout = 1";

/// MariaDB: the tables of the schema with their InnoDB table id (`#sql…`: an `ALTER`'s
/// temporary copy, left out).
const MARIADB_TABLES: &str = "\
    SELECT t.TABLE_NAME, i.TABLE_ID, \
           CAST(t.DATA_LENGTH + t.INDEX_LENGTH AS SIGNED), \
           t.TABLE_ROWS = 0, UNIX_TIMESTAMP(NOW(6)) + 0e0 \
    FROM information_schema.TABLES t \
    LEFT JOIN information_schema.INNODB_SYS_TABLES i \
      ON i.NAME = CONCAT(t.TABLE_SCHEMA, '/', t.TABLE_NAME) \
    WHERE t.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_NAME NOT LIKE '#sql%'";

/// MySQL 8: the same from `INNODB_TABLES`.
const MYSQL_TABLES: &str = "\
    SELECT t.TABLE_NAME, i.TABLE_ID, \
           CAST(t.DATA_LENGTH + t.INDEX_LENGTH AS SIGNED), \
           t.TABLE_ROWS = 0, UNIX_TIMESTAMP(NOW(6)) + 0e0 \
    FROM information_schema.TABLES t \
    LEFT JOIN information_schema.INNODB_TABLES i \
      ON i.NAME = CONCAT(t.TABLE_SCHEMA, '/', t.TABLE_NAME) \
    WHERE t.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_NAME NOT LIKE '#sql%'";

enum ProbeConnection {
    Postgres(PgConnection),
    MySql(MySqlConnection, String, &'static str),
}

/// A side connection reading the run database's [`TableStates`], on the calling thread.
pub struct TableProbe {
    runtime: tokio::runtime::Runtime,
    conn: Option<ProbeConnection>,
    /// The engine, for errors.
    ep: super::Endpoint,
    /// The run database.
    db: String,
}

/// The `application_name` of the probe's PostgreSQL connection.
const APPLICATION_NAME: &str = "turbo-hipster rewrites";

/// A probe connection to `db`, its session set.
async fn connect_probe(ep: &super::Endpoint, db: &str) -> Result<ProbeConnection, EngineError> {
    match ep.engine {
        super::Engine::PostgreSql => {
            let mut conn = super::postgres::connect_as(ep, db, APPLICATION_NAME).await?;
            sqlx::raw_sql(POSTGRES_SESSION)
                .execute(&mut conn)
                .await
                .map_err(|e| super::postgres::classify_error(ep, &e))?;
            Ok(ProbeConnection::Postgres(conn))
        }
        _ => {
            let mut conn = super::mysql::connect(ep, Some(db)).await?;
            sqlx::raw_sql(MYSQL_SESSION)
                .execute(&mut conn)
                .await
                .map_err(|e| super::mysql::classify(ep, &e))?;
            let sql = if ep.engine == super::Engine::MySql {
                MYSQL_TABLES
            } else {
                MARIADB_TABLES
            };
            Ok(ProbeConnection::MySql(conn, db.to_string(), sql))
        }
    }
}

impl TableProbe {
    /// [`TableProbe::read`]; when it fails, the side connection is made again and read once
    /// more: then the first failure comes along (for the log).
    ///
    /// # Errors
    /// The read failed, and so did the reconnection or the second read (both said).
    pub fn read_retrying(&mut self) -> Result<(Snapshot, Option<String>), EngineError> {
        let first = match self.read() {
            Ok(snapshot) => return Ok((snapshot, None)),
            Err(e) => e.to_string(),
        };
        let again = match self.runtime.block_on(connect_probe(&self.ep, &self.db)) {
            Ok(conn) => {
                // The old connection failed: dropped, not closed politely.
                self.conn = Some(conn);
                self.read()
            }
            Err(e) => Err(e),
        };
        again
            .map(|snapshot| (snapshot, Some(first.clone())))
            .map_err(|e| EngineError::Other(format!("{first}; after reconnecting: {e}")))
    }

    /// The state of every table now.
    ///
    /// # Errors
    /// The side connection failed.
    pub fn read(&mut self) -> Result<Snapshot, EngineError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(EngineError::Other("the table probe is closed".into()));
        };
        let ep = &self.ep;
        self.runtime.block_on(async {
            type Row = (String, Option<i64>, Option<i64>, Option<bool>);
            let (rows, at, open_since): (Vec<Row>, Option<f64>, Option<f64>) = match conn {
                ProbeConnection::Postgres(c) => {
                    type PgRow = (String, i64, Option<i64>, Option<bool>, f64, Option<f64>);
                    let rows: Vec<PgRow> =
                        match sqlx::query_as(POSTGRES_TABLES).fetch_all(&mut *c).await {
                            Err(sqlx::Error::Database(e))
                                if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                            {
                                sqlx::query_as(POSTGRES_TABLES_NO_SIZES)
                                    .fetch_all(&mut *c)
                                    .await
                            }
                            other => other,
                        }
                        .map_err(|e| super::postgres::classify_error(ep, &e))?;
                    let at = rows.first().map(|r| r.4);
                    let open = rows.first().and_then(|r| r.5);
                    let rows = rows
                        .into_iter()
                        .map(|(t, f, b, e, _, _)| (t, Some(f), b, e))
                        .collect();
                    (rows, at, open)
                }
                ProbeConnection::MySql(c, db, sql) => {
                    type MyRow = (String, Option<u64>, Option<i64>, Option<i64>, f64);
                    let rows: Vec<MyRow> = sqlx::query_as(sql)
                        .bind(db.as_str())
                        .fetch_all(&mut *c)
                        .await
                        .map_err(|e| super::mysql::classify(ep, &e))?;
                    let at = rows.first().map(|r| r.4);
                    let rows = rows
                        .into_iter()
                        .map(|(t, id, b, e, _)| {
                            (
                                t,
                                id.and_then(|i| i64::try_from(i).ok()),
                                b,
                                e.map(|e| e != 0),
                            )
                        })
                        .collect();
                    (rows, at, None)
                }
            };
            let tables = rows
                .into_iter()
                .map(|(table, storage, bytes, empty)| {
                    (
                        table,
                        TableState {
                            storage,
                            bytes,
                            empty,
                        },
                    )
                })
                .collect();
            Ok(Snapshot {
                tables,
                at: at.unwrap_or_default(),
                open_since,
            })
        })
    }
}

impl Drop for TableProbe {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(ProbeConnection::Postgres(c)) => {
                let _ = self.runtime.block_on(c.close());
            }
            Some(ProbeConnection::MySql(c, ..)) => {
                let _ = self.runtime.block_on(c.close());
            }
            None => {}
        }
    }
}

impl Server {
    /// A side connection to database `db` reading its tables' [`TableStates`].
    ///
    /// # Errors
    /// SQLite, or the connection cannot be made, or the first read fails.
    pub fn table_probe(&self, db: &str) -> Result<TableProbe, EngineError> {
        super::check_database_name(db)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Other(format!("table probe: {e}")))?;
        let ep = match self.backend() {
            Backend::Postgres(ep) | Backend::MySql(ep) => ep,
            Backend::Sqlite => {
                return Err(EngineError::Other(format!(
                    "rewrite detection is not available for {}",
                    self.engine.label()
                )))
            }
        };
        let conn = runtime.block_on(connect_probe(&ep, db))?;
        let mut probe = TableProbe {
            runtime,
            conn: Some(conn),
            ep,
            db: db.to_string(),
        };
        probe.read()?;
        Ok(probe)
    }
}

/// One observation point: the table states read there, and the migration whose work ends
/// there (`None`: before the first migration, or between migrations).
#[derive(Debug, Clone)]
pub struct StatePoint {
    /// The migration that ended at this point.
    pub owner: Option<usize>,
    /// What was read then; `None` when it could not be read.
    pub snapshot: Option<Snapshot>,
    /// The later migrations whose start lines had arrived before this point was read (the
    /// worker was still busy with the lines before): their work may show here too.
    pub begun: Vec<usize>,
}

/// Whether a lock on a table could be a rewrite's: PostgreSQL's `ACCESS EXCLUSIVE` (every
/// rewriting `ALTER TABLE` takes it), a MariaDB/MySQL metadata lock that blocks writes (a
/// copying `ALTER` holds `SHARED_NO_WRITE` for the copy).
fn could_rewrite(locks: &TableLocks) -> bool {
    let mode = locks.strongest;
    // PostgreSQL's modes that block only writes (`SHARE`, …) are `CREATE INDEX`'s and the
    // like; MariaDB's (`SHARED_NO_WRITE`, spelt with underscores) are a copy's.
    mode.blocks == Blocks::ReadsAndWrites
        || (mode.blocks == Blocks::Writes && mode.name.contains('_'))
}

/// The rewrites per migration (index into `locks`, the migrations' lock observations, empty
/// when not observed), from the table states at successive `points`. A change of a table's
/// storage between the last point that did not show it and the first that did was made by one
/// of the migrations that ended in between:
/// - one migration: it did it (commits at each migration, as MariaDB's DDL and the SQL files
///   do);
/// - several (one transaction for all, as alembic on PostgreSQL by default): the one seen
///   holding a rewrite's lock on the table, certain when it is the only one; when several
///   were (a lock is held until the commit, so every migration after the one that took it
///   holds it too), the first of them, uncertain; when none was (the lock was held for less
///   than a sampling interval), the last migration, uncertain;
/// - none (the change was seen between migrations): nobody's.
///
/// A point read after later migrations had begun ([`StatePoint::begun`]) adds them to the
/// candidates: the one seen holding a rewrite's lock gets it; when none was, the last of the
/// window's, uncertain.
///
/// Tables are in name order within a migration.
pub fn attribute(
    points: &[StatePoint],
    locks: &[Vec<TableLocks>],
) -> BTreeMap<usize, Vec<Rewrite>> {
    let mut out: BTreeMap<usize, Vec<Rewrite>> = BTreeMap::new();
    // The last readable state of each table and where it was read; its last known size.
    let mut last: BTreeMap<&str, (usize, TableState)> = BTreeMap::new();
    let mut sizes: BTreeMap<&str, i64> = BTreeMap::new();
    for (at, point) in points.iter().enumerate() {
        let Some(snapshot) = &point.snapshot else {
            continue;
        };
        for (table, now) in &snapshot.tables {
            if let Some((since, before)) = last.get(table.as_str()) {
                let changed = before.storage.is_some()
                    && now.storage.is_some()
                    && before.storage != now.storage;
                if changed && now.empty != Some(true) {
                    let owners: Vec<usize> = points[window_start(points, *since) + 1..=at]
                        .iter()
                        .filter_map(|p| p.owner)
                        .collect();
                    let found = culprit(&owners, &points[at].begun, table, locks);
                    if let Some((owner, certain)) = found {
                        out.entry(owner).or_default().push(Rewrite {
                            table: table.clone(),
                            bytes: sizes.get(table.as_str()).copied().unwrap_or(0),
                            certain,
                        });
                    }
                }
            }
            if let Some(bytes) = now.bytes {
                sizes.insert(table, bytes);
            }
            last.insert(table, (at, *now));
        }
    }
    for rewrites in out.values_mut() {
        rewrites.sort_by(|a, b| a.table.cmp(&b.table));
    }
    out
}

/// Where the window of a change first seen after point `since` starts (exclusive): `since`,
/// unless a transaction that had written was open then and began before the point before it;
/// then the last point read before that transaction began (the change may be any of its work).
/// A transaction that began after the point before `since` is the next migration's, begun
/// while its start line was on its way to us (one transaction per migration): it does not
/// widen the window.
fn window_start(points: &[StatePoint], since: usize) -> usize {
    let Some(open) = points[since].snapshot.as_ref().and_then(|s| s.open_since) else {
        return since;
    };
    let before = points[..since].iter().rposition(|p| p.snapshot.is_some());
    match points[..since]
        .iter()
        .rposition(|p| p.snapshot.as_ref().is_some_and(|s| s.at < open))
    {
        Some(j) if Some(j) == before => since,
        Some(j) => j,
        None => 0,
    }
}

/// Which of `owners` (in order), or of the migrations `later` begun before the read, rewrote
/// `table`, and whether that is certain ([`attribute`]): the only owner when none had begun;
/// else the one seen holding a rewrite's lock ([`lock_holder`]); none, the last of `owners`
/// (the read most likely came before a later one's change), uncertain.
fn culprit(
    owners: &[usize],
    later: &[usize],
    table: &str,
    locks: &[Vec<TableLocks>],
) -> Option<(usize, bool)> {
    if let ([only], []) = (owners, later) {
        return Some((*only, true));
    }
    let candidates: Vec<usize> = owners.iter().chain(later).copied().collect();
    lock_holder(&candidates, table, locks).or_else(|| owners.last().map(|m| (*m, false)))
}

/// The one of `candidates` seen holding a rewrite's lock on `table`, certain when it is the
/// only one; of several, the first, uncertain; `None` when none was.
fn lock_holder(
    candidates: &[usize],
    table: &str,
    locks: &[Vec<TableLocks>],
) -> Option<(usize, bool)> {
    let held: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|m| {
            locks
                .get(*m)
                .is_some_and(|l| l.iter().any(|l| l.table == table && could_rewrite(l)))
        })
        .collect();
    match held.as_slice() {
        [] => None,
        [only] => Some((*only, true)),
        [first, ..] => Some((*first, false)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::{LockMode, TableLocks};

    fn states(tables: &[(&str, i64, i64)]) -> TableStates {
        tables
            .iter()
            .map(|(t, s, b)| {
                (
                    t.to_string(),
                    TableState {
                        storage: Some(*s),
                        bytes: (*b >= 0).then_some(*b),
                        empty: (*b >= 0).then_some(*b == 0),
                    },
                )
            })
            .collect()
    }

    /// A point read at second `at` (the number of points so far) with a transaction open
    /// since `open_since`.
    fn point_in(
        owner: Option<usize>,
        at: f64,
        open_since: Option<f64>,
        tables: &[(&str, i64, i64)],
    ) -> StatePoint {
        StatePoint {
            owner,
            snapshot: Some(Snapshot {
                tables: states(tables),
                at,
                open_since,
            }),
            begun: Vec::new(),
        }
    }

    /// A point with every change committed.
    fn point(owner: Option<usize>, tables: &[(&str, i64, i64)]) -> StatePoint {
        point_in(owner, owner.map_or(0.0, |o| o as f64 + 1.0), None, tables)
    }

    fn held(table: &str, mode: &str) -> TableLocks {
        TableLocks {
            table: table.into(),
            strongest: LockMode::postgres(mode)
                .or_else(|| LockMode::metadata(mode))
                .unwrap(),
            longest_blocking: None,
            waited: false,
        }
    }

    /// A database name of its own for a test on a real server.
    fn unique_db() -> String {
        format!(
            "th_rw_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        )
    }

    /// The test server of `engine` (the default connection).
    fn test_server(engine: crate::engine::Engine) -> Server {
        Server::new(
            engine,
            crate::engine::Connection::default(),
            std::path::PathBuf::new(),
        )
    }

    /// Committed after each migration: each change belongs to the migration that ended there,
    /// with the size read before it; a truncated table is not a rewrite.
    #[test]
    fn a_change_seen_at_a_boundary_belongs_to_the_migration_that_ended_there() {
        let points = [
            point(None, &[("orders", 10, 5000), ("users", 20, 300)]),
            point(Some(0), &[("orders", 10, 6000), ("users", 20, 300)]),
            point(Some(1), &[("orders", 11, 7000), ("users", 21, 0)]),
            point(Some(2), &[("orders", 11, 7000), ("users", 21, 0)]),
        ];
        let got = attribute(&points, &[]);
        assert_eq!(
            got,
            BTreeMap::from([(
                1,
                vec![Rewrite {
                    table: "orders".into(),
                    bytes: 6000,
                    certain: true
                }]
            )])
        );
    }

    /// One transaction for all (PostgreSQL alembic): the changes show only at the end; the
    /// one migration seen holding ACCESS EXCLUSIVE on `a` did it; `b`'s lock was seen from
    /// migration 0 on (held until the commit): the first, uncertain; `c`'s was never seen:
    /// the last, uncertain.
    #[test]
    fn a_change_seen_only_at_the_end_goes_to_the_migration_that_held_the_lock() {
        let before = [("a", 1, 100), ("b", 2, 200), ("c", 3, 300)];
        let points = [
            point_in(None, 0.0, None, &before),
            point_in(Some(0), 1.0, Some(0.5), &before),
            point_in(Some(1), 2.0, Some(0.5), &before),
            point_in(
                Some(2),
                3.0,
                None,
                &[("a", 4, 100), ("b", 5, 200), ("c", 6, 300)],
            ),
        ];
        let locks = vec![
            vec![
                held("a", "AccessShareLock"),
                held("b", "AccessExclusiveLock"),
            ],
            vec![
                held("a", "AccessExclusiveLock"),
                held("b", "AccessExclusiveLock"),
            ],
            vec![held("a", "ShareLock"), held("b", "AccessExclusiveLock")],
        ];
        let got = attribute(&points, &locks);
        let one = |t: &str, bytes, certain| Rewrite {
            table: t.into(),
            bytes,
            certain,
        };
        assert_eq!(
            got,
            BTreeMap::from([
                (0, vec![one("b", 200, false)]),
                (1, vec![one("a", 100, true)]),
                (2, vec![one("c", 300, false)]),
            ])
        );
    }

    /// Databases cloned from one golden copy have the same relation ids: a lock on the other
    /// database's `big` is not one on ours (its size is read). Seen in CI as a rewrite of
    /// "0 B" when two runs of one dataset ran at once.
    #[test]
    fn postgresql_probe_ignores_locks_in_other_databases() {
        use crate::engine::test_psql::{run, spawn};
        use std::time::Duration;
        let template = unique_db();
        let (ours, theirs) = (format!("{template}_a"), format!("{template}_b"));
        run("postgres", &format!("CREATE DATABASE {template}"));
        run(
            &template,
            "CREATE TABLE big (id int); INSERT INTO big SELECT generate_series(1, 10000)",
        );
        for db in [&ours, &theirs] {
            run(
                "postgres",
                &format!("CREATE DATABASE {db} TEMPLATE {template}"),
            );
        }
        let server = test_server(crate::engine::Engine::PostgreSql);
        let mut probe = server.table_probe(&ours).unwrap();
        let mut holder = spawn(
            &theirs,
            "BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT;",
        );
        std::thread::sleep(Duration::from_millis(700));
        let read = probe.read().unwrap();
        assert!(holder.wait().unwrap().success());
        drop(probe);
        for db in [&ours, &theirs, &template] {
            run("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
        }
        assert!(read.tables["big"].bytes.is_some_and(|b| b > 0), "{read:?}");
    }

    /// On the real server: the probe reads a rewrite's new relfilenode only after the commit;
    /// while the migration's transaction holds ACCESS EXCLUSIVE it does not wait for it (the
    /// table's size is then unknown) and sees the open transaction.
    #[test]
    fn postgresql_probe_sees_committed_rewrites_without_waiting() {
        use crate::engine::test_psql::{run, spawn};
        use std::time::{Duration, Instant};
        let db = unique_db();
        run("postgres", &format!("CREATE DATABASE {db}"));
        run(
            &db,
            "CREATE TABLE big (id int, v int); INSERT INTO big SELECT g, g FROM generate_series(1, 100000) g",
        );
        let server = test_server(crate::engine::Engine::PostgreSql);
        let mut probe = server.table_probe(&db).unwrap();
        let before = probe.read().unwrap();
        let mut migration = spawn(
            &db,
            "BEGIN; ALTER TABLE big ADD COLUMN c float DEFAULT random(); SELECT pg_sleep(1.5); COMMIT;",
        );
        std::thread::sleep(Duration::from_millis(700));
        let started = Instant::now();
        let during = probe.read().unwrap();
        let took = started.elapsed();
        let later = probe.read().unwrap();
        assert!(migration.wait().unwrap().success());
        let after = probe.read().unwrap();
        drop(probe);
        run("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));

        let big = |s: &Snapshot| s.tables["big"];
        assert!(big(&before).bytes.unwrap() > 1_000_000, "{before:?}");
        assert_eq!(before.open_since, None);
        assert!(
            took < Duration::from_millis(500),
            "the probe waited {took:?}"
        );
        assert_eq!(
            big(&during).storage,
            big(&before).storage,
            "not committed yet"
        );
        assert_eq!(big(&during).bytes, None, "locked: size not read");
        assert!(
            during.open_since.is_some_and(|t| t < during.at),
            "{during:?}"
        );
        assert_ne!(big(&after).storage, big(&before).storage, "committed");
        assert_eq!(after.open_since, None);
        let points = [
            StatePoint {
                owner: None,
                snapshot: Some(before),
                begun: Vec::new(),
            },
            StatePoint {
                owner: Some(0),
                snapshot: Some(during),
                begun: Vec::new(),
            },
            StatePoint {
                owner: Some(1),
                snapshot: Some(later),
                begun: Vec::new(),
            },
            StatePoint {
                owner: Some(2),
                snapshot: Some(after),
                begun: Vec::new(),
            },
        ];
        let got = attribute(&points, &[]);
        // The transaction was open at two points: every migration since the one before it
        // is a candidate; no lock evidence: the last one, uncertain.
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(got[&2][0].table, "big");
        assert!(!got[&2][0].certain);
        assert!(got[&2][0].bytes > 1_000_000);
    }

    /// On the real MariaDB server: a copying ALTER changes the table id, an instant one not.
    #[test]
    fn mariadb_probe_sees_copy_alters_not_instant_ones() {
        let db = unique_db();
        let sql = |q: &str| {
            let status = std::process::Command::new("mysql")
                .args(["-h", "127.0.0.1", "-u", "root", "-e", q])
                .status()
                .unwrap();
            assert!(status.success(), "{q}");
        };
        sql(&format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; \
             USE {db}; INSERT INTO t SELECT seq, seq FROM seq_1_to_10000"
        ));
        let server = test_server(crate::engine::Engine::MariaDb);
        let mut probe = server.table_probe(&db).unwrap();
        let first = probe.read().unwrap().tables["t"];
        sql(&format!(
            "ALTER TABLE {db}.t ADD COLUMN c INT, ALGORITHM=INSTANT"
        ));
        let instant = probe.read().unwrap().tables["t"];
        sql(&format!(
            "ALTER TABLE {db}.t ADD COLUMN d INT, ALGORITHM=COPY"
        ));
        let copy = probe.read().unwrap().tables["t"];
        drop(probe);
        sql(&format!("DROP DATABASE {db}"));
        assert!(
            first.storage.is_some() && first.bytes.is_some_and(|b| b > 0),
            "{first:?}"
        );
        assert_eq!(instant.storage, first.storage);
        assert_ne!(copy.storage, first.storage);
    }

    /// One transaction per migration, the next one's begun before the boundary was read: the
    /// change seen at the next point is that migration's alone, even though the one before
    /// also locked the table.
    #[test]
    fn the_next_migration_s_young_transaction_does_not_widen_the_window() {
        let points = [
            point_in(None, 0.0, None, &[("t", 1, 100)]),
            point_in(Some(0), 1.0, Some(0.9), &[("t", 1, 100)]),
            point_in(Some(1), 2.0, None, &[("t", 2, 100)]),
        ];
        let locks = vec![
            vec![held("t", "AccessExclusiveLock")],
            vec![held("t", "AccessExclusiveLock")],
        ];
        let got = attribute(&points, &locks);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1]);
        assert!(got[&1][0].certain);
    }

    /// A point read after the next migration's start line arrived: the change seen there may
    /// be either's; the lock decides, and without one the migration that ended there gets it,
    /// uncertain.
    #[test]
    fn a_point_read_late_lets_the_begun_migration_be_the_culprit() {
        let late = |begun: Vec<usize>| {
            let mut p = point(Some(0), &[("t", 2, 100)]);
            p.begun = begun;
            p
        };
        let points = |begun| {
            [
                point(None, &[("t", 1, 100)]),
                late(begun),
                point(Some(1), &[("t", 2, 100)]),
            ]
        };
        let locks = vec![vec![], vec![held("t", "AccessExclusiveLock")]];
        let got = attribute(&points(vec![1]), &locks);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1]);
        assert!(got[&1][0].certain);
        // Not begun: the point's own migration, certain (the lock seen later is no evidence).
        let got = attribute(&points(vec![]), &locks);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0]);
        assert!(got[&0][0].certain);
        // Begun, no lock seen: the point's own migration, uncertain.
        let got = attribute(&points(vec![1]), &[vec![], vec![]]);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0]);
        assert!(!got[&0][0].certain);
        // Both held one: the first, uncertain.
        let both = vec![
            vec![held("t", "AccessExclusiveLock")],
            vec![held("t", "AccessExclusiveLock")],
        ];
        let got = attribute(&points(vec![1]), &both);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0]);
        assert!(!got[&0][0].certain);
    }

    /// A size that could not be read (the table was locked) leaves the last known one.
    #[test]
    fn the_size_is_the_last_one_known_before_the_change() {
        let points = [
            point(None, &[("t", 1, 100)]),
            point(Some(0), &[("t", 1, -1)]),
            point(Some(1), &[("t", 2, 500)]),
        ];
        let got = attribute(&points, &[]);
        assert_eq!(got[&1][0].bytes, 100);
    }

    /// A point that could not be read is skipped: the change is judged against the last one
    /// read; a copying ALTER's metadata lock counts as a rewrite's lock, a shared one not.
    #[test]
    fn unreadable_points_are_skipped_and_metadata_locks_count() {
        let points = [
            point(None, &[("t", 1, 100)]),
            StatePoint {
                owner: Some(0),
                snapshot: None,
                begun: Vec::new(),
            },
            point(Some(1), &[("t", 2, 100)]),
        ];
        let locks = vec![
            vec![held("t", "SHARED_NO_WRITE")],
            vec![held("t", "SHARED_UPGRADABLE")],
        ];
        let got = attribute(&points, &locks);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0]);
        assert!(!could_rewrite(&held("t", "ShareLock")));
        assert!(!could_rewrite(&held("t", "ExclusiveLock")));
        assert!(could_rewrite(&held("t", "MDL_EXCLUSIVE")));
        assert!(could_rewrite(&held("t", "MDL_SHARED_NO_WRITE")));
    }
}
