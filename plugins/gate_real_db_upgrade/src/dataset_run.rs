//! One dataset's run: a database of its own made from the seed, the migrations (through the
//! project's tool, or the SQL-files mode), first along the dataset's `upgrade_path`, then on
//! the change; the checks; and the database dropped again whatever happened.
//!
//! The run's database is named `<database, sanitised, ≤ 40 chars>_<first 8 of the job's
//! unique>_<dataset index>_<worker>` (see [`run_database_name`]), so parallel runs and parallel
//! jobs never share one, the seed itself is never touched, and whose it is shows. A [`DbGuard`]
//! drops it when the run ends by any path: success, failure, cancellation, timeout or panic
//! (unless `keep_databases`); a claim file ([`crate::leftovers`]) covers the one path no guard
//! survives, the process killed.
//!
//! A failure the change did not cause (the server lost, a full disk, git unreachable) becomes
//! the dataset's only line, `ERROR - infrastructure: …`: after a phase fails the server is
//! pinged, and a server that no longer answers is to blame, not the migration.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Local;
use turbo_hipster_sdk::support::contain::{ContainError, Contained};
use turbo_hipster_sdk::support::env::remove_daemon_secrets;
use turbo_hipster_sdk::support::git::{self, GitError, ZuulChange};
use turbo_hipster_sdk::support::process::{
    seconds, signal_name, Cancellation, ProcessError, ProcessOutcome, ProcessRunner, Stream,
    Termination,
};
use turbo_hipster_sdk::support::LogFile;

use crate::alembic;
use crate::dataset::{Dataset, Migration};
use crate::engine::rewrites::StatePoint;
use crate::engine::Engine;
use crate::engine::{Cut, EngineError, Gap, Observation, Part, Server, TableLocks};
use crate::limits;
use crate::limits::Limits;
use crate::logparse::LogFormat;
use crate::logparse::{MigrationRecord, ParsedRun, StreamParser};
use crate::messages;
use crate::report::{DatasetSummary, MigrationSummary};
use crate::settings::Settings;
use crate::sqlfiles::{self, ServerSpec, SqlEnd, SqlTarget};
use crate::template::Placeholders;
use crate::version;
use crate::version::ExpectedVersion;

/// The log tag of the plugin's own notes in a dataset's log.
pub const NOTE: &str = crate::engine::NOTE_TAG;
/// The phase name of the run on the change itself.
pub const CHANGE_PHASE: &str = "change";
/// The longest database-name prefix taken from the dataset.
const NAME_PREFIX_MAX: usize = 40;
/// The longest part of a run database's name taken from the worker's name.
const WORKER_TAG_MAX: usize = 12;
/// The most lines of an `expected_version.command`'s output read for heads.
const MAX_HEAD_LINES: usize = 10_000;
/// The most notes about the heads command's output written to the log.
const MAX_HEAD_NOTES: usize = 40;

/// Everything one dataset's run needs from the job.
pub struct DatasetJob<'a> {
    /// The dataset.
    pub dataset: &'a Dataset,
    /// Its index among the job's datasets (part of the database name).
    pub index: usize,
    /// The job's unique id (part of the database name).
    pub unique: &'a str,
    /// The worker's name (the end of the database name).
    pub worker: &'a str,
    /// Where run databases are claimed ([`crate::leftovers`]); `None`: not recorded.
    pub claims: Option<&'a Path>,
    /// Where golden copies are kept ([`crate::provisioning`]); `None`: always reload.
    pub golden: Option<&'a Path>,
    /// The job's configuration.
    pub settings: &'a Settings,
    /// The change (its URL and project serve the upgrade-path refs too).
    pub change: &'a ZuulChange,
    /// The change's checkout.
    pub checkout: &'a Path,
    /// The git mirror cache.
    pub git_cache: &'a Path,
    /// `git_prep.log`.
    pub git_log: &'a LogFile,
    /// The job's working directory.
    pub work_root: &'a Path,
    /// The job's results directory.
    pub results_dir: &'a Path,
    /// The daemon's pip cache, if any.
    pub pip_cache: Option<&'a Path>,
    /// The build parameters the tool gets in its environment (already filtered by the
    /// job's allow-list, [`Settings::parameters`]).
    pub parameters: &'a [(String, String)],
    /// The history of the job's datasets, for the regression warning ([`crate::regression`]).
    pub baseline: &'a crate::regression::Baseline,
    /// The job's cancellation.
    pub cancel: &'a dyn Cancellation,
    /// Called after each of [`STEPS`] steps of the run.
    pub tick: &'a (dyn Fn() + Sync),
}

/// Progress steps of one dataset's run: the seed loaded, the run finished.
pub const STEPS: u64 = 2;

/// How a dataset's run ended.
#[derive(Debug, Clone)]
pub struct DatasetOutcome {
    /// What the summary says about it.
    pub summary: DatasetSummary,
    /// The job was cancelled during it.
    pub cancelled: bool,
}

/// The name of a dataset's log in the results directory.
pub fn log_name(dataset: &str) -> String {
    let safe: String = dataset
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    format!("{safe}.log")
}

/// The run database's name: `<prefix>_<unique8>_<index>`, lower case, letters, digits and
/// `_` only, starting with a letter; `prefix` is the dataset's `database` (or its name),
/// sanitised and cut to 40 characters.
///
/// ```
/// use gate_real_db_upgrade::dataset_run::database_name;
///
/// assert_eq!(
///     database_name("nova_datasets_user_001", "6fd3A2b1-99", 0),
///     "nova_datasets_user_001_6fd3a2b1_0"
/// );
/// assert_eq!(database_name("1-Weird name!", "AB-9", 2), "th_1_weird_name__ab9_2");
/// ```
pub fn database_name(database: &str, unique: &str, index: usize) -> String {
    format!("{}_{index}", database_prefix(database, unique))
}

/// The part of [`database_name`] before the index: every run database of one job and dataset
/// name starts with it.
pub fn database_prefix(database: &str, unique: &str) -> String {
    let mut prefix = crate::engine::name_part(database);
    if !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        prefix.insert_str(0, "th_");
    }
    prefix.truncate(NAME_PREFIX_MAX);
    let mut unique: String = unique
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    if unique.is_empty() {
        unique = fallback_unique();
    }
    format!("{prefix}_{unique}")
}

/// The run database's name: [`database_name`], then `_` and the worker's name (lower case,
/// letters and digits, at most 12), as far as the 63 characters allow: whose run a database
/// on a shared server is shows in its name.
///
/// ```
/// use gate_real_db_upgrade::dataset_run::run_database_name;
///
/// assert_eq!(
///     run_database_name("nova", "6fd3a2b1-99", 0, "TH-worker.01"),
///     "nova_6fd3a2b1_0_thworker01"
/// );
/// assert_eq!(run_database_name("nova", "6fd3a2b1", 0, ""), "nova_6fd3a2b1_0");
/// ```
pub fn run_database_name(database: &str, unique: &str, index: usize, worker: &str) -> String {
    let name = database_name(database, unique, index);
    let room = crate::engine::MAX_DATABASE_NAME_LEN.saturating_sub(name.len() + 1);
    let tag: String = worker
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(WORKER_TAG_MAX.min(room))
        .collect();
    if tag.is_empty() {
        name
    } else {
        format!("{name}_{tag}")
    }
}

/// Eight hex digits from the clock and the process id, for jobs without a unique id.
fn fallback_unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// Drops the run's database when it goes out of scope, whatever ended the run.
pub struct DbGuard<'a> {
    server: &'a Server,
    name: &'a str,
    keep: bool,
    log: &'a LogFile,
    claim: Option<PathBuf>,
    dropped: bool,
}

impl<'a> DbGuard<'a> {
    /// Guards database `name` of `server`; `keep` leaves it in place (debugging).
    pub fn new(server: &'a Server, name: &'a str, keep: bool, log: &'a LogFile) -> Self {
        Self {
            server,
            name,
            keep,
            log,
            claim: None,
            dropped: false,
        }
    }

    /// Also removes the database's claim ([`crate::leftovers`]) once it is dropped or kept; a
    /// database that could not be dropped keeps its claim, for the next start.
    pub fn with_claim(mut self, claim: Option<PathBuf>) -> Self {
        self.claim = claim;
        self
    }

    /// Forgets the database: it was never made on this server (a private server holds the
    /// run's), so there is nothing to drop; the claim goes.
    pub fn disarm(&mut self) {
        self.release_claim();
        self.claim = None;
        self.dropped = true;
    }

    fn release_claim(&self) {
        if let Some(claim) = &self.claim {
            turbo_hipster_sdk::support::owner::release(claim);
        }
    }
}

impl Drop for DbGuard<'_> {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        if self.keep {
            let _ = self.log.line(
                NOTE,
                &format!("keeping database {} (keep_databases)", self.name),
            );
            tracing::info!("keeping database {} (keep_databases is set)", self.name);
            self.release_claim();
            return;
        }
        match self.server.drop_database(self.name) {
            Ok(()) => {
                self.release_claim();
                let _ = self
                    .log
                    .line(NOTE, &format!("dropped database {}", self.name));
            }
            Err(e) => {
                let _ = self
                    .log
                    .line(NOTE, &format!("could not drop database {}: {e}", self.name));
                tracing::warn!("could not drop database {}: {e}", self.name);
            }
        }
    }
}

/// What one phase (one tool run or one SQL-files pass) gave.
#[derive(Debug, Default)]
struct Phase {
    records: Vec<MigrationRecord>,
    lines: Vec<String>,
    cancelled: bool,
    printed_final: Option<String>,
    last_sql_file: Option<String>,
    /// The first line of the tool's output (or the server's message in the SQL-files mode)
    /// that speaks of a lost server or a full disk.
    unavailable_hint: Option<String>,
    /// The tool could not be started for a reason of the worker's set-up (containment):
    /// not the change's fault.
    setup_fault: Option<String>,
}

/// Why the migration tool did not start.
#[derive(Debug)]
enum NotStarted {
    /// The phase's result line (the dataset's configuration or the time limit).
    Line(String),
    /// The worker's set-up stops it (containment): not the change's fault.
    SetUp(String),
}

/// Why a dataset's run ended before its last step, or how its last step (the version
/// check) found the change.
#[derive(Debug)]
enum Stop {
    /// The job was cancelled.
    Cancelled,
    /// The dataset's result line: set-up failed (the seed, a directory, an upgrade path's
    /// checkout). It comes before the migrations' warnings.
    Failed(String),
    /// A phase failed: its own lines say why.
    PhaseFailed,
    /// Not the change's fault: what failed (the server lost, the disk full, git
    /// unreachable). Replaces every other line of the dataset.
    Infrastructure(String),
    /// The final version is not the expected one (after a clean run).
    VersionMismatch,
}

/// What [`Run::execute`] found.
#[derive(Debug)]
struct Executed {
    /// Each phase with its name.
    phases: Vec<(String, Phase)>,
    /// How the run ended.
    end: Result<(), Stop>,
}

impl Executed {
    /// The dataset's result lines: set-up failures, the phases' failures, the limits'
    /// warnings, the version check; only the infrastructure's when it is to blame.
    fn result_lines(
        &self,
        limits: &Limits,
        records: &[MigrationRecord],
        regressions: Vec<String>,
    ) -> Vec<String> {
        if let Err(Stop::Infrastructure(what)) = &self.end {
            return vec![messages::infrastructure(what)];
        }
        let mut lines = Vec::new();
        if let Err(Stop::Failed(line)) = &self.end {
            lines.push(line.clone());
        }
        lines.extend(
            self.phases
                .iter()
                .flat_map(|(_, p)| p.lines.iter().cloned()),
        );
        lines.extend(limits::check(limits, records));
        lines.extend(regressions);
        if let Err(Stop::VersionMismatch) = &self.end {
            lines.push(messages::VERSION_MISMATCH.to_string());
        }
        dedup_keep_order(&mut lines);
        lines
    }
}

/// The accumulated state of a dataset's run.
struct Run<'j, 'a> {
    job: &'j DatasetJob<'a>,
    log: &'j LogFile,
    db: &'j str,
    server: &'j Server,
    spec: ServerSpec,
    work_dir: PathBuf,
    deadline: Instant,
    timeout: Duration,
}

/// Runs one dataset to its end. Never panics on bad input; every problem becomes a result
/// line of the outcome.
pub fn run_dataset(job: &DatasetJob<'_>) -> DatasetOutcome {
    let started = Instant::now();
    let ds = job.dataset;
    let prefix_source = if ds.database.is_empty() {
        &ds.name
    } else {
        &ds.database
    };
    let db = run_database_name(prefix_source, job.unique, job.index, job.worker);
    let mut summary = DatasetSummary {
        name: ds.name.clone(),
        engine: ds.engine.name().to_string(),
        database: db.clone(),
        seed: ds.seed.path.display().to_string(),
        config: ds.source.display().to_string(),
        result_lines: Vec::new(),
        duration_ms: 0,
        final_version: None,
        expected_version: None,
        migrations: Vec::new(),
        provisioning: None,
        counters_source: None,
        counters_scope: None,
        observation_gaps: 0,
    };
    let log = match open_log(job) {
        Ok(log) => log,
        Err(line) => {
            summary.result_lines.push(line);
            return DatasetOutcome {
                summary,
                cancelled: false,
            };
        }
    };
    let timeout = ds.timeout.unwrap_or(job.settings.timeout);
    let spec = ServerSpec {
        engine: ds.engine,
        connection: ds.connection.clone(),
        sqlite_dir: job.work_root.join("databases"),
    };
    let executed = {
        let server = spec.server();
        let work_dir = job
            .work_root
            .join("datasets")
            .join(format!("{}_{}", job.index, db));
        let run = Run {
            job,
            log: &log,
            db: &db,
            server: &server,
            spec: spec.clone(),
            work_dir,
            deadline: started + timeout,
            timeout,
        };
        // The guard inside `execute` has dropped the database when it returns.
        run.execute(&mut summary)
    };
    let (records, regressions) =
        summarise_migrations(&mut summary, ds, &executed.phases, job.baseline);
    summary.observation_gaps = summary
        .migrations
        .iter()
        .map(|m| m.observation_gaps.len())
        .sum();
    if let Some(note) = crate::report::observation_note(&summary.migrations) {
        // A note, not a result line: the change is judged on what was seen.
        tracing::warn!("dataset {}: {note}", ds.name);
        let _ = log.line(NOTE, &note);
    }
    if let Err(Stop::Infrastructure(what)) = &executed.end {
        // The other lines are consequences: the change is not judged.
        tracing::warn!("dataset {}: infrastructure failure: {what}", ds.name);
        let _ = log.line(
            NOTE,
            &format!("infrastructure failure, not the change's: {what}"),
        );
    }
    summary.result_lines = executed.result_lines(&ds.limits, &records, regressions);
    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let _ = log.line(
        NOTE,
        &if summary.result_lines.is_empty() {
            format!("dataset {}: {}", ds.name, messages::SUCCESS)
        } else {
            format!("dataset {}: {}", ds.name, summary.result_lines.join(" | "))
        },
    );
    DatasetOutcome {
        summary,
        cancelled: matches!(executed.end, Err(Stop::Cancelled)),
    }
}

/// The dataset's log in the results directory, or the result line saying why not.
fn open_log(job: &DatasetJob<'_>) -> Result<LogFile, String> {
    let log_path = job.results_dir.join(log_name(&job.dataset.name));
    LogFile::create(&log_path).map_err(|e| {
        let what = format!("cannot create {}: {e}", log_path.display());
        if is_disk_full(&e) {
            messages::infrastructure(&format!("disk full: {what}"))
        } else {
            messages::failure(&what)
        }
    })
}

/// Every migration of every phase into the summary, with its limit and warnings; the
/// migrations' records, in order, and the regression warnings ([`crate::regression`]).
fn summarise_migrations(
    summary: &mut DatasetSummary,
    ds: &Dataset,
    phases: &[(String, Phase)],
    baseline: &crate::regression::Baseline,
) -> (Vec<MigrationRecord>, Vec<String>) {
    let mut all_records = Vec::new();
    let mut regressions = Vec::new();
    for (phase, p) in phases {
        for record in &p.records {
            let limit = ds.limits.seconds.lookup(&record.from, &record.to);
            let mut messages = limits::check(&ds.limits, std::slice::from_ref(record));
            if let Some(line) = baseline.check(&ds.name, record) {
                tracing::warn!("dataset {}: {line}", ds.name);
                messages.push(line.clone());
                regressions.push(line);
            }
            summary.migrations.push(MigrationSummary::from_record(
                phase, record, limit, messages,
            ));
            all_records.push(record.clone());
        }
    }
    (all_records, regressions)
}

/// `text` with every secret replaced by `***`.
fn mask_secrets(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |t, secret| {
        t.replace(secret.as_str(), "***")
    })
}

/// A command line for the log, quoted as a shell would need it.
fn describe_command(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,{}".contains(&b));
            if plain {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where a phase was when it ended, for messages: its last migration.
fn phase_point(phase: &Phase) -> String {
    match phase.records.last() {
        Some(m) => format!("migration {}->{}", m.from, m.to),
        None => "the migration tool's start".to_string(),
    }
}

/// ENOSPC (or EDQUOT): the disk is full, not the change wrong.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28 | 122)) || e.kind() == io::ErrorKind::StorageFull
}

fn dedup_keep_order(lines: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    lines.retain(|l| seen.insert(l.clone()));
}

impl Run<'_, '_> {
    fn note(&self, text: &str) {
        let _ = self.log.line(NOTE, text);
    }

    /// The run: its phases and how it ended; fills `summary`'s provisioning and versions.
    fn execute(&self, summary: &mut DatasetSummary) -> Executed {
        let mut phases = Vec::new();
        let end = self.steps(summary, &mut phases);
        Executed { phases, end }
    }

    /// The run's steps, each phase added to `phases` as it ends.
    fn steps(
        &self,
        summary: &mut DatasetSummary,
        phases: &mut Vec<(String, Phase)>,
    ) -> Result<(), Stop> {
        self.announce();
        self.check_start()?;
        let (mut guard, provided) = self.create_database(summary)?;
        // Building (or waiting for) the shared golden copy does not count against the limit.
        let run = Run {
            deadline: self.deadline + Duration::from_secs_f64(provided.done.shared_seconds),
            spec: self.spec.clone(),
            work_dir: self.work_dir.clone(),
            ..*self
        };
        match provided.private {
            // MariaDB's private server (crate::provisioning::mariadb): the run goes there.
            Some(private) => {
                guard.disarm();
                run.migrate_on(private, summary, phases)
            }
            None => run.migrate(summary, phases),
        }
    }

    /// [`Run::migrate`] on the private server `private`, which ends (its files removed unless
    /// `keep_databases`) when the run does.
    fn migrate_on(
        &self,
        mut private: crate::provisioning::PrivateRun,
        summary: &mut DatasetSummary,
        phases: &mut Vec<(String, Phase)>,
    ) -> Result<(), Stop> {
        let keep = self.job.settings.keep_databases;
        if keep {
            private.server.keep_files();
            self.note(&format!(
                "keeping the private server's files in {} (keep_databases)",
                private.server.dir().display()
            ));
        }
        let spec = ServerSpec {
            connection: private.server.connection(),
            ..self.spec.clone()
        };
        let server = spec.server().run_private();
        summary.database.clone_from(&private.database);
        let run = Run {
            db: &private.database,
            server: &server,
            spec,
            work_dir: self.work_dir.clone(),
            ..*self
        };
        let result = run.migrate(summary, phases);
        let port = private.server.port();
        drop(private);
        if !keep {
            self.note(&format!(
                "dropped database {} with its private server (port {port}: stopped, files \
                 removed)",
                summary.database
            ));
        }
        result
    }

    /// `cache: warm`: every table and index read once before the first migration.
    fn warm(&self) -> Result<(), Stop> {
        let started = Instant::now();
        match self.server.warm(self.db) {
            Ok((tables, indexes)) => {
                self.note(&format!(
                    "cache: warm: read {tables} tables and {indexes} secondary indexes once in \
                     {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            Err(e) => {
                self.note(&format!("cache: warm: reading the tables failed: {e}"));
                match e.infrastructure() {
                    Some(what) => Err(Stop::Infrastructure(format!("warming the caches: {what}"))),
                    None => Ok(()),
                }
            }
        }
    }

    /// The migrations on the run's database (the upgrade path, then the change), then the
    /// final version check.
    fn migrate(
        &self,
        summary: &mut DatasetSummary,
        phases: &mut Vec<(String, Phase)>,
    ) -> Result<(), Stop> {
        if self.job.dataset.cache == crate::provisioning::Cache::Warm {
            self.warm()?;
        }
        (self.job.tick)();
        self.make_work_dir()?;
        // Dropped before the guard drops the database.
        let observation = Observation::new(self.observe_locks(), self.count_work(summary));
        let observer = &observation;
        for (i, reference) in self.job.dataset.upgrade_path.iter().enumerate() {
            let phase = self.upgrade_via(i, reference, observer)?;
            let end = self.phase_end(&phase);
            phases.push((reference.clone(), phase));
            end?;
        }
        tracing::info!("dataset {}: migrating to the change", self.job.dataset.name);
        let phase = self.run_phase(CHANGE_PHASE, self.job.checkout, observer);
        let failed = match self.phase_end(&phase) {
            Ok(()) => false,
            Err(Stop::PhaseFailed) => true,
            Err(stop) => {
                phases.push((CHANGE_PHASE.to_string(), phase));
                return Err(stop);
            }
        };
        let printed = phase.printed_final.clone();
        let last_sql_file = phase.last_sql_file.clone();
        phases.push((CHANGE_PHASE.to_string(), phase));
        self.read_final_version(summary)?;
        let expected = self.expected_for_check(last_sql_file.as_deref())?;
        summary.expected_version = expected.clone().filter(|v| !v.is_empty());
        self.note(&format!(
            "final schema version {} (printed: {}), expected {}",
            summary.final_version.as_deref().unwrap_or("none"),
            printed.as_deref().unwrap_or("none"),
            match &expected {
                None => "unchecked",
                Some(v) if v.is_empty() => "unknown",
                Some(v) => v,
            }
        ));
        // A failed run explains a wrong version already: only check after a clean one.
        match expected {
            Some(expected) if !failed => self.check_version(
                summary.final_version.as_deref(),
                printed.as_deref(),
                &expected,
            ),
            _ => Ok(()),
        }
    }

    fn announce(&self) {
        let ds = self.job.dataset;
        self.note(&format!(
            "dataset {} ({}) for {}: engine {}, database {}, seed {}, time limit {}",
            ds.name,
            ds.source.display(),
            ds.project,
            ds.engine.name(),
            self.db,
            ds.seed.path.display(),
            seconds(self.timeout),
        ));
        tracing::info!(
            "dataset {}: creating database {} from {}",
            ds.name,
            self.db,
            ds.seed.path.display()
        );
    }

    /// Whether the run may start: not cancelled, a runnable dataset, SQLite's directory.
    fn check_start(&self) -> Result<(), Stop> {
        let ds = self.job.dataset;
        if self.job.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        ds.runnable().map_err(|why| {
            self.note(&why);
            Stop::Failed(messages::failure(&why))
        })?;
        self.check_programs()?;
        if ds.engine == Engine::Sqlite {
            fs::create_dir_all(&self.spec.sqlite_dir).map_err(|e| {
                Stop::Failed(messages::failure(format!(
                    "cannot create {}: {e}",
                    self.spec.sqlite_dir.display()
                )))
            })?;
        }
        Ok(())
    }

    /// Before the seed is loaded (minutes, for a big one): whether the contained user can run
    /// the programs the dataset names by absolute path (the tool, the heads command). One it
    /// cannot run (a venv whose python links into `/root`) is the worker's set-up, not the
    /// change's fault. Programs in the checkout are checked when they start.
    fn check_programs(&self) -> Result<(), Stop> {
        let fixed = self.job.dataset.fixed_programs();
        if fixed.is_empty() {
            return Ok(());
        }
        let fault = |e: ContainError| {
            self.note(&e.to_string());
            Stop::Infrastructure(e.to_string())
        };
        let contained = self.job.settings.containment.prepare().map_err(fault)?;
        for (_, program) in fixed {
            contained.check_executable(program).map_err(fault)?;
        }
        Ok(())
    }

    /// Creates the run's database ([`crate::provisioning`]); the guard drops it.
    fn create_database(
        &self,
        summary: &mut DatasetSummary,
    ) -> Result<(DbGuard<'_>, crate::provisioning::Provided), Stop> {
        let ds = self.job.dataset;
        // Claimed before it exists: if this process dies, the next start drops it.
        let claim = match (self.job.claims, ds.engine) {
            (Some(dir), engine) if engine != Engine::Sqlite => crate::leftovers::claim(
                dir,
                &crate::leftovers::RunDatabase::new(engine, &ds.connection, self.db),
            ),
            _ => None,
        };
        // A database of this name can only be a leftover of an earlier run of this very job.
        let _ = self.server.drop_database(self.db);
        let guard = DbGuard::new(
            self.server,
            self.db,
            self.job.settings.keep_databases,
            self.log,
        )
        .with_claim(claim);
        let note = |text: &str| self.note(text);
        let reload_to_keep;
        let dataset = if self.job.settings.keep_databases
            && ds.provisioning == crate::provisioning::Provisioning::Auto
            && matches!(ds.engine, Engine::MariaDb | Engine::MySql)
        {
            // A private server's database would go with it: keep_databases keeps the run
            // database on the configured server, so it is reloaded there.
            self.note("provisioning: reloading the seed (keep_databases)");
            reload_to_keep = crate::dataset::Dataset {
                provisioning: crate::provisioning::Provisioning::Reload,
                ..ds.clone()
            };
            &reload_to_keep
        } else {
            ds
        };
        let provider = crate::provisioning::Provider {
            server: self.server,
            dataset,
            state: self.job.golden,
            claims: self.job.claims,
            cancel: self.job.cancel,
            note: &note,
        };
        let provided = provider
            .provide(self.db)
            .map_err(|e| self.not_created(&e))?;
        let done = &provided.done;
        self.note(&format!(
            "database {} created by {}{} in {:.3} s",
            provided
                .private
                .as_ref()
                .map_or(self.db, |p| p.database.as_str()),
            done.method,
            done.golden
                .as_deref()
                .map(|g| format!(" of the golden copy {g}"))
                .unwrap_or_default(),
            done.seconds
        ));
        summary.provisioning = Some(done.clone());
        Ok((guard, provided))
    }

    /// Why the run's database could not be made.
    fn not_created(&self, e: &EngineError) -> Stop {
        if self.job.cancel.is_cancelled() {
            self.note("cancelled while loading the seed");
            return Stop::Cancelled;
        }
        self.note(&format!("could not create database {}: {e}", self.db));
        tracing::warn!("dataset {}: {e}", self.job.dataset.name);
        if let Some(what) = e.infrastructure() {
            return Stop::Infrastructure(format!("creating database {}: {what}", self.db));
        }
        Stop::Failed(
            match e {
                EngineError::SeedMissing(_) => messages::SEED_MISSING,
                EngineError::SeedLoad(_)
                | EngineError::Refused(_)
                | EngineError::Unavailable(_)
                | EngineError::Other(_) => messages::SEED_SETUP,
            }
            .to_string(),
        )
    }

    fn make_work_dir(&self) -> Result<(), Stop> {
        fs::create_dir_all(&self.work_dir).map_err(|e| {
            let what = format!("cannot create {}: {e}", self.work_dir.display());
            if is_disk_full(&e) {
                Stop::Infrastructure(format!("disk full: {what}"))
            } else {
                Stop::Failed(messages::failure(&what))
            }
        })
    }

    /// Checks out the upgrade path's `reference` and migrates through it.
    fn upgrade_via(
        &self,
        i: usize,
        reference: &str,
        observer: &Observation,
    ) -> Result<Phase, Stop> {
        let ds = self.job.dataset;
        self.note(&format!(
            "Database is from an older release: upgrading via {reference} first"
        ));
        tracing::info!("dataset {}: upgrading via {reference}", ds.name);
        let checkout = self.checkout_ref(i, reference).map_err(|e| match e {
            GitError::Cancelled => Stop::Cancelled,
            e => {
                self.note(&format!("could not check out {reference}: {e}"));
                match messages::git_infrastructure(&e.to_string()) {
                    Some(what) => {
                        Stop::Infrastructure(format!("{what}: upgrade path {reference}: {e}"))
                    }
                    None => Stop::Failed(messages::git_failure(&format!(
                        "upgrade path {reference}: {e}"
                    ))),
                }
            }
        })?;
        Ok(self.run_phase(reference, &checkout, observer))
    }

    /// Whether the run goes on after `phase`.
    fn phase_end(&self, phase: &Phase) -> Result<(), Stop> {
        if phase.cancelled {
            return Err(Stop::Cancelled);
        }
        if let Some(what) = self.infrastructure_after(phase) {
            return Err(Stop::Infrastructure(what));
        }
        if phase.lines.is_empty() {
            Ok(())
        } else {
            Err(Stop::PhaseFailed)
        }
    }

    /// The database's final version into `summary`; unreadable is not the change's fault
    /// only when the server is gone.
    fn read_final_version(&self, summary: &mut DatasetSummary) -> Result<(), Stop> {
        let source = self.job.dataset.version_source();
        match self.server.schema_version(self.db, &source) {
            Ok(v) => summary.final_version = v.map(|v| version::normalize(&v)),
            Err(e) => {
                self.note(&format!("cannot read the schema version: {e}"));
                if let Some(what) = e.infrastructure() {
                    return Err(Stop::Infrastructure(format!(
                        "reading the schema version: {what}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The expected version to check against: `None` unchecked, empty when it could not be
    /// told (which no version matches).
    fn expected_for_check(&self, last_sql_file: Option<&str>) -> Result<Option<String>, Stop> {
        let expected = self.expected(last_sql_file).unwrap_or_else(|e| {
            self.note(&format!("cannot tell the expected schema version: {e}"));
            Some(String::new())
        });
        if self.job.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        Ok(expected)
    }

    /// The database's version (and the one the tool printed, if any) against `expected`.
    fn check_version(
        &self,
        final_version: Option<&str>,
        printed: Option<&str>,
        expected: &str,
    ) -> Result<(), Stop> {
        let db_ok = final_version
            .is_some_and(|v| !expected.is_empty() && version::same_version(v, expected));
        let printed_ok = printed.is_none_or(|p| version::same_version(p, expected));
        if db_ok && printed_ok {
            return Ok(());
        }
        self.note(&version::mismatch(final_version, expected));
        Err(Stop::VersionMismatch)
    }

    /// The expected final version: read from the change's checkout, or printed by the
    /// dataset's command. `Ok(None)`: unchecked.
    fn expected(&self, last_sql_file: Option<&str>) -> Result<Option<String>, String> {
        let ds = self.job.dataset;
        if let ExpectedVersion::Command(argv) = &ds.expected_version {
            return self.heads_from_command(argv).map(Some);
        }
        let mut note = |text: &str| self.note(text);
        version::expected_version(
            &ds.expected_version,
            self.job.checkout,
            last_sql_file,
            &mut note,
        )
        .map_err(|e| e.to_string())
    }

    /// Runs `expected_version.command` in the change's checkout as the migration tool runs
    /// (contained, same environment and placeholders, within the run's time limit) and reads
    /// the heads from its standard output ([`alembic::parse_heads_output`]).
    fn heads_from_command(&self, argv: &[String]) -> Result<String, String> {
        let checkout = self.job.checkout;
        let placeholders = self.placeholders(checkout);
        let (program, args) = argv.split_first().ok_or("the command is empty")?;
        let program = placeholders.render(program);
        let args: Vec<String> = args.iter().map(|a| placeholders.render(a)).collect();
        let contained = self
            .contain(checkout, &program)
            .map_err(|e| e.to_string())?;
        let no_env = BTreeMap::new();
        let env = match &self.job.dataset.migration {
            Migration::Tool { env, .. } => env,
            Migration::SqlFiles { .. } => &no_env,
        };
        let cmd = self.tool_command(&program, &args, checkout, env, &placeholders, &contained);
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("no time left to run the command".into());
        }
        let secrets = self.secrets();
        let mask = |text: &str| mask_secrets(text, &secrets);
        let _ = self
            .log
            .line("command", &mask(&describe_command(&program, &args)));
        let mut stdout = Vec::new();
        let outcome = ProcessRunner::new(cmd)
            .timeout(Some(remaining))
            .on_line(|line| {
                let _ = self.log.line_at(&line.time, "heads", &mask(&line.text));
                if line.stream == Stream::Stdout && stdout.len() < MAX_HEAD_LINES {
                    stdout.push(line.text.clone());
                }
            })
            .run(self.job.cancel)
            .map_err(|e| mask(&e.to_string()))?;
        let ended = format!(
            "{} after {}",
            outcome.termination,
            seconds(outcome.duration)
        );
        let _ = self.log.line("exit", &ended);
        if !outcome.success() {
            return Err(format!("the command {program} ended with {ended}"));
        }
        let (heads, notes) = alembic::parse_heads_output(stdout.iter().map(String::as_str));
        for line in notes.iter().take(MAX_HEAD_NOTES) {
            self.note(&format!("heads command: {line}"));
        }
        let heads: Vec<String> = heads.into_iter().collect();
        if heads.is_empty() {
            return Err(format!("the command {program} printed no head"));
        }
        self.note(&format!("heads command: heads {}", heads.join(", ")));
        Ok(heads.join(","))
    }

    /// After a phase that failed: whether the infrastructure rather than the change is to
    /// blame. The tool's output (or the server's message) speaking of a full disk says so; so
    /// does a server that no longer answers a ping (whatever the tool printed: a tool killed
    /// with its server dies inside a migration). A migration that fails while the server is
    /// fine stays the change's fault.
    fn infrastructure_after(&self, phase: &Phase) -> Option<String> {
        if phase.cancelled || phase.lines.is_empty() {
            return None;
        }
        if let Some(fault) = &phase.setup_fault {
            return Some(fault.clone());
        }
        if let Some(hint) = &phase.unavailable_hint {
            if crate::engine::unavailable_kind(hint) == Some("disk full") {
                self.note(&format!("the migration failed on a full disk: {hint}"));
                return Some(format!("disk full: {hint}"));
            }
        }
        match self.server.ping() {
            Err(e) => {
                self.note(&format!(
                    "the migration failed and the server does not answer: {e}"
                ));
                e.infrastructure()
                    .map(|what| format!("{what} (during {})", phase_point(phase)))
            }
            Ok(()) => None,
        }
    }

    /// Checks out `reference` of the project next to the change.
    fn checkout_ref(&self, i: usize, reference: &str) -> Result<PathBuf, GitError> {
        let change = ZuulChange::new(self.job.change.url(), self.job.change.project(), reference)?;
        let dest = self
            .job
            .work_root
            .join("upgrade")
            .join(format!("{}_{}_{i}", self.job.index, self.db));
        let options = self.job.settings.git_options();
        git::prepare_checkout(
            &change,
            self.job.git_cache,
            &dest,
            self.job.git_log,
            &options,
            self.job.cancel,
        )
        .map(|c| {
            self.note(&format!("checked out {reference} at {}", c.commit));
            c.path
        })
    }

    /// What must not appear in published logs: the database password, as given and as it
    /// appears in the URL (percent-encoded). Very short passwords are not masked (they would
    /// mask half the log and hide nothing).
    fn secrets(&self) -> Vec<String> {
        let Some(ep) = self.server.endpoint() else {
            return Vec::new();
        };
        let mut secrets = vec![ep.password.clone()];
        let url = self.server.sqlalchemy_url(self.db);
        if let Some((_, rest)) = url.split_once("://") {
            if let Some((userinfo, _)) = rest.split_once('@') {
                if let Some((_, encoded)) = userinfo.split_once(':') {
                    secrets.push(encoded.to_string());
                }
            }
        }
        secrets.retain(|s| s.len() >= 3);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        secrets
    }

    fn placeholders(&self, checkout: &Path) -> Placeholders {
        let ds = self.job.dataset;
        // The engine's view of the connection, defaults filled in; empty for SQLite.
        let (host, port, user, password) = match self.server.endpoint() {
            Some(ep) => {
                let host = match (&ds.connection.host, &ep.socket) {
                    (None, Some(socket)) if ds.engine == Engine::PostgreSql => {
                        socket.display().to_string()
                    }
                    _ => ep.host.clone(),
                };
                (
                    host,
                    ep.port.to_string(),
                    ep.user.clone(),
                    ep.password.clone(),
                )
            }
            None => Default::default(),
        };
        let mut p = Placeholders::new();
        p.set("db_url", self.server.sqlalchemy_url(self.db))
            .set("db_name", self.db)
            .set("db_user", user)
            .set("db_pass", password)
            .set("db_host", host)
            .set("db_port", port)
            .set_path("checkout", checkout)
            .set_path("work_dir", &self.work_dir)
            .set_path("dataset_dir", &ds.dir)
            .set(
                "logging_conf",
                ds.logging_conf
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )
            .set(
                "pip_cache",
                self.job
                    .pip_cache
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        p
    }

    fn run_phase(&self, phase: &str, checkout: &Path, observer: &Observation) -> Phase {
        let out = match &self.job.dataset.migration {
            Migration::Tool {
                argv,
                env,
                templates,
                log_format,
            } => {
                let tool = Tool {
                    argv,
                    env,
                    templates,
                    log_format,
                };
                self.run_tool(phase, checkout, &tool, observer)
            }
            Migration::SqlFiles { dir, version_table } => {
                self.run_sql_files(phase, checkout, dir, version_table, observer)
            }
        };
        self.log_locks(&out.records);
        self.log_counters(&out.records);
        self.log_gaps(&out.records);
        out
    }

    /// One line per migration whose observation had gaps: what was not seen, when, why.
    fn log_gaps(&self, records: &[MigrationRecord]) {
        for record in records {
            if let Some(gaps) = crate::report::gaps_text(&record.observation_gaps) {
                self.note(&format!(
                    "observation: migration {}->{} partly unobserved: {gaps}; its figures of \
                     these parts are partial (an observation fault, not the change's)",
                    record.from, record.to
                ));
            }
        }
    }

    /// Starts observing the run database's locks (`lock_sample_interval`); off, with one
    /// note saying why, when the dataset turns it off or the server has no lock view.
    fn observe_locks(&self) -> Option<crate::engine::LockObserver> {
        let ds = self.job.dataset;
        let every = ds.lock_sample?;
        if ds.engine == Engine::Sqlite {
            return None;
        }
        match self.server.observe_locks(self.db, every) {
            Ok(observer) => {
                self.note(&format!(
                    "observing locks every {} ms ({})",
                    every.as_millis(),
                    observer.source()
                ));
                Some(match self.server.table_probe(self.db) {
                    Ok(probe) => {
                        self.note("watching for table rewrites at each migration boundary");
                        observer.with_tables(probe)
                    }
                    Err(e) => {
                        self.note(&format!("rewrite detection off: {e}"));
                        observer
                    }
                })
            }
            Err(e) => {
                self.note(&format!("lock observation off: {e}"));
                None
            }
        }
    }

    /// Starts counting the run database's work per migration (on every server engine); off,
    /// with one note saying why, when the server gives no counters. Where they come from and
    /// whether they are the run's own (`database`) or server-wide go in the summary.
    fn count_work(&self, summary: &mut DatasetSummary) -> Option<crate::engine::CounterReader> {
        if self.job.dataset.engine == Engine::Sqlite {
            return None;
        }
        if !self.job.dataset.count_work {
            self.note("work counters off (count_work: false)");
            return None;
        }
        match self.server.count_work(self.db) {
            Ok(reader) => {
                self.note(&format!(
                    "counting work per migration from {} (scope: {})",
                    reader.source(),
                    reader.scope()
                ));
                summary.counters_source = Some(reader.source().to_string());
                summary.counters_scope = Some(reader.scope().to_string());
                Some(reader)
            }
            Err(e) => {
                self.note(&format!("work counters off: {e}"));
                None
            }
        }
    }

    /// One line per migration whose work was counted.
    fn log_counters(&self, records: &[MigrationRecord]) {
        for record in records.iter().filter(|r| !r.counters.is_empty()) {
            let figures: Vec<String> = record
                .counters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            self.note(&format!(
                "work: migration {}->{}: {}",
                record.from,
                record.to,
                figures.join(" ")
            ));
        }
    }

    /// One line per migration that held a lock blocking reads or writes, one per migration
    /// that rewrote tables.
    fn log_locks(&self, records: &[MigrationRecord]) {
        for record in records {
            if let Some(holds) = crate::report::blocking_holds(&record.locks) {
                self.note(&format!(
                    "locks: migration {}->{} held {holds}",
                    record.from, record.to
                ));
            }
            if let Some(rewrites) = crate::report::rewritten(&record.rewrites) {
                self.note(&format!(
                    "rewrites: migration {}->{} rewrote {rewrites}",
                    record.from, record.to
                ));
            }
        }
    }

    /// Resolves the job's containment for the tool and hands it the checkout, the run's work
    /// directory (the rendered templates with the database password included: they are
    /// written 0600, so only the tool's user can read them) and, for SQLite, the database's
    /// directory.
    fn contain(&self, checkout: &Path, program: &str) -> Result<Contained, ContainError> {
        let contained = self.job.settings.containment.prepare()?;
        contained.check_reachable(checkout)?;
        if Path::new(program).is_absolute() {
            contained.check_executable(Path::new(program))?;
        }
        contained.grant(checkout)?;
        contained.grant(&self.work_dir)?;
        if self.server.endpoint().is_none() {
            // SQLite: the tool writes the database file and its journal next to it.
            let file = self.server.sqlite_path(self.db);
            if let Some(dir) = file.parent() {
                contained.grant(dir)?;
            }
        }
        self.note(&format!("the migration tool runs {}", contained.describe()));
        Ok(contained)
    }

    /// The tool's command (or the heads command's): run in `checkout`, with the daemon's
    /// environment less its secrets ([`DAEMON_SECRETS`](turbo_hipster_sdk::support::env::DAEMON_SECRETS): object store keys, database
    /// passwords), the build's allowed parameters, then the dataset's own environment
    /// (configuration, whose values are placeholders the worker fills in), which wins and may
    /// set one of those secrets on purpose; contained.
    fn tool_command(
        &self,
        program: &str,
        args: &[String],
        checkout: &Path,
        env: &BTreeMap<String, String>,
        placeholders: &Placeholders,
        contained: &Contained,
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(checkout);
        remove_daemon_secrets(&mut cmd);
        for (key, value) in self.job.parameters {
            cmd.env(key, value);
        }
        for (key, value) in env {
            cmd.env(key, placeholders.render(value));
        }
        contained.apply(&mut cmd);
        cmd
    }

    fn run_tool(
        &self,
        phase: &str,
        checkout: &Path,
        tool: &Tool<'_>,
        observer: &Observation,
    ) -> Phase {
        let Tool {
            argv,
            env,
            templates,
            log_format,
        } = *tool;
        let placeholders = self.placeholders(checkout);
        let started = self
            .render_templates(&placeholders, templates)
            .map_err(NotStarted::Line)
            .and_then(|()| self.start_tool(checkout, argv, env, &placeholders));
        let (cmd, program, args, remaining) = match started {
            Ok(ready) => ready,
            Err(NotStarted::Line(line)) => {
                return Phase {
                    lines: vec![line],
                    ..Phase::default()
                }
            }
            Err(NotStarted::SetUp(what)) => {
                return Phase {
                    lines: vec![messages::failure(&what)],
                    setup_fault: Some(what),
                    ..Phase::default()
                }
            }
        };
        self.note(&format!(
            "phase {phase}: running the migration tool in {}",
            checkout.display()
        ));
        // The logs are published: the tool's command line and output are written here, with
        // the database password masked, rather than by the runner.
        let secrets = self.secrets();
        let mask = |text: &str| mask_secrets(text, &secrets);
        let _ = self
            .log
            .line("command", &mask(&describe_command(&program, &args)));
        let mut parser = StreamParser::new(log_format.clone());
        let mut cuts = LockCuts::new(observer);
        let mut hint = None;
        let result = ProcessRunner::new(cmd)
            .timeout(Some(remaining))
            .on_line(|line| {
                // What the observation met since the last line happened before this one.
                observer.log_events(self.log, NOTE, &mask);
                let _ = self.log.line_at(&line.time, "output", &mask(&line.text));
                cuts.feed(
                    &mut parser,
                    line.time.naive_local(),
                    line.instant,
                    &line.text,
                );
                if hint.is_none() && crate::engine::unavailable_kind(&line.text).is_some() {
                    hint = Some(mask(&line.text));
                }
            })
            .run(self.job.cancel);
        self.log_exit(&result, &mask);
        let finished = Local::now().naive_local();
        observer.settle();
        cuts.cut(parser.open_migration());
        let parsed = parser.finish(finished);
        // Whether a migration was in progress when the output ended: one never ended, or the
        // parser closed the last one only because the output ended.
        let open = parsed.unfinished
            || parsed
                .migrations
                .last()
                .is_some_and(|m| m.end.is_none() || m.end == Some(finished));
        let mut records = parsed.migrations.clone();
        if let Some(e) = cuts.attach(&mut records) {
            self.note(&mask(&format!("rewrites: could not read the tables: {e}")));
        }
        observer.log_events(self.log, NOTE, &mask);
        for gap in records
            .iter_mut()
            .flat_map(|r| r.observation_gaps.iter_mut())
        {
            gap.why = mask(&gap.why);
        }
        let mut out = Phase {
            printed_final: parsed.final_version.clone(),
            records,
            unavailable_hint: hint,
            ..Phase::default()
        };
        match result {
            Err(e) => out.lines.push(tool_error(e)),
            Ok(outcome) => judge_termination(&mut out, outcome.termination, &parsed, open),
        }
        out
    }

    /// Renders the dataset's config templates into the work dir.
    fn render_templates(
        &self,
        placeholders: &Placeholders,
        templates: &[(PathBuf, String)],
    ) -> Result<(), String> {
        let ds = self.job.dataset;
        for (template, name) in templates {
            let path = ds.dir.join(template);
            let written = placeholders
                .render_file(&path, &self.work_dir, name)
                .map_err(|e| {
                    self.note(&e.to_string());
                    messages::template_failed(&e)
                })?;
            self.note(&format!(
                "rendered {} into {}",
                path.display(),
                written.display()
            ));
        }
        Ok(())
    }

    /// The tool's command (contained), its program and arguments as run, and the time left.
    fn start_tool(
        &self,
        checkout: &Path,
        argv: &[String],
        env: &BTreeMap<String, String>,
        placeholders: &Placeholders,
    ) -> Result<(Command, String, Vec<String>, Duration), NotStarted> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| NotStarted::Line(messages::EMPTY_ARGV.to_string()))?;
        let program = placeholders.render(program);
        let args: Vec<String> = args.iter().map(|a| placeholders.render(a)).collect();
        let contained = self.contain(checkout, &program).map_err(|e| {
            self.note(&e.to_string());
            NotStarted::SetUp(e.to_string())
        })?;
        let cmd = self.tool_command(&program, &args, checkout, env, placeholders, &contained);
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(NotStarted::Line(messages::timed_out(&seconds(
                self.timeout,
            ))));
        }
        Ok((cmd, program, args, remaining))
    }

    /// How the tool ended, in its log.
    fn log_exit(
        &self,
        result: &Result<ProcessOutcome, ProcessError>,
        mask: &dyn Fn(&str) -> String,
    ) {
        match result {
            Ok(o) => {
                if let Termination::TimedOut(t) = o.termination {
                    let _ = self.log.line(
                        "timeout",
                        &format!(
                            "the migration tool ran longer than {}: its process group was stopped",
                            seconds(t)
                        ),
                    );
                }
                if !o.output_complete {
                    self.note("stopped reading the output of a process that left the tool's group");
                }
                let _ = self.log.line(
                    "exit",
                    &format!("{} after {}", o.termination, seconds(o.duration)),
                );
            }
            Err(e) => {
                let _ = self.log.line("exit", &mask(&e.to_string()));
            }
        }
    }

    fn run_sql_files(
        &self,
        phase: &str,
        checkout: &Path,
        dir: &Path,
        version_table: &str,
        observer: &Observation,
    ) -> Phase {
        let mut out = Phase::default();
        let dir = checkout.join(dir);
        self.note(&format!(
            "phase {phase}: applying the SQL files of {}",
            dir.display()
        ));
        let files = match sqlfiles::list(&dir) {
            Ok(files) => files,
            Err(e) => {
                self.note(&e.to_string());
                out.lines.push(messages::failure(&e));
                return out;
            }
        };
        let target = SqlTarget {
            spec: &self.spec,
            database: self.db,
            version_table,
            log: self.log,
            cancel: self.job.cancel,
            deadline: self.deadline,
            timeout: self.timeout,
            observation: observer,
        };
        let run = sqlfiles::apply(&target, &files);
        out.last_sql_file = run.last_file.clone();
        let open = run.migrations.last().is_some_and(|m| m.end.is_none());
        out.records = run.migrations;
        if let SqlEnd::Failed { message, .. } | SqlEnd::Error(message) = &run.end {
            out.unavailable_hint = Some(message.clone());
        }
        match run.end {
            SqlEnd::Completed => {}
            SqlEnd::Cancelled => out.cancelled = true,
            SqlEnd::Failed { .. } => out.lines.push(messages::DID_NOT_FIND_END.to_string()),
            SqlEnd::TimedOut(t) => out.lines.push(if open {
                messages::DID_NOT_FIND_END.to_string()
            } else {
                messages::timed_out(&seconds(t))
            }),
            SqlEnd::Error(m) => out.lines.push(messages::failure(&m)),
        }
        out
    }
}

/// A dataset's migration tool (`Migration::Tool`).
#[derive(Clone, Copy)]
struct Tool<'d> {
    argv: &'d [String],
    env: &'d BTreeMap<String, String>,
    templates: &'d [(PathBuf, String)],
    log_format: &'d LogFormat,
}

/// The observation of a tool's run (locks, work counters, tables' states), cut at each
/// migration boundary as the output is parsed: what was observed since the last boundary
/// belongs to the migration that was in progress (to the migration itself when its start and
/// end share a line; to none before the first start); the tables' states read at each
/// boundary (rewrite detection, when on) are attributed by
/// [`crate::engine::rewrites::attribute`].
struct LockCuts<'o> {
    observer: &'o Observation,
    cuts: BTreeMap<usize, Cut>,
    points: Vec<StatePoint>,
    /// When each point's read began.
    read_at: Vec<Instant>,
    /// The first failure to read the tables.
    tables_error: Option<String>,
    /// A failed read of the tables at a point that ended no migration: the next migration's
    /// (its rewrites' window starts at an earlier point).
    pending: Vec<Gap>,
}

impl<'o> LockCuts<'o> {
    /// Starts with a clean observation: what came before the phase belongs to no migration.
    fn new(observer: &'o Observation) -> Self {
        let mut cuts = Self {
            observer,
            cuts: BTreeMap::new(),
            points: Vec::new(),
            read_at: Vec::new(),
            tables_error: None,
            pending: Vec::new(),
        };
        observer.cut();
        cuts.read_tables(None);
        cuts
    }

    /// Feeds one output line, read at `time` (`instant`), to `parser`, cutting the observation
    /// at a boundary: the locks sampled after the line arrived are the next migration's.
    fn feed(
        &mut self,
        parser: &mut StreamParser,
        time: chrono::NaiveDateTime,
        instant: Instant,
        text: &str,
    ) {
        let (was, boundaries, started) = (
            parser.open_migration(),
            parser.boundaries(),
            parser.started(),
        );
        parser.feed(time, text);
        // The migrations begun on this line had begun before the points read after it arrived.
        let begun = started..parser.started();
        if !begun.is_empty() {
            for (point, read) in self.points.iter_mut().zip(&self.read_at) {
                if *read > instant {
                    point.begun.extend(begun.clone());
                }
            }
        }
        if parser.boundaries() == boundaries {
            return;
        }
        let started_and_ended = parser.started() > started && parser.open_migration().is_none();
        self.cut_at(was.or(started_and_ended.then_some(started)), instant);
    }

    /// Cuts the observation with all it saw so far, giving it (and what it did not see) to
    /// migration `owner`.
    fn cut(&mut self, owner: Option<usize>) {
        self.cut_at(owner, Instant::now());
    }

    /// Cuts the observation at the boundary whose line arrived at `line`.
    fn cut_at(&mut self, owner: Option<usize>, line: Instant) {
        let mut cut = self.observer.cut_at(line);
        if let Some(gap) = self.read_tables(owner) {
            self.pending.push(gap);
        }
        if let Some(owner) = owner {
            cut.gaps.append(&mut self.pending);
            self.cuts.insert(owner, cut);
        }
    }

    /// Reads the tables' states as the point where `owner` ended; the gap when the read
    /// failed (even after reconnecting).
    fn read_tables(&mut self, owner: Option<usize>) -> Option<Gap> {
        let began = Instant::now();
        let read = self.observer.tables()?;
        let at = Local::now();
        let (snapshot, gap) = match read {
            Ok(snapshot) => (Some(snapshot), None),
            Err(e) => {
                let why = e.to_string();
                self.tables_error.get_or_insert_with(|| why.clone());
                (None, Some(Gap::point(Part::Rewrites, at, &why)))
            }
        };
        self.points.push(StatePoint {
            owner,
            snapshot,
            begun: Vec::new(),
        });
        self.read_at.push(began);
        gap
    }

    /// Gives the records their locks, counters, rewrites and the observation's gaps; the
    /// first failure to read the tables, if any.
    fn attach(self, records: &mut [MigrationRecord]) -> Option<String> {
        for (i, cut) in self.cuts {
            if let Some(record) = records.get_mut(i) {
                record.locks = cut.locks;
                // The run's own counters win over any the tool printed (server-wide ones).
                if let Some(counters) = cut.counters {
                    record.counters = counters;
                }
                record.observation_gaps = cut.gaps;
            }
        }
        attach_rewrites(&self.points, records);
        self.tables_error
    }
}

/// The rewrites seen at `points` into the records (index = migration).
fn attach_rewrites(points: &[StatePoint], records: &mut [MigrationRecord]) {
    let locks: Vec<Vec<TableLocks>> = records.iter().map(|r| r.locks.clone()).collect();
    for (i, rewrites) in crate::engine::rewrites::attribute(points, &locks) {
        if let Some(record) = records.get_mut(i) {
            record.rewrites = rewrites;
        }
    }
}

/// The result line of a tool that could not be run.
fn tool_error(e: ProcessError) -> String {
    match e {
        ProcessError::Spawn { program, source } if source.kind() != io::ErrorKind::NotFound => {
            messages::tool_not_started(&program, &source)
        }
        ProcessError::Spawn { .. } => messages::IMPORT_ERROR.to_string(),
        e => messages::tool_not_run(&e),
    }
}

/// The phase's lines (or its cancellation) from how the tool ended; `open`: a migration was
/// in progress when its output ended.
fn judge_termination(out: &mut Phase, termination: Termination, parsed: &ParsedRun, open: bool) {
    match termination {
        Termination::Cancelled => out.cancelled = true,
        Termination::TimedOut(t) | Termination::Stalled(t) => out.lines.push(if open {
            messages::DID_NOT_FIND_END.to_string()
        } else {
            messages::timed_out(&seconds(t))
        }),
        Termination::Signalled(sig) => out.lines.push(if open {
            messages::DID_NOT_FIND_END.to_string()
        } else {
            messages::killed_by_signal(&signal_name(sig))
        }),
        Termination::Exited(code) => {
            if parsed.unfinished || (code != 0 && open) {
                out.lines.push(messages::DID_NOT_FIND_END.to_string());
            }
            if parsed.import_error {
                out.lines.push(messages::IMPORT_ERROR.to_string());
            }
            if code != 0 && out.lines.is_empty() {
                out.lines.push(messages::return_code(code));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_safe_and_unique_per_job_and_index() {
        assert_eq!(
            database_name("nova_datasets_user_001", "0123456789abcdef", 3),
            "nova_datasets_user_001_01234567_3"
        );
        let long = database_name(&"x".repeat(100), "ab", 0);
        assert_eq!(long, format!("{}_ab_0", "x".repeat(40)));
        assert_eq!(database_name("My-DB", "AB-cd", 1), "my_db_abcd_1");
        assert_eq!(database_name("42", "u", 0), "th_42_u_0");
        let fallback = database_name("db", "", 0);
        assert_eq!(fallback.len(), "db_".len() + 8 + 2, "{fallback}");
        assert!(fallback
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn run_database_names_carry_the_worker_within_the_limit() {
        let long = run_database_name(
            &"x".repeat(100),
            "0123456789",
            123,
            "worker-with-a-long-name",
        );
        assert!(long.len() <= crate::engine::MAX_DATABASE_NAME_LEN, "{long}");
        assert!(long.starts_with(&database_name(&"x".repeat(100), "0123456789", 123)));
        assert_eq!(long.len(), 63, "{long}");
        assert!(long.ends_with("_123_workerwit"), "{long}");
        crate::engine::check_database_name(&long).unwrap();
        assert_eq!(run_database_name("db", "ab", 1, "--"), "db_ab_1");
    }

    use crate::engine::test_psql::run as psql;

    /// One step of [`cut_tables`].
    enum Step {
        /// A session holds a `SHARE` lock on this table for 0.2 s.
        Hold(&'static str),
        /// The tool prints this line; it is handled at once.
        Line(&'static str),
        /// The tool prints this line; it is handled only after the next step (the worker was
        /// busy: its log, the table probe).
        Late(&'static str),
    }

    /// On the real PostgreSQL server, sqlalchemy-migrate output fed line by line through
    /// [`LockCuts`] while `steps` run: the tables each migration was seen blocking.
    fn cut_tables(tag: &str, steps: &[Step]) -> Vec<Vec<String>> {
        let db = format!("th_cuts_{tag}_{}", std::process::id());
        psql("postgres", &format!("CREATE DATABASE {db}"));
        psql(
            &db,
            "CREATE TABLE a (id int); CREATE TABLE b (id int); CREATE TABLE c (id int)",
        );
        let server = Server::new(
            Engine::PostgreSql,
            crate::engine::Connection::default(),
            PathBuf::new(),
        );
        let observer = server
            .observe_locks(&db, Duration::from_millis(10))
            .unwrap();
        let hold = |table: &str| {
            psql(
                &db,
                &format!("BEGIN; LOCK TABLE {table} IN SHARE MODE; SELECT pg_sleep(0.2); COMMIT"),
            );
        };
        let mut parser = StreamParser::new(LogFormat::SqlalchemyMigrate);
        let observation = Observation::new(Some(observer), None);
        let mut cuts = LockCuts::new(&observation);
        let now = || Local::now().naive_local();
        let mut late: Option<(&str, Instant)> = None;
        for step in steps {
            let waiting = late.take();
            match step {
                Step::Hold(table) => hold(table),
                Step::Line(text) => cuts.feed(&mut parser, now(), Instant::now(), text),
                Step::Late(text) => late = Some((text, Instant::now())),
            }
            if let Some((text, arrived)) = waiting {
                cuts.feed(&mut parser, now(), arrived, text);
            }
        }
        cuts.cut(parser.open_migration());
        let mut records = parser.finish(now()).migrations;
        cuts.attach(&mut records);
        let after = observation.cut().locks;
        assert!(after.is_empty(), "{after:?}");
        drop(observation);
        psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
        records
            .iter()
            .map(|r| {
                r.locks
                    .iter()
                    .filter(|l| l.longest_blocking.is_some())
                    .map(|l| l.table.clone())
                    .collect()
            })
            .collect()
    }

    /// A lock taken before the first start belongs to no migration, one taken between a start
    /// and its `done` to that migration, one before a start line that is its own end
    /// (`2 -> 3... done`) to that migration.
    #[test]
    fn locks_are_cut_at_each_migration_boundary_as_lines_arrive() {
        let tables = cut_tables(
            "arrive",
            &[
                Step::Hold("a"),
                Step::Line("1 -> 2... "),
                Step::Hold("b"),
                Step::Line("done"),
                Step::Hold("c"),
                Step::Line("2 -> 3... done"),
            ],
        );
        assert_eq!(tables, [vec!["b"], vec!["c"]]);
    }

    /// A boundary handled late (the next migration had begun and taken its lock while the
    /// line waited) cuts where its line arrived: the lock is the next migration's, not the
    /// short one's before it (seen in CI: a 12 ms migration got its successor's rewrite lock).
    #[test]
    fn a_boundary_handled_late_cuts_where_its_line_arrived() {
        let tables = cut_tables(
            "late",
            &[
                Step::Line("1 -> 2... "),
                Step::Hold("a"),
                Step::Late("done"),
                Step::Hold("b"),
                Step::Line("2 -> 3... done"),
            ],
        );
        assert_eq!(tables, [vec!["a"], vec!["b"]]);
    }

    #[test]
    fn log_names() {
        assert_eq!(log_name("user_001"), "user_001.log");
        assert_eq!(log_name("a/b"), "a_b.log");
    }

    #[test]
    fn secrets_are_masked_and_commands_quoted() {
        let secrets = vec!["p%40ss".to_string(), "p@ss".to_string()];
        assert_eq!(
            mask_secrets("mysql+pymysql://u:p%40ss@h/db and p@ss", &secrets),
            "mysql+pymysql://u:***@h/db and ***"
        );
        assert_eq!(mask_secrets("nothing", &[]), "nothing");
        assert_eq!(
            describe_command(
                "alembic",
                &["-c".into(), "/w/a b.ini".into(), "it's".into()]
            ),
            r"alembic -c '/w/a b.ini' 'it'\''s'"
        );
    }
}
