//! Lock observation: while migrations run, a side connection samples the locks that the run
//! database's other sessions (the migration tool's: the database is the run's own) hold or
//! wait for, and [`LockTracker`] turns the samples into, per migration and table, the
//! strongest lock seen and the longest continuous hold of a lock that blocks reads or writes
//! of that table in production.
//!
//! A hold is measured between the first and the last sample that saw it, so it is a lower
//! bound, short of the truth by less than one sampling interval; a lock held for less than an
//! interval may be missed altogether. Both are said in the reference.
//!
//! PostgreSQL: `pg_locks` (relation locks) joined with `pg_class`, read from a connection to
//! the run database. MariaDB/MySQL (metadata locks) use the same [`LockMode`] scale.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::Connection as _;

use super::observation::{GapBook, Part};
use super::{Backend, EngineError, Server};

/// What a lock held on a table stops other sessions from doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blocks {
    /// Neither reads nor ordinary writes (`INSERT`/`UPDATE`/`DELETE`).
    Nothing,
    /// Writes; reads go on.
    Writes,
    /// Reads and writes.
    ReadsAndWrites,
}

/// A lock mode, on one scale for PostgreSQL's table locks and MariaDB/MySQL's metadata
/// locks: `rank` orders modes by strength within an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockMode {
    /// As the reference and the result lines spell it: `ACCESS EXCLUSIVE`,
    /// `SHARED_NO_READ_WRITE`, …
    pub name: &'static str,
    rank: u8,
    /// What it blocks.
    pub blocks: Blocks,
}

/// PostgreSQL's table lock modes, weakest first (`pg_locks.mode` spelling, display name,
/// what they block). `EXCLUSIVE` lets plain reads through; only `ACCESS EXCLUSIVE` stops them.
const POSTGRES_MODES: &[(&str, &str, Blocks)] = &[
    ("AccessShareLock", "ACCESS SHARE", Blocks::Nothing),
    ("RowShareLock", "ROW SHARE", Blocks::Nothing),
    ("RowExclusiveLock", "ROW EXCLUSIVE", Blocks::Nothing),
    (
        "ShareUpdateExclusiveLock",
        "SHARE UPDATE EXCLUSIVE",
        Blocks::Nothing,
    ),
    ("ShareLock", "SHARE", Blocks::Writes),
    (
        "ShareRowExclusiveLock",
        "SHARE ROW EXCLUSIVE",
        Blocks::Writes,
    ),
    ("ExclusiveLock", "EXCLUSIVE", Blocks::Writes),
    (
        "AccessExclusiveLock",
        "ACCESS EXCLUSIVE",
        Blocks::ReadsAndWrites,
    ),
];

/// MariaDB/MySQL metadata lock types, weakest first (`performance_schema.metadata_locks`
/// spelling; `information_schema.METADATA_LOCK_INFO` adds an `MDL_` prefix).
const METADATA_MODES: &[(&str, Blocks)] = &[
    ("INTENTION_EXCLUSIVE", Blocks::Nothing),
    ("SHARED", Blocks::Nothing),
    ("SHARED_HIGH_PRIO", Blocks::Nothing),
    ("SHARED_READ", Blocks::Nothing),
    ("SHARED_WRITE", Blocks::Nothing),
    ("SHARED_UPGRADABLE", Blocks::Nothing),
    ("SHARED_READ_ONLY", Blocks::Writes),
    ("SHARED_NO_WRITE", Blocks::Writes),
    ("SHARED_NO_READ_WRITE", Blocks::ReadsAndWrites),
    ("EXCLUSIVE", Blocks::ReadsAndWrites),
];

impl LockMode {
    /// A PostgreSQL `pg_locks.mode` value; `None` for one we do not know.
    pub fn postgres(mode: &str) -> Option<Self> {
        POSTGRES_MODES
            .iter()
            .zip(1u8..)
            .find(|((m, _, _), _)| *m == mode)
            .map(|((_, name, blocks), rank)| LockMode {
                name,
                rank,
                blocks: *blocks,
            })
    }

    /// A MariaDB/MySQL metadata lock type, with or without `MDL_`; `None` for one we do not
    /// know.
    pub fn metadata(kind: &str) -> Option<Self> {
        let kind = kind.strip_prefix("MDL_").unwrap_or(kind);
        METADATA_MODES
            .iter()
            .zip(1u8..)
            .find(|((m, _), _)| *m == kind)
            .map(|((name, blocks), rank)| LockMode {
                name,
                rank,
                blocks: *blocks,
            })
    }

    fn weaker(self, other: LockMode) -> LockMode {
        if other.rank < self.rank {
            other
        } else {
            self
        }
    }

    fn stronger(self, other: LockMode) -> LockMode {
        if other.rank > self.rank {
            other
        } else {
            self
        }
    }
}

/// One lock seen in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenLock {
    /// The table.
    pub table: String,
    /// Its mode.
    pub mode: LockMode,
    /// Held (`true`) or waited for.
    pub granted: bool,
}

/// The longest continuous hold of locks that block reads or writes of one table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hold {
    /// The weakest of the blocking locks seen during that hold: what was held all along
    /// (an `ALTER … ALGORITHM=COPY` holds `SHARED_NO_WRITE` for the copy and `EXCLUSIVE` for
    /// the instant of the swap: its hold is a `SHARED_NO_WRITE` one; the strongest lock of
    /// the table is in [`TableLocks::strongest`]).
    pub mode: LockMode,
    /// From the first to the last sample that saw it.
    pub seconds: f64,
}

/// What one migration did to one table's locks.
#[derive(Debug, Clone, PartialEq)]
pub struct TableLocks {
    /// The table.
    pub table: String,
    /// The strongest lock held on it.
    pub strongest: LockMode,
    /// The longest continuous hold of a lock blocking reads or writes, if there was one.
    pub longest_blocking: Option<Hold>,
    /// Whether a session of the run waited for a lock on it.
    pub waited: bool,
}

/// A blocking hold in progress.
#[derive(Debug, Clone, Copy)]
struct Streak {
    first: Instant,
    last: Instant,
    mode: LockMode,
}

/// What the sampler reported, kept in time order until a cut folds it.
#[derive(Debug)]
enum Event {
    /// The locks seen by a sample begun at this instant.
    Sample(Instant, Vec<SeenLock>),
    /// The sampling failed at this instant ([`LockTracker::interrupt`]).
    Interrupt(Instant),
}

impl Event {
    fn at(&self) -> Instant {
        match self {
            Event::Sample(at, _) | Event::Interrupt(at) => *at,
        }
    }
}

/// How long samples wait for a boundary before they are folded anyway: a boundary handled
/// later than this after its line arrived cuts at the time it is handled (what was sampled in
/// between goes to the migration before). Bounds the memory of a long migration.
const LATE_BOUNDARY: Duration = Duration::from_secs(10);

/// Folds samples into [`TableLocks`] per migration: [`LockTracker::cut_at`] at each migration
/// boundary returns what the migration that just ended did.
///
/// Samples are kept until the cut that places them, so that a boundary cuts at the instant
/// its line arrived, not when it was handled: a short migration whose successor's start line
/// waited behind the worker's own work at the boundary (the log, the table probe) does not get
/// the successor's first samples.
#[derive(Debug, Default)]
pub struct LockTracker {
    tables: BTreeMap<String, TableLocks>,
    streaks: BTreeMap<String, Streak>,
    /// Samples and interruptions not folded yet, in time order.
    pending: VecDeque<Event>,
}

impl LockTracker {
    /// Adds the locks seen by a sample begun at `at` (placed by the next cut, or folded once
    /// older than [`LATE_BOUNDARY`]).
    pub fn add(&mut self, at: Instant, locks: &[SeenLock]) {
        self.pending.push_back(Event::Sample(at, locks.to_vec()));
        if let Some(old) = at.checked_sub(LATE_BOUNDARY) {
            self.fold_while(|e| e.at() <= old);
        }
    }

    /// Folds the pending events, oldest first, while `fold` says so.
    fn fold_while(&mut self, fold: impl Fn(&Event) -> bool) {
        while self.pending.front().is_some_and(&fold) {
            match self.pending.pop_front() {
                Some(Event::Sample(at, locks)) => self.fold(at, &locks),
                Some(Event::Interrupt(_)) => self.close_all(),
                None => break,
            }
        }
    }

    fn fold(&mut self, at: Instant, locks: &[SeenLock]) {
        let mut blocking: BTreeMap<&str, LockMode> = BTreeMap::new();
        for lock in locks {
            let entry = self
                .tables
                .entry(lock.table.clone())
                .or_insert_with(|| TableLocks {
                    table: lock.table.clone(),
                    strongest: lock.mode,
                    longest_blocking: None,
                    waited: false,
                });
            if lock.granted {
                entry.strongest = entry.strongest.stronger(lock.mode);
                if lock.mode.blocks != Blocks::Nothing {
                    let mode = blocking.get(lock.table.as_str()).copied();
                    blocking.insert(
                        &lock.table,
                        mode.map_or(lock.mode, |m| m.stronger(lock.mode)),
                    );
                }
            } else {
                entry.waited = true;
            }
        }
        // Streaks that this sample did not see have ended.
        let ended: Vec<String> = self
            .streaks
            .keys()
            .filter(|t| !blocking.contains_key(t.as_str()))
            .cloned()
            .collect();
        for table in ended {
            self.close(&table);
        }
        for (table, mode) in blocking {
            let streak = self.streaks.entry(table.to_string()).or_insert(Streak {
                first: at,
                last: at,
                mode,
            });
            streak.last = at;
            streak.mode = streak.mode.weaker(mode);
        }
    }

    /// The samples stopped for a while (the side connection failed): every hold in progress
    /// ends at its last sample, so that no hold spans time that was not seen (a hold is what
    /// was seen held without a break); the next sample starts them again.
    pub fn interrupt(&mut self) {
        self.pending.push_back(Event::Interrupt(Instant::now()));
    }

    fn close_all(&mut self) {
        let open: Vec<String> = self.streaks.keys().cloned().collect();
        for table in &open {
            self.close(table);
        }
    }

    /// Ends the current migration at instant `at` (when its boundary's line arrived): what it
    /// did, from the samples begun up to `at`, tables in name order. A hold going on across
    /// the boundary ends there for this migration; the samples after `at` start it again for
    /// the next one.
    pub fn cut_at(&mut self, at: Instant) -> Vec<TableLocks> {
        self.fold_while(|e| e.at() <= at);
        self.end_migration()
    }

    /// Ends the current migration with every sample so far ([`LockTracker::cut_at`]).
    pub fn cut(&mut self) -> Vec<TableLocks> {
        self.fold_while(|_| true);
        self.end_migration()
    }

    fn end_migration(&mut self) -> Vec<TableLocks> {
        self.close_all();
        std::mem::take(&mut self.tables).into_values().collect()
    }

    fn close(&mut self, table: &str) {
        let Some(streak) = self.streaks.remove(table) else {
            return;
        };
        let seconds = streak.last.duration_since(streak.first).as_secs_f64();
        if let Some(entry) = self.tables.get_mut(table) {
            let longer = entry.longest_blocking.is_none_or(|h| seconds > h.seconds);
            if longer {
                entry.longest_blocking = Some(Hold {
                    mode: streak.mode,
                    seconds,
                });
            }
        }
    }
}

/// The relation locks of the run database's other sessions, on its own tables (catalogs
/// left out), read from a connection to that database.
const POSTGRES_SAMPLE: &str = "\
    SELECT c.relname::text, l.mode, l.granted \
    FROM pg_locks l \
    JOIN pg_class c ON c.oid = l.relation \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE l.locktype = 'relation' \
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
      AND l.pid <> pg_backend_pid() \
      AND c.relkind IN ('r', 'p', 'm') \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";

/// MariaDB's `metadata_lock_info` plugin: the table metadata locks granted to the run
/// database's other sessions (`#sql…`: the temporary copy of an `ALTER … ALGORITHM=COPY`).
const MARIADB_SAMPLE: &str = "\
    SELECT /* turbo-hipster locks */ TABLE_NAME, LOCK_MODE, 1 FROM information_schema.METADATA_LOCK_INFO \
    WHERE TABLE_SCHEMA = ? AND LOCK_TYPE = 'Table metadata lock' \
      AND THREAD_ID <> CONNECTION_ID() AND TABLE_NAME NOT LIKE '#sql%'";

/// MySQL's `performance_schema.metadata_locks` (on by default from 8.0): granted and
/// pending table metadata locks of the other sessions.
const MYSQL_SAMPLE: &str = "\
    SELECT /* turbo-hipster locks */ OBJECT_NAME, LOCK_TYPE, LOCK_STATUS = 'GRANTED' \
    FROM performance_schema.metadata_locks \
    WHERE OBJECT_TYPE = 'TABLE' AND OBJECT_SCHEMA = ? \
      AND OWNER_THREAD_ID <> PS_CURRENT_THREAD_ID() AND OBJECT_NAME NOT LIKE '#sql%'";

/// Sessions of the run database waiting for a metadata lock (MariaDB: the plugin shows only
/// granted locks).
const MARIADB_WAITERS: &str = "\
    SELECT COUNT(*) FROM information_schema.PROCESSLIST \
    WHERE DB = ? AND STATE = 'Waiting for table metadata lock' AND ID <> CONNECTION_ID()";

/// Whether MariaDB's `metadata_lock_info` plugin is active.
const MARIADB_PLUGIN: &str = "\
    SELECT COUNT(*) FROM information_schema.PLUGINS \
    WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'";

/// Where a sampler reads the locks.
enum Sampler {
    Postgres(PgConnection),
    /// MariaDB's `METADATA_LOCK_INFO`, waiters from the process list.
    MariaDb(MySqlConnection, String),
    /// MySQL's `performance_schema.metadata_locks`.
    MySql(MySqlConnection, String),
}

impl Sampler {
    /// What the locks are read from, for the dataset's log.
    fn source(&self) -> &'static str {
        match self {
            Sampler::Postgres(_) => "pg_locks",
            Sampler::MariaDb(..) => "information_schema.METADATA_LOCK_INFO",
            Sampler::MySql(..) => "performance_schema.metadata_locks",
        }
    }

    async fn sample(&mut self) -> Result<Vec<SeenLock>, sqlx::Error> {
        match self {
            Sampler::Postgres(conn) => {
                let rows: Vec<(String, String, bool)> = sqlx::query_as(POSTGRES_SAMPLE)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(seen(rows, LockMode::postgres))
            }
            Sampler::MariaDb(conn, db) => {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(MARIADB_SAMPLE)
                    .bind(db.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                let waiters: i64 = sqlx::query_scalar(MARIADB_WAITERS)
                    .bind(db.as_str())
                    .fetch_one(&mut *conn)
                    .await?;
                let mut locks = seen(
                    rows.into_iter().map(|(t, m, g)| (t, m, g != 0)).collect(),
                    LockMode::metadata,
                );
                if waiters > 0 {
                    locks.extend(waited_behind(&locks));
                }
                Ok(locks)
            }
            Sampler::MySql(conn, db) => {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(MYSQL_SAMPLE)
                    .bind(db.as_str())
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(seen(
                    rows.into_iter().map(|(t, m, g)| (t, m, g != 0)).collect(),
                    LockMode::metadata,
                ))
            }
        }
    }

    async fn close(self) {
        match self {
            Sampler::Postgres(conn) => {
                let _ = conn.close().await;
            }
            Sampler::MariaDb(conn, _) | Sampler::MySql(conn, _) => {
                let _ = conn.close().await;
            }
        }
    }
}

fn seen(rows: Vec<(String, String, bool)>, mode: fn(&str) -> Option<LockMode>) -> Vec<SeenLock> {
    rows.into_iter()
        .filter_map(|(table, m, granted)| {
            mode(&m).map(|mode| SeenLock {
                table,
                mode,
                granted,
            })
        })
        .collect()
}

/// MariaDB names no table for a session waiting for a metadata lock: it waits behind one of
/// the locks that block something, so each such table is marked waited.
fn waited_behind(held: &[SeenLock]) -> Vec<SeenLock> {
    held.iter()
        .filter(|l| l.granted && l.mode.blocks != Blocks::Nothing)
        .map(|l| SeenLock {
            granted: false,
            ..l.clone()
        })
        .collect()
}

/// A MariaDB/MySQL sampler for `db`: MariaDB's `metadata_lock_info` plugin (installed here
/// once when missing and the account may), else MySQL's `performance_schema.metadata_locks`.
async fn mysql_sampler(ep: &super::Endpoint, db: &str) -> Result<Sampler, EngineError> {
    let mut conn = super::mysql::connect(ep, Some(db)).await?;
    let unusable = |what: &str| {
        EngineError::Other(format!(
            "no metadata lock view: {what} (MariaDB needs the metadata_lock_info plugin, \
             MySQL performance_schema)"
        ))
    };
    let active = |n: Result<i64, sqlx::Error>| n.is_ok_and(|n| n > 0);
    let mut plugin = active(
        sqlx::query_scalar(MARIADB_PLUGIN)
            .fetch_one(&mut conn)
            .await,
    );
    if !plugin
        && sqlx::raw_sql("INSTALL SONAME 'metadata_lock_info'")
            .execute(&mut conn)
            .await
            .is_ok()
    {
        plugin = active(
            sqlx::query_scalar(MARIADB_PLUGIN)
                .fetch_one(&mut conn)
                .await,
        );
    }
    let mut sampler = if plugin {
        Sampler::MariaDb(conn, db.to_string())
    } else {
        Sampler::MySql(conn, db.to_string())
    };
    match sampler.sample().await {
        Ok(_) => Ok(sampler),
        Err(e) => {
            let what = e.to_string();
            sampler.close().await;
            Err(unusable(&what))
        }
    }
}

/// A side connection sampling the run database's locks on a thread of its own until
/// [`LockObserver::finish`].
pub struct LockObserver {
    tracker: Arc<Mutex<LockTracker>>,
    /// Rewrite detection's side connection, read at the same boundaries
    /// ([`LockObserver::with_tables`]).
    tables: Option<Mutex<super::TableProbe>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, EngineError>>>,
    source: &'static str,
    /// Where the sampler writes its gaps; [`super::Observation`] reads them.
    gaps: Arc<Mutex<GapBook>>,
}

impl LockObserver {
    /// The book of the observation's gaps the sampler writes to (shared).
    pub fn gaps(&self) -> Arc<Mutex<GapBook>> {
        Arc::clone(&self.gaps)
    }

    /// Ends the current migration's observation at instant `at`: what it did (see
    /// [`LockTracker::cut_at`]).
    pub fn cut_at(&self, at: Instant) -> Vec<TableLocks> {
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cut_at(at)
    }

    /// Ends the current migration's observation now: with every sample so far.
    pub fn cut(&self) -> Vec<TableLocks> {
        self.cut_at(Instant::now())
    }

    /// Also reads the run database's tables at each boundary ([`LockObserver::tables`]), for
    /// rewrite detection ([`super::rewrites`]).
    pub fn with_tables(mut self, probe: super::TableProbe) -> Self {
        self.tables = Some(Mutex::new(probe));
        self
    }

    /// The state of every table now, when rewrite detection is on (`None` when it is off;
    /// `Some(Err)` when the read failed).
    pub fn tables(&self) -> Option<Result<super::rewrites::Snapshot, EngineError>> {
        let probe = self.tables.as_ref()?;
        Some(probe.lock().unwrap_or_else(PoisonError::into_inner).read())
    }

    /// [`LockObserver::tables`], reconnecting once when the read fails
    /// ([`super::TableProbe::read_retrying`]).
    pub fn tables_retrying(
        &self,
    ) -> Option<Result<(super::rewrites::Snapshot, Option<String>), EngineError>> {
        let probe = self.tables.as_ref()?;
        Some(
            probe
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read_retrying(),
        )
    }

    /// What the locks are read from (`pg_locks`, `information_schema.METADATA_LOCK_INFO`, …).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Stops sampling; the last migration's locks and the number of samples taken.
    ///
    /// # Errors
    /// The sampler's thread could not be ended (a failing side connection is no error: the
    /// sampler reconnects, its gaps are in [`LockObserver::gaps`]).
    pub fn finish(mut self) -> Result<(Vec<TableLocks>, u64), EngineError> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => return Err(EngineError::Other("the lock sampler panicked".into())),
            None => 0,
        };
        Ok((self.cut(), samples))
    }
}

impl Drop for LockObserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `application_name` of the sampler's PostgreSQL connection.
const APPLICATION_NAME: &str = "turbo-hipster locks";

/// The first wait before reconnecting a failed sampler; each failed attempt doubles it, up
/// to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reconnect (attempts go on until the sampler is
/// stopped: a server back after a minute is observed again).
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// How long one attempt to reconnect may take.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A new sampler of the same kind on `db`.
async fn connect_sampler(
    ep: &super::Endpoint,
    db: &str,
    postgres: bool,
) -> Result<Sampler, EngineError> {
    if postgres {
        let conn = super::postgres::connect_as(ep, db, APPLICATION_NAME).await?;
        Ok(Sampler::Postgres(conn))
    } else {
        mysql_sampler(ep, db).await
    }
}

/// What the sampler's thread shares with its [`LockObserver`].
struct Shared {
    tracker: Arc<Mutex<LockTracker>>,
    gaps: Arc<Mutex<GapBook>>,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early when stopped; whether it was stopped.
    async fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(left.min(Duration::from_millis(10))).await;
        }
        true
    }

    fn book(&self) -> std::sync::MutexGuard<'_, GapBook> {
        self.gaps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sampler's loop: a sample every `every` until stopped; a failed sample opens a gap
/// (the holds in progress end there), and the sampler reconnects with a growing wait
/// ([`RECONNECT_FIRST`] doubled up to [`RECONNECT_MAX`]) until it can sample again, which ends
/// the gap. The number of samples taken.
async fn sample_until_stopped(
    mut sampler: Sampler,
    ep: &super::Endpoint,
    db: &str,
    every: Duration,
    shared: &Shared,
) -> u64 {
    let postgres = matches!(sampler, Sampler::Postgres(_));
    let mut samples = 0u64;
    while !shared.stopped() {
        let at = Instant::now();
        match sampler.sample().await {
            Ok(locks) => {
                shared
                    .tracker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .add(at, &locks);
                samples += 1;
                let mut book = shared.book();
                if book.is_stopped(Part::Locks) {
                    book.resumed(Part::Locks, chrono::Local::now());
                }
            }
            Err(e) => {
                let why = format!("sampling {}: {e}", sampler.source());
                tracing::warn!("{ep}: lock observation interrupted: {why}");
                shared
                    .tracker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .interrupt();
                shared
                    .book()
                    .stopped(Part::Locks, chrono::Local::now(), &why);
                // A dead connection says goodbye at once; a stuck one is not waited for long.
                let _ = tokio::time::timeout(Duration::from_secs(1), sampler.close()).await;
                match reconnect(ep, db, postgres, shared).await {
                    Some(new) => sampler = new,
                    None => return samples,
                }
                continue;
            }
        }
        if shared.sleep(every.saturating_sub(at.elapsed())).await {
            break;
        }
    }
    sampler.close().await;
    samples
}

/// A new sampler, after waits growing from [`RECONNECT_FIRST`] to [`RECONNECT_MAX`]; `None`
/// when stopped first.
async fn reconnect(
    ep: &super::Endpoint,
    db: &str,
    postgres: bool,
    shared: &Shared,
) -> Option<Sampler> {
    let mut wait = RECONNECT_FIRST;
    loop {
        if shared.sleep(wait).await {
            return None;
        }
        match tokio::time::timeout(RECONNECT_TIMEOUT, connect_sampler(ep, db, postgres)).await {
            Ok(Ok(sampler)) => return Some(sampler),
            Ok(Err(e)) => tracing::debug!("reconnecting the lock sampler: {e}"),
            Err(_) => tracing::debug!("reconnecting the lock sampler: no answer in time"),
        }
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

impl Server {
    /// Starts sampling the locks in database `db` every `every`: PostgreSQL's `pg_locks`,
    /// MariaDB's `METADATA_LOCK_INFO` or MySQL's `performance_schema.metadata_locks`. A failed
    /// sample does not end the sampling: the sampler reconnects and the time it did not see
    /// is a gap in [`LockObserver::gaps`].
    ///
    /// # Errors
    /// SQLite, no lock view on the server, or the side connection cannot be made.
    pub fn observe_locks(&self, db: &str, every: Duration) -> Result<LockObserver, EngineError> {
        super::check_database_name(db)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Other(format!("lock sampler: {e}")))?;
        let (ep, sampler) = match self.backend() {
            Backend::Postgres(ep) => {
                let sampler = runtime.block_on(connect_sampler(&ep, db, true))?;
                (ep, sampler)
            }
            Backend::MySql(ep) => {
                let sampler = runtime.block_on(connect_sampler(&ep, db, false))?;
                (ep, sampler)
            }
            Backend::Sqlite => {
                return Err(EngineError::Other(format!(
                    "lock observation is not available for {}",
                    self.engine.label()
                )))
            }
        };
        let source = sampler.source();
        let shared = Shared {
            tracker: Arc::new(Mutex::new(LockTracker::default())),
            gaps: Arc::new(Mutex::new(GapBook::default())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (tracker, gaps, stop) = (
            Arc::clone(&shared.tracker),
            Arc::clone(&shared.gaps),
            Arc::clone(&shared.stop),
        );
        let db = db.to_string();
        let thread = std::thread::Builder::new()
            .name("th-locks".into())
            .spawn(move || {
                Ok::<u64, EngineError>(
                    runtime.block_on(sample_until_stopped(sampler, &ep, &db, every, &shared)),
                )
            })
            .map_err(|e| EngineError::Other(format!("lock sampler: {e}")))?;
        Ok(LockObserver {
            tracker,
            tables: None,
            stop,
            thread: Some(thread),
            source,
            gaps,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lock(table: &str, mode: &str, granted: bool) -> SeenLock {
        SeenLock {
            table: table.into(),
            mode: LockMode::postgres(mode).unwrap(),
            granted,
        }
    }

    use crate::engine::test_psql::{run, spawn as psql};

    /// On the real server: an ACCESS EXCLUSIVE lock held 0.6 s is seen with its hold and
    /// the session waiting behind it; the lock `CREATE INDEX CONCURRENTLY` takes is seen but
    /// blocks nothing; the sampler's own session is not counted.
    #[test]
    fn postgresql_locks_of_the_run_database_are_sampled() {
        let db = format!("th_locks_{}_{}", std::process::id(), rand_suffix());
        run("postgres", &format!("CREATE DATABASE {db}"));
        run(
            &db,
            "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 1000)",
        );
        let server = Server::new(
            crate::engine::Engine::PostgreSql,
            crate::engine::Connection::default(),
            std::path::PathBuf::new(),
        );
        let observer = server
            .observe_locks(&db, Duration::from_millis(20))
            .unwrap();
        let mut holder = psql(
            &db,
            "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(0.6); COMMIT;",
        );
        std::thread::sleep(Duration::from_millis(150));
        run(&db, "SELECT count(*) FROM orders");
        assert!(holder.wait().unwrap().success());
        std::thread::sleep(Duration::from_millis(100));
        let first = observer.cut();
        run(
            &db,
            "BEGIN; LOCK TABLE orders IN SHARE UPDATE EXCLUSIVE MODE; SELECT pg_sleep(0.3); COMMIT;",
        );
        let (second, samples) = observer.finish().unwrap();
        run("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));

        assert_eq!(first.len(), 1, "{first:?}");
        let orders = &first[0];
        assert_eq!(orders.table, "orders");
        assert_eq!(orders.strongest.name, "ACCESS EXCLUSIVE");
        assert!(orders.waited, "the SELECT behind the lock waited");
        let hold = orders.longest_blocking.unwrap();
        assert_eq!(hold.mode.blocks, Blocks::ReadsAndWrites);
        assert!((0.45..0.9).contains(&hold.seconds), "{hold:?}");

        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(second[0].strongest.name, "SHARE UPDATE EXCLUSIVE");
        assert_eq!(second[0].longest_blocking, None);
        assert!(samples > 20, "{samples} samples");
    }

    fn mariadb(db: &str, sql: &str) -> std::process::Child {
        std::process::Command::new("mysql")
            .args(["-h", "127.0.0.1", "-u", "root"])
            .args(["-D", db, "-e", sql])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// On the real MariaDB server: a `LOCK TABLES … WRITE` held 0.6 s (an exclusive metadata
    /// lock for reads and writes) is seen with its hold and the session waiting behind it.
    #[test]
    fn mariadb_metadata_locks_of_the_run_database_are_sampled() {
        let db = format!("th_locks_{}_{}", std::process::id(), rand_suffix());
        let run = |sql: &str| assert!(mariadb("mysql", sql).wait().unwrap().success(), "{sql}");
        run(&format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.orders (id int) ENGINE=InnoDB; \
             INSERT INTO {db}.orders VALUES (1)"
        ));
        let server = Server::new(
            crate::engine::Engine::MariaDb,
            crate::engine::Connection::default(),
            std::path::PathBuf::new(),
        );
        let observer = server
            .observe_locks(&db, Duration::from_millis(20))
            .unwrap();
        assert_eq!(observer.source(), "information_schema.METADATA_LOCK_INFO");
        let mut holder = mariadb(
            &db,
            "LOCK TABLES orders WRITE; SELECT SLEEP(0.6); UNLOCK TABLES",
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(mariadb(&db, "SELECT COUNT(*) FROM orders")
            .wait()
            .unwrap()
            .success());
        assert!(holder.wait().unwrap().success());
        let (locks, samples) = observer.finish().unwrap();
        run(&format!("DROP DATABASE {db}"));

        assert_eq!(locks.len(), 1, "{locks:?}");
        let orders = &locks[0];
        assert_eq!(orders.table, "orders");
        let hold = orders.longest_blocking.unwrap();
        assert_eq!(hold.mode.blocks, Blocks::ReadsAndWrites, "{hold:?}");
        assert!((0.3..0.9).contains(&hold.seconds), "{hold:?}");
        assert!(orders.waited, "the SELECT behind the lock waited");
        assert!(samples > 10, "{samples} samples");
    }

    /// On the real MariaDB server: the sampler's connection, killed (`KILL CONNECTION`),
    /// is made again; the time between is a gap of the locks (the hold in progress ends at
    /// it), and a lock taken afterwards is seen.
    #[test]
    fn mariadb_sampler_killed_reconnects_and_records_the_gap() {
        let db = format!("th_locks_{}_{}", std::process::id(), rand_suffix());
        let run = |sql: &str| assert!(mariadb("mysql", sql).wait().unwrap().success(), "{sql}");
        run(&format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.orders (id int) ENGINE=InnoDB"
        ));
        let server = Server::new(
            crate::engine::Engine::MariaDb,
            crate::engine::Connection::default(),
            std::path::PathBuf::new(),
        );
        let observer = server
            .observe_locks(&db, Duration::from_millis(20))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // The sampler: the connection on the run database that is not ours.
        let out = std::process::Command::new("mysql")
            .args(["-h", "127.0.0.1", "-u", "root", "-N", "-B", "-e"])
            .arg(format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{db}'"
            ))
            .output()
            .unwrap();
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        run(&format!("KILL CONNECTION {}", ids[0]));
        std::thread::sleep(Duration::from_millis(700));
        let mut holder = mariadb(
            &db,
            "LOCK TABLES orders WRITE; SELECT SLEEP(0.5); UNLOCK TABLES",
        );
        assert!(holder.wait().unwrap().success());
        let gaps = observer.gaps();
        let (locks, _) = observer.finish().unwrap();
        run(&format!("DROP DATABASE {db}"));

        let mut book = gaps.lock().unwrap();
        let found = book.cut(chrono::Local::now());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].part, Part::Locks);
        assert!(!found[0].ongoing && found[0].seconds() < 1.5, "{found:?}");
        assert!(
            found[0]
                .why
                .starts_with("sampling information_schema.METADATA_LOCK_INFO: "),
            "{found:?}"
        );
        let events = book.events();
        assert_eq!(events.len(), 2, "stopped, resumed: {events:?}");
        let orders = locks.iter().find(|l| l.table == "orders").unwrap();
        let hold = orders.longest_blocking.unwrap();
        assert!(hold.seconds > 0.3, "{hold:?}");
    }

    #[test]
    fn an_interruption_ends_the_holds_in_progress() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut tracker = LockTracker::default();
        tracker.add(at(0), &[lock("orders", "AccessExclusiveLock", true)]);
        tracker.add(at(100), &[lock("orders", "AccessExclusiveLock", true)]);
        tracker.interrupt();
        // Seen again after the gap: a new hold, not one spanning what was not seen.
        tracker.add(at(900), &[lock("orders", "AccessExclusiveLock", true)]);
        tracker.add(at(950), &[lock("orders", "AccessExclusiveLock", true)]);
        let cut = tracker.cut();
        let hold = cut[0].longest_blocking.unwrap();
        assert!((hold.seconds - 0.1).abs() < 1e-9, "{hold:?}");
    }

    #[test]
    fn a_cut_at_an_earlier_instant_leaves_the_later_samples_to_the_next_migration() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut tracker = LockTracker::default();
        tracker.add(at(0), &[lock("a", "AccessExclusiveLock", true)]);
        tracker.add(at(100), &[lock("a", "AccessExclusiveLock", true)]);
        // The boundary's line arrived at 150 ms; it is handled after two more samples.
        tracker.add(at(200), &[lock("big", "AccessExclusiveLock", true)]);
        tracker.add(at(300), &[lock("big", "AccessExclusiveLock", true)]);
        let first = tracker.cut_at(at(150));
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].table, "a");
        let second = tracker.cut();
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(second[0].table, "big");
        let hold = second[0].longest_blocking.unwrap();
        assert!((hold.seconds - 0.1).abs() < 1e-9, "{hold:?}");
        // Samples older than LATE_BOUNDARY are folded without waiting for a cut.
        tracker.add(at(400), &[lock("a", "AccessShareLock", true)]);
        tracker.add(at(400) + LATE_BOUNDARY + Duration::from_millis(1), &[]);
        assert_eq!(tracker.pending.len(), 1);
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u8(0);
        h.finish() % 1_000_000
    }

    #[test]
    fn modes_and_what_they_block() {
        let ae = LockMode::postgres("AccessExclusiveLock").unwrap();
        assert_eq!(
            (ae.name, ae.blocks),
            ("ACCESS EXCLUSIVE", Blocks::ReadsAndWrites)
        );
        let share = LockMode::postgres("ShareLock").unwrap();
        assert_eq!(share.blocks, Blocks::Writes);
        let sue = LockMode::postgres("ShareUpdateExclusiveLock").unwrap();
        assert_eq!(
            sue.blocks,
            Blocks::Nothing,
            "CREATE INDEX CONCURRENTLY's lock"
        );
        assert_eq!(sue.stronger(share), share);
        assert_eq!(LockMode::postgres("SIReadLock"), None);
        let copy = LockMode::metadata("MDL_SHARED_NO_READ_WRITE").unwrap();
        assert_eq!(copy.blocks, Blocks::ReadsAndWrites);
        assert_eq!(
            LockMode::metadata("SHARED_UPGRADABLE").unwrap().blocks,
            Blocks::Nothing
        );
    }

    #[test]
    fn holds_are_continuous_per_table_and_cut_per_migration() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut tracker = LockTracker::default();
        tracker.add(at(0), &[lock("orders", "AccessShareLock", true)]);
        tracker.add(at(100), &[lock("orders", "ShareLock", true)]);
        tracker.add(at(200), &[lock("orders", "AccessExclusiveLock", true)]);
        tracker.add(at(300), &[lock("orders", "RowExclusiveLock", true)]);
        tracker.add(
            at(400),
            &[
                lock("orders", "ShareLock", true),
                lock("users", "ShareLock", false),
            ],
        );
        tracker.add(at(500), &[]);
        let first = tracker.cut();
        assert_eq!(first.len(), 2);
        let orders = &first[0];
        assert_eq!(orders.strongest.name, "ACCESS EXCLUSIVE");
        // 100..200 ms blocking (SHARE all along, ACCESS EXCLUSIVE at the end), a gap at 300,
        // then a single sample at 400.
        let hold = orders.longest_blocking.unwrap();
        assert_eq!(hold.mode.name, "SHARE");
        assert!((hold.seconds - 0.1).abs() < 1e-9, "{hold:?}");
        assert!(!orders.waited);
        assert!(first[1].waited && first[1].longest_blocking.is_none());
        // A new migration starts empty.
        tracker.add(at(600), &[lock("orders", "AccessShareLock", true)]);
        let second = tracker.cut();
        assert_eq!(second.len(), 1);
        assert!(second[0].longest_blocking.is_none());
    }
}
