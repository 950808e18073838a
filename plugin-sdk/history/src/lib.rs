//! The per-migration history of turbo-hipster: every run's per-migration figures (duration,
//! counters, locks, dataset, engine, commit, result), kept in a database (SQLite by default,
//! PostgreSQL by URL) beside the daemon's raw record `jobs.jsonl`.
//!
//! - [`store`]: the database ([`HistoryDb`], [`Sample`], [`Location`]).
//! - [`details`]: a job's samples from its outcome's details (what the daemon records).
//! - [`stats`]: percentiles, suggested limits, the regression rule.
//! - [`dataset_config`]: suggested limits written into a dataset's config, order kept.
//! - [`import`]: finding and fingerprinting the original turbo-hipster's logs to import.
//! - [`trends`]: a self-contained HTML page of a dataset's durations over time.
//!
//! The daemon (`host`) records and answers the `history`, `limits` and `trends` commands; the
//! gate plugin reads medians for its regression warning and imports the original's logs (its
//! log parser reads them), both at the location the daemon hands it
//! (`HostSettings::history_database`).

pub mod dataset_config;
pub mod details;
pub mod import;
pub mod stats;
pub mod store;
pub mod trends;

pub use details::samples_from_details;
pub use stats::{LimitRule, RegressionRule, Stats};
pub use store::{HistoryDb, Imported, Location, Sample};

/// The default history file, in `jobs_working_dir` beside `jobs.jsonl`.
pub const DEFAULT_FILE: &str = "history.db";

/// Why the history could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database could not be opened (or created).
    #[error("cannot open the history database {location}: {why}")]
    Open {
        /// Where it is (password masked).
        location: String,
        /// What failed.
        why: String,
    },
    /// A statement failed.
    #[error("history database {location}: {source}")]
    Database {
        /// Where it is (password masked).
        location: String,
        /// What failed.
        source: sqlx::Error,
    },
    /// No runtime could be made to run the database's work.
    #[error("history: cannot start its runtime: {0}")]
    Runtime(String),
}
