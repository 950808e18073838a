//! Reading the migration tool's output as it arrives: where each migration starts and ends,
//! counters printed between them, the final version line, import errors.
//!
//! Lines are fed one at a time with the time the worker read them ([`StreamParser::feed`]);
//! [`StreamParser::finish`] gives the [`ParsedRun`].
//!
//! Formats ([`LogFormat`]):
//! - **sqlalchemy-migrate**: a start is `N -> M...` (the original's
//!   `.* ([0-9]+) -> ([0-9]+)\.\.\..*$`, also matching a line that starts with the number);
//!   the end is the next line ending in `done`, which may be the start line itself
//!   (`134 -> 135... done`); the final version is `Final schema version is N`.
//! - **alembic**: `Running upgrade A -> B, message` (also `Running downgrade …`); an empty `A`
//!   (the first migration) is reported as `base`. A migration ends where the next one starts
//!   or where the tool exits ([`StreamParser::tool_exited`] or [`StreamParser::finish`]): that
//!   is not "unfinished".
//! - **regex**: the dataset's `start` (named groups `from`, `to`, optional `description`; an
//!   empty `from` is reported as `base`), optional `end` (without one, migrations end as in
//!   alembic), optional `final` (group `version`, else group 1).
//!
//! In every format a `Final schema version is V` line sets the final version too (the last
//! such line wins).
//!
//! Counters: lines `Innodb_xxx<TAB>NNN` (at the line start or after a space, as the original's
//! `.* (Innodb_.*)\t([0-9]+)`; PostgreSQL `tup_xxx<TAB>NNN` alike), or a whole set given with
//! [`StreamParser::feed_counters`]. The latest value of each counter is kept. A migration's
//! delta for a counter is the value in the first counters block after its end minus the latest
//! value before its start, only for counters seen on both sides. A migration ended implicitly by
//! the next start gets no deltas (any block after that belongs to the next one).
//!
//! `unfinished`: with an explicit end (sqlalchemy-migrate, regex with `end`) a start that never
//! saw its end — another start came first, the tool exited, or the output finished. The exit
//! code is the caller's business.
//!
//! `import_error`: a line containing `ImportError`, `ModuleNotFoundError`, `command not found`
//! or `No such file or directory`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::NaiveDateTime;
use regex::Regex;

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
    /// The locks its sessions held or waited for, per table in name order, when the locks
    /// were observed ([`crate::engine::LockObserver`]).
    pub locks: Vec<crate::engine::TableLocks>,
    /// The tables it rewrote, in name order, when rewrites were watched
    /// ([`crate::engine::rewrites`]).
    pub rewrites: Vec<crate::engine::Rewrite>,
    /// What was not observed while it ran (a side connection failed, [`crate::engine::Gap`]):
    /// its locks, counters or rewrites are then partial. Empty when all was observed (or
    /// nothing was).
    pub observation_gaps: Vec<crate::engine::Gap>,
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

/// The sqlalchemy-migrate start line (see the module doc).
pub const SQLALCHEMY_MIGRATE_START: &str = r"^(?:.*\s)?([0-9]+) -> ([0-9]+)\.\.\.";
/// The sqlalchemy-migrate end: a line ending in `done`.
pub const SQLALCHEMY_MIGRATE_END: &str = r"done\s*$";
/// The final version line printed by the migration script.
pub const FINAL_VERSION: &str = r"Final schema version is ([0-9]+)";
/// alembic's start line.
pub const ALEMBIC_START: &str = r"Running (?:upgrade|downgrade) (?P<from>.*?) ?-> (?P<to>[^\s,]*)(?:,\s*(?P<description>.*?))?\s*$";
/// A counter line (or, with a non-numeric value, a status line inside a counters block).
pub const COUNTER: &str = r"(?:^|\s)((?:Innodb_|tup_)\w+)\t(\S*)\s*$";

// The patterns are constants checked by the unit tests, so `expect` cannot fire.
#[allow(clippy::expect_used)]
fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern")
}

static SQLA_START: LazyLock<Regex> = LazyLock::new(|| compile(SQLALCHEMY_MIGRATE_START));
static SQLA_END: LazyLock<Regex> = LazyLock::new(|| compile(SQLALCHEMY_MIGRATE_END));
static FINAL: LazyLock<Regex> = LazyLock::new(|| compile(FINAL_VERSION));
static GENERIC_FINAL: LazyLock<Regex> = LazyLock::new(|| compile(r"Final schema version is (\S+)"));
static ALEMBIC: LazyLock<Regex> = LazyLock::new(|| compile(ALEMBIC_START));
static COUNTER_RE: LazyLock<Regex> = LazyLock::new(|| compile(COUNTER));

/// Substrings that mean the tool could not start or import what it needs.
pub const IMPORT_ERROR_MARKERS: &[&str] = &[
    "ImportError",
    "ModuleNotFoundError",
    "command not found",
    "No such file or directory",
];

/// A start line, parsed.
struct Start {
    from: String,
    to: String,
    description: String,
}

/// Feeds lines one at a time, in order, with the time each was read.
pub struct StreamParser {
    format: LogFormat,
    run: ParsedRun,
    /// The migration in progress: its index and the counters before its start.
    open: Option<(usize, BTreeMap<String, i64>)>,
    /// The latest value of each counter.
    latest: BTreeMap<String, i64>,
    /// A migration that ended and waits for the first counters block after its end.
    awaiting: Option<(usize, BTreeMap<String, i64>)>,
    /// The counters block being read, when one is awaited.
    block: Option<BTreeMap<String, i64>>,
    /// Starts and ends seen so far.
    boundaries: usize,
}

impl StreamParser {
    /// A parser for `format`.
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            run: ParsedRun::default(),
            open: None,
            latest: BTreeMap::new(),
            awaiting: None,
            block: None,
            boundaries: 0,
        }
    }

    /// The index of the migration in progress, if one is.
    pub fn open_migration(&self) -> Option<usize> {
        self.open.as_ref().map(|(idx, _)| *idx)
    }

    /// The number of migrations started so far.
    pub fn started(&self) -> usize {
        self.run.migrations.len()
    }

    /// How many migration starts and ends were seen so far: a line that changes it is a
    /// migration boundary (where the lock observation is cut).
    pub fn boundaries(&self) -> usize {
        self.boundaries
    }

    /// Whether this format marks the end of a migration with a line of its own.
    fn explicit_end(&self) -> bool {
        match &self.format {
            LogFormat::SqlalchemyMigrate => true,
            LogFormat::Alembic => false,
            LogFormat::Regex { end, .. } => end.is_some(),
        }
    }

    fn is_end(&self, text: &str) -> bool {
        match &self.format {
            LogFormat::SqlalchemyMigrate => SQLA_END.is_match(text),
            LogFormat::Alembic => false,
            LogFormat::Regex { end, .. } => end.as_ref().is_some_and(|r| r.is_match(text)),
        }
    }

    fn parse_start(&self, text: &str) -> Option<Start> {
        let base = |s: &str| {
            if s.is_empty() {
                "base".to_string()
            } else {
                s.to_string()
            }
        };
        match &self.format {
            LogFormat::SqlalchemyMigrate => SQLA_START.captures(text).map(|c| Start {
                from: c[1].to_string(),
                to: c[2].to_string(),
                description: String::new(),
            }),
            LogFormat::Alembic => ALEMBIC.captures(text).map(|c| Start {
                from: base(c.name("from").map_or("", |m| m.as_str()).trim()),
                to: base(c.name("to").map_or("", |m| m.as_str())),
                description: c.name("description").map_or("", |m| m.as_str()).to_string(),
            }),
            LogFormat::Regex { start, .. } => start.captures(text).map(|c| Start {
                from: base(c.name("from").map_or("", |m| m.as_str())),
                to: c.name("to").map_or("", |m| m.as_str()).to_string(),
                description: c.name("description").map_or("", |m| m.as_str()).to_string(),
            }),
        }
    }

    fn final_version(&self, text: &str) -> Option<String> {
        let own = match &self.format {
            LogFormat::SqlalchemyMigrate => FINAL.captures(text).map(|c| c[1].to_string()),
            LogFormat::Alembic => None,
            LogFormat::Regex { final_version, .. } => final_version
                .as_ref()
                .and_then(|r| r.captures(text))
                .and_then(|c| {
                    c.name("version")
                        .or_else(|| c.get(1))
                        .map(|m| m.as_str().to_string())
                }),
        };
        own.or_else(|| GENERIC_FINAL.captures(text).map(|c| c[1].to_string()))
    }

    /// Ends the counters block being read, giving the awaiting migration its deltas.
    fn close_block(&mut self) {
        if let Some(block) = self.block.take() {
            self.apply_after(&block);
        }
    }

    fn apply_after(&mut self, after: &BTreeMap<String, i64>) {
        if let Some((idx, before)) = self.awaiting.take() {
            let deltas = after
                .iter()
                // The tool prints what it likes: extreme values saturate instead of overflowing.
                .filter_map(|(k, a)| before.get(k).map(|b| (k.clone(), a.saturating_sub(*b))))
                .collect();
            if let Some(m) = self.run.migrations.get_mut(idx) {
                m.counters = deltas;
            }
        }
    }

    /// Ends the open migration at `time` (or leaves it unended, and the run unfinished, when
    /// `unfinished`); `await_counters`: the next counters block is its "after".
    fn end_open(&mut self, time: Option<NaiveDateTime>, await_counters: bool) {
        if let Some((idx, before)) = self.open.take() {
            self.boundaries += 1;
            match time {
                Some(t) => {
                    if let Some(m) = self.run.migrations.get_mut(idx) {
                        // Never before its start, even if the clock (or a log's timestamps)
                        // went back: no negative duration.
                        m.end = Some(t.max(m.start));
                    }
                    if await_counters {
                        self.awaiting = Some((idx, before));
                    }
                }
                None => self.run.unfinished = true,
            }
        }
    }

    /// One output line.
    pub fn feed(&mut self, time: NaiveDateTime, text: &str) {
        let text = text.trim_end_matches(['\r', '\n']);
        if IMPORT_ERROR_MARKERS.iter().any(|m| text.contains(m)) {
            self.run.import_error = true;
        }
        if let Some(v) = self.final_version(text) {
            self.run.final_version = Some(v);
        }
        if let Some(c) = COUNTER_RE.captures(text) {
            // A non-numeric status (`Innodb_have_atomic_builtins	ON`) is part of the block
            // but not a counter.
            if let Ok(value) = c[2].parse::<i64>() {
                let name = c[1].to_string();
                self.latest.insert(name.clone(), value);
                if self.awaiting.is_some() {
                    self.block
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name, value);
                }
            }
            return;
        }
        self.close_block();
        if let Some(start) = self.parse_start(text) {
            // Counters seen after a later start are not "after" an earlier migration.
            self.awaiting = None;
            if self.explicit_end() {
                self.end_open(None, false);
            } else {
                self.end_open(Some(time), false);
            }
            let idx = self.run.migrations.len();
            self.boundaries += 1;
            self.run.migrations.push(MigrationRecord {
                from: start.from,
                to: start.to,
                description: start.description,
                start: time,
                end: None,
                counters: BTreeMap::new(),
                locks: Vec::new(),
                rewrites: Vec::new(),
                observation_gaps: Vec::new(),
            });
            self.open = Some((idx, self.latest.clone()));
            // The end may be on the start line itself: `134 -> 135... done`.
            if self.explicit_end() && self.is_end(text) {
                self.end_open(Some(time), true);
            }
            return;
        }
        if self.open.is_some() && self.explicit_end() && self.is_end(text) {
            self.end_open(Some(time), true);
        }
    }

    /// A whole set of counters read at once (e.g. from the server between two steps): one
    /// counters block.
    pub fn feed_counters(&mut self, counters: &BTreeMap<String, i64>) {
        self.close_block();
        for (k, v) in counters {
            self.latest.insert(k.clone(), *v);
        }
        self.apply_after(counters);
    }

    /// The tool exited at `time` but more output (e.g. counters, another step) may follow.
    /// With an implicit end (alembic, regex without `end`) the open migration ends here; with
    /// an explicit end it never will: the run is unfinished.
    pub fn tool_exited(&mut self, time: NaiveDateTime) {
        self.close_block();
        if self.explicit_end() {
            self.end_open(None, false);
        } else {
            self.end_open(Some(time), true);
        }
    }

    /// The output ended at `time` (the tool exited or was killed).
    pub fn finish(mut self, time: NaiveDateTime) -> ParsedRun {
        self.close_block();
        if self.explicit_end() {
            self.end_open(None, false);
        } else {
            self.end_open(Some(time), false);
        }
        self.run
    }
}

/// Parses a whole log in the original's line format (`YYYY-MM-DD HH:MM:SS,mmm [tag] text`),
/// sqlalchemy-migrate output with InnoDB counters between migrations (as in
/// `tests/fixtures/original/user_001.log`).
///
/// Only `[output]` lines are fed, each with its own timestamp; the output finishes at the last
/// line's timestamp (any tag). Lines that do not parse are skipped.
pub fn parse_original_log(text: &str) -> ParsedRun {
    use turbo_hipster_sdk::support::logfile::parse_line;

    let mut parser = StreamParser::new(LogFormat::SqlalchemyMigrate);
    let mut last = None;
    for line in text.lines() {
        let Some(line) = parse_line(line) else {
            continue;
        };
        last = Some(line.timestamp);
        if line.tag == "output" {
            parser.feed(line.timestamp, &line.text);
        }
    }
    parser.finish(last.unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(&format!("2020-01-01 {s}"), "%Y-%m-%d %H:%M:%S%.3f").unwrap()
    }

    fn feed_all(format: LogFormat, lines: &[(&str, &str)], end: &str) -> ParsedRun {
        let mut p = StreamParser::new(format);
        for (time, text) in lines {
            p.feed(t(time), text);
        }
        p.finish(t(end))
    }

    fn counters(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn builtin_patterns_compile() {
        for p in [
            SQLALCHEMY_MIGRATE_START,
            SQLALCHEMY_MIGRATE_END,
            FINAL_VERSION,
            ALEMBIC_START,
            COUNTER,
        ] {
            Regex::new(p).unwrap();
        }
    }

    #[test]
    fn sqlalchemy_migrate_separate_and_same_line_done() {
        let run = feed_all(
            LogFormat::SqlalchemyMigrate,
            &[
                ("00:00:00.000", "Installing Setuptools......done."),
                ("00:00:01.000", "133 -> 134... "),
                ("00:00:01.250", "done"),
                (
                    "00:00:02.000",
                    "2020-01-01 00:00:02 INFO 134 -> 135... done",
                ),
                ("00:00:03.000", " 135 -> 136..."),
                ("00:00:04.500", "done  "),
                ("00:00:05.000", "Final schema version is 136"),
            ],
            "00:00:06.000",
        );
        let got: Vec<_> = run
            .migrations
            .iter()
            .map(|m| (m.from.as_str(), m.to.as_str(), m.duration_ms()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("133", "134", Some(250)),
                ("134", "135", Some(0)),
                ("135", "136", Some(1500)),
            ]
        );
        assert_eq!(run.final_version.as_deref(), Some("136"));
        assert!(!run.unfinished);
        assert!(!run.import_error);
    }

    #[test]
    fn original_start_needs_a_space_before_the_number() {
        let run = feed_all(
            LogFormat::SqlalchemyMigrate,
            &[("00:00:01.000", "x133 -> 134...")],
            "00:00:02.000",
        );
        assert!(run.migrations.is_empty());
    }

    #[test]
    fn sqlalchemy_migrate_unfinished() {
        // The output ends in the middle of a migration.
        let run = feed_all(
            LogFormat::SqlalchemyMigrate,
            &[
                ("00:00:01.000", "133 -> 134..."),
                ("00:00:01.100", "done"),
                ("00:00:02.000", "134 -> 135..."),
            ],
            "00:00:09.000",
        );
        assert!(run.unfinished);
        assert_eq!(run.migrations.len(), 2);
        assert_eq!(run.migrations[0].end, Some(t("00:00:01.100")));
        assert_eq!(run.migrations[1].end, None);

        // A start while another is open: the open one never ended.
        let run = feed_all(
            LogFormat::SqlalchemyMigrate,
            &[
                ("00:00:01.000", "133 -> 134..."),
                ("00:00:02.000", "134 -> 135..."),
                ("00:00:03.000", "done"),
            ],
            "00:00:04.000",
        );
        assert!(run.unfinished);
        assert_eq!(run.migrations[0].end, None);
        assert_eq!(run.migrations[1].duration_ms(), Some(1000));

        // A `done` with no migration open ends nothing.
        let run = feed_all(
            LogFormat::SqlalchemyMigrate,
            &[("00:00:01.000", "done")],
            "00:00:02.000",
        );
        assert_eq!(run, ParsedRun::default());
    }

    #[test]
    fn tool_exit_with_explicit_end_is_unfinished() {
        let mut p = StreamParser::new(LogFormat::SqlalchemyMigrate);
        p.feed(t("00:00:01.000"), "133 -> 134...");
        p.tool_exited(t("00:00:02.000"));
        // A later line ending in `done` does not end it.
        p.feed(t("00:00:03.000"), "cleanup done");
        let run = p.finish(t("00:00:04.000"));
        assert!(run.unfinished);
        assert_eq!(run.migrations[0].end, None);
    }

    #[test]
    fn alembic_first_migration_from_base() {
        let run = feed_all(
            LogFormat::Alembic,
            &[
                ("00:00:00.000", "INFO  [alembic.runtime.migration] Context impl MySQLImpl."),
                ("00:00:01.000", "INFO  [alembic.runtime.migration] Running upgrade  -> 1a2b3c, create table"),
                ("00:00:03.500", "INFO  [alembic.runtime.migration] Running upgrade 1a2b3c -> 4d5e6f, add column"),
                ("00:00:04.000", "INFO  [alembic.runtime.migration] Running upgrade 4d5e6f, 777aaa -> 888bbb, merge"),
            ],
            "00:00:10.000",
        );
        let got: Vec<_> = run
            .migrations
            .iter()
            .map(|m| {
                (
                    m.from.as_str(),
                    m.to.as_str(),
                    m.description.as_str(),
                    m.duration_ms(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("base", "1a2b3c", "create table", Some(2500)),
                ("1a2b3c", "4d5e6f", "add column", Some(500)),
                ("4d5e6f, 777aaa", "888bbb", "merge", Some(6000)),
            ]
        );
        // Ending at the tool's exit is not "unfinished".
        assert!(!run.unfinished);
        assert_eq!(run.final_version, None);
    }

    #[test]
    fn alembic_step_by_step_with_counters() {
        let mut p = StreamParser::new(LogFormat::Alembic);
        p.feed_counters(&counters(&[("tup_inserted", 10), ("tup_returned", 100)]));
        p.feed(t("00:00:01.000"), "Running upgrade  -> a1, one");
        p.tool_exited(t("00:00:02.000"));
        p.feed_counters(&counters(&[("tup_inserted", 15), ("tup_returned", 130)]));
        p.feed(t("00:00:03.000"), "Running upgrade a1 -> b2, two");
        let run = p.finish(t("00:00:05.000"));
        assert_eq!(
            run.migrations[0].counters,
            counters(&[("tup_inserted", 5), ("tup_returned", 30)])
        );
        assert_eq!(run.migrations[0].duration_ms(), Some(1000));
        assert!(run.migrations[1].counters.is_empty());
        assert_eq!(run.migrations[1].duration_ms(), Some(2000));
        assert!(!run.unfinished);
    }

    #[test]
    fn regex_format_with_and_without_end() {
        let with_end = LogFormat::Regex {
            start: Regex::new(r"^Applying (?P<from>\w*)=>(?P<to>\w+) \((?P<description>[^)]*)\)")
                .unwrap(),
            end: Some(Regex::new(r"\bOK$").unwrap()),
            final_version: Some(Regex::new(r"^At version (?P<version>\w+)").unwrap()),
        };
        let run = feed_all(
            with_end.clone(),
            &[
                ("00:00:01.000", "Applying =>v1 (first)"),
                ("00:00:01.400", "OK"),
                ("00:00:02.000", "Applying v1=>v2 (second) OK"),
                ("00:00:03.000", "Applying v2=>v3 (third)"),
                ("00:00:04.000", "At version v3"),
            ],
            "00:00:05.000",
        );
        let got: Vec<_> = run
            .migrations
            .iter()
            .map(|m| {
                (
                    m.from.as_str(),
                    m.to.as_str(),
                    m.description.as_str(),
                    m.duration_ms(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("base", "v1", "first", Some(400)),
                ("v1", "v2", "second", Some(0)),
                ("v2", "v3", "third", None),
            ]
        );
        assert!(run.unfinished);
        assert_eq!(run.final_version.as_deref(), Some("v3"));

        let without_end = LogFormat::Regex {
            start: Regex::new(r"^step (?P<from>\d+) to (?P<to>\d+)").unwrap(),
            end: None,
            final_version: None,
        };
        let run = feed_all(
            without_end,
            &[
                ("00:00:01.000", "step 1 to 2"),
                ("00:00:02.000", "step 2 to 3"),
                ("00:00:02.500", "Final schema version is 3"),
            ],
            "00:00:04.000",
        );
        assert_eq!(run.migrations[0].duration_ms(), Some(1000));
        assert_eq!(run.migrations[1].duration_ms(), Some(2000));
        assert!(!run.unfinished);
        assert_eq!(run.final_version.as_deref(), Some("3"));
    }

    #[test]
    fn import_errors() {
        for line in [
            "ImportError: No module named migrate",
            "ModuleNotFoundError: No module named 'alembic'",
            "bash: nova-manage: command not found",
            "/bin/sh: 1: alembic: No such file or directory",
        ] {
            let run = feed_all(
                LogFormat::Alembic,
                &[("00:00:01.000", line)],
                "00:00:02.000",
            );
            assert!(run.import_error, "{line}");
        }
        let run = feed_all(
            LogFormat::Alembic,
            &[("00:00:01.000", "all fine")],
            "00:00:02.000",
        );
        assert!(!run.import_error);
    }

    #[test]
    fn counter_deltas_first_block_after_end_minus_latest_before_start() {
        let run = feed_all(
            LogFormat::SqlalchemyMigrate,
            &[
                ("00:00:00.000", "Innodb_rows_read\t1"),
                ("00:00:00.001", "Innodb_rows_read\t7"), // the latest before the start
                ("00:00:00.002", "Innodb_rows_inserted\t3"),
                ("00:00:00.003", "Innodb_have_atomic_builtins\tON"),
                ("00:00:01.000", "1 -> 2..."),
                ("00:00:01.500", "Innodb_rows_read\t50"), // during: not an "after"
                ("00:00:02.000", "done"),
                ("00:00:02.100", "Variable_name\tValue"),
                ("00:00:02.200", "Innodb_rows_read\t107"),
                ("00:00:02.200", "Innodb_have_atomic_builtins\tON"), // still the same block
                ("00:00:02.200", "mysql> Innodb_rows_inserted\t13"),
                ("00:00:02.200", "Innodb_rows_updated\t4"), // only after: no delta
                ("00:00:02.300", "end of block"),
                ("00:00:02.400", "Innodb_rows_read\t1000"), // a second block: not the first
                ("00:00:03.000", "2 -> 3... done"),
                ("00:00:04.000", "3 -> 4... done"),
                ("00:00:04.100", "some line"),
                ("00:00:04.200", "Innodb_rows_read\t1500"),
            ],
            "00:00:05.000",
        );
        assert_eq!(
            run.migrations[0].counters,
            counters(&[("Innodb_rows_inserted", 10), ("Innodb_rows_read", 100)])
        );
        // 2->3: before = 1000 (latest), but the next start came before any block.
        assert!(run.migrations[1].counters.is_empty());
        // 3->4: before = 1000 (the latest), after = 1500 (a block after unrelated lines);
        // the other counters are not in that block: no deltas.
        assert_eq!(
            run.migrations[2].counters,
            counters(&[("Innodb_rows_read", 500)])
        );
    }
}
