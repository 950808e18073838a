//! Reading the migration tool's output as it arrives: where each migration starts and ends,
//! counters printed between them, the final version line, import errors.
//!
//! OWNER: helper A.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use crate::dataset::LogFormat;

/// One migration as seen in the output.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRecord {
    /// Version before.
    pub from: String,
    /// Version after.
    pub to: String,
    /// Description, if the format gives one.
    pub description: String,
    /// When its start line was read.
    pub start: NaiveDateTime,
    /// When its end was seen; `None` if it never ended.
    pub end: Option<NaiveDateTime>,
    /// Counter deltas over the migration (e.g. `Innodb_rows_read`), when counters were seen.
    pub counters: BTreeMap<String, i64>,
}

impl MigrationRecord {
    /// `end - start` in milliseconds.
    pub fn duration_ms(&self) -> Option<i64> {
        self.end.map(|e| (e - self.start).num_milliseconds())
    }
}

/// What the output said, once it is complete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedRun {
    /// Migrations in order.
    pub migrations: Vec<MigrationRecord>,
    /// The `Final schema version is N` value, if printed.
    pub final_version: Option<String>,
    /// A migration started and never ended.
    pub unfinished: bool,
    /// The tool could not import what it needs (ImportError, ModuleNotFoundError, command not
    /// found).
    pub import_error: bool,
}

/// Feeds lines one at a time, in order, with the time each was read.
pub struct StreamParser {
    format: LogFormat,
    run: ParsedRun,
}

impl StreamParser {
    /// A parser for `format`.
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            run: ParsedRun::default(),
        }
    }

    /// One output line.
    pub fn feed(&mut self, time: NaiveDateTime, text: &str) {
        let _ = (&self.format, time, text);
    }

    /// The output ended at `time` (the tool exited or was killed).
    pub fn finish(self, time: NaiveDateTime) -> ParsedRun {
        let _ = time;
        self.run
    }
}

/// Parses a whole log in the original's line format (`YYYY-MM-DD HH:MM:SS,mmm [tag] text`),
/// sqlalchemy-migrate output with InnoDB counters between migrations (as in
/// `../shared/fixtures/turbo-hipster/user_001.log`).
pub fn parse_original_log(text: &str) -> ParsedRun {
    let _ = text;
    ParsedRun::default()
}
