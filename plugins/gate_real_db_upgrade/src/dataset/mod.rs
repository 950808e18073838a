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
//! `tool` is an argv list (placeholders: [`crate::template::PLACEHOLDERS`]); `templates` maps an output file
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
//!
//! # Layout
//! The model is here; [`load`] finds and reads the files, `parse` reads one file's keys (one
//! function per key section) with the SDK's checker ([`turbo_hipster_sdk::config`]: the same
//! key paths and words as the daemon's config and the job configs), `check` holds the checks
//! of names and paths several sections share.
//! The engine, connection and seed types live in [`crate::engine`], the log formats in
//! [`crate::logparse`], the expected version in [`crate::version`], the alembic folders in
//! [`crate::alembic`]; they are re-exported here as the vocabulary of a dataset.

mod check;
pub mod load;
mod parse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use turbo_hipster_sdk::config::SecondsRange;

pub use crate::alembic::AlembicTree;
use crate::engine::VersionSource;
pub use crate::engine::{Connection, Engine, Seed, SeedFormat};
use crate::limits::Limits;
pub use crate::logparse::LogFormat;
pub use crate::version::ExpectedVersion;
pub use load::{load_dataset, load_datasets, load_datasets_with_warnings};

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

/// The default `version_table` of the SQL-files mode.
pub const DEFAULT_VERSION_TABLE: &str = "th_schema_version";

/// The longest `database` prefix accepted (room is left for a run suffix within the 63/64
/// character limits of PostgreSQL and MySQL).
pub const MAX_DATABASE_PREFIX: usize = 48;

/// The longest `timeout` accepted, in seconds (a week), here and in the job config.
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// What `timeout` takes, here and in the job config: over 0, at most a week.
pub const TIMEOUT_RANGE: SecondsRange = SecondsRange::over(0.0, MAX_TIMEOUT_SECONDS);

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
    pub provisioning: Provisioning,
    /// Cold or warm caches when the first migration starts (`cache`).
    pub cache: Cache,
    /// How often the run database's locks are sampled (`lock_sample_interval`); `None`:
    /// not observed.
    pub lock_sample: Option<Duration>,
    /// Whether each migration's work is counted (`count_work`, default `true`); off, no
    /// counter is read.
    pub count_work: bool,
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

impl Dataset {
    /// What a job would find missing among the files this dataset names and that can be
    /// known before a job runs: the seed ([`Seed::check_file`]), the config templates, and a
    /// migration tool given as an absolute path without placeholders (a relative tool, or one
    /// with placeholders, is resolved in the checkout at run time and cannot be checked here).
    /// One line each, starting with the key.
    pub fn check_files(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.seed.check_file().err().into_iter().collect();
        let programs = self.fixed_programs();
        let check_program = |problems: &mut Vec<String>, which: &str| {
            for (key, program) in programs.iter().filter(|(key, _)| *key == which) {
                if let Err(why) = executable(program) {
                    problems.push(format!("{key}: {why}"));
                }
            }
        };
        check_program(&mut problems, TOOL_KEY);
        if let Migration::Tool { templates, .. } = &self.migration {
            for (template, output) in templates {
                if let Err(e) = std::fs::File::open(template) {
                    problems.push(format!(
                        "migration.templates.{output}: cannot read {}: {e}",
                        template.display()
                    ));
                }
            }
        }
        check_program(&mut problems, HEADS_COMMAND_KEY);
        problems
    }

    /// The programs this dataset names by an absolute path without placeholders (the
    /// migration tool, the heads command), with their key: those that can be checked before
    /// a run (others are resolved in the checkout at run time).
    pub fn fixed_programs(&self) -> Vec<(&'static str, &Path)> {
        let tool = match &self.migration {
            Migration::Tool { argv, .. } => argv.first().map(|p| (TOOL_KEY, p)),
            Migration::SqlFiles { .. } => None,
        };
        let heads = match &self.expected_version {
            ExpectedVersion::Command(argv) => argv.first().map(|p| (HEADS_COMMAND_KEY, p)),
            _ => None,
        };
        [tool, heads]
            .into_iter()
            .flatten()
            .filter(|(_, p)| p.starts_with('/') && !p.contains('{'))
            .map(|(key, p)| (key, Path::new(p.as_str())))
            .collect()
    }
}

/// The key of the migration tool's program.
const TOOL_KEY: &str = "migration.tool[0]";
/// The key of the heads command's program.
const HEADS_COMMAND_KEY: &str = "expected_version.command[0]";

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
#[derive(Debug, Clone)]
pub struct DatasetDefaults {
    /// `connection` from the job config.
    pub connection: Connection,
    /// `engine` from the job config, if any.
    pub engine: Option<Engine>,
    /// `lock_sample_interval` from the job config ([`lock_sample_interval`]); 100 ms unless
    /// it says otherwise.
    pub lock_sample: Option<Duration>,
}

impl Default for DatasetDefaults {
    fn default() -> Self {
        Self {
            connection: Connection::default(),
            engine: None,
            lock_sample: Some(DEFAULT_LOCK_SAMPLE),
        }
    }
}

/// The key of the lock sampling interval, in the job config and in datasets.
pub const KEY_LOCK_SAMPLE: &str = "lock_sample_interval";
/// The dataset key switching the work counters (engine/counters.rs) on or off.
pub const KEY_COUNT_WORK: &str = "count_work";
/// Its default: 100 ms.
pub const DEFAULT_LOCK_SAMPLE: Duration = Duration::from_millis(100);
/// Its largest value, in milliseconds (a minute).
const MAX_LOCK_SAMPLE_MS: u64 = 60_000;

/// `lock_sample_interval`: milliseconds between two samples of the run database's locks
/// (whole, at most a minute); `0` or `false` turn the observation off, `true` is the
/// default. `None`: off.
///
/// # Errors
/// What is wrong with the value (without the key).
pub fn lock_sample_interval(value: &serde_json::Value) -> Result<Option<Duration>, String> {
    match value {
        serde_json::Value::Bool(false) => Ok(None),
        serde_json::Value::Bool(true) => Ok(Some(DEFAULT_LOCK_SAMPLE)),
        v => match v.as_u64().filter(|ms| *ms <= MAX_LOCK_SAMPLE_MS) {
            Some(0) => Ok(None),
            Some(ms) => Ok(Some(Duration::from_millis(ms))),
            None => Err(format!(
                "must be whole milliseconds from 0 (off) to {MAX_LOCK_SAMPLE_MS}, or false \
                 (off), got {v}"
            )),
        },
    }
}

/// The `provisioning` dataset key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provisioning {
    /// The fast path where there is one, else (or when it fails) reload.
    #[default]
    Auto,
    /// Only the fast path.
    Clone,
    /// Always reload the seed.
    Reload,
}

impl Provisioning {
    /// The key's values.
    pub const NAMES: [&'static str; 3] = ["auto", "clone", "reload"];

    /// The key's values with what each means, for
    /// [`turbo_hipster_sdk::config::Checker::one_of`].
    pub const CHOICES: [(&'static str, Provisioning); 3] = [
        ("auto", Provisioning::Auto),
        ("clone", Provisioning::Clone),
        ("reload", Provisioning::Reload),
    ];

    /// From the key's value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "auto" => Some(Provisioning::Auto),
            "clone" => Some(Provisioning::Clone),
            "reload" => Some(Provisioning::Reload),
            _ => None,
        }
    }

    /// Whether `engine` has a fast path (MySQL/MariaDB: where the host allows, see
    /// [`crate::provisioning::mariadb::probe`]).
    pub fn fast_path_for(engine: Engine) -> bool {
        matches!(
            engine,
            Engine::PostgreSql | Engine::Sqlite | Engine::MariaDb | Engine::MySql
        )
    }
}

/// The `cache` dataset key: the state of the server's caches when the first migration starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cache {
    /// As provisioning leaves them: on MariaDB's private server an empty buffer pool (what
    /// the original measured after its restart of MySQL).
    #[default]
    Cold,
    /// Every table and index of the run database read once before the first migration
    /// (MySQL/MariaDB).
    Warm,
}

impl Cache {
    /// The key's values.
    pub const NAMES: [&'static str; 2] = ["cold", "warm"];

    /// The key's values with what each means, for
    /// [`turbo_hipster_sdk::config::Checker::one_of`].
    pub const CHOICES: [(&'static str, Cache); 2] = [("cold", Cache::Cold), ("warm", Cache::Warm)];

    /// From the key's value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "cold" => Some(Cache::Cold),
            "warm" => Some(Cache::Warm),
            _ => None,
        }
    }
}

impl Dataset {
    /// Where the database records the version for this migration mode: with a log format of
    /// regexes, `alembic_version` when the expected version is alembic's heads (read or printed),
    /// else `migrate_version`.
    pub fn version_source(&self) -> VersionSource {
        match &self.migration {
            Migration::SqlFiles { version_table, .. } => {
                VersionSource::Table(version_table.clone())
            }
            Migration::Tool { log_format, .. } => match log_format {
                LogFormat::SqlalchemyMigrate => VersionSource::MigrateVersion,
                LogFormat::Alembic => VersionSource::AlembicVersion,
                LogFormat::Regex { .. } => match self.expected_version {
                    ExpectedVersion::AlembicHeads(_) | ExpectedVersion::Command(_) => {
                        VersionSource::AlembicVersion
                    }
                    _ => VersionSource::MigrateVersion,
                },
            },
        }
    }
}
