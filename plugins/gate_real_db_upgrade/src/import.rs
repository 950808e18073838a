//! `turbo-hipster import-logs`: the original turbo-hipster's job logs into the history, so
//! that its users keep their figures (the daemon asks through `HostSettings::import_logs`,
//! see [`turbo_hipster_sdk::ImportLogs`]).
//!
//! A log is the original's `<dataset>.log`: lines `YYYY-MM-DD HH:MM:SS,mmm [tag] text`, the
//! migration tool's output under `[output]`: sqlalchemy-migrate's `N -> M... done` with the
//! InnoDB counters between migrations (read by [`crate::logparse::parse_original_log`], as
//! for the fixture `tests/fixtures/original/user_001.log`). Each migration becomes a sample
//! of the dataset (the file's name without `.log`, unless `--dataset` names it), engine
//! `mysql` (the original ran MySQL only), phase `import`, its start, duration, status (`ok`,
//! or `unfinished` without its `done`) and counter deltas, and the commit the migrations ran
//! on (the last `commit <sha>` line, else the last `HEAD is now at <sha>`). A file whose
//! content was imported before (its SHA-256, under any name) is skipped; a file that cannot
//! be read, or has no `[output]` line, is reported.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use th_history::{import, HistoryDb, Imported, Sample};
use turbo_hipster_sdk::support::logfile::parse_line;
use turbo_hipster_sdk::ImportLogs;

use crate::logparse::parse_original_log;
use crate::report::timestamp;

/// The engine the original ran.
const ENGINE: &str = "mysql";

#[allow(clippy::expect_used)] // constant patterns, exercised by the tests
static HEAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"HEAD is now at ([0-9a-f]{7,40})\b").expect("pattern"));
#[allow(clippy::expect_used)]
static COMMIT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^commit ([0-9a-f]{40})\s*$").expect("pattern"));

/// What an import did: one line per file imported or skipped, one per file it could not read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `<file>: imported N migration(s) of dataset D` or `<file>: already imported, skipped`.
    pub done: Vec<String>,
    /// `<file>: <why>`.
    pub failed: Vec<String>,
}

/// Imports the logs `request` names into `db`.
pub fn import_logs(request: &ImportLogs, db: &HistoryDb) -> Report {
    let mut report = Report::default();
    let (files, problems) = import::log_files(&request.paths);
    for (path, why) in problems {
        report
            .failed
            .push(format!("{}: cannot read: {why}", path.display()));
    }
    for path in files {
        match import_one(&path, request.dataset.as_deref(), db) {
            Ok(line) => report.done.push(format!("{}: {line}", path.display())),
            Err(why) => report.failed.push(format!("{}: {why}", path.display())),
        }
    }
    report
}

/// The commit the migrations ran on: the last `commit <sha>` the original's script printed
/// (`HEAD of branch under test is:` then `git log -1`), else the last `HEAD is now at <sha>`;
/// empty when the log names none.
fn commit_of(text: &str) -> String {
    let outputs = || {
        text.lines()
            .filter_map(parse_line)
            .filter(|l| l.tag == "output")
    };
    outputs()
        .filter_map(|l| COMMIT.captures(&l.text).map(|c| c[1].to_string()))
        .next_back()
        .or_else(|| {
            outputs()
                .filter_map(|l| HEAD.captures(&l.text).map(|c| c[1].to_string()))
                .next_back()
        })
        .unwrap_or_default()
}

fn import_one(path: &Path, dataset: Option<&str>, db: &HistoryDb) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let outputs = text
        .lines()
        .filter_map(parse_line)
        .filter(|l| l.tag == "output")
        .count();
    if outputs == 0 {
        return Err(
            "not a log of the original turbo-hipster (no `YYYY-MM-DD HH:MM:SS,mmm [output] …` line)"
                .into(),
        );
    }
    let dataset = dataset
        .map(str::to_string)
        .unwrap_or_else(|| import::dataset_of(path));
    let sha256 = import::sha256_hex(&bytes);
    let commit = commit_of(&text);
    let job = format!("import:{}", &sha256[..16]);
    let run = parse_original_log(&text);
    let samples: Vec<Sample> = run
        .migrations
        .iter()
        .map(|m| Sample {
            dataset: dataset.clone(),
            engine: ENGINE.into(),
            migration: format!("{}->{}", m.from, m.to),
            phase: "import".into(),
            started: timestamp(&m.start),
            duration_ms: m.duration_ms(),
            status: if m.end.is_some() { "ok" } else { "unfinished" }.into(),
            limit_seconds: None,
            commit: commit.clone(),
            job: job.clone(),
            counters: m.counters.clone(),
            locks: serde_json::Value::Array(Vec::new()),
            dataset_config: String::new(),
        })
        .collect();
    let now = turbo_hipster_sdk::support::logfile::now_timestamp();
    match db.import(&sha256, path, &now, &samples) {
        Ok(Imported::Recorded(n)) => Ok(format!(
            "imported {n} migration(s) of dataset {dataset}{}",
            if commit.is_empty() {
                String::new()
            } else {
                format!(" (commit {commit})")
            }
        )),
        Ok(Imported::AlreadyImported) => Ok("already imported, skipped".into()),
        Err(e) => Err(e.to_string()),
    }
}
