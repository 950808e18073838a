//! The database side, through sqlx: create a run's database from the seed, read its schema
//! version and work counters, drop it. Blocking API over a small tokio runtime of the plugin's
//! own (a plugin must never use the host's runtime).
//!
//! Layout: this file holds the public API ([`Server`], [`EngineError`], [`VersionSource`],
//! [`Endpoint`]) and the dispatch to one module per engine family (`mysql`: MySQL and
//! MariaDB, `postgres`, `sqlite`); `kind` is the [`Engine`] a dataset names, `seed` the
//! [`Seed`] its database is made from. The [`Connection`] a dataset gives is the SDK's
//! (`turbo_hipster_sdk::config::Connection`), read the same way from a dataset and from the
//! job config. Seeds are loaded by the engine's own
//! command-line client (`mysql`, `psql`, `pg_restore`), run by `client`; SQLite seeds are
//! executed through sqlx (there is no `sqlite3` tool to rely on).
//!
//! Every call opens its own connection (with a [`CONNECT_TIMEOUT`]) and closes it before it
//! returns: calls are rare and long (a seed load, a version read between migrations), so a
//! pool would only hold connections that a `DROP DATABASE` then has to kill. A [`Server`] is
//! `Send + Sync`; several dataset threads may use one at once.

mod client;
mod counters;
mod golden;
pub mod instance_claims;
mod kind;
mod locks;
mod mysql;
mod observation;
mod postgres;
mod private_server;
pub mod rewrites;
mod seed;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use turbo_hipster_sdk::support::process::{Cancellation, NeverCancelled};

pub use counters::{CounterReader, Reading, SPLIT as COUNTER_SPLIT, WAL_BYTES};
pub use golden::GoldenState;
pub use kind::Engine;
pub use locks::{Blocks, Hold, LockMode, LockObserver, LockTracker, SeenLock, TableLocks};
pub use observation::{one_line, Cut, Gap, GapBook, GapEvent, Observation, Part, NOTE_TAG};
pub use private_server::{
    version_number, Binaries, Instance, PrivateServer, Profile, COPIED_VARIABLES,
};
pub use rewrites::{Rewrite, TableProbe, TableState, TableStates};
pub use seed::{Seed, SeedFormat};
pub use turbo_hipster_sdk::config::Connection;

/// How long connecting to a database server may take before we give up
/// ([`EngineError::Refused`]).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest database name we create (PostgreSQL's limit; MySQL allows 64).
pub const MAX_DATABASE_NAME_LEN: usize = 63;

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
    /// Not the change's fault: the server is unreachable, went away, or has no room left
    /// (connection refused/reset/timed out, MySQL 2002/2003/2006/2013/1053, PostgreSQL class
    /// 08 and 57P01–57P03; disk full: MySQL 1021 or errno 28, PostgreSQL 53100, ENOSPC). The
    /// message says which server and what happened → `ERROR - infrastructure: …`.
    #[error("{0}")]
    Unavailable(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(String),
}

impl EngineError {
    /// What failed, when the error is the infrastructure's rather than the change's.
    pub fn infrastructure(&self) -> Option<&str> {
        match self {
            EngineError::Unavailable(what) => Some(what),
            _ => None,
        }
    }
}

/// A server or client message, classified: `Some(kind)` when it says the server went away
/// (`"database server lost"`) or ran out of room (`"disk full"`), `None` otherwise. Matches
/// what the `mysql`/`mariadb`, `psql` and `pg_restore` clients, the server and the OS print.
///
/// ```
/// use gate_real_db_upgrade::engine::unavailable_kind;
/// assert_eq!(unavailable_kind("ERROR 2013 (HY000): Lost connection to server during query"), Some("database server lost"));
/// assert_eq!(unavailable_kind("FATAL:  terminating connection due to administrator command"), Some("database server lost"));
/// assert_eq!(unavailable_kind("ERROR 1021 (HY000): Disk full (/tmp/x); waiting"), Some("disk full"));
/// assert_eq!(unavailable_kind("ERROR:  could not extend file: No space left on device"), Some("disk full"));
/// assert_eq!(unavailable_kind("x.sqlite: database or disk is full"), Some("disk full"));
/// assert_eq!(unavailable_kind("ERROR 1064 (42000): You have an error in your SQL syntax"), None);
/// ```
pub fn unavailable_kind(text: &str) -> Option<&'static str> {
    const DISK_FULL: [&str; 7] = [
        "no space left on device",
        "disk full",
        "disk is full",
        "error 1021 ",
        "errno: 28",
        "errno 28",
        "(53100)",
    ];
    const LOST: [&str; 17] = [
        "error 2002 ",
        "error 2003 ",
        "error 2006 ",
        "error 2013 ",
        "error 1053 ",
        "can't connect to",
        "lost connection to",
        "server has gone away",
        "connection refused",
        "connection reset",
        "could not connect to server",
        "connection to server at",
        "connection to server on socket",
        "server closed the connection unexpectedly",
        "terminating connection due to administrator command",
        "the database system is shutting down",
        "the database system is starting up",
    ];
    let text = text.to_ascii_lowercase();
    if DISK_FULL.iter().any(|p| text.contains(p)) {
        Some("disk full")
    } else if LOST.iter().any(|p| text.contains(p)) {
        Some("database server lost")
    } else {
        None
    }
}

/// `EngineError::Unavailable` for `message` when it says the server is gone or full.
fn unavailable_or(message: String, otherwise: impl FnOnce(String) -> EngineError) -> EngineError {
    match unavailable_kind(&message) {
        Some(kind) => EngineError::Unavailable(format!("{kind}: {message}")),
        None => otherwise(message),
    }
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

/// A server connection with every default filled in: what the engine connects with, and what
/// the migration tool's `{db_host}`, `{db_port}`, `{db_user}`, `{db_pass}` placeholders mean.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The engine.
    pub engine: Engine,
    /// Host name or address (default `127.0.0.1`; `localhost` when a socket is used).
    pub host: String,
    /// Port (default 3306 for MySQL/MariaDB, 5432 for PostgreSQL).
    pub port: u16,
    /// When set, the server is reached through this Unix socket (MySQL/MariaDB: the socket
    /// file; PostgreSQL: the directory holding `.s.PGSQL.<port>`) and `host` is not used.
    pub socket: Option<PathBuf>,
    /// User (default `root` for MySQL/MariaDB, `postgres` for PostgreSQL).
    pub user: String,
    /// Password (default empty).
    pub password: String,
}

impl Endpoint {
    /// Fills in the defaults of `connection` for `engine`; `None` for SQLite.
    pub fn resolve(engine: Engine, connection: &Connection) -> Option<Self> {
        if !engine.has_server() {
            return None;
        }
        let port = connection.port.or(engine.default_port())?;
        let user = connection
            .user
            .clone()
            .or_else(|| engine.default_user().map(str::to_string))?;
        let host = connection.host.clone().unwrap_or_else(|| {
            if connection.socket.is_some() {
                "localhost".to_string()
            } else {
                "127.0.0.1".to_string()
            }
        });
        Some(Self {
            engine,
            host,
            port,
            socket: connection.socket.clone(),
            user,
            password: connection.password.clone().unwrap_or_default(),
        })
    }
}

// Shows where and as whom, never the password.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.socket {
            Some(socket) => write!(
                f,
                "{} at {} as {}",
                self.engine.label(),
                socket.display(),
                self.user
            ),
            None => write!(
                f,
                "{} at {}:{} as {}",
                self.engine.label(),
                self.host,
                self.port,
                self.user
            ),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .finish()
    }
}

/// Checks that `name` can be a run database: 1 to [`MAX_DATABASE_NAME_LEN`] characters out
/// of `A-Z a-z 0-9 _`. Every method taking a database name checks it.
///
/// # Errors
/// [`EngineError::Other`] naming the problem.
pub fn check_database_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > MAX_DATABASE_NAME_LEN {
        return Err(EngineError::Other(format!(
            "invalid database name {name:?}: it must have 1 to {MAX_DATABASE_NAME_LEN} characters"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(EngineError::Other(format!(
            "invalid database name {name:?}: only A-Z, a-z, 0-9 and _ are allowed"
        )));
    }
    Ok(())
}

/// `name` as part of a database name: ASCII letters and digits in lower case, anything else `_`.
pub fn name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks a version table name: one or two (`schema.table`) parts like a database name.
fn check_table_name(table: &str) -> Result<Vec<&str>, EngineError> {
    let parts: Vec<&str> = table.split('.').collect();
    let valid = parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= MAX_DATABASE_NAME_LEN
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if valid {
        Ok(parts)
    } else {
        Err(EngineError::Other(format!(
            "invalid version table name {table:?}: expected `table` or `schema.table` \
             made of A-Z, a-z, 0-9 and _"
        )))
    }
}

/// A database server (or, for SQLite, a directory of database files).
pub struct Server {
    engine: Engine,
    connection: Connection,
    /// For SQLite: where the database files live (the job's work dir).
    sqlite_dir: PathBuf,
    /// The server holds the run's database only (a run-private `mariadbd`,
    /// [`Server::run_private`]): its server-wide figures are the run's.
    run_private: bool,
    /// The plugin's own runtime, made on first use.
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Server");
        s.field("engine", &self.engine);
        match self.endpoint() {
            Some(endpoint) => s.field("endpoint", &endpoint),
            None => s.field("sqlite_dir", &self.sqlite_dir),
        };
        s.finish_non_exhaustive()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never blocks, so dropping a Server is safe anywhere, even inside an async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Server {
    /// A server for `engine` reached through `connection`; SQLite files go in `sqlite_dir`.
    pub fn new(engine: Engine, connection: Connection, sqlite_dir: PathBuf) -> Self {
        Self {
            engine,
            connection,
            sqlite_dir,
            run_private: false,
            runtime: OnceLock::new(),
        }
    }

    /// This server as one that holds the run's database only (a run-private server): its
    /// server-wide work counters are then the run's own ([`Server::count_work`]).
    #[must_use]
    pub fn run_private(mut self) -> Self {
        self.run_private = true;
        self
    }

    /// Whether the server holds the run's database only ([`Server::run_private`]).
    pub fn is_run_private(&self) -> bool {
        self.run_private
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The connection with its defaults filled in; `None` for SQLite.
    pub fn endpoint(&self) -> Option<Endpoint> {
        Endpoint::resolve(self.engine, &self.connection)
    }

    /// For SQLite, the file of database `name`: `<sqlite_dir>/<name>.sqlite` (absolute when
    /// the current directory can be read).
    pub fn sqlite_path(&self, name: &str) -> PathBuf {
        let dir = std::path::absolute(&self.sqlite_dir).unwrap_or_else(|_| self.sqlite_dir.clone());
        dir.join(format!("{name}.{}", sqlite::EXTENSION))
    }

    /// Connects once and disconnects: is the server there and does it take our credentials?
    /// (SQLite: always fine.)
    ///
    /// # Errors
    /// [`EngineError::Refused`] with the server's (or the network's) message.
    pub fn ping(&self) -> Result<(), EngineError> {
        match self.backend() {
            Backend::MySql(ep) => self.block_on(|| mysql::ping(&ep)),
            Backend::Postgres(ep) => self.block_on(|| postgres::ping(&ep)),
            Backend::Sqlite => Ok(()),
        }
    }

    /// Creates database `name` (which must not exist) and loads `seed` into it.
    ///
    /// The seed is opened read-only before anything else happens (a missing seed never
    /// reaches the server). MySQL/MariaDB seeds (`.sql`, `.sql.gz`) are piped into `mysql`,
    /// PostgreSQL ones into `psql -v ON_ERROR_STOP=1` or, for custom-format dumps, restored
    /// with `pg_restore --no-owner --no-privileges --exit-on-error`; passwords go through the
    /// environment (`MYSQL_PWD`, `PGPASSWORD`), never the command line. When the load fails
    /// the half-made database is dropped.
    ///
    /// # Errors
    /// [`EngineError::SeedMissing`], [`EngineError::Refused`], [`EngineError::SeedLoad`]
    /// (with the last lines the client wrote to stderr); [`EngineError::Other`] for an
    /// invalid name or a database that already exists.
    pub fn create_from_seed(&self, name: &str, seed: &Seed) -> Result<(), EngineError> {
        self.create_from_seed_cancellable(name, seed, &NeverCancelled)
    }

    /// [`Server::create_from_seed`], watching `cancel` while the seed loads: when it fires the
    /// loading client's process group is killed, the half-made database dropped, and the
    /// result is [`EngineError::Other`]`("cancelled …")`.
    ///
    /// # Errors
    /// As [`Server::create_from_seed`], and the cancellation.
    pub fn create_from_seed_cancellable(
        &self,
        name: &str,
        seed: &Seed,
        cancel: &dyn Cancellation,
    ) -> Result<(), EngineError> {
        check_database_name(name)?;
        // Read-only, and before connecting: a missing seed must say so, whatever the server.
        let file = open_seed(seed)?;
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        match self.backend() {
            Backend::MySql(ep) => {
                if seed.format == SeedFormat::PgCustom {
                    return Err(wrong_format(&ep.engine, seed));
                }
                self.block_on(|| mysql::create_database(&ep, name))?;
                let loaded = mysql::load_seed(&ep, name, seed, file, cancel);
                self.after_load(name, loaded)
            }
            Backend::Postgres(ep) => {
                self.block_on(|| postgres::create_database(&ep, name))?;
                let loaded = postgres::load_seed(&ep, name, seed, file, cancel);
                self.after_load(name, loaded)
            }
            Backend::Sqlite => {
                if seed.format == SeedFormat::PgCustom {
                    return Err(wrong_format(&Engine::Sqlite, seed));
                }
                let path = self.sqlite_path(name);
                let sql = sqlite::read_seed(seed, file)?;
                if cancel.is_cancelled() {
                    return Err(cancelled());
                }
                self.block_on(|| sqlite::create_from_sql(&path, &sql))
            }
        }
    }

    /// Drops database `name` if it exists (for SQLite: deletes the file).
    ///
    /// Other sessions still using it are ended first (MySQL/MariaDB: `KILL`; PostgreSQL:
    /// `pg_terminate_backend` and `DROP DATABASE … WITH (FORCE)`), so a migration tool left
    /// behind cannot keep the database alive.
    ///
    /// # Errors
    /// The server refused.
    pub fn drop_database(&self, name: &str) -> Result<(), EngineError> {
        check_database_name(name)?;
        match self.backend() {
            Backend::MySql(ep) => self.block_on(|| mysql::drop_database(&ep, name)),
            Backend::Postgres(ep) => self.block_on(|| postgres::drop_database(&ep, name)),
            Backend::Sqlite => sqlite::remove(&self.sqlite_path(name)),
        }
    }

    /// The schema version recorded in database `name`, if any.
    ///
    /// `None` when the table is missing or empty (or holds only NULLs). For
    /// [`VersionSource::MigrateVersion`] and [`VersionSource::Table`] several rows give the
    /// latest one: the highest by number when the values start with digits (`"9" < "10"`,
    /// `"0009_x" < "0010_y"`), else by text. Alembic heads are sorted and joined by `,`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn schema_version(
        &self,
        name: &str,
        source: &VersionSource,
    ) -> Result<Option<String>, EngineError> {
        check_database_name(name)?;
        let (table, column) = match source {
            VersionSource::MigrateVersion => (vec!["migrate_version"], "version"),
            VersionSource::AlembicVersion => (vec!["alembic_version"], "version_num"),
            VersionSource::Table(table) => (check_table_name(table)?, "version"),
        };
        let values = match self.backend() {
            Backend::MySql(ep) => self.block_on(|| mysql::column_values(&ep, name, &table, column)),
            Backend::Postgres(ep) => {
                self.block_on(|| postgres::column_values(&ep, name, &table, column))
            }
            Backend::Sqlite => {
                let path = self.sqlite_path(name);
                self.block_on(|| sqlite::column_values(&path, &table, column))
            }
        }?;
        Ok(values
            .map(|values| match source {
                VersionSource::AlembicVersion => alembic_heads(values),
                _ => latest_version(values),
            })
            .and_then(|v| (!v.is_empty()).then_some(v)))
    }

    /// Work counters now (MySQL/MariaDB: `Innodb_rows_*` from SHOW GLOBAL STATUS; PostgreSQL:
    /// `tup_*` of `pg_stat_database` for `name`; SQLite: empty). The runs count each
    /// migration's work in their own database with [`Server::count_work`] instead; this is
    /// the server-wide fallback it uses when nothing finer is available.
    ///
    /// MySQL/MariaDB counters are server-wide (as in the original), so runs sharing a server
    /// see each other's work. Servers without `Innodb_rows_*` (recent MariaDB such as 10.11
    /// no longer has them) get them from the all-engine counters, which are in the map too:
    /// `Innodb_rows_read` = `Rows_read`, `Innodb_rows_inserted` = `Handler_write`,
    /// `Innodb_rows_updated` = `Handler_update`, `Innodb_rows_deleted` = `Handler_delete`.
    ///
    /// PostgreSQL's are per database and come under two sets of names: `pg_tup_returned`,
    /// `pg_tup_fetched`, `pg_tup_inserted`, `pg_tup_updated`, `pg_tup_deleted`, and the
    /// InnoDB names the dataset limits use: `Innodb_rows_read` (= `tup_returned`),
    /// `Innodb_rows_inserted`, `Innodb_rows_updated`, `Innodb_rows_deleted`. PostgreSQL
    /// publishes a session's counts when its transaction ends (at the latest when the session
    /// exits, which the server finishes a moment after the client is gone), so read them after
    /// the tool has exited.
    ///
    /// # Errors
    /// The server cannot be read (PostgreSQL: also when `name` does not exist).
    pub fn counters(&self, name: &str) -> Result<BTreeMap<String, i64>, EngineError> {
        check_database_name(name)?;
        match self.backend() {
            Backend::MySql(ep) => self.block_on(|| mysql::counters(&ep)),
            Backend::Postgres(ep) => self.block_on(|| postgres::counters(&ep, name)),
            Backend::Sqlite => Ok(BTreeMap::new()),
        }
    }

    /// Executes SQL (several statements) in database `name`; used by the SQL-files mode.
    ///
    /// The statements are sent as they are (no client-side splitting, so no `DELIMITER`
    /// lines). PostgreSQL runs them in one implicit transaction; MySQL/MariaDB commit DDL
    /// statement by statement.
    ///
    /// # Errors
    /// The SQL failed; the message is the server's.
    pub fn execute(&self, name: &str, sql: &str) -> Result<(), EngineError> {
        check_database_name(name)?;
        match self.backend() {
            Backend::MySql(ep) => self.block_on(|| mysql::execute(&ep, name, sql)),
            Backend::Postgres(ep) => self.block_on(|| postgres::execute(&ep, name, sql)),
            Backend::Sqlite => {
                let path = self.sqlite_path(name);
                self.block_on(|| sqlite::execute(&path, sql))
            }
        }
    }

    /// The database URL in SQLAlchemy form (`mysql+pymysql://u:p@h:3306/name`,
    /// `postgresql+psycopg2://…`, `sqlite:////abs/path.db`).
    ///
    /// User and password are percent-encoded; an empty password is left out. With a socket:
    /// `mysql+pymysql://u:p@localhost/name?unix_socket=/run/mysqld/mysqld.sock` and
    /// `postgresql+psycopg2://u@/name?host=/var/run/postgresql` (plus `&port=N` when the port
    /// is not 5432, since it names the socket file). SQLite: `sqlite:///` + the absolute path
    /// of [`Server::sqlite_path`].
    pub fn sqlalchemy_url(&self, name: &str) -> String {
        match self.endpoint() {
            Some(ep) => sqlalchemy_server_url(&ep, name),
            None => format!("sqlite:///{}", self.sqlite_path(name).display()),
        }
    }

    /// Names of existing databases starting with `prefix` (tests check nothing is left).
    /// Sorted. SQLite: the `*.sqlite` files in the directory.
    ///
    /// # Errors
    /// The server cannot be read.
    pub fn databases_with_prefix(&self, prefix: &str) -> Result<Vec<String>, EngineError> {
        let mut names = match self.backend() {
            Backend::MySql(ep) => self.block_on(|| mysql::databases(&ep))?,
            Backend::Postgres(ep) => self.block_on(|| postgres::databases(&ep))?,
            Backend::Sqlite => sqlite::databases(&self.sqlite_dir)?,
        };
        names.retain(|n| n.starts_with(prefix));
        names.sort();
        Ok(names)
    }

    fn backend(&self) -> Backend {
        match Endpoint::resolve(self.engine, &self.connection) {
            Some(ep) if ep.engine == Engine::PostgreSql => Backend::Postgres(ep),
            Some(ep) => Backend::MySql(ep),
            None => Backend::Sqlite,
        }
    }

    /// After a seed load: on failure drop the half-made database, keeping the load's error.
    fn after_load(&self, name: &str, loaded: Result<(), EngineError>) -> Result<(), EngineError> {
        let Err(error) = loaded else {
            return Ok(());
        };
        match self.drop_database(name) {
            Ok(()) => Err(error),
            Err(drop_error) => Err(append(
                error,
                &format!("; dropping the half-made database {name} failed too: {drop_error}"),
            )),
        }
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, EngineError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        // One worker drives the I/O; each caller's future runs on the caller's own thread,
        // so several dataset threads can wait on the database at once.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("th-db-engine")
            .enable_all()
            .build()
            .map_err(|e| EngineError::Other(format!("cannot start the database runtime: {e}")))?;
        if let Err(lost_race) = self.runtime.set(runtime) {
            lost_race.shutdown_background();
        }
        self.runtime
            .get()
            .ok_or_else(|| EngineError::Other("the database runtime vanished".into()))
    }

    /// Runs `future` to completion on our runtime, from a plain thread. Called from inside a
    /// runtime of our own copy of tokio (a test, a caller using this crate as a library) it
    /// hops to a scoped thread, since `block_on` may not nest.
    ///
    /// The future is made by `make` on the thread that runs it, so it need not be `Send`.
    fn block_on<T, M, F>(&self, make: M) -> Result<T, EngineError>
    where
        M: FnOnce() -> F + Send,
        F: Future<Output = Result<T, EngineError>>,
        T: Send,
    {
        let runtime = self.runtime()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(make());
        }
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("th-db-call".into())
                .spawn_scoped(scope, || runtime.block_on(make()))
                .map_err(|e| EngineError::Other(format!("cannot start a thread: {e}")))?;
            match handle.join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Which family serves a call, with its resolved endpoint.
enum Backend {
    MySql(Endpoint),
    Postgres(Endpoint),
    Sqlite,
}

fn open_seed(seed: &Seed) -> Result<std::fs::File, EngineError> {
    match std::fs::File::open(&seed.path) {
        Ok(file) => {
            let meta = file.metadata().map_err(|e| seed_unreadable(seed, &e))?;
            if meta.is_dir() {
                Err(EngineError::SeedLoad(format!(
                    "seed {} is a directory, not a dump",
                    seed.path.display()
                )))
            } else {
                Ok(file)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(EngineError::SeedMissing(seed.path.clone()))
        }
        Err(e) => Err(seed_unreadable(seed, &e)),
    }
}

fn seed_unreadable(seed: &Seed, e: &std::io::Error) -> EngineError {
    EngineError::SeedLoad(format!("cannot read seed {}: {e}", seed.path.display()))
}

fn wrong_format(engine: &Engine, seed: &Seed) -> EngineError {
    EngineError::SeedLoad(format!(
        "seed {} is a PostgreSQL custom-format dump; {} cannot load it",
        seed.path.display(),
        engine.label()
    ))
}

fn cancelled() -> EngineError {
    EngineError::Other("cancelled while loading the seed".into())
}

/// Adds `more` to the message of `error`.
fn append(error: EngineError, more: &str) -> EngineError {
    match error {
        EngineError::SeedMissing(path) => EngineError::SeedMissing(path),
        EngineError::SeedLoad(m) => EngineError::SeedLoad(m + more),
        EngineError::Refused(m) => EngineError::Refused(m + more),
        EngineError::Unavailable(m) => EngineError::Unavailable(m + more),
        EngineError::Other(m) => EngineError::Other(m + more),
    }
}

/// Alembic heads: sorted, joined by `,`.
fn alembic_heads(mut values: Vec<String>) -> String {
    values.sort();
    values.dedup();
    values.join(",")
}

/// The latest of several recorded versions: by leading number, then by text.
fn latest_version(values: Vec<String>) -> String {
    values
        .into_iter()
        .max_by(|a, b| version_key(a).cmp(&version_key(b)))
        .unwrap_or_default()
}

/// Sort key of a version: its leading digits as a number (without leading zeros, compared by
/// length then digits, so any size works), then the whole text.
fn version_key(v: &str) -> (bool, usize, &str, &str) {
    let v = v.trim();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let number = v[..digits_end].trim_start_matches('0');
    (digits_end > 0, number.len(), number, v)
}

/// `mysql+pymysql://…` or `postgresql+psycopg2://…` for a server.
fn sqlalchemy_server_url(ep: &Endpoint, name: &str) -> String {
    let scheme = match ep.engine {
        Engine::PostgreSql => "postgresql+psycopg2",
        _ => "mysql+pymysql",
    };
    let mut userinfo = percent_encode(&ep.user, false);
    if !ep.password.is_empty() {
        userinfo.push(':');
        userinfo.push_str(&percent_encode(&ep.password, false));
    }
    let db = percent_encode(name, false);
    match (&ep.socket, ep.engine) {
        (Some(socket), Engine::PostgreSql) => {
            let mut url = format!(
                "{scheme}://{userinfo}@/{db}?host={}",
                percent_encode(&socket.to_string_lossy(), true)
            );
            if ep.port != 5432 {
                url.push_str(&format!("&port={}", ep.port));
            }
            url
        }
        (Some(socket), _) => format!(
            "{scheme}://{userinfo}@localhost/{db}?unix_socket={}",
            percent_encode(&socket.to_string_lossy(), true)
        ),
        (None, _) => {
            let host = if ep.host.contains(':') && !ep.host.starts_with('[') {
                format!("[{}]", ep.host)
            } else {
                ep.host.clone()
            };
            format!("{scheme}://{userinfo}@{host}:{}/{db}", ep.port)
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when `keep_slash`).
fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `"name"`-style quoting: the quote character doubled inside.
fn quote_ident(name: &str, quote: char) -> String {
    let doubled: String = [quote, quote].iter().collect();
    format!("{quote}{}{quote}", name.replace(quote, &doubled))
}

/// A qualified name, each part quoted.
fn quote_path(parts: &[&str], quote: char) -> String {
    parts
        .iter()
        .map(|p| quote_ident(p, quote))
        .collect::<Vec<_>>()
        .join(".")
}

/// True when `path` exists (errors other than "not found" count as existing).
fn exists(path: &Path) -> bool {
    !matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// [`build_number`] as 7 digits.
pub(crate) fn random_digits() -> String {
    format!("{:07}", build_number())
}

/// A random 7-digit number for a build's temporary name: workers on several hosts may share
/// a server, so a process id could be another host's too.
pub(crate) fn build_number() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() % 10_000_000
}

/// `psql` against the local PostgreSQL test server, for the unit tests of the modules that
/// talk to a real server (the integration tests use the test support crate's).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_psql {
    use std::process::{Child, Command, Stdio};

    /// Starts `sql` in database `db` without waiting.
    pub(crate) fn spawn(db: &str, sql: &str) -> Child {
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-c", sql])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs `sql` in database `db`; panics when it fails.
    pub(crate) fn run(db: &str, sql: &str) {
        assert!(spawn(db, sql).wait().unwrap().success(), "{sql}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_database_name("th_test_01ab").is_ok());
        assert!(check_database_name(&"a".repeat(63)).is_ok());
        for bad in ["", "a-b", "a b", "a`b", "a\"b", "é", &"a".repeat(64)] {
            assert!(check_database_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_table_name("v").unwrap(), ["v"]);
        assert_eq!(check_table_name("s.v").unwrap(), ["s", "v"]);
        assert!(check_table_name("a.b.c").is_err());
        assert!(check_table_name("a.").is_err());
        assert!(check_table_name("x; DROP").is_err());
    }

    #[test]
    fn latest_version_orders_numbers_by_value() {
        let v = |xs: &[&str]| latest_version(xs.iter().map(|s| s.to_string()).collect());
        assert_eq!(v(&["9", "10", "2"]), "10");
        assert_eq!(v(&["0009_a", "0010_b"]), "0010_b");
        assert_eq!(v(&["abc", "abd"]), "abd");
        assert_eq!(
            v(&["123456789012345678901234567890", "99"]),
            "123456789012345678901234567890"
        );
        assert_eq!(alembic_heads(vec!["b".into(), "a".into()]), "a,b");
    }

    #[test]
    fn sqlite_has_no_endpoint_even_with_connection_keys() {
        let connection = Connection {
            host: Some("h".into()),
            port: Some(1),
            user: Some("u".into()),
            ..Connection::default()
        };
        assert_eq!(Endpoint::resolve(Engine::Sqlite, &connection), None);
        let server = Server::new(Engine::Sqlite, connection, PathBuf::from("/x"));
        assert_eq!(server.sqlalchemy_url("db"), "sqlite:////x/db.sqlite");
    }

    #[test]
    fn endpoint_defaults_and_display_hide_the_password() {
        let ep = Endpoint::resolve(
            Engine::PostgreSql,
            &Connection {
                password: Some("secret".into()),
                ..Connection::default()
            },
        )
        .unwrap();
        assert_eq!(
            (ep.host.as_str(), ep.port, ep.user.as_str()),
            ("127.0.0.1", 5432, "postgres")
        );
        assert_eq!(ep.to_string(), "PostgreSQL at 127.0.0.1:5432 as postgres");
        assert!(!format!("{ep:?}").contains("secret"));
        let ep = Endpoint::resolve(
            Engine::MariaDb,
            &Connection {
                socket: Some("/run/mysqld/mysqld.sock".into()),
                ..Connection::default()
            },
        )
        .unwrap();
        assert_eq!(
            (ep.host.as_str(), ep.port, ep.user.as_str()),
            ("localhost", 3306, "root")
        );
        assert_eq!(ep.to_string(), "MariaDB at /run/mysqld/mysqld.sock as root");
    }

    #[test]
    fn quoting_doubles_the_quote() {
        assert_eq!(quote_ident("a`b", '`'), "`a``b`");
        assert_eq!(quote_path(&["s", "t"], '"'), "\"s\".\"t\"");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("p@ss:w/rd%", false), "p%40ss%3Aw%2Frd%25");
        assert_eq!(percent_encode("/run/x y", true), "/run/x%20y");
    }
}
