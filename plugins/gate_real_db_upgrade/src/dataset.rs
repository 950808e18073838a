//! Datasets: `datasets_dir/<name>/config.json` (+ seed), or one JSON file dropped into the
//! datasets dir. The original's keys load unchanged.
//!
//! # Where datasets come from
//! [`load_datasets`] reads the datasets dir: each subdirectory holding a `config.json` is a
//! dataset named after the subdirectory (relative paths resolve against that subdirectory);
//! each `*.json` file directly in the dir is a dataset named after the file stem (relative paths
//! resolve against the datasets dir, so `cp my.json my.sql.gz /var/lib/turbo-hipster/datasets/`
//! works). Hidden entries (`.name`) and other files are skipped; a subdirectory without a
//! `config.json` is skipped with a warning. Names must be safe (`[A-Za-z0-9._-]`) and unique.
//! Datasets come back sorted by name.
//!
//! # Keys
//! | key | meaning |
//! |---|---|
//! | `project` (required) | the project tested, `openstack/nova`: a relative path of safe names |
//! | `engine` | `mysql`, `mariadb`, `postgresql` (`postgres`), `sqlite` |
//! | `type` | the original's engine key: `mysql` and `percona` are MySQL; takes the same names as `engine` |
//! | `connection` | `{host, port, socket, user, password}`; each missing field falls back to the job config's `connection` |
//! | `db_user`, `db_pass` | the original's spelling of `connection.user` / `connection.password` |
//! | `database` | the name prefix of the run databases (`[A-Za-z0-9_]`, at most 48 characters); default: the dataset name with other characters as `_` |
//! | `seed_data` (required) | the dump, a relative path without `..` inside the dataset's directory (a seed kept elsewhere is linked in by a symlink placed there): `.sql`, `.sql.gz`, `.dump`/`.pgdump` (PostgreSQL custom format). Whether it is a readable regular file is checked by [`Seed::check_file`] (`check-config`) and when a job runs, not here |
//! | `seed_format` | overrides the extension: `sql`, `sql_gz` (or `sql.gz`), `pg_custom` (PostgreSQL only) |
//! | `logging_conf` | the original's logging config handed to the tool (`{logging_conf}`) |
//! | `migration` | how to migrate, see below |
//! | `expected_version` | `{"highest_numbered": dir}`, `{"alembic_heads": dir}` (or a list of dirs, or `{"version_locations": [dirs], "recursive": true}`), `{"command": argv}`, `{"fixed": "42"}`, `"last_sql_file"`, `"unchecked"` |
//! | `upgrade_path` | git refs to migrate through, in order, before the change |
//! | `maximum_migration_times`, `XInnodb_rows_changed`, `Innodb_rows_read` | limits as in the original (see [`crate::limits`]); `default` required in each |
//! | `timeout` | seconds for the whole run, over 0 and at most a week (default: the job's) |
//!
//! Keys starting with `_` are comments. Other unknown keys are warnings, not errors.
//!
//! ## `migration`
//! Either the project's tool:
//! ```json
//! "migration": {
//!   "tool": ["alembic", "-c", "{work_dir}/alembic.ini", "upgrade", "head"],
//!   "env": {"DB_URL": "{db_url}"},
//!   "templates": {"alembic.ini": "alembic.ini.in"},
//!   "log_format": "alembic"
//! }
//! ```
//! `tool` is an argv list (placeholders: [`PLACEHOLDERS`]); `templates` maps an output file
//! name in the work dir to a template file relative to the dataset's directory; `log_format` is
//! `"sqlalchemy-migrate"` (the default), `"alembic"`, or `{"start": re, "end": re?, "final": re?}`
//! where `start` has named groups `from` and `to` (and optionally `description`) and `final`
//! has a group `version` (else its first group is used). Or a directory of numbered SQL files
//! in the checkout, applied in order by the plugin: `{"sql_dir": "db/migrations",
//! "version_table": "th_schema_version"}`.
//!
//! A dataset without `migration` (the original's format) loads, with an empty tool argv, but
//! [`Dataset::runnable`] refuses it: the original's nova scripts are not shipped.
//!
//! ## `expected_version` default
//! `last_sql_file` with `sql_dir`; otherwise `unchecked`. `last_sql_file` is only valid with
//! `sql_dir`; `highest_numbered` / `alembic_heads` name directories of the checkout.
//! `alembic_heads` reads its folders and their subfolders (alembic's
//! `recursive_version_locations`, unless `"recursive": false`) and expects the set of heads
//! (see [`crate::alembic`]). `command` (only with `migration.tool`) is an argv with the tool's
//! placeholders, run like the tool after the change's migrations; the heads are read from its
//! output, one a line as `alembic heads` prints them.
//!
//! ## Engine
//! `engine`, else `type`, else the job config's engine, else MySQL (the original's only
//! engine). Giving `engine` and `type` naming different engines is an error.
//!
//! # Errors
//! Every problem of every dataset at once, one line each: `<file>: <key path>: <what>`, e.g.
//! `/var/lib/th/datasets/a/config.json: migration.log_format.start: needs named groups (?P<from>…) and (?P<to>…)`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::limits::{LimitTable, Limits, KEY_ROWS_CHANGED, KEY_ROWS_READ, KEY_SECONDS};

/// The database engine a dataset runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// MySQL (the original's `type: mysql`, also `percona`).
    MySql,
    /// MariaDB (speaks the MySQL protocol).
    MariaDb,
    /// PostgreSQL.
    PostgreSql,
    /// SQLite: a file, no server needed.
    Sqlite,
}

impl Engine {
    /// The engine for a name as written in `engine` or the original's `type` (case-insensitive):
    /// `mysql`/`percona`, `mariadb`, `postgresql`/`postgres`, `sqlite`.
    pub fn from_name(name: &str) -> Option<Engine> {
        match name.trim().to_ascii_lowercase().as_str() {
            "mysql" | "percona" => Some(Engine::MySql),
            "mariadb" => Some(Engine::MariaDb),
            "postgresql" | "postgres" => Some(Engine::PostgreSql),
            "sqlite" => Some(Engine::Sqlite),
            _ => None,
        }
    }

    /// Its canonical name (`mysql`, `mariadb`, `postgresql`, `sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::MySql => "mysql",
            Engine::MariaDb => "mariadb",
            Engine::PostgreSql => "postgresql",
            Engine::Sqlite => "sqlite",
        }
    }

    /// The server's default TCP port (`None` for SQLite).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Engine::MySql | Engine::MariaDb => Some(3306),
            Engine::PostgreSql => Some(5432),
            Engine::Sqlite => None,
        }
    }
}

/// How to reach the database server (ignored for SQLite).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Host name; default 127.0.0.1 unless a socket is given.
    pub host: Option<String>,
    /// Port; default 3306 / 5432.
    pub port: Option<u16>,
    /// Unix socket path (MySQL/MariaDB socket file, or PostgreSQL socket directory).
    pub socket: Option<PathBuf>,
    /// User (the original's `db_user`).
    pub user: Option<String>,
    /// Password (the original's `db_pass`).
    pub password: Option<String>,
}

impl Connection {
    /// This connection with each missing field taken from `fallback`.
    pub fn or_fallback(&self, fallback: &Connection) -> Connection {
        Connection {
            host: self.host.clone().or_else(|| fallback.host.clone()),
            port: self.port.or(fallback.port),
            socket: self.socket.clone().or_else(|| fallback.socket.clone()),
            user: self.user.clone().or_else(|| fallback.user.clone()),
            password: self.password.clone().or_else(|| fallback.password.clone()),
        }
    }

    /// Reads a `connection` object as written in a dataset or a job config.
    ///
    /// # Errors
    /// Every problem, one line each, as `<key path>: <what>` (`key` is the object's own path,
    /// e.g. `connection`); unknown fields are not errors but come back in the `Ok` warnings.
    pub fn from_json(key: &str, value: &Value) -> Result<(Connection, Vec<String>), Vec<String>> {
        let mut c = Checker::bare();
        let conn = parse_connection(&mut c, key, value);
        c.finish_bare(conn)
    }
}

/// The format of a seed dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFormat {
    /// Plain SQL.
    Sql,
    /// Gzipped SQL (`.sql.gz`).
    SqlGz,
    /// A PostgreSQL custom-format dump (`pg_dump -Fc`), restored with `pg_restore`.
    PgCustom,
}

impl SeedFormat {
    /// The format named by `seed_format`: `sql`, `sql_gz` / `sql.gz`, `pg_custom`.
    pub fn from_name(name: &str) -> Option<SeedFormat> {
        match name {
            "sql" => Some(SeedFormat::Sql),
            "sql_gz" | "sql.gz" => Some(SeedFormat::SqlGz),
            "pg_custom" => Some(SeedFormat::PgCustom),
            _ => None,
        }
    }

    /// The format given by a file name: `*.gz` gzipped SQL, `*.dump`/`*.pgdump` PostgreSQL
    /// custom format, anything else plain SQL (the original fed any seed to `mysql`).
    pub fn from_path(path: &Path) -> SeedFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".gz") {
            SeedFormat::SqlGz
        } else if name.ends_with(".dump") || name.ends_with(".pgdump") {
            SeedFormat::PgCustom
        } else {
            SeedFormat::Sql
        }
    }
}

/// The seed data a run's database is created from. Never modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Absolute path of the dump.
    pub path: PathBuf,
    /// Its format (from the extension, or the `seed_format` key).
    pub format: SeedFormat,
}

/// How the migration tool's output is read.
#[derive(Debug, Clone)]
pub enum LogFormat {
    /// sqlalchemy-migrate: `N -> M... ` then `done`.
    SqlalchemyMigrate,
    /// alembic: `Running upgrade A -> B, message`.
    Alembic,
    /// Regexes given in the dataset: `start` with named groups `from` and `to` (and optional
    /// `description`), optional `end`, optional `final` with group `version`.
    Regex {
        /// A migration starts.
        start: regex::Regex,
        /// A migration ends (else: where the next starts or the tool exits).
        end: Option<regex::Regex>,
        /// The final version line.
        final_version: Option<regex::Regex>,
    },
}

/// Where the expected final schema version comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The highest numbered migration file (`NNN_name.py`) in this directory of the checkout
    /// (sqlalchemy-migrate's versions directory).
    HighestNumbered(PathBuf),
    /// The alembic head revisions read from the scripts of the checkout.
    AlembicHeads(AlembicTree),
    /// The heads printed by this command (argv with the tool's placeholders), run like the
    /// migration tool.
    Command(Vec<String>),
    /// The last SQL file of the SQL-files mode.
    LastSqlFile,
    /// A fixed value.
    Fixed(String),
    /// Not checked.
    Unchecked,
}

/// Where an alembic project's scripts are: alembic's `version_locations` and
/// `recursive_version_locations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlembicTree {
    /// Folders of the checkout.
    pub locations: Vec<PathBuf>,
    /// Whether their subfolders are read too (the default).
    pub recursive: bool,
}

impl AlembicTree {
    /// One folder and its subfolders.
    pub fn folder(location: impl Into<PathBuf>) -> Self {
        AlembicTree {
            locations: vec![location.into()],
            recursive: true,
        }
    }
}

/// How the migrations are run.
#[derive(Debug, Clone)]
pub enum Migration {
    /// The project's own tool, run in the checkout.
    Tool {
        /// argv; placeholders `{db_url}` (SQLAlchemy form), `{db_name}`, `{db_user}`,
        /// `{db_pass}`, `{db_host}`, `{db_port}`, `{checkout}`, `{work_dir}`, `{dataset_dir}`,
        /// `{logging_conf}`, `{pip_cache}`.
        argv: Vec<String>,
        /// Extra environment, with the same placeholders.
        env: BTreeMap<String, String>,
        /// Config templates: (template file relative to the dataset dir, output file name in
        /// the work dir); rendered with the same placeholders. The template path is stored
        /// already joined to the dataset dir (absolute when the datasets dir is).
        templates: Vec<(PathBuf, String)>,
        /// How to read its output.
        log_format: LogFormat,
    },
    /// A directory of numbered `.sql` files (relative to the checkout) applied by the plugin
    /// in order, each timed; the version is recorded in `version_table`.
    SqlFiles {
        /// The directory in the checkout.
        dir: PathBuf,
        /// The table recording the applied version (default `th_schema_version`).
        version_table: String,
    },
}

/// The placeholders a tool's argv, env and templates may use.
pub const PLACEHOLDERS: &[&str] = &[
    "db_url",
    "db_name",
    "db_user",
    "db_pass",
    "db_host",
    "db_port",
    "checkout",
    "work_dir",
    "dataset_dir",
    "logging_conf",
    "pip_cache",
];

/// The default `version_table` of the SQL-files mode.
pub const DEFAULT_VERSION_TABLE: &str = "th_schema_version";

/// The longest `database` prefix accepted (room is left for a run suffix within the 63/64
/// character limits of PostgreSQL and MySQL).
pub const MAX_DATABASE_PREFIX: usize = 48;

/// The longest `timeout` accepted, in seconds (a week), here and in the job config.
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// Where a seed must be: what `seed_data` errors say. A seed kept elsewhere is linked in by
/// the administrator (a symlink placed in the dataset's directory), never reached by a path.
pub const SEED_INSIDE: &str = "must name a file in the dataset's directory (a relative path \
     without `..`; to use a seed kept elsewhere, place a symlink to it there)";

/// What [`Dataset::runnable`] says about a dataset without `migration`.
pub const MIGRATION_REQUIRED: &str =
    "migration: required to run this dataset (the original's nova scripts are not shipped)";

/// One dataset, validated.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Its name (directory name, or file stem for a single-file dataset).
    pub name: String,
    /// The directory relative paths are resolved against.
    pub dir: PathBuf,
    /// The config file it came from.
    pub source: PathBuf,
    /// The project it tests (`openstack/nova`), matched against ZUUL_PROJECT.
    pub project: String,
    /// `engine`, else `type`, else the job's `engine`, else MySQL.
    pub engine: Engine,
    /// How to connect (dataset keys over the job config's `connection`).
    pub connection: Connection,
    /// The original's `database`: the name prefix for the run databases.
    pub database: String,
    /// The seed dump (`seed_data`) and its format.
    pub seed: Seed,
    /// The original's `logging_conf`, absolute, if given.
    pub logging_conf: Option<PathBuf>,
    /// How migrations are run.
    pub migration: Migration,
    /// Where the expected final version comes from.
    pub expected_version: ExpectedVersion,
    /// Git refs to migrate through, in order, before the change.
    pub upgrade_path: Vec<String>,
    /// Per-migration limits.
    pub limits: Limits,
    /// The whole run's time limit (default: the job's).
    pub timeout: Option<Duration>,
    /// How a run's database is made (`provisioning`: golden copy and clone, or reload).
    pub provisioning: crate::provisioning::Provisioning,
    /// Cold or warm caches when the first migration starts (`cache`).
    pub cache: crate::provisioning::Cache,
}

impl Dataset {
    /// Whether this dataset can be run: a dataset in the original's format (no `migration`)
    /// loads but cannot run.
    ///
    /// # Errors
    /// Why not, as one line starting with the key ([`MIGRATION_REQUIRED`]).
    pub fn runnable(&self) -> Result<(), String> {
        match &self.migration {
            Migration::Tool { argv, .. } if argv.is_empty() => Err(MIGRATION_REQUIRED.to_string()),
            _ => Ok(()),
        }
    }
}

impl Seed {
    /// What a job would find wrong with the seed file: it must exist, be a regular file
    /// (symlinks followed) and be readable. `check-config` reports this; a job whose seed is
    /// missing reports `FAILURE - Could not find seed database.` instead.
    ///
    /// # Errors
    /// Why not, as one line starting with the key (`seed_data: ...`).
    pub fn check_file(&self) -> Result<(), String> {
        let path = self.path.display();
        let meta = std::fs::metadata(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("seed_data: {path} does not exist"),
            _ => format!("seed_data: cannot read {path}: {e}"),
        })?;
        if !meta.is_file() {
            return Err(format!("seed_data: {path} is not a regular file"));
        }
        std::fs::File::open(&self.path)
            .map(drop)
            .map_err(|e| format!("seed_data: cannot read {path}: {e}"))
    }
}

impl Dataset {
    /// What a job would find missing among the files this dataset names and that can be
    /// known before a job runs: the seed ([`Seed::check_file`]), the config templates, and a
    /// migration tool given as an absolute path without placeholders (a relative tool, or one
    /// with placeholders, is resolved in the checkout at run time and cannot be checked here).
    /// One line each, starting with the key.
    pub fn check_files(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.seed.check_file().err().into_iter().collect();
        if let Migration::Tool {
            argv, templates, ..
        } = &self.migration
        {
            if let Some(tool) = argv
                .first()
                .filter(|t| t.starts_with('/') && !t.contains('{'))
            {
                if let Err(why) = executable(Path::new(tool)) {
                    problems.push(format!("migration.tool[0]: {why}"));
                }
            }
            for (template, output) in templates {
                if let Err(e) = std::fs::File::open(template) {
                    problems.push(format!(
                        "migration.templates.{output}: cannot read {}: {e}",
                        template.display()
                    ));
                }
            }
        }
        if let ExpectedVersion::Command(argv) = &self.expected_version {
            if let Some(program) = argv
                .first()
                .filter(|t| t.starts_with('/') && !t.contains('{'))
            {
                if let Err(why) = executable(Path::new(program)) {
                    problems.push(format!("expected_version.command[0]: {why}"));
                }
            }
        }
        problems
    }
}

/// A regular file (symlinks followed) this user may execute.
fn executable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{shown} does not exist"))
        }
        Err(e) => Err(format!("cannot read {shown}: {e}")),
        Ok(m) if !m.is_file() => Err(format!("{shown} is not a regular file")),
        Ok(_) => nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
            .map_err(|e| format!("{shown} is not executable: {e}")),
    }
}

/// Defaults a job config supplies for its datasets.
#[derive(Debug, Clone, Default)]
pub struct DatasetDefaults {
    /// `connection` from the job config.
    pub connection: Connection,
    /// `engine` from the job config, if any.
    pub engine: Option<Engine>,
}

/// Loads every dataset in `dir`: each subdirectory with a `config.json`, and each `*.json`
/// file directly in `dir`.
///
/// # Errors
/// Every problem found, one line each, naming the file and key.
pub fn load_datasets(dir: &Path, defaults: &DatasetDefaults) -> Result<Vec<Dataset>, Vec<String>> {
    load_datasets_with_warnings(dir, defaults).map(|(datasets, _)| datasets)
}

/// [`load_datasets`], also giving the warnings (unknown keys, skipped directories, unknown
/// placeholders), one line each: `<file>: <key path>: <what>`.
///
/// # Errors
/// Every problem found, one line each, naming the file and key.
pub fn load_datasets_with_warnings(
    dir: &Path,
    defaults: &DatasetDefaults,
) -> Result<(Vec<Dataset>, Vec<String>), Vec<String>> {
    // Paths in the datasets come out absolute even for a relative datasets dir.
    let absolute = std::path::absolute(dir);
    let dir = absolute.as_deref().unwrap_or(dir);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Err(vec![format!(
                "{}: cannot read the datasets dir: {e}",
                dir.display()
            )])
        }
    };
    // (name, config file, base dir)
    let mut found: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!(
                    "{}: cannot read the datasets dir: {e}",
                    dir.display()
                ));
                continue;
            }
        };
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            warnings.push(format!("{}: not a UTF-8 name, skipped", path.display()));
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a dataset may be linked in from elsewhere.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling link
        };
        if meta.is_dir() {
            let config = path.join("config.json");
            if config.is_file() {
                found.push((file_name, config, path));
            } else {
                warnings.push(format!("{}: no config.json, skipped", path.display()));
            }
        } else if meta.is_file() {
            if let Some(stem) = file_name.strip_suffix(".json") {
                found.push((stem.to_string(), path, dir.to_path_buf()));
            }
        }
    }
    found.sort();

    let mut datasets: Vec<Dataset> = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, config, base) in found {
        if let Some(other) = seen.get(&name) {
            errors.push(format!(
                "{}: dataset name {name} is also used by {}",
                config.display(),
                other.display()
            ));
            continue;
        }
        seen.insert(name.clone(), config.clone());
        match load_dataset(&config, &name, &base, defaults) {
            Ok((dataset, w)) => {
                datasets.push(dataset);
                warnings.extend(w);
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        datasets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((datasets, warnings))
    } else {
        Err(errors)
    }
}

/// Loads one dataset from the config file `source`, naming it `name`, with relative paths
/// resolved against `dir` (both made absolute first, without resolving symlinks).
///
/// # Errors
/// Every problem found, one line each: `<file>: <key path>: <what>`. On success, the warnings.
pub fn load_dataset(
    source: &Path,
    name: &str,
    dir: &Path,
    defaults: &DatasetDefaults,
) -> Result<(Dataset, Vec<String>), Vec<String>> {
    let absolute_source = std::path::absolute(source);
    let source = absolute_source.as_deref().unwrap_or(source);
    let absolute_dir = std::path::absolute(dir);
    let dir = absolute_dir.as_deref().unwrap_or(dir);
    let file = source.display().to_string();
    let text = match std::fs::read_to_string(source) {
        Ok(t) => t,
        Err(e) => return Err(vec![format!("{file}: cannot read: {e}")]),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("{file}: not valid JSON: {e}")]),
    };
    let mut c = Checker {
        prefix: format!("{file}: "),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let dataset = parse_dataset(&mut c, &value, source, name, dir, defaults);
    match dataset {
        Some(d) if c.errors.is_empty() => Ok((d, one_line_each(c.warnings))),
        _ => Err(one_line_each(c.errors)),
    }
}

/// Problems as one printable line each: the key paths in them come from the file and may hold
/// anything (a newline, a terminal escape).
fn one_line_each(lines: Vec<String>) -> Vec<String> {
    lines
        .iter()
        .map(|l| turbo_hipster_sdk::support::text::one_line(l).into_owned())
        .collect()
}

/// Collects problems, each prefixed with the file.
struct Checker {
    prefix: String,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Checker {
    fn bare() -> Self {
        Checker {
            prefix: String::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn finish_bare<T>(self, value: T) -> Result<(T, Vec<String>), Vec<String>> {
        if self.errors.is_empty() {
            Ok((value, self.warnings))
        } else {
            Err(self.errors)
        }
    }

    fn err(&mut self, key: &str, what: impl Display) {
        self.errors.push(format!("{}{key}: {what}", self.prefix));
    }

    fn warn(&mut self, key: &str, what: impl Display) {
        self.warnings.push(format!("{}{key}: {what}", self.prefix));
    }

    /// Warns about keys of `object` not in `known` (keys starting with `_` are comments).
    fn unknown_keys(&mut self, path: &str, object: &Map<String, Value>, known: &[&str]) {
        for key in object.keys() {
            if !key.starts_with('_') && !known.contains(&key.as_str()) {
                self.warn(&join(path, key), "unknown key, ignored");
            }
        }
    }

    /// A string value, or an error.
    fn string<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v str> {
        match value.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(key, format!("must be a string, not {value}"));
                None
            }
        }
    }

    /// A non-empty string value, or an error.
    fn nonempty(&mut self, key: &str, value: &Value) -> Option<String> {
        let s = self.string(key, value)?;
        if s.trim().is_empty() {
            self.err(key, "must not be empty");
            return None;
        }
        Some(s.to_string())
    }

    /// A relative path inside its base (no `..`, not absolute), or an error.
    fn inner_path(&mut self, key: &str, value: &Value, what: &str) -> Option<PathBuf> {
        let s = self.nonempty(key, value)?;
        if is_inner_path(&s) {
            Some(PathBuf::from(s))
        } else {
            self.err(
                key,
                format!("{what} must be a relative path without `..`, not {s:?}"),
            );
            None
        }
    }

    /// Warns about `{name}` placeholders that are not in [`PLACEHOLDERS`].
    fn placeholders(&mut self, key: &str, text: &str) {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            if !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !PLACEHOLDERS.contains(&name)
            {
                self.warn(key, format!("unknown placeholder {{{name}}}, left as is"));
            }
            rest = &after[close + 1..];
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `[A-Za-z0-9._-]+`, not `.` or `..`.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A relative path whose components are all normal (no `..`, no root, no prefix).
fn is_inner_path(s: &str) -> bool {
    let p = Path::new(s);
    !s.is_empty()
        && !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)))
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A git ref of the upgrade path: no leading `-`, no `..`, no whitespace or control characters.
fn ref_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        Some("must not be empty")
    } else if r.starts_with('-') {
        Some("must not start with `-`")
    } else if r.contains("..") {
        Some("must not contain `..`")
    } else if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace")
    } else {
        None
    }
}

const TOP_KEYS: &[&str] = &[
    "project",
    "engine",
    "type",
    "connection",
    "db_user",
    "db_pass",
    "database",
    "seed_data",
    "seed_format",
    "logging_conf",
    "migration",
    "expected_version",
    "upgrade_path",
    KEY_SECONDS,
    KEY_ROWS_CHANGED,
    KEY_ROWS_READ,
    "timeout",
    "provisioning",
    "cache",
];

fn parse_dataset(
    c: &mut Checker,
    value: &Value,
    source: &Path,
    name: &str,
    dir: &Path,
    defaults: &DatasetDefaults,
) -> Option<Dataset> {
    let Some(obj) = value.as_object() else {
        c.errors
            .push(format!("{}(top level): must be a JSON object", c.prefix));
        return None;
    };
    c.unknown_keys("", obj, TOP_KEYS);

    if !is_safe_name(name) {
        c.errors.push(format!(
            "{}(name): dataset name {name:?} is not a safe name ([A-Za-z0-9._-])",
            c.prefix
        ));
    }

    // project
    let project = match obj.get("project") {
        None => {
            c.err("project", "required (e.g. \"openstack/nova\")");
            None
        }
        Some(v) => c.nonempty("project", v).and_then(|p| {
            // ZUUL_PROJECT never starts a segment with `-`: such a project could never match.
            if p.split('/').all(|s| is_safe_name(s) && !s.starts_with('-')) {
                Some(p)
            } else {
                c.err(
                    "project",
                    format!(
                        "must be a relative path of safe names like \"openstack/nova\", not {p:?}"
                    ),
                );
                None
            }
        }),
    };

    // engine
    let mut engine_of = |key: &str| -> Option<Engine> {
        let v = obj.get(key)?;
        let s = c.nonempty(key, v)?;
        let e = Engine::from_name(&s);
        if e.is_none() {
            c.err(
                key,
                format!(
                    "unknown engine {s:?} (mysql, percona, mariadb, postgresql, postgres, sqlite)"
                ),
            );
        }
        e
    };
    let by_engine = engine_of("engine");
    let by_type = engine_of("type");
    if let (Some(a), Some(b)) = (by_engine, by_type) {
        if a != b {
            c.err(
                "engine",
                format!("{} conflicts with type {}", a.name(), b.name()),
            );
        }
    }
    let engine = by_engine
        .or(by_type)
        .or(defaults.engine)
        .unwrap_or(Engine::MySql);

    // connection
    let mut connection = match obj.get("connection") {
        Some(v) => parse_connection(c, "connection", v),
        None => Connection::default(),
    };
    for (key, field, slot) in [
        ("db_user", "user", &mut connection.user),
        ("db_pass", "password", &mut connection.password),
    ] {
        if let Some(v) = obj.get(key) {
            if let Some(s) = c.string(key, v) {
                match slot {
                    Some(existing) if existing != s => c.err(
                        key,
                        format!("conflicts with connection.{field} (give one of them)"),
                    ),
                    _ => *slot = Some(s.to_string()),
                }
            }
        }
    }
    let connection = connection.or_fallback(&defaults.connection);

    // database
    let database = match obj.get("database") {
        Some(v) => c.nonempty("database", v).and_then(|d| {
            if d.len() <= MAX_DATABASE_PREFIX
                && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                Some(d)
            } else {
                c.err(
                    "database",
                    format!(
                        "must be [A-Za-z0-9_], at most {MAX_DATABASE_PREFIX} characters, not {d:?}"
                    ),
                );
                None
            }
        }),
        None => {
            let mut d: String = name
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
                .collect();
            d.truncate(MAX_DATABASE_PREFIX);
            Some(d)
        }
    };

    // seed
    let seed_path = match obj.get("seed_data") {
        None => {
            c.err(
                "seed_data",
                "required (the seed dump, relative to the dataset)",
            );
            None
        }
        Some(v) => c.nonempty("seed_data", v).and_then(|s| {
            if is_inner_path(&s) {
                Some(dir.join(s))
            } else {
                c.err("seed_data", format!("{SEED_INSIDE}, not {s:?}"));
                None
            }
        }),
    };
    let seed_format = match obj.get("seed_format") {
        None => seed_path.as_deref().map(SeedFormat::from_path),
        Some(v) => c.nonempty("seed_format", v).and_then(|s| {
            let f = SeedFormat::from_name(&s);
            if f.is_none() {
                c.err(
                    "seed_format",
                    format!("unknown format {s:?} (sql, sql_gz, pg_custom)"),
                );
            }
            f
        }),
    };
    if seed_format == Some(SeedFormat::PgCustom) && engine != Engine::PostgreSql {
        let key = if obj.contains_key("seed_format") {
            "seed_format"
        } else {
            "seed_data"
        };
        c.err(
            key,
            format!(
                "a PostgreSQL custom-format dump needs engine postgresql, not {}",
                engine.name()
            ),
        );
    }

    // logging_conf
    let logging_conf = obj
        .get("logging_conf")
        .and_then(|v| c.nonempty("logging_conf", v))
        .map(|s| dir.join(s));

    // migration
    let migration = match obj.get("migration") {
        None => Some(Migration::Tool {
            argv: Vec::new(),
            env: BTreeMap::new(),
            templates: Vec::new(),
            log_format: LogFormat::SqlalchemyMigrate,
        }),
        Some(v) => parse_migration(c, v, dir),
    };
    // The SQL-files mode as written (even if `migration` has errors of its own).
    let sql_mode = obj
        .get("migration")
        .is_some_and(|m| m.get("sql_dir").is_some());

    // expected_version
    let expected_version = match obj.get("expected_version") {
        None if sql_mode => Some(ExpectedVersion::LastSqlFile),
        None => Some(ExpectedVersion::Unchecked),
        Some(v) => parse_expected(c, v, sql_mode),
    };

    // upgrade_path
    let mut upgrade_path = Vec::new();
    match obj.get("upgrade_path") {
        None => {}
        Some(Value::Array(refs)) => {
            for (i, r) in refs.iter().enumerate() {
                let key = format!("upgrade_path[{i}]");
                if let Some(s) = c.string(&key, r) {
                    match ref_problem(s) {
                        Some(problem) => c.err(&key, format!("{problem} ({s:?})")),
                        None => upgrade_path.push(s.to_string()),
                    }
                }
            }
        }
        Some(other) => c.err(
            "upgrade_path",
            format!("must be a list of git refs, not {other}"),
        ),
    }

    // limits
    let mut table = |key: &str| -> Option<LimitTable> {
        let v = obj.get(key)?;
        match LimitTable::from_json(key, v) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    c.errors.push(format!("{}{e}", c.prefix));
                }
                None
            }
        }
    };
    let limits = Limits {
        seconds: table(KEY_SECONDS).unwrap_or_default(),
        rows_changed: table(KEY_ROWS_CHANGED),
        rows_read: table(KEY_ROWS_READ),
    };

    // timeout
    let timeout = match obj.get("timeout") {
        None => None,
        Some(v) => match v
            .as_f64()
            .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECONDS)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        {
            Some(d) => Some(d),
            None => {
                c.err(
                    "timeout",
                    format!(
                        "must be a number of seconds greater than 0 and at most \
                         {MAX_TIMEOUT_SECONDS} (a week), not {v}"
                    ),
                );
                None
            }
        },
    };

    let provisioning = parse_provisioning(c, obj.get("provisioning"), engine);
    let cache = parse_cache(c, obj.get("cache"), engine);

    Some(Dataset {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        source: source.to_path_buf(),
        project: project?,
        engine,
        connection,
        database: database?,
        seed: Seed {
            path: seed_path?,
            format: seed_format?,
        },
        logging_conf,
        migration: migration?,
        expected_version: expected_version?,
        upgrade_path,
        limits,
        timeout,
        provisioning,
        cache,
    })
}

/// `cache`: `cold` (default) or `warm` (MySQL/MariaDB only).
fn parse_cache(
    c: &mut Checker,
    value: Option<&Value>,
    engine: Engine,
) -> crate::provisioning::Cache {
    use crate::provisioning::Cache;
    match value.map(|v| v.as_str().and_then(Cache::parse)) {
        None => Cache::Cold,
        Some(Some(Cache::Warm)) if !matches!(engine, Engine::MariaDb | Engine::MySql) => {
            c.err(
                "cache",
                format!(
                    "\"warm\" is only available for MySQL/MariaDB, not {}",
                    engine.name()
                ),
            );
            Cache::Cold
        }
        Some(Some(cache)) => cache,
        Some(None) => {
            c.err(
                "cache",
                format!("must be one of {}", Cache::NAMES.join(", ")),
            );
            Cache::Cold
        }
    }
}

/// `provisioning`: `auto` (default), `clone` (only where the engine has a fast path) or
/// `reload`.
fn parse_provisioning(
    c: &mut Checker,
    value: Option<&Value>,
    engine: Engine,
) -> crate::provisioning::Provisioning {
    use crate::provisioning::Provisioning;
    let Some(value) = value else {
        return Provisioning::Auto;
    };
    match value.as_str().and_then(Provisioning::parse) {
        Some(Provisioning::Clone) if !Provisioning::fast_path_for(engine) => {
            c.err(
                "provisioning",
                format!(
                    "\"clone\" is not available for {} (only PostgreSQL and SQLite have \
                     golden copies); use \"auto\" or \"reload\"",
                    engine.name()
                ),
            );
            Provisioning::Auto
        }
        Some(p) => p,
        None => {
            c.err(
                "provisioning",
                format!(
                    "must be one of {}, not {value}",
                    Provisioning::NAMES.join(", ")
                ),
            );
            Provisioning::Auto
        }
    }
}

fn parse_connection(c: &mut Checker, path: &str, value: &Value) -> Connection {
    let mut conn = Connection::default();
    let Some(obj) = value.as_object() else {
        c.err(
            path,
            format!("must be an object {{host, port, socket, user, password}}, not {value}"),
        );
        return conn;
    };
    c.unknown_keys(path, obj, &["host", "port", "socket", "user", "password"]);
    if let Some(v) = obj.get("host") {
        let key = join(path, "host");
        if let Some(h) = c.nonempty(&key, v) {
            if h.chars().any(char::is_whitespace) {
                c.err(&key, format!("must not contain whitespace ({h:?})"));
            } else {
                conn.host = Some(h);
            }
        }
    }
    if let Some(v) = obj.get("port") {
        match v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        {
            Some(p) => conn.port = Some(p),
            None => c.err(
                &join(path, "port"),
                format!("must be a port number 1-65535, not {v}"),
            ),
        }
    }
    if let Some(v) = obj.get("socket") {
        let key = join(path, "socket");
        if let Some(s) = c.nonempty(&key, v) {
            if Path::new(&s).is_absolute() {
                conn.socket = Some(PathBuf::from(s));
            } else {
                c.err(&key, format!("must be an absolute path, not {s:?}"));
            }
        }
    }
    if let Some(v) = obj.get("user") {
        let key = join(path, "user");
        conn.user = c.nonempty(&key, v);
    }
    if let Some(v) = obj.get("password") {
        let key = join(path, "password");
        conn.password = c.string(&key, v).map(str::to_string);
    }
    conn
}

fn parse_migration(c: &mut Checker, value: &Value, dir: &Path) -> Option<Migration> {
    let Some(obj) = value.as_object() else {
        c.err(
            "migration",
            format!("must be an object with `tool` or `sql_dir`, not {value}"),
        );
        return None;
    };
    c.unknown_keys(
        "migration",
        obj,
        &[
            "tool",
            "env",
            "templates",
            "log_format",
            "sql_dir",
            "version_table",
        ],
    );
    match (obj.get("tool"), obj.get("sql_dir")) {
        (Some(_), Some(_)) => {
            c.err("migration", "give either `tool` or `sql_dir`, not both");
            None
        }
        (None, None) => {
            c.err("migration", "needs `tool` (an argv list) or `sql_dir`");
            None
        }
        (None, Some(sql_dir)) => {
            for key in ["env", "templates", "log_format"] {
                if obj.contains_key(key) {
                    c.err(
                        &join("migration", key),
                        "only used with `tool`, not with `sql_dir`",
                    );
                }
            }
            let dir = c.inner_path(
                "migration.sql_dir",
                sql_dir,
                "the SQL directory in the checkout",
            );
            let version_table = match obj.get("version_table") {
                None => Some(DEFAULT_VERSION_TABLE.to_string()),
                Some(v) => c.nonempty("migration.version_table", v).and_then(|t| {
                    if is_identifier(&t) && t.len() <= 63 {
                        Some(t)
                    } else {
                        c.err(
                            "migration.version_table",
                            format!("must be a table name [A-Za-z_][A-Za-z0-9_]*, not {t:?}"),
                        );
                        None
                    }
                }),
            };
            Some(Migration::SqlFiles {
                dir: dir?,
                version_table: version_table?,
            })
        }
        (Some(tool), None) => {
            if obj.contains_key("version_table") {
                c.err(
                    "migration.version_table",
                    "only used with `sql_dir`, not with `tool`",
                );
            }
            let argv = parse_argv(c, "migration.tool", tool);
            let env = parse_env(c, obj.get("env"));
            let templates = parse_templates(c, obj.get("templates"), dir);
            let log_format = match obj.get("log_format") {
                None => Some(LogFormat::SqlalchemyMigrate),
                Some(v) => parse_log_format(c, v),
            };
            Some(Migration::Tool {
                argv: argv?,
                env: env?,
                templates: templates?,
                log_format: log_format?,
            })
        }
    }
}

fn parse_argv(c: &mut Checker, at: &str, value: &Value) -> Option<Vec<String>> {
    let Some(items) = value.as_array() else {
        c.err(
            at,
            format!("must be an argv list of strings, e.g. [\"alembic\", \"upgrade\", \"head\"], not {value}"),
        );
        return None;
    };
    if items.is_empty() {
        c.err(at, "must not be empty");
        return None;
    }
    let mut argv = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let key = format!("{at}[{i}]");
        match c.string(&key, item) {
            Some(s) if i == 0 && s.trim().is_empty() => {
                c.err(&key, "the program must not be empty");
                ok = false;
            }
            Some(s) => {
                c.placeholders(&key, s);
                argv.push(s.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(argv)
}

fn parse_env(c: &mut Checker, value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let Some(value) = value else {
        return Some(env);
    };
    let Some(obj) = value.as_object() else {
        c.err(
            "migration.env",
            format!("must be an object of strings, not {value}"),
        );
        return None;
    };
    let mut ok = true;
    for (name, v) in obj {
        let key = format!("migration.env.{name}");
        if !is_identifier(name) {
            c.err(&key, "not a valid environment variable name");
            ok = false;
            continue;
        }
        match c.string(&key, v) {
            Some(s) => {
                c.placeholders(&key, s);
                env.insert(name.clone(), s.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(env)
}

fn parse_templates(
    c: &mut Checker,
    value: Option<&Value>,
    dir: &Path,
) -> Option<Vec<(PathBuf, String)>> {
    let mut templates = Vec::new();
    let Some(value) = value else {
        return Some(templates);
    };
    let Some(obj) = value.as_object() else {
        c.err(
            "migration.templates",
            format!("must be an object {{\"<output name>\": \"<template file>\"}}, not {value}"),
        );
        return None;
    };
    let mut ok = true;
    for (output, template) in obj {
        let key = format!("migration.templates.{output}");
        if !is_safe_name(output) {
            c.err(
                &key,
                "the output must be a plain file name ([A-Za-z0-9._-]) in the work dir",
            );
            ok = false;
        }
        match c.inner_path(&key, template, "the template") {
            Some(t) => templates.push((dir.join(t), output.clone())),
            None => ok = false,
        }
    }
    ok.then_some(templates)
}

fn compile(c: &mut Checker, key: &str, value: &Value) -> Option<regex::Regex> {
    let s = c.nonempty(key, value)?;
    match regex::Regex::new(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            // The regex crate's message spans several lines: keep one.
            let msg = e.to_string().replace('\n', " ");
            c.err(key, format!("not a valid regex: {msg}"));
            None
        }
    }
}

fn parse_log_format(c: &mut Checker, value: &Value) -> Option<LogFormat> {
    const KEY: &str = "migration.log_format";
    match value {
        Value::String(s) => match s.as_str() {
            "sqlalchemy-migrate" => Some(LogFormat::SqlalchemyMigrate),
            "alembic" => Some(LogFormat::Alembic),
            other => {
                c.err(
                    KEY,
                    format!("unknown format {other:?} (\"sqlalchemy-migrate\", \"alembic\" or {{\"start\": regex, ...}})"),
                );
                None
            }
        },
        Value::Object(obj) => {
            c.unknown_keys(KEY, obj, &["start", "end", "final"]);
            let start = match obj.get("start") {
                None => {
                    c.err(&join(KEY, "start"), "required");
                    None
                }
                Some(v) => compile(c, "migration.log_format.start", v).and_then(|r| {
                    let names: BTreeSet<&str> = r.capture_names().flatten().collect();
                    if names.contains("from") && names.contains("to") {
                        Some(r)
                    } else {
                        c.err(
                            "migration.log_format.start",
                            "needs named groups (?P<from>...) and (?P<to>...)",
                        );
                        None
                    }
                }),
            };
            let end = match obj.get("end") {
                None => Some(None),
                Some(v) => compile(c, "migration.log_format.end", v).map(Some),
            };
            let final_version = match obj.get("final") {
                None => Some(None),
                Some(v) => compile(c, "migration.log_format.final", v).and_then(|r| {
                    if r.captures_len() > 1 {
                        Some(Some(r))
                    } else {
                        c.err(
                            "migration.log_format.final",
                            "needs a group for the version ((?P<version>...))",
                        );
                        None
                    }
                }),
            };
            Some(LogFormat::Regex {
                start: start?,
                end: end?,
                final_version: final_version?,
            })
        }
        other => {
            c.err(
                KEY,
                format!("must be a format name or an object of regexes, not {other}"),
            );
            None
        }
    }
}

fn parse_expected(c: &mut Checker, value: &Value, sql_mode: bool) -> Option<ExpectedVersion> {
    const KEY: &str = "expected_version";
    const CHOICES: &str = "{\"highest_numbered\": dir}, {\"alembic_heads\": dir or [dirs]}, {\"command\": argv}, {\"fixed\": \"V\"}, \"last_sql_file\" or \"unchecked\"";
    match value {
        Value::String(s) => match s.as_str() {
            "unchecked" => Some(ExpectedVersion::Unchecked),
            "last_sql_file" if sql_mode => Some(ExpectedVersion::LastSqlFile),
            "last_sql_file" => {
                c.err(KEY, "last_sql_file needs migration.sql_dir");
                None
            }
            other => {
                c.err(KEY, format!("unknown value {other:?} ({CHOICES})"));
                None
            }
        },
        Value::Object(obj) if obj.len() == 1 => {
            let (k, v) = obj.iter().next()?;
            let key = join(KEY, k);
            match k.as_str() {
                "highest_numbered" => c
                    .inner_path(&key, v, "the directory in the checkout")
                    .map(ExpectedVersion::HighestNumbered),
                "alembic_heads" => {
                    parse_alembic_tree(c, &key, v).map(ExpectedVersion::AlembicHeads)
                }
                "command" if sql_mode => {
                    c.err(&key, "only used with `migration.tool`, not with `sql_dir`");
                    None
                }
                "command" => parse_argv(c, &key, v).map(ExpectedVersion::Command),
                "fixed" => {
                    let s = match v {
                        Value::Number(n) => Some(n.to_string()),
                        other => c.nonempty(&key, other),
                    };
                    s.map(ExpectedVersion::Fixed)
                }
                other => {
                    c.err(&key, format!("unknown kind {other:?} ({CHOICES})"));
                    None
                }
            }
        }
        other => {
            c.err(KEY, format!("must be one of {CHOICES}, not {other}"));
            None
        }
    }
}

/// `dir`, `[dirs]`, or `{"version_locations": dir or [dirs], "recursive": bool}`.
fn parse_alembic_tree(c: &mut Checker, key: &str, value: &Value) -> Option<AlembicTree> {
    let (locations, recursive) = match value {
        Value::Object(obj) => {
            c.unknown_keys(key, obj, &["version_locations", "recursive"]);
            let recursive = match obj.get("recursive") {
                None => Some(true),
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    c.err(
                        &join(key, "recursive"),
                        format!("must be true or false, not {other}"),
                    );
                    None
                }
            };
            let at = join(key, "version_locations");
            let locations = match obj.get("version_locations") {
                None => {
                    c.err(&at, "required");
                    None
                }
                Some(v) => parse_locations(c, &at, v),
            };
            (locations, recursive)
        }
        other => (parse_locations(c, key, other), Some(true)),
    };
    Some(AlembicTree {
        locations: locations?,
        recursive: recursive?,
    })
}

/// A folder of the checkout, or a non-empty list of them.
fn parse_locations(c: &mut Checker, key: &str, value: &Value) -> Option<Vec<PathBuf>> {
    const WHAT: &str = "a folder of the checkout";
    match value {
        Value::Array(items) if items.is_empty() => {
            c.err(key, "must name at least one folder");
            None
        }
        Value::Array(items) => {
            let all: Vec<Option<PathBuf>> = items
                .iter()
                .enumerate()
                .map(|(i, v)| c.inner_path(&format!("{key}[{i}]"), v, WHAT))
                .collect();
            all.into_iter().collect()
        }
        other => c.inner_path(key, other, WHAT).map(|p| vec![p]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn type_to_engine_mapping() {
        for (name, engine) in [
            ("mysql", Engine::MySql),
            ("percona", Engine::MySql),
            ("MySQL", Engine::MySql),
            ("mariadb", Engine::MariaDb),
            ("postgres", Engine::PostgreSql),
            ("postgresql", Engine::PostgreSql),
            ("sqlite", Engine::Sqlite),
        ] {
            assert_eq!(Engine::from_name(name), Some(engine), "{name}");
        }
        assert_eq!(Engine::from_name("oracle"), None);
    }

    #[test]
    fn connection_fallback_field_by_field() {
        let own = Connection {
            host: Some("db1".into()),
            user: Some("nova".into()),
            ..Connection::default()
        };
        let job = Connection {
            host: Some("db0".into()),
            port: Some(3307),
            user: Some("th".into()),
            password: Some("secret".into()),
            socket: None,
        };
        assert_eq!(
            own.or_fallback(&job),
            Connection {
                host: Some("db1".into()),
                port: Some(3307),
                socket: None,
                user: Some("nova".into()),
                password: Some("secret".into()),
            }
        );
    }

    #[test]
    fn connection_from_json() {
        let (conn, warnings) = Connection::from_json(
            "connection",
            &json!({"host": "h", "port": 5432, "user": "u", "password": "", "sslmode": "x"}),
        )
        .unwrap();
        assert_eq!(conn.port, Some(5432));
        assert_eq!(conn.password.as_deref(), Some(""));
        assert_eq!(
            warnings,
            vec!["connection.sslmode: unknown key, ignored".to_string()]
        );
        let errs = Connection::from_json("connection", &json!({"port": 70000, "socket": "rel"}))
            .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "connection.port: must be a port number 1-65535, not 70000".to_string(),
                "connection.socket: must be an absolute path, not \"rel\"".to_string(),
            ]
        );
    }

    #[test]
    fn seed_formats() {
        assert_eq!(SeedFormat::from_path(Path::new("a/x.sql")), SeedFormat::Sql);
        assert_eq!(
            SeedFormat::from_path(Path::new("x.SQL.GZ")),
            SeedFormat::SqlGz
        );
        assert_eq!(
            SeedFormat::from_path(Path::new("x.dump")),
            SeedFormat::PgCustom
        );
        assert_eq!(
            SeedFormat::from_path(Path::new("x.pgdump")),
            SeedFormat::PgCustom
        );
        assert_eq!(SeedFormat::from_path(Path::new("x.txt")), SeedFormat::Sql);
    }

    #[test]
    fn tool_dataset_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let config = write(
            tmp.path(),
            "pg/config.json",
            &json!({
                "project": "acme/app",
                "engine": "postgres",
                "seed_data": "seed.dump",
                "connection": {"user": "app"},
                "migration": {
                    "tool": ["alembic", "-c", "{work_dir}/alembic.ini", "upgrade", "head"],
                    "env": {"DB_URL": "{db_url}", "X": "{nope}"},
                    "templates": {"alembic.ini": "tpl/alembic.ini.in"},
                    "log_format": "alembic"
                },
                "expected_version": {"alembic_heads": "app/migrations/versions"},
                "upgrade_path": ["stable/1.0", "v2.0"],
                "timeout": 90.5
            })
            .to_string(),
        );
        let defaults = DatasetDefaults {
            connection: Connection {
                password: Some("pw".into()),
                user: Some("ignored".into()),
                ..Connection::default()
            },
            engine: Some(Engine::MySql),
        };
        let (d, warnings) = load_dataset(&config, "pg", &tmp.path().join("pg"), &defaults).unwrap();
        assert_eq!(d.engine, Engine::PostgreSql);
        assert_eq!(d.database, "pg");
        assert_eq!(d.seed.format, SeedFormat::PgCustom);
        assert_eq!(d.seed.path, tmp.path().join("pg/seed.dump"));
        assert_eq!(d.connection.user.as_deref(), Some("app"));
        assert_eq!(d.connection.password.as_deref(), Some("pw"));
        assert_eq!(
            d.expected_version,
            ExpectedVersion::AlembicHeads(AlembicTree::folder("app/migrations/versions"))
        );
        assert_eq!(d.upgrade_path, vec!["stable/1.0", "v2.0"]);
        assert_eq!(d.timeout, Some(Duration::from_millis(90_500)));
        match &d.migration {
            Migration::Tool {
                argv,
                env,
                templates,
                log_format,
            } => {
                assert_eq!(argv[0], "alembic");
                assert_eq!(env["DB_URL"], "{db_url}");
                assert_eq!(
                    templates,
                    &vec![(
                        tmp.path().join("pg/tpl/alembic.ini.in"),
                        "alembic.ini".to_string()
                    )]
                );
                assert!(matches!(log_format, LogFormat::Alembic));
            }
            other => panic!("{other:?}"),
        }
        assert!(d.runnable().is_ok());
        assert_eq!(
            warnings,
            vec![format!(
                "{}: migration.env.X: unknown placeholder {{nope}}, left as is",
                config.display()
            )]
        );
    }

    #[test]
    fn sql_dir_dataset_defaults_to_last_sql_file() {
        let tmp = tempfile::tempdir().unwrap();
        let config = write(
            tmp.path(),
            "s.json",
            &json!({
                "project": "acme/app",
                "engine": "sqlite",
                "seed_data": "s.sql",
                "migration": {"sql_dir": "db/migrations"}
            })
            .to_string(),
        );
        let (d, w) = load_dataset(&config, "s", tmp.path(), &DatasetDefaults::default()).unwrap();
        assert!(w.is_empty());
        assert_eq!(d.expected_version, ExpectedVersion::LastSqlFile);
        match d.migration {
            Migration::SqlFiles { dir, version_table } => {
                assert_eq!(dir, PathBuf::from("db/migrations"));
                assert_eq!(version_table, DEFAULT_VERSION_TABLE);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn regex_log_format_validation() {
        let mut c = Checker::bare();
        assert!(parse_log_format(
            &mut c,
            &json!({"start": "^Applying (?P<from>\\d*) (?P<to>\\d+)", "end": "OK$", "final": "at (?P<version>\\d+)"})
        )
        .is_some());
        assert!(c.errors.is_empty());
        let mut c = Checker::bare();
        assert!(parse_log_format(
            &mut c,
            &json!({"start": "^Applying (\\d+)", "end": "(", "final": "no group", "x": 1})
        )
        .is_none());
        assert_eq!(c.errors.len(), 3, "{:?}", c.errors);
        assert!(c.errors[0].starts_with("migration.log_format.start: needs named groups"));
        assert!(c.errors[1].starts_with("migration.log_format.end: not a valid regex: "));
        assert!(!c.errors[1].contains('\n'));
        assert!(c.errors[2].starts_with("migration.log_format.final: needs a group"));
        assert_eq!(
            c.warnings,
            vec!["migration.log_format.x: unknown key, ignored".to_string()]
        );
    }
}
