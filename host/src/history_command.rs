//! The history commands: `history` (per migration: samples, median, p95, max), `limits`
//! (suggested time limits, `--write` into the dataset's config) and `trends` (the dataset's
//! trends page). They read the history database the config names (`history_database`).
//! Errors are the message `main` prints (the caller sets up logging).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use th_history::{dataset_config, trends, HistoryDb, LimitRule, Sample, Stats};
use turbo_hipster::config;

type Outcome = Result<ExitCode, String>;

/// The history database of the config at `path`, its samples of `dataset`.
fn samples(path: &Path, dataset: &str) -> Result<(HistoryDb, Vec<Sample>), String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    let db = HistoryDb::new(config.history_database.clone());
    let samples = db.samples(dataset).map_err(|e| e.to_string())?;
    Ok((db, samples))
}

fn nothing_for(db: &HistoryDb, dataset: &str) -> ExitCode {
    println!(
        "no run of dataset {dataset} in the history ({})",
        db.location().display()
    );
    ExitCode::from(1)
}

/// `report` of the samples of `dataset` in the history of the config at `path` and their
/// figures per migration (of the samples with a duration); when there are no figures, says
/// so (exit status 1).
fn with_figures(
    path: &Path,
    dataset: &str,
    report: impl FnOnce(&[Sample], &[(String, Stats)]) -> Outcome,
) -> Outcome {
    let (db, samples) = samples(path, dataset)?;
    let figures = th_history::store::stats_of(&samples);
    if figures.is_empty() {
        return Ok(nothing_for(&db, dataset));
    }
    report(&samples, &figures)
}

/// `history --dataset D`.
pub fn show(path: &Path, dataset: &str) -> Outcome {
    with_figures(path, dataset, |_, figures| {
        let mut rows = vec![[
            "migration".to_string(),
            "samples".into(),
            "median ms".into(),
            "p95 ms".into(),
            "max ms".into(),
        ]];
        for (migration, s) in figures {
            rows.push([
                migration.clone(),
                s.count.to_string(),
                format!("{:.0}", s.median_ms),
                format!("{:.0}", s.p95_ms),
                format!("{:.0}", s.max_ms),
            ]);
        }
        print!("{}", table(&rows));
        Ok(ExitCode::SUCCESS)
    })
}

/// `limits --dataset D [--write [--file F]]`: `write` is `Some(file)` with `--write`.
pub fn limits(
    path: &Path,
    dataset: &str,
    rule: LimitRule,
    write: Option<Option<&Path>>,
) -> Outcome {
    if !(rule.factor.is_finite() && rule.factor > 0.0) {
        return Err(format!("--factor {}: give a number above 0", rule.factor));
    }
    if !(rule.floor_seconds.is_finite() && rule.floor_seconds >= 0.0) {
        return Err(format!(
            "--floor {}: give 0 or more seconds",
            rule.floor_seconds
        ));
    }
    with_figures(path, dataset, |samples, figures| {
        let mut rows = vec![[
            "migration".to_string(),
            "samples".into(),
            "p99 ms".into(),
            "limit s".into(),
            "suggested s".into(),
        ]];
        let mut suggested = Vec::new();
        for (migration, s) in figures {
            let limit = samples
                .iter()
                .rev()
                .filter(|x| x.migration == *migration)
                .find_map(|x| x.limit_seconds);
            let suggestion = rule.suggest(s);
            rows.push([
                migration.clone(),
                s.count.to_string(),
                format!("{:.0}", s.p99_ms),
                limit.map_or_else(|| "-".into(), |l| l.to_string()),
                suggestion.map_or_else(|| "(too few samples)".into(), |l| l.to_string()),
            ]);
            if let Some(seconds) = suggestion {
                suggested.push((migration.clone(), seconds));
            }
        }
        print!("{}", table(&rows));
        println!(
            "rule: p99 x {} + {} s, rounded up; at least {} sample(s)",
            rule.factor,
            rule.floor_seconds,
            rule.min_samples.max(1)
        );
        let Some(file) = write else {
            return Ok(ExitCode::SUCCESS);
        };
        let file: PathBuf = match file {
            Some(f) => f.to_path_buf(),
            None => samples
                .iter()
                .rev()
                .map(|s| s.dataset_config.as_str())
                .find(|c| !c.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    format!(
                        "the history does not say where dataset {dataset}'s config is (its runs \
                         were imported): give it with --file"
                    )
                })?,
        };
        if suggested.is_empty() {
            println!("nothing to write to {}", file.display());
            return Ok(ExitCode::SUCCESS);
        }
        let (replaced, added) =
            dataset_config::write_limits(&file, &suggested).map_err(|e| e.to_string())?;
        println!(
            "wrote {} limit(s) to {} under {}: {replaced} replaced, {added} added",
            suggested.len(),
            file.display(),
            dataset_config::KEY_SECONDS
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `trends --dataset D [-o FILE]`.
pub fn trends(path: &Path, dataset: &str, output: Option<&Path>) -> Outcome {
    let (db, samples) = samples(path, dataset)?;
    if samples.is_empty() {
        return Ok(nothing_for(&db, dataset));
    }
    let page = trends::page(dataset, &samples);
    match output {
        None => print!("{page}"),
        Some(file) => {
            std::fs::write(file, page)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            println!("wrote {}", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows as columns: the first column left-aligned, the others right-aligned.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<w$}");
            } else {
                let _ = write!(line, "  {cell:>w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
