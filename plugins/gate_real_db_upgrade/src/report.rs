//! What a job leaves in its results directory besides the logs: `summary.json` (for tools),
//! `summary.txt` (for people) and the report page `index.html` ([`html`]).
//!
//! ## `summary.json`, schema 1
//!
//! ```json
//! {
//!   "schema": 1,
//!   "project": "openstack/nova",
//!   "change": {"ZUUL_URL": "…", "ZUUL_PROJECT": "…", "ZUUL_REF": "…", "commit": "<sha>", …},
//!   "result": "SUCCESS",
//!   "datasets": [
//!     {
//!       "name": "user_001",
//!       "engine": "mysql",
//!       "database": "nova_datasets_user_001_1a2b3c4d_0",
//!       "seed": "/var/lib/turbo-hipster/datasets/user_001/nova.sql",
//!       "config": "/var/lib/turbo-hipster/datasets/user_001/config.json",
//!       "result_lines": [],
//!       "duration_ms": 81234,
//!       "final_version": "216",
//!       "expected_version": "216",
//!       "counters_source": "performance_schema.table_io_waits_summary_by_table",
//!       "counters_scope": "database",
//!       "migrations": [
//!         {
//!           "phase": "change",
//!           "from": "215", "to": "216", "description": "",
//!           "start": "2014-01-16 06:58:03,955", "end": "2014-01-16 06:58:05,001",
//!           "duration_ms": 1046, "limit_seconds": 137.0,
//!           "status": "ok",
//!           "messages": [],
//!           "counters": {"Innodb_rows_read": 1200, "Innodb_rows_inserted": 0,
//!                        "Innodb_rows_updated": 300, "Innodb_rows_deleted": 0},
//!           "locks": [
//!             {"table": "orders", "strongest": "ACCESS EXCLUSIVE",
//!              "longest_blocking": {"mode": "ACCESS EXCLUSIVE", "seconds": 4.1}, "waited": true}
//!           ],
//!           "rewrites": [{"table": "orders", "bytes": 46347878, "certain": true}],
//!           "observation_gaps": [
//!             {"part": "locks", "from": "2014-01-16 06:58:04,100",
//!              "to": "2014-01-16 06:58:04,210", "seconds": 0.11, "ongoing": false,
//!              "why": "sampling pg_locks: error returned from database: terminating connection due to administrator command"}
//!           ]
//!         }
//!       ],
//!       "observation_gaps": 1
//!     }
//!   ]
//! }
//! ```
//!
//! - `change` holds the Zuul parameters the job used (those present) and `commit`, the sha
//!   that was tested.
//! - `result` is the job's result as sent to Zuul; `result_lines` are one dataset's problems
//!   (empty when it passed), without the dataset-name prefix.
//! - `config` is the dataset's config file (the daemon's history keeps it for
//!   `turbo-hipster limits --write`).
//! - `final_version` is what the database recorded after the run (`null` if nothing);
//!   `expected_version` what the change expects (`null` when unchecked or unknown).
//! - `phase` is `change` for the run on the change, or the git ref of an `upgrade_path` step.
//! - `end` and `duration_ms` are `null` for a migration that never ended; `limit_seconds` is
//!   `null` without a limit. `status`: `ok`, `too_long` (strictly over its limit) or
//!   `unfinished`. `messages` are the warnings about this migration. `counters` are the work
//!   the migration did in the run's database (rows read, inserted, updated, deleted; on
//!   PostgreSQL also `wal_bytes`), empty when not counted; `counters_source` says where they
//!   were read and `counters_scope` whether they are the run database's own (`database`) or
//!   server-wide (`server`), both `null` when nothing was counted
//!   ([`crate::engine::CounterReader`]).
//! - `locks`: per table, what the migration's sessions did to its locks while it ran (empty
//!   when the locks were not observed or it took none): the `strongest` lock held, the
//!   `longest_blocking` continuous hold of a lock that blocks reads or writes of the table
//!   (its strongest mode and its length in seconds, a lower bound good to one sampling
//!   interval; `null` when none blocked anything) and whether a session `waited` for a lock
//!   on it ([`crate::engine::LockObserver`]).
//! - `rewrites`: the tables the migration rewrote (copied into new storage: PostgreSQL's
//!   relfilenode changed, MariaDB/MySQL's InnoDB table id changed), with their size in `bytes`
//!   before the rewrite; `certain` is `false` when the rewrite could also be another
//!   migration's (PostgreSQL, all migrations in one transaction: seen at the commit, given to
//!   the first migration seen holding `ACCESS EXCLUSIVE` on the table). Empty when rewrites were not
//!   watched (no lock observation) or there were none ([`crate::engine::rewrites`]).
//! - `observation_gaps`: what was not observed while the migration ran (a side connection
//!   failed and reconnected, [`crate::engine::Gap`]): the `part` (`locks`, `counters`,
//!   `rewrites`), `from`/`to` (the migration's start or end when the gap began before it or
//!   went on after it; `ongoing` then `true`), `seconds`, and `why` (the error, one line,
//!   secrets masked). Empty when all was observed (or nothing was). That part's figures are
//!   partial: limits are checked on what was seen. The dataset's `observation_gaps` counts
//!   them. An observation fault is never the change's: it adds no result line.
//! - Timestamps are local time, `YYYY-MM-DD HH:MM:SS,mmm`, as in the logs.
//!
//! Fields may be added within schema 1; a change of meaning bumps `schema`.

pub mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::Value;
use turbo_hipster_sdk::support::logfile::TIMESTAMP_FORMAT;

use crate::engine::{Gap, Rewrite, TableLocks};
use crate::logparse::MigrationRecord;

/// The version of the `summary.json` layout.
pub const SCHEMA: u32 = 1;
/// The file names in the results directory.
pub const SUMMARY_JSON: &str = "summary.json";
/// The human summary.
pub const SUMMARY_TXT: &str = "summary.txt";

/// A migration's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationStatus {
    /// Ended within its limit.
    Ok,
    /// Ended, strictly over its time limit.
    TooLong,
    /// Never ended.
    Unfinished,
}

impl MigrationStatus {
    /// As written in the summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Ok => "ok",
            MigrationStatus::TooLong => "too_long",
            MigrationStatus::Unfinished => "unfinished",
        }
    }
}

/// One migration in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationSummary {
    /// `change`, or the git ref of an upgrade-path step.
    pub phase: String,
    /// Version before.
    pub from: String,
    /// Version after.
    pub to: String,
    /// Description, if known.
    pub description: String,
    /// Start, `YYYY-MM-DD HH:MM:SS,mmm`.
    pub start: String,
    /// End, if it ended.
    pub end: Option<String>,
    /// `end - start`.
    pub duration_ms: Option<i64>,
    /// Its time limit.
    pub limit_seconds: Option<f64>,
    /// `ok`, `too_long`, `unfinished`.
    pub status: MigrationStatus,
    /// Warnings about it.
    pub messages: Vec<String>,
    /// Counter deltas.
    pub counters: BTreeMap<String, i64>,
    /// What it did to each table's locks.
    pub locks: Vec<LockSummary>,
    /// The tables it rewrote.
    pub rewrites: Vec<RewriteSummary>,
    /// What was not observed while it ran; empty when all was (or nothing was observed).
    pub observation_gaps: Vec<GapSummary>,
}

/// A gap in a migration's observation ([`Gap`]), as the summary says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapSummary {
    /// `locks`, `counters` or `rewrites`.
    pub part: String,
    /// From when, `YYYY-MM-DD HH:MM:SS,mmm`.
    pub from: String,
    /// Until when.
    pub to: String,
    /// Its length, to the millisecond.
    pub seconds: f64,
    /// It had not ended when the migration did (the part was still not observed).
    pub ongoing: bool,
    /// Why (the side connection's error), one line.
    pub why: String,
}

impl From<&Gap> for GapSummary {
    fn from(g: &Gap) -> Self {
        Self {
            part: g.part.as_str().to_string(),
            from: timestamp(&g.from.naive_local()),
            to: timestamp(&g.to.naive_local()),
            seconds: (g.seconds() * 1000.0).round() / 1000.0,
            ongoing: g.ongoing,
            why: g.why.clone(),
        }
    }
}

/// The gaps, `locks 12:00:01,123-12:00:02,456 (1.3 s): <why>; counters …`; `None` when there
/// is none.
pub fn gaps_text(gaps: &[Gap]) -> Option<String> {
    let all: Vec<String> = gaps
        .iter()
        .map(|g| {
            let clock = |t: &chrono::DateTime<chrono::Local>| t.format("%H:%M:%S,%3f").to_string();
            let span = if g.from == g.to {
                format!("at {}", clock(&g.from))
            } else {
                format!(
                    "{}-{} ({:.1} s{})",
                    clock(&g.from),
                    clock(&g.to),
                    g.seconds(),
                    if g.ongoing { ", to its end" } else { "" }
                )
            };
            format!("{} not observed {span}: {}", g.part.as_str(), g.why)
        })
        .collect();
    (!all.is_empty()).then(|| all.join("; "))
}

/// How much of a dataset's observation was missed, for the log and `summary.txt`: `None`
/// when nothing was. A part missed for every migration is said lost for the whole run; that
/// is a note, not an error: the migrations' results stand, only that part's figures are
/// missing.
pub fn observation_note(migrations: &[MigrationSummary]) -> Option<String> {
    let with_gaps = migrations
        .iter()
        .filter(|m| !m.observation_gaps.is_empty())
        .count();
    if with_gaps == 0 {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    for part in ["locks", "counters", "rewrites"] {
        let n = migrations
            .iter()
            .filter(|m| m.observation_gaps.iter().any(|g| g.part == part))
            .count();
        if n == 0 {
            continue;
        }
        parts.push(if n == migrations.len() {
            format!("{part}: not observed in any migration (lost for the whole run)")
        } else {
            format!("{part}: {n} of {} migration(s)", migrations.len())
        });
    }
    Some(format!(
        "observation incomplete ({}); those figures are partial, limits were checked on what \
         was seen; an observation fault, not the change's: the migrations' results stand",
        parts.join(", ")
    ))
}

impl MigrationSummary {
    /// Whether `part` (`locks`, …) had a gap in this migration.
    fn gap_in(&self, part: &str) -> bool {
        self.observation_gaps.iter().any(|g| g.part == part)
    }

    /// `cell`, marked when `part` was not fully observed: `(partial)`, or `not observed` for
    /// counters that were not read (a counters gap leaves the migration without figures).
    fn marked(&self, cell: String, part: &str) -> String {
        if !self.gap_in(part) {
            cell
        } else if cell == "-" && part == "counters" {
            "not observed".into()
        } else {
            format!("{cell} (partial)")
        }
    }
}

/// The work in `counters`, `read N, changed N` (and `, WAL N B` on PostgreSQL), `-` when
/// nothing was counted.
pub fn work_text(counters: &BTreeMap<String, i64>) -> String {
    let mut parts = Vec::new();
    if let Some(n) = crate::limits::rows_read(counters) {
        parts.push(format!("read {n}"));
    }
    if let Some(n) = crate::limits::rows_changed(counters) {
        parts.push(format!("changed {n}"));
    }
    if let Some(n) = crate::limits::wal_bytes(counters) {
        parts.push(format!("WAL {n} B"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// A table a migration rewrote ([`Rewrite`]), as the summary says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewriteSummary {
    /// The table.
    pub table: String,
    /// Its size before the rewrite.
    pub bytes: i64,
    /// Whether it is certain this migration did it.
    pub certain: bool,
}

impl From<&Rewrite> for RewriteSummary {
    fn from(r: &Rewrite) -> Self {
        Self {
            table: r.table.clone(),
            bytes: r.bytes,
            certain: r.certain,
        }
    }
}

/// The rewrites among `rewrites`, `orders (44.2 MB), users (2.0 kB, uncertain: …)`; `None` when
/// there is none.
pub fn rewritten(rewrites: &[Rewrite]) -> Option<String> {
    let all: Vec<String> = rewrites
        .iter()
        .map(|r| rewrite_text(&r.table, r.bytes, r.certain))
        .collect();
    (!all.is_empty()).then(|| all.join(", "))
}

/// One rewrite in words: `orders (44.2 MB)`, `users (2.0 kB, uncertain: …)`.
pub fn rewrite_text(table: &str, bytes: i64, certain: bool) -> String {
    format!(
        "{table} ({}{})",
        crate::messages::human_bytes(bytes),
        if certain {
            ""
        } else {
            ", uncertain: several migrations could have done it, this one is the likeliest"
        }
    )
}

/// What one migration did to one table's locks ([`TableLocks`]), as the summary says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockSummary {
    /// The table.
    pub table: String,
    /// The strongest lock held on it (`ACCESS EXCLUSIVE`, `SHARED_NO_WRITE`, …).
    pub strongest: String,
    /// The longest continuous hold of a lock blocking reads or writes.
    pub longest_blocking: Option<HoldSummary>,
    /// A session waited for a lock on it.
    pub waited: bool,
}

/// A blocking hold: its strongest mode and length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldSummary {
    /// The mode.
    pub mode: String,
    /// Seconds, to the millisecond.
    pub seconds: f64,
}

impl MigrationSummary {
    /// The work counted, for the human summary: `read N, changed N` (and `, WAL N B` on
    /// PostgreSQL), `-` when not counted.
    pub fn work(&self) -> String {
        work_text(&self.counters)
    }

    /// The blocking holds, `ACCESS EXCLUSIVE orders 4.1 s, …`, or `-`.
    fn blocking_locks(&self) -> String {
        let holds: Vec<String> = self
            .locks
            .iter()
            .filter_map(|l| {
                let h = l.longest_blocking.as_ref()?;
                Some(format!("{} {} {:.1} s", h.mode, l.table, h.seconds))
            })
            .collect();
        if holds.is_empty() {
            "-".into()
        } else {
            holds.join(", ")
        }
    }

    /// The rewrites, `orders 44.2 MB, users 2.0 kB?` (`?`: perhaps another migration's), or
    /// `-`.
    fn rewrites_cell(&self) -> String {
        let all: Vec<String> = self
            .rewrites
            .iter()
            .map(|r| {
                format!(
                    "{} {}{}",
                    r.table,
                    crate::messages::human_bytes(r.bytes),
                    if r.certain { "" } else { "?" }
                )
            })
            .collect();
        if all.is_empty() {
            "-".into()
        } else {
            all.join(", ")
        }
    }
}

impl From<&TableLocks> for LockSummary {
    fn from(locks: &TableLocks) -> Self {
        Self {
            table: locks.table.clone(),
            strongest: locks.strongest.name.to_string(),
            longest_blocking: locks.longest_blocking.map(|h| HoldSummary {
                mode: h.mode.name.to_string(),
                seconds: (h.seconds * 1000.0).round() / 1000.0,
            }),
            waited: locks.waited,
        }
    }
}

/// The blocking holds among `locks`, `ACCESS EXCLUSIVE on orders for 4.1 s, …` (`(waited)`
/// after a table a session waited on); `None` when nothing blocked reads or writes.
pub fn blocking_holds(locks: &[TableLocks]) -> Option<String> {
    let holds: Vec<String> = locks
        .iter()
        .filter_map(|l| {
            l.longest_blocking.map(|h| {
                format!(
                    "{} on {} for {:.1} s{}",
                    h.mode.name,
                    l.table,
                    h.seconds,
                    if l.waited { " (waited)" } else { "" }
                )
            })
        })
        .collect();
    (!holds.is_empty()).then(|| holds.join(", "))
}

impl MigrationSummary {
    /// The summary of `record`, given its limit and the warnings about it.
    pub fn from_record(
        phase: &str,
        record: &MigrationRecord,
        limit_seconds: Option<f64>,
        messages: Vec<String>,
    ) -> Self {
        let duration_ms = record.duration_ms();
        let status = match (duration_ms, limit_seconds) {
            (None, _) => MigrationStatus::Unfinished,
            // Strictly greater, as the original: compare in milliseconds.
            #[allow(clippy::cast_precision_loss)]
            (Some(ms), Some(limit)) if ms as f64 > limit * 1000.0 => MigrationStatus::TooLong,
            _ => MigrationStatus::Ok,
        };
        Self {
            phase: phase.to_string(),
            from: record.from.clone(),
            to: record.to.clone(),
            description: record.description.clone(),
            start: timestamp(&record.start),
            end: record.end.as_ref().map(timestamp),
            duration_ms,
            limit_seconds,
            status,
            messages,
            counters: record.counters.clone(),
            locks: record.locks.iter().map(LockSummary::from).collect(),
            rewrites: record.rewrites.iter().map(RewriteSummary::from).collect(),
            observation_gaps: record
                .observation_gaps
                .iter()
                .map(GapSummary::from)
                .collect(),
        }
    }
}

/// One dataset in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSummary {
    /// The dataset's name.
    pub name: String,
    /// Its engine (`mysql`, `mariadb`, `postgresql`, `sqlite`).
    pub engine: String,
    /// The run's database.
    pub database: String,
    /// The seed file.
    pub seed: String,
    /// The dataset's config file (`limits --write` writes there).
    pub config: String,
    /// Its problems, without prefix; empty when it passed.
    pub result_lines: Vec<String>,
    /// How long the dataset's run took.
    pub duration_ms: u64,
    /// The version the database recorded at the end.
    pub final_version: Option<String>,
    /// The version the change expects.
    pub expected_version: Option<String>,
    /// Every migration seen.
    pub migrations: Vec<MigrationSummary>,
    /// How the run's database was made (`{method, seconds, golden}`); absent when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<crate::provisioning::Provisioned>,
    /// Where the migrations' `counters` were read (`null` when work was not counted).
    pub counters_source: Option<String>,
    /// `database`: the counters are the run database's own; `server`: server-wide, other
    /// sessions' work included; `database (WAL: server)` on PostgreSQL.
    pub counters_scope: Option<String>,
    /// The number of gaps in its migrations' observation (their `observation_gaps`); 0 when
    /// all was observed.
    pub observation_gaps: usize,
}

/// The whole job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `ZUUL_PROJECT`.
    pub project: String,
    /// The Zuul parameters used, and `commit`.
    pub change: BTreeMap<String, String>,
    /// The job's result.
    pub result: String,
    /// Every dataset run.
    pub datasets: Vec<DatasetSummary>,
}

impl JobSummary {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The human summary: a table of every migration, then the result.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<[String; 10]> = vec![[
            "dataset".into(),
            "phase".into(),
            "migration".into(),
            "description".into(),
            "duration ms".into(),
            "limit s".into(),
            "status".into(),
            "blocking locks".into(),
            "rewrites".into(),
            "work".into(),
        ]];
        for d in &self.datasets {
            for m in &d.migrations {
                rows.push([
                    d.name.clone(),
                    m.phase.clone(),
                    format!("{}->{}", m.from, m.to),
                    m.description.clone(),
                    m.duration_ms
                        .map_or_else(|| "-".into(), |ms| ms.to_string()),
                    m.limit_seconds
                        .map_or_else(|| "-".into(), |l| l.to_string()),
                    m.status.as_str().to_string(),
                    m.marked(m.blocking_locks(), "locks"),
                    m.marked(m.rewrites_cell(), "rewrites"),
                    m.marked(m.work(), "counters"),
                ]);
            }
        }
        let mut widths = [0usize; 10];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "project: {}", self.project);
        if let Some(commit) = self.change.get("commit") {
            let _ = writeln!(out, "commit:  {commit}");
        }
        out.push('\n');
        for (i, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (col, (cell, w)) in row.iter().zip(widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                // Numbers right-aligned, text left-aligned.
                if col == 4 || col == 5 {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
                line.push_str("  ");
            }
            let _ = writeln!(out, "{}", line.trim_end());
            if i == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                let _ = writeln!(out, "{}", "-".repeat(total));
            }
        }
        if rows.len() == 1 {
            let _ = writeln!(out, "(no migration ran)");
        }
        self.gaps_footnote(&mut out);
        out.push('\n');
        for d in &self.datasets {
            let _ = writeln!(
                out,
                "{}: {} on {} in {} ms, final version {}, expected {}{}",
                d.name,
                if d.result_lines.is_empty() {
                    "passed"
                } else {
                    "failed"
                },
                d.engine,
                d.duration_ms,
                d.final_version.as_deref().unwrap_or("none"),
                d.expected_version.as_deref().unwrap_or("unchecked"),
                if d.result_lines.is_empty() {
                    String::new()
                } else {
                    format!(": {}", d.result_lines.join("; "))
                }
            );
        }
        for d in &self.datasets {
            if let (Some(source), Some(scope)) = (&d.counters_source, &d.counters_scope) {
                let _ = writeln!(
                    out,
                    "{}: work counted from {source} (scope: {scope})",
                    d.name
                );
            }
        }
        for d in &self.datasets {
            if let Some(note) = observation_note(&d.migrations) {
                let _ = writeln!(out, "{}: {note}", d.name);
            }
        }
        let _ = writeln!(out, "\nresult:\n{}", self.result);
        out
    }

    /// Under the table: the gaps of the migrations marked `(partial)` / `not observed`.
    fn gaps_footnote(&self, out: &mut String) {
        let mut lines = Vec::new();
        for d in &self.datasets {
            for m in d
                .migrations
                .iter()
                .filter(|m| !m.observation_gaps.is_empty())
            {
                let gaps: Vec<String> = m
                    .observation_gaps
                    .iter()
                    .map(|g| {
                        format!(
                            "{} not observed {}-{} ({:.1} s{}): {}",
                            g.part,
                            g.from,
                            g.to,
                            g.seconds,
                            if g.ongoing { ", to its end" } else { "" },
                            g.why
                        )
                    })
                    .collect();
                lines.push(format!(
                    "  {} {} {}->{}: {}",
                    d.name,
                    m.phase,
                    m.from,
                    m.to,
                    gaps.join("; ")
                ));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(
                out,
                "\nobservation gaps (an observation fault, not the change's; the marked figures \
                 are partial):"
            );
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// A timestamp as the logs write it.
pub fn timestamp(t: &NaiveDateTime) -> String {
    t.format(TIMESTAMP_FORMAT).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use turbo_hipster_sdk::support::logfile::parse_timestamp;

    fn record(from: &str, to: &str, start: &str, end: Option<&str>) -> MigrationRecord {
        MigrationRecord {
            from: from.into(),
            to: to.into(),
            description: "d".into(),
            start: parse_timestamp(start).unwrap(),
            end: end.map(|e| parse_timestamp(e).unwrap()),
            counters: BTreeMap::new(),
            locks: Vec::new(),
            rewrites: Vec::new(),
            observation_gaps: Vec::new(),
        }
    }

    #[test]
    fn statuses_follow_the_strict_limit() {
        let r = record(
            "1",
            "2",
            "2020-01-01 00:00:00,000",
            Some("2020-01-01 00:00:02,000"),
        );
        let m = MigrationSummary::from_record("change", &r, Some(2.0), vec![]);
        assert_eq!(m.status, MigrationStatus::Ok);
        assert_eq!(m.duration_ms, Some(2000));
        assert_eq!(m.start, "2020-01-01 00:00:00,000");
        let m = MigrationSummary::from_record("change", &r, Some(1.999), vec![]);
        assert_eq!(m.status, MigrationStatus::TooLong);
        let m = MigrationSummary::from_record("change", &r, None, vec![]);
        assert_eq!(m.status, MigrationStatus::Ok);
        let r = record("2", "3", "2020-01-01 00:00:00,000", None);
        let m = MigrationSummary::from_record("change", &r, Some(1.0), vec![]);
        assert_eq!(m.status, MigrationStatus::Unfinished);
        assert_eq!(m.end, None);
    }

    /// A migration with gaps: `observation_gaps` in the JSON, its cells marked in the text
    /// with the gaps listed under the table, and a part missed in every migration said lost.
    #[test]
    fn gaps_are_in_the_json_and_marked_in_the_text() {
        use chrono::TimeZone;
        let at = |ms: i64| {
            chrono::Local
                .timestamp_millis_opt(1_700_000_000_000 + ms)
                .unwrap()
        };
        let mut r = record(
            "1",
            "2",
            "2020-01-01 00:00:00,000",
            Some("2020-01-01 00:00:05,000"),
        );
        r.observation_gaps = vec![
            Gap {
                part: crate::engine::Part::Locks,
                from: at(0),
                to: at(1_500),
                ongoing: false,
                why: "sampling pg_locks: connection reset".into(),
            },
            Gap::point(crate::engine::Part::Counters, at(2_000), "reader gone"),
        ];
        let gapped = MigrationSummary::from_record("change", &r, None, vec![]);
        let clean = MigrationSummary::from_record(
            "change",
            &record(
                "2",
                "3",
                "2020-01-01 00:00:05,000",
                Some("2020-01-01 00:00:06,000"),
            ),
            None,
            vec![],
        );
        let json = serde_json::to_value(&gapped).unwrap();
        assert_eq!(json["observation_gaps"][0]["part"], "locks");
        assert_eq!(json["observation_gaps"][0]["seconds"], 1.5);
        assert_eq!(json["observation_gaps"][0]["ongoing"], false);
        assert_eq!(
            json["observation_gaps"][0]["why"],
            "sampling pg_locks: connection reset"
        );
        assert_eq!(json["observation_gaps"][1]["seconds"], 0.0);
        assert_eq!(
            serde_json::to_value(&clean).unwrap()["observation_gaps"],
            serde_json::json!([])
        );
        let note = observation_note(&[gapped.clone(), clean.clone()]).unwrap();
        assert!(note.contains("locks: 1 of 2 migration(s)"), "{note}");
        assert!(note.contains("not the change's"), "{note}");
        let lost = observation_note(std::slice::from_ref(&gapped)).unwrap();
        assert!(
            lost.contains("locks: not observed in any migration (lost for the whole run)"),
            "{lost}"
        );
        assert_eq!(observation_note(std::slice::from_ref(&clean)), None);

        let summary = JobSummary {
            schema: SCHEMA,
            project: "example/shop".into(),
            change: BTreeMap::new(),
            result: "SUCCESS".into(),
            datasets: vec![DatasetSummary {
                name: "example".into(),
                engine: "postgresql".into(),
                database: "example_1_0".into(),
                seed: "/s.sql".into(),
                config: "/c.json".into(),
                result_lines: vec![],
                duration_ms: 10,
                final_version: None,
                expected_version: None,
                migrations: vec![gapped, clean],
                provisioning: None,
                counters_source: None,
                counters_scope: None,
                observation_gaps: 2,
            }],
        };
        let text = summary.to_text();
        let row = text.lines().find(|l| l.contains("1->2")).unwrap();
        assert!(row.contains("- (partial)"), "locks: {text}");
        assert!(row.contains("not observed"), "counters: {text}");
        let clean_row = text.lines().find(|l| l.contains("2->3")).unwrap();
        assert!(
            !clean_row.contains("not observed") && !clean_row.contains("partial"),
            "{text}"
        );
        assert!(
            text.contains("observation gaps (an observation fault, not the change's"),
            "{text}"
        );
        assert!(
            text.contains("example change 1->2: locks not observed ")
                && text.contains("(1.5 s): sampling pg_locks: connection reset"),
            "{text}"
        );
        assert!(text.contains("example: observation incomplete"), "{text}");
        assert_eq!(summary.to_json()["datasets"][0]["observation_gaps"], 2);
    }

    #[test]
    fn renders_json_and_text() {
        let mut r = record(
            "1",
            "2",
            "2020-01-01 00:00:00,000",
            Some("2020-01-01 00:00:01,500"),
        );
        r.rewrites = vec![
            Rewrite {
                table: "orders".into(),
                bytes: 46_347_878,
                certain: true,
            },
            Rewrite {
                table: "users".into(),
                bytes: 2048,
                certain: false,
            },
        ];
        r.counters = BTreeMap::from([
            ("Innodb_rows_read".to_string(), 7),
            ("Innodb_rows_inserted".to_string(), 3),
            ("wal_bytes".to_string(), 100),
        ]);
        let summary = JobSummary {
            schema: SCHEMA,
            project: "example/shop".into(),
            change: BTreeMap::from([("commit".to_string(), "abc".to_string())]),
            result: "SUCCESS".into(),
            datasets: vec![DatasetSummary {
                name: "example".into(),
                engine: "sqlite".into(),
                database: "example_1_0".into(),
                seed: "/s.sql".into(),
                config: "/d/example/config.json".into(),
                result_lines: vec![],
                duration_ms: 10,
                final_version: Some("2".into()),
                expected_version: Some("2".into()),
                migrations: vec![MigrationSummary::from_record(
                    "change",
                    &r,
                    Some(60.0),
                    vec![],
                )],
                provisioning: Some(crate::provisioning::Provisioned {
                    method: "copy".into(),
                    seconds: 0.5,
                    golden: None,
                    shared_seconds: 0.0,
                }),
                counters_source: Some("pg_stat_user_tables".into()),
                counters_scope: Some("database".into()),
                observation_gaps: 0,
            }],
        };
        let json = summary.to_json();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["datasets"][0]["migrations"][0]["status"], "ok");
        assert_eq!(json["datasets"][0]["provisioning"]["method"], "copy");
        assert_eq!(json["datasets"][0]["provisioning"]["seconds"], 0.5);
        assert_eq!(json["datasets"][0]["migrations"][0]["duration_ms"], 1500);
        assert_eq!(
            json["datasets"][0]["migrations"][0]["end"],
            "2020-01-01 00:00:01,500"
        );
        let rewrite = &json["datasets"][0]["migrations"][0]["rewrites"];
        assert_eq!(
            rewrite,
            &serde_json::json!([
                {"table": "orders", "bytes": 46_347_878, "certain": true},
                {"table": "users", "bytes": 2048, "certain": false},
            ])
        );
        assert_eq!(
            rewritten(&r.rewrites).unwrap(),
            "orders (44.2 MB), users (2.0 kB, uncertain: several migrations could have done it, \
             this one is the likeliest)"
        );
        let text = summary.to_text();
        assert!(text.contains("orders 44.2 MB, users 2.0 kB?"), "{text}");
        assert!(text.contains("1->2"), "{text}");
        assert!(text.contains("1500"), "{text}");
        assert!(text.contains("read 7, changed 3, WAL 100 B"), "{text}");
        assert!(
            text.contains("example: work counted from pg_stat_user_tables (scope: database)"),
            "{text}"
        );
        assert!(text.ends_with("result:\nSUCCESS\n"), "{text}");
    }
}
